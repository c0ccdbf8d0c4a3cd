"""Offline references: HEFT as published, with the true runtimes, and a simple lower bound.

Why: "better than round-robin" says little; the question is how far an online scheduler that must *learn*
runtimes is from a good offline schedule that *knows* them. HEFT is the classic list scheduler for heterogeneous
processors. It is a heuristic, not an optimum, so the lower bound (critical path at best speed, and total
best-device work over all slots) is reported beside it.

HEFT as in Topcuoglu, Hariri & Wu, "Performance-effective and low-complexity task scheduling for heterogeneous
computing", IEEE TPDS 13(3), 2002 (``heft_schedule``):

1. **Upward rank.** ``rank(t) = w(t) + max over successors s of (c(t, s) + rank(s))``, where ``w(t)`` is t's
   computation cost averaged over the processors and ``c(t, s) = L + data(t, s) / B`` with ``L`` and ``B`` the
   average start-up time and transfer rate between processors.
2. Tasks are taken by **decreasing upward rank** (a topological order).
3. Each goes to the processor that gives it the **earliest finish time, insertion-based**: on processor p it may
   start in the first idle gap, at or after its data-ready time, that is long enough to hold it. The data-ready
   time is the latest over its predecessors u of ``finish(u) + L(u's, p) + data(u, t) / B(u's, p)``, and zero
   communication when u ran on p: transfers from different predecessors overlap.

``tests/sim/test_heft.py`` runs the paper's worked example (10 tasks, 3 processors) and gets the published
schedule and makespan, 80.

How the simulated mesh maps onto it (``heft``): each (node, device kind) is a processor with one *lane* per slot
(lanes are identical processors that share memory: no communication among them, nor between the devices of one
node); an edge into node n costs ``latency + bytes / bandwidth(n)`` (the receiver's link, as in the simulator;
transfers do not contend, as in the paper). Two extensions the paper's single DAG does not need: a task is
released at its submission time (jobs arrive over time; the order is by submission time, then decreasing rank),
and its inline arguments are one more input, held by the owner from its submission.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from meshaios.sim.workloads import NodeSpec, SimTask

__all__ = ["Placed", "Processor", "heft", "heft_schedule", "lower_bound", "upward_ranks"]

T = TypeVar("T", bound=Hashable)


@dataclass(frozen=True)
class Processor:
    """A HEFT processor: ``lanes`` identical processors sharing one memory ``domain`` (no communication cost
    between processors of one domain)."""

    name: Hashable
    domain: Hashable
    lanes: int = 1


@dataclass(frozen=True)
class Placed(Generic[T]):
    task: T
    proc: Hashable
    lane: int
    start: float
    finish: float


# (source domain, destination domain) -> (start-up seconds, data units per second)
Link = Callable[[Hashable, Hashable], tuple[float, float]]


class _Lane:
    """The busy intervals of one processor, sorted and disjoint."""

    __slots__ = ("finishes", "starts")

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.finishes: list[float] = []

    def fit(self, ready: float, duration: float) -> float:
        """Start of the first idle gap at or after ``ready`` that holds ``duration`` (insertion policy)."""
        starts, finishes = self.starts, self.finishes
        i = bisect_right(finishes, ready)  # intervals that end by ``ready`` are no obstacle
        start = ready
        while i < len(starts) and starts[i] < start + duration:
            start = max(start, finishes[i])
            i += 1
        return start

    def add(self, start: float, finish: float) -> None:
        i = bisect_right(self.starts, start)
        self.starts.insert(i, start)
        self.finishes.insert(i, finish)


def _mean_link(procs: Sequence[Processor], link: Link) -> tuple[float, float]:
    """Average start-up and transfer rate over ordered pairs of processors in different domains (lane-weighted)."""
    weight = lat = rate = 0.0
    for p in procs:
        for q in procs:
            if p.domain != q.domain:
                w = p.lanes * q.lanes
                lp, bp = link(p.domain, q.domain)
                weight += w
                lat += w * lp
                rate += w * bp
    return (lat / weight, rate / weight) if weight else (0.0, 0.0)


def upward_ranks(tasks: Sequence[T], preds: Mapping[T, Mapping[T, float]], procs: Sequence[Processor],
                 comp: Callable[[T, Processor], float | None], link: Link) -> dict[T, float]:
    """The paper's ``rank_u`` of every task (``tasks`` in topological order, ``preds[t] = {u: data(u, t)}``)."""
    mean_lat, mean_rate = _mean_link(procs, link)
    succ: dict[T, list[tuple[T, float]]] = {t: [] for t in tasks}
    for t in tasks:
        for u, data in preds.get(t, {}).items():
            succ[u].append((t, data))
    rank: dict[T, float] = {}
    for t in reversed(tasks):
        total = lanes = 0.0
        for p in procs:
            w = comp(t, p)
            if w is not None:
                total += p.lanes * w
                lanes += p.lanes
        if not lanes:
            raise ValueError(f"no processor can run task {t!r}")
        tail = 0.0
        for s, data in succ[t]:
            c = (mean_lat + data / mean_rate) if mean_rate else 0.0
            tail = max(tail, c + rank[s])
        rank[t] = total / lanes + tail
    return rank


