"""The value codec: Python values <-> Payload (msgpack blob + zero-copy array frames)."""

from __future__ import annotations

import enum
import math
from collections import OrderedDict
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from meshaios.errors import SerializationError, WireError
from meshaios.wire import values as V
from meshaios.wire.payload import Payload
from meshaios.wire.values import TaskRef, array_from_buffer, check_dtype, dumps, loads


def roundtrip(value: Any, *, allow_pickle: bool = False) -> Any:
    payload, _ = dumps(value, allow_pickle=allow_pickle)
    return loads(payload, allow_pickle=allow_pickle)


def frame_bytes(payload: Payload, i: int = 0) -> np.ndarray[Any, Any]:
    """The payload's i-th frame as a flat uint8 array, to compare memory with."""
    return np.frombuffer(payload.buffers[i], dtype=np.uint8)


class Point:  # an arbitrary object: only pickle can carry it
    def __init__(self, x: int) -> None:
        self.x = x

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and other.x == self.x

    def __hash__(self) -> int:
        return self.x


class Colour(enum.IntEnum):
    RED = 1


# ---------------------------------------------------------------------------------------------- plain data
@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -1,
        2**63 - 1,
        -(2**63),
        2**64 - 1,
        1.5,
        -0.0,
        "",
        "héllo ✓",
        b"",
        b"\x00\xff",
        [],
        {},
        [1, "a", None, [2.5, {"k": b"v"}]],
        {"a": 1, "b": [1, 2], "c": {"d": None}},
        {1: "int key", 2.5: "float key", b"b": "bytes key"},
    ],
)
def test_plain_data_round_trips_unchanged(value: Any) -> None:
    out = roundtrip(value)
    assert out == value
    assert type(out) is type(value)


def test_tuples_stay_tuples_and_lists_stay_lists_when_nested() -> None:
    value = (1, [2, (3, 4)], {"t": (5,)}, ())
    out = roundtrip(value)
    assert out == value
    assert type(out) is tuple
    assert type(out[1]) is list
    assert type(out[1][1]) is tuple
    assert type(out[2]["t"]) is tuple
    assert out[3] == ()


def test_sets_and_frozensets_keep_their_types_even_as_keys_and_members() -> None:
    value = {frozenset({1, 2}): {frozenset({"x"}), (1, 2)}, "s": {1, 2, 3}, "e": set()}
    out = roundtrip(value)
    assert out == value
    assert type(out["s"]) is set
    key = next(k for k in out if isinstance(k, frozenset))
    assert type(key) is frozenset
    assert type(out[key]) is set


def test_tuple_keys_round_trip() -> None:
    assert roundtrip({(1, "a"): 2, (): 3}) == {(1, "a"): 2, (): 3}


@pytest.mark.parametrize("value", [1 + 2j, -0.5j, complex(math.inf, -1)])
def test_complex_round_trips(value: complex) -> None:
    out = roundtrip(value)
    assert type(out) is complex
    assert out == value


@pytest.mark.parametrize("value", [2**64, 2**200, -(2**63) - 1, -(2**300), 10**1000])
def test_integers_beyond_64_bits_round_trip(value: int) -> None:
    out = roundtrip(value)
    assert type(out) is int
    assert out == value


@pytest.mark.parametrize(
    "value",
    [
        np.float64(1.5),
        np.float32(-2.25),
        np.float16(0.5),
        np.int8(-3),
        np.uint64(2**64 - 1),
        np.bool_(True),
        np.complex128(1 - 2j),
        np.str_("ab"),
        np.str_(""),
        np.bytes_(b"xy"),
        np.bytes_(b""),
        np.datetime64("2020-01-02", "D"),
        np.timedelta64(5, "s"),
    ],
)
def test_numpy_scalars_round_trip_with_their_dtype(value: np.generic) -> None:
    out = roundtrip(value)
    assert type(out) is type(value)
    assert out.dtype == value.dtype
    assert out == value


def test_nan_survives() -> None:
    assert math.isnan(roundtrip(float("nan")))
    assert np.isnan(roundtrip(np.float32("nan")))


