"""Placement policies: given a ready task and the nodes' loads, pick a node.

A policy is a plain object with ``choose`` (river-style: hyper-parameters in ``__init__``, no I/O), so policies
can be swapped per node and compared on the same workload in the simulator. This module holds the simple
baselines; the learned earliest-finish-time policy lives beside them.
"""

from __future__ import annotations

import random
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


def make_policy(name: str) -> PlacementPolicy:
    policies: dict[str, type[PlacementPolicy]] = {
        "least-loaded": LeastLoaded,
        "power-of-two": PowerOfTwo,
        "round-robin": RoundRobin,
        "random": RandomPlacement,
    }
    try:
        return policies[name]()
    except KeyError:
        raise ValueError(f"unknown placement policy {name!r}; choose from {', '.join(sorted(policies))}") from None
