"""Framing: one msgpack header, then the raw buffers of every payload; strict decoding."""

from __future__ import annotations

import typing
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshaios.errors import WireError
from meshaios.wire import messages as M
from meshaios.wire.codec import EXT_PAYLOAD, WireLimits, _payload_ref, decode, encode, peek_req
from meshaios.wire.payload import Payload
from meshaios.wire.values import dumps, loads


def payload_of(value: Any) -> Payload:
    return dumps(value, allow_pickle=False)[0]


def bytes_frames(frames: list[Any]) -> list[bytes]:
    """What a peer's socket hands us: every frame as its own bytes object."""
    return [bytes(memoryview(f)) for f in frames]


def header_frames(header: dict[str, Any], *bufs: bytes) -> list[Any]:
    """A hand-built message, bypassing ``encode``'s help."""
    return [msgpack.packb(header, use_bin_type=True), *bufs]


def ext_payload(blob: Any, start: Any, count: Any) -> msgpack.ExtType:
    return msgpack.ExtType(EXT_PAYLOAD, msgpack.packb([blob, start, count]))


def valid_messages() -> list[dict[str, Any]]:
    fn = payload_of({"ref": "builtins:len"})
    args = payload_of([[np.arange(4), np.ones((2, 2))], {"k": np.zeros(3, dtype=">f4")}])
    res = payload_of(np.arange(6).reshape(2, 3))
    return [
        {"t": M.SWIM, "m": {"k": "ping", "seq": 3}},
        {
            "t": M.RUN,
            "owner": "n1",
            "tasks": [{"id": "a", "att": 0, "fn": fn, "args": args, "deps": {"d": res, "e": None}, "pure": False}],
        },
        {"t": M.RUN, "owner": "n1", "tasks": [{"id": "a", "att": 0, "fn": fn, "args": args, "deps": {}, "pure": False,
                                               "kd": True}]},
        {"t": M.RUN, "owner": "n1", "tasks": [{"id": "a", "att": 0, "fn": fn, "args": args, "deps": {}, "pure": False,
                                               "device": "gpu"}]},  # EFT's device pick
        {"t": M.DONE, "src": "n2", "results": [{"id": "a", "ok": True, "v": res}, {"id": "b", "ok": False}]},
        {"t": M.DONE, "src": "n2", "results": [{"id": "a", "ok": True, "size": 1 << 20, "dt": 0.01, "dev": "gpu",
                                                "kdev": "gpu:0"}]},  # kept on its GPU (placement prices it)
        {"t": M.CANCEL, "ids": ["a", "b"]},
        {"t": M.KEEP, "ids": ["a"]},
        {"t": M.STARTED, "src": "n2", "ids": [["a", 0]]},
        {"t": M.RUNNING, "ids": ["a"]},
        {"t": M.ABORT, "src": "n1", "owner": "n1", "ids": [["a", 0], ["b", 2]]},
        {
            "t": M.STEAL,
            "src": "n3",
            "m": {
                "k": "steal_commit",
                "rid": 7,
                "tasks": [
                    ["a", 0, "n1", "fn:1", "cpu", ["cpu"], 10, 0.5, [], {"id": "a", "att": 0, "fn": fn, "args": args,
                                                                          "deps": {"d": res}, "pure": False}],
                ],
            },
        },
        {"t": M.MOVED, "src": "n1", "moves": [["a", 0, "n3"]]},
        {"t": M.FENCED, "src": "n2", "c": "c:1", "ep": 2},
        {"t": M.PEEK, "src": "n2", "req": 3},
        {"t": M.PEEK, "src": "n2", "req": 4, "ids": ["t1"]},
        {"t": M.PEEKED, "src": "n1", "req": 3, "view": {"name": "node1", "timeline": [], "errors": []}},
        {"t": M.PEEKED, "src": "n1", "req": 4, "names": {"t1": "mod:f"}},
        {"t": M.DETACH, "ep": 1},
        {"t": M.FAULT, "nodes": ["n2"], "addrs": ["tcp://127.0.0.1:1"], "clients": []},
        {"t": M.HELLO, "client": "c1"},
        {"t": M.WELCOME, "node": "n1", "name": "box", "mesh": "m", "pickle": False},
        {"t": M.WELCOME, "node": "n1", "name": "box", "mesh": "m", "pickle": False, "hid": "0123456789abcdef"},
        {"t": M.WELCOME, "node": "n1", "name": "box", "mesh": "m", "pickle": False, "mh": 64 << 20},
        {"t": M.SUBMIT, "tasks": [{"id": "a", "fn": fn, "args": args, "deps": []}], "ep": 1},
        {"t": M.SUBMIT, "req": 7, "tasks": [{"id": "a", "fn": fn, "args": args, "deps": []}]},  # refusable by name
        {"t": M.SUBMIT, "tasks": [{"id": "a", "fn": fn, "args": args, "deps": [], "kd": True}]},  # keep_on_device
        {"t": M.SUBMIT, "tasks": [{"id": "a", "fn": fn, "args": args, "deps": [], "dev": "any"}]},  # device="any"
        {"t": M.RESULTS, "results": [{"id": "a", "ok": True, "v": res}]},
        {"t": M.RELEASE, "ids": ["a"]},
        {"t": M.STATUS},
        {"t": M.STATUS_REPLY, "node": {"id": "n1"}, "members": []},
        {"t": M.PING},
        {"t": M.PONG},
        {"t": M.ERROR, "msg": "nope"},
        {"t": M.ERROR, "msg": "header of 20631 bytes exceeds the limit of 8192", "req": 7},
        {"t": M.FETCH, "src": "n1", "req": 1, "id": "a"},
        {"t": M.OBJ, "src": "n2", "req": 1, "id": "a", "ok": True, "val": res},
        {"t": M.FETCH, "src": "n1", "req": 2, "id": "a", "shm": True},  # same host: a /dev/shm file will do
        {"t": M.OBJ, "src": "n2", "req": 2, "id": "a", "ok": True, "shm": {"name": "f", "blob": b"\x90", "sizes": [8]}},
        {"t": M.STORE, "src": "n1", "id": "p", "val": res},
        {"t": M.STORE, "src": "n1", "id": "p", "val": res, "dev": "gpu"},  # a put for the GPU
        {"t": M.STORED, "src": "n2", "id": "p"},
        {"t": M.STORE, "src": "n1", "id": "p", "shm": {"name": "f", "blob": b"\x90", "sizes": [8]}},  # same host
        {"t": M.STORED, "src": "n2", "id": "p", "noshm": True},  # its file was refused: send the copy itself
        {"t": M.FREE, "src": "n1", "ids": ["a"]},
        {"t": M.FREE, "src": "n1", "ids": ["a"], "after": "b"},  # b, running there, is a's last reader
        {"t": M.CLAIM, "src": "n3", "ids": ["p"]},  # an owner that adopted a put: its copy there is this owner's
        {"t": M.GET, "req": 2, "id": "a"},
        {"t": M.GOT, "req": 2, "id": "a", "ok": True, "val": res},
        {"t": M.GET, "req": 3, "id": "a", "shm": "0123456789abcdef"},  # the client's host id
        {"t": M.GOT, "req": 3, "id": "a", "ok": True, "shm": {"name": "f", "blob": b"\x90", "sizes": [8]}},
        {"t": M.PUT, "req": 3, "id": "p", "val": payload_of(b"x" * 100_000)},
        {"t": M.PUT_ACK, "req": 3, "id": "p", "ok": True, "loc": ["n1", "n2"]},
        {"t": M.PUT, "req": 4, "id": "p", "shm": {"name": "f", "blob": b"\x90", "sizes": [8]}},  # same machine
        {"t": M.PUT, "req": 5, "id": "p", "val": payload_of(1), "dev": "gpu"},  # client.put(x, device="gpu")
        {"t": M.PUT_ACK, "req": 4, "id": "p", "ok": False, "err": "mode 0644", "noshm": True},
        {"t": M.ADOPT, "puts": [["p", 100, ["n1", "n2"]]]},
        {"t": M.BYE},
        {"t": M.XHEAD, "x": 1, "sizes": [20, 4096]},
        {"t": M.XCHUNK, "x": 1, "o": 0, "d": payload_of(b"x" * 1000)},
        {"t": M.XACK, "x": 1, "n": 4116},
    ]


