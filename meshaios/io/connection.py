"""A client's link to one node: a CURVE DEALER plus a socket monitor that turns silence into a clear error.

With a wrong token, a CurveZMQ handshake simply never completes -- no exception, no message. The monitor sees
the TCP connection come up and the handshake fail (or never succeed), which is how the client can say "wrong
token" within seconds instead of hanging.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from meshaios.errors import AuthError, MeshUnavailable
from meshaios.io.lean import _EVENTS, _POLLIN, LeanReader, _get, send_frames
from meshaios.io.transport import apply_client_curve, local_endpoint
from meshaios.security import MeshKeys
from meshaios.store.stream import MAX_FRAME_BYTES

log = logging.getLogger(__name__)

BACKLOG_RETRY_S = 0.01  # how soon a send refused by a full send queue is tried again

_HANDSHAKE_FAILED = {
    zmq.EVENT_HANDSHAKE_FAILED_AUTH,
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL,
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
}


class ZmqConnection:
    def __init__(
        self,
        address: str,
        keys: MeshKeys | None,
        client_id: str,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        handshake_ivl: float = 10.0,
        ctx: zmq.asyncio.Context | None = None,
        local: bool = True,
    ) -> None:
        self.address = address
        # a node of this host and user is dialled on its unix socket (io/transport.py ``local_endpoint``), CURVE and
        # all: less kernel work per message than loopback TCP. ``local=False``: always ``address``
        self.endpoint = (local_endpoint(address) if local else None) or address
        self.keys = keys
        # a client with several connections (one per node owning its tasks) shares one context: one I/O thread
        self._own_ctx = ctx is None
        self.ctx = ctx if ctx is not None else zmq.asyncio.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.ROUTING_ID, b"c:" + client_id.encode())
        # large results travel as streams of bounded chunks (store/stream.py), so a node never sends a larger frame;
        # an address that is not a node of ours (a forged mDNS answer) may make us buffer this much while handshaking
        self.sock.setsockopt(zmq.MAXMSGSIZE, max_frame_bytes)
        self.sock.setsockopt(zmq.HANDSHAKE_IVL, int(handshake_ivl * 1000))
        self.sock.setsockopt(zmq.SNDHWM, 100_000)
        self.sock.setsockopt(zmq.RCVHWM, 100_000)
        self.sock.setsockopt(zmq.RECONNECT_IVL, 100)
        if keys is not None:
            apply_client_curve(self.sock, keys)
        self._sync: zmq.Socket[bytes] = zmq.Socket.shadow(self.sock.underlying)
        self._lean = LeanReader(self._sync)  # the socket is read and written through the shadow (io/lean.py)
        self._lock = self._lean.lock  # every call on the socket holds it: the sync client's caller may send too
        self._closed = False
        self._backlog: collections.deque[list[Any]] = collections.deque()  # messages the full send queue refused
        self._monitor = self.sock.get_monitor_socket(
            zmq.EVENT_CONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED | sum(_HANDSHAKE_FAILED)
        )
        self.connected_tcp = False
        self.handshake_ok = False
        self.handshake_failed = 0
        self.hung_up = 0
        self.sock.connect(self.endpoint)

    def _poll_monitor(self) -> None:
        mon: zmq.Socket[bytes] = zmq.Socket.shadow(self._monitor.underlying)
        while True:
            try:
                raw = mon.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            ev = parse_monitor_message(raw)["event"]
            if ev == zmq.EVENT_CONNECTED:
                self.connected_tcp = True
            elif ev == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.handshake_ok = True
            elif ev in _HANDSHAKE_FAILED:
                self.handshake_failed += 1
            elif ev == zmq.EVENT_DISCONNECTED and not self.handshake_ok:
                self.hung_up += 1  # the node closed the connection during the handshake: it refused our keys

    def diagnose(self) -> Exception:
        """Why nothing came back: the most specific error we can name."""
        self._poll_monitor()
        if self.handshake_failed or (self.hung_up and not self.handshake_ok):
            return AuthError(
                f"{self.address} refused our credentials: wrong mesh token, a secure node reached without a token, "
                "or an insecure node reached with one"
            )
        if not self.connected_tcp:
            return MeshUnavailable(f"no meshaios node answers at {self.address}")
        if not self.handshake_ok:
            # connected, and nobody refused us: a node too busy to finish the handshake in time is not a wrong token
            return MeshUnavailable(
                f"connected to {self.address}, but the handshake did not finish in time: the node is overloaded, "
                "or it is not a meshaios node"
            )
        return MeshUnavailable(f"node at {self.address} did not answer (connected and handshaken: overloaded?)")

    def send(self, frames: list[Any]) -> None:
        # Loop thread. A plain non-blocking send, then ``sent()``: a send can consume the signal of a message that
        # arrived meanwhile (io/lean.py). A full send queue (SNDHWM) keeps the message here, in order, for later.
        if self._backlog:
            self._backlog.append(frames)
            return
        with self._lock:
            try:
                send_frames(self._sync, frames)
            except zmq.Again:
                self._backlog.append(frames)
                asyncio.get_running_loop().call_later(BACKLOG_RETRY_S, self._send_backlog)
            finally:
                self._lean.sent()

    def send_threadsafe(self, frames: list[Any]) -> bool | None:
        """Any thread: send ``frames`` now if the socket takes them at once. False: it did not (closed, messages of
        the loop's still queued here, or a full send queue), nothing was sent. True: sent, and a message is waiting
        to be read, whose signal this send may have consumed (io/lean.py): the loop's thread must call ``recheck``
        soon. None: sent, nothing waiting. An exception (a Ctrl-C) once the message went leaves with ``sent_whole``
        set on it, as from ``send_frames`` once the message began."""
        sent = False
        try:
            with self._lock:
                if self._closed or self._backlog:
                    return False
                try:
                    send_frames(self._sync, frames)
                except zmq.ZMQError:
                    return False
                sent = True
                return True if _get(self._sync, _EVENTS) & _POLLIN else None
        except BaseException as exc:
            if sent:
                exc.sent_whole = True  # type: ignore[attr-defined]
            raise

    def recheck(self) -> None:
        """Loop thread, after another thread's ``send_threadsafe``: wake the reader if a message is waiting."""
        with self._lock:
            if not self._closed:
                self._lean.sent()

    def begin_read(self) -> bool:
        """Any thread but the loop's: read this connection for a while (``read``, then ``end_read``) instead of the
        loop (io/lean.py); False: not now."""
        return not self._closed and self._lean.begin_read()

    def read(self, timeout: float, take_first: bool = True) -> list[list[Any]] | None:
        """After ``begin_read``: the messages here, waiting up to ``timeout`` s for one; None once closed
        (io/lean.py ``LeanReader.read``)."""
        return self._lean.read(timeout, take_first)

    def end_read(self, give_back: bool, reader: int | None = None, told: bool = False) -> bool:
        """The socket back to the loop; True: the loop must be asked to ``recheck`` (io/lean.py ``end_read``)."""
        return self._lean.end_read(give_back, reader, told)

    def poke(self) -> None:
        """Any thread: wake the thread reading (``read``), if any, at once."""
        self._lean.poke()

    def take_kept(self) -> list[list[Any]]:
        """Loop thread: what a reading thread took and the loop has not taken in yet (io/lean.py ``take_kept``)."""
        return self._lean.take_kept()

    def _send_backlog(self) -> None:
        with self._lock:
            if self._closed or self._sync.closed:
                self._backlog.clear()
                return
            try:
                while self._backlog:
                    send_frames(self._sync, self._backlog[0])
                    self._backlog.popleft()
            except zmq.Again:
                asyncio.get_running_loop().call_later(BACKLOG_RETRY_S, self._send_backlog)
            finally:
                self._lean.sent()

    async def recv_batch(self, limit: int = 256) -> list[list[Any]]:
        return await self._lean.recv_batch(limit)

    def serve(self, handler: Callable[[list[list[Any]]], None]) -> None:
        """Instead of awaiting ``recv_batch``: each batch goes to ``handler`` from the loop's reader callback."""
        self._lean.serve(handler, thread_reads=True)  # the sync client's caller may read its own answer

    def unserve(self) -> None:
        self._lean.unserve()

    async def close(self, linger: float = 0.0) -> None:
        """``linger``: seconds that messages still queued may take to leave (a goodbye); 0 drops them."""
        self._lean.close()
        with self._lock:  # a thread in ``send_threadsafe`` finishes first; later ones find it closed
            self._closed = True
            with contextlib.suppress(Exception):
                self.sock.disable_monitor()
            self._monitor.close(linger=0)
            self.sock.close(linger=int(linger * 1000))
        await asyncio.sleep(0)
        if self._own_ctx:
            with contextlib.suppress(Exception):
                self.ctx.term()
