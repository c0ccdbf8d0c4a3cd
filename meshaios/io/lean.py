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
the loop. Who reads, and what the loop must do when, is one pure state machine (``Share`` and its transitions,
``loop_*``, ``thread_*``, ``closes``: events in, the next state and instructions out); ``LeanReader`` makes the
events under ``lock`` and carries out the instructions (``_do``).
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
from dataclasses import dataclass
from typing import Any

import zmq
import zmq.backend

from meshaios.fastinit import fast_init

# ``ZMQ_EVENTS`` through the backend's ``get``: pyzmq's own wraps each answer in an ``enum.Flag`` (and ``& POLLIN``
# makes another), a few microseconds a call that a round trip pays four to six times in each process
_get: Any = zmq.backend.Socket.get  # returns an int
# the option as its ``SocketOption`` member, not an int: the backend's ``get`` makes ``SocketOption(option)`` per call,
# which returns a member at once but looks an int up (~0.5 µs a call)
_EVENTS: Any = zmq.EVENTS
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


# Who reads the socket while another thread may read it for a while (``begin_read`` .. ``end_read``): a pure state
# machine -- no socket, loop, thread or clock in it. Each event of the shell (``LeanReader``, which makes them under
# its ``lock``) gives the next state and what the shell must do, as a bit set of these instructions:
PARK = 1  # take the descriptor off the loop's reader list (a thread reads: the loop is not to be woken for it)
UNPARK = 2  # put the descriptor back on the loop, and have the loop read what waits
POKE_IF_WAITING = 4  # wake the reading thread if a message waits (a send of the loop's may have taken its signal)
READ_IF_WAITING = 8  # the loop reads what waits, if anything (its send may have taken the signal); comes alone
POKE = 16  # wake the reading thread at once (the reader closed: it stops)
CLOSE_PIPE = 32  # close the pipe that wakes a reading thread (no thread can read any more)
REMOVE_READER = 64  # the descriptor off the loop for good (closing, and not parked)
RECHECK = 128  # (``thread_ends``) the loop must be asked to read again: the client calls ``recheck`` there


@fast_init
@dataclass(frozen=True, slots=True)
class Share:
    """The state of a socket that the loop's thread reads and another thread may read for a while."""

    reader: int | None = None  # the thread reading now (``begin_read`` .. ``end_read``); None: the loop's to read
    parked: bool = False  # the descriptor is off the loop's reader list (the loop was woken while a thread read)
    wanted: bool = False  # the loop must read once the thread stops: it sent meanwhile, or a thread was refused
    left: bool = False  # the thread may have left messages on the socket whose signal it took (past its limit,
    # or stopped part-way while it took them)
    closed: bool = False


_SHARES: dict[tuple[int | None, bool, bool, bool, bool], Share] = {}


def _share(reader: int | None, parked: bool, wanted: bool, left: bool, closed: bool) -> Share:
    """The ``Share`` of these values, one object per value (a few per thread that reads): a transition on the
    round trip's way costs a dict look-up, not the making of a frozen object (~0.2 against ~0.5-0.9 µs)."""
    key = (reader, parked, wanted, left, closed)
    s = _SHARES.get(key)
    if s is None:
        if len(_SHARES) > 4096:  # threads come and go: their states with them; the loop's own (OPEN among them:
            # ``is OPEN`` is the fast path's test) stay
            for gone in [k for k in _SHARES if k[0] is not None]:
                del _SHARES[gone]
        s = _SHARES[key] = Share(reader, parked, wanted, left, closed)
    return s


OPEN = _share(None, False, False, False, False)


def loop_woken(s: Share) -> tuple[Share, int]:
    """The descriptor woke the loop, or the loop would read: while a thread reads it steps aside (parks)."""
    if s.reader is None or s.parked:
        return s, 0
    return _share(s.reader, True, s.wanted, s.left, s.closed), PARK


def loop_takes(s: Share) -> tuple[Share, int]:
    """The loop reads the socket (``_take``): refused while a thread reads (``s.reader`` is not None then: it parks,
    and wakes that thread -- the loop reads when it saw a message, whose signal its own ``ZMQ_EVENTS`` read may have
    taken before the thread began to read); otherwise it reads what any thread left there."""
    if s.reader is not None:
        s, todo = loop_woken(s)
        return s, todo | POKE
    if s.left:
        return _share(None, s.parked, s.wanted, False, s.closed), 0
    return s, 0