def test_every_schema_has_a_valid_example() -> None:
    assert {m["t"] for m in valid_messages()} == set(M.SCHEMAS)


@pytest.mark.parametrize("msg", valid_messages(), ids=lambda m: m["t"])
def test_each_message_type_round_trips(msg: dict[str, Any]) -> None:
    frames = encode(msg)
    out = decode(bytes_frames(frames))
    assert out["t"] == msg["t"]
    assert out["v"] == M.PROTOCOL_VERSION
    assert set(out) == set(msg) | {"v"}


def test_encode_does_not_touch_the_callers_dict() -> None:
    msg = {"t": M.PING}
    encode(msg)
    assert msg == {"t": M.PING}


def test_payload_buffers_become_frames_in_order_and_decode_zero_copy() -> None:
    a, b, c = np.arange(4), np.ones((2, 2)), np.full(3, 7, dtype=np.int16)
    msg = {
        "t": M.RESULTS,
        "results": [{"id": "x", "ok": True, "v": payload_of([a, b])}, {"id": "y", "ok": True, "v": payload_of(c)}],
    }
    frames = encode(msg)
    assert len(frames) == 4
    # encoding never copies: frames 1.. are the arrays' own memory
    assert np.shares_memory(np.frombuffer(frames[1], np.uint8), a)
    assert np.shares_memory(np.frombuffer(frames[3], np.uint8), c)
    received = bytes_frames(frames)
    out = decode(received)
    r0, r1 = out["results"]
    assert isinstance(r0["v"], Payload)
    assert r0["v"].buffers == (received[1], received[2])
    assert r1["v"].buffers == (received[3],)
    va, vb = loads(r0["v"], allow_pickle=False)
    vc = loads(r1["v"], allow_pickle=False)
    np.testing.assert_array_equal(va, a)
    np.testing.assert_array_equal(vb, b)
    np.testing.assert_array_equal(vc, c)
    assert np.shares_memory(va, np.frombuffer(received[1], np.uint8))
    assert np.shares_memory(vc, np.frombuffer(received[3], np.uint8))


