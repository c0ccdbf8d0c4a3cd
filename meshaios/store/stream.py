"""Large messages as bounded chunks with credit-based flow control: pure bookkeeping, no sockets.

A message whose frames (``wire.codec.encode``) add up to ``min_bytes`` or more does not travel as one ZeroMQ
message: one multi-gigabyte message would sit in front of every SWIM probe, heartbeat and task on the same link
for seconds, and the peer would be suspected or the client would fail over because its node looked silent. It
travels instead as a *stream*:

```
sender                                   receiver
  XHEAD {x, sizes}          ───────────▶  allocate the frames (lazily: pages fill as chunks land)
  XCHUNK {x, o, d} * window ───────────▶  copy at offset o, in order
                            ◀───────────  XACK {x, n: bytes so far}   (credit: the sender may run n + window ahead)
  ...                                     all bytes in: decode the frames as if they had come as one message
```

At most ``window`` chunks of one stream are queued on a link at a time, so anything else sent on that link waits
behind at most ``window * chunk`` bytes (32 MiB by default: tens of milliseconds even over CurveZMQ on a loaded
machine). Chunks are kept as they arrive (zero-copy frames) and put together once, by ``assemble``, which the
caller runs off its event loop for a large message: the loop only files chunks and sends acknowledgements. A
stream with no progress for ``stall_timeout`` seconds fails on both sides, with a reason; a receiver refuses
(``XACK`` with ``err``) a stream larger than ``max_bytes`` or beyond ``max_incoming`` open streams from one sender.
The reassembled frames go through the ordinary strict ``decode``, so a streamed message is checked
exactly like any other.

Endpoints are opaque keys chosen by the caller (a node uses the ROUTER identity of the peer or client); the caller
turns ``Emit`` actions into sends and ``Delivered`` into its ordinary message handling.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from meshaios.wire import messages as M
from meshaios.wire.payload import Payload

# The largest frame a node or client accepts (ZMQ_MAXMSGSIZE): twice the largest it sends. Messages under
# ``min_bytes`` travel whole and longer ones as ``chunk``-sized frames, so only a hostile or broken sender exceeds
# it, and libzmq then drops its connection from the frame's length field, before reading or decrypting the frame
# (a 13 MB header used to be read whole and decrypted by the I/O thread that also serves everyone else).
MAX_FRAME_BYTES = 4 << 20


@dataclass(frozen=True, slots=True)
class StreamConfig:
    min_bytes: int = 2 << 20  # a message at least this large is streamed
    chunk: int = 2 << 20
    window: int = 16  # chunks of one stream in flight (sent, not yet acknowledged)
    stall_timeout: float = 30.0  # seconds without progress before a stream fails
    max_incoming: int = 64  # open incoming streams per sender
    max_bytes: int = 1 << 40  # the largest message accepted as a stream


@dataclass(frozen=True, slots=True)
class Emit:
    """Send ``msg`` (a plain message; chunks carry their bytes as a ``Payload``) to endpoint ``dest``."""

    dest: Hashable
    msg: M.XHead | M.XChunk | M.XAck


@dataclass(frozen=True, slots=True)
class Delivered:
    """Every byte of an incoming stream arrived: ``assemble(sizes, parts)`` gives the message's frames, to be
    decoded as usual. That is one copy of the data, so the caller does it off its event loop when large."""

    src: Hashable
    sizes: list[int]
    parts: list[Any]

    @property
    def nbytes(self) -> int:
        return sum(self.sizes)


def assemble(sizes: Sequence[int], parts: Sequence[Any]) -> list[Any]:
    """The frames of a streamed message from its chunks, in order. A frame that arrived as one chunk is used as
    it is (no copy); others are copied into one new buffer each. Thread-safe: numpy copies without the GIL."""
    views = [np.frombuffer(p, dtype=np.uint8) for p in parts]
    frames: list[Any] = []
    i, at = 0, 0  # the next unread byte: views[i][at]
    for size in sizes:
        while i < len(views) and at >= views[i].nbytes:
            i, at = i + 1, 0
        if size == 0:
            frames.append(b"")
            continue
        if at == 0 and views[i].nbytes == size:
            frames.append(views[i])
            i += 1
            continue
        buf = np.empty(size, dtype=np.uint8)
        pos = 0
        while pos < size:
            if at >= views[i].nbytes:
                i, at = i + 1, 0
                continue
            n = min(size - pos, views[i].nbytes - at)
            buf[pos : pos + n] = views[i][at : at + n]
            pos += n
            at += n
        frames.append(buf)
    frames[0] = bytes(frames[0])  # the header, as decode wants it
    return frames


@dataclass(frozen=True, slots=True)
class StreamDone:
    """The receiver acknowledged the last byte of an outgoing stream."""

    dest: Hashable
    xid: int
    tag: Any


@dataclass(frozen=True, slots=True)
class StreamFailed:
    dest: Hashable
    xid: int
    tag: Any
    reason: str


StreamAction = Emit | Delivered | StreamDone | StreamFailed


def frame_bytes(frames: Sequence[Any]) -> int:
    return sum(len(f) if isinstance(f, bytes) else memoryview(f).nbytes for f in frames)


@dataclass(slots=True)
class _Out:
    xid: int
    dest: Hashable
    tag: Any
    segs: list[memoryview]
    total: int
    last: float
    sent: int = 0  # bytes emitted
    acked: int = 0
    seg: int = 0  # next chunk starts in this segment ...
    pos: int = 0  # ... at this position


class StreamSender:
    """Outgoing streams: emits chunks as credit allows."""

    def __init__(self, config: StreamConfig | None = None) -> None:
        self.config = config or StreamConfig()
        self._out: dict[int, _Out] = {}
        self._next = 0
        self.bytes_sent = 0
        self.completed = 0
        self.failed = 0

    @property
    def open_streams(self) -> int:
        return len(self._out)

    def pending_bytes(self) -> int:
        """Bytes accepted for sending and not yet acknowledged."""
        return sum(o.total - o.acked for o in self._out.values())

    def should_stream(self, frames: Sequence[Any]) -> bool:
        return frame_bytes(frames) >= self.config.min_bytes

    def open(self, dest: Hashable, frames: Sequence[Any], now: float, tag: Any = None) -> list[StreamAction]:
        segs = [memoryview(f).cast("B") if not isinstance(f, bytes) else memoryview(f) for f in frames]
        self._next += 1
        o = _Out(self._next, dest, tag, segs, sum(s.nbytes for s in segs), now)
        self._out[o.xid] = o
        return [Emit(dest, {"t": M.XHEAD, "x": o.xid, "sizes": [s.nbytes for s in segs]}), *self._pump(o)]

    def on_ack(self, src: Hashable, xid: int, n: int, err: str | None, now: float) -> list[StreamAction]:
        o = self._out.get(xid)
        if o is None or o.dest != src:
            return []  # late, or not from the endpoint we stream to
        if err is not None:
            return self._fail(o, f"the receiver refused the transfer: {err}")
        if n < o.acked or n > o.sent:
            return self._fail(o, f"acknowledged {n} bytes of {o.sent} sent")
        if n > o.acked:
            o.acked = n
            o.last = now
        if o.acked == o.total:
            del self._out[xid]
            self.completed += 1
            return [StreamDone(o.dest, o.xid, o.tag)]
        return list(self._pump(o))

    def dest_gone(self, dest: Hashable, reason: str) -> list[StreamAction]:
        out: list[StreamAction] = []
        for o in [o for o in self._out.values() if o.dest == dest]:
            out.extend(self._fail(o, reason))
        return out

    def tick(self, now: float) -> list[StreamAction]:
        out: list[StreamAction] = []
        for o in [o for o in self._out.values() if now - o.last > self.config.stall_timeout]:
            out.extend(self._fail(o, f"no progress for {self.config.stall_timeout:g} s ({o.acked} of {o.total} bytes)"))
        return out

    def _fail(self, o: _Out, reason: str) -> list[StreamAction]:
        self._out.pop(o.xid, None)
        self.failed += 1
        return [StreamFailed(o.dest, o.xid, o.tag, reason)]

    def _pump(self, o: _Out) -> list[Emit]:
        out: list[Emit] = []
        chunk = self.config.chunk
        limit = o.acked + self.config.window * chunk
        while o.sent < o.total and o.sent < limit:
            seg = o.segs[o.seg]
            if o.pos >= seg.nbytes:
                o.seg += 1
                o.pos = 0
                continue
            n = min(chunk, seg.nbytes - o.pos)
            if o.sent + n > limit:
                break  # the rest waits for credit
            data = seg[o.pos : o.pos + n]
            out.append(Emit(o.dest, {"t": M.XCHUNK, "x": o.xid, "o": o.sent, "d": Payload(b"", (data,))}))
            o.pos += n
            o.sent += n
            self.bytes_sent += n
        return out


@dataclass(slots=True)
class _In:
    src: Hashable
    xid: int
    sizes: list[int]
    total: int
    last: float
    parts: list[Any] = field(default_factory=list)  # the chunks as received (zero-copy frames)
    got: int = 0


@dataclass(slots=True)
class StreamReceiver:
    """Incoming streams: reassembles them, acknowledges as bytes land, hands back complete messages."""

    config: StreamConfig = field(default_factory=StreamConfig)
    _in: dict[tuple[Hashable, int], _In] = field(default_factory=dict)
    bytes_received: int = 0
    refused: int = 0
    dropped: int = 0

    @property
    def open_streams(self) -> int:
        return len(self._in)

    def on_head(self, src: Hashable, xid: int, sizes: list[Any], now: float) -> list[StreamAction]:
        c = self.config
        if not sizes or not all(type(s) is int and s >= 0 for s in sizes):
            return self._refuse(src, xid, "frame sizes must be non-negative integers")
        total = sum(sizes)
        if total > c.max_bytes:
            return self._refuse(src, xid, f"{total} bytes exceed the limit of {c.max_bytes}")
        if sum(1 for k in self._in if k[0] == src) >= c.max_incoming:
            return self._refuse(src, xid, f"more than {c.max_incoming} open transfers from one sender")
        if (src, xid) in self._in:
            return self._refuse(src, xid, "transfer id reused")
        # nothing is allocated until bytes arrive: an announced size costs nothing
        st = _In(src, xid, list(sizes), total, now)
        self._in[(src, xid)] = st
        return self._maybe_done(st) if total == 0 else []

    def on_chunk(self, src: Hashable, xid: int, offset: int, data: Any, now: float) -> list[StreamAction]:
        st = self._in.get((src, xid))
        if st is None:
            return []  # dropped or refused earlier: the sender fails on its own timeout or our refusal
        n = memoryview(data).nbytes
        if offset != st.got or st.got + n > st.total or n == 0:
            self._in.pop((src, xid), None)
            self.dropped += 1
            return self._refuse(src, xid, f"chunk at {offset} (+{n}) does not follow byte {st.got}")
        st.parts.append(data)
        st.got += n
        self.bytes_received += n
        st.last = now
        return self._maybe_done(st)

    def src_gone(self, src: Hashable) -> None:
        for key in [k for k in self._in if k[0] == src]:
            del self._in[key]
            self.dropped += 1

    def tick(self, now: float) -> None:
        for key in [k for k, st in self._in.items() if now - st.last > self.config.stall_timeout]:
            del self._in[key]
            self.dropped += 1

    def _maybe_done(self, st: _In) -> list[StreamAction]:
        out: list[StreamAction] = [Emit(st.src, {"t": M.XACK, "x": st.xid, "n": st.got})]
        if st.got == st.total:
            del self._in[(st.src, st.xid)]
            out.append(Delivered(st.src, st.sizes, st.parts))
        return out

    def _refuse(self, src: Hashable, xid: int, why: str) -> list[StreamAction]:
        self.refused += 1
        return [Emit(src, {"t": M.XACK, "x": xid, "n": 0, "err": why})]
