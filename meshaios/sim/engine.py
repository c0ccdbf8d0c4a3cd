"""The discrete-event simulator: the real scheduling code on a virtual clock, hundreds of nodes in one process.

Why: whether learned placement beats round-robin, how close it gets to HEFT, whether stealing helps or hurts and
whether a decision's cost stays flat as the mesh grows can only be measured over many simulated minutes on many
nodes. Everything that decides is the production code -- ``Owner`` (``meshaios.tasks.owner``), the placement
policies, ``RuntimeModel``, ``LoadView``, ``StealEngine``/``WorkQueue`` and, with ``membership="swim"``, the SWIM
state machine on ``SimNet``. What is simulated is only what the I/O shell would do: messages (latency, plus
bytes over the receiver's link, one transfer at a time per link), executors (slots per device; a task occupies a
slot for its true runtime) and the clock.

Simplifications, stated: a link's bandwidth is only shared on the receiving side; a result whose node died is
fetched "from the owner" at the same cost (lineage recomputation is the object store's job, not modelled); the
owner nodes themselves never die (a client would resubmit elsewhere: that is the chaos test's subject).
"""

from __future__ import annotations

import heapq
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from meshaios.clock import ManualClock
from meshaios.membership.simnet import SimNet
from meshaios.membership.swim import MemberState, SwimConfig
from meshaios.sched.loadview import DeviceLoad, LoadView, make_summary
from meshaios.sched.model import RuntimeModel, task_features
from meshaios.sched.placement import NodeLoad, PlacementPolicy, WithTaskInfo, make_policy
from meshaios.sched.stealing import Moved, QueuedTask, Send, StealConfig, StealEngine, TasksArrived, TState, WorkQueue
from meshaios.sim.workloads import NodeSpec, SimTask, Workload
from meshaios.tasks.owner import Deliver, Dispatch, Owner, OwnerAction, OwnerConfig
from meshaios.wire.payload import Payload

__all__ = ["SimConfig", "SimResult", "Simulation"]

_EMPTY = Payload(b"")
_ZERO = np.zeros(1, np.uint8)


def _sized(nbytes: int) -> Payload:
    """A payload that says it is ``nbytes`` long without holding them (a zero-stride view of one byte): the owner
    prices inline arguments by ``Payload.nbytes``, and the simulator never reads them."""
    return Payload(b"", (np.broadcast_to(_ZERO, (nbytes,)),)) if nbytes > 0 else _EMPTY

# event kinds, in tie-break order at equal times
_MEMBER = 0
_LOAD = 1
_STEAL_TICK = 2
_SUBMIT = 3
_READY = 4
_FINISH = 5
_DONE = 6
_STEAL_MSG = 7
_MOVED = 8
_KILL = 9
_DETECT = 10


@dataclass(frozen=True)
class SimConfig:
    policy: str = "eft"
    seed: int = 0
    stealing: bool | None = None  # None: on for "eft" (it is part of the learned scheduler), off for baselines
    membership: str = "oracle"  # "oracle" (instant, exact), or "swim" (the real protocol on SimNet)
    owners: int = 1  # nodes that clients submit to; job j goes to owner j % owners
    window_per_slot: int = OwnerConfig().window_per_slot  # the owner's in-flight window per slot
    latency: float = 0.0005  # one-way message latency, seconds
    load_interval: float = 0.5  # how often nodes refresh their gossiped summary
    steal_tick: float = 0.25
    detect_delay: float = 2.0  # oracle membership: how long until owners learn that a node died
    kills: tuple[tuple[float, int], ...] = ()  # (seconds after the start, how many nodes) to SIGKILL
    thief_sample: int = 8  # peers an idle node refreshes its view of, per load interval
    max_time: float = 1e6  # give up (and count the rest as lost) after this many simulated seconds
    # where a node runs a task that may use either device when placement did not say: "cpu" is what node.py
    # does today (a GPU only for tasks that ask for one); "jsq" picks the shorter queue per slot
    default_device: str = "cpu"
    late_binding: bool = OwnerConfig.late_binding  # for policies that ask, as in a live node
    locality: bool = True  # baselines weigh moving inputs against waiting for their holder (``sched.Locality``)
    deadline_order: str = OwnerConfig.deadline_order  # "fifo", "edf" or "model" (docs/scheduling.md 10.3)
    swim: SwimConfig = field(default_factory=SwimConfig)


