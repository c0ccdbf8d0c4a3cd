"""The discrete-event simulator: the real scheduling code on a virtual clock, hundreds of nodes in one process.

Why: whether learned placement beats round-robin, how close it gets to HEFT, whether stealing helps or hurts and
whether a decision's cost stays flat as the mesh grows can only be measured over many simulated minutes on many
nodes. Everything that decides is the production code -- ``Owner`` (``meshaios.tasks.owner``, wired as
``node.py`` wires it: ``Owner.task_info`` for placement, the owner's model learning from results), the placement
policies, ``RuntimeModel``, ``LoadView``, the executing node's ``ExecCore`` (``meshaios.tasks.execcore``: fence,
inputs, ``WorkQueue``, prefetch and recall, ``StealEngine``) and, with ``membership="swim"``, the SWIM state
machine on ``SimNet``. What is simulated is only what the I/O shell would do, carrying out ``ExecCore``'s
instructions as ``node.py`` does: messages (latency, plus bytes over the receiver's link, one transfer at a time
per link), input fetches (the bytes of inputs not held here, over that link), executors (a node's worker threads
and one thread per GPU: a started task holds a worker for its true runtime, a prefetched one waits in the
workers' queue, from which a recall takes back what no worker has started) and the clock.

Simplifications, stated: a link's bandwidth is only shared on the receiving side; a result whose node died is
fetched "from the owner" at the same cost (lineage recomputation is the object store's job, not modelled); the
owner nodes themselves are never killed (a client would resubmit elsewhere: that is the chaos test's subject).

Faults (``Faults``, ``SimConfig.kills``): kills, pauses, partitions, SWIM message loss, links that race, and the
messages lost when a node closes its connection to a paused or cut-off peer it declared dead; ``meshaios.sim.chaos``
runs them over many seeds and checks exactly-once delivery and leaks (docs/scheduling.md 6.6).
"""

from __future__ import annotations

import heapq
import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from meshaios.clock import ManualClock
from meshaios.membership.simnet import SimNet
from meshaios.membership.swim import MemberChanged, MemberState, SwimConfig
from meshaios.sched.inputs import Links
from meshaios.sched.loadview import LoadView
from meshaios.sched.model import RuntimeModel
from meshaios.sched.placement import NodeLoad, PlacementPolicy, PlacementTask, Wrapping, make_policy
from meshaios.sched.stealing import StealConfig
from meshaios.sim.workloads import CATALOG, NodeSpec, SimTask, Workload
from meshaios.tasks.execcore import (
    AbortRuns,
    ExecCore,
    FetchInputs,
    Finished,
    InputsReady,
    Instruction,
    PeerDown,
    PeerUp,
    Recalled,
    RecallFromWorkers,
    RunTasks,
    SendAbort,
    SendMoved,
    SendResult,
    SendSteal,
    StartOnWorker,
    StealMessage,
    Tick,
)
from meshaios.tasks.owner import (
    Abort,
    AddLocation,
    Completed,
    Deliver,
    Dispatch,
    LoadHeard,
    NodeDown,
    NodeUp,
    Owner,
    OwnerAction,
    OwnerConfig,
    OwnerTick,
    SubmitTasks,
    TaskMoved,
)
from meshaios.tasks.peers import USABLE, PeerFeed
from meshaios.wire import messages as M
from meshaios.wire.messages import RunTask
from meshaios.wire.payload import Payload

__all__ = ["Faults", "SimConfig", "SimResult", "Simulation"]

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
_RUN = 4
_FINISH = 5
_DONE = 6
_STEAL_MSG = 7
_MOVED = 8
_KILL = 9
_DETECT = 10
_INPUTS = 11
_PAUSE = 12
_RESUME = 13
_ABORT = 14
_PARTITION = 15
_HEAL = 16
_COPIED = 17
KIND_NAMES = ("member", "load", "tick", "submit", "run", "finish", "done", "steal", "moved", "kill", "detect",
              "inputs", "pause", "resume", "abort", "partition", "heal", "copied")
_MESSAGES = (_RUN, _DONE, _STEAL_MSG, _MOVED, _ABORT)  # between two nodes, over a link: (dst, src, ...) first
_LOCAL = (_FINISH, _INPUTS, _DETECT, _SUBMIT, _COPIED)  # happen at one node: that node first


