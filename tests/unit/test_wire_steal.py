"""STEAL and MOVED on the wire: what the real engine sends survives the codec, and malformed ones are refused."""

from __future__ import annotations

from typing import Any

import pytest

from meshaios.errors import WireError
from meshaios.sched.loadview import DeviceLoad, LoadView, make_summary
from meshaios.sched.stealing import QueuedTask, Send, StealEngine, TasksArrived, WorkQueue
from meshaios.wire import messages as M
from meshaios.wire.codec import decode, encode
from meshaios.wire.payload import Payload
from meshaios.wire.values import dumps


def _spec(tid: str) -> dict[str, Any]:
    """A task as RUN carries it: what a commit hands to the thief."""
    fn = dumps({"ref": "builtins:len"}, allow_pickle=False)[0]
    args = dumps([["abc"], {}], allow_pickle=False)[0]
    return {"id": tid, "att": 0, "fn": fn, "args": args, "deps": {}, "pure": False}


def _wire(src: str, msg: dict[str, Any]) -> dict[str, Any]:
    """Through encode and a strict decode, as between two nodes."""
    out = decode([bytes(memoryview(f)) for f in encode({"t": M.STEAL, "src": src, "m": msg})])
    assert out["src"] == src
    m: dict[str, Any] = out["m"]
    return m


def test_a_whole_steal_between_two_engines_passes_through_the_codec() -> None:
    vq = WorkQueue({"cpu": 1})
    for i in range(6):
        vq.push(QueuedTask(id=f"t{i}", att=0, owner="own", kernel="k", predicted=1.0, nbytes=10, spec=_spec(f"t{i}")))
    victim = StealEngine("victim", vq)
    thief = StealEngine("thief", WorkQueue({"cpu": 2}))
    view = LoadView()
    view.update("victim", make_summary({"cpu": DeviceLoad(1, 0, 6.0, 1.0)}, queued=6, stealable=6), 0.0)
    pending = [("victim", "thief", a.msg) for a in thief.tick(0.0, view) if isinstance(a, Send)]
    kinds, arrived = [], []
    while pending:
        dst, src, msg = pending.pop(0)
        kinds.append(msg["k"])
        eng = victim if dst == "victim" else thief
        for a in eng.handle(src, _wire(src, msg), 0.0):
            if isinstance(a, Send):
                pending.append((a.to, dst, a.msg))
            elif isinstance(a, TasksArrived):
                arrived += a.tasks
    assert kinds == ["steal_req", "steal_offer", "steal_accept", "steal_commit", "steal_ack"]
    assert [t.id for t in arrived] == ["t5", "t4"]  # the back of the queue: those would wait longest
    spec = arrived[0].spec
    assert isinstance(spec["fn"], Payload)
    assert spec == {**_spec("t5"), "fn": spec["fn"], "args": spec["args"]}
    assert arrived[0].path == ["victim"]


def _header(**change: Any) -> list[Any]:
    h: list[Any] = ["a", 0, "n1", "k", "cpu", ["cpu"], 0, 0.5, []]
    names = ["id", "att", "owner", "kernel", "device", "devices", "nbytes", "predicted", "path"]
    for k, v in change.items():
        h[names.index(k)] = v
    return h


BAD_STEAL: list[tuple[str, dict[str, Any]]] = [
    ("unknown kind", {"k": "steal_all", "rid": 1}),
    ("rid is a bool", {"k": "steal_ack", "rid": True}),
    ("rid missing", {"k": "steal_ack"}),
    ("free not a map", {"k": "steal_req", "rid": 1, "free": [1], "speed": {}}),
    ("free of a bool", {"k": "steal_req", "rid": 1, "free": {"cpu": True}, "speed": {}}),
    ("free of a tpu", {"k": "steal_req", "rid": 1, "free": {"tpu": 1}, "speed": {}}),
    ("speed a string", {"k": "steal_req", "rid": 1, "free": {"cpu": 1}, "speed": {"cpu": "fast"}}),
    ("bw a string", {"k": "steal_req", "rid": 1, "free": {"cpu": 1}, "speed": {}, "bw": "1G"}),
    ("offer tasks a map", {"k": "steal_offer", "rid": 1, "tasks": {"a": 1}}),
    ("offer header short", {"k": "steal_offer", "rid": 1, "tasks": [_header()[:8]]}),
    ("offer att a string", {"k": "steal_offer", "rid": 1, "tasks": [_header(att="0")]}),
    ("offer device tpu", {"k": "steal_offer", "rid": 1, "tasks": [_header(device="tpu")]}),
    ("offer no devices", {"k": "steal_offer", "rid": 1, "tasks": [_header(devices=[])]}),
    ("offer negative bytes", {"k": "steal_offer", "rid": 1, "tasks": [_header(nbytes=-1)]}),
    ("offer nan predicted", {"k": "steal_offer", "rid": 1, "tasks": [_header(predicted=float("nan"))]}),
    ("offer path of ints", {"k": "steal_offer", "rid": 1, "tasks": [_header(path=[1])]}),
    ("offer too many", {"k": "steal_offer", "rid": 1, "tasks": [_header()] * (M.MAX_STEAL_BATCH + 1)}),
    ("commit without spec", {"k": "steal_commit", "rid": 1, "tasks": [_header()]}),
    ("commit spec not a task", {"k": "steal_commit", "rid": 1, "tasks": [[*_header(), {"id": "a"}]]}),
    ("commit bad deps", {"k": "steal_commit", "rid": 1, "tasks": [[*_header(), {**_spec("a"), "deps": {"d": 3}}]]}),
    ("accept ids flat", {"k": "steal_accept", "rid": 1, "ids": ["a", 0]}),
    ("accept att a bool", {"k": "steal_accept", "rid": 1, "ids": [["a", False]]}),
]


@pytest.mark.parametrize(("what", "m"), BAD_STEAL, ids=[w for w, _ in BAD_STEAL])
def test_malformed_steal_messages_are_refused(what: str, m: dict[str, Any]) -> None:
    frames = [bytes(memoryview(f)) for f in encode({"t": M.STEAL, "src": "n1", "m": m})]
    with pytest.raises(WireError):
        decode(frames)


@pytest.mark.parametrize(
    "moves",
    [[["a", 0]], [["a", "0", "n2"]], [["a", 0, 5]], ["a"], [["a", True, "n2"]]],
)
def test_malformed_moved_messages_are_refused(moves: list[Any]) -> None:
    with pytest.raises(WireError):
        decode([bytes(memoryview(f)) for f in encode({"t": M.MOVED, "src": "n1", "moves": moves})])


def test_well_formed_steal_messages_of_every_kind_are_accepted() -> None:
    good: list[dict[str, Any]] = [
        {"k": "steal_req", "rid": 1, "free": {"cpu": 2}, "speed": {"cpu": 1.0, "gpu": 4}, "bw": 1.25e8},
        {"k": "steal_offer", "rid": 1, "tasks": [_header(), _header(id="b", path=["n0"])]},
        {"k": "steal_offer", "rid": 1, "tasks": []},  # a refusal
        {"k": "steal_accept", "rid": 1, "ids": [["a", 0]]},
        {"k": "steal_commit", "rid": 1, "tasks": [[*_header(), _spec("a")]]},
        {"k": "steal_ack", "rid": 1},
    ]
    for m in good:
        assert _wire("n1", m)["k"] == m["k"]
    out = decode([bytes(memoryview(f)) for f in encode({"t": M.MOVED, "src": "n1", "moves": [["a", 2, "n2"]]})])
    assert out["moves"] == [["a", 2, "n2"]]
