"""Review of ``loads``' shortcut for a small frameless value (commit 2caa9b2): a blob of at most ``SMALL_VALUE``
bytes with no frames is read by hooks made once, without the counting hook's depth and object counters.

The reference is ``loads`` itself with the shortcut off (``SMALL_VALUE`` set below any blob's length, so every
value takes the counting path it took before 2caa9b2): both must give the same value, or refuse with the same
``WireError`` words, for real values, hand-made extensions and garbage, with and without a resolver.
"""

from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshaios.wire import values as V
from meshaios.wire.payload import Payload
from meshaios.wire.values import (
    EXT_ARRAY,
    EXT_BIGINT,
    EXT_COMPLEX,
    EXT_FROZENSET,
    EXT_PICKLE,
    EXT_REF,
    EXT_SCALAR,
    EXT_SET,
    EXT_TUPLE,
    MAX_DEPTH,
    TaskRef,
    dumps,
    loads,
)


def shape(x: Any) -> Any:
    """A decoded value as comparable data: types named, NaN comparable, sets sorted by repr."""
    if isinstance(x, np.generic):
        return ("np", x.dtype.str, x.tobytes())
    if isinstance(x, float | complex):
        return (type(x).__name__, repr(x))
    if isinstance(x, list | tuple):
        return (type(x).__name__, [shape(v) for v in x])
    if isinstance(x, set | frozenset):
        return (type(x).__name__, sorted(repr(shape(v)) for v in x))
    if isinstance(x, dict):
        return ("dict", [(shape(k), shape(v)) for k, v in x.items()])
    return (type(x).__name__, x)


def verdict(blob: bytes, allow_pickle: bool, resolve: bool, shortcut: bool) -> Any:
    resolved: list[str] = []

    def resolve_ref(task_id: str) -> Any:
        resolved.append(task_id)
        return ("resolved", task_id)

    with pytest.MonkeyPatch.context() as mp:
        if not shortcut:
            mp.setattr(V, "SMALL_VALUE", -1)  # every blob longer: the counting path, as before 2caa9b2
        try:
            out = loads(Payload(blob), allow_pickle=allow_pickle, resolve_ref=resolve_ref if resolve else None)
        except Exception as exc:
            return ("raised", type(exc).__name__, str(exc), resolved)
    return ("ok", shape(out), resolved)


hashable = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),  # beyond 64 bits: EXT_BIGINT
        st.floats(allow_nan=True),
        st.text(max_size=4),
        st.binary(max_size=4),
        st.complex_numbers(allow_nan=True),
        st.sampled_from([np.int8(3), np.float32(1.5), np.str_(""), np.bool_(True), np.uint64(2**63)]),
    ),
    lambda inner: st.one_of(st.tuples(inner, inner), st.frozensets(inner, max_size=2)),
    max_leaves=4,
)
plain_values = st.recursive(
    hashable,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.tuples(inner),
        st.sets(hashable, max_size=2),
        st.dictionaries(st.one_of(st.text(max_size=3), st.integers(-3, 3)), inner, max_size=2),
        st.builds(TaskRef, st.text(min_size=1, max_size=4)),
    ),
    max_leaves=8,
)


def ext(code: int, data: bytes) -> bytes:
    return bytes(msgpack.packb(msgpack.ExtType(code, data)))


def nested(code: int, levels: int, inner: bytes = b"\x90") -> bytes:
    """``levels`` extensions of ``code``, each holding the next directly (no array around it), the last ``inner``."""
    for _ in range(levels):
        inner = ext(code, inner)
    return inner


