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

import hashlib
import itertools
import random
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, cast

from meshaios.fastinit import fast_init
from meshaios.sched.inputs import TaskInputs, placement_info, task_inputs
from meshaios.sched.placement import LeastLoaded, NodeLoad, PlacementPolicy, PlacementTask
from meshaios.sched.sampling import NodeIndex, SampleConfig, holder_ids, sample
from meshaios.tasks.epochs import ClientLeases
from meshaios.wire import messages as M
from meshaios.wire.payload import Payload

if TYPE_CHECKING:  # river and scipy take seconds to import: clients import this module, only nodes learn
    from meshaios.sched.model import Learner


class _Level:
    """One priority level of the ready queue: a FIFO per client, and whose turn it is."""

    __slots__ = ("queues", "turn")

    def __init__(self) -> None:
        self.queues: dict[bytes, deque[str]] = {}
        self.turn: deque[bytes] = deque()  # clients with ready tasks; the first one's task goes next


class ReadyQueue:
    """The owner's ready queue: higher ``priority`` first; among tasks of equal priority the clients take turns,
    one task each (round robin), so a client with 10,000 queued tasks does not shut out one that submits ten; each
    client's own tasks are in graph order (submission order, ``OwnedTask.seq``: a consumer that becomes ready goes
    ahead of the tasks submitted after it, so one chain goes on before the next starts; docs/scheduling.md), or in
    rank order (``Owner._order_ready``).

    Its deque-like surface (``append``, ``appendleft``, ``popleft``, ``[0]``) is what the owner uses; each task's
    priority and client are read from the owner's task table when it is added. ``dirty`` notes that tasks were added,
    so that ordering by rank costs nothing on the passes where nothing new arrived. The common case (one priority,
    one client) costs a deque operation plus a few attribute reads: the queue at the head, and the one the last
    task was appended to, are remembered until the structure changes."""

    __slots__ = ("_head", "_last", "_levels", "_multi", "_n", "_prios", "_tasks", "dirty")

    def __init__(self, tasks: Mapping[str, OwnedTask] | None = None, items: Iterable[str] = ()) -> None:
        self._tasks: Mapping[str, OwnedTask] = tasks if tasks is not None else {}
        self._levels: dict[int, _Level] = {}
        self._prios: list[int] = []  # priorities with queued tasks, highest first
        self._n = 0
        self._head: deque[str] | None = None  # the queue popleft takes from (None: find it)
        self._multi = False  # the head level has several clients: popleft rotates turns
        self._last: tuple[int, bytes, deque[str]] | None = None  # (priority, client, queue) of the last append
        self.dirty = False
        for x in items:
            self.append(x)

    def _queue(self, prio: int, client: bytes, front: bool) -> deque[str]:
        lvl = self._levels.get(prio)
        if lvl is None:
            lvl = self._levels[prio] = _Level()
            self._prios.append(prio)
            self._prios.sort(reverse=True)
            self._head = None
        q = lvl.queues.get(client)
        if q is None:
            q = lvl.queues[client] = deque()
            if front:
                lvl.turn.appendleft(client)
            else:
                lvl.turn.append(client)
            self._head = None
        return q

    def append(self, tid: str) -> None:
        t = self._tasks.get(tid)
        prio, client = (t.priority, t.client) if t is not None else (0, b"")
        last = self._last
        if last is not None and last[0] == prio and last[1] == client:
            q = last[2]
        else:
            q = self._queue(prio, client, False)
            self._last = (prio, client, q)
        if q and t is not None and (tail := self._tasks.get(q[-1])) is not None and tail.seq > t.seq:
            self._insert(q, t.seq, tid)  # ready late, submitted early (a consumer): ahead of later submissions
        else:
            q.append(tid)
        self._n += 1
        self.dirty = True

    def _insert(self, q: deque[str], seq: int, tid: str) -> None:
        """``tid`` into ``q`` before the tasks submitted after it (walking from the tail: they are few)."""
        tasks = self._tasks
        i = len(q)
        while i > 0 and (u := tasks.get(q[i - 1])) is not None and u.seq > seq:
            i -= 1
        q.insert(i, tid)

    def appendleft(self, tid: str) -> None:
        t = self._tasks.get(tid)
        prio, client = (t.priority, t.client) if t is not None else (0, b"")
        self._queue(prio, client, True).appendleft(tid)
        self._n += 1
        self.dirty = True

    def extendleft(self, tids: Iterable[str]) -> None:
        for tid in tids:
            self.appendleft(tid)

    def _find_head(self) -> deque[str]:
        if not self._n:
            raise IndexError("the ready queue is empty")
        lvl = self._levels[self._prios[0]]
        self._multi = len(lvl.turn) > 1
        q = self._head = lvl.queues[lvl.turn[0]]
        return q

    def popleft(self) -> str:
        q = self._head
        if q is None:
            q = self._find_head()
        tid = q.popleft()
        self._n -= 1
        if not q or self._multi:
            self._head = None
            prio = self._prios[0]
            lvl = self._levels[prio]
            if q:
                lvl.turn.rotate(-1)  # the next client's turn
            else:
                del lvl.queues[lvl.turn.popleft()]
                self._last = None
                if not lvl.turn:
                    del self._levels[prio]
                    self._prios.pop(0)
        return tid

    def __getitem__(self, i: int) -> str:
        if i != 0:
            raise IndexError("only the head of the ready queue can be read")
        q = self._head
        if q is None:
            q = self._find_head()
        return q[0]

    def __len__(self) -> int:
        return self._n

    def __bool__(self) -> bool:
        return self._n > 0

    def __iter__(self) -> Iterator[str]:
        """In the order ``popleft`` would take them."""
        for prio in list(self._prios):
            lvl = self._levels[prio]
            queues = [list(lvl.queues[c]) for c in lvl.turn]
            for round_ in itertools.zip_longest(*queues):
                yield from (x for x in round_ if x is not None)

    def sort(self, key: Callable[[str], float]) -> None:
        """Order each client's tasks by ``key`` (stable); levels and turns are unchanged."""
        for lvl in self._levels.values():
            for c, q in lvl.queues.items():
                lvl.queues[c] = deque(sorted(q, key=key))
        self._head = None
        self._last = None
        self.dirty = False


class TaskState(StrEnum):
    WAITING = "waiting"  # some dependency not done yet
    READY = "ready"  # queued at the owner, waiting for a slot
    DISPATCHED = "dispatched"  # sent to a node, not finished
    DONE = "done"
    FAILED = "failed"


_PENDING = frozenset({TaskState.WAITING, TaskState.READY, TaskState.DISPATCHED})


MAX_UNREACHABLE = 3  # reports of a put out of an executor's reach (its holders live to the owner) before it is lost


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
    error: M.ErrorInfo | None = None
    released: bool = False
    node_failures: int = 0
    submitted_at: float = 0.0
    locations: list[str] = field(default_factory=list)  # nodes holding the result when it is not inline
    size: int = 0
    parts: int = 0  # >0: a shuffle map output, stored as ``id#j`` for j < parts
    delivered: bool = False  # the client has its result: a recomputation (lineage) does not deliver again
    resources: dict[str, int] = field(default_factory=dict)
    recomputed: int = 0
    unreachable: int = 0  # a put: executors that could reach none of its holders while this owner counted one live
    timeout: float = 0.0  # seconds a dispatched attempt may run; 0: no limit
    key: str = ""  # what the runtime model knows this function by
    priority: int = 0  # higher runs first among ready tasks (here, in the executor's queue, and when stealing)
    deadline: float = 0.0  # when it should have finished, on this owner's clock; 0: none
    ep: int = 0  # the client's epoch this task is owned under (tasks/epochs.py)
    kept: bool = False  # fire and forget: runs even if its client leaves (it, and what it depends on)
    report_start: bool = False  # the client wants to know when it starts (``concurrent.futures`` running())
    keep_on_device: bool = False  # a kernel's result stays on its GPU however small (``kd``)
    device: str = ""  # its submitter's device choice (``dev``): "cpu", "any"; "": the node's (``gpu_capable``)
    device_at: str = ""  # the node that keeps the result on a GPU (its result said ``kdev``): placement prices it
    seq: int = 0  # graph order: the owner's submission counter (a client submits inputs before their consumers)
    # the owner's ``_stamp`` when the current attempt was dispatched, and when the task last finished: a ``lost``
    # report of an attempt sent before an input was done again (recomputed) is about copies gone already
    sent: int = 0
    done_at: int = 0

    @property
    def available(self) -> bool:
        """Done, and its value can still be had: inline here, or on some live node."""
        return self.state is TaskState.DONE and (self.result is not None or bool(self.locations))


@fast_init
@dataclass(frozen=True, slots=True)
class Dispatch:
    node: str
    tasks: list[M.RunTask]
    # per task id, what the placement policy saw and wrote back when it chose ``node`` (the owner's task info,
    # EFT's ``placed_device``, ``predicted_s``): advice, not part of what is sent, so not compared
    placed: dict[str, PlacementTask] = field(default_factory=dict, compare=False)


@fast_init
@dataclass(frozen=True, slots=True)
class Deliver:
    client: bytes
    results: list[M.Result]


