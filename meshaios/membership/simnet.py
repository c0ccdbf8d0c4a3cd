"""A discrete-event network of ``Swim`` instances: simulated time, latency, loss, partitions, kills, pauses.

Why it exists: membership behaviour (detection time, false positives, healing after a partition, convergence of
hundreds of nodes) can only be checked over many simulated seconds, and real sockets and sleeps would make that
slow and flaky. This harness is pure -- no I/O, no wall clock, all randomness from one seed -- so a run is
exactly reproducible, and the project's simulator reuses it.

Nodes are woken at ``Swim.next_wakeup()``, rounded up to a ``tick`` grid when one is given (to mimic a node
that polls its timers, as the asyncio shell does) or exactly (``tick=None``). Messages are round-tripped
through msgpack by default, which both proves they are wire-safe and stops nodes sharing mutable objects.

Example::

    net = SimNet(seed=1)
    seed = net.add()
    others = [net.add(seeds=[net.addr_of(seed)]) for _ in range(4)]
    net.run_for(10.0)
    assert net.converged()
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack

from meshaios.membership.swim import MemberChanged, MemberState, Send, Swim, SwimConfig
from meshaios.wire.messages import SwimMsg

__all__ = ["Change", "NetStats", "SimNet"]

_DELIVER = 0
_WAKE = 1


@dataclass(frozen=True)
class Change:
    """``observer`` saw ``node_id`` go from ``old`` to ``new`` at simulated ``time``."""

    time: float
    observer: str
    node_id: str
    old: MemberState | None
    new: MemberState


@dataclass
class NetStats:
    sent: int = 0
    delivered: int = 0
    dropped: int = 0  # random loss, partitions, blocked links, dead or absent receivers
    bytes: int = 0  # msgpack size of everything sent (roundtrip mode only)
    by_kind: Counter[str] = field(default_factory=Counter)


class SimNet:
    """Many ``Swim`` nodes in one process on a simulated, faulty network. Node ids are also their addresses'
    suffix (``sim://<id>``) unless given, so tests read naturally."""

    def __init__(
        self,
        config: SwimConfig | None = None,
        *,
        seed: int = 0,
        latency: float = 0.001,
        jitter: float = 0.001,
        drop: float = 0.0,
        tick: float | None = 0.05,
        roundtrip: bool = True,
        start: float = 0.0,
    ) -> None:
        self.config = config or SwimConfig()
        self.latency = latency
        self.jitter = jitter
        self.drop = drop
        self.tick = tick
        self.roundtrip = roundtrip
        self.now = start
        self.stats = NetStats()
        self.changes: list[Change] = []
        self.nodes: dict[str, Swim] = {}  # running (or paused) nodes
        self._seed = seed
        self._rng = random.Random(seed)
        self._addr: dict[str, str] = {}  # node id -> addr
        self._at: dict[str, str] = {}  # addr -> node id listening there
        self._events: list[tuple[float, int, int, str, Any]] = []
        self._seq = 0
        self._wake: dict[str, float] = {}
        self._group: dict[str, int] = {}
        self._blocked: set[tuple[str, str]] = set()
        self._paused: dict[str, list[SwimMsg]] = {}
        self._next_id = 0

    # ---- topology -----------------------------------------------------------------------------------------

    def add(
        self,
        node_id: str | None = None,
        *,
        addr: str | None = None,
        seeds: Iterable[str] = (),
        meta: Mapping[str, Any] | None = None,
        config: SwimConfig | None = None,
    ) -> str:
        """Start a node (a fresh process: incarnation 0), optionally pointing it at static seed addresses."""
        if node_id is None:
            node_id = f"n{self._next_id:03d}"
            self._next_id += 1
        if node_id in self.nodes:
            raise ValueError(f"{node_id} is already running")
        addr = addr or self._addr.get(node_id) or f"sim://{node_id}"
        rng = random.Random(f"{self._seed}/{node_id}/{self.now}")
        swim = Swim(node_id, addr, config or self.config, rng, self.now, meta)
        self.nodes[node_id] = swim
        self._addr[node_id] = addr
        self._at[addr] = node_id
        for s in seeds:
            self._apply(node_id, swim.discovered(None, s, self.now))
        self._schedule(node_id, after_tick=False)
        return node_id

    def addr_of(self, node_id: str) -> str:
        return self._addr[node_id]

    def discover(self, node_id: str, other: str) -> None:
        """Tell ``node_id`` about ``other`` as mDNS would (id and address known)."""
        swim = self.nodes[node_id]
        self._apply(node_id, swim.discovered(other, self._addr[other], self.now))
        self._schedule(node_id, after_tick=False)

    def kill(self, node_id: str) -> None:
        """SIGKILL: the node vanishes mid-flight; messages to it are lost."""
        self.nodes.pop(node_id)
        self._paused.pop(node_id, None)
        self._wake.pop(node_id, None)
        if self._at.get(self._addr[node_id]) == node_id:
            del self._at[self._addr[node_id]]

    def leave(self, node_id: str) -> None:
        """Graceful shutdown: the goodbye messages go out, then the node is gone."""
        self._apply(node_id, self.nodes[node_id].leave(self.now))
        self.kill(node_id)

    def pause(self, node_id: str) -> None:
        """SIGSTOP: no timers run; incoming messages wait in the socket buffer until ``resume``."""
        self._paused.setdefault(node_id, [])
        self._wake.pop(node_id, None)

    def resume(self, node_id: str) -> None:
        backlog = self._paused.pop(node_id, [])
        swim = self.nodes[node_id]
        for msg in backlog:
            self._apply(node_id, swim.handle(msg, self.now))
        self._schedule(node_id, after_tick=False)

    def partition(self, *groups: Iterable[str]) -> None:
        """Only nodes in the same group can talk; nodes named in no group form one more group together."""
        self._group = {}
        for i, g in enumerate(groups, start=1):
            for n in g:
                self._group[n] = i

    def heal(self) -> None:
        self._group = {}
        self._blocked.clear()

    def block(self, src: str, dst: str) -> None:
        """Drop messages from ``src`` to ``dst`` only (an asymmetric link failure)."""
        self._blocked.add((src, dst))

    # ---- running ------------------------------------------------------------------------------------------

    def run(self, until: float) -> None:
        """Process every event up to simulated time ``until``, then set the clock to ``until``."""
        events = self._events
        while events and events[0][0] <= until:
            t, _, kind, node_id, payload = heapq.heappop(events)
            self.now = t
            swim = self.nodes.get(node_id)
            if swim is None:
                if kind == _DELIVER:
                    self.stats.dropped += 1
                continue
            if kind == _WAKE:
                if self._wake.get(node_id) != t:
                    continue  # superseded
                del self._wake[node_id]
                self._apply(node_id, swim.tick(t))
                self._schedule(node_id, after_tick=True)
            else:
                src, msg = payload
                if not self._can_talk(src, node_id):
                    self.stats.dropped += 1
                    continue
                if node_id in self._paused:
                    self._paused[node_id].append(msg)
                    continue
                self.stats.delivered += 1
                self._apply(node_id, swim.handle(msg, t))
                self._schedule(node_id, after_tick=False)
        self.now = max(self.now, until)

    def run_for(self, dt: float) -> None:
        self.run(self.now + dt)

    def run_until(self, pred: Callable[[SimNet], bool], timeout: float, step: float = 0.05) -> float | None:
        """Run until ``pred(self)`` holds, checked every ``step`` simulated seconds; the time it first held, or
        None after ``timeout`` seconds."""
        deadline = self.now + timeout
        while True:
            if pred(self):
                return self.now
            if self.now >= deadline:
                return None
            self.run(min(self.now + step, deadline))

    # ---- observing ----------------------------------------------------------------------------------------

    def view(self, observer: str) -> dict[str, MemberState]:
        return {m.node_id: m.state for m in self.nodes[observer].members()}

    def states_of(self, node_id: str) -> dict[str, MemberState | None]:
        """How every running node (but ``node_id`` itself) sees ``node_id``; None where it is unknown."""
        out: dict[str, MemberState | None] = {}
        for obs, swim in self.nodes.items():
            if obs != node_id:
                out[obs] = swim.state_of(node_id)
        return out

    def converged(self, nodes: Iterable[str] | None = None) -> bool:
        """Every node in ``nodes`` (default: all running) sees every other one ALIVE."""
        ids = list(self.nodes) if nodes is None else list(nodes)
        for obs in ids:
            swim = self.nodes[obs]
            for other in ids:
                if other != obs and swim.state_of(other) is not MemberState.ALIVE:
                    return False
        return True

    def all_see(self, node_id: str, state: MemberState) -> bool:
        return all(s is state for s in self.states_of(node_id).values())

    def first_change(
        self,
        node_id: str,
        new: MemberState,
        since: float = 0.0,
        observer: str | None = None,
    ) -> float | None:
        for c in self.changes:
            if c.time >= since and c.node_id == node_id and c.new is new and observer in (None, c.observer):
                return c.time
        return None

    # ---- internals ----------------------------------------------------------------------------------------

    def _can_talk(self, src: str, dst: str) -> bool:
        if (src, dst) in self._blocked:
            return False
        return self._group.get(src, 0) == self._group.get(dst, 0)

    def _apply(self, node_id: str, actions: list[Send | MemberChanged]) -> None:
        for a in actions:
            if isinstance(a, MemberChanged):
                self.changes.append(Change(self.now, node_id, a.node_id, a.old, a.new))
            else:
                self._transmit(node_id, a)

    def _transmit(self, src: str, send: Send) -> None:
        self.stats.sent += 1
        self.stats.by_kind[str(send.msg.get("k"))] += 1
        msg = send.msg
        if self.roundtrip:
            raw = msgpack.packb(msg, use_bin_type=True)
            self.stats.bytes += len(raw)
            msg = msgpack.unpackb(raw, raw=False)
        if self.drop and self._rng.random() < self.drop:
            self.stats.dropped += 1
            return
        dst = self._at.get(send.addr)
        if dst is None:
            self.stats.dropped += 1
            return
        t = self.now + self.latency + (self._rng.uniform(0.0, self.jitter) if self.jitter else 0.0)
        self._push(t, _DELIVER, dst, (src, msg))

    def _push(self, t: float, kind: int, node_id: str, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._events, (t, self._seq, kind, node_id, payload))

    def _schedule(self, node_id: str, after_tick: bool) -> None:
        if node_id in self._paused or node_id not in self.nodes:
            return
        t = self.nodes[node_id].next_wakeup()
        if math.isinf(t):
            self._wake.pop(node_id, None)
            return
        if self.tick:
            t = math.ceil(t / self.tick - 1e-9) * self.tick
        if after_tick and t <= self.now:
            # A correct Swim has nothing left to do at the instant it was ticked; step on rather than spin.
            t = self.now + (self.tick or 1e-6)
        t = max(t, self.now)
        if self._wake.get(node_id) != t:
            self._wake[node_id] = t
            self._push(t, _WAKE, node_id, None)
