"""Placement policies: given a ready task and the nodes' loads, pick a node.

A policy is a plain object with ``choose`` (river-style: hyper-parameters in ``__init__``, no I/O), so policies
can be swapped per node and compared on the same workload in the simulator. This module holds the simple
baselines; the learned earliest-finish-time policy lives beside them (``eft.py``). Every policy must return one
of the ``candidates`` it was given (the owner updates that object), and may read any key of ``task`` but must
cope with ``{"id": ...}`` alone; ``tests/unit/test_sched_contract.py`` checks both for every policy.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypedDict

from meshaios.sched.inputs import Links, holders_in, parse_inputs, transfer_seconds
from meshaios.sched.sampling import NodeIndex
from meshaios.wire.messages import NodeMeta


class PlacementTask(TypedDict, total=False):
    """What a policy is told about a task: the owner's ``{"id", "resources"}`` plus its task info (``Owner.task_info``:
    ``TaskInputs.info``), and what the policy writes back (the owner hands it on with the task's ``Dispatch``). A
    policy must cope with ``{"id": ...}`` alone."""

    id: str
    resources: dict[str, int]  # hard constraints
    fn_key: str  # what the runtime model knows the function by
    nbytes: int  # input bytes that travel inline
    # inputs held on nodes: [[holder ids], bytes] or [[holder ids], bytes, the holder keeping it on a GPU]
    inputs: list[tuple[list[str], int] | tuple[list[str], int, str]]
    locations: dict[str, int]  # the older form of ``inputs``: holder -> bytes
    device: str  # the device kind it asks for: cpu, gpu, or any
    shape: list[int]  # an array shape, when known (the model's shape features)
    # written back by EftPolicy.choose
    placed_device: str
    predicted_s: float
    eft: float  # predicted finish, on the owner's clock


class NodeLoad:
    """What an owner knows of one node: its slots, what it has sent there, and what the node last reported.

    ``inflight``, ``window`` and ``slots`` report their changes to the ``NodeIndex`` the node is in (``index``,
    set by ``NodeIndex.add``), which keeps the owner's open nodes for sampling without a scan.

    ``reported`` is the node's own count (queued and running, every owner's tasks) as of its last report;
    ``report`` keeps the freshest one (a DONE heard now beats gossip heard earlier). What this owner has sent
    there since that report is not in it yet: ``tasks`` adds it, so a burst of placements between two reports
    sees the node fill up instead of the count it had when it last spoke."""

    __slots__ = ("_heard_at", "_inflight", "_sent", "_sent_at_report", "_slots", "_window", "index", "meta",
                 "node_id", "reported")

    def __init__(self, node_id: str, slots: int, inflight: int = 0, reported: int = 0, meta: NodeMeta | None = None,
                 window: int = 0) -> None:
        self.node_id = node_id
        self._slots = slots
        self._inflight = inflight  # tasks this owner has dispatched there and not yet seen finish
        self.reported = reported  # queued + running on that node, as gossiped (all owners together)
        self._heard_at = -math.inf  # when ``reported`` was true (the owner's clock)
        self._sent = 0  # tasks this owner has sent there (or that were moved there), ever
        self._sent_at_report = 0  # ... as of ``reported``
        self.meta = meta
        # tasks the owner lets be in flight there at once (0: no limit); a late-binding policy may pick a node
        # whose window is full, which makes the task wait for that node
        self._window = window
        self.index: NodeIndex | None = None

    def __repr__(self) -> str:
        return (f"NodeLoad({self.node_id!r}, slots={self._slots}, inflight={self._inflight}, "
                f"reported={self.reported}, window={self._window})")

    @property
    def inflight(self) -> int:
        return self._inflight

    @inflight.setter
    def inflight(self, value: int) -> None:
        delta = value - self._inflight
        self._inflight = value
        if delta > 0:
            self._sent += delta
        if self.index is not None:
            self.index.changed(self, inflight=delta)

    def report(self, reported: int, at: float) -> bool:
        """The node said it holds ``reported`` tasks (all owners'), true at ``at`` on the owner's clock (a DONE:
        when it arrived; gossip: when the node was last heard from directly). An older report than the one kept
        changes nothing (gossip read every 0.1 s would otherwise undo the count a DONE brought). True if kept."""
        if at < self._heard_at:
            return False
        self.reported = reported
        self._heard_at = at
        self._sent_at_report = self._sent
        return True

    @property
    def tasks(self) -> int:
        """Tasks on that node as this owner best knows: its own in flight there, or the node's last report plus
        what this owner sent there since, whichever is more (its own finishes since are not taken off: the next
        report, which a finish's DONE carries, does that)."""
        return max(self._inflight, self.reported + self._sent - self._sent_at_report)

    @property
    def slots(self) -> int:
        return self._slots

    @slots.setter
    def slots(self, value: int) -> None:
        delta = value - self._slots
        self._slots = value
        if self.index is not None:
            self.index.changed(self, slots=delta)

    @property
    def window(self) -> int:
        return self._window

    @window.setter
    def window(self, value: int) -> None:
        self._window = value
        if self.index is not None:
            self.index.changed(self)

    @property
    def full(self) -> bool:
        return 0 < self._window <= self._inflight

    @property
    def load(self) -> float:
        return (self.tasks + 1) / max(1, self._slots)


class PlacementPolicy(Protocol):
    """What the owner asks of its placement policy (given at construction: ``Owner(node_id, config, policy)``).

    ``choose`` every policy writes. The rest are abilities with a default here: a policy subclasses this
    protocol and inherits the default of each ability it lacks, so the owner calls them all without probing.
    A wrapper (``Locality``, the simulator's timer) passes the abilities of the policy it wraps on."""

    name: str
    # offered every node, full windows included; picking a full one means "keep the task waiting for it" (EFT)
    late_binding: bool = False
    # ``priority`` predicts runtimes: the owner may take the longest ready tasks first (rank order)
    ranks: bool = False

    def choose(self, task: PlacementTask, candidates: list[NodeLoad], rng: random.Random) -> NodeLoad: ...

    def priority(self, task: PlacementTask) -> float | None:
        """Predicted seconds of ``task`` (the owner's rank order); None: no opinion."""
        return None

    def rank_epoch(self) -> int:
        """Changes when earlier ``priority`` answers are stale (the owner then re-ranks its ready queue)."""
        return 0

    def retract(self, node_id: str) -> None:
        """The owner did not send the task just placed on ``node_id`` (late binding: it waits for that node)."""
        return None

    def prefer(self, task: PlacementTask, rng: random.Random) -> Sequence[str]:
        """Node ids to offer as candidates beside the random sample in a large mesh (``sched/sampling.py``)."""
        return ()


class LeastLoaded(PlacementPolicy):
    """Lowest (work per slot). A tie goes to ``home`` (the owner's own node) when it is among the lightest: running
    there saves a node-to-node hop each way, which for a tiny task is most of its time (sequential tiny tasks at 2
    nodes went to the other node half the time: docs/performance.md, section 11); a burst still spreads, as each
    task placed at home makes home heavier for the next. Other ties are broken at random so equal nodes share work
    instead of the first one taking everything (Dask's pile-up complaint, distributed#6573)."""

    name = "least-loaded"

    def __init__(self, home: str | None = None) -> None:
        self.home = home

    def choose(self, task: PlacementTask, candidates: list[NodeLoad], rng: random.Random) -> NodeLoad:
        best: list[NodeLoad] = []
        best_load = float("inf")
        for c in candidates:
            load = c.load
            if load < best_load:
                best, best_load = [c], load
            elif load == best_load:
                best.append(c)
        if len(best) == 1:
            return best[0]
        home = self.home
        if home is not None:
            for c in best:
                if c.node_id == home:
                    return c
        return rng.choice(best)


class PowerOfTwo(PlacementPolicy):
    """Sample two, keep the lighter: near least-loaded quality at O(1) cost in large meshes."""

    name = "power-of-two"

    def choose(self, task: PlacementTask, candidates: list[NodeLoad], rng: random.Random) -> NodeLoad:
        if len(candidates) <= 2:
            return LeastLoaded().choose(task, candidates, rng)
        a, b = rng.sample(candidates, 2)
        return a if a.load <= b.load else b


class RoundRobin(PlacementPolicy):
    name = "round-robin"

    def __init__(self) -> None:
        self._i = 0

    def choose(self, task: PlacementTask, candidates: list[NodeLoad], rng: random.Random) -> NodeLoad:
        self._i += 1
        return sorted(candidates, key=lambda c: c.node_id)[self._i % len(candidates)]


class RandomPlacement(PlacementPolicy):
    name = "random"

    def choose(self, task: PlacementTask, candidates: list[NodeLoad], rng: random.Random) -> NodeLoad:
        return rng.choice(candidates)


class LocalFirst(PlacementPolicy):
    """Everything on the owner itself while it has a window open, else least-loaded. Not a sensible policy: it is
    the "all tasks land on one node" case that work stealing must repair, kept here so the simulator and tests
    can produce it on purpose."""

    name = "local"

    def __init__(self, node_id: str | None = None) -> None:
        self.node_id = node_id

    def choose(self, task: PlacementTask, candidates: list[NodeLoad], rng: random.Random) -> NodeLoad:
        for c in candidates:
            if c.node_id == self.node_id:
                return c
        return LeastLoaded().choose(task, candidates, rng)




# A copy is weighed twice its estimated time against a wait: the wait is an estimate too (an unseen function is
# priced at ``task_s``), and a copy also doubles the memory the input takes and the bytes on the link. So a holder
# keeps its consumers unless it is busier by clearly more than the copy costs (issue 17: "unless X is far busier").
MOVE_WEIGHT = 2.0


class Wrapping(PlacementPolicy):
    """A policy around another (``inner``): its name and every ability are the inner policy's; a subclass
    writes ``choose``."""

    def __init__(self, inner: PlacementPolicy) -> None:
        self.inner = inner
        self.name = inner.name
        self.late_binding = inner.late_binding
        self.ranks = inner.ranks

    def priority(self, task: PlacementTask) -> float | None:
        return self.inner.priority(task)

    def rank_epoch(self) -> int:
        return self.inner.rank_epoch()

    def retract(self, node_id: str) -> None:
        self.inner.retract(node_id)

    def prefer(self, task: PlacementTask, rng: random.Random) -> Sequence[str]:
        return self.inner.prefer(task, rng)


class Locality(Wrapping):
    """Data-aware placement around any policy: the inner policy's pick competes with the nodes that hold the
    task's inputs, and the cheaper wins::

        cost(n) = wait(n) + MOVE_WEIGHT x transfer(inputs to n)   (zero for what n holds, but a device->host copy of
                  what n keeps on a GPU for a task not on a GPU; ``inputs.transfer_seconds``)
        wait(n) = max(tasks ahead of it per slot beyond the free slots x its estimated runtime,
                      n's gossiped backlog in seconds, when a load view is given)

    So a consumer runs where its input is unless the holder is busier by more than the copy costs. Tasks whose
    inputs total under ``min_bytes`` are placed by the inner policy alone (moving them costs about a latency,
    and that keeps the tiny-task path as cheap as the inner policy). The runtime estimate is ``runtime(task)``
    when given (the node passes its learned model), else ``task_s``.

    Nodes of one host share its cores (``Links.cores``, known for the owner's own host): a node there waits at
    least ``host_wait`` (the host's tasks over all its offered nodes against its cores, where more than one of
    its nodes is offered), and while the host has no
    free core a move to a node there is priced once more (its copy and page faults take CPU from the tasks
    running there: ``MOVE_WEIGHT + 1`` copies in all). So a same-host peer with a free slot is not idle compute
    when the host's cores are busy; a node of another host (or of one whose cores are unknown) is priced as before."""

    def __init__(self, inner: PlacementPolicy, node_id: str | None = None, links: Links | None = None,
                 view: Any = None, clock: Any = None, runtime: Callable[[PlacementTask], float] | None = None,
                 min_bytes: int = 1 << 20, task_s: float = 0.5) -> None:
        super().__init__(inner)
        self.node_id = node_id
        self.links = links or Links()
        self.view = view
        self.clock = clock
        self.runtime = runtime
        self.min_bytes = min_bytes
        self.task_s = task_s
        self.kept = 0  # decisions where a holder beat the inner policy's pick

    def choose(self, task: PlacementTask, candidates: list[NodeLoad], rng: random.Random) -> NodeLoad:
        pick = self.inner.choose(task, candidates, rng)
        if not task.get("inputs") and not task.get("locations"):
            return pick
        inputs = parse_inputs(task)
        if inputs.total < self.min_bytes:
            return pick
        holders = holders_in(inputs, candidates)
        if not holders or holders == [pick]:
            return pick
        est = self.task_s
        if self.runtime is not None:
            try:
                est = float(self.runtime(task))
            except (ValueError, TypeError, OverflowError):
                est = self.task_s
        now = self.clock.now() if self.view is not None and self.clock is not None else 0.0
        lat = self.links.latency
        device = "gpu" if task.get("device") == "gpu" else "cpu"  # where it runs (only EFT picks for "any")

        ingress: dict[str, float | None] = {}

        def bw(src: str, dst: str) -> float:
            if dst not in ingress:
                nv = self.view.get(dst, now) if self.view is not None else None
                ingress[dst] = nv.bandwidth if nv is not None else None
            return self.links.bandwidth(src, dst, ingress[dst])

        on_host = host_tasks(self.links, candidates)  # nodes of one host share its cores

        def cost(c: NodeLoad) -> float:
            ahead = c.tasks + 1 - max(1, c.slots)
            wait = max(0, ahead) / max(1, c.slots) * est
            if self.view is not None:
                nv = self.view.get(c.node_id, now)
                if nv is not None:
                    wait = max(wait, nv.wait("cpu", now))
            move = transfer_seconds(inputs, c.node_id, self.node_id, bw, lat, device)
            host = self.links.shared_host(c.node_id) if on_host else None
            if host is not None and host in on_host:
                cores, busy = self.links.cores[host], on_host[host]
                wait = max(wait, host_wait(busy, cores, est))
                if move and busy >= cores:
                    move *= 1 + 1 / MOVE_WEIGHT  # its copy and page faults take a core from a task running there
            return wait + MOVE_WEIGHT * move

        best, best_cost = pick, cost(pick)
        for h in holders:
            if h is not pick and (k := cost(h)) < best_cost:
                best, best_cost = h, k
        if best is not pick:
            self.kept += 1
        return best


def host_tasks(links: Links, candidates: Sequence[NodeLoad]) -> dict[str, int]:
    """Tasks (queued and running, as the owner knows them: ``NodeLoad.tasks``) on each host whose cores are known
    (``Links.shared_host``) and of which two or more nodes are among ``candidates``: those nodes share the host's
    cores, so a free slot on one of them is no free core while the host runs as many tasks as it has cores. A host
    of one offered node is left out (its slots say it all). What ``Locality`` and ``EftPolicy`` both read."""
    if not links.cores:
        return {}
    seen: dict[str, list[int]] = {}  # host -> [its nodes offered, their tasks]
    for c in candidates:
        if (h := links.shared_host(c.node_id)) is not None:
            nt = seen.setdefault(h, [0, 0])
            nt[0] += 1
            nt[1] += c.tasks
    return {h: nt[1] for h, nt in seen.items() if nt[0] > 1}


def host_wait(tasks: int, cores: int, est: float) -> float:
    """Seconds a new task waits for a core of a host whose ``cores`` run ``tasks`` (queued and running, every node
    of the host together): however its nodes share them out, the host finishes no more than ``cores`` at once."""
    return max(0, tasks + 1 - cores) / max(1, cores) * est


POLICY_NAMES = ("eft", "least-loaded", "power-of-two", "round-robin", "random", "local")


def make_policy(name: str, **kwargs: Any) -> PlacementPolicy:
    """A policy by name. ``eft`` takes keyword arguments (``model``, ``view``, ``clock``, ``node_id``,
    ``config``, ``links``; see ``EftPolicy``), ``local`` takes ``node_id`` (a test fixture, kept bare). Every
    other policy is wrapped in ``Locality`` (data-aware: a holder of the task's inputs beats the policy's pick
    when moving them costs more than waiting for it), which reads ``node_id``, ``links``, ``view``, ``clock``
    and ``model`` (runtime estimates) when given; ``locality=False`` gives the bare policy (for comparisons)."""
    if name == "eft":
        from meshaios.sched.eft import EftPolicy

        eft_keys = ("model", "view", "clock", "node_id", "config", "bandwidth", "links")
        return EftPolicy(**{k: v for k, v in kwargs.items() if k in eft_keys})
    if name == "local":  # the pile-up on purpose, for stealing tests: it must not move for data either
        return LocalFirst(kwargs.get("node_id"))
    policies: dict[str, type[PlacementPolicy]] = {
        "least-loaded": LeastLoaded,
        "power-of-two": PowerOfTwo,
        "round-robin": RoundRobin,
        "random": RandomPlacement,
    }
    if name not in policies:
        raise ValueError(f"unknown placement policy {name!r}; choose from {', '.join(POLICY_NAMES)}")
    inner = LeastLoaded(kwargs.get("node_id")) if name == "least-loaded" else policies[name]()
    if not kwargs.get("locality", True):
        return inner
    model = kwargs.get("model")
    runtime = _model_runtime(model) if model is not None else None
    return Locality(inner, node_id=kwargs.get("node_id"), links=kwargs.get("links"), view=kwargs.get("view"),
                    clock=kwargs.get("clock"), runtime=runtime)


def _model_runtime(model: Any) -> Callable[[PlacementTask], float]:
    """The model's estimate for a task, cached per (kernel, size within a factor of two) and refreshed as the
    model's observations grow by a quarter: a prediction costs ~20 us, a cached one a dict lookup."""
    from meshaios.sched.model import task_features

    cache: dict[tuple[str, int], float] = {}
    epoch = [-1]

    def runtime(task: PlacementTask) -> float:
        e = int(math.log(model.n_seen + 1) / math.log(1.25))
        if e != epoch[0] or len(cache) > 4096:
            cache.clear()
            epoch[0] = e
        kernel = str(task.get("fn_key") or "?")
        total = parse_inputs(task).total
        key = (kernel, total.bit_length())
        est = cache.get(key)
        if est is None:
            est = cache[key] = float(model.predict_one(task_features(kernel, total, "cpu")))
        return est

    return runtime