@dataclass(frozen=True)
class Faults:
    """Faults injected into a run, seeded by ``SimConfig.seed`` (docs/scheduling.md 6.6). The links are modelled as
    the node's ZeroMQ-over-TCP links behave: a message between two live, running nodes is never lost, duplicated or
    overtaken on its link, but links race (``jitter``); a node that is paused (SIGSTOP, a stalled loop) receives
    nothing until it resumes, then everything queued for it, in order; a peer that declares it dead meanwhile
    closes its connection to it (``transport.forget``), which loses what was still queued there (each such message
    with probability ``forget_loss``: some had reached the paused node's socket buffer); a partition holds the
    messages that cross it until it heals, and loses them in the same way if their sender declares the peer
    across it dead. SWIM's own messages may
    also be lost at random (``swim_drop``)."""

    jitter: float = 0.0  # extra delay per message, uniform in [0, jitter) seconds: different links race
    pauses: tuple[tuple[float, str, float], ...] = ()  # (seconds after the start, node id, seconds paused)
    # (seconds after the start, nodes cut off from the others, seconds): messages across the cut wait for the heal
    # (TCP retransmits), SWIM's are lost; one partition at a time (one that starts during another is skipped)
    partitions: tuple[tuple[float, tuple[str, ...], float], ...] = ()
    swim_drop: float = 0.0  # probability that a SWIM message is lost (SimNet)
    forget_loss: float = 0.5  # a message queued for a paused peer, lost when its sender declares that peer dead


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
    model_interval: float = 2.0  # how often nodes merge their peers' runtime observations (node.py: ~2 s)
    steal_tick: float = 0.05  # the executing node's timer tick (``node.TICK``): steal requests, stuck prefetches
    detect_delay: float = 2.0  # oracle membership: how long until owners learn that a node died
    kills: tuple[tuple[float, int], ...] = ()  # (seconds after the start, how many nodes) to SIGKILL
    thief_sample: int = 8  # peers an idle node refreshes its view of, per load interval
    max_time: float = 1e6  # give up (and count the rest as lost) after this many simulated seconds
    late_binding: bool = OwnerConfig().late_binding  # for policies that ask, as in a live node
    locality: bool = True  # baselines weigh moving inputs against waiting for their holder (``sched.Locality``)
    deadline_order: str = OwnerConfig().deadline_order  # "fifo", "edf" or "model" (docs/scheduling.md 10.3)
    swim: SwimConfig = field(default_factory=SwimConfig)
    faults: Faults = field(default_factory=Faults)
    drain: float = 0.0  # after the last result, keep running this many simulated seconds (to look for leaks)
    trace: int = 0  # keep the last ``trace`` events but ticks (``Simulation.trace``), for replaying a failure
    # kernels with a GPU implementation reach placement as "any" (``Owner.gpu_capable``), as with ``meshaios node
    # --gpu-choice``: EFT may put them on a GPU, whose ExecCore queues them for its GPU slot
    gpu_choice: bool = False
    # nodes of one host (``NodeSpec.host``) share its cores and hand objects over at this rate (/dev/shm; the rate
    # ``Links`` prices an unmeasured same-host pair at); ``host_aware``: each node knows its own host's cores, as
    # ``node.py`` does (``Links.cores``); False hides them (placement and the steal gate as before they read them)
    host_bandwidth: float = Links().local
    host_aware: bool = True


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
    host_bytes: int = 0  # of ``bytes_moved``, handed over between two nodes of one host
    host_peak: int = 0  # the most tasks and copies that held cores of one host at once (never above its cores)
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


class _TimedPolicy(Wrapping):
    """Measures wall time per placement decision (the only wall-clock read in the simulator; it never feeds
    back into a decision). Everything else is the inner policy's."""

    def __init__(self, inner: PlacementPolicy) -> None:
        super().__init__(inner)
        self.calls = 0
        self.seconds = 0.0

    def choose(self, task: PlacementTask, candidates: list[NodeLoad], rng: random.Random) -> NodeLoad:
        t0 = time.perf_counter()
        out = self.inner.choose(task, candidates, rng)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out


Key = tuple[str, int]


@dataclass
class _Pool:
    """A node's worker threads (``cpu``) or one GPU's thread, in simulated time, as ``tasks.workers.WorkerPool``
    behaves: ``workers`` run at once, the rest wait in submission order; a waiting prefetched start can be taken
    back (``recall``) until a worker starts it."""

    kind: str  # the device kind its tasks run on: "cpu" or "gpu"
    workers: int
    running: dict[Key, StartOnWorker] = field(default_factory=dict)
    waiting: deque[StartOnWorker] = field(default_factory=deque)
    recallable: set[Key] = field(default_factory=set)

    def submit(self, ins: StartOnWorker) -> bool:
        """Queue ``ins``; True if a worker was free (it starts now: the caller times it)."""
        if len(self.running) < self.workers:
            self.running[ins.key] = ins
            return True
        self.waiting.append(ins)
        if ins.prefetch:
            self.recallable.add(ins.key)
        return False

    def recall(self, keys: list[Key]) -> list[Key]:
        back = [k for k in keys if k in self.recallable]
        self.recallable.difference_update(back)
        return back

    def next(self) -> StartOnWorker | None:
        """A worker is free: the next waiting start that was not recalled (now running), if any."""
        while self.waiting:
            ins = self.waiting.popleft()
            if ins.prefetch:
                if ins.key not in self.recallable:
                    continue  # recalled
                self.recallable.discard(ins.key)
            self.running[ins.key] = ins
            return ins
        return None


@dataclass(frozen=True, slots=True)
class _Copy:
    """A same-host hand-over of ``seconds`` (bytes / ``SimConfig.host_bandwidth``) for task ``key``'s inputs: CPU
    work on the host (the holder's /dev/shm write, the reader's page faults), so it takes one of its cores.
    ``net_end``: when the inputs coming over the network link have arrived too."""

    key: Key
    seconds: float
    net_end: float