def test_subclasses_of_plain_types_degrade_to_the_base_type_without_pickle() -> None:
    assert type(roundtrip(Colour.RED)) is int
    od = roundtrip(OrderedDict(a=1))
    assert type(od) is dict
    assert od == {"a": 1}


def test_subclasses_keep_their_type_with_pickle() -> None:
    assert roundtrip(Colour.RED, allow_pickle=True) is Colour.RED


# ---------------------------------------------------------------------------------------------- arrays
DTYPES = [
    "bool",
    "int8",
    "uint8",
    "<i2",
    ">i4",
    "<u8",
    "float16",
    "<f4",
    ">f8",
    "complex64",
    ">c16",
    "S3",
    "<U2",
    "datetime64[ms]",
    "timedelta64[D]",
]
SHAPES = [(), (0,), (5,), (2, 3), (2, 0, 4), (1, 1, 1, 2)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_arrays_round_trip_every_dtype_and_shape(dtype: str, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 100, size=shape)
    arr = raw.astype(dtype)
    payload, _ = dumps(arr, allow_pickle=False)
    assert len(payload.buffers) == 1
    out = loads(payload, allow_pickle=False)
    assert isinstance(out, np.ndarray)
    assert out.dtype == arr.dtype
    assert out.shape == shape
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize("dtype", DTYPES)
def test_decoded_array_is_a_view_of_the_frame_not_a_copy(dtype: str) -> None:
    arr = np.arange(12).reshape(3, 4).astype(dtype)
    payload, _ = dumps(arr, allow_pickle=False)
    frame = bytes(payload.buffers[0])  # what a socket would hand us
    received = Payload(payload.blob, (frame,))
    out = loads(received, allow_pickle=False)
    assert np.shares_memory(out, np.frombuffer(frame, dtype=np.uint8))
    np.testing.assert_array_equal(out, arr)


def test_encoding_a_contiguous_array_does_not_copy_it() -> None:
    arr = np.arange(10.0)
    payload, _ = dumps(arr, allow_pickle=False)
    assert np.shares_memory(frame_bytes(payload), arr)


def test_zero_dimensional_array_keeps_shape_and_value() -> None:
    out = roundtrip(np.array(3.25))
    assert isinstance(out, np.ndarray)
    assert out.shape == ()
    assert out.ndim == 0
    assert out[()] == 3.25


@pytest.mark.parametrize(
    "arr",
    [
        np.arange(20).reshape(4, 5)[:, ::2],
        np.arange(20).reshape(4, 5)[::-1],
        np.arange(24.0).reshape(2, 3, 4).transpose(2, 0, 1),
        np.asfortranarray(np.arange(6, dtype=">i2").reshape(2, 3)),
    ],
    ids=["strided", "reversed", "transposed", "fortran"],
)
def test_non_contiguous_arrays_are_sent_in_c_order(arr: np.ndarray[Any, Any]) -> None:
    payload, _ = dumps(arr, allow_pickle=False)
    assert memoryview(payload.buffers[0]).nbytes == arr.nbytes
    assert bytes(payload.buffers[0]) == np.ascontiguousarray(arr).tobytes()
    out = loads(payload, allow_pickle=False)
    assert out.shape == arr.shape
    assert out.dtype == arr.dtype
    np.testing.assert_array_equal(out, arr)


def test_several_arrays_get_one_frame_each_in_order() -> None:
    a, b = np.arange(3), np.ones((2, 2), dtype=np.float32)
    payload, _ = dumps({"a": a, "nested": [(b, a)]}, allow_pickle=False)
    assert len(payload.buffers) == 3
    out = loads(payload, allow_pickle=False)
    np.testing.assert_array_equal(out["a"], a)
    np.testing.assert_array_equal(out["nested"][0][0], b)
    np.testing.assert_array_equal(out["nested"][0][1], a)
    assert payload.nbytes == len(payload.blob) + 2 * a.nbytes + b.nbytes


def test_masked_array_is_not_silently_stripped_of_its_mask() -> None:
    m = np.ma.masked_array([1, 2, 3], mask=[False, True, False])
    with pytest.raises(SerializationError):
        dumps(m, allow_pickle=False)
    out = roundtrip(m, allow_pickle=True)
    assert isinstance(out, np.ma.MaskedArray)
    assert np.ma.getmaskarray(out).tolist() == [False, True, False]


def test_object_and_structured_arrays_are_refused_on_encode_without_pickle() -> None:
    with pytest.raises(SerializationError):
        dumps(np.array([1, "a", None], dtype=object), allow_pickle=False)
    with pytest.raises(SerializationError):
        dumps(np.zeros(2, dtype=[("a", "i4"), ("b", "f8")]), allow_pickle=False)


def test_object_array_travels_pickled_not_as_a_raw_frame_when_pickle_is_on() -> None:
    arr = np.array([1, "a"], dtype=object)
    payload, _ = dumps(arr, allow_pickle=True)
    assert payload.buffers == ()  # never a raw frame of PyObject pointers
    assert list(loads(payload, allow_pickle=True)) == [1, "a"]


def array_payload(descr: Any, shape: Any, buffers: tuple[Any, ...], idx: Any = 0) -> Payload:
    blob = msgpack.packb(msgpack.ExtType(V.EXT_ARRAY, msgpack.packb([descr, shape, idx])))
    return Payload(blob, buffers)


@pytest.mark.parametrize("descr", ["|O", "O", "V8", "|V8", "<i4,<f8", "(2,)i4", "no-such-dtype", 5, "S", "U0"])
def test_forbidden_or_unknown_dtypes_are_refused_on_decode(descr: Any) -> None:
    with pytest.raises(WireError):
        loads(array_payload(descr, [1], (b"\x00" * 8,)), allow_pickle=True)


@pytest.mark.parametrize(
    ("shape", "nbytes"),
    [
        ([3], 8),  # too few bytes
        ([1], 16),  # too many bytes
        ([2, 2], 8),
        ([], 16),  # 0-d needs exactly one item
        ([-1], 8),
        ([1.0], 8),
        ([True], 8),
        ("8", 8),
        ([1] * 33, 8),  # more dimensions than allowed
        ([0, 2**63], 0),  # empty, but not a shape numpy can hold
    ],
)
def test_arrays_whose_shape_does_not_match_the_buffer_are_refused(shape: Any, nbytes: int) -> None:
    with pytest.raises(WireError):
        loads(array_payload("<i8", shape, (b"\x01" * nbytes,)), allow_pickle=False)


@pytest.mark.parametrize("idx", [1, -1, "0", None, True])
def test_array_referencing_a_missing_frame_is_refused(idx: Any) -> None:
    with pytest.raises(WireError):
        loads(array_payload("<i8", [1], (b"\x01" * 8,), idx=idx), allow_pickle=False)


def test_array_from_buffer_and_check_dtype_raise_wire_errors_themselves() -> None:
    with pytest.raises(WireError):
        array_from_buffer("<i4", [2], 12345)  # not a buffer
    with pytest.raises(WireError):
        check_dtype("|O")
    assert check_dtype("<f4") == np.dtype("<f4")
    out = array_from_buffer("<i4", [2], b"\x01\x00\x00\x00\x02\x00\x00\x00")
    assert out.tolist() == [1, 2]


def test_bad_scalar_extension_is_refused() -> None:
    for data in ([np.dtype("<i8").str, b"\x00" * 4], ["|O", b"\x00" * 8], ["<i8", "text"], ["<i8"]):
        blob = msgpack.packb(msgpack.ExtType(V.EXT_SCALAR, msgpack.packb(data)))
        with pytest.raises(WireError):
            loads(Payload(blob), allow_pickle=False)


# ---------------------------------------------------------------------------------------------- pickle
def test_pickle_extension_is_refused_without_pickle() -> None:
    payload, _ = dumps(Point(3), allow_pickle=True)
    with pytest.raises(WireError, match="pickle"):
        loads(payload, allow_pickle=False)
    assert loads(payload, allow_pickle=True) == Point(3)


def test_hand_made_pickle_extension_is_never_unpickled_without_pickle() -> None:
    import pickle

    blob = msgpack.packb(msgpack.ExtType(V.EXT_PICKLE, pickle.dumps(Point(1))))
    with pytest.raises(WireError):
        loads(Payload(blob), allow_pickle=False)


@pytest.mark.parametrize("value", [Point(1), object(), {"nested": [Point(2)]}, len, np.array([None], dtype=object)])
def test_arbitrary_objects_raise_serialization_error_on_an_insecure_encode(value: Any) -> None:
    with pytest.raises(SerializationError, match="insecure"):
        dumps(value, allow_pickle=False)


def test_value_nested_too_deeply_is_a_serialization_error_not_a_recursion_error() -> None:
    deep: Any = ()
    for _ in range(5000):
        deep = (deep,)
    with pytest.raises(SerializationError):
        dumps(deep, allow_pickle=False)


def test_unpicklable_object_is_a_serialization_error() -> None:
    import threading

    with pytest.raises(SerializationError):
        dumps(threading.Lock(), allow_pickle=True)


# ---------------------------------------------------------------------------------------------- task refs
class FakeFuture:
    def __init__(self, task_id: str) -> None:
        self.task_id = task_id


def test_refs_are_collected_in_order_and_decode_as_task_refs() -> None:
    value = [TaskRef("a"), {"k": (TaskRef("b"), 1)}, FakeFuture("c")]
    payload, refs = dumps(value, allow_pickle=False, ref_types=(FakeFuture,))
    assert refs == ["a", "b", "c"]
    out = loads(payload, allow_pickle=False)
    assert out == [TaskRef("a"), {"k": (TaskRef("b"), 1)}, TaskRef("c")]


def test_no_refs_for_plain_values() -> None:
    assert dumps([1, "a", np.arange(3)], allow_pickle=False)[1] == []


def test_foreign_object_with_task_id_is_not_a_ref_unless_its_type_is_declared() -> None:
    with pytest.raises(SerializationError):
        dumps(FakeFuture("x"), allow_pickle=False)


def test_resolve_ref_substitutes_each_reference() -> None:
    payload, refs = dumps([[TaskRef("x"), 2], {"y": TaskRef("y"), "x": TaskRef("x")}], allow_pickle=False)
    assert refs == ["x", "y", "x"]
    seen: list[str] = []

    def resolve(tid: str) -> Any:
        seen.append(tid)
        return {"x": np.arange(2), "y": "why"}[tid]

    out = loads(payload, allow_pickle=False, resolve_ref=resolve)
    np.testing.assert_array_equal(out[0][0], [0, 1])
    assert out[1]["y"] == "why"
    assert sorted(seen) == ["x", "x", "y"]


def test_resolve_ref_failure_becomes_a_wire_error() -> None:
    payload, _ = dumps(TaskRef("gone"), allow_pickle=False)

    def resolve(tid: str) -> Any:
        raise KeyError(tid)

    with pytest.raises(WireError, match="gone"):
        loads(payload, allow_pickle=False, resolve_ref=resolve)


def test_task_ref_equality_and_hash() -> None:
    assert TaskRef("a") == TaskRef("a")
    assert TaskRef("a") != TaskRef("b")
    assert TaskRef("a") != "a"
    assert len({TaskRef("a"), TaskRef("a")}) == 1
    assert repr(TaskRef("a")) == "TaskRef('a')"


# ---------------------------------------------------------------------------------------------- malformed input
@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"\xc1",  # never used
        b"\x92\x01",  # truncated array
        b"\x01\x02",  # extra data
        msgpack.packb(msgpack.ExtType(99, b"")),  # unknown extension
        msgpack.packb(msgpack.ExtType(V.EXT_BIGINT, b"12x")),
        msgpack.packb(msgpack.ExtType(V.EXT_BIGINT, b"9" * 6000)),
        msgpack.packb(msgpack.ExtType(V.EXT_COMPLEX, msgpack.packb(["a", 1]))),
        msgpack.packb(msgpack.ExtType(V.EXT_REF, b"\xff\xfe")),
        msgpack.packb(msgpack.ExtType(V.EXT_SET, msgpack.packb([[1]]))),  # unhashable member
        msgpack.packb({msgpack.ExtType(V.EXT_SET, msgpack.packb([1])): 1}),  # unhashable key
        b"\x91" * 100_000,  # nested too deeply
    ],
)
def test_malformed_blobs_raise_wire_error(blob: bytes) -> None:
    with pytest.raises(WireError):
        loads(Payload(blob), allow_pickle=False)


