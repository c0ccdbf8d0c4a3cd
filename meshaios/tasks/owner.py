"""The owner: the node a client submitted to keeps its tasks' specs, places them, and sees them through.

A pure state machine (style: dask's ``WorkerState.handle_stimulus``): methods take events and return actions;
the node executes the actions (send RUN to a node, send RESULTS to a client). No sockets, no clock reads, no
global randomness -- the same class runs in unit tests, in an in-process mesh and in the simulator.

Guarantees it keeps:
- each task's result reaches its client exactly once per submission (late or duplicate results from re-run
  attempts are dropped by task id);
- a task whose node dies goes back to the ready queue and is placed elsewhere, up to ``max_node_failures``;
- a task that raises is retried ``retries`` times, then its error (with the remote traceback) is delivered;
- dependencies: a task waits until every task it references is done, and fails if one of them failed.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from meshaios.sched.placement import LeastLoaded, NodeLoad, PlacementPolicy
from meshaios.wire.payload import Payload


class TaskState(StrEnum):
    WAITING = "waiting"  # some dependency not done yet
    READY = "ready"  # queued at the owner, waiting for a slot
    DISPATCHED = "dispatched"  # sent to a node, not finished
    DONE = "done"
    FAILED = "failed"


_PENDING = frozenset({TaskState.WAITING, TaskState.READY, TaskState.DISPATCHED})


@dataclass(slots=True)
class OwnedTask:
    id: str
    client: bytes
    fn: Payload
    args: Payload
    deps: list[str]
    pure: bool = False
    retries: int = 0
    state: TaskState = TaskState.WAITING
    attempt: int = 0
    node: str | None = None
    missing: int = 0
    dependents: list[str] = field(default_factory=list)
    result: Payload | None = None
    error: dict[str, Any] | None = None
    released: bool = False
    node_failures: int = 0
    submitted_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Dispatch:
    node: str
    tasks: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Deliver:
    client: bytes
    results: list[dict[str, Any]]


OwnerAction = Dispatch | Deliver


@dataclass(frozen=True)
class OwnerConfig:
    window_per_slot: int = 8  # tasks in flight per slot of a node, per owner: enough to hide a round trip
    max_node_failures: int = 3  # a task whose nodes die this often fails (Dask's KilledWorker idea)


class Owner:
    def __init__(
        self,
        node_id: str,
        config: OwnerConfig | None = None,
        policy: PlacementPolicy | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.node_id = node_id
        self.config = config or OwnerConfig()
        self.policy: PlacementPolicy = policy or LeastLoaded()
        self.rng = rng or random.Random(0)
        self.tasks: dict[str, OwnedTask] = {}
        self.ready: deque[str] = deque()
        self.nodes: dict[str, NodeLoad] = {}
        self.node_tasks: dict[str, set[str]] = {}
        self.counters = {"submitted": 0, "done": 0, "failed": 0, "replaced": 0, "duplicates": 0, "retried": 0}

    # ---- membership -------------------------------------------------------------------------------------
    def node_up(self, node_id: str, slots: int, meta: dict[str, Any] | None = None) -> list[OwnerAction]:
        nl = self.nodes.get(node_id)
        if nl is None:
            self.nodes[node_id] = NodeLoad(node_id, max(1, slots), meta=meta)
            self.node_tasks.setdefault(node_id, set())
        else:
            nl.slots = max(1, slots)
            nl.meta = meta
        return self._pump()

    def node_load(self, node_id: str, reported: int) -> None:
        nl = self.nodes.get(node_id)
        if nl is not None:
            nl.reported = reported

    def node_down(self, node_id: str) -> list[OwnerAction]:
        """Everything that node was running for us goes back to the front of the ready queue."""
        self.nodes.pop(node_id, None)
        lost = self.node_tasks.pop(node_id, set())
        out: list[OwnerAction] = []
        failed: list[OwnedTask] = []
        requeue: list[str] = []
        for tid in sorted(lost):
            t = self.tasks.get(tid)
            if t is None or t.state is not TaskState.DISPATCHED:
                continue
            t.node_failures += 1
            t.attempt += 1
            t.node = None
            if t.node_failures > self.config.max_node_failures:
                t.state = TaskState.FAILED
                t.error = {
                    "type": "meshaios.NodeLost",
                    "msg": f"the nodes running this task died {t.node_failures} times (last: {node_id})",
                    "tb": "",
                    "node": node_id,
                }
                failed.append(t)
            else:
                self.counters["replaced"] += 1
                t.state = TaskState.READY
                requeue.append(tid)
        self.ready.extendleft(reversed(requeue))
        for t in failed:
            out.extend(self._finish(t))
        out.extend(self._pump())
        return _merge(out)

    # ---- client side ------------------------------------------------------------------------------------
    def submit(self, client: bytes, tasks: Iterable[dict[str, Any]], now: float = 0.0) -> list[OwnerAction]:
        """``tasks`` are SUBMIT_TASK dicts, already schema-checked. Re-submitting a known id is idempotent."""
        out: list[OwnerAction] = []
        redeliver: list[dict[str, Any]] = []
        for spec in tasks:
            tid = spec["id"]
            known = self.tasks.get(tid)
            if known is not None:
                known.client = client  # the client may have reconnected through another route
                if known.state in (TaskState.DONE, TaskState.FAILED):
                    redeliver.append(self._result_msg(known))
                continue
            retries = spec.get("retries", 0)
            t = OwnedTask(
                id=tid,
                client=client,
                fn=spec["fn"],
                args=spec["args"],
                deps=list(spec["deps"]),
                pure=spec.get("pure", False) is True,
                # unchecked by the wire schema: anything but a non-negative int means "no retries"
                retries=max(0, retries) if type(retries) is int else 0,
                submitted_at=now,
            )
            self.counters["submitted"] += 1
            failed_dep: OwnedTask | None = None
            for d in t.deps:
                # looked up before ``t`` is registered: a task naming itself would otherwise wait forever
                dep = self.tasks.get(d)
                if dep is None:
                    failed_dep = _unknown_dep(d)
                    break
                if dep.state is TaskState.FAILED:
                    failed_dep = dep
                    break
                # registered even when the dependency is done: ``release`` must not forget its result while
                # this task still has to carry it to an executor
                dep.dependents.append(tid)
                if dep.state is not TaskState.DONE:
                    t.missing += 1
            self.tasks[tid] = t
            if failed_dep is not None:
                out.extend(self._fail_from_dep(t, failed_dep))
            elif t.missing == 0:
                t.state = TaskState.READY
                self.ready.append(tid)
        if redeliver:
            out.append(Deliver(client, redeliver))
        out.extend(self._pump())
        return _merge(out)

    def release(self, ids: Iterable[str]) -> None:
        """The client no longer holds these futures: forget results nobody waits for."""
        for tid in ids:
            t = self.tasks.get(tid)
            if t is None:
                continue
            t.released = True
            self._maybe_forget(t)

    # ---- executors --------------------------------------------------------------------------------------
    def completed(self, node_id: str, results: Iterable[dict[str, Any]]) -> list[OwnerAction]:
        out: list[OwnerAction] = []
        for r in results:
            tid = r["id"]
            self._unassign(tid, node_id)
            t = self.tasks.get(tid)
            if t is None or not (
                t.state is TaskState.DISPATCHED
                # re-queued after its node was presumed dead, but that node finished it after all: a result
                # is a result, and waiting for the re-run would only waste a slot
                or (t.state is TaskState.READY and r["ok"])
            ):
                self.counters["duplicates"] += 1
                continue
            if t.node is not None and t.node != node_id:
                # a stale attempt finished first (its node was presumed dead): its result is as good
                self._unassign(tid, t.node)
            if r["ok"]:
                t.state = TaskState.DONE
                t.result = r.get("v")
                t.node = node_id
                out.extend(self._finish(t))
            elif t.retries > 0 and not r.get("fatal", False):
                t.retries -= 1
                t.attempt += 1
                t.node = None
                t.state = TaskState.READY
                self.counters["retried"] += 1
                self.ready.append(tid)
            else:
                t.state = TaskState.FAILED
                t.error = dict(r.get("err") or {})
                t.error.setdefault("node", node_id)
                out.extend(self._finish(t))
        out.extend(self._pump())
        return _merge(out)

    # ---- internals --------------------------------------------------------------------------------------
    def _finish(self, t: OwnedTask) -> list[OwnerAction]:
        """Deliver to the client, then wake (or fail) dependents. Iterative, so deep DAGs cannot overflow."""
        out: list[OwnerAction] = []
        stack = [t]
        while stack:
            cur = stack.pop()
            self.counters["done" if cur.state is TaskState.DONE else "failed"] += 1
            out.append(Deliver(cur.client, [self._result_msg(cur)]))
            for did in cur.dependents:
                d = self.tasks.get(did)
                if d is None or d.state is not TaskState.WAITING:
                    continue
                if cur.state is TaskState.FAILED:
                    d.state = TaskState.FAILED
                    d.error = _dep_error(cur)
                    stack.append(d)
                else:
                    d.missing -= 1
                    if d.missing == 0:
                        d.state = TaskState.READY
                        self.ready.append(did)
            for dep_id in cur.deps:
                dep = self.tasks.get(dep_id)
                if dep is not None:
                    self._maybe_forget(dep)
            self._maybe_forget(cur)
        return out

    def _fail_from_dep(self, t: OwnedTask, dep: OwnedTask) -> list[OwnerAction]:
        t.state = TaskState.FAILED
        t.error = _dep_error(dep)
        return self._finish(t)

    def _maybe_forget(self, t: OwnedTask) -> None:
        if not t.released or t.state not in (TaskState.DONE, TaskState.FAILED):
            return
        # Drop finished dependents from the front as we go: called once per finishing dependent, a plain scan
        # would be quadratic in a wide fan-out (one released input, thousands of map tasks).
        deps = t.dependents
        i = 0
        while i < len(deps) and ((d := self.tasks.get(deps[i])) is None or d.state not in _PENDING):
            i += 1
        del deps[:i]
        if any((d := self.tasks.get(x)) is not None and d.state in _PENDING for x in deps):
            return
        self.tasks.pop(t.id, None)

    def _result_msg(self, t: OwnedTask) -> dict[str, Any]:
        if t.state is TaskState.DONE:
            return {"id": t.id, "ok": True, "v": t.result, "node": t.node or ""}
        return {"id": t.id, "ok": False, "err": t.error or {}, "node": (t.error or {}).get("node", "")}

    def _pump(self) -> list[OwnerAction]:
        """Fill free windows from the ready queue, grouping per node so each node gets one RUN per pass."""
        if not self.ready or not self.nodes:
            return []
        batches: dict[str, list[dict[str, Any]]] = {}
        wps = self.config.window_per_slot
        open_nodes = [n for n in self.nodes.values() if n.inflight < n.slots * wps]
        while self.ready and open_nodes:
            tid = self.ready[0]
            t = self.tasks.get(tid)
            if t is None or t.state is not TaskState.READY:
                self.ready.popleft()
                continue
            target = self.policy.choose({"id": tid}, open_nodes, self.rng)
            self.ready.popleft()
            deps: dict[str, Payload | None] = {}
            for d in t.deps:
                dep = self.tasks.get(d)
                deps[d] = dep.result if dep is not None else None
            t.state = TaskState.DISPATCHED
            t.node = target.node_id
            target.inflight += 1
            self.node_tasks.setdefault(target.node_id, set()).add(tid)
            batches.setdefault(target.node_id, []).append(
                {"id": tid, "att": t.attempt, "fn": t.fn, "args": t.args, "deps": deps, "pure": t.pure}
            )
            if target.inflight >= target.slots * wps:
                open_nodes.remove(target)
        return [Dispatch(node, tasks) for node, tasks in batches.items()]

    def _unassign(self, tid: str, node_id: str) -> None:
        nt = self.node_tasks.get(node_id)
        if nt is not None and tid in nt:
            nt.remove(tid)
            nl = self.nodes.get(node_id)
            if nl is not None:
                nl.inflight -= 1

    @property
    def pending(self) -> int:
        return sum(1 for t in self.tasks.values() if t.state not in (TaskState.DONE, TaskState.FAILED))


def _dep_error(dep: OwnedTask) -> dict[str, Any]:
    err = dep.error or {}
    return {
        "type": err.get("type", "Exception"),
        "msg": f"dependency {dep.id} failed: {err.get('msg', '')}",
        "tb": err.get("tb", ""),
        "node": err.get("node", ""),
    }


def _unknown_dep(dep_id: str) -> OwnedTask:
    stub = OwnedTask(id=dep_id, client=b"", fn=Payload(b""), args=Payload(b""), deps=[])
    stub.state = TaskState.FAILED
    stub.error = {"type": "meshaios.UnknownDependency", "msg": f"task {dep_id} is not known to this node"}
    return stub


def _merge(actions: list[OwnerAction]) -> list[OwnerAction]:
    """One Deliver per client and one Dispatch per node: fewer, larger messages."""
    delivers: dict[bytes, list[dict[str, Any]]] = {}
    dispatches: dict[str, list[dict[str, Any]]] = {}
    for a in actions:
        if isinstance(a, Deliver):
            delivers.setdefault(a.client, []).extend(a.results)
        else:
            dispatches.setdefault(a.node, []).extend(a.tasks)
    return [Deliver(c, r) for c, r in delivers.items()] + [Dispatch(n, t) for n, t in dispatches.items()]