@dataclass
class _Host:
    """The cores that the nodes of one host share (``NodeSpec.host``): a started task, or a same-host copy, runs
    once one is free; the rest wait in start order (a worker thread that has started but gets no core). First
    come, first served: the host runs no more than ``cores`` at once, however its nodes share them out."""

    cores: int
    running: set[tuple[str, Key, bool]] = field(default_factory=set)  # (node, task, a copy?) holding a core
    waiting: deque[tuple[str, StartOnWorker | _Copy]] = field(default_factory=deque)  # (node, what) waiting for one


@dataclass
class _Node:
    spec: NodeSpec
    core: ExecCore
    model: RuntimeModel
    view: LoadView
    rng: random.Random
    pools: dict[str, _Pool]
    alive: bool = True
    paused: bool = False
    owner: Owner | None = None
    timer: _TimedPolicy | None = None
    ingress_free: float = 0.0
    summary: M.LoadSummary | None = None
    published_at: float = 0.0
    links: Links | None = None  # host ids and this host's cores, as ``node.py`` learns them; None: no hosts
    feed: PeerFeed = field(init=False)  # peers' gossiped meta and membership changes, as node.py takes them


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
        self.host_bytes = 0
        self.host_peak = 0
        self.killed: list[str] = []
        self.steal_gate: dict[Key, tuple[float, float]] = {}  # key -> (commit time, predicted here)
        self._mape_seen = 0
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
            view = LoadView(max_age=10.0)
            gpus = [f"gpu{i}" for i in range(spec.gpu_slots)]
            # what ``node.py`` builds: CPU slots = worker threads, one thread per GPU; speeds as declared
            core = ExecCore(
                nid, {"cpu": spec.cpu_slots}, model=model, view=view, steal=self.stealing, steal_config=steal_cfg,
                steal_seed=f"steal/{cfg.seed}/{nid}", speed={"cpu": spec.cpu_declared, "gpu": spec.gpu_declared},
                gpus=gpus,
            )  # fmt: skip
            pools = {"cpu": _Pool("cpu", spec.cpu_slots), **{g: _Pool("gpu", 1) for g in gpus}}
            node = _Node(spec=spec, core=core, model=model, view=view, rng=random.Random(f"node/{cfg.seed}/{nid}"),
                         pools=pools)
            self.nodes[nid] = node
        # hosts: each node knows every peer's host id (gossiped ``hid``) and its own host's cores (``node.py``)
        self.hosts = {n.host: _Host(max(1, n.host_cores)) for n in nodes if n.host}
        if self.hosts:
            host_of = {n.node_id: n.host for n in nodes if n.host}
            for nid, node in self.nodes.items():
                links = node.links = Links(local=cfg.host_bandwidth)
                links.hosts.update(host_of)
                spec = self.specs[nid]
                if spec.host and cfg.host_aware:
                    links.cores[spec.host] = self.hosts[spec.host].cores
                node.core.steal.link_bandwidth = _same_host_rate(links, nid)  # a thief of its host: /dev/shm
        for oid in self.owner_ids:
            self._make_owner(self.nodes[oid])
        for n in self.nodes.values():
            n.feed = PeerFeed(n.owner, n.view, n.model)
        self._next_models = 0.0
        self.net: SimNet | None = None
        self._change_pos = 0
        self.alive_ids = list(ids)
        self.first_submit = min((t.submit_at for t in workload.tasks), default=0.0)
        self.start = 0.0
        self.events = 0
        # faults: per-link arrival order, messages held for paused nodes, connections closed to paused peers
        self.fault_rng = random.Random(f"faults/{cfg.seed}")
        self._link_last: dict[tuple[str, str], float] = {}
        self._sent_at: dict[int, float] = {}  # seq of a message event -> when it was sent
        self._held: dict[str, list[tuple[int, Any, float]]] = {}  # paused node -> (kind, data, sent at)
        self._forgot: dict[tuple[str, str], float] = {}  # (node, paused peer) -> when node declared it dead
        self._side: dict[str, int] = {}  # during a partition: node -> 1 if cut off, else absent
        self._cut_held: list[tuple[int, Any, float]] = []  # messages waiting for the partition to heal
        self.partitioned = 0  # partitions that happened
        self.paused_ids: set[str] = set()  # nodes paused at some point
        self.false_dead: set[str] = set()  # nodes declared dead by a peer while alive
        self.forget_lost = 0  # messages lost when a sender closed its connection to a paused peer
        self.unsendable = 0  # messages not sent: the sender's SWIM listed their peer as dead
        self.runs: dict[str, list[str]] = {}  # task id -> nodes whose worker finished it, in order
        self.gpu_runs = 0  # runs a GPU finished
        self.delivered: dict[str, int] = {}  # task id -> results the client received for it
        self.failed: list[M.Result] = []  # error results the client received
        self.trace: deque[tuple[float, str, Any]] = deque(maxlen=max(1, cfg.trace))

    # ---- set-up -------------------------------------------------------------------------------------------

    def _make_owner(self, node: _Node) -> None:
        cfg = self.config
        nid = node.spec.node_id
        # what a live node passes (``node.py``): every policy may read the model, the view and the clock
        inner = make_policy(cfg.policy, model=node.model, view=node.view, clock=self.clock, node_id=nid,
                            locality=cfg.locality, links=node.links)
        timer = _TimedPolicy(inner)
        # as node.py wires it: placement reads the owner's account of each task; the owner's model learns
        owner = Owner(nid, OwnerConfig(window_per_slot=cfg.window_per_slot, late_binding=cfg.late_binding,
                                       deadline_order=cfg.deadline_order),
                      timer, random.Random(f"owner/{cfg.seed}/{nid}"), model=node.model,
                      gpu_capable=_runs_on_gpu_too if cfg.gpu_choice else None)
        # as node.py wires it: placement weighs this node's own executor load, from every owner's tasks
        stats = node.core.stats
        owner.self_load = lambda: stats.queued
        node.owner = owner
        node.timer = timer

    # ---- event queue --------------------------------------------------------------------------------------

    def _push(self, t: float, kind: int, data: Any) -> None:
        self._seq += 1
        heapq.heappush(self._events, (t, kind, self._seq, data))

    def _send(self, src: str, dst: str, arrive: float, kind: int, data: Any) -> None:
        """A message from ``src`` to ``dst`` that would arrive at ``arrive``: plus the injected jitter, and never
        before an earlier message on the same link (TCP keeps a link in order; different links race)."""
        jitter = self.config.faults.jitter
        if src != dst and self.net is not None:
            # ``Node._peer_addr``: nothing is sent to a peer this node's SWIM lists as neither ALIVE nor SUSPECT
            swim = self.net.nodes.get(src)
            m = swim.get(dst) if swim is not None else None
            if m is None or m.state not in USABLE:
                self.unsendable += 1
                return
        if src != dst:
            if jitter:
                arrive += self.fault_rng.random() * jitter
            link = (src, dst)
            last = self._link_last.get(link)
            if last is not None and arrive <= last:
                arrive = last + 1e-9
            self._link_last[link] = arrive
        self._push(arrive, kind, data)
        self._sent_at[self._seq] = self.now

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
        for when, nid, length in cfg.faults.pauses:
            self._push(self.start + when, _PAUSE, (nid, length))
        for when, group, length in cfg.faults.partitions:
            self._push(self.start + when, _PARTITION, (group, length))
        self._push(self.now, _LOAD, None)
        self._push(self.now + cfg.steal_tick, _STEAL_TICK, None)
        if self.net is not None:
            self._push(self.now + 0.05, _MEMBER, None)
        total = len(self.tasks)
        handlers: dict[int, Callable[[Any], None]] = {
            _MEMBER: self._on_member_tick, _LOAD: self._on_load, _STEAL_TICK: self._on_steal_tick,
            _SUBMIT: self._on_submit, _RUN: self._on_run, _FINISH: self._on_finish, _DONE: self._on_done,
            _STEAL_MSG: self._on_steal_msg, _MOVED: self._on_moved, _KILL: self._on_kill,
            _DETECT: self._on_detect, _INPUTS: self._on_inputs, _PAUSE: self._on_pause, _RESUME: self._on_resume,
            _ABORT: self._on_abort, _PARTITION: self._on_partition, _HEAL: self._on_heal, _COPIED: self._on_copied,
        }
        end = deadline = self.start + cfg.max_time
        tracing = cfg.trace > 0
        draining = False
        while self._events and (len(self.completed_at) < total or cfg.drain > 0):
            t, kind, seq, data = heapq.heappop(self._events)
            if t > end or (t > deadline and self._workers_idle()):
                break  # the time limit, or drained: ``drain`` seconds after the last result, and no worker busy
            if t > self.now:
                self.clock.set(t)
            sent = self._sent_at.pop(seq, None)
            if (kind in _MESSAGES or kind in _LOCAL) and not self._arrives(kind, data, sent):
                continue
            self.events += 1
            if tracing and kind > _STEAL_TICK:  # not the periodic ticks
                self.trace.append((t, KIND_NAMES[kind], data))
            handlers[kind](data)
            if cfg.drain > 0 and not draining and len(self.completed_at) >= total:
                draining = True
                deadline = min(deadline, self.now + cfg.drain)
        return self._result(time.perf_counter() - wall0)

    def _workers_idle(self) -> bool:
        return not any(p.running or p.waiting for n in self.nodes.values() if n.alive for p in n.pools.values())

    def _arrives(self, kind: int, data: Any, sent: float | None) -> bool:
        """Whether an event for one node happens now: not while that node is paused (it is held, in order, until
        the node resumes), and not for a message lost because its sender closed its connection to a paused
        peer."""
        dst = data[0] if kind != _SUBMIT else self.owner_ids[data[0] % len(self.owner_ids)]
        node = self.nodes.get(dst)
        if node is None or not node.alive:
            return True  # the handlers drop what reaches a dead node
        if kind in _MESSAGES and self._side and self._cut(data[1], dst):
            self._cut_held.append((kind, data, sent if sent is not None else self.now))
            return False
        if node.paused:
            self._held[dst].append((kind, data, sent if sent is not None else self.now))
            return False
        if kind in _MESSAGES and sent is not None:
            closed = self._forgot.get((data[1], dst))
            if closed is not None and sent <= closed and self.fault_rng.random() < self.config.faults.forget_loss:
                self.forget_lost += 1
                if self.config.trace:
                    self.trace.append((self.now, "lost", (KIND_NAMES[kind], data)))
                return False
        return True

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
            c = n.core.steal.counters
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
        r.host_bytes = self.host_bytes
        r.host_peak = self.host_peak
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
                owner.handle(NodeUp(oid, self.nodes[oid].spec.cpu_slots, self._meta(self.nodes[oid])), self.now)
                for nid in self.nodes:
                    if nid != oid:
                        self._member(self.nodes[oid], nid, None, MemberState.ALIVE)
            return
        if cfg.membership != "swim":
            raise ValueError(f"unknown membership {cfg.membership!r}: oracle or swim")
        net = SimNet(cfg.swim, seed=cfg.seed, latency=cfg.latency, jitter=cfg.latency, drop=cfg.faults.swim_drop,
                     roundtrip=False)
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
            owner.handle(NodeUp(oid, self.nodes[oid].spec.cpu_slots, self._meta(self.nodes[oid])), self.now)
        self._member_changes()

    def _meta(self, n: _Node) -> M.NodeMeta:
        meta: M.NodeMeta = {"w": n.spec.cpu_slots, "q": n.core.stats.queued, "rm": n.model.summary(8)}
        if n.summary is not None:
            meta["ld"] = n.summary
        return meta

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
            self._member(node, c.node_id, c.old, c.new)

    def _member(self, node: _Node, peer_id: str, old: MemberState | None, new: MemberState) -> None:
        """``node`` learns that ``peer_id`` changed state: what ``Node._member_changed`` does with it (the owner,
        the load view, then its reservations and requests)."""
        peer = self.nodes.get(peer_id)
        ev = MemberChanged(peer_id, "", old, new, self._meta(peer) if peer is not None else {})
        self._owner_actions(node, node.feed.member_changed(ev, self.now))
        if new in (MemberState.DEAD, MemberState.LEFT):
            if peer is not None and peer.alive:
                self.false_dead.add(peer_id)
                if peer.paused or self._cut(node.spec.node_id, peer_id):
                    # ``transport.forget``: what was still queued for it is lost (see ``Faults``)
                    self._forgot[(node.spec.node_id, peer_id)] = self.now
            self._do(node, node.core.handle(PeerDown(peer_id), self.now))
        elif old in (MemberState.DEAD, MemberState.LEFT):
            self._do(node, node.core.handle(PeerUp(peer_id), self.now))

    # ---- load gossip --------------------------------------------------------------------------------------

    def _publish(self, n: _Node) -> None:
        n.summary = n.core.load_summary(self.now, bandwidth=n.spec.bandwidth)
        n.published_at = self.now
        n.view.update(n.spec.node_id, n.summary, self.now)

    def _lookup(self, observer: _Node, peer_id: str) -> tuple[Mapping[str, Any], float] | None:
        """What ``observer`` knows of ``peer_id``'s load, and since when: via SWIM meta, or the oracle."""
        if self.net is not None:
            swim = self.net.nodes.get(observer.spec.node_id)
            m = swim.get(peer_id) if swim is not None else None
            if m is None or m.state not in USABLE or not isinstance(m.meta, dict):
                return None
            return m.meta, m.last_heard
        peer = self.nodes.get(peer_id)
        if peer is None or not peer.alive:
            return None
        return self._meta(peer), peer.published_at

    def _refresh(self, observer: _Node, peer_id: str, models: bool) -> None:
        got = self._lookup(observer, peer_id)
        if got is None:
            return
        meta, heard = got
        observer.feed.heard(peer_id, meta, heard, self.now)
        if models:
            observer.feed.models(peer_id, meta)

    def _on_load(self, _: Any) -> None:
        cfg = self.config
        live = [n for n in self.nodes.values() if n.alive and not n.paused]
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
        models = self.now >= self._next_models  # peers' runtime observations, every model_interval
        if models:
            self._next_models = self.now + cfg.model_interval
        for n in live:
            if n.owner is not None:
                for pid in self.alive_ids:
                    if pid != n.spec.node_id:
                        self._refresh(n, pid, models)
            elif self.stealing and n.core.steal.idle():
                k = min(cfg.thief_sample, len(self.alive_ids))
                for pid in n.rng.sample(self.alive_ids, k):
                    if pid != n.spec.node_id:
                        self._refresh(n, pid, models)
        self._push(self.now + cfg.load_interval, _LOAD, None)

    # ---- owners -------------------------------------------------------------------------------------------

    def _on_submit(self, data: tuple[int, list[SimTask]]) -> None:
        job, tasks = data
        owner_node = self.nodes[self.owner_ids[job % len(self.owner_ids)]]
        assert owner_node.owner is not None
        specs = []
        for t in tasks:
            spec: M.SubmitTask = {"id": t.id, "fn": Payload(t.kernel.encode()), "args": _sized(t.nbytes),
                                   "deps": t.dep_refs()}
            if t.parts:
                spec["parts"] = t.parts
            if t.deadline:
                spec["deadline"] = t.deadline
            specs.append(spec)
        self._owner_actions(owner_node, owner_node.owner.handle(SubmitTasks(b"client", specs), self.now))

    def _owner_actions(self, node: _Node, actions: list[OwnerAction]) -> None:
        for a in actions:
            if isinstance(a, Dispatch):
                self._dispatch(node, a.node, a.tasks)
            elif isinstance(a, Deliver):
                for r in a.results:
                    tid = r["id"]
                    self.delivered[tid] = self.delivered.get(tid, 0) + 1
                    if not r.get("ok"):
                        self.failed.append(r)
                    elif tid not in self.completed_at:
                        self.completed_at[tid] = self.now
            elif isinstance(a, Abort):
                self._send_abort(node, a.node, node.spec.node_id, a.keys)

    def _transfer(self, dst: _Node, nbytes: int, earliest: float) -> float:
        """Reserve ``dst``'s incoming link for ``nbytes`` from ``earliest``; returns when they have arrived."""
        if nbytes <= 0:
            return earliest
        start = max(earliest, dst.ingress_free)
        end = start + self.config.latency + nbytes / dst.spec.bandwidth
        dst.ingress_free = end
        self.bytes_moved += nbytes
        return end

    def _dispatch(self, owner_node: _Node, target_id: str, tasks: list[RunTask]) -> None:
        """A RUN message: the tasks' inline arguments travel with it, over the target's link."""
        oid = owner_node.spec.node_id
        if self.net is not None and target_id != oid:
            # as ``Node._owner_actions``: a RUN only to a member this node sees ALIVE or SUSPECT, else node_down
            swim = self.net.nodes.get(oid)
            m = swim.get(target_id) if swim is not None else None
            if m is None or m.state not in (MemberState.ALIVE, MemberState.SUSPECT):
                assert owner_node.owner is not None
                self._owner_actions(owner_node, owner_node.owner.handle(NodeDown(target_id), self.now))
                return
        target = self.nodes.get(target_id)
        if target is None or not target.alive:
            return  # lost in the void; the owner re-places it when membership says the node is dead
        if target_id == oid:
            self._push(self.now, _RUN, (target_id, oid, tasks))
            return
        arrive = self._transfer(target, sum(td["args"].nbytes for td in tasks), self.now + self.config.latency)
        self._send(oid, target_id, arrive, _RUN, (target_id, oid, tasks))

    def _on_run(self, data: tuple[str, str, list[RunTask]]) -> None:
        nid, owner_id, tasks = data
        node = self.nodes[nid]
        if node.alive:
            self._do(node, node.core.handle(RunTasks(owner_id, tasks), self.now))

    def _on_done(self, data: tuple[str, str, M.Result, int]) -> None:
        owner_id, exec_id, result, q = data
        node = self.nodes[owner_id]
        if not node.alive or node.owner is None:
            return
        node.owner.handle(LoadHeard(exec_id, q), self.now)  # as ``Node`` does with a DONE's ``q``
        self._owner_actions(node, node.owner.handle(Completed(exec_id, [result]), self.now))
        seen = node.model.n_seen  # the owner's model learned from the result (``Owner``, as in a live node)
        if owner_id == self.owner_ids[0] and seen != self._mape_seen and seen % 50 == 0:
            self._mape_seen = seen
            self.mape_curve.append([seen, round(node.model.mape, 4)])

    def _on_moved(self, data: tuple[str, str, list[list[Any]]]) -> None:
        """The owner learns that tasks of its moved from ``src`` (``Owner.moved``, as in a live node)."""
        owner_id, src, moves = data
        node = self.nodes.get(owner_id)
        if node is None or not node.alive or node.owner is None:
            return
        for tid, att, dst in moves:
            self._owner_actions(node, node.owner.handle(TaskMoved(tid, src, dst, att), self.now))

    # ---- the executing node's shell: ExecCore's instructions in simulated time -----------------------------

    def _do(self, node: _Node, instructions: list[Instruction]) -> None:
        nid = node.spec.node_id
        for ins in instructions:
            if isinstance(ins, StartOnWorker):
                pool = node.pools[ins.device]
                if pool.submit(ins):
                    self._begin(node, pool, ins)
            elif isinstance(ins, SendResult):
                delay = 0.0 if ins.owner == nid else self.config.latency
                # the node's task count rides on the DONE (``q``), as ``Node`` sends it
                done = (ins.owner, nid, ins.result, node.core.stats.queued)
                self._send(nid, ins.owner, self.now + delay, _DONE, done)
            elif isinstance(ins, FetchInputs):
                # the inputs held elsewhere come over this node's link (one batch of fetches), or from a holder of
                # its host at the host's rate (/dev/shm, off the network link); those held here cost nothing
                host = node.spec.host
                nbytes = same = 0
                for holders, size in ins.remote.values():
                    if nid in holders:
                        continue
                    if host and any(self.specs[h].host == host for h in holders if h in self.specs):
                        same += size
                    else:
                        nbytes += size
                if not nbytes and not same:
                    # all here already (``Node._i_fetch``): ready at once, and the task may still be stolen
                    self._do(node, node.core.handle(InputsReady(ins.key, local=True), self.now))
                else:
                    end = self._transfer(node, nbytes, self.now)
                    if same:
                        self.bytes_moved += same
                        self.host_bytes += same
                        self._on_core(node, _Copy(ins.key, self.config.latency + same / self.config.host_bandwidth,
                                                  end))
                    else:
                        self._push(end, _INPUTS, (nid, ins.key))
            elif isinstance(ins, RecallFromWorkers):
                back = node.pools["cpu"].recall(ins.keys)
                self._do(node, node.core.handle(Recalled(back, ins.stuck), self.now))
            elif isinstance(ins, SendSteal):
                self._send_steal(node, ins)
            elif isinstance(ins, SendMoved):
                for (tid, att, _), here in zip(ins.moves, ins.here, strict=False):
                    self.moves.setdefault(tid, []).append(nid)
                    self.steal_gate[(tid, att)] = (self.now, here)
                delay = 0.0 if ins.owner == nid else self.config.latency
                self._send(nid, ins.owner, self.now + delay, _MOVED, (ins.owner, nid, ins.moves))
            elif isinstance(ins, SendAbort):
                self._send_abort(node, ins.node, ins.owner, ins.keys)
            # SendFenced, ReleaseInputs, DropResult, TerminateProcessPool: no client fails over and no store or
            # process pool is modelled here

    def _send_abort(self, node: _Node, to: str, owner: str, keys: list[M.TaskKey]) -> None:
        """An ABORT (``Node._send_abort``): to this node's own core at once, else a message to ``to``."""
        nid = node.spec.node_id
        delay = 0.0 if to == nid else self.config.latency
        self._send(nid, to, self.now + delay, _ABORT, (to, nid, owner, keys))

    def _on_abort(self, data: tuple[str, str, str, list[M.TaskKey]]) -> None:
        dst, _, owner, keys = data
        node = self.nodes.get(dst)
        if node is not None and node.alive:
            self._do(node, node.core.handle(AbortRuns(owner, keys), self.now))

    def _begin(self, node: _Node, pool: _Pool, ins: StartOnWorker) -> None:
        if pool.kind == "cpu" and node.spec.host:
            self._on_core(node, ins)
            return
        rt = self.tasks[ins.key[0]].runtime(node.spec, pool.kind)
        self._push(self.now + rt, _FINISH, (node.spec.node_id, ins.device, ins.key, rt))

    def _on_core(self, node: _Node, what: StartOnWorker | _Copy) -> None:
        """Run ``what`` (a started CPU task or a same-host copy) on a core of ``node``'s host: now if one is free,
        else when one frees (its worker has started it, or its fetch is under way; the host has no core for it)."""
        nid = node.spec.node_id
        host = self.hosts[node.spec.host]
        if len(host.running) >= host.cores:
            host.waiting.append((nid, what))
            return
        self.host_peak = max(self.host_peak, len(host.running) + 1)
        if isinstance(what, _Copy):
            host.running.add((nid, what.key, True))
            self._push(self.now + what.seconds, _COPIED, (nid, what.key, what.net_end))
            return
        host.running.add((nid, what.key, False))
        rt = self.tasks[what.key[0]].runtime(node.spec, "cpu")
        self._push(self.now + rt, _FINISH, (nid, what.device, what.key, rt))

    def _free_core(self, nid: str, key: Key, copy: bool = False) -> None:
        """A task (or copy) of ``nid`` that held a core of its host ended: the next one waiting there starts."""
        host = self.hosts.get(self.specs[nid].host) if self.hosts else None
        if host is None or (nid, key, copy) not in host.running:
            return
        host.running.discard((nid, key, copy))
        while host.waiting:
            wid, what = host.waiting.popleft()
            waiter = self.nodes[wid]
            if waiter.alive and (isinstance(what, _Copy) or what.key in waiter.pools["cpu"].running):
                self._on_core(waiter, what)
                return

    def _on_copied(self, data: tuple[str, Key, float]) -> None:
        """A same-host copy is done: its core is free; the task's inputs are all here once the network's are."""
        nid, key, net_end = data
        self._free_core(nid, key, copy=True)
        if net_end > self.now:
            self._push(net_end, _INPUTS, (nid, key))
        else:
            self._on_inputs((nid, key))

    def _on_inputs(self, data: tuple[str, Key]) -> None:
        nid, key = data
        node = self.nodes[nid]
        if node.alive:
            self._do(node, node.core.handle(InputsReady(key), self.now))

    def _on_finish(self, data: tuple[str, str, Key, float]) -> None:
        nid, device, key, rt = data
        self._free_core(nid, key)
        node = self.nodes[nid]
        pool = node.pools[device]
        ins = pool.running.pop(key, None) if node.alive else None
        if ins is None:
            return
        nxt = pool.next()  # the freed worker takes the next task in its queue, as a worker thread does
        if nxt is not None:
            self._begin(node, pool, nxt)
        tid = key[0]
        self.exec_count[tid] = self.exec_count.get(tid, 0) + 1
        self.runs.setdefault(tid, []).append(nid)
        self.gpu_runs += pool.kind == "gpu"
        self.location[tid] = nid
        gate = self.steal_gate.pop(key, None)
        if gate is not None:
            committed, here = gate
            if self.now - committed > here:
                self.wasted += 1
        # the result stays on this node, as a live node keeps anything but small values: the owner records where
        result: M.Result = {"id": tid, "att": key[1], "ok": True, "size": self.tasks[tid].out_bytes,
                            "dt": float(rt)}
        if pool.kind == "gpu":
            result["dev"] = "gpu"
        self._do(node, node.core.handle(Finished([(ins.owner, key, result)]), self.now))

    # ---- stealing -----------------------------------------------------------------------------------------

    def _on_steal_tick(self, _: Any) -> None:
        """The node's timer tick, as ``Node._tick``: its owner's (timeouts, leases, objects to free) and its
        core's (stuck prefetches, steal timeouts and requests)."""
        for n in self.nodes.values():
            if n.alive and not n.paused:
                if n.owner is not None:
                    self._owner_actions(n, n.owner.handle(OwnerTick(), self.now))
                self._do(n, n.core.handle(Tick(), self.now))
        self._push(self.now + self.config.steal_tick, _STEAL_TICK, None)

    def _send_steal(self, node: _Node, ins: SendSteal) -> None:
        """A steal message; a commit carries the tasks' specs (their inline arguments) over the thief's link."""
        arrive = self.now + self.config.latency
        dst = self.nodes.get(ins.to)
        if ins.msg.get("k") == "steal_commit" and dst is not None:
            nbytes = sum(int(item[6]) for item in cast("list[list[Any]]", ins.msg.get("tasks", ())))
            arrive = self._transfer(dst, nbytes, arrive)
        self._send(node.spec.node_id, ins.to, arrive, _STEAL_MSG, (ins.to, node.spec.node_id, ins.msg))

    def _on_steal_msg(self, data: tuple[str, str, M.StealMsg]) -> None:
        dst, src, msg = data
        node = self.nodes.get(dst)
        if node is None or not node.alive:
            return
        self._do(node, node.core.handle(StealMessage(src, msg), self.now))

    # ---- faults -------------------------------------------------------------------------------------------

    def _on_kill(self, count: int) -> None:
        victims = [nid for nid in self.alive_ids if nid not in self.owner_ids]
        self.rng.shuffle(victims)
        for nid in sorted(victims[:count]):
            node = self.nodes[nid]
            node.alive = False
            node.paused = False
            self._held.pop(nid, None)
            for pool in node.pools.values():
                pool.running.clear()
                pool.waiting.clear()
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
                            owner.handle(AddLocation(tid, self.owner_ids[0]), self.now)

    def _on_detect(self, data: tuple[str, str]) -> None:
        observer, dead = data
        node = self.nodes[observer]
        if node.alive:
            self._member(node, dead, MemberState.ALIVE, MemberState.DEAD)

    def _on_pause(self, data: tuple[str, float]) -> None:
        """SIGSTOP (or a loop that stalls): the node handles nothing -- messages, timers, its workers' results --
        until it resumes; SWIM stops too, so its peers may declare it dead meanwhile."""
        nid, length = data
        node = self.nodes.get(nid)
        if node is None or not node.alive or node.paused:
            return
        node.paused = True
        self.paused_ids.add(nid)
        self._held[nid] = []
        if self.net is not None:
            self.net.run(self.now)
            self.net.pause(nid)
        self._push(self.now + length, _RESUME, nid)

    def _on_resume(self, nid: str) -> None:
        """Everything held for the node happens now, in the order it arrived."""
        node = self.nodes[nid]
        if not node.alive or not node.paused:
            return
        node.paused = False
        if self.net is not None:
            self.net.run(self.now)
            self.net.resume(nid)
        for i, (kind, data, sent) in enumerate(self._held.pop(nid, [])):
            self._push(self.now + i * 1e-9, kind, data)
            self._sent_at[self._seq] = sent

    def _cut(self, a: str, b: str) -> bool:
        return self._side.get(a, 0) != self._side.get(b, 0)

    def _on_partition(self, data: tuple[tuple[str, ...], float]) -> None:
        """The nodes in ``group`` can reach each other but no other node, for ``length`` seconds."""
        group, length = data
        if self._side:
            return
        self._side = dict.fromkeys(group, 1)
        self.partitioned += 1
        if self.net is not None:
            self.net.run(self.now)
            self.net.partition(group)
        self._push(self.now + length, _HEAL, None)

    def _on_heal(self, _: Any) -> None:
        """Everything held at the cut arrives now, in the order it was sent."""
        self._side = {}
        if self.net is not None:
            self.net.run(self.now)
            self.net.heal()
        held, self._cut_held = self._cut_held, []
        for i, (kind, data, sent) in enumerate(held):
            self._push(self.now + i * 1e-9, kind, data)
            self._sent_at[self._seq] = sent


_GPU_KERNELS = frozenset(k.name.encode() for k in CATALOG if k.gpu is not None)


def _same_host_rate(links: Links, node_id: str) -> Callable[[str], float | None]:
    """What ``Node._link_to`` tells the steal gate: the rate to a thief of this node's host, else None."""

    def rate(peer: str) -> float | None:
        host = links.hosts.get(node_id)
        return links.bandwidth(node_id, peer) if host and links.hosts.get(peer) == host else None

    return rate


def _runs_on_gpu_too(fn: Payload) -> bool:
    """A simulated task's function payload is its kernel's name: those with a GPU implementation."""
    return fn.blob in _GPU_KERNELS