def loop_sent(s: Share) -> tuple[Share, int]:
    """The loop sent on the socket (``sent``): the replies are the loop's to read. While a thread reads, once it
    stops (and that thread is woken if a message waits, whose signal the send may have taken); otherwise at once."""
    if s.reader is not None:
        return (s if s.wanted else _share(s.reader, s.parked, True, s.left, s.closed)), POKE_IF_WAITING
    if s.parked:
        return loop_unparks(s)
    return s, READ_IF_WAITING


def loop_unparks(s: Share) -> tuple[Share, int]:
    """The loop asks for its reader back (``unpark``): only once no thread reads, and not after closing."""
    if not s.parked or s.reader is not None or s.closed:
        return s, 0
    return _share(None, False, False, s.left, False), UNPARK


def thread_begins(s: Share, thread: int, ready: bool) -> tuple[Share, bool]:
    """Thread ``thread`` asks to read (``begin_read``); ``ready``: the socket is served for thread reads. Refused
    (False) while another thread reads, or closed, or not ready: then the loop must read once the reading one stops.
    The reading thread itself may begin again: a read it never ended (Ctrl-Cs in a row, in its ``end_read`` too)
    is its own to go on with, not a lock it keeps from itself."""
    if s.reader == thread and not s.closed and ready:
        return s, True
    if s.reader is not None or s.closed or not ready:
        return (s if s.wanted else _share(s.reader, s.parked, True, s.left, s.closed)), False
    return _share(thread, s.parked, s.wanted, s.left, False), True


def thread_takes(s: Share) -> Share | None:
    """The reading thread takes messages (``read``): None if it may not (no thread reads now, or closed). Until it
    has taken them cleanly (``thread_took``) it counts as having left messages for the loop."""
    if s.reader is None or s.closed:
        return None
    return s if s.left else _share(s.reader, s.parked, s.wanted, True, False)


def thread_took(s: Share, full: bool) -> Share:
    """The reading thread took messages cleanly; ``full``: as many as it may at once (more may wait)."""
    return s if s.left is full else _share(s.reader, s.parked, s.wanted, full, s.closed)


def thread_ends(s: Share, thread: int | None, give_back: bool, kept: bool) -> tuple[Share, int]:
    """The reading thread stops (``end_read``). ``thread``: given, nothing happens unless it is the one reading
    (so a thread stopped by an exception may end a read it perhaps never began). ``give_back``: it stopped before
    it had what it waited for; ``kept``: messages it took wait for the loop, which was not told of them. RECHECK:
    the loop must read again -- its reader is parked and the thread gives it back or the loop wanted it, or the
    thread left messages on the socket, or gives back with messages kept; CLOSE_PIPE once closed."""
    if thread is not None and s.reader != thread:
        return s, 0
    if s.closed:
        return _share(None, s.parked, s.wanted, s.left, True), CLOSE_PIPE
    again = (s.parked and (give_back or s.wanted)) or s.left or (give_back and kept)
    return _share(None, s.parked, s.wanted, s.left, False), RECHECK if again else 0