def test_frames_with_a_buffer_attribute_are_read_through_it() -> None:
    class FakeZmqFrame:  # zmq.Frame: .buffer is a memoryview onto libzmq's memory, .bytes a copy
        def __init__(self, data: bytes) -> None:
            self.buffer = memoryview(data)

    arr = np.arange(3, dtype=np.int64)
    frames = bytes_frames(encode({"t": M.RESULTS, "results": [{"id": "x", "ok": True, "v": payload_of(arr)}]}))
    wrapped = [FakeZmqFrame(f) for f in frames]
    out = decode(wrapped)
    buf = out["results"][0]["v"].buffers[0]
    assert isinstance(buf, memoryview)
    np.testing.assert_array_equal(loads(out["results"][0]["v"], allow_pickle=False), arr)


def test_payload_without_buffers_takes_no_frames() -> None:
    frames = encode({"t": M.RESULTS, "results": [{"id": "x", "ok": True, "v": payload_of("small")}]})
    assert len(frames) == 1
    assert loads(decode(frames)["results"][0]["v"], allow_pickle=False) == "small"


# ---------------------------------------------------------------------------------------------- frame errors
def test_frames_referenced_out_of_order_are_refused() -> None:
    header = {"v": 1, "t": M.RESULTS, "results": [ext_payload(b"", 1, 1), ext_payload(b"", 0, 1)]}
    with pytest.raises(WireError, match="order"):
        decode(header_frames(header, b"a", b"b"))


