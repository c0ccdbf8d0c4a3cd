"""An in-process network for tests: N nodes in one event loop, exchanging the same frames as over ZeroMQ.

Frames are copied to bytes on send (as a real network would), decoded by the same codec, and subject to fault
injection: message drop rate, partitions between groups of addresses, and killed endpoints that swallow
everything -- the drop/delay/partition toolkit of distributed's ``gen_cluster`` tests.
"""

from __future__ import annotations

import asyncio
import collections
import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from meshaios.io.transport import Incoming, TransportStats


class InMemoryHub:
    """Routes frames between in-process nodes and clients, with faults: ``drop_rate`` (each message between two
    nodes lost with that probability, as a node's send to a peer whose queue is full is dropped; a client's link
    is a TCP connection, lossless while it lasts), ``partition``/``heal`` (cut links between groups of
    addresses), ``delay`` ((min, max) seconds: each message is held a random time, every link stays in order as
    TCP keeps it, different links race) and ``pause``/``resume`` (every message to and from an address is held,
    and delivered in order on resume: a node that stops answering and then comes back, its backlog arriving
    late; its own timers keep running, unlike a SIGSTOPed process, which the system tests use), ``hold``/``unhold``
    (the same for the links between two groups of addresses: a cut that a TCP connection rides out, such as a
    client's to its node, whose messages arrive late, never lost)."""

    def __init__(self, seed: int = 0) -> None:
        self.endpoints: dict[str, InMemoryTransport] = {}
        self.clients: dict[bytes, asyncio.Queue[list[Any]]] = {}
        self.drop_rate = 0.0
        self.delay: tuple[float, float] | None = None
        self.rng = random.Random(seed)
        self._cut: set[frozenset[str]] = set()
        self._paused: set[str] = set()
        self._holds: set[frozenset[str]] = set()
        self._held: list[tuple[str, str, Callable[[], None]]] = []
        self._links: dict[tuple[str, str], collections.deque[tuple[float, Callable[[], None]]]] = {}  # in flight
        self._next_port = 1000

    def new_address(self) -> str:
        self._next_port += 1
        return f"inmem://node:{self._next_port}"

    def partition(self, a: Iterable[str], b: Iterable[str]) -> None:
        for x in a:
            for y in b:
                self._cut.add(frozenset((x, y)))

    def heal(self) -> None:
        self._cut.clear()

    def reachable(self, src: str, dst: str) -> bool:
        return frozenset((src, dst)) not in self._cut

    def pause(self, addr: str) -> None:
        self._paused.add(addr)

    def resume(self, addr: str) -> None:
        self._paused.discard(addr)
        self._release()

    def hold(self, a: Iterable[str], b: Iterable[str]) -> None:
        self._holds.update(frozenset((x, y)) for x in a for y in b)

    def unhold(self) -> None:
        self._holds.clear()
        self._release()

    def _release(self) -> None:
        """What was held goes on its way (held again if still paused or held)."""
        held, self._held = self._held, []
        for src, dst, put in held:
            self._route(src, dst, put)

    def _route(self, src: str, dst: str, put: Callable[[], None]) -> None:
        if src in self._paused or dst in self._paused or (self._holds and frozenset((src, dst)) in self._holds):
            self._held.append((src, dst, put))
            return
        if self.delay is None:
            put()
            return
        loop = asyncio.get_running_loop()
        link = (src, dst)
        queue = self._links.get(link)
        at = loop.time() + self.rng.uniform(*self.delay)
        if queue is None:
            queue = self._links[link] = collections.deque()
            loop.call_at(at, self._arrive, link)
        queue.append((max(at, queue[-1][0]) if queue else at, put))

    def _arrive(self, link: tuple[str, str]) -> None:
        """Deliver what is due on ``link``, in the order it was sent (timers of equal time may run in any order:
        one timer per link, not per message)."""
        loop = asyncio.get_running_loop()
        queue = self._links[link]
        while queue and queue[0][0] <= loop.time():
            queue.popleft()[1]()
        if queue:
            loop.call_at(queue[0][0], self._arrive, link)
        else:
            del self._links[link]

    def deliver(self, src: str, dst: str, ident: bytes, frames: Sequence[Any]) -> bool:
        ep = self.endpoints.get(dst)
        if ep is None or ep.dead or not self.reachable(src, dst):
            return True  # vanishes, like a send into a dead TCP peer
        if self.drop_rate and not src.startswith("client:") and self.rng.random() < self.drop_rate:
            return True
        item = (ident, [bytes(memoryview(f)) if not isinstance(f, bytes) else f for f in frames])

        def put() -> None:
            if not ep.dead:  # lost with its receiver if that died while the message was on its way
                ep.inbox.put_nowait(item)

        self._route(src, dst, put)
        return True

    def reply(self, src: str, ident: bytes, frames: Sequence[Any]) -> bool:
        q = self.clients.get(ident)
        if q is None:
            return False
        item = [bytes(memoryview(f)) if not isinstance(f, bytes) else f for f in frames]

        def put() -> None:
            if self.clients.get(ident) is q:
                q.put_nowait(item)

        self._route(src, "client:" + ident.decode(errors="replace"), put)
        return True


class InMemoryTransport:
    def __init__(self, hub: InMemoryHub, node_id: str = "") -> None:
        self.hub = hub
        self.address = hub.new_address()
        self.node_id = node_id
        self.inbox: asyncio.Queue[Incoming] = asyncio.Queue()
        self.stats = TransportStats()
        self.dead = False
        hub.endpoints[self.address] = self

    async def start(self) -> str:
        return self.address

    def send(self, addr: str, frames: Sequence[Any]) -> bool:
        if self.dead:
            return False
        self.stats.sent += 1
        return self.hub.deliver(self.address, addr, b"n:" + self.node_id.encode(), frames)

    def reply(self, ident: bytes, frames: Sequence[Any]) -> bool:
        if self.dead:
            return False
        return self.hub.reply(self.address, ident, frames)

    async def recv_batch(self, limit: int = 256) -> list[Incoming]:
        out = [await self.inbox.get()]
        while len(out) < limit and not self.inbox.empty():
            out.append(self.inbox.get_nowait())
        self.stats.received += len(out)
        return out

    def forget(self, addr: str) -> None:
        pass

    async def close(self, linger: float = 0.0) -> None:
        self.dead = True
        self.hub.endpoints.pop(self.address, None)


class InMemoryConnection:
    """A client's link to one in-process node, with the same surface as ``ZmqConnection``."""

    def __init__(self, hub: InMemoryHub, address: str, client_id: str) -> None:
        self.hub = hub
        self.address = address
        self.ident = b"c:" + client_id.encode()
        self.queue: asyncio.Queue[list[Any]] = asyncio.Queue()
        hub.clients[self.ident] = self.queue
        self.handshake_failed = 0

    def _poll_monitor(self) -> None:
        pass

    def diagnose(self) -> Exception:
        from meshaios.errors import MeshUnavailable

        return MeshUnavailable(f"no in-memory node answers at {self.address}")

    def send(self, frames: list[Any]) -> None:
        self.hub.deliver("client:" + self.ident.decode(errors="replace"), self.address, self.ident, frames)

    async def recv_batch(self, limit: int = 256) -> list[list[Any]]:
        out = [await self.queue.get()]
        while len(out) < limit and not self.queue.empty():
            out.append(self.queue.get_nowait())
        return out

    async def close(self) -> None:
        if self.hub.clients.get(self.ident) is self.queue:  # a newer connection of the same client may own it
            del self.hub.clients[self.ident]
