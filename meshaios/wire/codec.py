"""Framing: one msgpack header frame, then the raw buffers of every payload, zero-copy both ways.

``[header, buf0, buf1, ...]`` -- the header references its buffers by position. Decoding is strict: the header
must be a map of a known type with its schema's fields, fit the configured limits, and reference every extra frame
exactly once, in order. Any violation is a ``WireError``; nothing else escapes ``decode``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

from meshaios.errors import LimitExceeded, WireError
from meshaios.wire import messages as M
from meshaios.wire.messages import PROTOCOL_VERSION, Message, check_message
from meshaios.wire.packers import packb
from meshaios.wire.payload import Payload

EXT_PAYLOAD = 42
BLOB_IN_HEADER = 64 << 10  # larger value blobs travel in a frame of their own
# Messages that never carry data: their headers are small, whoever sends them. Checked before decoding (the type is
# read from the header's first bytes), so a 9 MB ``ping`` costs a few microseconds, not seconds of msgpack.
SMALL_TYPES = frozenset(
    {M.PING, M.PONG, M.HELLO, M.WELCOME, M.STATUS, M.FETCH, M.STORED, M.GET, M.PUT_ACK, M.ERROR}
    | {M.DETACH, M.FENCED, M.FAULT}
)
PEEK_BYTES = 64  # enough for a map header, "v": <int>, "t": <type name>


@dataclass(frozen=True)
class WireLimits:
    max_header: int = 64 << 20
    max_frames: int = 1 << 16
    max_items: int = 1 << 20  # longest array in a header
    max_fields: int = 64  # fields of the header map itself (the widest message has 7)
    max_map_items: int = 1 << 16  # largest map anywhere in a header: maps are records and dependency tables
    small_header: int = 64 << 10  # a header of a SMALL_TYPES message, and any header that hides its type

    @classmethod
    def from_config(cls, config: Any) -> WireLimits:
        """The limits a node's configuration asks for: ``max_header_bytes``, ``max_frames``, ``max_items`` where it
        has them, the defaults where not. Not bounded by ``max_frame_bytes``: a header that came in one frame is
        (libzmq saw to it), but a streamed message's header is put together from many chunks, and a 10,000-task
        ``submit`` has a header of megabytes."""
        d = cls()
        return cls(
            max_header=int(getattr(config, "max_header_bytes", 0) or d.max_header),
            max_frames=int(getattr(config, "max_frames", 0) or d.max_frames),
            max_items=int(getattr(config, "max_items", 0) or d.max_items),
        )


DEFAULT_LIMITS = WireLimits()


def encode(msg: Mapping[str, Any]) -> list[Any]:
    """Frames for ``msg`` (a ``Message``, or any map of one's shape); the caller sends them with ``copy=False`` so
    array buffers are never copied."""
    frames: list[Any] = [b""]

    def default(obj: Any) -> Any:
        if isinstance(obj, Payload):
            blob, buffers = obj.blob, obj.buffers
            start = len(frames) - 1
            if not buffers and len(blob) < 256 and start < 0x80:  # a tiny task's function, arguments and result
                return _ext(_SHORT_REF[len(blob)] + blob + _TAIL[start])
            if len(blob) > BLOB_IN_HEADER:
                # a large blob (a big list, a pickled object) gets a frame of its own, so the header stays small
                frames.append(blob)
                frames.extend(buffers)
                return _ext(packb([None, start, len(buffers) + 1]))
            frames.extend(buffers)
            return _ext(_payload_ref(blob, start, len(buffers)))
        raise TypeError(f"cannot encode {type(obj).__name__} in a message header")

    # a copy, the caller's dict left as it was; "v" then "t" first, so a receiver can read the type before decoding
    msg = {"v": msg.get("v", PROTOCOL_VERSION), "t": msg.get("t"), **msg}
    frames[0] = packb(msg, default)
    return frames


_SHORT_REF = [b"\x93\xc4" + bytes((n,)) for n in range(256)]  # ``[blob, ...`` for a blob of n bytes (a bin 8)
_TAIL = [bytes((start, 0)) for start in range(0x80)]  # ``..., start, 0]``: no frames of its own


def _ext(ref: bytes) -> msgpack.ExtType:
    """``msgpack.ExtType(EXT_PAYLOAD, ref)`` without its checks (a code and bytes known good): 0.1 us, not 0.8."""
    return _new_tuple(msgpack.ExtType, (EXT_PAYLOAD, ref))


_new_tuple = tuple.__new__


def _payload_ref(blob: bytes, start: int, count: int) -> bytes:
    """``packb([blob, start, count])``, a payload's reference in a header; its common form (a blob under 256 bytes,
    frame numbers under 128: a bin 8 and two positive fixints) written directly, without a packer."""
    if len(blob) < 256 and start < 0x80 and count < 0x80:
        return _SHORT_REF[len(blob)] + blob + bytes((start, count))
    return packb([blob, start, count])


def decode_message(frames: list[Any], limits: WireLimits = DEFAULT_LIMITS) -> Message:
    """The message in ``frames``, checked against its type's definition (``messages.py``): ``msg["t"] == RUN``
    narrows it to a ``Run``. Any violation is a ``WireError``."""
    if not frames:
        raise WireError("empty message")
    if len(frames) > limits.max_frames:
        raise LimitExceeded(f"{len(frames)} frames exceed the limit of {limits.max_frames}")
    try:
        head = memoryview(_buffer(frames[0]))
    except TypeError as exc:
        raise WireError(f"header frame is not a buffer: {type(frames[0]).__name__}") from exc
    # measure before copying anything: a hostile peer's 1 GiB "header" is refused, not materialised
    if head.nbytes > limits.max_header:
        raise LimitExceeded(f"header of {head.nbytes} bytes exceeds the limit of {limits.max_header}")
    if not (0 < head.nbytes <= limits.small_header and 0x80 <= head[0] <= 0x8F and head[0] & 0xF <= limits.max_fields):
        check_shape(head, limits)  # all but a small header of at most 15 fields (a fixmap), which passes it
    bufs = frames[1:]
    used = [0]
    # a header without extra frames (every tiny task's SUBMIT and RESULTS) can only hold payloads in their short
    # form, ``[blob, 0, 0]``: a hook made once reads those; a header with frames gets one that counts them
    ext_hook = _ref_reader(bufs, used) if bufs else _inline_ref
    try:
        msg = msgpack.unpackb(
            head,  # msgpack reads the buffer itself (a zmq frame's memory): every str, bin and ext it makes is a copy
            ext_hook=ext_hook,
            raw=False,
            strict_map_key=True,
            max_array_len=limits.max_items,
            max_map_len=min(limits.max_items, limits.max_map_items),
        )
    except WireError:
        raise
    except Exception as exc:
        raise WireError(f"malformed header: {type(exc).__name__}: {exc}") from exc
    if not isinstance(msg, dict):
        raise WireError("header is not a map")
    version = msg.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:  # True == 1 and 1.0 == 1, but neither is v1
        raise WireError(f"protocol version {version!r} is not {PROTOCOL_VERSION}")
    if used[0] != len(bufs):
        raise WireError(f"{len(bufs) - used[0]} unreferenced extra frames")
    return check_message(msg)


def _ref_reader(bufs: list[Any], used: list[int]) -> Callable[[int, bytes], Payload]:
    """The ext hook of a header followed by the frames ``bufs``: each payload reference takes the next frames, in
    order; ``used[0]`` counts those taken."""

    def ext_hook(code: int, data: bytes) -> Payload:
        if code != EXT_PAYLOAD:
            raise WireError(f"unknown header extension {code}")
        n = len(data) - 5
        if n >= 0 and data[:2] == b"\x93\xc4" and data[2] == n and data[-2] < 0x80 and data[-1] < 0x80:
            blob, start, count = data[3:-2], data[-2], data[-1]  # ``_payload_ref``'s short form: as unpackb reads it
        else:
            try:
                blob, start, count = msgpack.unpackb(data)
            except (ValueError, TypeError) as exc:
                raise WireError("malformed payload reference") from exc
        if (
            not (isinstance(blob, bytes) or (blob is None and type(count) is int and count >= 1))
            or type(start) is not int  # bool is not an int here
            or type(count) is not int
            or start != used[0]
            or count < 0
            or start + count > len(bufs)
        ):
            raise WireError("payload references frames out of order or out of range")
        used[0] = start + count
        if blob is None:
            head = bufs[start]
            blob = head.bytes if hasattr(head, "bytes") else bytes(head)
            start += 1
            count -= 1
        return Payload(blob, tuple(_buffer(f) for f in bufs[start : start + count]) if count else ())

    return ext_hook


def _inline_ref(code: int, data: bytes) -> Payload:
    """The ext hook of a header without extra frames: a payload in the short form ``[blob, 0, 0]`` (``_payload_ref``)
    read at once; anything else as ``_ref_reader`` reads it (with no frames, only ``[blob, 0, 0]`` is valid)."""
    if code == EXT_PAYLOAD and data[-2:] == b"\x00\x00" and data[:2] == b"\x93\xc4" and data[2] == len(data) - 5:
        return Payload(data[3:-2])
    return _ref_reader([], [0])(code, data)


decode = decode_message  # the short name that tests and tools use


def peek(head: memoryview) -> tuple[int, str | None]:
    """(number of fields, message type or None) from a header's first bytes, without decoding the rest: the type
    is known when the header starts ``{"v": <int>, "t": <str>, ...}``, as ``encode`` writes every header."""
    fields, first = _first_fields(head, 2)
    if len(first) == 4 and first[0] == "v" and first[2] == "t" and isinstance(first[3], str):
        return fields, first[3]
    return fields, None


def peek_type(frames: list[Any]) -> str | None:
    """The type a message's header names in its first bytes (``peek``); None when they do not show it."""
    try:
        return peek(memoryview(_buffer(frames[0])))[1]
    except Exception:
        return None