# ---------------------------------------------------------------------------------------------- properties
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.complex_numbers(allow_nan=False),
)
hashables = st.recursive(scalars, lambda c: st.tuples(c, c) | st.frozensets(c, max_size=3), max_leaves=8)
values = st.recursive(
    scalars | st.builds(TaskRef, st.text(min_size=1, max_size=8)),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.dictionaries(st.text(max_size=8) | st.integers(), children, max_size=4),
        st.dictionaries(hashables, children, max_size=3),
        st.sets(hashables, max_size=4),
        st.frozensets(hashables, max_size=4),
    ),
    max_leaves=25,
)


def strict_equal(a: Any, b: Any) -> bool:
    """Equality that also checks container types (tuple vs list, set vs frozenset)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(strict_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(strict_equal(a[k], b[k]) for k in a)
    return bool(a == b)


@given(values)
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_property_nested_values_round_trip(value: Any) -> None:
    assert strict_equal(roundtrip(value), value)


@given(
    hnp.arrays(
        dtype=st.one_of(
            hnp.integer_dtypes(endianness="="),
            hnp.unsigned_integer_dtypes(endianness=">"),
            hnp.floating_dtypes(),
            hnp.complex_number_dtypes(),
            hnp.datetime64_dtypes(),
            hnp.byte_string_dtypes(min_len=1),
            hnp.unicode_string_dtypes(min_len=1),
            st.just(np.dtype(bool)),
        ),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4),
    ),
    st.booleans(),
)
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_property_arrays_round_trip(arr: np.ndarray[Any, Any], transpose: bool) -> None:
    if transpose:
        arr = arr.T
    out = roundtrip(arr)
    assert out.dtype == arr.dtype
    assert out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)


@given(st.binary(max_size=200), st.lists(st.binary(max_size=64), max_size=3), st.booleans())
@settings(max_examples=500)
def test_property_arbitrary_bytes_only_ever_raise_wire_error(
    blob: bytes, frames: list[bytes], with_resolver: bool
) -> None:
    try:
        loads(Payload(blob, tuple(frames)), allow_pickle=False, resolve_ref=(lambda t: t) if with_resolver else None)
    except WireError:
        pass


ext_codes = st.sampled_from(
    [V.EXT_ARRAY, V.EXT_TUPLE, V.EXT_SET, V.EXT_FROZENSET, V.EXT_SCALAR, V.EXT_REF, V.EXT_COMPLEX, V.EXT_BIGINT]
)
inner = st.recursive(
    st.none() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=8) | st.binary(max_size=16) | st.floats(),
    lambda c: st.lists(c, max_size=4),
    max_leaves=8,
)
ext_values = st.builds(lambda code, body: msgpack.ExtType(code, msgpack.packb(body)), ext_codes, inner) | st.builds(
    msgpack.ExtType, ext_codes, st.binary(max_size=32)
)


@given(
    st.recursive(ext_values | inner, lambda c: st.lists(c, max_size=3), max_leaves=6),
    st.lists(st.binary(max_size=32), max_size=3),
)
@settings(max_examples=500)
def test_property_structured_garbage_only_ever_raises_wire_error(body: Any, frames: list[bytes]) -> None:
    """Well-formed msgpack with our extension codes around ill-formed contents: the harder fuzz case."""
    try:
        loads(Payload(msgpack.packb(body), tuple(frames)), allow_pickle=False)
    except WireError:
        pass


def test_encoding_and_decoding_keep_no_array_alive_through_a_cycle() -> None:
    """A node frees a result as soon as nothing refers to it. With the cyclic GC off (it runs by allocation count,
    and a quiet node allocates little), the encoder's packer and the decoder's closures used to keep every array
    they had touched: a node's RSS stayed at its peak after the store had freed everything."""
    import gc
    import weakref

    gc.disable()
    try:
        a = np.arange(1000.0)
        encoded = weakref.ref(a)
        payload, _ = dumps(a, allow_pickle=False)
        del a, payload
        assert encoded() is None

        deps = {"t": np.arange(10.0)}
        resolved = weakref.ref(deps["t"])
        ref_payload, _ = dumps([TaskRef("t"), 1], allow_pickle=False)
        value = loads(ref_payload, allow_pickle=False, resolve_ref=deps.__getitem__)
        assert value[0] is deps["t"]
        del value, deps
        assert resolved() is None
    finally:
        gc.enable()


