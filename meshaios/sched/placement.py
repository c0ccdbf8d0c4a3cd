"""Placement policies: given a ready task and the nodes' loads, pick a node.

A policy is a plain object with ``choose`` (river-style: hyper-parameters in ``__init__``, no I/O), so policies
can be swapped per node and compared on the same workload in the simulator. This module holds the simple
baselines; the learned earliest-finish-time policy lives beside them (``eft.py``). Every policy must return one
of the ``candidates`` it was given (the owner updates that object), and may read any key of ``task`` but must
cope with ``{"id": ...}`` alone; ``tests/unit/test_sched_contract.py`` checks both for every policy.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(slots=True)
class NodeLoad:
    """What an owner knows of one node: its slots, what it has sent there, and what the node last reported."""

    node_id: str
    slots: int
    inflight: int = 0  # tasks this owner has dispatched there and not yet seen finish
    reported: int = 0  # queued + running on that node, as gossiped (all owners together)
    meta: dict[str, Any] | None = None
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

    def choose(self, task: dict[str, Any], candidates: list[NodeLoad], rng: random.Random) -> NodeLoad: ...


class LeastLoaded:
    """Lowest (work per slot); ties broken at random so equal nodes share work instead of the first one
    taking everything (Dask's pile-up complaint, distributed#6573)."""

    name = "least-loaded"

    def choose(self, task: dict[str, Any], candidates: list[NodeLoad], rng: random.Random) -> NodeLoad:
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

    def choose(self, task: dict[str, Any], candidates: list[NodeLoad], rng: random.Random) -> NodeLoad:
        if len(candidates) <= 2:
            return LeastLoaded().choose(task, candidates, rng)
        a, b = rng.sample(candidates, 2)
        return a if a.load <= b.load else b


class RoundRobin:
    name = "round-robin"

    def __init__(self) -> None:
        self._i = 0

    def choose(self, task: dict[str, Any], candidates: list[NodeLoad], rng: random.Random) -> NodeLoad:
        self._i += 1
        return sorted(candidates, key=lambda c: c.node_id)[self._i % len(candidates)]


class RandomPlacement:
    name = "random"

    def choose(self, task: dict[str, Any], candidates: list[NodeLoad], rng: random.Random) -> NodeLoad:
        return rng.choice(candidates)


class LocalFirst:
    """Everything on the owner itself while it has a window open, else least-loaded. Not a sensible policy: it is
    the "all tasks land on one node" case that work stealing must repair, kept here so the simulator and tests
    can produce it on purpose."""

    name = "local"

    def __init__(self, node_id: str | None = None) -> None:
        self.node_id = node_id

    def choose(self, task: dict[str, Any], candidates: list[NodeLoad], rng: random.Random) -> NodeLoad:
        for c in candidates:
            if c.node_id == self.node_id:
                return c
        return LeastLoaded().choose(task, candidates, rng)


class WithTaskInfo:
    """Adapter that fills in the task dict before the inner policy sees it.

    The owner calls ``choose({"id": tid}, ...)``; a policy like EFT wants the kernel, the input bytes and where
    the inputs live. ``lookup(tid)`` supplies them (the node or the simulator keeps that table), and whatever
    the inner policy writes back (EFT's ``placed_device``, ``predicted_s``) is kept in ``placed[tid]`` until the
    caller ``pop``s it when it sends the task."""

    def __init__(self, inner: PlacementPolicy, lookup: Callable[[str], dict[str, Any] | None]) -> None:
        self.inner = inner
        self.name = inner.name
        self.lookup = lookup
        self.placed: dict[str, dict[str, Any]] = {}
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

    def choose(self, task: dict[str, Any], candidates: list[NodeLoad], rng: random.Random) -> NodeLoad:
        tid = task.get("id")
        info = self.lookup(tid) if isinstance(tid, str) else None
        full = {**info, **task} if info else dict(task)
        target = self.inner.choose(full, candidates, rng)
        if isinstance(tid, str):
            self.placed[tid] = full
        return target

    def pop(self, tid: str) -> dict[str, Any] | None:
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
    ``config``; see ``EftPolicy``), ``local`` takes ``node_id``; the baselines take none and ignore them."""
    if name == "eft":
        from meshaios.sched.eft import EftPolicy

        return EftPolicy(**kwargs)
    if name == "local":
        return LocalFirst(kwargs.get("node_id"))
    policies: dict[str, type[PlacementPolicy]] = {
        "least-loaded": LeastLoaded,
        "power-of-two": PowerOfTwo,
        "round-robin": RoundRobin,
        "random": RandomPlacement,
    }
    try:
        return policies[name]()
    except KeyError:
        raise ValueError(f"unknown placement policy {name!r}; choose from {', '.join(POLICY_NAMES)}") from None
