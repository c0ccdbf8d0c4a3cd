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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypedDict

from meshaios.sched.inputs import Links, holders_in, parse_inputs, transfer_seconds
from meshaios.wire.messages import NodeMeta


class PlacementTask(TypedDict, total=False):
    """What a policy is told about a task: the owner's ``{"id", "resources"}``, the rest filled in by
    ``WithTaskInfo`` from its lookup (``TaskInputs.info``), and what the policy writes back (kept by
    ``WithTaskInfo`` until the owner ``take``s it). A policy must cope with ``{"id": ...}`` alone."""

    id: str
    resources: dict[str, int]  # hard constraints
    fn_key: str  # what the runtime model knows the function by
    nbytes: int  # input bytes that travel inline
    inputs: list[tuple[list[str], int]]  # inputs held on nodes: [[holder ids], bytes]
    locations: dict[str, int]  # the older form of ``inputs``: holder -> bytes
    device: str  # the device kind it asks for: cpu, gpu, or any
    shape: list[int]  # an array shape, when known (the model's shape features)
    # written back by EftPolicy.choose
    placed_device: str
    predicted_s: float
    eft: float  # predicted finish, on the owner's clock


@dataclass(slots=True)
class NodeLoad:
    """What an owner knows of one node: its slots, what it has sent there, and what the node last reported."""

    node_id: str
    slots: int
    inflight: int = 0  # tasks this owner has dispatched there and not yet seen finish
    reported: int = 0  # queued + running on that node, as gossiped (all owners together)
    meta: NodeMeta | None = None
    window: int = 0  # tasks the owner lets be in flight there at once (0: no limit); a late-binding policy may
    # pick a node whose window is full, which makes the task wait for that node

    @property
    def full(self) -> bool:
        return 0 < self.window <= self.inflight

    @property
    def load(self) -> float:
        return (max(self.inflight, self.reported) + 1) / max(1, self.slots)


class PlacementPolicy(Protocol):
    name: str

    def choose(self, task: PlacementTask, candidates: list[NodeLoad], rng: random.Random) -> NodeLoad: ...


class LeastLoaded:
    """Lowest (work per slot); ties broken at random so equal nodes share work instead of the first one
    taking everything (Dask's pile-up complaint, distributed#6573)."""

    name = "least-loaded"

    def choose(self, task: PlacementTask, candidates: list[NodeLoad], rng: random.Random) -> NodeLoad:
        best: list[NodeLoad] = []
        best_load = float("inf")
        for c in candidates:
            load = c.load
            if load < best_load:
                best, best_load = [c], load
            elif load == best_load:
                best.append(c)
        return best[0] if len(best) == 1 else rng.choice(best)


class PowerOfTwo:
    """Sample two, keep the lighter: near least-loaded quality at O(1) cost in large meshes."""

    name = "power-of-two"

    def choose(self, task: PlacementTask, candidates: list[NodeLoad], rng: random.Random) -> NodeLoad:
        if len(candidates) <= 2:
            return LeastLoaded().choose(task, candidates, rng)
        a, b = rng.sample(candidates, 2)
        return a if a.load <= b.load else b


class RoundRobin:
    name = "round-robin"

    def __init__(self) -> None:
        self._i = 0

    def choose(self, task: PlacementTask, candidates: list[NodeLoad], rng: random.Random) -> NodeLoad:
        self._i += 1
        return sorted(candidates, key=lambda c: c.node_id)[self._i % len(candidates)]


class RandomPlacement:
    name = "random"

    def choose(self, task: PlacementTask, candidates: list[NodeLoad], rng: random.Random) -> NodeLoad:
        return rng.choice(candidates)


class LocalFirst:
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