def peek_req(frames: list[Any]) -> int | None:
    """The ``req`` of a message whose header starts ``{"v": ..., "t": ..., "req": <int>, ...}``, as a client writes
    each request whose refusal it must hear of (``submit``, ``get``, ``put``), read from the first bytes of its header
    without decoding it; None when it cannot be read (garbage, another layout). A node echoes it in the ``error`` that
    refuses the message, so the client fails what that request was for."""
    try:
        _, first = _first_fields(memoryview(_buffer(frames[0])), 3)
    except Exception:
        return None
    if len(first) == 6 and first[0] == "v" and first[2] == "t" and first[4] == "req" and type(first[5]) is int:
        return first[5]
    return None


def _first_fields(head: memoryview, n: int) -> tuple[int, list[Any]]:
    """(number of fields, the first ``n`` keys and values, flat) from a header's first PEEK_BYTES; fewer when they
    are not plain scalars within those bytes. ``WireError`` if the header is not a map."""
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=PEEK_BYTES, max_str_len=PEEK_BYTES, max_bin_len=0,
                                max_array_len=0, max_map_len=0, max_ext_len=0)  # fmt: skip
    unpacker.feed(bytes(head[:PEEK_BYTES]))
    try:
        fields = unpacker.read_map_header()
    except Exception as exc:
        raise WireError("header is not a map") from exc
    try:
        return fields, [unpacker.unpack() for _ in range(min(fields, n) * 2)]
    except Exception:
        return fields, []  # over PEEK_BYTES or not plain scalars


