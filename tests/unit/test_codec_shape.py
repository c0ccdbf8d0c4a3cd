"""Bounded work before decoding (``codec.check_shape``): what is refused from a header's first bytes, and fast."""

from __future__ import annotations

import time

import msgpack
import pytest

from meshaios.errors import LimitExceeded, WireError
from meshaios.wire import messages as M
from meshaios.wire.codec import WireLimits, decode, encode
from meshaios.wire.guard import Throttle


def test_a_million_field_ping_is_refused_before_msgpack_runs() -> None:
    header = {"v": M.PROTOCOL_VERSION, "t": M.PING, **{f"f{i}": i for i in range(1_048_572)}}
    raw = msgpack.packb(header)
    t0 = time.perf_counter()
    with pytest.raises(LimitExceeded, match="1048574 fields"):
        decode([raw])
    assert time.perf_counter() - t0 < 0.05  # msgpack took 5-9 s over the same bytes


@pytest.mark.parametrize("first", [{"x": 1}, {"t": M.PING}])  # the type hidden behind another key
def test_a_large_header_must_say_its_type_first(first: dict[str, object]) -> None:
    raw = msgpack.packb({**first, "v": M.PROTOCOL_VERSION, "t": M.SUBMIT, "pad": "x" * 70_000, "tasks": []})
    with pytest.raises(LimitExceeded, match="does not start with its version and type"):
        decode([raw])


def test_small_types_have_small_headers_and_bulk_types_do_not() -> None:
    pad = "x" * 70_000
    with pytest.raises(LimitExceeded, match="ping header"):
        decode(encode({"t": M.PING, "pad": pad}))
    with pytest.raises(LimitExceeded, match="status header"):
        decode(encode({"t": M.STATUS, "pad": pad}))
    ids = [f"t{i:09d}" for i in range(8_000)]  # ~90 KB
    assert decode(encode({"t": M.RELEASE, "ids": ids}))["ids"] == ids  # a bulk type: a large header is fine


def test_maps_are_bounded_everywhere_and_arrays_by_max_items() -> None:
    with pytest.raises(WireError):
        decode(encode({"t": M.SWIM, "m": {str(i): i for i in range(70_000)}}))
    assert len(decode(encode({"t": M.RELEASE, "ids": [str(i) for i in range(70_000)]}))["ids"]) == 70_000
    with pytest.raises(WireError):
        decode(encode({"t": M.RELEASE, "ids": list(range(101))}), WireLimits(max_items=100))


def test_encode_puts_version_and_type_first() -> None:
    raw = encode({"ids": [], "t": M.RELEASE})[0]
    unpacker = msgpack.Unpacker()
    unpacker.feed(raw)
    assert unpacker.read_map_header() == 3
    assert [unpacker.unpack() for _ in range(4)] == ["v", M.PROTOCOL_VERSION, "t", M.RELEASE]


@pytest.mark.parametrize("raw", [b"", b"\x93\x01\x02\x03", b"\xc1", b"\xde\x00"])
def test_a_header_that_is_not_a_map_is_refused(raw: bytes) -> None:
    with pytest.raises(WireError):
        decode([raw])


def test_the_throttle_forgets_after_its_window() -> None:
    t = Throttle(strikes=3, window=1.0, cooldown=2.0)
    assert not t.refused(b"a", 0.0)
    assert not t.refused(b"a", 0.5)
    assert not t.refused(b"a", 1.6)  # the window restarted at 1.6: one strike
    assert not t.refused(b"a", 1.7)
    assert t.refused(b"a", 1.8)
    assert t.cooling(b"a", 2.0)
    assert not t.cooling(b"a", 3.9)
    assert t.throttled == 0
