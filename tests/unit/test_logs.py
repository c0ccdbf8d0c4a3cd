"""Log lines: the node's label on every line, and one parseable JSON object per line with ``--log-format json``."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from meshaios import logs


@pytest.fixture
def root_handlers() -> Iterator[None]:
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved:
            root.addHandler(h)
        root.setLevel(level)
        logs.set_node("-")


def _capture(fmt: str) -> io.StringIO:
    logs.setup("info", fmt)
    buf = io.StringIO()
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buf)
    return buf


def test_json_lines_parse_and_name_the_node(root_handlers: None) -> None:
    buf = _capture("json")
    logs.set_node("ab12cd34/gpu-box")
    log = logging.getLogger("meshaios.test")
    log.info("member %s dead, %d tasks re-placed", "ff00", 7)
    try:
        raise RuntimeError("kernel failed")
    except RuntimeError:
        log.exception("task t1 failed")
    log.debug("not shown at info")
    lines = [json.loads(ln) for ln in buf.getvalue().splitlines()]
    assert [d["msg"] for d in lines] == ["member ff00 dead, 7 tasks re-placed", "task t1 failed"]
    assert all(d["node"] == "ab12cd34/gpu-box" and d["logger"] == "meshaios.test" for d in lines)
    assert lines[0]["level"] == "info"
    assert lines[1]["level"] == "error"
    assert "RuntimeError: kernel failed" in lines[1]["exc"]
    assert lines[0]["ts"].endswith("Z")


def test_text_lines_carry_the_node_label(root_handlers: None) -> None:
    buf = _capture("text")
    logs.set_node("ab12cd34/n0")
    logging.getLogger("meshaios.node").warning("hello")
    assert "WARNING [ab12cd34/n0] meshaios.node: hello" in buf.getvalue()


def test_an_unknown_format_is_refused(root_handlers: None) -> None:
    with pytest.raises(ValueError, match="text or json"):
        logs.setup("info", "xml")