def _map_size(head: memoryview) -> int:
    """Entries of the msgpack map a header starts with (fixmap, map 16, map 32)."""
    first = head[0] if head.nbytes else -1
    if 0x80 <= first <= 0x8F:
        return first & 0x0F
    if first == 0xDE and head.nbytes >= 3:
        return int.from_bytes(head[1:3], "big")
    if first == 0xDF and head.nbytes >= 5:
        return int.from_bytes(head[1:5], "big")
    raise WireError("header is not a map")


def check_shape(head: memoryview, limits: WireLimits) -> None:
    """The checks that cost nothing, made before msgpack sees the header: how many fields, and whether a header
    this large is allowed for its type (a header that hides its type gets the small limit)."""
    if head.nbytes <= limits.small_header:  # the common case: the map's size from its first bytes, nothing else
        fields = _map_size(head)
        if fields > limits.max_fields:
            raise LimitExceeded(f"header has {fields} fields; at most {limits.max_fields}")
        return
    fields, mtype = peek(head)
    if fields > limits.max_fields:
        raise LimitExceeded(f"header has {fields} fields; at most {limits.max_fields}")
    if head.nbytes > limits.small_header:
        if mtype is None:
            raise LimitExceeded(
                f"header of {head.nbytes} bytes does not start with its version and type (over "
                f"{limits.small_header} bytes it must)"
            )
        if mtype in SMALL_TYPES:
            raise LimitExceeded(f"{mtype} header of {head.nbytes} bytes exceeds the limit of {limits.small_header}")


def _buffer(frame: Any) -> Any:
    """A zmq.Frame exposes ``.buffer`` (a memoryview onto libzmq's memory); bytes pass through."""
    buf = getattr(frame, "buffer", None)
    return buf if buf is not None else frame
