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
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
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


def send_frames(sock: zmq.Socket[Any], frames: Sequence[Any], first: bytes | None = None) -> None:
    """``sock.send_multipart([first, *frames], zmq.NOBLOCK, copy=False)`` (``first`` only if given), for less: raises
    ``zmq.Again`` (nothing sent) when the socket cannot take the message, and ``TypeError`` (nothing sent) for a frame
    that is not a buffer, as ``send_multipart`` does."""
    for f in frames:
        if not isinstance(f, _BUFFERS):
            memoryview(f)  # TypeError before any frame goes: a message is sent whole or not at all
    last = len(frames) - 1
    if first is not None:
        _send(sock, first, _NOBLOCK_MORE if last >= 0 else _NOBLOCK, False)
    for i in range(last):
        _send(sock, frames[i], _NOBLOCK_MORE, False)
    if last >= 0:
        _send(sock, frames[last], _NOBLOCK, False)


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
                _get(self.sock, _EVENTS)

    def sent(self) -> None:
        """Call after each send on this socket (holding ``lock`` where other threads use the socket), on the loop's
        thread: the send may have consumed the signal of a message."""
        if self._handler is not None:
            if not self._drain_scheduled and _get(self.sock, _EVENTS) & _POLLIN:
                self._schedule_drain()
        elif self._waiter is not None and _get(self.sock, _EVENTS) & _POLLIN:
            self._wake()

    def serve(self, handler: Callable[[list[list[Any]]], None], limit: int = 256) -> None:
        """From now on each batch (as ``recv_batch`` returns them) goes to ``handler``, called from the loop's reader
        callback as soon as the descriptor signals: no future to settle and no task to resume per batch (10-15 µs
        a round trip less than awaiting ``recv_batch``, docs/performance.md section 16). More than ``limit``
        messages waiting: the rest in a later callback, so that timers and other sockets get their turn."""
        self._loop = asyncio.get_running_loop()
        self._handler, self._limit = handler, limit
        self._watch(self._loop)
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
        if len(out) >= limit:
            self._schedule_drain()
        if out:
            handler(out)

    def _take(self, limit: int) -> list[list[Any]]:
        """Up to ``limit`` of the messages already here (none if none)."""
        sock = self.sock
        out: list[list[Any]] = []
        with self.lock:
            while len(out) < limit and _get(sock, _EVENTS) & _POLLIN:
                out.append(recv_frames(sock))
        return out

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
            out = self._take(limit)
            if out:
                return out
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self._watch(self._loop)
            w = self._waiter = self._loop.create_future()
            try:
                await w
            finally:
                if self._waiter is w:
                    self._waiter = None

    def close(self) -> None:
        """Before the socket closes: the reader leaves the loop; a ``recv_batch`` waiting is cancelled."""
        if self._fd is not None and self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._fd)
        self._fd = None
        self._handler = None
        w, self._waiter = self._waiter, None
        if w is not None and not w.done():
            w.cancel()