@dataclass
class SimResult:
    policy: str
    workload: str
    nodes: int
    tasks: int
    completed: int = 0
    makespan: float = 0.0
    mean_completion: float = 0.0
    p95_completion: float = 0.0
    mean_job_completion: float = 0.0
    steals: int = 0
    steal_requests: int = 0
    wasted_steals: int = 0
    max_moves: int = 0  # the most times any one task was handed over (1 = stolen once, never bounced)
    bytes_moved: int = 0
    decisions: int = 0
    decision_us: float = 0.0
    executions: int = 0
    duplicate_executions: int = 0
    replaced: int = 0
    mape: float = 0.0
    mape_curve: list[list[float]] = field(default_factory=list)
    killed: list[str] = field(default_factory=list)
    deadline_tasks: int = 0
    deadline_met: int = 0  # finished by their deadline (counted from the simulator's own clock)
    deadline_at_risk: int = 0  # reported by the owners as predicted to miss
    events: int = 0
    wall_s: float = 0.0

    @property
    def lost(self) -> int:
        return self.tasks - self.completed

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["lost"] = self.lost
        d["decisions_per_s"] = 1e6 / self.decision_us if self.decision_us else 0.0
        for k in ("makespan", "mean_completion", "p95_completion", "mean_job_completion", "decision_us", "mape",
                  "wall_s"):
            d[k] = round(d[k], 4)
        return d


class _TimedPolicy:
    """Measures wall time per placement decision (the only wall-clock read in the simulator; it never feeds
    back into a decision)."""

    def __init__(self, inner: PlacementPolicy) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls = 0
        self.seconds = 0.0

    def choose(self, task: dict[str, Any], candidates: list[NodeLoad], rng: random.Random) -> NodeLoad:
        t0 = time.perf_counter()
        out = self.inner.choose(task, candidates, rng)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out


@dataclass
class _Node:
    spec: NodeSpec
    queue: WorkQueue
    model: RuntimeModel
    view: LoadView
    steal: StealEngine
    rng: random.Random
    alive: bool = True
    owner: Owner | None = None
    info: WithTaskInfo | None = None
    timer: _TimedPolicy | None = None
    ingress_free: float = 0.0
    running: dict[tuple[str, int], tuple[float, str]] = field(default_factory=dict)  # key -> (start, device)
    summary: dict[str, Any] = field(default_factory=dict)
    published_at: float = 0.0


