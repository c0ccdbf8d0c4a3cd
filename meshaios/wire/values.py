"""Python values <-> ``Payload``: msgpack for plain data, raw frames for arrays, pickle only where allowed.

Why not pickle everything (as Dask and Ray do)? Because a pickle is code: on an insecure mesh it would let anyone
who reaches the port run anything. So the value codec is msgpack with a few extension types (arrays, tuples,
sets, task references), and falls back to cloudpickle only when the mesh is authenticated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np

from meshaios.errors import SerializationError, WireError
from meshaios.wire.packers import packb
from meshaios.wire.payload import Payload

EXT_ARRAY = 1
EXT_TUPLE = 2
EXT_SET = 3
EXT_SCALAR = 4
EXT_REF = 5
EXT_COMPLEX = 6
EXT_BIGINT = 7
EXT_FROZENSET = 8
EXT_PICKLE = 10

# dtype kinds we accept from the wire: numbers, bools, fixed-width bytes/str, datetimes. Never object ('O').
_ALLOWED_KINDS = frozenset("biufcSUmM")
MAX_NDIM = 32
# Tuples, sets and frozensets inside each other, at most. Each level is a msgpack call inside a msgpack call, and
# msgpack's C unpacker keeps ~48 KiB of stack per call: ~170 levels overflow an 8 MiB thread stack and kill the
# process (a 1 KiB argument did that to a node before this limit). Enforced on encode too, so that a sender
# learns of it rather than its receiver.
MAX_DEPTH = 64


class TaskRef:
    """A reference to another task's result inside arguments: the reason submitted futures make a DAG."""

    __slots__ = ("task_id",)

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id

    def __repr__(self) -> str:
        return f"TaskRef({self.task_id!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TaskRef) and other.task_id == self.task_id

    def __hash__(self) -> int:
        return hash(self.task_id)


def check_dtype(descr: str) -> np.dtype[Any]:
    try:
        dt = np.dtype(descr)
    except (TypeError, ValueError) as exc:
        raise WireError(f"unknown dtype {descr!r}") from exc
    if dt.kind not in _ALLOWED_KINDS or dt.hasobject or dt.fields is not None:
        raise WireError(f"dtype {descr!r} is not allowed on the wire")
    return dt


def array_from_buffer(descr: str, shape: list[int], buf: Any) -> np.ndarray[Any, Any]:
    """Zero-copy view of a received frame, after checking that the header tells the truth about it."""
    dt = check_dtype(descr)
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_NDIM
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)
    ):
        raise WireError(f"bad array shape {shape!r}")
    if dt.itemsize == 0:
        raise WireError(f"dtype {descr!r} has no size")
    try:
        mv = memoryview(buf)
    except TypeError as exc:
        raise WireError(f"array frame is not a buffer: {type(buf).__name__}") from exc
    count = 1
    for s in shape:
        count *= s
    if count * dt.itemsize != mv.nbytes:
        raise WireError(f"array of shape {shape} and dtype {descr} does not match a {mv.nbytes}-byte buffer")
    try:
        if count == 0:
            return np.empty(shape, dtype=dt)
        arr = np.frombuffer(mv, dtype=dt).reshape(shape)
        # read-only, like Ray's object store: a task that mutated its input would corrupt a retry of itself
        # and every other task sharing that input on the node
        arr.flags.writeable = False
        return arr
    except (ValueError, TypeError, OverflowError, MemoryError) as exc:  # e.g. a dimension numpy cannot index
        raise WireError(f"bad array of shape {shape!r}: {exc}") from exc