@dataclass(frozen=True, slots=True)
class Free:
    """Tell ``node`` to drop these objects from its store: nobody can ask for them any more. ``after``: a task of
    ours there that is their last user -- drop them when it succeeds (nothing, if it is not there)."""

    node: str
    ids: list[str]
    after: str = ""
    hold: bool = False  # the client failed over: kept a while for its new owner's CLAIM (store/copies.FREE_HOLD)


@dataclass(frozen=True, slots=True)
class Abort:
    """Tell ``node`` to drop these attempts ``[task id, attempt]`` of ours: cancelled. A queued one never starts; a
    running one's result is dropped (a thread cannot be stopped) or its worker process is terminated."""

    node: str
    keys: list[M.TaskKey]


@dataclass(frozen=True, slots=True)
class Started:
    """Tell ``client`` these tasks of its own began running (they asked to be told: ``rs``)."""

    client: bytes
    ids: list[str]


OwnerAction = Dispatch | Deliver | Abort | Started | Free


# ---- events: what the shell (``node.py``, the simulator) hands the owner, through ``Owner.handle(event, now)`` ----
@dataclass(frozen=True, slots=True)
class NodeUp:
    """A member became usable (or its metadata changed): ``slots`` workers, its SWIM ``meta``."""

    node_id: str
    slots: int
    meta: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class NodeDown:
    node_id: str


@fast_init
@dataclass(frozen=True, slots=True)
class LoadHeard:
    """A member's task count (``q``: queued and running there, all owners together), from its DONE or its gossiped
    metadata; ``at``: when it was true on the owner's clock (None: now, as for a DONE; gossip: when the member
    was last heard from directly). An older count than the one the owner has changes nothing."""

    node_id: str
    reported: int
    at: float | None = None


@fast_init
@dataclass(frozen=True, slots=True)
class SubmitTasks:
    client: bytes
    tasks: Iterable[Mapping[str, Any]]  # SUBMIT tasks, schema-checked
    ep: int = 0


@fast_init
@dataclass(frozen=True, slots=True)
class ClientHeard:
    """Any message from ``client``: its lease is renewed."""

    client: bytes


@dataclass(frozen=True, slots=True)
class Detach:
    """``client`` is at epoch ``ep`` under another owner."""

    client: bytes
    ep: int


@dataclass(frozen=True, slots=True)
class OwnerTick:
    """Periodic: timeouts, client leases; the objects to free since the last tick come out as ``Free``."""


@dataclass(frozen=True, slots=True)
class ReleaseClient:
    client: bytes


@fast_init
@dataclass(frozen=True, slots=True)
class Release:
    ids: Iterable[str]


@dataclass(frozen=True, slots=True)
class Cancel:
    client: bytes
    ids: Iterable[str]


@dataclass(frozen=True, slots=True)
class CancelClient:
    client: bytes


@dataclass(frozen=True, slots=True)
class RunStarted:
    """``node_id`` began running these attempts (``[task id, attempt]``)."""

    node_id: str
    keys: Iterable[Any]


@dataclass(frozen=True, slots=True)
class Keep:
    client: bytes
    ids: Iterable[Any]