def test_frame_referenced_twice_is_refused() -> None:
    header = {"v": 1, "t": M.RESULTS, "results": [ext_payload(b"", 0, 1), ext_payload(b"", 0, 1)]}
    with pytest.raises(WireError):
        decode(header_frames(header, b"a"))


def test_extra_unreferenced_frames_are_refused() -> None:
    frames = bytes_frames(encode({"t": M.PING}))
    with pytest.raises(WireError, match="extra"):
        decode([*frames, b"stowaway"])
    frames = bytes_frames(encode({"t": M.RESULTS, "results": [{"id": "x", "ok": True, "v": payload_of(np.arange(2))}]}))
    with pytest.raises(WireError, match="extra"):
        decode([*frames, b"stowaway"])


def test_missing_frames_are_refused() -> None:
    frames = bytes_frames(
        encode({"t": M.RESULTS, "results": [{"id": "x", "ok": True, "v": payload_of([np.arange(2), np.arange(3)])}]})
    )
    assert len(frames) == 3
    with pytest.raises(WireError, match="range"):
        decode(frames[:2])


@pytest.mark.parametrize(
    "ref",
    [
        ext_payload(b"", -1, 1),
        ext_payload(b"", 0, -1),
        ext_payload(b"", False, 1),  # bool is not an int
        ext_payload(b"", 0, True),
        ext_payload("text blob", 0, 1),
        ext_payload(b"", "0", 1),
        msgpack.ExtType(EXT_PAYLOAD, b"\xc1"),
        msgpack.ExtType(EXT_PAYLOAD, msgpack.packb([b"", 0])),
        msgpack.ExtType(7, b""),  # not a payload
        msgpack.ExtType(EXT_PAYLOAD, b"\x93\xc4"),  # the start of the short form ``_payload_ref`` writes, cut off
        msgpack.ExtType(EXT_PAYLOAD, b"\x93\xc4\x05ab\x00\x00"),  # its length byte wrong
        msgpack.ExtType(EXT_PAYLOAD, b"\x93\xc4\x00\x00"),
    ],
)
def test_bad_payload_references_are_refused(ref: msgpack.ExtType) -> None:
    with pytest.raises(WireError):
        decode(header_frames({"v": 1, "t": M.RESULTS, "results": [ref]}, b"a"))


@pytest.mark.parametrize("size", [0, 1, 127, 255, 256, 300])
@pytest.mark.parametrize(("start", "count"), [(0, 0), (127, 0), (0, 127), (128, 0), (0, 128), (200, 300)])
def test_payload_references_are_msgpack_in_short_and_long_form(size: int, start: int, count: int) -> None:
    """``_payload_ref`` writes a small blob's reference without a packer: the same bytes as ``packb``, and the
    decoder's short-form reader gives what msgpack reads (a reference ``decode`` accepts when its frames exist)."""
    blob = bytes(range(256)) * 2
    blob = blob[:size]
    ref = _payload_ref(blob, start, count)
    assert ref == msgpack.packb([blob, start, count])
    frames = header_frames({"v": 1, "t": M.RESULTS, "results": [msgpack.ExtType(EXT_PAYLOAD, ref)]})
    bufs = [b"x%d" % i for i in range(start + count)]
    if start:  # frames before it are another payload's
        with pytest.raises(WireError, match="order"):
            decode(frames + bufs)
        return
    (got,) = decode(frames + bufs)["results"]
    assert got == Payload(blob, tuple(bufs))


def test_header_over_the_limit_is_refused_before_parsing() -> None:
    frames = encode({"t": M.ERROR, "msg": "x" * 1000})
    assert decode(frames, WireLimits(max_header=2000))["msg"] == "x" * 1000
    with pytest.raises(WireError, match="exceeds"):
        decode(frames, WireLimits(max_header=500))


