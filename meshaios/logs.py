"""How a node's log lines look: plain text for people, or one JSON object a line for log collectors.

Every line names the node it came from (``node=<short id>/<name>``), so that the logs of several nodes merged in one
place (a LocalMesh, journald, a collector) still say who said what.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_node = "-"


class _NodeField(logging.Filter):
    """Puts the node's label on every record as ``record.node``."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.node = _node
        return True


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "node", "msg"}`` plus ``exc`` with the traceback where there is one."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "node": getattr(record, "node", _node),
            "msg": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def setup(level: str, fmt: str = "text") -> None:
    """Configure the root logger once, for the ``meshaios`` command (libraries never call this)."""
    if fmt not in ("text", "json"):
        raise ValueError(f"log format must be text or json, not {fmt!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_NodeField())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s [%(node)s] %(name)s: %(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))


def set_node(label: str) -> None:
    """From now on, log lines carry ``label`` (the node's short id and name)."""
    global _node
    _node = label