@fast_init
@dataclass(frozen=True, slots=True)
class Completed:
    node_id: str
    results: Iterable[Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class TaskMoved:
    """A victim handed ``task_id`` (``attempt``) from ``src`` to the thief ``dst``."""

    task_id: str
    src: str
    dst: str
    attempt: int | None = None


@dataclass(frozen=True, slots=True)
class RegisterPut:
    client: bytes
    obj_id: str
    locations: list[str]
    size: int


@dataclass(frozen=True, slots=True)
class AddLocation:
    obj_id: str
    node_id: str


OwnerEvent = (
    NodeUp | NodeDown | LoadHeard | SubmitTasks | ClientHeard | Detach | OwnerTick | ReleaseClient | Release | Cancel
    | CancelClient | RunStarted | Keep | Completed | TaskMoved | RegisterPut | AddLocation
)


@dataclass(frozen=True)
class OwnerConfig:
    window_per_slot: int = 8  # tasks in flight per slot of a node, per owner: enough to hide a round trip
    max_node_failures: int = 3  # a task whose nodes die this often fails (Dask's KilledWorker idea)
    max_pending_per_client: int = 100_000  # beyond this a client's new tasks are refused (meshaios.Busy)
    # Late binding, for policies that declare ``late_binding`` (learned EFT): they are offered every node that fits,
    # full windows included, and a task whose best node is full waits here for it instead of going somewhere worse.
    late_binding: bool = True
    max_deferred_per_pass: int = 32  # bounds one pass's work when many ready tasks all want busy nodes
    # Rank order, for policies that can predict runtimes (``PlacementPolicy.ranks``: EFT): ready tasks are taken by
    # ``rank_aging x submission time - predicted runtime``, i.e. longest first among tasks submitted close together
    # (HEFT's upward rank for independent tasks), while a task that has waited 1/rank_aging times longer than the
    # difference in predicted runtime goes first: nobody starves behind ever longer newcomers. (Aging at 1 would
    # undo the order of a big batch, whose submission alone takes about as long as its short tasks run.)
    rank_order: bool = True
    rank_aging: float = 0.1
    # Tasks with a deadline (docs/scheduling.md 10.3): "fifo" ignores deadlines when ordering (they are only
    # counted); "edf" (default) takes ready tasks with a deadline first, earliest deadline first; "model" takes one
    # ahead of its turn only when the runtime model predicts it would otherwise miss it -- when its slack (deadline
    # - now - predicted runtime) is below the expected wait of a task dispatched now -- least slack first, and
    # reports a task predicted to miss anyway (``deadline_at_risk``), hurried only after every task that can still
    # make its deadline. (Measured: "model" loses to "edf" while the model is young; see the docs.)
    deadline_order: str = "edf"
    # A client silent this long (seconds) has its work held back until it speaks again: one on the far side of a
    # partition, or one that has failed over elsewhere, gets nothing run that nobody will collect (tasks/epochs.py).
    # 0: no leases (the node sets one; clients ping every 0.25 s).
    client_lease: float = 0.0


class Owner:
    def __init__(
        self,
        node_id: str,
        config: OwnerConfig | None = None,
        policy: PlacementPolicy | None = None,
        rng: random.Random | None = None,
        *,
        model: Learner | None = None,
        info: Callable[[str], PlacementTask | None] | None = None,
        sampling: SampleConfig | None = None,
        gpu_capable: Callable[[Payload], bool] | None = None,
    ) -> None:
        """``policy`` places ready tasks (``sched.placement.PlacementPolicy``); ``model``, when given, learns from
        every finished task (sampled for sub-millisecond ones); ``info(task id)`` is what the policy is told
        about a task (default: ``task_info``); ``sampling``: how many candidates a decision sees in a large mesh
        (``sched/sampling.py``). ``gpu_capable(fn)``: whether a function may run on either device (a kernel that
        runs on a GPU too): placement may then choose (``task_info`` says "any"); None (the default): a task is
        "gpu" if it asks for one, else "cpu" (``meshaios node --gpu-choice`` gives one, node.py)."""
        self.node_id = node_id
        self.config = config or OwnerConfig()
        self.policy: PlacementPolicy = policy or LeastLoaded()
        self.model = model
        self._info = info or self.task_info
        self.gpu_capable = gpu_capable
        self.sampling = sampling or SampleConfig()
        self._index = NodeIndex()  # the nodes, kept for sampling: no O(nodes) work per decision
        self.rng = rng or random.Random(0)
        self.tasks: dict[str, OwnedTask] = {}
        self.ready: ReadyQueue = ReadyQueue(self.tasks)
        self._ranks: dict[str, float] = {}  # task -> its sort key while it is ready (rank order only)
        self._rank_epoch = -1
        self.nodes: dict[str, NodeLoad] = {}
        self.node_tasks: dict[str, set[str]] = {}
        self.counters = {
            "submitted": 0,
            "done": 0,
            "failed": 0,
            "replaced": 0,
            "duplicates": 0,
            "stale_reports": 0,  # failures of an attempt older than the one dispatched (ignored)
            "retried": 0,
            "recomputed": 0,
            "lost_inputs": 0,
            "moved": 0,
            "moved_ignored": 0,
            "abandoned": 0,  # tasks given up because their client moved on to a newer epoch (another owner)
            "stale_submits": 0,  # SUBMITs of an epoch the client had already left
            "held": 0,  # dispatches held back while their client was silent past its lease
            "adopted_done": 0,  # finished tasks a failed-over client brought along (not run again)
            "reconciled": 0,  # in-flight tasks run again because their client waited long without any result
            "cancelled": 0,  # tasks cancelled by their client (or because it went away)
            "deadline_met": 0,
            "deadline_missed": 0,
            "deadline_at_risk": 0,  # predicted to miss before they started (model order)
            "held_for_order": 0,  # data tasks held back for a consumer that a running task is about to make ready
        }
        self._frees: dict[str, list[str]] = {}
        self._deadlines: dict[str, float] = {}  # dispatched tasks with a timeout -> when that attempt expires
        self.now = 0.0
        self._learned = 0
        self._pending_by_client: dict[bytes, int] = {}
        self._by_deadline: list[str] = []  # submitted tasks with a deadline not yet dispatched (see _urgent)
        self._dl_predicted: dict[str, float] = {}  # their predicted run times
        self._at_risk: set[str] = set()  # those predicted to miss (counted once)
        self._mean_dt = 0.0  # EWMA of reported run times: the expected wait behind a window
        self.clients = ClientLeases(self.config.client_lease)
        self._held: dict[bytes, list[str]] = {}  # ready tasks of suspended clients, in order
        self._seq = 0  # submissions so far: each task's graph order (``OwnedTask.seq``)
        self._stamp = 0  # dispatches and completions so far (``OwnedTask.sent``, ``done_at``)
        # this node's own executor load (tasks accepted and not finished, every owner's): read at each placement
        # pass. A peer's load reaches the owner on its DONEs; without this its own node's is never heard, so
        # with two owners it looked idle while running the other owner's tasks, and data moved to it
        self.self_load: Callable[[], int] | None = None
        self._fn_keys: dict[bytes, str] = {}  # function payload -> its kernel id (``fn_key_kept``)

    # ---- the one entry -----------------------------------------------------------------------------------
    def handle(self, event: OwnerEvent, now: float) -> list[OwnerAction]:
        """Everything that happens to the owner, as an event at ``now`` (its clock: dispatch deadlines are stamped
        from it), and what to do about it as actions: ``Dispatch``, ``Deliver``, ``Abort``, ``Started``, and the
        objects nobody can ask for any more as ``Free`` (out of ``Completed`` for what that completion made unneeded,
        out of ``OwnerTick`` for the rest: batched per tick). The methods
        below are the per-event handlers ``handle`` calls."""
        if now > self.now:
            self.now = now
        return _HANDLERS[type(event)](self, event, now)

    # ---- membership -------------------------------------------------------------------------------------
    def node_up(self, node_id: str, slots: int, meta: Mapping[str, Any] | None = None) -> list[OwnerAction]:
        """``meta``: the node's SWIM metadata (``messages.NodeMeta``), as gossip brought it."""
        node_meta = cast(M.NodeMeta | None, meta)  # a map: its fields are read with care (``_capacity``)
        nl = self.nodes.get(node_id)
        if nl is None:
            nl = self.nodes[node_id] = NodeLoad(node_id, max(1, slots), meta=node_meta)
            self.node_tasks.setdefault(node_id, set())
        else:
            nl.slots = max(1, slots)
            nl.meta = node_meta
        self._index.add(nl, gpu=_capacity(node_meta).get("gpu", 0) > 0)
        nl.window = nl.slots * self.config.window_per_slot
        return self._pump()

    def node_load(self, node_id: str, reported: int, at: float | None = None) -> None:
        """``node_id`` holds ``reported`` tasks, as of ``at`` (default: now); kept if fresher than what we had."""
        nl = self.nodes.get(node_id)
        if nl is not None:
            nl.report(reported, self.now if at is None else at)

    def node_down(self, node_id: str) -> list[OwnerAction]:
        """Work running there goes back to the ready queue; results that lived only there are recomputed from
        lineage if anyone still needs them."""
        down = self.nodes.pop(node_id, None)
        if down is not None:
            self._index.remove(down)
        lost = self.node_tasks.pop(node_id, set())
        self._frees.pop(node_id, None)
        out: list[OwnerAction] = []
        failed: list[OwnedTask] = []
        front: list[str] = []
        for tid in sorted(lost):
            t = self.tasks.get(tid)
            if t is None or t.state is not TaskState.DISPATCHED:
                continue
            t.node_failures += 1
            t.attempt += 1
            t.node = None
            if t.node_failures > self.config.max_node_failures:
                t.state = TaskState.FAILED
                t.error = _error(
                    "NodeLost", f"the nodes running this task died {t.node_failures} times (last: {node_id})", node_id
                )
                failed.append(t)
            elif (gone := self._failed_dep(t)) is not None:
                t.state = TaskState.FAILED
                t.error = _dep_error(gone)
                failed.append(t)
            else:
                self.counters["replaced"] += 1
                if self._requeue(t, enqueue=False):
                    front.append(tid)
        for t in list(self.tasks.values()):
            if t.state is TaskState.DONE and node_id in t.locations:
                t.locations.remove(node_id)
                if not t.available:
                    self._became_unavailable(t)
                    if self._needed(t):
                        out.extend(self._recompute(t))
        self.ready.extendleft(reversed(front))  # re-placed work goes first, in its original order
        for t in failed:
            out.extend(self._finish(t))
        out.extend(self._pump())
        return _merge(out)

    # ---- client side ------------------------------------------------------------------------------------
    def submit(
        self, client: bytes, tasks: Iterable[Mapping[str, Any]], now: float = 0.0, ep: int = 0
    ) -> list[OwnerAction]:
        """``tasks`` are SUBMIT_TASK dicts, already schema-checked. Re-submitting a known id is idempotent.

        ``ep`` is the client's epoch (its failover count): a SUBMIT of an epoch the client has left is stale (a
        message from before its failover) and ignored; a known task resubmitted under a newer one is re-owned."""
        self.now = max(self.now, now)
        if ep < self.clients.epoch(client):
            self.counters["stale_submits"] += 1
            return []
        self.clients.advance(client, ep)
        self._unhold(client)
        self.clients.track(client, now)
        out: list[OwnerAction] = []
        redeliver: list[M.Result] = []
        reconciled: set[str] | None = None
        for raw in tasks:
            spec = cast(M.SubmitTask, raw)  # checked by decode (messages.SUBMIT_TASK), optional fields read with care
            tid = spec["id"]
            known = self.tasks.get(tid)
            if known is not None:
                if known.client != client and not known.delivered:  # the client reconnected through another route
                    self._count_pending(known.client, -1)
                    self._count_pending(client, +1)
                # an epoch counts the failovers of one client identity: another's (a spread client's other shard,
                # on this node too) says nothing of this one's, and runs of this identity at that epoch fenced its
                # own later runs, and the FENCED made this owner drop its work (fault seed 808, --gray --shuffle)
                known.ep = max(known.ep, ep) if known.client == client else ep
                known.client = client
                if known.state in (TaskState.DONE, TaskState.FAILED) and "done" not in spec:
                    redeliver.append(self._result_msg(known))
                elif spec.get("rc") is True and known.state in (TaskState.DISPATCHED, TaskState.WAITING):
                    if reconciled is None:
                        reconciled = set()
                    self._reconcile(known, reconciled)
                continue
            if "done" in spec and self._adopt_done(client, spec, ep):
                continue
            if self._pending_by_client.get(client, 0) >= self.config.max_pending_per_client:
                # bounded memory against a client that ignores its window: refuse, do not queue
                redeliver.append(
                    {
                        "id": tid,
                        "ok": False,
                        "node": self.node_id,
                        "err": _error(
                            "Busy",
                            f"this node holds {self.config.max_pending_per_client} unfinished tasks of "
                            "yours already; submit more when some finish",
                        ),
                    }
                )
                continue
            self._count_pending(client, +1)
            # each optional field read once (a tiny task's spec has none of the rarer ones)
            retries = spec.get("retries", 0)
            timeout: Any = spec.get("timeout")  # read with care: any type may come
            parts = spec.get("parts")
            deadline: Any = spec.get("deadline")
            resources = spec.get("resources")
            priority = spec.get("priority")
            self._seq += 1
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
                resources=_resources(resources) if resources is not None else {},
                timeout=float(timeout) if type(timeout) in (int, float) and timeout > 0 else 0.0,
                parts=parts if type(parts) is int and 0 < parts <= 65536 else 0,
                priority=_priority(priority) if priority is not None else 0,
                deadline=now + float(deadline) if type(deadline) in (int, float) and 0 < deadline < 1e9 else 0.0,
                ep=ep,
                seq=self._seq,
            )
            self.counters["submitted"] += 1
            failed_dep: OwnedTask | None = None
            for d in t.deps:
                # looked up before ``t`` is registered: a task naming itself would otherwise wait forever
                dep = self.tasks.get(base_id(d))
                if dep is None or (d != dep.id and not dep.parts and dep.state is TaskState.DONE):
                    failed_dep = _unknown_dep(d)
                    break
                if dep.state is TaskState.FAILED:
                    failed_dep = dep
                    break
                # registered even when the dependency is done: ``release`` must not forget its result while
                # this task still has to carry it to an executor
                dep.dependents.append(tid)
                if not dep.available:
                    t.missing += 1
                    if dep.state is TaskState.DONE and self._needed(dep):
                        out.extend(self._recompute(dep))
            t.key = fn_key_kept(t.fn, self._fn_keys)
            self.tasks[tid] = t
            if spec.get("ff") is True:
                self._keep(t)
            t.report_start = spec.get("rs") is True
            t.keep_on_device = spec.get("kd") is True
            if (dev := spec.get("dev")) in ("cpu", "any"):
                t.device = str(dev)
            impossible = self._unsatisfiable(t) if t.resources else ""
            if failed_dep is not None:
                out.extend(self._fail_from_dep(t, failed_dep))
            elif impossible:
                t.state = TaskState.FAILED
                t.error = _error("ResourceError", impossible, self.node_id)
                out.extend(self._finish(t))
            elif spec.get("cancel") is True:  # cancelled by its client before it could be sent
                out.extend(self._cancel_one(t, []))
            elif t.missing == 0:
                t.state = TaskState.READY
                self.ready.append(tid)
            if t.deadline and self.config.deadline_order != "fifo":
                self._by_deadline.append(tid)
        if redeliver:
            out.append(Deliver(client, redeliver))
        out.extend(self._pump())
        return _merge(out)

    def _reconcile(self, t: OwnedTask, seen: set[str]) -> None:
        """The client has waited long without any result for ``t``: the run it waits on may be one nobody will
        report (its RUN or DONE lost between owners and executors) -- ``t``'s, or, while ``t`` waits for inputs,
        an input's: a lineage recompute of a lost copy, which the client does not know of and never names (fault
        seed 147 with a shuffle: a reducer waited for ever on a map task whose recompute's RUN was lost). Each
        goes again as a new attempt; the first result wins. ``seen``: once per SUBMIT."""
        stack = [t]
        while stack:
            cur = stack.pop()
            if cur.id in seen:
                continue
            seen.add(cur.id)
            if cur.state is TaskState.WAITING:
                stack.extend(d for x in cur.deps if (d := self.tasks.get(base_id(x))) is not None
                             and d.state in (TaskState.DISPATCHED, TaskState.WAITING))  # fmt: skip
                continue
            if cur.state is not TaskState.DISPATCHED:
                continue
            self.counters["reconciled"] += 1
            if cur.node is not None:
                self._unassign(cur.id, cur.node)
            cur.node = None
            cur.attempt += 1
            self._deadlines.pop(cur.id, None)
            if self._requeue(cur, enqueue=False):
                self.ready.appendleft(cur.id)

    def _adopt_done(self, client: bytes, spec: M.SubmitTask, ep: int) -> bool:
        """A task the client saw finish under its former owner, resubmitted after a failover as an input of
        unfinished ones: it is taken as done -- with its value, or on the node that holds it -- and its spec kept
        as lineage, so it runs again only if that copy is lost. False when it cannot be (no value and no live
        holder): then it is submitted like any task."""
        raw = spec.get("done")
        if not isinstance(raw, dict):  # optional fields of a submit task are not checked by decode
            return False
        done: Mapping[str, object] = raw
        v, loc = done.get("v"), done.get("loc")
        locs = [n for n in loc if isinstance(n, str) and n in self.nodes] if isinstance(loc, list) else []
        if not isinstance(v, Payload) and not locs:
            return False
        size, parts = done.get("size"), done.get("parts")
        t = OwnedTask(id=spec["id"], client=client, fn=spec["fn"], args=spec["args"], deps=list(spec["deps"]), ep=ep)
        t.key = fn_key(t.fn)
        t.state, t.delivered, t.released = TaskState.DONE, True, spec.get("rel") is True
        if isinstance(v, Payload):
            t.result, t.size = v, v.nbytes
        else:
            t.locations = locs
            t.size = size if type(size) is int else 0
            t.parts = parts if type(parts) is int and 0 < parts <= 65536 else 0
        for d in t.deps:
            dep = self.tasks.get(base_id(d))
            if dep is not None:
                dep.dependents.append(t.id)
        self.tasks[t.id] = t
        self.counters["adopted_done"] += 1
        return True

    def register_put(self, client: bytes, obj_id: str, locations: list[str], size: int) -> None:
        """Data the client scattered into the mesh: a finished task with no lineage (hence the replica).

        Also how a client that failed over hands its puts to a new owner: holders this owner does not know as
        live are dropped, and a put none of whose holders is left fails as ``ObjectLost`` at once."""
        if obj_id in self.tasks:
            return
        t = OwnedTask(id=obj_id, client=client, fn=Payload(b""), args=Payload(b""), deps=[])
        t.state = TaskState.DONE
        t.locations = [n for n in locations if n in self.nodes]
        t.size = size
        t.delivered = True
        if not t.locations:
            t.state = TaskState.FAILED
            t.error = _lost(obj_id)
        self.tasks[obj_id] = t

    def add_location(self, obj_id: str, node_id: str) -> list[OwnerAction]:
        """``node_id`` says it stores ``obj_id`` (a put's copy): one more place to read it from, freed with the
        rest. A copy this owner would never free -- of an object it has forgotten, or on a node it counts as gone
        -- is freed at once (a replica that arrived after its put was acknowledged without it, and released)."""
        t = self.tasks.get(base_id(obj_id))
        if t is not None and t.state is TaskState.DONE and node_id in self.nodes:
            if node_id not in t.locations:
                t.locations.append(node_id)
            return []
        if t is None or node_id not in self.nodes:
            return [Free(node_id, [obj_id])]
        return []

    def lookup(self, obj_id: str) -> OwnedTask | None:
        return self.tasks.get(base_id(obj_id))

    # ---- fencing (tasks/epochs.py) ----------------------------------------------------------------------
    def heard(self, client: bytes, now: float) -> list[OwnerAction]:
        """Any message from ``client``: its lease is renewed; work held back while it was silent goes out."""
        if self.clients.heard(client, now):
            self._unhold(client)
            return self._pump()
        return []

    def detach(self, client: bytes, ep: int) -> list[OwnerAction]:
        """``client`` is at epoch ``ep`` under another owner (its DETACH, or an executor's FENCED): the work it
        submitted here under older epochs is abandoned -- nothing more of it is dispatched, its slots go to
        others, results still on their way are dropped as unknown. Its new owner has all of it."""
        self.clients.advance(client, ep)
        n = 0
        held: dict[str, list[str]] = {}  # their copies, freed now: kept a while for the new owner's CLAIM
        for t in list(self.tasks.values()):
            if t.client != client or t.ep >= ep or not t.fn.blob:  # put data is data, not work: kept
                continue
            if t.state is TaskState.DISPATCHED and t.node is not None:
                self._unassign(t.id, t.node)
            self._deadlines.pop(t.id, None)
            self._ranks.pop(t.id, None)
            if not t.delivered:
                t.delivered = True
                self._count_pending(client, -1)
                n += 1
            if t.state is TaskState.DONE:
                for node in t.locations:
                    held.setdefault(node, []).extend([f"{t.id}#{j}" for j in range(t.parts)] or [t.id])
            del self.tasks[t.id]
        self._held.pop(client, None)
        self.counters["abandoned"] += n
        return [*(Free(node, ids, hold=True) for node, ids in held.items()), *self._pump()]

    def _unhold(self, client: bytes) -> None:
        held = self._held.pop(client, None)
        self.clients.suspended.discard(client)
        if held:
            self.ready.extendleft(reversed(held))

    def tick(self, now: float) -> list[OwnerAction]:
        """Timeouts: an attempt running past its task's limit counts as a failure (retried while retries last).

        The executing thread cannot be interrupted (Python threads cannot be killed); its late result, if any,
        is dropped by task id. The client gets a clear error instead of waiting forever.
        """
        self.now = max(self.now, now)
        self.clients.expire(now)  # silent clients: their ready work is held back at the next dispatch pass
        out: list[OwnerAction] = []
        expired = [tid for tid, d in self._deadlines.items() if d <= now]
        if not expired:
            return out
        for tid in expired:
            del self._deadlines[tid]
            t = self.tasks.get(tid)
            if t is None or t.state is not TaskState.DISPATCHED:
                continue
            node = t.node or ""
            if t.node is not None:
                self._unassign(tid, t.node)
            t.node = None
            t.attempt += 1
            if t.retries > 0:
                t.retries -= 1
                self.counters["retried"] += 1
                self._requeue(t)
            else:
                t.state = TaskState.FAILED
                t.error = _error("TaskTimeout", f"did not finish within {t.timeout:g} s (on node {node[:8]})", node)
                out.extend(self._finish(t))
        out.extend(self._pump())
        return _merge(out)

    def _take_frees(self) -> list[Free]:
        if not self._frees:
            return []
        frees, self._frees = self._frees, {}
        return [Free(n, ids) for n, ids in frees.items()]

    def release_client(self, client: bytes) -> int:
        """The client closed, crashed or went silent past its memory lease: everything it held is released (puts
        and results alike; work still pending runs on and is forgotten when it ends). Returns how many."""
        mine = [t for t in self.tasks.values() if t.client == client and not t.released]
        self.release(t.id for t in mine)
        return len(mine)

    def release(self, ids: Iterable[str]) -> list[OwnerAction]:
        """The client no longer holds these futures: forget results nobody waits for; a large one that a running
        task is the last reader of goes from that task's node as soon as it succeeds (``_free_after_reader``)."""
        out: list[OwnerAction] = []
        for tid in ids:
            t = self.tasks.get(tid)
            if t is None:
                continue
            t.released = True
            self._maybe_forget(t)
            if t.dependents and tid in self.tasks:
                out.extend(self._free_after_reader(t))
        return out

    def cancel(self, client: bytes, ids: Iterable[object]) -> list[OwnerAction]:
        """The client cancels these tasks of its own: queued ones never run, dispatched ones are aborted on their
        node; each is delivered as failed (``meshaios.Cancelled``), and so are its dependents. Finished tasks,
        other clients' tasks and unknown ids are left alone. (``ids`` as the wire brought them, not checked: a
        compiled build would raise on a declared ``str`` that is not one.)"""
        out: list[OwnerAction] = []
        aborts: list[OwnerAction] = []
        for tid in ids:
            t = self.tasks.get(tid) if isinstance(tid, str) else None
            if t is None or t.client != client or t.state not in _PENDING:
                continue
            out.extend(self._cancel_one(t, aborts))
        out.extend(self._pump())
        return _merge(out + aborts)

    def cancel_client(self, client: bytes) -> list[OwnerAction]:
        """``client`` closed or went silent past its lease (the node decides, ``Node._release_client``): nobody can
        collect its results any more, so its unfinished tasks are cancelled -- except those it let go with
        ``fire_and_forget`` (``keep``), which run on, no longer held back for a silent client."""
        mine = [t for t in list(self.tasks.values()) if t.client == client]
        out = self.cancel(client, [t.id for t in mine if not t.kept])
        if any(t.kept for t in mine):
            self.clients.forget(client)
            self._unhold(client)
            out.extend(self._pump())
        return out

    def started(self, node_id: str, keys: Iterable[Any]) -> list[OwnerAction]:
        """``node_id`` began running these attempts ``[task id, attempt]``: the clients that asked are told. Stale
        ones (another attempt, another node, a task no longer owned) are ignored."""
        by_client: dict[bytes, list[str]] = {}
        for k in keys:
            if not (isinstance(k, list) and len(k) == 2 and isinstance(k[0], str) and type(k[1]) is int):
                continue
            t = self.tasks.get(k[0])
            if t is not None and t.report_start and t.attempt == k[1] and t.state is TaskState.DISPATCHED:
                by_client.setdefault(t.client, []).append(t.id)
        return [Started(c, ids) for c, ids in by_client.items()]

    def keep(self, client: bytes, ids: Iterable[Any]) -> None:
        """Fire and forget: these tasks of ``client``'s, and every task they depend on, run even if it leaves."""
        for tid in ids:
            t = self.tasks.get(tid) if isinstance(tid, str) else None
            if t is not None and t.client == client:
                self._keep(t)

    def _keep(self, t: OwnedTask) -> None:
        todo = [t]
        while todo:
            cur = todo.pop()
            if cur.kept:
                continue
            cur.kept = True
            todo.extend(d for d in (self.tasks.get(base_id(x)) for x in cur.deps) if d is not None and not d.kept)

    def _cancel_one(self, t: OwnedTask, aborts: list[OwnerAction]) -> list[OwnerAction]:
        if t.state is TaskState.DISPATCHED and t.node is not None:
            aborts.append(Abort(t.node, [(t.id, t.attempt)]))
            self._unassign(t.id, t.node)
        self._deadlines.pop(t.id, None)
        self._ranks.pop(t.id, None)
        t.state = TaskState.FAILED  # a READY one is skipped by the ready queue
        t.error = _error("Cancelled", f"task {t.id} was cancelled by its client")
        self.counters["cancelled"] += 1
        return self._finish(t)

    # ---- executors --------------------------------------------------------------------------------------
    def completed(
        self, node_id: str, results: Iterable[Mapping[str, Any]], now: float | None = None
    ) -> list[OwnerAction]:
        if now is not None:
            self.now = max(self.now, now)
        out: list[OwnerAction] = []
        for raw in results:
            r = cast(M.Result, raw)  # checked by decode (messages.RESULT), optional fields read with care
            dt = r.get("dt")
            if type(dt) is float and dt >= 0:
                self._mean_dt += 0.05 * (dt - self._mean_dt)
            tid = r["id"]
            t = self.tasks.get(tid)
            att = r.get("att")
            if (t is not None and t.state is TaskState.DISPATCHED and not r["ok"] and type(att) is int
                    and att < t.attempt):  # fmt: skip
                # a failure of an attempt older than the one dispatched now: inputs it could not fetch (copies
                # replaced since, or there for the current one), or an error of a run that was given up (its node
                # presumed dead, its client reconciled). It frees nothing, recomputes nothing, uses up no retry,
                # fails nothing, and leaves the current attempt where it runs (the same node, perhaps: still
                # watched there); the current attempt's own outcome decides
                self.counters["stale_reports"] += 1
                continue
            self._unassign(tid, node_id)
            if t is None or not (
                t.state is TaskState.DISPATCHED
                # re-queued after its node was presumed dead, but that node finished it after all: a result
                # is a result, and waiting for the re-run would only waste a slot
                or (t.state is TaskState.READY and r["ok"])
            ):
                self.counters["duplicates"] += 1
                if r["ok"] and "v" not in r and (
                        t is None or (t.state is TaskState.DONE and node_id not in t.locations)):  # fmt: skip
                    # an unwanted duplicate copy, a map output's parts included (kept under the ids of the copy
                    # counted: not where that one is), or a late copy of a task finished and forgotten here (its
                    # node was presumed dead and it ran elsewhere): nobody else would free it
                    parts = t.parts if t is not None else r.get("parts", 0)
                    parts = parts if type(parts) is int and 0 < parts <= 65536 else 0
                    self._frees.setdefault(node_id, []).extend([f"{tid}#{j}" for j in range(parts)] or [tid])
                continue
            if t.node is not None and t.node != node_id:
                # a stale attempt finished first (its node was presumed dead): its result is as good
                self._unassign(tid, t.node)
            lost = r.get("lost")
            if r["ok"]:
                self._learn(t, node_id, r)
                t.state = TaskState.DONE
                self._stamp += 1
                t.done_at = self._stamp
                t.node = node_id
                v = r.get("v")
                if isinstance(v, Payload):
                    t.result, t.locations, t.size = v, [], v.nbytes
                else:
                    t.result, t.locations = None, [node_id]
                    t.size = r["size"] if type(r.get("size")) is int else 0
                t.device_at = node_id if "v" not in r and isinstance(r.get("kdev"), str) else ""
                out.extend(self._finish(t))
            elif isinstance(lost, list) and lost and all(isinstance(x, str) for x in lost):
                # the executor could not fetch some inputs from any holder: recompute them, then run again
                self.counters["lost_inputs"] += 1
                t.node = None
                t.attempt += 1
                for obj in lost:
                    dep = self.tasks.get(base_id(obj))
                    # done again since this attempt was sent (recomputed on another reader's report): the copies it
                    # could not fetch were the old ones, gone already; the new ones stay, and it goes again to them
                    if dep is not None and dep.state is TaskState.DONE and dep.done_at <= t.sent:
                        if (dep.result is None and not dep.fn.blob and dep.unreachable < MAX_UNREACHABLE
                                and any(n in self.nodes for n in dep.locations)):  # fmt: skip
                            # a put, which cannot be recomputed, on a holder this owner counts live: that executor
                            # may have been cut off from it, or thought it dead; the task goes again
                            dep.unreachable += 1
                            continue
                        for node in dep.locations:  # whatever copy is left there is never read again
                            self._frees.setdefault(node, []).extend(
                                [f"{dep.id}#{j}" for j in range(dep.parts)] or [dep.id])
                        dep.locations.clear()
                        if dep.result is None:
                            self._became_unavailable(dep)
                            out.extend(self._recompute(dep))
                gone = self._failed_dep(t)
                if gone is not None:  # an input that cannot be recomputed (a lost put): fail now, naming it
                    out.extend(self._fail_from_dep(t, gone))
                else:
                    self._requeue(t)
            elif t.retries > 0 and not r.get("fatal", False):
                t.retries -= 1
                t.attempt += 1
                t.node = None
                self.counters["retried"] += 1
                self._requeue(t)
            else:
                t.state = TaskState.FAILED
                err = r.get("err")
                t.error = {**err} if isinstance(err, dict) else {"type": "Exception", "msg": ""}
                t.error.setdefault("node", node_id)
                out.extend(self._finish(t))
        out.extend(self._pump())
        return _merge(out)

    def moved(self, task_id: str, src: str, dst: str, attempt: int | None = None) -> list[OwnerAction]:
        """Node ``src`` handed our queued task to ``dst`` (work stealing; ``sched/stealing.py``).

        Why the owner must hear of it: it watches over a dispatched task through the node it believes runs it.
        The task's in-flight accounting follows it, so that the death of ``dst`` re-places it and the death of
        ``src`` does not, and ``src``'s window reopens for new work. Ignored when the task is no longer dispatched
        to ``src`` (finished already -- the thief's result can overtake this message --, re-placed, or a late or
        duplicated message), or when ``attempt`` is not the current one. A ``dst`` this owner does not know
        (dead already, or not heard of yet) could never be watched over: the task is re-placed at once, and
        should ``dst`` run it after all, its result is deduplicated by task id like any other late attempt."""
        t = self.tasks.get(task_id)
        if (
            t is None
            or t.state is not TaskState.DISPATCHED
            or t.node != src
            or src == dst
            or (attempt is not None and attempt != t.attempt)
        ):
            self.counters["moved_ignored"] += 1
            return []
        self._unassign(task_id, src)
        self.counters["moved"] += 1
        nl = self.nodes.get(dst)
        if nl is None:
            t.node = None
            t.attempt += 1
            self.counters["replaced"] += 1
            if self._requeue(t, enqueue=False):
                self.ready.appendleft(task_id)  # re-placed work goes first
            return self._pump()
        self.node_tasks.setdefault(dst, set()).add(task_id)
        nl.inflight += 1
        t.node = dst
        return self._pump()

    # ---- internals --------------------------------------------------------------------------------------
    def _finish(self, t: OwnedTask) -> list[OwnerAction]:
        """Deliver to the client, then wake (or fail) dependents. Iterative, so deep DAGs cannot overflow."""
        out: list[OwnerAction] = []
        stack = [t]
        while stack:
            cur = stack.pop()
            if not cur.delivered:
                cur.delivered = True
                if cur.deadline:
                    met = cur.state is TaskState.DONE and self.now <= cur.deadline
                    self.counters["deadline_met" if met else "deadline_missed"] += 1
                self._count_pending(cur.client, -1)
                self.counters["done" if cur.state is TaskState.DONE else "failed"] += 1
                out.append(Deliver(cur.client, [self._result_msg(cur)]))
            for did in cur.dependents:  # one entry per reference: a task may use two parts of one map output
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
                dep = self.tasks.get(base_id(dep_id))
                if dep is not None:
                    self._maybe_forget(dep)
            self._maybe_forget(cur)
        return out

    def _requeue(self, t: OwnedTask, enqueue: bool = True) -> bool:
        """Back to READY, or WAITING if some input is gone (then its producer is being recomputed)."""
        t.missing = 0
        for d in t.deps:
            dep = self.tasks.get(base_id(d))
            if dep is not None and not dep.available:
                t.missing += 1
        if t.missing:
            t.state = TaskState.WAITING
            return False
        t.state = TaskState.READY
        if enqueue:
            self.ready.append(t.id)
        return True

    def _failed_dep(self, t: OwnedTask) -> OwnedTask | None:
        for d in t.deps:
            dep = self.tasks.get(base_id(d))
            if dep is not None and dep.state is TaskState.FAILED:
                return dep
        return None

    def _became_unavailable(self, t: OwnedTask) -> None:
        """Keep ``missing`` exact for dependents that have not started yet."""
        for did in t.dependents:
            d = self.tasks.get(did)
            if d is None:
                continue
            if d.state is TaskState.READY:
                d.state = TaskState.WAITING  # the ready queue skips it lazily
                d.missing = 1
            elif d.state is TaskState.WAITING:
                d.missing += 1

    def _last_user_of(self, t: OwnedTask) -> list[str]:
        """The inputs ``t`` is the last reader of (``_last_reader``): its RUN names them (``fr``)."""
        tasks = self.tasks
        return [d for d in dict.fromkeys(t.deps) if (dp := tasks.get(d)) is not None and self._last_reader(dp) == t.id]

    def _last_reader(self, dep: OwnedTask) -> str | None:
        """The one task still to read ``dep``, if ``dep`` is a stored result of a task (not a put or parts) of at
        least ``ORDER_MIN_BYTES`` that its client has released: once that reader succeeds ``_maybe_forget`` frees
        ``dep``. Its executor is told so -- in the reader's RUN (``fr``), or by a ``Free`` with ``after`` when the
        release comes later -- and drops its copy the moment the reader succeeds, before its next task starts,
        rather than when this owner's ``Free`` arrives a round trip later, by which time the next task is writing
        its own result (the DAG benchmark: a 100 MiB input held 30-70 ms into the next task, one array more at a
        node's peak). Nothing else can want it: a released future cannot be named again, and a reader of another
        owner keeps it unreleased (the client defers the release, ``shards.release``). Should the reader run
        again after all (its node presumed dead), the input is recomputed from lineage like any lost one."""
        if (not dep.released or dep.state is not TaskState.DONE or dep.result is not None or dep.parts
                or not dep.fn.blob or dep.size < ORDER_MIN_BYTES):
            return None
        tasks = self.tasks
        reader: str | None = None
        for x in dep.dependents:
            c = tasks.get(x)
            if c is None or c.state not in _PENDING or x == reader:
                continue
            if reader is not None:
                return None
            reader = x
        return reader

    def _free_after_reader(self, dep: OwnedTask) -> list[OwnerAction]:
        """``dep`` was released while its last reader runs (or waits) on a node that holds it: that node drops it
        when the reader succeeds (``Free`` with ``after``)."""
        rid = self._last_reader(dep)
        c = self.tasks.get(rid) if rid is not None else None
        if c is None or c.state is not TaskState.DISPATCHED or c.node is None or c.node not in dep.locations:
            return []
        return [Free(c.node, [dep.id], after=c.id)]

    def _needed(self, t: OwnedTask) -> bool:
        if not t.released:
            return True
        return any((d := self.tasks.get(x)) is not None and d.state in _PENDING for x in t.dependents)

    def _recompute(self, t: OwnedTask) -> list[OwnerAction]:
        """Lineage: run a finished task again because its only copy was lost; its lost inputs first."""
        out: list[OwnerAction] = []
        stack = [t]
        while stack:
            cur = stack.pop()
            if cur.state is not TaskState.DONE or cur.available:
                continue
            if not cur.deps and not cur.fn.blob:  # put data has no lineage: both copies are gone
                cur.state = TaskState.FAILED
                cur.error = _lost(cur.id)
                out.extend(self._finish(cur))
                continue
            self.counters["recomputed"] += 1
            cur.recomputed += 1
            cur.attempt += 1
            cur.node = None
            cur.missing = 0
            for d in cur.deps:
                dep = self.tasks.get(base_id(d))
                if dep is None:
                    cur.state = TaskState.FAILED
                    cur.error = _error("LineageLost", f"input {d} was forgotten")
                    break
                if not dep.available:
                    cur.missing += 1
                    if dep.state is TaskState.DONE:
                        stack.append(dep)
            else:
                if cur.missing:
                    cur.state = TaskState.WAITING
                else:
                    cur.state = TaskState.READY
                    self.ready.append(cur.id)
                continue
            out.extend(self._finish(cur))
        return out

    def _unsatisfiable(self, t: OwnedTask) -> str:
        """Why no known node could ever run ``t`` ('' when some node can). Fails fast instead of waiting forever."""
        if not t.resources or not self.nodes:
            return ""
        if any(_fits(t.resources, n.meta) for n in self.nodes.values()):
            return ""
        asked = ", ".join(f"{k}={_fmt(k, v)}" for k, v in sorted(t.resources.items()))
        have = "; ".join(
            f"{nid[:8]}: " + ", ".join(f"{k}={_fmt(k, v)}" for k, v in sorted(_capacity(n.meta).items()))
            for nid, n in sorted(self.nodes.items())
        )
        return f"no node can satisfy resources {{{asked}}}; the mesh has: {have}"

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
        for node in t.locations:
            ids = [f"{t.id}#{j}" for j in range(t.parts)] if t.parts else [t.id]
            self._frees.setdefault(node, []).extend(ids)

    def _result_msg(self, t: OwnedTask) -> M.Result:
        if t.state is TaskState.DONE:
            if t.result is not None:
                return {"id": t.id, "ok": True, "v": t.result, "node": t.node or ""}
            return {"id": t.id, "ok": True, "size": t.size, "parts": t.parts, "node": t.node or ""}
        err = t.error if t.error is not None else _NO_ERROR
        return {"id": t.id, "ok": False, "err": err, "node": err.get("node", "")}

    def _dep_value(self, d: str) -> M.DepValue:
        dep = self.tasks.get(base_id(d))
        if dep is None:
            return None
        if dep.result is not None and d == dep.id:
            return dep.result
        size = dep.size // dep.parts if dep.parts else dep.size
        return {"loc": list(dep.locations), "size": size}

    def _pump(self) -> list[OwnerAction]:
        """Fill free windows from the ready queue, grouping per node so each node gets one RUN per pass.

        A policy sees only nodes with an open window, unless it asks for late binding: then it sees every node,
        and picking a full one means "wait for it" (the task is skipped this pass and the policy ``retract``s the
        placement it did not get). Without that, once the fast nodes' windows are full the next task *must* go to
        a slow node whatever its estimated finish -- at saturation every node holds a full window whatever the
        policy, and a long task started on a slow node at the end of a job is the job's straggler."""
        if not self.ready or not self.nodes:
            return []
        if self.self_load is not None and (me := self.nodes.get(self.node_id)) is not None:
            me.report(self.self_load(), self.now)
        if self.config.rank_order and self.policy.ranks:
            self._order_ready()
        batches: dict[str, list[M.RunTask]] = {}
        wps = self.config.window_per_slot
        late = self.config.late_binding and self.policy.late_binding
        # a large mesh: each decision samples its candidates (``sched/sampling.py``); a small one: every node
        sampled = len(self.nodes) > max(self.sampling.scan_below, self.sampling.d)
        open_nodes = [] if sampled else [n for n in self.nodes.values() if n.inflight < n.slots * wps]
        everyone = list(self.nodes.values()) if late and not sampled else open_nodes
        index = self._index
        skipped: list[str] = []
        deferred = 0
        suspended = self.clients.suspended
        urgent = self._urgent() if self._by_deadline else []
        hurried: set[str] = set()
        # what the policy saw and wrote back per choice goes with the task's Dispatch (dropped if it waits)
        placed: dict[str, dict[str, PlacementTask]] = {}
        while self.ready and (index.open_count if sampled else open_nodes):
            if urgent:
                tid = urgent.pop()
                hurried.add(tid)
                t = self.tasks.get(tid)
                if t is None or t.state is not TaskState.READY:
                    continue
                self.ready.appendleft(tid)  # taken ahead of its turn: its old entry is skipped as stale later
            tid = self.ready[0]
            t = self.tasks.get(tid)
            if t is None or t.state is not TaskState.READY:
                self.ready.popleft()
                continue
            if suspended and t.client in suspended:  # its client is silent: held until it speaks again
                self._held.setdefault(t.client, []).append(self.ready.popleft())
                self.counters["held"] += 1
                continue
            info = self._info(tid)
            note: PlacementTask = {**info, "id": tid, "resources": t.resources} if info else {
                "id": tid, "resources": t.resources}
            if sampled:
                candidates = self._sample(note, t.resources, late)
            else:
                pool = everyone if late else open_nodes
                candidates = pool if not t.resources else [n for n in pool if _fits(t.resources, n.meta)]
            if not candidates or (
                late and t.resources and not any(n.inflight < n.slots * wps for n in candidates)
            ):
                skipped.append(self.ready.popleft())  # waits for a node with the resources to free up
                continue
            target = self.policy.choose(note, candidates, self.rng)
            if target.inflight >= target.slots * wps:
                # late binding: its best node is busy; it waits for that node rather than go somewhere worse
                skipped.append(self.ready.popleft())
                self.policy.retract(target.node_id)
                deferred += 1
                if deferred >= self.config.max_deferred_per_pass:
                    break
                continue
            if t.deps and target.inflight >= target.slots and tid not in hurried and self._wait_for_consumer(
                    t, target.node_id, info):
                skipped.append(self.ready.popleft())  # reconsidered when the running task finishes
                self.counters["held_for_order"] += 1
                continue
            self.ready.popleft()
            self._ranks.pop(tid, None)
            t.state = TaskState.DISPATCHED
            t.node = target.node_id
            self._stamp += 1
            t.sent = self._stamp
            if t.timeout:
                self._deadlines[tid] = self.now + t.timeout
            target.inflight += 1
            self.node_tasks.setdefault(target.node_id, set()).add(tid)
            task: M.RunTask = {
                "id": tid,
                "att": t.attempt,
                "c": t.client.decode("latin-1"),  # the fence: executors refuse runs of a client's older epochs
                "ep": t.ep,
                "fn": t.fn,
                "args": t.args,
                "deps": {d: self._dep_value(d) for d in t.deps} if t.deps else {},
                "pure": t.pure,
            }
            if t.parts:
                task["parts"] = t.parts
            if t.resources:
                task["resources"] = t.resources
            if t.priority:
                task["prio"] = t.priority
            if t.report_start:
                task["rs"] = True
            if t.keep_on_device:
                task["kd"] = True
            if t.deps and (last := self._last_user_of(t)):
                task["fr"] = last  # the executor drops them when ``t`` succeeds, without waiting for ``Free``
            if tid in hurried:
                task["urg"] = True  # ahead of its turn for its deadline: first in its priority at the node too
            batches.setdefault(target.node_id, []).append(task)
            placed.setdefault(target.node_id, {})[tid] = note
            if note.get("placed_device") == "gpu":
                task["device"] = "gpu"  # EFT's device pick: the executor runs it there (tasks/execcore.py)
            if not sampled and target.inflight >= target.slots * wps:
                open_nodes.remove(target)
        if skipped:
            dirty = self.ready.dirty
            self.ready.extendleft(reversed(skipped))
            self.ready.dirty = dirty  # put back in the order they had: nothing to re-sort
        return [Dispatch(node, tasks, placed.get(node, {})) for node, tasks in batches.items()]

    def _wait_for_consumer(self, t: OwnedTask, node_id: str, info: PlacementTask | None) -> bool:
        """Graph order on a busy node (Dask's ``dask.order`` aims at the same): ``t`` reads at least
        ``ORDER_MIN_BYTES`` of stored inputs and would only queue on ``node_id`` behind this owner's tasks there;
        if one of those, when it finishes, makes ready a consumer submitted before ``t`` (of no lower priority),
        ``t`` waits so that the consumer goes first. Otherwise a node given two chains' first steps runs both
        before either chain's next step and holds both chains' intermediates at once (the DAG benchmark: one
        100 MiB array more per node at the peak). Only such data tasks pay the check (a walk over the node's
        window); tiny tasks never do."""
        held = 0
        for x in (info or {}).get("inputs", ()):
            held += x[1]
        if held < ORDER_MIN_BYTES:
            return False
        tasks = self.tasks
        for running in self.node_tasks.get(node_id, ()):
            r = tasks.get(running)
            if r is None:
                continue
            for d in r.dependents:
                c = tasks.get(d)
                if (c is not None and c.state is TaskState.WAITING and c.missing == 1 and c.seq < t.seq
                        and c.priority >= t.priority and c.client == t.client):
                    return True
        return False

    def _sample(self, task: PlacementTask, resources: dict[str, int], late: bool) -> list[NodeLoad]:
        """A large mesh: a few random nodes, the holders of the task's inputs, this node, the policy's
        favourites and, for a task that may use a GPU, a few GPU nodes (``sched.sampling.sample``), open ones only
        unless the policy binds late. A task that needs resources no sampled node has scans every node (rare: a
        resource few nodes offer)."""
        cfg = self.sampling
        extra = holder_ids(task, cfg.max_holders)
        extra.append(self.node_id)
        extra.extend(self.policy.prefer(task, self.rng))
        if task.get("device") in ("gpu", "any"):
            extra.extend(self._index.draw_gpu(self.rng, cfg.gpu))
        if not resources:
            return sample(self._index, self.nodes, self.rng, d=cfg.d, open_only=not late, extra=extra)

        def fits(n: NodeLoad) -> bool:
            return _fits(resources, n.meta)

        got = sample(self._index, self.nodes, self.rng, d=cfg.d, open_only=not late, extra=extra, fits=fits)
        if got:
            return got
        wps = self.config.window_per_slot
        return [n for n in self.nodes.values() if (late or n.inflight < n.slots * wps) and fits(n)]

    def _urgent(self) -> list[str]:
        """Ready tasks with a deadline to take ahead of their turn this pass, the most urgent last (popped first).

        "edf": all of them, earliest deadline first. "model": those whose slack -- deadline - now - predicted
        runtime -- is below the expected wait of a task dispatched now (the in-flight work per slot, at the mean
        run time), least slack first; a task whose predicted finish is past its deadline already is reported
        (``deadline_at_risk``) and hurried only after every task that can still make its deadline."""
        mode = self.config.deadline_order
        keep: list[str] = []
        cands: list[tuple[float, str]] = []
        ranks = self.policy.ranks
        wait = self._index.inflight / (self._index.slots or 1) * self._mean_dt
        for tid in self._by_deadline:
            t = self.tasks.get(tid)
            if t is None or t.state in (TaskState.DONE, TaskState.FAILED) or t.state is TaskState.DISPATCHED:
                continue  # gone, or placed: not ours to hurry any more
            keep.append(tid)
            if t.state is not TaskState.READY:
                continue
            if mode == "edf":  # no model: earliest deadline first, whatever the tasks' run times
                cands.append((t.deadline, tid))
                continue
            predicted = self._dl_predicted.get(tid)
            if predicted is None:  # once per task: a prediction costs a model evaluation
                predicted = self._dl_predicted[tid] = (self._rank(tid) if ranks else None) or 0.0
            predicted = predicted or self._mean_dt
            slack = t.deadline - self.now - predicted
            if slack < 0:
                if tid not in self._at_risk:
                    self._at_risk.add(tid)
                    self.counters["deadline_at_risk"] += 1
                cands.append((1e18 + t.deadline, tid))  # after every task that can still make its deadline
            elif slack <= wait + predicted:
                cands.append((slack, tid))
        if len(keep) < len(self._by_deadline):
            kept = set(keep)
            for tid in self._by_deadline:
                if tid not in kept:
                    self._dl_predicted.pop(tid, None)
                    self._at_risk.discard(tid)
        self._by_deadline = keep
        cands.sort(reverse=True)
        return [tid for _, tid in cands]

    def _rank(self, tid: str) -> float | None:
        """The policy's predicted seconds for task ``tid`` (rank order, deadlines); None if unknown."""
        info = self._info(tid)
        return None if info is None else self.policy.priority({**info, "id": tid})

    def _order_ready(self) -> None:
        """Sort the ready queue by ``rank_aging x submitted_at - predicted runtime`` (stable: FIFO among equals).

        The key does not change as time passes, so a task sorted once stays in place; keys are computed once per
        task and recomputed for all when the model has learned enough to change its mind (``rank_epoch``)."""
        epoch = self.policy.rank_epoch()
        if epoch != self._rank_epoch or len(self._ranks) > 4 * len(self.ready) + 1024:
            self._ranks.clear()  # stale predictions, or entries of tasks that left the queue without dispatch
            self._rank_epoch = epoch
        elif not self.ready.dirty:
            return
        ranks = self._ranks
        tasks = self.tasks
        aging = self.config.rank_aging

        def key(tid: str) -> float:
            k = ranks.get(tid)
            if k is None:
                t = tasks.get(tid)
                predicted = self._rank(tid) if t is not None else None
                k = ranks[tid] = (t.submitted_at * aging if t is not None else 0.0) - (predicted or 0.0)
            return k

        self.ready.sort(key)

    def _count_pending(self, client: bytes, delta: int) -> None:
        n = self._pending_by_client.get(client, 0) + delta
        if n > 0:
            self._pending_by_client[client] = n
        else:
            self._pending_by_client.pop(client, None)
            self.clients.forget(client)  # nothing of it left to hold back

    def _learn(self, t: OwnedTask, node_id: str, r: M.Result) -> None:
        dt = r.get("dt")
        if self.model is None or type(dt) is not float or dt < 0:
            return
        self._learned += 1
        if dt < 1e-3 and self._learned % 16:  # tiny tasks: learning costs more than they run; sample them
            return
        from meshaios.sched.model import task_features

        raw_dev = r.get("dev")
        dev = raw_dev if isinstance(raw_dev, str) else "cpu"
        nbytes = task_inputs(t.args.nbytes, t.deps, self.tasks.get).total
        self.model.learn_one(task_features(t.key, nbytes, dev, node=node_id), dt)

    def inputs(self, tid: str) -> TaskInputs | None:
        """Task ``tid``'s inline bytes and the inputs held on nodes (``sched.inputs.task_inputs``: the one place
        that computes them, for the live node and the simulator alike)."""
        t = self.tasks.get(tid)
        return None if t is None else task_inputs(t.args.nbytes, t.deps, self.tasks.get)

    def task_info(self, tid: str) -> PlacementTask | None:
        """What a placement policy wants to know about a task (the owner adds its ``id`` and ``resources``)."""
        t = self.tasks.get(tid)
        if t is None:
            return None
        if t.resources.get("gpu"):
            device = "gpu"
        elif t.device:
            device = t.device  # the submitter's choice: "any" lets EFT choose whatever this node's --gpu-choice
        elif self.gpu_capable is not None and self.gpu_capable(t.fn):
            device = "any"  # EFT chooses; its pick travels in the RUN (``device``)
        else:
            device = "cpu"
        return placement_info(t.args.nbytes, t.deps, self.tasks.get, t.key, device)

    def _unassign(self, tid: str, node_id: str) -> None:
        nt = self.node_tasks.get(node_id)
        if nt is not None and tid in nt:
            nt.remove(tid)
            nl = self.nodes.get(node_id)
            if nl is not None:
                nl.inflight -= 1

    @property
    def pending(self) -> int:
        """Unfinished tasks, in O(clients): status is asked for often, the task table can be huge."""
        return sum(self._pending_by_client.values())


