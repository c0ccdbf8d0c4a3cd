"""Placement that does not need the whole mesh: a few sampled candidates plus the nodes that hold the task's data.

An owner of a large mesh cannot afford to hand every node to its policy for every decision: least-loaded scans
them all, EFT prices each, and even building the list of nodes with an open window is O(n) per placement pass --
in a steady stream a pass places one task, so per decision. Instead (power-of-d choices, Mitzenmacher; Sparrow's
"batch sampling" with late binding):

* ``NodeIndex`` keeps the owner's nodes in two bags, every node and those with an open window, updated in O(1)
  when a node's ``inflight``, ``window`` or ``slots`` changes (``NodeLoad`` reports those changes itself), with
  the totals the owner's deadline estimate needs. Nothing is rebuilt per decision.
* ``sample`` draws ``d`` random nodes (default ``SAMPLE_D`` = 4) from the open bag (from every node when the
  policy binds late), and adds the nodes that hold the task's inputs (``holder_ids``, at most ``MAX_HOLDERS``),
  the owner itself, the nodes the policy prefers (``PlacementPolicy.prefer``: EFT's last winners) and, for a task
  that may use a GPU, ``GPU_SAMPLE`` random nodes that declare one. The policy
  then picks among those with its own cost -- EFT's finish-time estimate, or the baselines wrapped in
  ``Locality`` (wait + 2 x moving the inputs) -- so a data holder is always considered, and a decision costs
  O(d + holders), whatever the size of the mesh.
* Exact below ``SCAN_BELOW`` nodes (default 32), and whenever ``d`` is at least the number of nodes: the policy
  sees every node, as before sampling existed (the simulator's 20-node benchmarks are unchanged).

Pure and deterministic given the ``random.Random`` passed in: the bags' order depends only on the order nodes were
added and removed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meshaios.sched.placement import NodeLoad, PlacementTask

__all__ = ["GPU_SAMPLE", "MAX_HOLDERS", "SAMPLE_D", "SCAN_BELOW", "NodeIndex", "SampleConfig", "holder_ids", "sample"]

SAMPLE_D = 4  # random candidates per decision in a large mesh (power-of-d)
SCAN_BELOW = 32  # meshes of at most this many nodes: every node is a candidate (exact)
MAX_HOLDERS = 32  # input holders added per decision (a shuffle reducer reads from every mapper)
GPU_SAMPLE = 2  # random GPU nodes added for a task that may use a GPU
_RESOURCE_TRIES = 8  # random draws per wanted candidate when a task needs resources few nodes have


@dataclass(frozen=True, slots=True)
class SampleConfig:
    d: int = SAMPLE_D
    scan_below: int = SCAN_BELOW
    max_holders: int = MAX_HOLDERS
    gpu: int = GPU_SAMPLE


class _Bag:
    """A set of nodes with O(1) add, discard and uniform random choice (a list plus positions, swap-remove)."""

    __slots__ = ("items", "pos")

    def __init__(self) -> None:
        self.items: list[NodeLoad] = []
        self.pos: dict[str, int] = {}

    def add(self, nl: NodeLoad) -> None:
        if nl.node_id not in self.pos:
            self.pos[nl.node_id] = len(self.items)
            self.items.append(nl)

    def discard(self, node_id: str) -> None:
        i = self.pos.pop(node_id, None)
        if i is None:
            return
        last = self.items.pop()
        if i < len(self.items):
            self.items[i] = last
            self.pos[last.node_id] = i


class NodeIndex:
    """The owner's nodes, indexed for sampling: every node, those with an open window (``inflight < window``),
    and the total slots and tasks in flight. ``add`` a ``NodeLoad`` and it reports its own changes here."""

    def __init__(self) -> None:
        self._all = _Bag()
        self._open = _Bag()
        self._gpu = _Bag()  # nodes that declare a GPU: candidates for a task that may use one
        self.slots = 0  # over every indexed node
        self.inflight = 0

    def __len__(self) -> int:
        return len(self._all.items)

    @property
    def open_count(self) -> int:
        return len(self._open.items)

    def is_open(self, nl: NodeLoad) -> bool:
        return nl.node_id in self._open.pos

    def add(self, nl: NodeLoad, gpu: bool = False) -> None:
        if nl.index is not None and nl.index is not self:
            raise ValueError(f"node {nl.node_id} is indexed elsewhere")
        self.set_gpu(nl, gpu)
        if nl.node_id in self._all.pos:
            return
        nl.index = self
        self._all.add(nl)
        self.slots += nl.slots
        self.inflight += nl.inflight
        self.changed(nl)

    def set_gpu(self, nl: NodeLoad, gpu: bool) -> None:
        """Whether ``nl`` declares a GPU (its metadata may change)."""
        if gpu:
            self._gpu.add(nl)
        else:
            self._gpu.discard(nl.node_id)

    def remove(self, nl: NodeLoad) -> None:
        if nl.index is not self:
            return
        nl.index = None
        self._all.discard(nl.node_id)
        self._open.discard(nl.node_id)
        self._gpu.discard(nl.node_id)
        self.slots -= nl.slots
        self.inflight -= nl.inflight

    def changed(self, nl: NodeLoad, inflight: int = 0, slots: int = 0) -> None:
        """``nl``'s in-flight count moved by ``inflight``, its slots by ``slots``, or its window changed."""
        self.inflight += inflight
        self.slots += slots
        if not nl.full:  # a window of 0 is no limit
            self._open.add(nl)
        else:
            self._open.discard(nl.node_id)

    def draw(self, rng: random.Random, k: int, open_only: bool) -> list[NodeLoad]:
        """``k`` distinct random nodes (all of them if there are fewer), from the open ones or from all."""
        items = self._open.items if open_only else self._all.items
        return list(items) if k >= len(items) else rng.sample(items, k)

    def draw_gpu(self, rng: random.Random, k: int) -> list[str]:
        """Up to ``k`` distinct random nodes that declare a GPU (ids)."""
        items = self._gpu.items
        return [nl.node_id for nl in (list(items) if k >= len(items) else rng.sample(items, k))]

    def draw_fitting(self, rng: random.Random, k: int, open_only: bool, fits: Callable[[NodeLoad], bool],
                     ) -> list[NodeLoad]:
        """Up to ``k`` distinct random nodes that ``fits`` accepts, from ``k x 8`` draws at most (a task that needs
        a resource few nodes have may find none: the caller then scans)."""
        items = self._open.items if open_only else self._all.items
        if not items:
            return []
        out: dict[str, NodeLoad] = {}
        for _ in range(k * _RESOURCE_TRIES):
            nl = items[rng.randrange(len(items))]
            if nl.node_id not in out and fits(nl):
                out[nl.node_id] = nl
                if len(out) >= k:
                    break
        return list(out.values())