class ValueEncoder:
    """Encodes one value. ``refs`` collects the task ids found inside, so the caller learns the dependencies."""

    __slots__ = ("_depth", "allow_pickle", "buffers", "ref_types", "refs")

    def __init__(self, allow_pickle: bool, ref_types: tuple[type, ...] = ()) -> None:
        self.allow_pickle = allow_pickle
        self.ref_types = ref_types
        self.buffers: list[Any] = []
        self.refs: list[str] = []
        self._depth = 0

    def encode(self, value: Any) -> Payload:
        # on this thread's reused packer (wire/packers.py): a Packer made per value cost ~10 us, its buffer kept
        # alive by the cycle through ``self._default`` until the cyclic GC ran
        try:
            blob = packb(value, self._default, strict_types=True)
            buffers = self.buffers
            return Payload(blob, tuple(buffers) if buffers else ())
        finally:
            if self.buffers:
                self.buffers = []  # the encoder holds no array it encoded once the payload is made

    def _nested(self, value: Any) -> bytes:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise SerializationError(f"cannot serialise value: tuples or sets nested more than {MAX_DEPTH} deep")
            return packb(value, self._default, strict_types=True)
        finally:
            self._depth -= 1

    def _default(self, obj: Any) -> Any:
        if (
            isinstance(obj, np.ndarray)
            and not isinstance(obj, np.ma.MaskedArray)  # its mask would be silently dropped
            and obj.dtype.kind in _ALLOWED_KINDS
            and obj.dtype.fields is None
            and obj.dtype.itemsize > 0
        ):
            # not np.ascontiguousarray: it turns a 0-d array into shape (1,)
            arr = obj if obj.flags.c_contiguous else np.ascontiguousarray(obj)
            idx = len(self.buffers)
            # a uint8 view rather than memoryview(arr): the buffer protocol refuses datetime64/timedelta64
            self.buffers.append(arr.reshape(-1).view(np.uint8).data if arr.nbytes else b"")
            return msgpack.ExtType(EXT_ARRAY, packb([arr.dtype.str, list(obj.shape), idx]))
        if isinstance(obj, np.generic) and obj.dtype.kind in _ALLOWED_KINDS:
            raw = obj.tobytes() if obj.dtype.itemsize else b""  # np.str_("").tobytes() is 4 bytes, not 0
            return msgpack.ExtType(EXT_SCALAR, packb([obj.dtype.str, raw]))
        if isinstance(obj, TaskRef):
            self.refs.append(obj.task_id)
            return msgpack.ExtType(EXT_REF, obj.task_id.encode())
        if self.ref_types and isinstance(obj, self.ref_types):
            ref: Any = obj  # a client Future: anything with a ``task_id``
            task_id: str = ref.task_id
            self.refs.append(task_id)
            return msgpack.ExtType(EXT_REF, task_id.encode())
        if type(obj) is tuple:
            return msgpack.ExtType(EXT_TUPLE, self._nested(list(obj)))
        if type(obj) is set:
            return msgpack.ExtType(EXT_SET, self._nested(list(obj)))
        if type(obj) is frozenset:  # its own code: a frozenset can be a dict key or a set member, a set cannot
            return msgpack.ExtType(EXT_FROZENSET, self._nested(list(obj)))
        if type(obj) is complex:
            return msgpack.ExtType(EXT_COMPLEX, packb([obj.real, obj.imag]))
        if type(obj) is int:  # beyond 64 bits: msgpack cannot hold it natively
            return msgpack.ExtType(EXT_BIGINT, str(obj).encode())
        base = next((t for t in (int, float, str, bytes, list, dict) if isinstance(obj, t)), None)
        if base is not None and (base in (list, dict) or not self.allow_pickle):
            # subclasses (IntEnum, OrderedDict...) degrade to their base where pickle is off
            return base(obj)
        if not self.allow_pickle:
            raise SerializationError(
                f"cannot send a {type(obj).__qualname__} on an insecure mesh: only plain data, numpy arrays and "
                "references travel without pickle (use a token to enable arbitrary objects)"
            )
        import cloudpickle

        try:
            return msgpack.ExtType(EXT_PICKLE, cloudpickle.dumps(obj, protocol=5))
        except Exception as exc:
            raise SerializationError(f"cannot serialise {type(obj).__qualname__}: {exc}") from exc


def dumps(value: Any, *, allow_pickle: bool, ref_types: tuple[type, ...] = ()) -> tuple[Payload, list[str]]:
    enc = ValueEncoder(allow_pickle, ref_types)
    try:
        payload = enc.encode(value)
    except (SerializationError, WireError):
        raise
    except RecursionError as exc:
        raise SerializationError("cannot serialise value: nested too deeply") from exc
    except (TypeError, ValueError, OverflowError) as exc:
        raise SerializationError(f"cannot serialise value: {exc}") from exc
    return payload, enc.refs


def loads(
    payload: Payload,
    *,
    allow_pickle: bool,
    resolve_ref: Callable[[str], Any] | None = None,
) -> Any:
    """Decode; every malformed input raises ``WireError`` (never anything else), so callers can answer it."""
    blob = payload.blob
    if len(blob) <= SMALL_VALUE and not payload.buffers:
        # a tiny task's arguments or result: hooks made once, nothing to count (see SMALL_VALUE)
        small = _SMALL_READERS[allow_pickle] if resolve_ref is None else _SmallReader(allow_pickle, resolve_ref)
        try:
            return _read(blob, small.hook)
        except Exception as exc:
            raise _wire_error(exc) from exc
    buffers = payload.buffers
    depth = [0]  # extension objects met so far
    level = [0]  # how deep in nested tuples/sets we are now

    def hook(code: int, data: bytes) -> Any:
        depth[0] += 1
        if depth[0] > 100_000:
            raise WireError("too many extension objects")
        if code not in _NESTING:
            return _ext_value(code, data, buffers, allow_pickle, resolve_ref, _unpack)
        level[0] += 1
        try:
            if level[0] > MAX_DEPTH:
                raise WireError(f"value nested more than {MAX_DEPTH} deep")
            return _ext_value(code, data, buffers, allow_pickle, resolve_ref, _unpack)
        finally:
            level[0] -= 1

    def _unpack(data: bytes) -> Any:
        return _read(data, hook)

    try:
        return _unpack(blob)
    except Exception as exc:
        raise _wire_error(exc) from exc
    finally:
        # ``hook`` and ``_unpack`` refer to each other: a cycle that only the cyclic GC frees, and it runs by
        # allocation count. Through ``resolve_ref`` it held a task's inputs (100 MiB arrays) long after the task
        # ended; unlinked here, they go with the value.
        _unpack = _unlinked