def fn_key(fn: Payload) -> str:
    """A stable name for a function payload: the runtime model's kernel id."""
    return "fn:" + hashlib.blake2b(fn.blob, digest_size=8).hexdigest()


def fn_key_kept(fn: Payload, kept: dict[bytes, str], limit: int = 4096) -> str:
    """``fn_key``, remembered in ``kept`` for small payloads (up to ``limit`` of them, then it starts over): a map
    of tiny tasks sends the same few bytes thousands of times, and a dict lookup costs a tenth of the hash."""
    blob = fn.blob
    if len(blob) > 4096:
        return fn_key(fn)
    key = kept.get(blob)
    if key is None:
        if len(kept) >= limit:
            kept.clear()
        key = kept[blob] = fn_key(fn)
    return key


def base_id(obj_id: str) -> str:
    """``task#3`` (part 3 of a shuffle map output) belongs to task ``task``."""
    return obj_id.split("#", 1)[0]


_RESOURCE_KEYS = ("cpu", "gpu", "gpu_memory", "memory")


def _resources(raw: object) -> dict[str, int]:
    if not isinstance(raw, dict):
        return {}
    return {k: v for k, v in raw.items() if k in _RESOURCE_KEYS and type(v) is int and v > 0}


MAX_PRIORITY = 2**31 - 1
ORDER_MIN_BYTES = 1 << 20  # stored input bytes from which a task waits for graph order (``_wait_for_consumer``)


