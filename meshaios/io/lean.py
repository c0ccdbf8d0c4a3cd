"""Awaiting a ZeroMQ socket's messages with one reader on its descriptor, instead of pyzmq's asyncio machinery.

``zmq.asyncio`` makes a future and a bookkeeping record per ``recv``/``send``, and asks the socket for its events
(``ZMQ_EVENTS``: a system call inside libzmq) four or five times per message; for the one-message-at-a-time round
trip of a tiny task that was a third of the client's and a sixth of the node's CPU (docs/performance.md, section
2). Here the socket is used through plain non-blocking calls, and the loop watches its descriptor (``ZMQ_FD``) with
one reader registered once.

The descriptor is edge-like: it signals that libzmq has commands to process, and any call on the socket may
process them -- a send included -- and so consume the signal of a message that arrived meanwhile (the lost
wake-ups of docs/performance.md, section 1). So every batch drains until ``ZMQ_EVENTS`` says nothing is left,
and whoever sends on the socket from the loop calls ``sent()`` afterwards, which wakes a waiting reader if
messages are there. The event loop's thread reads; another thread may send on the socket under ``lock`` (the sync
client's caller sending a SUBMIT, ``ZmqConnection.send_threadsafe``): a libzmq socket must never be used by two
threads at once, so the reader holds ``lock`` around its own calls on the socket.

Another thread may also *read* the socket for a while (``begin_read`` .. ``end_read``: the sync client's caller
waiting for the answer to a SUBMIT it sent, docs/performance.md section 20). Meanwhile the loop's reader callback
leaves the socket alone: the first time the descriptor signals it takes the descriptor off the loop (``parked``),
so the loop's thread is not woken for messages the other thread reads; the descriptor goes back on the loop
(``unpark``) at the loop's next send on the socket, or when the reading thread asks for it (``recheck``). A loop's
send that consumes the signal of a message meanwhile wakes the reading thread through a pipe, as ``sent()`` wakes
the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import select
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import zmq
import zmq.backend

# ``ZMQ_EVENTS`` through the backend's ``get``: pyzmq's own wraps each answer in an ``enum.Flag`` (and ``& POLLIN``
# makes another), a few microseconds a call that a round trip pays four to six times in each process
_get: Any = zmq.backend.Socket.get  # returns an int
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
# Sending and receiving a message frame by frame through the backend's calls, with plain int flags: pyzmq's
# ``send_multipart`` ORs ``zmq.SNDMORE`` into the flags per frame (an ``enum.Flag`` operation) and goes through the
# Python ``Socket.send`` wrapper; ``recv_multipart`` asks for ``RCVMORE`` after each frame (``getsockopt``, which
# makes a ``SocketOption`` enum), where the backend's ``recv`` has already set it on the frame (``Frame.more``)
_send: Any = zmq.backend.Socket.send
_recv: Any = zmq.backend.Socket.recv
_NOBLOCK = int(zmq.NOBLOCK)
_NOBLOCK_MORE = int(zmq.NOBLOCK | zmq.SNDMORE)
_BUFFERS = (bytes, zmq.Frame, memoryview)
_NOBLOCKS = (_NOBLOCK,)
_NOCOPY = (False,)


def send_frames(sock: zmq.Socket[Any], frames: Sequence[Any], first: bytes | None = None) -> None:
    """``sock.send_multipart([first, *frames], zmq.NOBLOCK, copy=False)`` (``first`` only if given), for less: raises
    ``zmq.Again`` (nothing sent) when the socket cannot take the message, and ``TypeError`` (nothing sent) for a frame
    that is not a buffer, as ``send_multipart`` does. A message once begun is completed even if an exception (a
    Ctrl-C) comes between two of its frames: a multipart message left open would take the next message's frames
    as its own. Such an exception leaves with ``sent_whole`` set on it."""
    for f in frames:
        if not isinstance(f, _BUFFERS):
            memoryview(f)  # TypeError before any frame goes: a message is sent whole or not at all
    if first is not None:
        frames = [first, *frames]
    last = len(frames) - 1
    i = 0  # frames handed to the socket: counted before each send, since an interrupt lands after a call returns
    try:
        while i < last:
            i += 1
            _send(sock, frames[i - 1], _NOBLOCK_MORE, False)
        if last >= 0:
            i += 1
            _send(sock, frames[last], _NOBLOCK, False)
    except zmq.ZMQError:
        raise  # the first frame refused (nothing sent), or the socket closed: no message to complete
    except BaseException as exc:
        if i:
            for j in range(i, last + 1):
                _send(sock, frames[j], _NOBLOCK_MORE if j < last else _NOBLOCK, False)
            exc.sent_whole = True  # type: ignore[attr-defined]
        raise


def _complete_last(sock: zmq.Socket[Any], kept: list[list[Any]]) -> None:
    """Holding the reader's lock: the last message a reading thread began to take, if an exception (a Ctrl-C)
    stopped it part-way, completed from the socket (its first frame not taken yet: dropped, left on the socket)."""
    msg = kept[-1]
    if not msg:
        kept.pop()
        return
    while msg[-1].more:
        msg.extend(map(_recv, (sock,), _NOBLOCKS, _NOCOPY))


def recv_frames(sock: zmq.Socket[Any]) -> list[Any]:
    """``sock.recv_multipart(zmq.NOBLOCK, copy=False)`` for less (the frames are ``zmq.Frame``)."""
    frame = _recv(sock, _NOBLOCK, False)
    out = [frame]
    while frame.more:
        frame = _recv(sock, _NOBLOCK, False)
        out.append(frame)
    return out


class LeanReader:
    """``recv_batch`` for a (sync, non-blocking) ZeroMQ socket, on the running event loop."""

    def __init__(self, sock: zmq.Socket[Any]) -> None:
        self.sock = sock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd: int | None = None  # registered with the loop (once, at the first wait)
        self._waiter: asyncio.Future[None] | None = None
        self.lock = threading.Lock()  # held around every call on the socket by the reader and any other user
        # ``serve``: batches go to this function from the loop's reader callback, with no task to wake
        self._handler: Callable[[list[list[Any]]], None] | None = None
        self._limit = 256
        self._drain_scheduled = False
        # ``begin_read``: a thread other than the loop's reads the socket now; ``parked``: the descriptor is off the
        # loop's reader list meanwhile (loop thread only); the reading thread's poller, and a pipe that wakes it
        self.reading = False
        self._reader: int | None = None  # the thread that reads (``begin_read``)
        # messages a reading thread took from the socket, in order, the last perhaps partly received (a Ctrl-C
        # stopped it): the loop's to take in (its next ``_take`` returns them first, or ``take_kept``); and whether
        # the thread left messages on the socket for the loop (past its limit)
        self._kept: list[list[Any]] = []
        self._left = False
        self.parked = False
        self.wanted = False  # the loop sent, or a thread could not begin reading, meanwhile: unpark at ``end_read``
        self._poller: Any = None
        self._pipe: tuple[int, int] | None = None

    def _wake(self) -> None:
        w, self._waiter = self._waiter, None
        if w is not None and not w.done():
            w.set_result(None)

    def _readable(self) -> None:
        """The descriptor signals: wake the reader; with none waiting, let libzmq take its commands (this clears
        the descriptor, which would otherwise keep signalling) and leave the messages for the next batch."""
        if self._handler is not None:
            self._drain()
        elif self._waiter is not None:
            self._wake()
        else:
            with self.lock, contextlib.suppress(zmq.ZMQError):
                if self.reading:  # another thread reads the socket now: off the loop until ``unpark``
                    self._park()
                else:
                    _get(self.sock, _EVENTS)

    def sent(self) -> None:
        """Call after each send on this socket (holding ``lock`` where other threads use the socket), on the loop's
        thread: the send may have consumed the signal of a message."""
        if self.reading:  # another thread reads: it is woken if a message waits (it would miss the signal)
            self.wanted = True  # and the replies to this send are the loop's to read once it stops
            if _get(self.sock, _EVENTS) & _POLLIN:
                self._poke()
            return
        if self.parked:  # replies to what the loop sent are the loop's to read: the descriptor goes back
            self.unpark()
        elif self._handler is not None:
            if not self._drain_scheduled and (self._kept or _get(self.sock, _EVENTS) & _POLLIN):
                self._schedule_drain()
        elif self._waiter is not None and _get(self.sock, _EVENTS) & _POLLIN:
            self._wake()

    def serve(self, handler: Callable[[list[list[Any]]], None], limit: int = 256, thread_reads: bool = False) -> None:
        """From now on each batch (as ``recv_batch`` returns them) goes to ``handler``, called from the loop's reader
        callback as soon as the descriptor signals: no future to settle and no task to resume per batch (10-15 µs
        a round trip less than awaiting ``recv_batch``, docs/performance.md section 16). More than ``limit``
        messages waiting: the rest in a later callback, so that timers and other sockets get their turn.
        ``thread_reads``: another thread may read for a while (``begin_read``); the pipe that wakes it is made now,
        so that it lives exactly as long as the reader (until ``close``)."""
        self._loop = asyncio.get_running_loop()
        self._handler, self._limit = handler, limit
        self._watch(self._loop)
        if thread_reads:
            with self.lock:
                if self._pipe is None and self._fd is not None:
                    r, w = os.pipe()
                    os.set_blocking(r, False)
                    os.set_blocking(w, False)
                    self._pipe = (r, w)
                    self._poller = select.poll()
                    self._poller.register(self._fd, select.POLLIN)
                    self._poller.register(r, select.POLLIN)
        self.unpark()  # if it was parked (io/lean.py: another thread read) and nobody reads now
        self._schedule_drain()  # messages may be waiting already

    def unserve(self) -> None:
        self._handler = None

    def _schedule_drain(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._drain_scheduled = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        self._drain_scheduled = False
        handler = self._handler
        if handler is None or self._fd is None:
            return
        limit = self._limit
        out = self._take(limit)
        if out is None:  # another thread reads the socket now: the descriptor is off the loop until ``unpark``
            return
        if len(out) >= limit:
            self._schedule_drain()
        if out:
            handler(out)

    def _take(self, limit: int, reader: bool = False) -> list[list[Any]] | None:
        """Up to ``limit`` of the messages already here (none if none). None: not for this caller -- the loop's
        while another thread reads (``begin_read``), that thread's once the reader is closed.

        The reading thread's messages (``reader``) stay the loop's to take in: each goes into ``_kept`` as it is
        received, and what this returns (the messages new in this call) is only a look at them. The loop takes
        ``_kept`` whole, once (its own ``_take``, or ``take_kept``), under ``lock``. So an exception (a Ctrl-C) at
        any point of the reading thread, however many, neither loses a message nor hands one over twice: there is
        no second copy to hand over, and no step between receiving a frame and storing it where the loop looks."""
        sock = self.sock
        with self.lock:
            if self.reading is not reader or (reader and self._fd is None):
                if not reader:
                    self._park()  # under the lock: a thread that stops reading sees it parked (``end_read``)
                return None
            kept = self._kept
            if kept:
                _complete_last(sock, kept)
            if not reader:
                out, self._kept, self._left = kept, [], False
                while len(out) < limit and _get(sock, _EVENTS) & _POLLIN:
                    out.append(recv_frames(sock))
                return out
            # Another thread than the loop's: a Ctrl-C may stop it after any call. Each message's list goes into
            # ``_kept`` before its first frame, and each frame into the list within the one call (``extend`` of a
            # ``map``: no bytecode between the receive and the store, so no signal handler); a message left empty
            # or partly received is completed (or dropped) by the next ``_take`` or ``take_kept``
            start = len(kept)
            n = 0
            self._left = True  # until this call ends cleanly: stopped part-way, it has the loop read (``end_read``)
            while n < limit and _get(sock, _EVENTS) & _POLLIN:
                msg: list[Any] = []
                kept.append(msg)
                msg.extend(map(_recv, (sock,), _NOBLOCKS, _NOCOPY))
                while msg[-1].more:
                    msg.extend(map(_recv, (sock,), _NOBLOCKS, _NOCOPY))
                n += 1
            self._left = n >= limit  # more may wait, their descriptor's signal taken: the loop reads them
            return kept[start:]

    def take_kept(self) -> list[list[Any]]:
        """Loop thread: the messages a reading thread took (``read``) that the loop has not taken in yet, in the
        order received, each whole; from now on they are the caller's alone."""
        with self.lock:
            kept = self._kept
            if not kept:
                return kept
            if self._fd is not None:
                _complete_last(self.sock, kept)
            elif not kept[-1] or kept[-1][-1].more:
                kept.pop()  # closed: what was partly received cannot be completed
            self._kept = []
            return kept

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """The socket's descriptor on ``loop``'s reader list (once)."""
        if self._fd is None:
            with self.lock:
                fd = int(self.sock.get(zmq.FD))
            loop.add_reader(fd, self._readable)
            self._fd = fd

    async def recv_batch(self, limit: int) -> list[list[Any]]:
        """At least one message (a list of frames, ``copy=False``), and up to ``limit`` of those already here."""
        while True:
            got = self._take(limit)
            if got:
                return got
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self._watch(self._loop)
            w = self._waiter = self._loop.create_future()
            try:
                await w
            finally:
                if self._waiter is w:
                    self._waiter = None

    def _park(self) -> None:
        """Loop thread, holding ``lock``."""
        if self._fd is not None and self._loop is not None and not self.parked:
            self._loop.remove_reader(self._fd)
            self.parked = True

    def unpark(self) -> None:
        """Loop thread: the descriptor back on the loop once no other thread reads, and whatever is waiting read."""
        if self.parked and not self.reading and self._fd is not None and self._loop is not None:
            self.parked = self.wanted = False
            self._loop.add_reader(self._fd, self._readable)
            self._schedule_drain()

    def poke(self) -> None:
        """Any thread: wake the thread reading (``read``), if any, at once."""
        with self.lock:  # ``end_read`` may close the pipe meanwhile (and its descriptors be reused)
            self._poke()

    def _poke(self) -> None:
        """Holding ``lock``."""
        if self._pipe is not None:
            with contextlib.suppress(OSError):
                os.write(self._pipe[1], b"\0")

    def begin_read(self) -> bool:
        """Any thread but the loop's: from now on this thread reads the socket (``read``), until ``end_read``.
        False: it may not (another thread reads, or the socket is not served with ``thread_reads`` or is closed)."""
        with self.lock:
            if self.reading or self._fd is None or self._handler is None or self._pipe is None:
                self.wanted = True  # the thread reading now asks the loop to read once it stops
                return False
            self.reading, self._reader = True, threading.get_ident()
            return True

    def read(self, timeout: float) -> list[list[Any]] | None:
        """The reading thread: the messages here, waiting up to ``timeout`` seconds for one (``[]``: none came);
        None once the reader is closed. The descriptor also signals libzmq's other commands: after such a wake-up
        with no message, it waits again for the rest of the time."""
        out = self._take(self._limit, True)
        pipe = self._pipe
        if out is None or out or pipe is None:
            return out
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            events = self._poller.poll(math.ceil(left * 1000) if left > 0 else 0)  # without the GIL
            for fd, _ in events:
                if fd == pipe[0]:
                    with contextlib.suppress(OSError):
                        os.read(pipe[0], 65536)
            out = self._take(self._limit, True)
            if out is None or out or time.monotonic() >= deadline:
                return out

    def end_read(self, give_back: bool, reader: int | None = None) -> bool:
        """The reading thread gives the socket back. True: the loop must be asked to read again (call ``unpark``
        there) -- its reader is parked, and ``give_back`` (the reading thread stopped before it had what it waited
        for) or the loop has sent meanwhile, or another thread wanted to read; or the reading thread left messages
        past its limit whose descriptor's signal it took, or was stopped part-way while it took messages; or,
        ``give_back``, messages it took wait in ``_kept`` (a clean stop leaves those to the loop's next
        ``take_kept``). False: the loop's
        reader stays parked until the loop's next send (nothing is expected that the loop would read).
        ``reader``: a thread's id; if given, nothing happens (False) unless that thread is the one reading -- so a
        thread stopped by an exception may end its read whether or not it had begun it."""
        with self.lock:
            if reader is not None and (not self.reading or self._reader != reader):
                return False
            self.reading, self._reader = False, None
            if self._fd is None:
                self._close_pipe()
                return False
            return (self.parked and (give_back or self.wanted)) or self._left or (give_back and bool(self._kept))

    def _close_pipe(self) -> None:
        if self._pipe is not None:
            for fd in self._pipe:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._pipe = None
            self._poller = None

    def close(self) -> None:
        """Before the socket closes: the reader leaves the loop; a ``recv_batch`` waiting is cancelled; a thread
        reading (``begin_read``) is woken and stops."""
        if self._fd is not None and self._loop is not None and not self._loop.is_closed() and not self.parked:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._fd)
        with self.lock:
            self._fd = None
            if self.reading:
                self._poke()
            else:
                self._close_pipe()
        self._handler = None
        w, self._waiter = self._waiter, None
        if w is not None and not w.done():
            w.cancel()