# A value of at most this many bytes, with no frames of its own, is read by ``_SmallReader``'s hook,
# without ``loads``' two counters: it cannot hold more than MAX_DEPTH nested tuples or sets (each level takes at
# least 2 bytes: an ext header around the level inside) nor 100,000 extension objects.
SMALL_VALUE = 2 * MAX_DEPTH
_NESTING = frozenset((EXT_TUPLE, EXT_SET, EXT_FROZENSET))


def _read(data: bytes, hook: Callable[[int, bytes], Any]) -> Any:
    return msgpack.unpackb(data, ext_hook=hook, raw=False, strict_map_key=False, use_list=True)


def _wire_error(exc: Exception) -> WireError:
    """What ``loads`` raises for ``exc``, met while decoding."""
    if isinstance(exc, WireError):
        return exc
    if isinstance(exc, RecursionError):
        return WireError("value nested too deeply")
    # msgpack raises ValueError, ExtraData, FormatError, StackError...; a pickle may raise anything.
    return WireError(f"malformed value: {type(exc).__name__}: {exc}")


class _SmallReader:
    """A small value's extension hook: no counters (see SMALL_VALUE). Its bound methods are made per read, so a
    reader given a resolver holds no cycle (``loads``' counting hook unlinks its own: a cycle kept the resolver's
    inputs alive until the cyclic GC ran); references resolve as they are read, everything read once."""

    __slots__ = ("allow_pickle", "resolve_ref")

    def __init__(self, allow_pickle: bool, resolve_ref: Callable[[str], Any] | None) -> None:
        self.allow_pickle = allow_pickle
        self.resolve_ref = resolve_ref

    def hook(self, code: int, data: bytes) -> Any:
        return _ext_value(code, data, (), self.allow_pickle, self.resolve_ref, self.unpack)

    def unpack(self, data: bytes) -> Any:
        return _read(data, self.hook)


_SMALL_READERS = {p: _SmallReader(p, None) for p in (False, True)}


def _ext_value(
    code: int,
    data: bytes,
    buffers: tuple[Any, ...],
    allow_pickle: bool,
    resolve_ref: Callable[[str], Any] | None,
    unpack: Callable[[bytes], Any],
) -> Any:
    """The object one extension of a value stands for (``unpack`` reads the items of a tuple or a set)."""
    if code == EXT_ARRAY:
        descr, shape, idx = msgpack.unpackb(data, use_list=True)
        if not isinstance(idx, int) or not 0 <= idx < len(buffers) or not isinstance(descr, str):
            raise WireError("array references a missing frame")
        return array_from_buffer(descr, shape, buffers[idx])
    if code in _NESTING:
        items = unpack(data)
        if code == EXT_TUPLE:
            return tuple(items)
        return set(items) if code == EXT_SET else frozenset(items)
    if code == EXT_SCALAR:
        descr, raw = msgpack.unpackb(data)
        dt = check_dtype(descr)
        if not isinstance(raw, bytes) or len(raw) != dt.itemsize:
            raise WireError("bad numpy scalar")
        if dt.itemsize == 0:  # np.str_("") / np.bytes_(b""): frombuffer refuses a zero itemsize
            return dt.type()
        return np.frombuffer(raw, dtype=dt)[0]
    if code == EXT_COMPLEX:
        re, im = msgpack.unpackb(data)
        return complex(re, im)
    if code == EXT_BIGINT:
        if len(data) > 5000:
            raise WireError("integer too large")
        return int(data.decode())
    if code == EXT_REF:
        task_id = data.decode()
        if resolve_ref is None:
            return TaskRef(task_id)
        return resolve_ref(task_id)
    if code == EXT_PICKLE:
        if not allow_pickle:
            raise WireError("pickled value refused: this mesh is not authenticated")
        import cloudpickle

        return cloudpickle.loads(data)
    raise WireError(f"unknown value extension {code}")


def _unlinked(data: bytes) -> Any:
    raise AssertionError("loads() has returned")