def _priority(raw: object) -> int:
    """A task's priority: an integer (clamped to 32 bits); anything else is the default, 0."""
    if type(raw) is not int:
        return 0
    return max(-MAX_PRIORITY, min(MAX_PRIORITY, raw))


def _without_actions(handler: Callable[[Owner, Any], object]) -> Callable[[Owner, Any, float], list[OwnerAction]]:
    def run(o: Owner, e: Any, now: float) -> list[OwnerAction]:
        handler(o, e)
        return []

    return run


def _frees_first(o: Owner, actions: list[OwnerAction]) -> list[OwnerAction]:
    """``actions`` with the frees they made due before them: a free is of a copy this owner has stopped counting,
    and an action beside it may store a new copy under the same ids on the same node (a task recomputed where its
    lost copy was): its RUN first, the FREE that followed it took the new copy."""
    frees = o._take_frees()
    return [*frees, *actions] if frees else actions


# ``Owner.handle``: one dict look-up per event (a ``match`` over seventeen classes cost ~1 us for the later ones)
_HANDLERS: dict[type, Callable[[Owner, Any, float], list[OwnerAction]]] = {
    # what a completion made unneeded is freed at once, not at the next tick: a consumer's input otherwise stays
    # held (up to a tick, 50 ms on a node) while the next task on its node already allocates its own result
    Completed: lambda o, e, now: _frees_first(o, o.completed(e.node_id, e.results, now)),
    SubmitTasks: lambda o, e, now: o.submit(e.client, e.tasks, now, e.ep),
    ClientHeard: lambda o, e, now: o.heard(e.client, now),
    LoadHeard: _without_actions(lambda o, e: o.node_load(e.node_id, e.reported, e.at)),
    OwnerTick: lambda o, e, now: _frees_first(o, o.tick(now)),
    TaskMoved: lambda o, e, now: o.moved(e.task_id, e.src, e.dst, e.attempt),
    RunStarted: lambda o, e, now: o.started(e.node_id, e.keys),
    NodeUp: lambda o, e, now: o.node_up(e.node_id, e.slots, e.meta),
    NodeDown: lambda o, e, now: o.node_down(e.node_id),
    Detach: lambda o, e, now: o.detach(e.client, e.ep),
    Cancel: lambda o, e, now: o.cancel(e.client, e.ids),
    CancelClient: lambda o, e, now: o.cancel_client(e.client),
    Release: lambda o, e, now: o.release(e.ids),
    ReleaseClient: _without_actions(lambda o, e: o.release_client(e.client)),
    Keep: _without_actions(lambda o, e: o.keep(e.client, e.ids)),
    RegisterPut: _without_actions(lambda o, e: o.register_put(e.client, e.obj_id, e.locations, e.size)),
    AddLocation: lambda o, e, now: o.add_location(e.obj_id, e.node_id),
}


