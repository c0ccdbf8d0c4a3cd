"""An in-process mesh: N real ``Node`` objects in one event loop, on the in-memory transport.

Tier two of the tests (style.md 13): the same node code as in production, minus sockets and processes, with
fault injection (kill without goodbye, partitions, message loss, delays that reorder links, pauses) and SWIM
timings shortened so that a failure is detected in a fraction of a second.

With ``virtual=True`` (run it on ``meshaios.testing.vtime.VirtualTimeLoop``, e.g. with ``run_virtual``) the nodes
and clients read the loop's virtual clock and run tasks on the loop itself (``InlinePool``): no thread, so seconds
of timeouts pass in milliseconds and the machine's load changes nothing (``meshaios.testing.faults``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
from dataclasses import replace
from types import TracebackType
from typing import Any

from meshaios.client import AsyncClient
from meshaios.clock import Clock, LoopClock
from meshaios.config import NodeConfig
from meshaios.io.inmem import InMemoryConnection, InMemoryHub, InMemoryTransport
from meshaios.membership.swim import SwimConfig
from meshaios.node import Node
from meshaios.security import MeshKeys, derive_keys, new_token
from meshaios.tasks.workers import InlinePool, WorkerPool
from meshaios.testing.vtime import VirtualTimeLoop

FAST_SWIM = SwimConfig(probe_interval=0.1, probe_timeout=0.04, suspicion_min=0.3, suspicion_mult=2.0)


class InProcessMesh:
    def __init__(
        self,
        n: int = 3,
        *,
        seed: int = 0,
        insecure: bool = False,
        workers: int = 2,
        swim: SwimConfig = FAST_SWIM,
        per_node: dict[int, dict[str, Any]] | None = None,
        virtual: bool = False,
        task_seconds: float = 0.0,
        **config: Any,
    ) -> None:
        self.n = n
        self.virtual = virtual
        self.task_seconds = task_seconds  # virtual only: how long each task holds its worker (``InlinePool``)
        self.clock: Clock | None = None  # the loop's, when virtual (set on entry)
        self.hub = InMemoryHub(seed)
        self.rng = random.Random(seed)
        self.keys: MeshKeys | None = None if insecure else derive_keys(new_token())
        self.config = NodeConfig(insecure=insecure, workers=workers, discovery=False, swim=swim, no_gpu=True, **config)
        self.per_node = per_node or {}
        self.nodes: list[Node] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._clients: list[AsyncClient] = []

    async def __aenter__(self) -> InProcessMesh:
        if self.virtual:
            loop = asyncio.get_running_loop()
            if not isinstance(loop, VirtualTimeLoop):
                raise TypeError("InProcessMesh(virtual=True) runs on a VirtualTimeLoop (meshaios.testing.vtime)")
            self.clock = LoopClock(loop)
        for i in range(self.n):
            await self.add_node(f"n{i}")
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        for c in self._clients:
            with contextlib.suppress(Exception):
                await c.close()
        for node in self.nodes:
            node.stop()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(t, 5)

    async def add_node(self, name: str) -> Node:
        seeds = tuple(n.address for n in self.nodes if not self.transport(n).dead)[:2]
        cfg = replace(self.config, name=name, join=seeds, **self.per_node.get(len(self.nodes), {}))
        node = Node(
            cfg,
            transport=InMemoryTransport(self.hub),
            keys=self.keys if self.keys is not None else False,
            rng=random.Random(self.rng.random()),
            clock=self.clock,
            pools=functools.partial(InlinePool, task_seconds=self.task_seconds) if self.virtual else WorkerPool,
        )
        self.transport(node).node_id = node.node_id
        self.nodes.append(node)
        self._tasks.append(asyncio.create_task(node.run(), name=f"node-{name}"))
        await node.ready.wait()
        return node

    @staticmethod
    def transport(node: Node) -> InMemoryTransport:
        t = node.transport
        assert isinstance(t, InMemoryTransport)
        return t

    async def wait_converged(self, timeout: float = 5.0) -> None:
        """Every live node sees every other live node as alive."""
        live = [n for n in self.nodes if not self.transport(n).dead]
        ids = {n.node_id for n in live}
        async with asyncio.timeout(timeout):
            while True:
                if all(
                    {m.node_id for m in n.swim.members() if m.state.value == "alive"} >= ids - {n.node_id}
                    for n in live
                    if n.swim is not None
                ):
                    return
                await asyncio.sleep(0.02)

    def kill(self, index: int) -> None:
        """Like SIGKILL: the node falls silent at once, with no goodbye; its task is cancelled."""
        node = self.nodes[index]
        self.transport(node).dead = True
        self._tasks[index].cancel()

    def pause(self, index: int) -> None:
        """Hold every message to and from node ``index`` until ``resume`` (see ``InMemoryHub``)."""
        self.hub.pause(self.nodes[index].address)

    def resume(self, index: int) -> None:
        self.hub.resume(self.nodes[index].address)

    def partition(self, a: list[int], b: list[int]) -> None:
        self.hub.partition([self.nodes[i].address for i in a], [self.nodes[i].address for i in b])

    def heal(self) -> None:
        self.hub.heal()

    async def client(self, index: int = 0, **kwargs: Any) -> AsyncClient:
        hub = self.hub

        def factory(addr: str, keys: MeshKeys | None, cid: str) -> InMemoryConnection:
            return InMemoryConnection(hub, addr, cid)

        c = AsyncClient(
            self.nodes[index].address,
            token=None,
            insecure=self.keys is None,
            connection_factory=factory,
            clock=self.clock,
            **kwargs,
        )
        c.keys = self.keys
        c.allow_pickle = self.keys is not None
        await c.connect()
        self._clients.append(c)
        return c