def test_a_refused_requests_number_is_read_from_its_first_bytes() -> None:
    """``peek_req``: the ``req`` a client writes third in a header, read without decoding it (the node names a
    message it refuses in its ERROR); None when the first bytes do not show one."""
    task = {"id": "a", "fn": payload_of(1), "args": payload_of("x" * 50_000), "deps": [1, 2]}  # not a valid task
    frames = encode({"t": M.SUBMIT, "req": 2**40, "tasks": [task] * 3})
    with pytest.raises(WireError):
        decode(frames, WireLimits(max_header=4096))
    assert peek_req(frames) == 2**40
    assert peek_req(encode({"t": M.GET, "req": 3, "id": "o"})) == 3
    assert peek_req(encode({"t": M.SUBMIT, "tasks": [], "req": 4})) is None  # not third: not read
    assert peek_req(encode({"t": M.SUBMIT, "req": True, "tasks": []})) is None  # bool is not an int
    assert peek_req(encode({"t": M.PING})) is None
    for garbage in ([], [b""], [b"\xc1"], [b"\x93\x01\x02\x03"], [b"\x83\xa1v\x01"], [object()]):
        assert peek_req(garbage) is None


def test_too_many_frames_are_refused() -> None:
    msg = {"t": M.RESULTS, "results": [{"id": str(i), "ok": True, "v": payload_of(np.arange(2))} for i in range(5)]}
    frames = bytes_frames(encode(msg))
    assert len(frames) == 6
    assert len(decode(frames, WireLimits(max_frames=6))["results"]) == 5
    with pytest.raises(WireError, match="frames"):
        decode(frames, WireLimits(max_frames=5))


def test_too_many_items_in_a_header_are_refused() -> None:
    frames = encode({"t": M.CANCEL, "ids": [str(i) for i in range(100)]})
    with pytest.raises(WireError):
        decode(frames, WireLimits(max_items=50))
    assert len(decode(frames, WireLimits(max_items=100))["ids"]) == 100


@pytest.mark.parametrize("frames", [[], [b""], [b"\xc1"], [b"\x93\x01\x02\x03"], [b"\x81\xa1v"], ["text"], [12]])
def test_garbage_headers_are_refused(frames: list[Any]) -> None:
    with pytest.raises(WireError):
        decode(frames)


# ---------------------------------------------------------------------------------------------- header errors
@pytest.mark.parametrize("version", [0, 2, None, "1", 1.0, True, [1]])
def test_wrong_protocol_version_is_refused(version: Any) -> None:
    with pytest.raises(WireError, match="version"):
        decode(header_frames({"v": version, "t": M.PING}))


def test_missing_protocol_version_is_refused() -> None:
    with pytest.raises(WireError, match="version"):
        decode(header_frames({"t": M.PING}))


@pytest.mark.parametrize("mtype", ["nope", None, 1, b"ping", ["ping"]])
def test_unknown_message_type_is_refused(mtype: Any) -> None:
    with pytest.raises(WireError, match="type"):
        decode(header_frames({"v": 1, "t": mtype}))


def test_non_string_map_keys_are_refused() -> None:
    with pytest.raises(WireError):
        decode(header_frames({"v": 1, "t": M.SWIM, "m": {1: "x"}}))


@pytest.mark.parametrize("msg", valid_messages(), ids=lambda m: m["t"])
def test_each_required_field_missing_is_refused(msg: dict[str, Any]) -> None:
    for key in M.SCHEMAS[msg["t"]]:
        broken = {k: v for k, v in msg.items() if k != key}
        with pytest.raises(WireError, match=repr(key)):
            decode(bytes_frames(encode(broken)))


@pytest.mark.parametrize(
    ("mtype", "field", "bad"),
    [
        (M.RUN, "owner", 5),
        (M.RUN, "tasks", {"a": 1}),
        (M.HELLO, "client", b"bytes-not-str"),
        (M.WELCOME, "pickle", 1),  # int is not bool
        (M.WELCOME, "pickle", "yes"),
        (M.ERROR, "msg", None),
        (M.SWIM, "m", [1]),
        (M.CANCEL, "ids", "a"),
        (M.STATUS_REPLY, "members", {}),
    ],
)
def test_mistyped_fields_are_refused(mtype: str, field: str, bad: Any) -> None:
    msg = next(m for m in valid_messages() if m["t"] == mtype)
    with pytest.raises(WireError, match=repr(field)):
        decode(bytes_frames(encode({**msg, field: bad})))