def _capacity(meta: M.NodeMeta | None) -> dict[str, int]:
    res = meta.get("res") if meta is not None else None
    return _resources(res) if isinstance(res, dict) else {}


def _fits(want: dict[str, int], meta: M.NodeMeta | None) -> bool:
    cap = _capacity(meta)
    return all(cap.get(k, 0) >= v for k, v in want.items())


def _fmt(key: str, value: int) -> str:
    if "memory" in key:
        return f"{value / 2**30:.1f}GiB"
    return str(value)


def _error(kind: str, msg: str, node: str | None = None) -> M.ErrorInfo:
    """A task error the mesh itself raised (no remote traceback): ``meshaios.<kind>`` on the client's side."""
    err: M.ErrorInfo = {"type": f"meshaios.{kind}", "msg": msg, "tb": ""}
    if node is not None:
        err["node"] = node
    return err


_NO_ERROR: M.ErrorInfo = {"type": "Exception", "msg": ""}  # a failure that came without an error (never expected)


def _lost(obj_id: str) -> M.ErrorInfo:
    """A put whose every holder died: it has no lineage, so its readers fail at once, naming it."""
    err = _error("ObjectLost", f"every node holding {obj_id} died, and a put cannot be recomputed")
    err["obj"] = obj_id
    return err