# ---- small values are read by hooks made once (``SMALL_VALUE``), with the same outcome -------------------------


def _nested(levels: int) -> bytes:
    """A short blob of ``levels`` tuple extensions, each the whole content of the one around it (each is read
    inside the one around it: ``()`` in the end, ``levels`` deep on the way)."""
    blob = msgpack.packb([])
    for _ in range(levels):
        blob = msgpack.packb(msgpack.ExtType(V.EXT_TUPLE, blob))
    return blob


def test_nesting_is_bounded_on_both_ways_of_reading() -> None:
    # each level of a tuple takes at least 2 bytes (an ext header: fixext or ext 8, then the type): a small value
    # holds at most SMALL_VALUE / 2 levels, within the limit, so its hooks need not count them
    assert V.SMALL_VALUE // 2 <= V.MAX_DEPTH
    fits = max(n for n in range(V.MAX_DEPTH) if len(_nested(n)) <= V.SMALL_VALUE)
    assert loads(Payload(_nested(fits)), allow_pickle=False) == ()  # the small way
    assert loads(Payload(_nested(V.MAX_DEPTH)), allow_pickle=False) is not None  # the counting way
    with pytest.raises(WireError, match="nested more than"):
        loads(Payload(_nested(V.MAX_DEPTH + 1)), allow_pickle=False)