def test_check_fields_bool_is_not_int_and_int_is_not_bool() -> None:
    fn = payload_of({"ref": "builtins:len"})
    task = {"id": "a", "att": 0, "fn": fn, "args": fn, "deps": {}, "pure": False}
    assert M.check_fields(task, M.RUN_TASK, "run task") is task
    with pytest.raises(WireError, match="'att'"):
        M.check_fields({**task, "att": True}, M.RUN_TASK, "run task")
    with pytest.raises(WireError, match="'pure'"):
        M.check_fields({**task, "pure": 0}, M.RUN_TASK, "run task")
    with pytest.raises(WireError, match="'fn'"):
        M.check_fields({**task, "fn": b"not a payload"}, M.RUN_TASK, "run task")
    with pytest.raises(WireError, match="map"):
        M.check_fields(["a"], M.RESULT, "result")
    with pytest.raises(WireError, match="'ok'"):
        M.check_fields({"id": "a", "ok": 1}, M.RESULT, "result")


def test_extra_fields_are_tolerated() -> None:
    out = decode(encode({"t": M.PING, "future_field": [1, 2]}))
    assert out["future_field"] == [1, 2]


def test_encode_refuses_unknown_objects_in_a_header() -> None:
    with pytest.raises(TypeError):
        encode({"t": M.PING, "x": object()})


# ---------------------------------------------------------------------------------------------- fuzz
@given(st.lists(st.binary(max_size=128), min_size=1, max_size=4))
@settings(max_examples=500)
def test_property_random_bytes_only_ever_raise_wire_error(frames: list[bytes]) -> None:
    try:
        decode(frames)
    except WireError:
        pass


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=10)
    | st.binary(max_size=10),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
    max_leaves=20,
)
payload_refs = st.builds(
    ext_payload,
    st.binary(max_size=8) | st.text(max_size=3) | st.integers(-2, 3),
    st.integers(-2, 4) | st.booleans() | st.none(),
    st.integers(-2, 4) | st.booleans(),
)
keys = st.sampled_from(["v", "t", "m", "owner", "tasks", "results", "ids", "client", "msg", "src", "node"]) | st.text(
    max_size=4
)
field_values = st.one_of(
    msgpack_values,
    st.sampled_from(sorted(M.SCHEMAS)),
    st.just(M.PROTOCOL_VERSION),
    payload_refs,
    st.lists(payload_refs | st.dictionaries(keys, payload_refs | msgpack_values, max_size=4), max_size=3),
)


@given(st.dictionaries(keys, field_values, max_size=6), st.lists(st.binary(max_size=16), max_size=4))
@settings(max_examples=700)
def test_property_random_msgpack_maps_only_ever_raise_wire_error(header: dict[str, Any], bufs: list[bytes]) -> None:
    frames = [msgpack.packb(header, use_bin_type=True), *bufs]
    try:
        out = decode(frames)
    except WireError:
        return
    # whatever got through obeys its schema
    assert out["v"] == M.PROTOCOL_VERSION
    M.check_fields(out, M.SCHEMAS[out["t"]], out["t"])