def heft_schedule(tasks: Sequence[T], preds: Mapping[T, Mapping[T, float]], procs: Sequence[Processor],
                  comp: Callable[[T, Processor], float | None], link: Link, *,
                  submitted: Callable[[T], float] | None = None,
                  floor: Callable[[T, Processor], float] | None = None,
                  order: str = "rank") -> dict[T, Placed[T]]:
    """HEFT (upward rank, insertion-based earliest finish time) of ``tasks`` (topological order) on ``procs``.

    ``comp(t, p)``: t's computation cost on one lane of p, or None where it cannot run. ``link(a, b)``: start-up
    and rate from memory domain a to b. ``submitted(t)``: the task's release time (default 0); tasks are taken
    by release time, then by decreasing rank (``order="rank"``, the paper) or in list order (``"fifo"``).
    ``floor(t, p)``: the earliest t may start on p whatever its predecessors (default: its release time)."""
    if order not in ("rank", "fifo"):
        raise ValueError(f"unknown order {order!r}: rank or fifo")
    release = submitted or (lambda _t: 0.0)
    index = {t: i for i, t in enumerate(tasks)}
    if order == "rank":
        rank = upward_ranks(tasks, preds, procs, comp, link)
        seq = sorted(tasks, key=lambda t: (release(t), -rank[t], index[t]))
    else:
        seq = sorted(tasks, key=lambda t: (release(t), index[t]))
    lanes = [[_Lane() for _ in range(p.lanes)] for p in procs]
    links: dict[tuple[Hashable, Hashable], tuple[float, float]] = {}
    placed: dict[T, Placed[T]] = {}
    domain_of = {p.name: p.domain for p in procs}
    for t in seq:
        # the predecessors' finish times and data, grouped by the domain they ran in
        by_domain: dict[Hashable, list[tuple[float, float]]] = {}
        for u, data in preds.get(t, {}).items():
            pu = placed.get(u)
            if pu is None:
                raise ValueError(f"predecessor {u!r} of {t!r} is not scheduled before it: tasks must be in "
                                 "topological order and released no earlier than their predecessors")
            by_domain.setdefault(domain_of[pu.proc], []).append((pu.finish, data))
        drt: dict[Hashable, float] = {}
        base = release(t)
        best: tuple[float, int, int, float] | None = None  # finish, processor index, lane, start
        for pi, p in enumerate(procs):
            w = comp(t, p)
            if w is None:
                continue
            ready = drt.get(p.domain)
            if ready is None:
                ready = base
                for src, items in by_domain.items():
                    if src == p.domain:
                        ready = max(ready, max(f for f, _ in items))
                        continue
                    lk = links.get((src, p.domain))
                    if lk is None:
                        lk = links[(src, p.domain)] = link(src, p.domain)
                    lat, rate = lk
                    ready = max(ready, max(f + lat + data / rate for f, data in items))
                drt[p.domain] = ready
            est = ready if floor is None else max(ready, floor(t, p))
            for li, lane in enumerate(lanes[pi]):
                start = lane.fit(est, w)
                if best is None or start + w < best[0]:
                    best = (start + w, pi, li, start)
                if start == est:  # no lane of this processor can do better
                    break
        if best is None:
            raise ValueError(f"no processor can run task {t!r}")
        finish, pi, li, start = best
        lanes[pi][li].add(start, finish)
        placed[t] = Placed(t, procs[pi].name, li, start, finish)
    return placed


