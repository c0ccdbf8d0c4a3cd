"""The ZAP handler and the connection monitor, on a thread of their own.

Why a thread: every unauthenticated CURVE handshake ends in a ZAP request, and every connection in two monitor
events. Answered on the node's event loop, a flood of them woke the loop thousands of times a second and queued
the node's real messages behind batches of refusals (pyzmq's asyncio futures cost more than the decision itself).
Here a plain ``zmq.Poller`` loop takes them instead: pyzmq releases the GIL in every poll, receive and send, so the
thread holds it only for a key comparison and a counter per request, and the event loop is never woken for them.
Measured (docs/security.md, section 4): a refused CURVE attempt cost the event loop 0.23-0.28 ms of CPU, now 0.01
ms, plus 0.06-0.08 ms on this thread; the rest (about 0.5 ms) is libzmq's CurveZMQ handshake on its I/O threads.

Fail closed: the ZAP socket is bound before the ROUTER listens and closed only after it, by the transport, never
by this thread; if this thread dies, requests stay unanswered and every handshake times out (``handshake_ivl``).
The ROUTER also sets ``ZMQ_ZAP_ENFORCE_DOMAIN``, so that without a ZAP socket at all libzmq refuses rather than
admits (its legacy default).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, cast

import zmq

log = logging.getLogger(__name__)

ZapHandler = Callable[[list[bytes]], "list[bytes] | None"]
EventHandler = Callable[[list[bytes]], None]

# how often the thread looks at its stop flag when nothing arrives: shutdown latency, nothing else
_POLL_MS = 50
# after a wake with work, wait this long before the next poll: in a flood, one wake then takes what several would
# have (measured: 0.16 -> 0.10 ms of this thread's CPU per refused CURVE attempt); an admitted handshake waits at
# most this much longer, and only while others are arriving
_COALESCE_S = 0.002
# requests (or events) taken from one socket before looking at the other: a flood of one cannot starve the other
_BATCH = 256
# plain ints: pyzmq's flag enums cost an enum operation per use
_NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE = int(zmq.SNDMORE)
_RCVMORE = int(zmq.RCVMORE)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)


THREAD_NAME = "meshaios-zap"


def _name_os_thread(name: str) -> None:
    """Best effort: give this thread its name in ``/proc`` (``top -H``, the per-thread CPU figures of
    docs/security.md); Python 3.11 names only its own ``threading`` object."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass


class AuthThread:
    """Answers ZAP requests on ``zap`` with ``on_request`` and feeds monitor events from ``monitor`` to
    ``on_event``, until ``stop``. The sockets are lent: they must not be used by anyone else while it runs, and
    their owner closes them after ``stop`` (a socket may move between threads across a join)."""

    def __init__(
        self,
        zap: zmq.Socket[bytes],
        on_request: ZapHandler,
        monitor: zmq.Socket[bytes] | None,
        on_event: EventHandler,
        on_exit: Callable[[BaseException | None], None] | None = None,
    ) -> None:
        self._zap = zap
        self._on_request = on_request
        self._monitor = monitor
        self._on_event = on_event
        self._on_exit = on_exit
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
        self.error: BaseException | None = None
        self.failed_requests = 0  # requests left unanswered because handling them raised (fail closed)

    def start(self) -> None:
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to end and wait for it (at most one poll interval plus one batch)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        _name_os_thread(THREAD_NAME)
        poller = zmq.Poller()
        poller.register(self._zap, zmq.POLLIN)
        if self._monitor is not None:
            poller.register(self._monitor, zmq.POLLIN)
        err: BaseException | None = None
        try:
            while not self._stop.is_set():
                ready = {sock for sock, _ev in poller.poll(_POLL_MS)}
                if not ready:
                    continue
                # the monitor first: a connection is counted as accepted before its handshake can be admitted, so
                # before its first message can reach the loop (which then marks it proven)
                if self._monitor in ready:
                    self._count()
                if self._zap in ready:
                    self._answer()
                time.sleep(_COALESCE_S)
        except zmq.ContextTerminated:
            pass
        except BaseException as exc:  # reported to whoever waits on us; ZAP stays bound and unanswered: closed
            err = exc
            self.error = exc
        finally:
            if self._on_exit is not None:
                self._on_exit(err)

    def _answer(self) -> None:
        # the per-frame calls by hand: pyzmq's recv_multipart/send_multipart and a zmq.Again to end the batch cost
        # 3-5x more than this, measured (about 40 -> 10 us per request here), and a flood is made of nothing else
        sock = self._zap
        recv, get, send = sock.recv, sock.get, sock.send
        handle = self._on_request
        for _ in range(_BATCH):
            if not cast(int, get(_EVENTS)) & _POLLIN:
                return
            msg = _recv_parts(recv, get)
            try:
                reply = handle(msg)
            except Exception:
                # unanswered, the handshake times out and is refused; rare enough (never seen) to log each
                self.failed_requests += 1
                log.exception("ZAP request not answered")
                continue
            if reply:
                # a ROUTER never blocks on send: it drops a reply whose session has gone, which is what we want
                last = len(reply) - 1
                for i, frame in enumerate(reply):
                    send(frame, _NOBLOCK | (_SNDMORE if i < last else 0))

    def _count(self) -> None:
        sock = self._monitor
        assert sock is not None
        recv, get = sock.recv, sock.get
        handle = self._on_event
        for _ in range(_BATCH):
            if not cast(int, get(_EVENTS)) & _POLLIN:
                return
            handle(_recv_parts(recv, get))


def _recv_parts(recv: Any, get: Any) -> list[Any]:
    """One multipart message, frame by frame (the caller checked that one is waiting)."""
    msg = [recv(_NOBLOCK)]
    while get(_RCVMORE):
        msg.append(recv(_NOBLOCK))
    return msg