def _dep_error(dep: OwnedTask) -> M.ErrorInfo:
    return dep_error(dep.id, dep.error)


def dep_error(dep_id: str, error: M.ErrorInfo | None) -> M.ErrorInfo:
    """The error of a task whose input ``dep_id`` failed with ``error`` (a client holding a task for inputs of
    other owners says the same: meshaios/shards.py)."""
    err = error if error is not None else _NO_ERROR
    out: M.ErrorInfo = {
        "type": err["type"],
        "msg": f"dependency {dep_id} failed: {err['msg']}",
        "tb": err.get("tb", ""),
        "node": err.get("node", ""),
    }
    if "obj" in err:
        out["obj"] = err["obj"]
    if "exc" in err:  # the original exception (pickled, on a mesh with a token): the client's cause
        out["exc"] = err["exc"]
    return out


def _unknown_dep(dep_id: str) -> OwnedTask:
    stub = OwnedTask(id=dep_id, client=b"", fn=Payload(b""), args=Payload(b""), deps=[])
    stub.state = TaskState.FAILED
    stub.error = _error("UnknownDependency", f"task {dep_id} is not known to this node")
    return stub


def _merge(actions: list[OwnerAction]) -> list[OwnerAction]:
    """One Deliver per client and one Dispatch per node: fewer, larger messages (aborts pass through, last)."""
    if len(actions) < 2:  # one lone task's: nothing to merge
        return actions
    delivers: dict[bytes, list[M.Result]] = {}
    dispatches: dict[str, list[M.RunTask]] = {}
    placed: dict[str, dict[str, PlacementTask]] = {}
    aborts: list[OwnerAction] = []
    for a in actions:
        if isinstance(a, Deliver):
            delivers.setdefault(a.client, []).extend(a.results)
        elif isinstance(a, Dispatch):
            dispatches.setdefault(a.node, []).extend(a.tasks)
            if a.placed:
                placed.setdefault(a.node, {}).update(a.placed)
        else:
            aborts.append(a)
    return (
        [Deliver(c, r) for c, r in delivers.items()]
        + [Dispatch(n, t, placed.get(n, {})) for n, t in dispatches.items()]
        + aborts
    )
