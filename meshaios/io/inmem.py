"""An in-process network for tests: N nodes in one event loop, exchanging the same frames as over ZeroMQ.

Frames are copied to bytes on send (as a real network would), decoded by the same codec, and subject to fault
injection: message drop rate, partitions between groups of addresses, and killed endpoints that swallow
everything -- the drop/delay/partition toolkit of distributed's ``gen_cluster`` tests.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable, Sequence
from typing import Any

from meshaios.io.transport import Incoming, TransportStats


class InMemoryHub:
    def __init__(self, seed: int = 0) -> None:
        self.endpoints: dict[str, InMemoryTransport] = {}
        self.clients: dict[bytes, asyncio.Queue[list[Any]]] = {}
        self.drop_rate = 0.0
        self.rng = random.Random(seed)
        self._cut: set[frozenset[str]] = set()
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

    def deliver(self, src: str, dst: str, ident: bytes, frames: Sequence[Any]) -> bool:
        ep = self.endpoints.get(dst)
        if ep is None or ep.dead or not self.reachable(src, dst):
            return True  # vanishes, like a send into a dead TCP peer
        if self.drop_rate and self.rng.random() < self.drop_rate:
            return True
        ep.inbox.put_nowait((ident, [bytes(memoryview(f)) if not isinstance(f, bytes) else f for f in frames]))
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
        q = self.hub.clients.get(ident)
        if q is None or self.dead:
            return False
        q.put_nowait([bytes(memoryview(f)) if not isinstance(f, bytes) else f for f in frames])
        return True

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
        self.hub.deliver("client", self.address, self.ident, frames)

    async def recv_batch(self, limit: int = 256) -> list[list[Any]]:
        out = [await self.queue.get()]
        while len(out) < limit and not self.queue.empty():
            out.append(self.queue.get_nowait())
        return out

    async def close(self) -> None:
        if self.hub.clients.get(self.ident) is self.queue:  # a newer connection of the same client may own it
            del self.hub.clients[self.ident]