class Simulation:
    """One run: a cluster, a workload, a policy. ``run()`` returns a ``SimResult``; same inputs, same result
    (but for the measured wall-clock cost per decision)."""

    def __init__(self, nodes: list[NodeSpec], workload: Workload, config: SimConfig | None = None) -> None:
        self.config = cfg = config or SimConfig()
        self.specs = {n.node_id: n for n in nodes}
        self.workload = workload
        self.tasks = {t.id: t for t in workload.tasks}
        self.clock = ManualClock()
        self.rng = random.Random(f"sim/{cfg.seed}")
        self._events: list[tuple[float, int, int, Any]] = []
        self._seq = 0
        self.location: dict[str, str] = {}
        self.exec_count: dict[str, int] = {}
        self.completed_at: dict[str, float] = {}
        self.bytes_moved = 0
        self.killed: list[str] = []
        self.steal_gate: dict[tuple[str, int], tuple[float, float]] = {}  # key -> (commit time, predicted here)
        self.wasted = 0
        self.moves: dict[str, list[str]] = {}  # task id -> nodes it was stolen from, in order
        self.mape_curve: list[list[float]] = []
        self.stealing = cfg.stealing if cfg.stealing is not None else cfg.policy == "eft"
        ids = sorted(self.specs)
        self.owner_ids = ids[: max(1, min(cfg.owners, len(ids)))]
        self.nodes: dict[str, _Node] = {}
        steal_cfg = StealConfig(latency=cfg.latency)
        for nid in ids:
            spec = self.specs[nid]
            model = RuntimeModel()
            queue = WorkQueue(spec.slots())
            node = _Node(
                spec=spec, queue=queue, model=model, view=LoadView(max_age=10.0),
                steal=StealEngine(nid, queue, steal_cfg, random.Random(f"steal/{cfg.seed}/{nid}"),
                                  {"cpu": spec.cpu_declared, "gpu": spec.gpu_declared},
                                  self._thief_estimator(model)),
                rng=random.Random(f"node/{cfg.seed}/{nid}"),
            )
            self.nodes[nid] = node
        for oid in self.owner_ids:
            self._make_owner(self.nodes[oid])
        self.net: SimNet | None = None
        self._change_pos = 0
        self.alive_ids = list(ids)
        self.first_submit = min((t.submit_at for t in workload.tasks), default=0.0)
        self.start = 0.0
        self.events = 0

    # ---- set-up -------------------------------------------------------------------------------------------

    def _make_owner(self, node: _Node) -> None:
        cfg = self.config
        nid = node.spec.node_id
        # what a live node passes (``node.py``): every policy may read the model, the view and the clock
        inner = make_policy(cfg.policy, model=node.model, view=node.view, clock=self.clock, node_id=nid,
                            locality=cfg.locality)
        timer = _TimedPolicy(inner)
        info = WithTaskInfo(timer, lambda tid: self._task_info(node, tid))
        node.owner = Owner(nid, OwnerConfig(window_per_slot=cfg.window_per_slot, late_binding=cfg.late_binding,
                                            deadline_order=cfg.deadline_order),
                           info, random.Random(f"owner/{cfg.seed}/{nid}"))
        node.info = info
        node.timer = timer

    def _thief_estimator(self, model: RuntimeModel) -> Callable[[QueuedTask, dict[str, Any], str], float]:
        def estimate(task: QueuedTask, info: dict[str, Any], device: str) -> float:
            speeds = info.get("speed") or {}
            sp = speeds.get(device, 1.0) if isinstance(speeds, dict) else 1.0
            x = task_features(task.kernel, task.nbytes, device, speed=float(sp) if sp else 1.0)
            return model.predict_one(x)

        return estimate

    def _task_info(self, node: _Node, tid: str) -> dict[str, Any] | None:
        """The owner's own account of the task's inputs (``Owner.inputs``, as in a live node), with the kernel and
        device hint a live task would carry."""
        t = self.tasks.get(tid)
        inputs = node.owner.inputs(tid) if node.owner is not None else None
        if t is None or inputs is None:
            return None
        return inputs.info(t.kernel, t.device)

    # ---- event queue --------------------------------------------------------------------------------------

    def _push(self, t: float, kind: int, data: Any) -> None:
        self._seq += 1
        heapq.heappush(self._events, (t, kind, self._seq, data))

    @property
    def now(self) -> float:
        return self.clock.now()

    # ---- run ----------------------------------------------------------------------------------------------

    def run(self) -> SimResult:
        wall0 = time.perf_counter()
        cfg = self.config
        self._start_membership()
        self.start = self.now
        for job, tasks in sorted(self.workload.jobs().items()):
            at = self.start + min(t.submit_at for t in tasks) - self.first_submit
            self._push(at, _SUBMIT, (job, tasks))
        for when, count in cfg.kills:
            self._push(self.start + when, _KILL, count)
        self._push(self.now, _LOAD, None)
        self._push(self.now + cfg.steal_tick, _STEAL_TICK, None)
        if self.net is not None:
            self._push(self.now + 0.05, _MEMBER, None)
        total = len(self.tasks)
        handlers: dict[int, Callable[[Any], None]] = {
            _MEMBER: self._on_member_tick, _LOAD: self._on_load, _STEAL_TICK: self._on_steal_tick,
            _SUBMIT: self._on_submit, _READY: self._on_ready, _FINISH: self._on_finish, _DONE: self._on_done,
            _STEAL_MSG: self._on_steal_msg, _MOVED: self._on_moved, _KILL: self._on_kill,
            _DETECT: self._on_detect,
        }
        deadline = self.start + cfg.max_time
        while self._events and len(self.completed_at) < total:
            t, kind, _, data = heapq.heappop(self._events)
            if t > deadline:
                break
            if t > self.now:
                self.clock.set(t)
            self.events += 1
            handlers[kind](data)
        return self._result(time.perf_counter() - wall0)

    def _result(self, wall: float) -> SimResult:
        cfg = self.config
        r = SimResult(cfg.policy, self.workload.name, len(self.specs), len(self.tasks))
        r.completed = len(self.completed_at)
        if self.completed_at:
            r.makespan = max(self.completed_at.values()) - self.start
            lat = sorted(self.completed_at[t.id] - (self.start + t.submit_at - self.first_submit)
                         for t in self.workload.tasks if t.id in self.completed_at)
            r.mean_completion = sum(lat) / len(lat)
            r.p95_completion = lat[min(len(lat) - 1, int(0.95 * len(lat)))]
            jobs = []
            for tasks in self.workload.jobs().values():
                if all(t.id in self.completed_at for t in tasks):
                    sub = self.start + min(t.submit_at for t in tasks) - self.first_submit
                    jobs.append(max(self.completed_at[t.id] for t in tasks) - sub)
            r.mean_job_completion = sum(jobs) / len(jobs) if jobs else 0.0
        for n in self.nodes.values():
            c = n.steal.counters
            r.steals += c["given"]
            r.steal_requests += c["requests"]
            if n.timer is not None:
                r.decisions += n.timer.calls
                r.decision_us += n.timer.seconds * 1e6
            if n.owner is not None:
                r.replaced += n.owner.counters["replaced"]
                r.deadline_at_risk += n.owner.counters["deadline_at_risk"]
        for t in self.workload.tasks:
            if t.deadline:
                r.deadline_tasks += 1
                due = self.start + t.submit_at - self.first_submit + t.deadline
                done = self.completed_at.get(t.id)
                r.deadline_met += done is not None and done <= due + 1e-9
        r.decision_us = r.decision_us / r.decisions if r.decisions else 0.0
        r.wasted_steals = self.wasted
        r.max_moves = max((len(v) for v in self.moves.values()), default=0)
        r.bytes_moved = self.bytes_moved
        r.executions = sum(self.exec_count.values())
        r.duplicate_executions = sum(c - 1 for c in self.exec_count.values() if c > 1)
        first_owner = self.nodes[self.owner_ids[0]]
        r.mape = first_owner.model.mape
        r.mape_curve = self.mape_curve
        r.killed = list(self.killed)
        r.events = self.events
        r.wall_s = wall
        return r

    # ---- membership ---------------------------------------------------------------------------------------

    def _start_membership(self) -> None:
        cfg = self.config
        for n in self.nodes.values():
            self._publish(n)
        if cfg.membership == "oracle":
            for oid in self.owner_ids:
                owner = self.nodes[oid].owner
                assert owner is not None
                for nid, n in self.nodes.items():
                    owner.node_up(nid, n.spec.cpu_slots, self._meta(n))
            return
        if cfg.membership != "swim":
            raise ValueError(f"unknown membership {cfg.membership!r}: oracle or swim")
        net = SimNet(cfg.swim, seed=cfg.seed, latency=cfg.latency, jitter=cfg.latency, roundtrip=False)
        self.net = net
        first = sorted(self.nodes)[0]
        for nid, n in sorted(self.nodes.items()):
            seeds = [] if nid == first else [f"sim://{first}"]
            net.add(nid, seeds=seeds, meta=self._meta(n))
        n_nodes = len(self.nodes)
        if net.run_until(lambda s: s.converged(), timeout=30.0 + n_nodes * 0.1, step=0.5) is None:
            raise RuntimeError("SWIM did not converge during the warm-up")
        self.clock.set(net.now)
        for oid in self.owner_ids:
            owner = self.nodes[oid].owner
            assert owner is not None
            owner.node_up(oid, self.nodes[oid].spec.cpu_slots, self._meta(self.nodes[oid]))
        self._member_changes()

    def _meta(self, n: _Node) -> dict[str, Any]:
        return {"w": n.spec.cpu_slots, "q": n.queue.n_queued(), "ld": n.summary, "rm": n.model.summary(8)}

    def _on_member_tick(self, _: Any) -> None:
        assert self.net is not None
        self.net.run(self.now)
        self._member_changes()
        self._push(self.now + 0.05, _MEMBER, None)

    def _member_changes(self) -> None:
        assert self.net is not None
        changes = self.net.changes
        while self._change_pos < len(changes):
            c = changes[self._change_pos]
            self._change_pos += 1
            node = self.nodes.get(c.observer)
            if node is None or not node.alive:
                continue
            if c.new in (MemberState.DEAD, MemberState.LEFT):
                self._peer_down(node, c.node_id)
            elif c.new is MemberState.ALIVE and c.old is not MemberState.SUSPECT and node.owner is not None:
                peer = self.nodes.get(c.node_id)
                if peer is not None:
                    self._owner_actions(node, node.owner.node_up(c.node_id, peer.spec.cpu_slots, self._meta(peer)))

    def _peer_down(self, node: _Node, peer: str) -> None:
        node.steal.peer_down(peer, self.now)
        node.view.remove(peer)
        if node.owner is not None:
            self._owner_actions(node, node.owner.node_down(peer))

    # ---- load gossip --------------------------------------------------------------------------------------

    def _publish(self, n: _Node) -> None:
        now = self.now
        q = n.queue
        devices = {}
        for d, slots in q.slots.items():
            if slots > 0:
                devices[d] = DeviceLoad(slots, q.free(d), q.backlog(d, now), n.spec.declared(d))
        stealable = sum(1 for t in q.queued() if t.state is TState.QUEUED and not t.path)
        n.summary = make_summary(devices, queued=q.n_queued(), stealable=stealable, bandwidth=n.spec.bandwidth,
                                 kernel_factors=n.model.kernel_factors(8))
        n.published_at = now
        n.view.update(n.spec.node_id, n.summary, now)

    def _lookup(self, observer: _Node, peer_id: str) -> tuple[dict[str, Any], float] | None:
        """What ``observer`` knows of ``peer_id``'s load, and since when: via SWIM meta, or the oracle."""
        if self.net is not None:
            swim = self.net.nodes.get(observer.spec.node_id)
            m = swim.get(peer_id) if swim is not None else None
            if m is None or m.state is not MemberState.ALIVE or not isinstance(m.meta, dict):
                return None
            return m.meta, m.last_heard
        peer = self.nodes.get(peer_id)
        if peer is None or not peer.alive:
            return None
        return self._meta(peer), peer.published_at

    def _refresh(self, observer: _Node, peer_id: str, merge_model: bool) -> None:
        got = self._lookup(observer, peer_id)
        if got is None:
            return
        meta, heard = got
        if not math.isfinite(heard):
            return  # known from gossip only: its meta is as old as its last incarnation change
        known = observer.view.get(peer_id, self.now)
        if known is not None and known.heard >= heard:
            return
        observer.view.update(peer_id, meta.get("ld"), heard)
        if merge_model and peer_id != observer.spec.node_id:
            observer.model.merge_gossip(meta.get("rm"), peer_id)
        if observer.owner is not None:
            q = meta.get("q")
            if isinstance(q, int):
                observer.owner.node_load(peer_id, q)

    def _on_load(self, _: Any) -> None:
        cfg = self.config
        live = [n for n in self.nodes.values() if n.alive]
        for n in live:
            self._publish(n)
            if self.net is not None:
                swim = self.net.nodes.get(n.spec.node_id)
                if swim is not None:
                    swim.set_meta(self._meta(n))
        # Owners read every peer's summary (as node.py reads every member's meta each tick); an idle node reads a
        # sample. Which peers to look at comes from the simulator's list (a shortcut that keeps a 1,000-node run
        # fast); what it learns about them comes only from its own SWIM view (or, with the oracle, the summary
        # as last published), with the time it was heard.
        for n in live:
            if n.owner is not None:
                for pid in self.alive_ids:
                    if pid != n.spec.node_id:
                        self._refresh(n, pid, merge_model=True)
            elif self.stealing and n.steal.idle():
                k = min(cfg.thief_sample, len(self.alive_ids))
                for pid in n.rng.sample(self.alive_ids, k):
                    if pid != n.spec.node_id:
                        self._refresh(n, pid, merge_model=False)
        self._push(self.now + cfg.load_interval, _LOAD, None)

    # ---- owners -------------------------------------------------------------------------------------------

    def _on_submit(self, data: tuple[int, list[SimTask]]) -> None:
        job, tasks = data
        owner_node = self.nodes[self.owner_ids[job % len(self.owner_ids)]]
        assert owner_node.owner is not None
        specs = []
        for t in tasks:
            spec: dict[str, Any] = {"id": t.id, "fn": Payload(t.kernel.encode()), "args": _sized(t.nbytes),
                                    "deps": t.dep_refs()}
            if t.parts:
                spec["parts"] = t.parts
            if t.deadline:
                spec["deadline"] = t.deadline
            specs.append(spec)
        self._owner_actions(owner_node, owner_node.owner.submit(b"client", specs, self.now))

    def _owner_actions(self, node: _Node, actions: list[OwnerAction]) -> None:
        for a in actions:
            if isinstance(a, Dispatch):
                for td in a.tasks:
                    self._dispatch(node, a.node, td, a.placed.get(td["id"]))
            elif isinstance(a, Deliver):
                for r in a.results:
                    if r.get("ok") and r["id"] not in self.completed_at:
                        self.completed_at[r["id"]] = self.now

    def _transfer(self, dst: _Node, nbytes: int, earliest: float) -> float:
        """Reserve ``dst``'s incoming link for ``nbytes`` from ``earliest``; returns when they have arrived."""
        if nbytes <= 0:
            return earliest
        start = max(earliest, dst.ingress_free)
        end = start + self.config.latency + nbytes / dst.spec.bandwidth
        dst.ingress_free = end
        self.bytes_moved += nbytes
        return end

    def _dispatch(
        self, owner_node: _Node, target_id: str, td: dict[str, Any], placed: dict[str, Any] | None
    ) -> None:
        tid, att = td["id"], td["att"]
        device = placed.get("placed_device") if placed else None
        target = self.nodes.get(target_id)
        if target is None or not target.alive:
            return  # lost in the void; the owner re-places it when membership says the node is dead
        oid = owner_node.spec.node_id
        arrive = self.now if target_id == oid else self.now + self.config.latency
        if target_id != oid:
            arrive = self._transfer(target, td["args"].nbytes, arrive)
        # what the RUN message says, read as node.py reads it: inputs held elsewhere come over the target's link
        # after the RUN arrived (one batch of fetches); those the target holds cost nothing
        remote = 0
        for v in td["deps"].values():
            if isinstance(v, dict) and target_id not in v.get("loc", ()):
                remote += int(v.get("size", 0))
        ready = self._transfer(target, remote, arrive)
        self._push(ready, _READY, (target_id, tid, att, oid, device, td.get("urg", False)))

    def _on_done(self, data: tuple[str, str, dict[str, Any], dict[str, Any]]) -> None:
        owner_id, exec_id, result, obs = data
        node = self.nodes[owner_id]
        if not node.alive or node.owner is None:
            return
        spec = self.specs[exec_id]
        t = self.tasks[result["id"]]
        x = task_features(t.kernel, t.input_bytes(), obs["dev"], speed=spec.declared(obs["dev"]), node=exec_id)
        node.model.learn_one(x, obs["rt"])
        if owner_id == self.owner_ids[0] and node.model.n_seen % 50 == 0:
            self.mape_curve.append([node.model.n_seen, round(node.model.mape, 4)])
        self._owner_actions(node, node.owner.completed(exec_id, [result], self.now))

    def _on_moved(self, data: Moved) -> None:
        """The owner learns that a task of its moved from ``src`` to ``to`` (``Owner.moved``, as in a live node)."""
        node = self.nodes.get(data.owner)
        if node is None or not node.alive or node.owner is None:
            return
        self._owner_actions(node, node.owner.moved(data.task_id, data.src, data.to))

    # ---- executors ----------------------------------------------------------------------------------------

    def _on_ready(self, data: tuple[str, str, int, str, str | None, bool]) -> None:
        nid, tid, att, owner_id, device, urgent = data
        node = self.nodes[nid]
        if not node.alive:
            return
        t = self.tasks[tid]
        devices = ("cpu", "gpu") if t.device == "any" else ("cpu",)
        q = node.queue
        usable = [d for d in devices if q.slots.get(d, 0) > 0]
        if device not in usable:
            # no placement hint (baseline policies): the CPU, as node.py does, or the shorter queue per slot
            if self.config.default_device == "jsq":
                device = min(usable, key=lambda d: ((q.n_queued(d) + q.n_running(d)) / q.slots[d], d != "gpu"))
            else:
                device = "cpu" if "cpu" in usable else usable[0]
        qt = QueuedTask(
            id=tid, att=att, owner=owner_id, kernel=t.kernel, device=device, devices=devices,
            nbytes=t.input_bytes(), predicted=self._predict_local(node, t, device), spec={}, enqueued=self.now,
            urgent=urgent,
        )
        q.push(qt)
        self._start(node)

    def _predict_local(self, node: _Node, t: SimTask, device: str) -> float:
        x = task_features(t.kernel, t.input_bytes(), device, speed=node.spec.declared(device), node=node.spec.node_id)
        return node.model.predict_one(x)

    def _start(self, node: _Node) -> None:
        q = node.queue
        for d in q.slots:
            while True:
                qt = q.start_next(d, self.now)
                if qt is None:
                    break
                begin = self.now
                fetch = qt.spec.get("fetch") if isinstance(qt.spec, dict) else None
                if fetch:
                    begin = self._transfer(node, int(fetch), begin)
                rt = self.tasks[qt.id].runtime(node.spec, d)
                node.running[qt.key] = (self.now, d)
                self._push(begin + rt, _FINISH, (node.spec.node_id, qt.key, begin, rt))
        if self.stealing and node.steal.idle() and not node.steal.requesting:
            self._steal_actions(node, node.steal.tick(self.now, node.view))

    def _on_finish(self, data: tuple[str, tuple[str, int], float, float]) -> None:
        nid, key, _begin, rt = data
        node = self.nodes[nid]
        if not node.alive or key not in node.running:
            return
        _, device = node.running.pop(key)
        qt = node.queue.finish(key)
        assert qt is not None
        tid = qt.id
        self.exec_count[tid] = self.exec_count.get(tid, 0) + 1
        self.location[tid] = nid
        t = self.tasks[tid]
        if nid != qt.owner:
            x = task_features(t.kernel, t.input_bytes(), device, speed=node.spec.declared(device), node=nid)
            node.model.learn_one(x, rt)
        gate = self.steal_gate.pop(key, None)
        if gate is not None:
            committed, here = gate
            if self.now - committed > here:
                self.wasted += 1
        # the result stays on this node, as a live node keeps anything but small values: the owner records where
        result = {"id": tid, "att": key[1], "ok": True, "size": t.out_bytes, "dt": float(rt)}
        obs = {"rt": rt, "dev": device}
        self._push(self.now + (0.0 if nid == qt.owner else self.config.latency), _DONE, (qt.owner, nid, result, obs))
        self._start(node)

    # ---- stealing -----------------------------------------------------------------------------------------

    def _on_steal_tick(self, _: Any) -> None:
        if self.stealing:
            for n in self.nodes.values():
                if n.alive:
                    self._steal_actions(n, n.steal.tick(self.now, n.view))
        self._push(self.now + self.config.steal_tick, _STEAL_TICK, None)

    def _steal_actions(self, node: _Node, actions: list[Any]) -> None:
        for a in actions:
            if isinstance(a, Send):
                self._push(self.now + self.config.latency, _STEAL_MSG, (a.to, node.spec.node_id, a.msg))
            elif isinstance(a, TasksArrived):
                victim = a.tasks[0].path[-1] if a.tasks and a.tasks[0].path else ""
                for qt in a.tasks:
                    qt.predicted = self._predict_local(node, self.tasks[qt.id], qt.device)
                    qt.spec = {"fetch": qt.nbytes if victim else 0}
                self._start(node)
            elif isinstance(a, Moved):
                self.moves.setdefault(a.task_id, []).append(a.src)
                self.steal_gate[(a.task_id, a.att)] = (self.now, a.here)
                self._push(self.now + self.config.latency, _MOVED, a)

    def _on_steal_msg(self, data: tuple[str, str, dict[str, Any]]) -> None:
        dst, src, msg = data
        node = self.nodes.get(dst)
        if node is None or not node.alive:
            return
        self._steal_actions(node, node.steal.handle(src, msg, self.now))
        self._start(node)  # tasks whose reservation was declined are runnable again

    # ---- faults -------------------------------------------------------------------------------------------

    def _on_kill(self, count: int) -> None:
        victims = [nid for nid in self.alive_ids if nid not in self.owner_ids]
        self.rng.shuffle(victims)
        for nid in sorted(victims[:count]):
            node = self.nodes[nid]
            node.alive = False
            node.running.clear()
            self.alive_ids.remove(nid)
            self.killed.append(nid)
            if self.net is not None:
                self.net.kill(nid)
            else:
                for other in self.nodes.values():
                    if other.alive:
                        self._push(self.now + self.config.detect_delay, _DETECT, (other.spec.node_id, nid))
            for tid, where in list(self.location.items()):
                if where == nid:
                    # stands in for a re-fetch (see module docstring): the first owner has a copy now
                    self.location[tid] = self.owner_ids[0]
                    for oid in self.owner_ids:
                        owner = self.nodes[oid].owner
                        if owner is not None:
                            owner.add_location(tid, self.owner_ids[0])

    def _on_detect(self, data: tuple[str, str]) -> None:
        observer, dead = data
        node = self.nodes[observer]
        if node.alive:
            self._peer_down(node, dead)