# ------------------------------------------------------------------------------------------ the simulated mesh


def _devices(t: SimTask, n: NodeSpec) -> list[str]:
    devs = ["cpu"] if n.cpu_slots > 0 else []
    if t.device == "any" and n.gpu_slots > 0:
        devs.append("gpu")
    return devs


def _best_runtime(t: SimTask, nodes: Sequence[NodeSpec]) -> float:
    return min(t.runtime(n, d) for n in nodes for d in _devices(t, n))


def lower_bound(tasks: Sequence[SimTask], nodes: Sequence[NodeSpec]) -> float:
    """max(critical path with every task at its best speed, total best-speed work / number of slots)."""
    best = {t.id: _best_runtime(t, nodes) for t in tasks}
    finish: dict[str, float] = {}
    for t in tasks:  # workloads list dependencies before dependents
        finish[t.id] = max([t.submit_at, *(finish[d] for d in t.deps)]) + best[t.id]
    slots = sum(n.cpu_slots + n.gpu_slots for n in nodes)
    first = min((t.submit_at for t in tasks), default=0.0)
    return max(max(finish.values(), default=0.0) - first, sum(best.values()) / max(1, slots))


def heft(tasks: Sequence[SimTask], nodes: Sequence[NodeSpec], owner: str, latency: float = 0.0005,
         order: str = "rank") -> float:
    """Makespan of the HEFT schedule of a simulated workload (from the first submission to the last finish).
    ``order="fifo"`` keeps the submission order instead of upward rank: EFT with perfect knowledge but no
    look-ahead, which is what an online owner with a FIFO ready queue could achieve at best."""
    spec = {n.node_id: n for n in nodes}
    procs: list[Processor] = []
    kind: dict[Hashable, str] = {}  # processor -> device kind
    for n in nodes:
        for d, k in (("cpu", n.cpu_slots), ("gpu", n.gpu_slots)):
            if k > 0:
                procs.append(Processor((n.node_id, d), n.node_id, k))
                kind[(n.node_id, d)] = d
    by_id = {t.id: t for t in tasks}

    def comp(tid: str, p: Processor) -> float | None:
        t = by_id[tid]
        device = kind[p.name]
        if device == "gpu" and t.device != "any":
            return None
        return t.runtime(spec[str(p.domain)], device)

    def link(_src: Hashable, dst: Hashable) -> tuple[float, float]:
        return latency, spec[str(dst)].bandwidth

    def floor(tid: str, p: Processor) -> float:
        t = by_id[tid]
        if t.nbytes and p.domain != owner:
            return t.submit_at + latency + t.nbytes / spec[str(p.domain)].bandwidth
        return t.submit_at

    ids = [t.id for t in tasks]
    preds = {t.id: {d: float(t.dep_bytes.get(d, 0)) for d in t.deps} for t in tasks}
    placed = heft_schedule(ids, preds, procs, comp, link, submitted=lambda tid: by_id[tid].submit_at,
                           floor=floor, order=order)
    first = min((t.submit_at for t in tasks), default=0.0)
    return max((p.finish for p in placed.values()), default=0.0) - first