def closes(s: Share) -> tuple[Share, int]:
    """The reader closes: the descriptor leaves the loop (if on it); a reading thread is woken and stops (its
    ``end_read`` closes the pipe), or the pipe closes now."""
    out = (0 if s.parked else REMOVE_READER) | (POKE if s.reader is not None else CLOSE_PIPE)
    return _share(s.reader, s.parked, s.wanted, s.left, True), out


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
        # ``_drain_each`` is handing a message over: the loop's sends meanwhile leave their ``ZMQ_EVENTS`` read to it
        self._handling = False
        # ``begin_read``: a thread other than the loop's reads the socket now; ``parked``: the descriptor is off the
        # loop's reader list meanwhile (loop thread only); the reading thread's poller, and a pipe that wakes it
        self._share = OPEN  # who reads the socket (the pure state machine above), changed under ``lock``
        # messages a reading thread took from the socket, in order, the last perhaps partly received (a Ctrl-C
        # stopped it): the loop's to take in (its next ``_take`` returns them first, or ``take_kept``)
        self._kept: list[list[Any]] = []
        self._poller: Any = None
        self._pipe: tuple[int, int] | None = None

    @property
    def reading(self) -> bool:
        """A thread other than the loop's reads the socket now (``begin_read`` .. ``end_read``)."""
        return self._share.reader is not None

    @property
    def parked(self) -> bool:
        """The descriptor is off the loop's reader list while a thread reads (until ``unpark``)."""
        return self._share.parked

    def _do(self, todo: int) -> None:
        """Holding ``lock``: carry out the instructions of a ``Share`` transition (but RECHECK, the caller's)."""
        if todo == READ_IF_WAITING:  # the loop's send with no thread reading: every send of a node's sockets
            if self._handler is not None:
                if not self._drain_scheduled and (self._kept or _get(self.sock, _EVENTS) & _POLLIN):
                    self._schedule_drain()
            elif self._waiter is not None and _get(self.sock, _EVENTS) & _POLLIN:
                self._wake()
            return
        if not todo:
            return
        loop, fd = self._loop, self._fd
        if todo & PARK and fd is not None and loop is not None:
            loop.remove_reader(fd)
        if todo & REMOVE_READER and fd is not None and loop is not None and not loop.is_closed():
            with contextlib.suppress(Exception):
                loop.remove_reader(fd)
        if todo & UNPARK and fd is not None and loop is not None:
            loop.add_reader(fd, self._readable)
            self._schedule_drain()
        if todo & POKE_IF_WAITING and _get(self.sock, _EVENTS) & _POLLIN:
            self._poke()
        if todo & POKE:
            self._poke()
        if todo & CLOSE_PIPE:
            self._close_pipe()

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
                if self._share.reader is not None:  # another thread reads the socket now: off the loop (``unpark``)
                    self._share, todo = loop_woken(self._share)
                    self._do(todo)
                else:
                    _get(self.sock, _EVENTS)

    def sent(self) -> None:
        """Call after each send on this socket (holding ``lock`` where other threads use the socket), on the loop's
        thread: the send may have consumed the signal of a message."""
        if self._share is OPEN:  # ``loop_sent(OPEN)``, known: every send of a socket no thread reads (a node's)
            if not self._handling:  # else ``_drain_each`` reads ``ZMQ_EVENTS`` once the handler returns
                self._do(READ_IF_WAITING)
            return
        self._share, todo = loop_sent(self._share)
        self._do(todo)

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
        self.unpark()  # if it was parked (another thread read) and nobody reads now
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
        if self._pipe is None and self._share is OPEN:  # no thread can ever read this socket (a node's ROUTER)
            self._drain_each(handler, limit)
            return
        out = self._take(limit)
        if out is None:  # another thread reads the socket now: the descriptor is off the loop until ``unpark``
            return
        if len(out) >= limit:
            self._schedule_drain()
        if out:
            handler(out)

    def _drain_each(self, handler: Callable[[list[list[Any]]], None], limit: int) -> None:
        """``_drain`` for a socket that only the loop reads: each message to ``handler`` as soon as it is received
        (a batch of one), then ``ZMQ_EVENTS`` read again. That one read tells whether another message waits, and
        covers the handler's sends too, whose own read (``sent``) waits for it: a lone request and its reply cost
        the loop two ``ZMQ_EVENTS`` reads instead of three (docs/performance.md, section 34). The order of the
        messages, and of their handling, is the batch's. Past ``limit`` messages the rest wait for a later
        callback; a handler that raises leaves the rest for one too (its sends may have taken their signal)."""
        sock = self.sock
        n = 0
        while True:
            with self.lock:
                if not _get(sock, _EVENTS) & _POLLIN:
                    return
                msg = recv_frames(sock)
            self._handling = True
            try:
                handler([msg])
            except BaseException:
                self._drain_later()
                raise
            finally:
                self._handling = False
            n += 1
            if self._handler is not handler or self._fd is None or n >= limit:
                self._drain_later()  # the next read of ``ZMQ_EVENTS`` is that callback's
                return

    def _drain_later(self) -> None:
        """A later callback drains what ``_drain_each`` left, if a handler is still set and none is scheduled."""
        if self._handler is not None and self._fd is not None and not self._drain_scheduled:
            self._schedule_drain()

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
            share = self._share
            if reader:
                taking = thread_takes(share)
                if taking is None:
                    return None
                self._share = taking
            elif share is not OPEN:  # ``loop_takes(OPEN)`` changes nothing: every read of a node's sockets
                share, todo = loop_takes(share)
                self._share = share
                if share.reader is not None:  # under the lock: a thread that stops reading sees it parked
                    self._do(todo)
                    return None
            kept = self._kept
            if kept and (not kept[-1] or kept[-1][-1].more):  # an interrupted thread's last message
                _complete_last(sock, kept)
            if not reader:
                out, self._kept = kept, []
                while len(out) < limit and _get(sock, _EVENTS) & _POLLIN:
                    out.append(recv_frames(sock))
                return out
            # Another thread than the loop's: a Ctrl-C may stop it after any call. Each message's list goes into
            # ``_kept`` before its first frame, and each frame into the list within the one call (``extend`` of a
            # ``map``: no bytecode between the receive and the store, so no signal handler); a message left empty
            # or partly received is completed (or dropped) by the next ``_take`` or ``take_kept``
            start = len(kept)
            n = 0
            while n < limit and _get(sock, _EVENTS) & _POLLIN:
                msg: list[Any] = []
                kept.append(msg)
                msg.extend(map(_recv, (sock,), _NOBLOCKS, _NOCOPY))
                while msg[-1].more:
                    msg.extend(map(_recv, (sock,), _NOBLOCKS, _NOCOPY))
                n += 1
            # taken cleanly (stopped part-way, the share says the thread left messages: ``thread_takes``); more may
            # wait past the limit, their descriptor's signal taken: then the loop reads them
            self._share = thread_took(self._share, n >= limit)
            return kept[start:]

    def take_kept(self) -> list[list[Any]]:
        """Loop thread: the messages a reading thread took (``read``) that the loop has not taken in yet, in the
        order received, each whole; from now on they are the caller's alone."""
        with self.lock:
            kept = self._kept
            if not kept:
                return []  # not ``kept``: the list a reading thread stores into next, which would be the caller's too
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

    def unpark(self) -> None:
        """Loop thread: the descriptor back on the loop once no other thread reads, and whatever is waiting read."""
        with self.lock:
            self._share, todo = loop_unparks(self._share)
            self._do(todo)

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
            ready = self._fd is not None and self._handler is not None and self._pipe is not None
            self._share, ok = thread_begins(self._share, threading.get_ident(), ready)
            return ok

    def read(self, timeout: float, take_first: bool = True) -> list[list[Any]] | None:
        """The reading thread: the messages here, waiting up to ``timeout`` seconds for one (``[]``: none came);
        None once the reader is closed. The descriptor also signals libzmq's other commands: after such a wake-up
        with no message, it waits again for the rest of the time. ``take_first=False``: the caller knows that no
        message waited at its last call on the socket (``ZMQ_EVENTS`` read after its send), so any message since
        has signalled the descriptor (or was read by the loop, which wakes this thread through the pipe: ``poke``)
        -- the poll comes first, sparing a ``ZMQ_EVENTS`` read (a system call in libzmq) per round trip."""
        pipe = self._pipe
        if take_first or pipe is None:
            out = self._take(self._limit, True)
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

    def end_read(self, give_back: bool, reader: int | None = None, told: bool = False) -> bool:
        """The reading thread gives the socket back. True: the loop must be asked to read again (call ``unpark``
        there) -- its reader is parked, and ``give_back`` (the reading thread stopped before it had what it waited
        for) or the loop has sent meanwhile, or another thread wanted to read; or the reading thread left messages
        past its limit whose descriptor's signal it took, or was stopped part-way while it took messages; or,
        ``give_back``, messages it took wait in ``_kept`` and the loop was not ``told`` of them (the client tells it
        of each batch read: it takes them in with ``take_kept``). False: the loop's reader stays parked until the
        loop's next send (nothing is expected that the loop would read).
        ``reader``: a thread's id; if given, nothing happens (False) unless that thread is the one reading -- so a
        thread stopped by an exception may end its read whether or not it had begun it."""
        with self.lock:
            self._share, todo = thread_ends(self._share, reader, give_back, not told and bool(self._kept))
            self._do(todo)
            return bool(todo & RECHECK)

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
        with self.lock:
            self._share, todo = closes(self._share)
            self._do(todo)
            self._fd = None
        self._handler = None
        w, self._waiter = self._waiter, None
        if w is not None and not w.done():
            w.cancel()