def holder_ids(task: PlacementTask, limit: int = MAX_HOLDERS) -> list[str]:
    """The nodes holding the task's inputs (``inputs`` as ``[[holders], bytes]``, or ``locations``), the first
    ``limit`` distinct ones, largest inputs' first holders first."""
    out: dict[str, None] = {}
    inputs: object = task.get("inputs")  # (object: as a peer sent it; a compiled build checks declared types)
    if isinstance(inputs, list) and inputs:
        items = [i for i in inputs[:10_000]
                 if isinstance(i, list | tuple) and len(i) == 2 and isinstance(i[0], list | tuple)]
        if len(items) > limit:  # more inputs than room: the largest ones' holders
            items.sort(key=lambda i: -i[1] if isinstance(i[1], int | float) else 0.0)
        for depth in range(4):  # every input's first holder before any input's second
            for holders, _nbytes in items:
                if depth < len(holders):
                    out[str(holders[depth])] = None
                    if len(out) >= limit:
                        return list(out)
    locs: object = task.get("locations")
    if isinstance(locs, dict):
        for src in locs:
            out[str(src)] = None
            if len(out) >= limit:
                break
    return list(out)


def sample(index: NodeIndex, nodes: Mapping[str, NodeLoad], rng: random.Random, *, d: int, open_only: bool,
           extra: Iterable[str] = (), fits: Callable[[NodeLoad], bool] | None = None) -> list[NodeLoad]:
    """The candidates of one decision: ``d`` random nodes of ``index`` (open ones only when ``open_only``), then
    the ``extra`` node ids (holders of the inputs, the owner, the policy's favourites) that ``nodes`` knows and
    that qualify (open, and accepted by ``fits``), without duplicates. Empty when nothing qualifies in the
    sample; the caller decides whether to scan then."""
    drawn = index.draw(rng, d, open_only) if fits is None else index.draw_fitting(rng, d, open_only, fits)
    picked = {nl.node_id: nl for nl in drawn}
    for nid in extra:
        if nid in picked:
            continue
        nl = nodes.get(nid)
        if nl is None or (open_only and not index.is_open(nl)) or (fits is not None and not fits(nl)):
            continue
        picked[nid] = nl
    return list(picked.values())
