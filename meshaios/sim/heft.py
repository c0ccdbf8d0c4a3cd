"""Offline references: HEFT with the true runtimes, and a simple lower bound.

Why: "better than round-robin" says little; the question is how far an online scheduler that must *learn*
runtimes is from a good offline schedule that *knows* them. HEFT (Topcuoglu, Hariri, Wu 2002) is the classic
list scheduler for heterogeneous processors: order tasks by upward rank (mean cost plus the longest path to an
exit), then put each on the processor where it finishes earliest. It is a heuristic, not an optimum, so the
lower bound (critical path at best speed, and total best-device work over all slots) is reported beside it.

Each (node, device) slot is a processor; a task's remote inputs cost ``sum(bytes) / bandwidth(dst)`` plus a
latency after the last of them is ready (the receiving link is shared, as in the simulator, but not with other
tasks: HEFT is optimistic there), and inline arguments start at the owner. Non-insertion variant (each slot only
appends), O(tasks x nodes).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from meshaios.sim.workloads import NodeSpec, SimTask

__all__ = ["heft", "lower_bound"]


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
    """Makespan of the HEFT schedule (from the first submission to the last finish). ``order="fifo"`` keeps the
    submission order instead of upward rank: EFT with perfect knowledge but no look-ahead, which is what an
    online owner with a FIFO ready queue could achieve at best."""
    by_id = {t.id: t for t in tasks}
    succ: dict[str, list[str]] = {t.id: [] for t in tasks}
    for t in tasks:
        for d in t.deps:
            succ[d].append(t.id)
    mean_bw = sum(n.bandwidth for n in nodes) / len(nodes)
    mean_cost: dict[str, float] = {}
    for t in tasks:
        costs = [t.runtime(n, d) for n in nodes for d in _devices(t, n)]
        mean_cost[t.id] = sum(costs) / len(costs)
    rank: dict[str, float] = {}
    for t in reversed(tasks):  # dependents come later in the list, so they are ranked first
        tail = 0.0
        for s in succ[t.id]:
            comm = by_id[s].dep_bytes.get(t.id, 0) / mean_bw
            tail = max(tail, comm + rank[s])
        rank[t.id] = mean_cost[t.id] + tail
    if order == "fifo":
        seq = sorted(tasks, key=lambda t: t.submit_at)
    else:
        seq = sorted(tasks, key=lambda t: (t.submit_at, -rank[t.id]))
    slots: dict[tuple[str, str], list[float]] = {}
    for n in nodes:
        for d, k in (("cpu", n.cpu_slots), ("gpu", n.gpu_slots)):
            if k > 0:
                slots[(n.node_id, d)] = [0.0] * k
    finish: dict[str, float] = {}
    where: dict[str, str] = {}
    for t in seq:
        best: tuple[float, str, str] | None = None
        for n in nodes:
            ready = t.submit_at
            if t.nbytes and n.node_id != owner:
                ready += latency + t.nbytes / n.bandwidth
            # inputs from elsewhere share the node's link: they arrive one after the other
            remote = 0
            for dep in t.deps:
                ready = max(ready, finish[dep])
                if where[dep] != n.node_id:
                    remote += t.dep_bytes.get(dep, 0)
            if remote:
                ready += latency + remote / n.bandwidth
            for d in _devices(t, n):
                start = max(ready, slots[(n.node_id, d)][0])
                f = start + t.runtime(n, d)
                if best is None or f < best[0]:
                    best = (f, n.node_id, d)
        assert best is not None
        f, nid, d = best
        heapq.heapreplace(slots[(nid, d)], f)
        finish[t.id] = f
        where[t.id] = nid
    first = min((t.submit_at for t in tasks), default=0.0)
    return max(finish.values(), default=0.0) - first