@pytest.mark.parametrize(
    "msg",
    [
        {"t": M.PUT, "req": 1, "id": "a\x00b", "val": payload_of(1)},
        {"t": M.GET, "req": 1, "id": "x" * (M.MAX_ID + 1)},
        {"t": M.GET, "req": 1, "id": ""},
        {"t": M.FREE, "src": "n1", "ids": ["ok", "bad\x00"]},
        {"t": M.SUBMIT, "tasks": [{"id": "t\x00", "fn": payload_of(1), "args": payload_of(2), "deps": []}]},
        {"t": M.SUBMIT, "tasks": [{"id": "t", "fn": payload_of(1), "args": payload_of(2), "deps": ["y" * 999]}]},
        {"t": M.ADOPT, "puts": [["p\x00", 1, []]]},
    ],
    ids=["nul-put", "long-get", "empty-get", "nul-free", "nul-task", "long-dep", "nul-adopt"],
)
def test_ids_with_nul_bytes_or_beyond_the_length_cap_are_refused_at_the_wire(msg: dict[str, Any]) -> None:
    with pytest.raises(WireError, match="an id must be 1 to 256 characters without NUL bytes"):
        decode([bytes(memoryview(f)) for f in encode(msg)])


# ---- the validation tables are derived from the TypedDict definitions in messages.py ----------------------------


def test_each_schema_is_its_definitions_required_fields() -> None:
    """``SCHEMAS`` is not written by hand: each message type's table is its TypedDict's required fields (less the
    codec's ``t`` and ``v``), and its ``t`` is the constant of that name."""
    for mtype, td in M.DEFINITIONS.items():
        hints = typing.get_type_hints(td, include_extras=True)
        required = {k for k, a in hints.items() if typing.get_origin(a) is typing.Required} - {"t"}
        assert set(M.SCHEMAS[mtype]) == required, mtype
    assert set(M.RUN_TASK) | set(M.RUN_TASK_OPTIONAL) == set(typing.get_type_hints(M.RunTask))


def test_a_new_definition_yields_its_checks() -> None:
    class Probe(typing.TypedDict):
        a: str
        b: int
        c: float
        d: list[str]
        e: M.Location
        f: typing.NotRequired[bool]
        g: typing.Literal["x", "y"]
        h: M.Payload | None

    assert M.schema_of(Probe) == {
        "a": (str,), "b": (int,), "c": (int, float), "d": (list,), "e": (dict,), "g": (str,),
        "h": (M.Payload, type(None)),
    }  # fmt: skip
    assert M.schema_of(Probe, optional=True) == {"f": (bool,)}
    with pytest.raises(WireError, match="'b'"):
        M.check_fields({"a": "s", "b": True, "c": 1, "d": [], "e": {}, "g": "x", "h": None}, M.schema_of(Probe), "p")


@pytest.mark.parametrize(
    ("ann", "good", "bad"),
    [
        (M.TaskKey, [["a", 1]], [["a", True], ["a", 1, 2], ("a", 1), ["a"]]),
        (list[M.Device], [[], ["cpu", "gpu"]], [["tpu"], "cpu", [1]]),
        (dict[M.Device, int], [{"cpu": 2}], [{"cpu": True}, {"tpu": 1}, {"cpu": 1.5}]),
        (float, [1, 1.5], [True, "1", None]),
        (M.StealTask, [["a", 0, "o", "k", "cpu", ["cpu"], 0, 0.5, []]],
         [["a", 0, "o", "k", "cpu", [], 0, 0.5, []], ["a", 0, "o", "k", "cpu", ["cpu"], -1, 0.5, []],
          ["a", 0, "o", "k", "cpu", ["cpu"], 0, float("nan"), []], ["a", 0, "o", "k", "cpu", ["cpu"], 0, 0.5]]),
    ],
    ids=["task-key", "devices", "free", "float", "steal-task"],
)
def test_in_depth_checks_follow_the_annotations(ann: Any, good: list[Any], bad: list[Any]) -> None:
    check = M.checker(ann)
    assert all(check(x) for x in good)
    assert not any(check(x) for x in bad)


def test_the_steal_layout_is_the_named_tuple() -> None:
    assert M.StealTask._fields == ("id", "att", "owner", "kernel", "device", "devices", "nbytes", "predicted", "path",
                                   "spec")  # fmt: skip
    assert M.STEAL_HEADER_LEN == 9
    assert M.STEAL_KINDS == ("steal_req", "steal_offer", "steal_accept", "steal_commit", "steal_ack")