hand_made = st.one_of(
    st.builds(ext, st.sampled_from([EXT_TUPLE, EXT_SET, EXT_FROZENSET]), st.binary(max_size=12)),
    st.builds(
        ext,
        st.sampled_from([EXT_SCALAR, EXT_COMPLEX, EXT_BIGINT, EXT_REF, EXT_ARRAY, 9, 11, 127]),
        st.binary(max_size=12),
    ),
    st.builds(lambda d: ext(EXT_SCALAR, msgpack.packb([d, b"\x00" * 4])), st.sampled_from(["<i4", "|O", "<f8", 1])),
    st.builds(lambda d: ext(EXT_ARRAY, msgpack.packb(["<i4", [1], d])), st.sampled_from([0, -1, "0", None])),
    st.builds(lambda n: ext(EXT_BIGINT, n), st.sampled_from([b"12", b"-0", b"x", b"1" * 200, b"\xff"])),
    st.builds(lambda t: ext(EXT_REF, t), st.sampled_from([b"t1", b"", b"\xff\xfe", b"a\x00"])),
    st.builds(nested, st.sampled_from([EXT_TUPLE, EXT_SET, EXT_FROZENSET]), st.integers(1, 45)),
    st.binary(max_size=40),
    st.builds(lambda parts: b"".join(parts), st.lists(st.binary(max_size=6), max_size=4)).map(
        lambda b: b"\x92" + b if b else b"\x90"
    ),
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plain_values, st.booleans(), st.booleans())
def test_a_small_value_reads_as_it_did_through_the_counting_hook(value: Any, allow_pickle: bool, resolve: bool) -> None:
    try:
        payload, _ = dumps(value, allow_pickle=False)
    except Exception:
        return  # not sendable on an insecure mesh: nothing to read
    blob = payload.blob
    assert verdict(blob, allow_pickle, resolve, True) == verdict(blob, allow_pickle, resolve, False)


@settings(max_examples=700, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(hand_made, min_size=1, max_size=3), st.booleans(), st.booleans())
def test_hand_made_small_blobs_get_the_counting_hooks_verdict(
    parts: list[bytes], allow_pickle: bool, resolve: bool
) -> None:
    """Extensions of every code (valid, near misses, garbage, nesting up to 45 levels), alone or in an array."""
    for blob in (parts[0], b"\x92" + parts[0] + parts[-1], bytes([0x90 + len(parts)]) + b"".join(parts)):
        assert verdict(blob, allow_pickle, resolve, True) == verdict(blob, allow_pickle, resolve, False)


def test_the_deepest_small_nesting_is_still_refused_past_max_depth() -> None:
    """The shortcut has no level counter: a value of at most SMALL_VALUE bytes must be unable to nest past MAX_DEPTH.
    The tightest nesting (each level an ext 8 holding the next: 3 bytes a level) is read whole up to the size limit,
    and the counting path refuses past MAX_DEPTH as before."""
    deepest = max(n for n in range(1, 200) if len(nested(EXT_TUPLE, n)) <= V.SMALL_VALUE)
    assert deepest < MAX_DEPTH
    blob = nested(EXT_TUPLE, deepest)
    assert verdict(blob, False, False, True) == verdict(blob, False, False, False)
    assert verdict(blob, False, False, True)[0] == "ok"
    too_deep = nested(EXT_TUPLE, MAX_DEPTH + 1)
    assert len(too_deep) > V.SMALL_VALUE
    with pytest.raises(V.WireError, match="nested more than"):
        loads(Payload(too_deep), allow_pickle=False)


def test_a_reference_in_a_small_value_is_resolved_once_through_the_counting_path() -> None:
    seen: list[str] = []
    blob = dumps([[TaskRef("t1"), (1, TaskRef("t2"))], {}], allow_pickle=False)[0].blob
    assert len(blob) <= V.SMALL_VALUE
    out = loads(Payload(blob), allow_pickle=False, resolve_ref=lambda i: seen.append(i) or i.upper())
    assert out == [["T1", (1, "T2")], {}]
    assert seen == ["t1", "t2"]
    assert loads(Payload(blob), allow_pickle=False) == [[TaskRef("t1"), (1, TaskRef("t2"))], {}]


def test_a_pickle_in_a_small_value_is_refused_on_an_insecure_mesh_either_way() -> None:
    blob = ext(EXT_PICKLE, b"cos\nsystem\n.")
    assert len(blob) <= V.SMALL_VALUE
    for resolve in (False, True):
        got = verdict(blob, False, resolve, True)
        assert got == verdict(blob, False, resolve, False)
        assert got[0] == "raised"
        assert "pickled value refused" in got[2]
    assert math.isnan(loads(Payload(msgpack.packb(float("nan"))), allow_pickle=False))
