"""A corpus of malformed messages, one or more per way a message can be wrong, generated from the schemas.

Every entry must be refused by ``meshaios.wire.codec.decode`` (a ``WireError``) or, for values inside tasks, by
``values.loads`` when the task runs. Used by the live-node tests, and as the seed corpus of the fuzz harness
(``tools/fuzz/fuzz_decode.py``).
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack
import numpy as np

from meshaios.wire import messages as M
from meshaios.wire.codec import EXT_PAYLOAD, encode
from meshaios.wire.payload import Payload
from meshaios.wire.values import EXT_ARRAY, EXT_PICKLE, EXT_SCALAR, EXT_TUPLE, dumps

Frames = list[bytes]


def _payload(value: Any) -> Payload:
    return dumps(value, allow_pickle=False)[0]


def _pack(header: Any) -> bytes:
    return bytes(msgpack.packb(header, use_bin_type=True))


def _ext(blob: Any, start: Any, count: Any) -> msgpack.ExtType:
    return msgpack.ExtType(EXT_PAYLOAD, msgpack.packb([blob, start, count]))


def valid_examples() -> dict[str, dict[str, Any]]:
    """One well-formed message per type (what the schema-driven mutations start from)."""
    fn = _payload({"ref": "tests.security.canary:noop"})
    args = _payload([[1], {}])
    val = _payload(np.arange(4))
    return {
        M.SWIM: {"t": M.SWIM, "m": {"k": "ping", "seq": 3}},
        M.RUN: {
            "t": M.RUN,
            "owner": "n1",
            "tasks": [{"id": "a", "att": 0, "fn": fn, "args": args, "deps": {}, "pure": False}],
        },
        M.DONE: {"t": M.DONE, "src": "n2", "results": [{"id": "a", "ok": True, "v": val}]},
        M.CANCEL: {"t": M.CANCEL, "ids": ["a"]},
        M.HELLO: {"t": M.HELLO, "client": "c1"},
        M.WELCOME: {"t": M.WELCOME, "node": "n1", "name": "box", "mesh": "m", "pickle": False},
        M.SUBMIT: {"t": M.SUBMIT, "tasks": [{"id": "a", "fn": fn, "args": args, "deps": []}]},
        M.RESULTS: {"t": M.RESULTS, "results": [{"id": "a", "ok": True, "v": val}]},
        M.RELEASE: {"t": M.RELEASE, "ids": ["a"]},
        M.STATUS: {"t": M.STATUS},
        M.STATUS_REPLY: {"t": M.STATUS_REPLY, "node": {"id": "n1"}, "members": []},
        M.PING: {"t": M.PING},
        M.PONG: {"t": M.PONG},
        M.ERROR: {"t": M.ERROR, "msg": "nope"},
        M.FETCH: {"t": M.FETCH, "src": "n1", "req": 1, "id": "a"},
        M.OBJ: {"t": M.OBJ, "src": "n2", "req": 1, "id": "a", "ok": True, "val": val},
        M.STORE: {"t": M.STORE, "src": "n1", "id": "p", "val": val},
        M.STORED: {"t": M.STORED, "src": "n2", "id": "p"},
        M.FREE: {"t": M.FREE, "src": "n1", "ids": ["a"]},
        M.GET: {"t": M.GET, "req": 2, "id": "a"},
        M.GOT: {"t": M.GOT, "req": 2, "id": "a", "ok": True, "val": val},
        M.PUT: {"t": M.PUT, "req": 3, "id": "p", "val": val},
        M.PUT_ACK: {"t": M.PUT_ACK, "req": 3, "id": "p", "ok": True},
        M.ADOPT: {"t": M.ADOPT, "puts": [["p", 32, ["n1"]]]},
        M.BYE: {"t": M.BYE},
        M.XHEAD: {"t": M.XHEAD, "x": 1, "sizes": [10, 32]},
        M.XCHUNK: {"t": M.XCHUNK, "x": 1, "o": 0, "d": _payload(np.arange(4))},
        M.XACK: {"t": M.XACK, "x": 1, "n": 10},
    }


def _wrong_value(types: tuple[type, ...]) -> Any:
    """A value of none of ``types`` (bool never counts as int)."""
    for candidate in ("text", 7, [1], {"k": 1}, True, None, 1.5, b"raw"):
        if not isinstance(candidate, types) or (isinstance(candidate, bool) and bool not in types):
            return candidate
    raise AssertionError(types)


def schema_violations() -> list[tuple[str, Frames]]:
    """For every message type: each required field missing, and each with a value of the wrong type."""
    out: list[tuple[str, Frames]] = []
    for mtype, example in valid_examples().items():
        for field, types in M.SCHEMAS[mtype].items():
            missing = {k: v for k, v in example.items() if k != field}
            out.append((f"{mtype}: no {field}", _frames(encode(missing))))
            wrong = {**example, field: _wrong_value(types)}
            out.append((f"{mtype}: {field} mistyped", _frames(encode(wrong))))
    nested = [
        (M.SUBMIT, "tasks", M.SUBMIT_TASK),
        (M.RUN, "tasks", M.RUN_TASK),
        (M.DONE, "results", M.RESULT),
    ]
    examples = valid_examples()
    for mtype, key, schema in nested:
        item = examples[mtype][key][0]
        for field, types in schema.items():
            bad = {k: v for k, v in item.items() if k != field}
            out.append((f"{mtype} item: no {field}", _frames(encode({**examples[mtype], key: [bad]}))))
            bad = {**item, field: _wrong_value(types)}
            out.append((f"{mtype} item: {field} mistyped", _frames(encode({**examples[mtype], key: [bad]}))))
        out.append((f"{mtype} item not a map", _frames(encode({**examples[mtype], key: ["x"]}))))
    sub = examples[M.SUBMIT]["tasks"][0]
    out.append(("submit: dep not a task id", _frames(encode({"t": M.SUBMIT, "tasks": [{**sub, "deps": [5]}]}))))
    run = examples[M.RUN]["tasks"][0]
    for name, bad in [
        ("resources not a map", {"resources": 1.5}),
        ("resources not integers", {"resources": {"gpu": "1"}}),
        ("parts not an int", {"parts": [2]}),
        ("device not a string", {"device": 0}),
        ("dep location not a list", {"deps": {"d": {"loc": 5, "size": 1}}}),
        ("dep size not an int", {"deps": {"d": {"loc": ["n1"], "size": "big"}}}),
        ("dep value not a value", {"deps": {"d": 7}}),
    ]:
        out.append((f"run item: {name}", _frames(encode({**examples[M.RUN], "tasks": [{**run, **bad}]}))))
    return out


def _frames(frames: list[Any]) -> Frames:
    return [bytes(memoryview(f)) for f in frames]


def framing_violations() -> list[tuple[str, Frames]]:
    """Everything that is wrong before a schema is even looked at."""
    ok = _frames(encode(valid_examples()[M.PUT]))  # a header plus one array frame
    head = ok[0]
    deep = b"\x91" * 100_000 + b"\xc0"  # 100,000 nested one-element arrays
    out: list[tuple[str, Frames]] = [
        ("empty frame", [b""]),
        ("garbage", [b"\xc1\xff\x00garbage"]),
        ("not a map", [_pack([1, 2, 3])]),
        ("a bare string", [_pack("submit")]),
        ("no version", [_pack({"t": M.PING})]),
        ("version true", [_pack({"v": True, "t": M.PING})]),
        ("version 1.0", [_pack({"v": 1.0, "t": M.PING})]),
        ("version 2", [_pack({"v": 2, "t": M.PING})]),
        ("unknown type", [_pack({"v": 1, "t": "exec"})]),
        ("type not a string", [_pack({"v": 1, "t": 7})]),
        ("no type", [_pack({"v": 1})]),
        ("int map keys", [_pack({"v": 1, "t": M.PING, 5: 1})]),
        ("huge bin declared", [_pack({"v": 1, "t": M.PING})[:-1] + b"\xc6\xff\xff\xff\xff"]),
        ("huge str declared", [b"\x82\xa1v\x01\xa1t\xdb\xff\xff\xff\xffping"]),
        ("huge array declared", [b"\x83\xa1v\x01\xa1t\xa4ping\xa1x\xdd\xff\xff\xff\xff"]),
        ("huge map declared", [b"\xdf\xff\xff\xff\xff\xa1v\x01"]),
        ("array over max_items", [b"\x83\xa1v\x01\xa1t\xa4ping\xa1x\xdd" + struct.pack(">I", (1 << 20) + 1) + b"\xc0"]),
        ("deep nesting", [b"\x83\xa1v\x01\xa1t\xa4ping\xa1x" + deep]),
        ("truncated header", [head[: len(head) // 2]]),
        ("header cut by one byte", [head[:-1]]),
        ("header with trailing bytes", [head + b"\x00"]),
        ("array frame missing", [head]),
        ("extra unreferenced frame", [*ok, b"extra"]),
        ("two extra frames", [*ok, b"", b""]),
        ("payload ref out of order", [_put(_ext(b"\xc0", 1, 1)), b"x", b"y"]),
        ("payload ref out of range", [_put(_ext(b"\xc0", 0, 9)), b"x"]),
        ("payload ref negative", [_put(_ext(b"\xc0", 0, -1))]),
        ("payload ref bool", [_put(_ext(b"\xc0", False, 0))]),
        ("payload ref garbage", [_put(msgpack.ExtType(EXT_PAYLOAD, b"\xc1"))]),
        ("unknown extension", [_put(msgpack.ExtType(99, b""))]),
        ("pickle extension in a header", [_put(msgpack.ExtType(EXT_PICKLE, b"cos\nsystem\n."))]),
    ]
    return out


def _put(val: Any) -> bytes:
    """A ``put`` header around a hand-made value reference."""
    return _pack({"v": 1, "t": M.PUT, "req": 1, "id": "p", "val": val})


def corpus() -> list[tuple[str, Frames]]:
    return framing_violations() + schema_violations()


# ---- values inside tasks: the owner forwards them untouched; the executor's ``loads`` must refuse them ----------
def bad_values() -> list[tuple[str, Payload]]:
    """Task arguments that decode badly: each must come back as a fatal ``WireError`` task error."""

    def arr(descr: Any, shape: Any, idx: Any = 0) -> bytes:
        return bytes(msgpack.packb(msgpack.ExtType(EXT_ARRAY, msgpack.packb([descr, shape, idx]))))

    def ext(code: int, data: bytes) -> bytes:
        return bytes(msgpack.packb(msgpack.ExtType(code, data)))

    def wrap(inner: bytes) -> bytes:  # [[<inner>], {}]: the args shape run_task expects
        return b"\x92\x91" + inner + b"\x80"

    nested_tuples = b"\xc0"
    for _ in range(2000):
        nested_tuples = bytes(msgpack.packb(msgpack.ExtType(EXT_TUPLE, b"\x91" + nested_tuples)))
    return [
        ("dtype object", Payload(wrap(arr("|O", [2])), (b"\0" * 16,))),
        ("unknown dtype", Payload(wrap(arr("<q9", [2])), (b"\0" * 16,))),
        ("structured dtype", Payload(wrap(arr("i4,i4", [1])), (b"\0" * 8,))),
        ("dtype not a string", Payload(wrap(arr(["O"], [1])), (b"\0" * 8,))),
        ("shape bigger than the buffer", Payload(wrap(arr("<f8", [1000])), (b"\0" * 8,))),
        ("shape smaller than the buffer", Payload(wrap(arr("<f8", [1])), (b"\0" * 800,))),
        ("negative shape", Payload(wrap(arr("<f8", [-1])), (b"",))),
        ("huge shape", Payload(wrap(arr("<f8", [1 << 62, 1 << 62])), (b"\0" * 8,))),
        ("33 dimensions", Payload(wrap(arr("<f8", [1] * 33)), (b"\0" * 8,))),
        ("array frame missing", Payload(wrap(arr("<f8", [1], 3)), (b"\0" * 8,))),
        ("object scalar", Payload(wrap(ext(EXT_SCALAR, msgpack.packb(["|O", b"x" * 8]))))),
        ("pickled argument", Payload(wrap(ext(EXT_PICKLE, b"cos\nsystem\n.")))),
        ("tuples nested 2000 deep", Payload(wrap(nested_tuples))),
        ("truncated blob", Payload(b"\x92\x91\xdd\x00\x00\x10\x00")),
        ("not [args, kwargs]", Payload(bytes(msgpack.packb({"a": 1})))),
        ("kwargs with int keys", Payload(bytes(msgpack.packb([[], {1: 2}])))),
    ]