class Locality:
    """Data-aware placement around any policy: the inner policy's pick competes with the nodes that hold the
    task's inputs, and the cheaper wins::

        cost(n) = wait(n) + MOVE_WEIGHT x transfer(inputs to n)   (zero for what n holds; ``inputs.transfer_seconds``)
        wait(n) = max(tasks ahead of it per slot beyond the free slots x its estimated runtime,
                      n's gossiped backlog in seconds, when a load view is given)

    So a consumer runs where its input is unless the holder is busier by more than the copy costs. Tasks whose
    inputs total under ``min_bytes`` are placed by the inner policy alone (moving them costs about a latency,
    and that keeps the tiny-task path as cheap as the inner policy). The runtime estimate is ``runtime(task)``
    when given (the node passes its learned model), else ``task_s``."""

    def __init__(self, inner: PlacementPolicy, node_id: str | None = None, links: Links | None = None,
                 view: Any = None, clock: Any = None, runtime: Callable[[PlacementTask], float] | None = None,
                 min_bytes: int = 1 << 20, task_s: float = 0.5) -> None:
        self.inner = inner
        self.name = inner.name
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

        ingress: dict[str, float | None] = {}

        def bw(src: str, dst: str) -> float:
            if dst not in ingress:
                nv = self.view.get(dst, now) if self.view is not None else None
                ingress[dst] = nv.bandwidth if nv is not None else None
            return self.links.bandwidth(src, dst, ingress[dst])

        def cost(c: NodeLoad) -> float:
            ahead = max(c.inflight, c.reported) + 1 - max(1, c.slots)
            wait = max(0, ahead) / max(1, c.slots) * est
            if self.view is not None:
                nv = self.view.get(c.node_id, now)
                if nv is not None:
                    wait = max(wait, nv.wait("cpu", now))
            return wait + MOVE_WEIGHT * transfer_seconds(inputs, c.node_id, self.node_id, bw, lat)

        best, best_cost = pick, cost(pick)
        for h in holders:
            if h is not pick and (k := cost(h)) < best_cost:
                best, best_cost = h, k
        if best is not pick:
            self.kept += 1
        return best


class WithTaskInfo:
    """Adapter that fills in the task dict before the inner policy sees it.

    The owner calls ``choose({"id": tid}, ...)``; a policy like EFT wants the kernel, the input bytes and where
    the inputs live. ``lookup(tid)`` supplies them (the node or the simulator keeps that table), and whatever
    the inner policy writes back (EFT's ``placed_device``, ``predicted_s``) is kept in ``placed[tid]`` until the
    owner ``take``s it, in the same placement pass: with the task's ``Dispatch`` when it sends the task, or to
    drop it when the task waits (late binding). So nothing outlives the pass that chose it, live or simulated,
    whatever then becomes of the task (finished, failed, cancelled, abandoned)."""

    def __init__(self, inner: PlacementPolicy, lookup: Callable[[str], PlacementTask | None]) -> None:
        self.inner = inner
        self.name = inner.name
        self.lookup = lookup
        self.placed: dict[str, PlacementTask] = {}
        # an inner policy (possibly wrapped again) that predicts runtimes lets the owner take longest tasks first
        self._ranker: Any = _innermost_with(inner, "priority")
        self.ranks = self._ranker is not None

    def rank(self, tid: str) -> float | None:
        """Predicted seconds of task ``tid`` (for the owner's ready-queue order); None if unknown."""
        info = self.lookup(tid)
        if info is None or self._ranker is None:
            return None
        return float(self._ranker.priority(info))

    def rank_epoch(self) -> int:
        """Changes when the inner policy's predictions have changed enough for earlier ranks to be stale."""
        return int(self._ranker.rank_epoch()) if self._ranker is not None else 0

    def choose(self, task: PlacementTask, candidates: list[NodeLoad], rng: random.Random) -> NodeLoad:
        tid = task.get("id")
        info = self.lookup(tid) if isinstance(tid, str) else None
        full: PlacementTask = {**info, **task} if info else task.copy()
        target = self.inner.choose(full, candidates, rng)
        if isinstance(tid, str):
            self.placed[tid] = full
        return target

    def take(self, tid: str) -> PlacementTask | None:
        """What the last ``choose`` for ``tid`` saw and the inner policy wrote back; forgotten here."""
        return self.placed.pop(tid, None)


def _innermost_with(policy: Any, attr: str) -> Any:
    """``policy``, or the first policy it wraps (via ``inner``), that has ``attr``; None if none has."""
    for _ in range(8):
        if policy is None or hasattr(policy, attr):
            return policy
        policy = getattr(policy, "inner", None)
    return None


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
    try:
        inner = policies[name]()
    except KeyError:
        raise ValueError(f"unknown placement policy {name!r}; choose from {', '.join(POLICY_NAMES)}") from None
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