@pytest.mark.parametrize("resolving", [False, True])
@pytest.mark.parametrize(
    "value",
    [1, "x", [[1, (2, 3)], {"k": {4, 5}}], frozenset({"a"}), np.float32(2.5), 3 + 4j, 1 << 70, TaskRef("t1"),
     [TaskRef("t1"), (TaskRef("t2"),)]],
)
def test_small_values_read_as_large_ones_do(value: Any, resolving: bool) -> None:
    payload, _ = dumps(value, allow_pickle=False)
    assert len(payload.blob) <= V.SMALL_VALUE
    resolve = (lambda t: f"value of {t}") if resolving else None
    padded = dumps([value, "p" * V.SMALL_VALUE], allow_pickle=False)[0]  # the counting way
    assert [loads(payload, allow_pickle=False, resolve_ref=resolve), "p" * V.SMALL_VALUE] == loads(
        padded, allow_pickle=False, resolve_ref=resolve
    )


def test_a_small_pickle_is_refused_where_pickle_is_off() -> None:
    payload, _ = dumps(Point(1), allow_pickle=True)
    assert len(payload.blob) > V.SMALL_VALUE or loads(payload, allow_pickle=True) == Point(1)
    with pytest.raises(WireError, match="pickled value refused"):
        loads(Payload(msgpack.packb(msgpack.ExtType(V.EXT_PICKLE, b"\x80\x05N."))), allow_pickle=False)
    assert loads(Payload(msgpack.packb(msgpack.ExtType(V.EXT_PICKLE, b"\x80\x05N."))), allow_pickle=True) is None
