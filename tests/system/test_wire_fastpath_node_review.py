"""A real node process fed frames aimed at the wire's fast paths (rev19w's review of 9f6a00c, 2caa9b2, 74bff90):
frameless headers whose payload references are near misses of the short form the one-time hook reads, messages
that the compiled quick checks must pass to the walk (a bad id deep in a task, bool for int, a result's field of the
wrong type), a fixmap header that skips ``check_shape``. Each is refused with one ERROR, counted once, and the node
still serves the same raw socket and a real client afterwards."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import zmq

from meshaios.testing.localmesh import LocalMesh
from meshaios.wire import messages as M
from meshaios.wire.codec import EXT_PAYLOAD, decode, encode
from meshaios.wire.values import dumps, loads
from tests.security import canary
from tests.security.conftest import authed_dealer, node_view, wait_until

pytestmark = pytest.mark.system

FN = dumps({"ref": "tests.security.canary:noop"}, allow_pickle=False)[0]


def _args(x: Any) -> Any:
    return dumps([[x], {}], allow_pickle=False)[0]


def _ref(data: bytes, code: int = EXT_PAYLOAD) -> msgpack.ExtType:
    return msgpack.ExtType(code, data)


def _submit(fn: Any) -> list[bytes]:
    """A one-task SUBMIT whose ``fn`` is ``fn`` as it is (a hand-made ExtType goes into the header untouched)."""
    return _frames({"t": M.SUBMIT, "tasks": [{"id": "bad", "fn": fn, "args": _args(1), "deps": []}]})


def _frames(msg: dict[str, Any]) -> list[bytes]:
    return [bytes(memoryview(f)) for f in encode(msg)]


def malformed() -> list[tuple[str, list[bytes]]]:
    good = {"id": "g", "fn": FN, "args": _args(1), "deps": []}
    run_task = {"id": "r", "att": 0, "fn": FN, "args": _args(1), "deps": {}, "pure": False}
    return [
        ("short ref: length byte says 5, blob of 1", _submit(_ref(b"\x93\xc4\x05X\x00\x00"))),
        ("short ref: start 1, no frames", _submit(_ref(b"\x93\xc4\x01X\x01\x00"))),
        ("short ref: one frame, none sent", _submit(_ref(b"\x93\xc4\x01X\x00\x01"))),
        ("short ref: nil blob, no frame", _submit(_ref(b"\x93\xc0\x00\x01"))),
        ("short ref: 4 bytes", _submit(_ref(b"\x93\xc4\x00\x00"))),
        ("short form under another code", _submit(_ref(b"\x93\xc4\x01X\x00\x00", code=7))),
        ("short ref then an unreferenced frame", [*_submit(_ref(b"\x93\xc4\x01X\x00\x00")), b"extra"]),
        ("fn as bytes", _frames({"t": M.SUBMIT, "tasks": [{**good, "fn": b"\x90"}]})),
        ("task id with NUL", _frames({"t": M.SUBMIT, "tasks": [good, {**good, "id": "a\x00"}]})),
        ("dependency empty", _frames({"t": M.SUBMIT, "tasks": [{**good, "deps": ["a", ""]}]})),
        ("dependency too long", _frames({"t": M.SUBMIT, "tasks": [{**good, "deps": ["x" * (M.MAX_ID + 1)]}]})),
        ("dependency an int", _frames({"t": M.SUBMIT, "tasks": [{**good, "deps": [5]}]})),
        ("run: dependency key empty", _frames({"t": M.RUN, "owner": "n", "tasks": [{**run_task, "deps": {"": None}}]})),
        (
            "run: resources bool",
            _frames({"t": M.RUN, "owner": "n", "tasks": [{**run_task, "resources": {"cpu": True}}]}),
        ),
        ("run: parts a string", _frames({"t": M.RUN, "owner": "n", "tasks": [{**run_task, "parts": "2"}]})),
        ("done: ok an int", _frames({"t": M.DONE, "src": "n", "results": [{"id": "a", "ok": 1}]})),
        ("get: id with NUL", _frames({"t": M.GET, "req": 1, "id": "a\x00"})),
        ("get: req true", _frames({"t": M.GET, "req": True, "id": "a"})),
        ("detach: ep a float", _frames({"t": M.DETACH, "ep": 1.0})),
        ("release: an empty id", _frames({"t": M.RELEASE, "ids": ["a", ""]})),
        ("fixmap of 15 fields, no type", [msgpack.packb({"v": 1, **{f"k{i}": i for i in range(14)}})]),
        ("map 16 of 70 fields", [msgpack.packb({"v": 1, "t": M.PING, **{f"k{i}": i for i in range(68)}})]),
    ]


@pytest.fixture(scope="module")
def node() -> Iterator[LocalMesh]:
    with LocalMesh(1, discovery=False, workers=1) as mesh:
        yield mesh


def _answers(sock: zmq.Socket[Any], n: int, timeout: float = 20.0) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        if sock.poll(100):
            out.append(decode(sock.recv_multipart()))
    return out


def test_frames_aimed_at_the_fast_paths_are_each_refused_and_the_node_serves_on(node: LocalMesh) -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        cases = malformed()
        for name, frames in cases:  # each is refused by the codec itself (what the node will do with it)
            with pytest.raises(Exception) as info:
                decode(frames)
            assert type(info.value).__name__ in ("WireError", "LimitExceeded"), name
        with node.client(0) as c:
            before = node_view(c)["counters"].get("bad_frames", 0)
            sock = authed_dealer(ctx, node, ident=b"c:rev19w-fastpath")
            for _name, frames in cases:
                sock.send_multipart(frames)
            answers = _answers(sock, len(cases))
            assert len(answers) == len(cases)
            assert {a["t"] for a in answers} == {M.ERROR}
            wait_until(lambda: node_view(c)["counters"]["bad_frames"] - before == len(cases), 10, "each one counted")
            # the same socket is served: a valid frameless SUBMIT (the short form the hook reads) gets its result
            sock.send_multipart(
                _frames({"t": M.SUBMIT, "tasks": [{"id": "ok1", "fn": FN, "args": _args(7), "deps": []}]})
            )
            [res] = [a for a in _answers(sock, 1) if a["t"] == M.RESULTS]
            assert [(r["id"], r["ok"]) for r in res["results"]] == [("ok1", True)]
            assert loads(res["results"][0]["v"], allow_pickle=False) == 7
            # and so is a real client
            assert c.submit(canary.noop, 11).result(timeout=20) == 11
            futs = c.map(canary.noop, range(20))
            assert [f.result(timeout=20) for f in futs] == list(range(20))
            sock.close(linger=0)
        assert node.procs[0].alive()
    finally:
        ctx.destroy(linger=0)
