"""Work stealing: a node's local run queue, and the thief/victim protocol between nodes, as pure state machines.

Why stealing at all when the owner places by earliest finish time: placement happens early, with estimates
(a kernel's first runs are guesses) and with a stale picture of other owners' work; stealing repairs what
placement got wrong, late, when the truth is known -- a node ran dry while another still has a queue.

Why this shape: the stealing complaints against Dask (``../shared/anchors.md``) are tasks bouncing between two
workers (distributed#9000), steals that cost more than they save (#9262), absurd request storms (#5390) and
tasks running twice. Each has a rule here:

* **only queued tasks move, never running ones**: ``WorkQueue`` knows which is which; a task being offered is
  *reserved* (the victim will not start it) until the thief's answer or a timeout;
* **cost gate**: the victim gives task ``t`` only if
  ``finish_here(t) - finish_there(t) > transfer(t) + margin_s + margin_frac * runtime_there(t)``, with
  ``finish_here`` = the predicted wait for ``t``'s place in the queue plus its runtime here, and ``finish_there``
  = a handshake plus the runtime on the thief (its declared speed, sent in the request);
* **no ping-pong**: a task carries its ``path`` (the nodes it was stolen from); a task is stolen at most
  ``max_hops`` times (default once) and never offered to a node it has been on;
* **no storms**: one request outstanding per thief; a victim that refuses is not asked again for a cooldown that
  doubles with each refusal; thieves only ask peers whose gossiped backlog is worth a steal;
* **never twice**: a three-message hand-over. ``steal_req`` (thief) -> ``steal_offer`` (victim reserves the
  tasks) -> ``steal_accept`` (thief names the ones it takes) -> ``steal_commit`` (victim removes them from its
  queue for good and sends their specs) -> ``steal_ack``. The victim gives a task away only in answer to an
  accept that matches a live reservation, and runs it itself only if the reservation lapsed first; the thief
  runs only what a commit carries (deduplicated by task id and attempt). The commit is retransmitted until
  acknowledged, so a lost message delays a task but never loses or duplicates it.

The engine reads its own ``WorkQueue`` and a ``LoadView``; the node executes the returned actions (send a
message, start queued tasks, tell an owner where its task went).
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeAlias, TypedDict, cast

from meshaios.sched.loadview import LoadView
from meshaios.wire import messages as M

__all__ = [
    "Moved",
    "QueuedTask",
    "Send",
    "StealConfig",
    "StealEngine",
    "TState",
    "TasksArrived",
    "WorkQueue",
]

KINDS = M.STEAL_KINDS


class TState(StrEnum):
    QUEUED = "queued"
    OFFERED = "offered"  # reserved for a thief's answer: not started here, not offered to anyone else
    RUNNING = "running"


@dataclass(slots=True)
class QueuedTask:
    """A task in a node's local queue. ``spec`` is the opaque RUN dict (fn, args, deps) handed over on a steal;
    ``predicted`` is the runtime on this node's ``device`` as this node's model sees it."""

    id: str
    att: int
    owner: str
    kernel: str = "?"
    device: str = "cpu"
    devices: tuple[str, ...] = ("cpu",)  # device kinds the task may use
    nbytes: int = 0  # bytes that move with the task if it is stolen
    predicted: float = 0.5
    path: list[str] = field(default_factory=list)  # nodes it was stolen from, oldest first
    spec: Any = None
    state: TState = TState.QUEUED
    rid: tuple[str, int] | None = None  # (thief, request id) while OFFERED
    enqueued: float = 0.0
    # may not move: its inputs were fetched to this node already, or it asks for resources a thief may lack
    pinned: bool = False
    priority: int = 0  # higher starts first; thieves are offered the lowest first
    urgent: bool = False  # its owner hurried it for its deadline: first within its priority here

    @property
    def key(self) -> tuple[str, int]:
        return (self.id, self.att)

    def wire(self, device: str | None = None, spec: bool = False) -> M.StealTask:
        """As the steal messages carry it (``messages.StealTask``): ``device`` the kind it would use on the thief;
        with its ``spec`` in a commit."""
        return M.StealTask(self.id, self.att, self.owner, self.kernel, cast(M.Device, device or self.device),
                           cast(list[M.Device], list(self.devices)), self.nbytes, self.predicted, list(self.path),
                           self.spec if spec else None)


class _PrioFifo:
    """Queued tasks of one device kind: highest ``priority`` first, FIFO within a priority. Iterates (and so
    starts, and predicts start times) in that order; a thief's victim walks it from the back, lowest first."""

    __slots__ = ("_levels", "_n", "_prios")

    def __init__(self) -> None:
        self._levels: dict[int, deque[QueuedTask]] = {}
        self._prios: list[int] = []  # highest first
        self._n = 0

    def _level(self, priority: int) -> deque[QueuedTask]:
        q = self._levels.get(priority)
        if q is None:
            q = self._levels[priority] = deque()
            self._prios.append(priority)
            self._prios.sort(reverse=True)
        return q

    def append(self, t: QueuedTask) -> None:
        q = self._level(t.priority)
        if t.urgent:
            q.appendleft(t)
        else:
            q.append(t)
        self._n += 1

    def put_back(self, tasks: list[QueuedTask]) -> None:
        """``tasks``, in order, at the head of their priority level, behind the urgent tasks there."""
        at: dict[int, int] = {}  # priority -> where the next one of that level goes
        for t in tasks:
            q = self._level(t.priority)
            if t.priority not in at:
                i = 0
                while i < len(q) and q[i].urgent:
                    i += 1
                at[t.priority] = i
            q.insert(at[t.priority], t)
            at[t.priority] += 1
            self._n += 1

    def remove(self, t: QueuedTask) -> None:
        q = self._levels[t.priority]
        q.remove(t)
        self._n -= 1
        if not q:
            del self._levels[t.priority]
            self._prios.remove(t.priority)

    def __iter__(self) -> Iterator[QueuedTask]:
        if len(self._prios) == 1:
            return iter(self._levels[self._prios[0]])
        return (t for p in list(self._prios) for t in self._levels[p])

    def __len__(self) -> int:
        return self._n

    def __bool__(self) -> bool:
        return self._n > 0


class WorkQueue:
    """A node's tasks per device kind, highest priority first and FIFO within one, with slots. The I/O shell
    starts what ``start_next`` returns and calls ``finish`` when it is done; ``backlog`` is what the node
    gossips as its load."""

    def __init__(self, slots: dict[str, int]) -> None:
        self.slots = {d: max(0, int(n)) for d, n in slots.items()}
        self._tasks: dict[tuple[str, int], QueuedTask] = {}
        self._fifo: dict[str, _PrioFifo] = {d: _PrioFifo() for d in self.slots}
        self._running: dict[str, int] = dict.fromkeys(self.slots, 0)
        self._run_started: dict[tuple[str, int], float] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._tasks

    def __len__(self) -> int:
        return len(self._tasks)

    def get(self, key: tuple[str, int]) -> QueuedTask | None:
        return self._tasks.get(key)

    def push(self, task: QueuedTask) -> bool:
        """Queue a task; False (and nothing changes) if this attempt is already here, or no slot kind fits."""
        if task.key in self._tasks:
            return False
        if task.device not in self._fifo or self.slots.get(task.device, 0) <= 0:
            fits = [d for d in task.devices if self.slots.get(d, 0) > 0]
            if not fits:
                return False
            task.device = fits[0]
        task.state = TState.QUEUED
        task.rid = None
        self._tasks[task.key] = task
        self._fifo[task.device].append(task)
        return True

    def free(self, device: str) -> int:
        return self.slots.get(device, 0) - self._running.get(device, 0)

    def start_next(self, device: str, now: float = 0.0, extra: int = 0) -> QueuedTask | None:
        """The first QUEUED task of ``device`` (highest priority, then oldest) if a slot is free: it becomes
        RUNNING (and unstealable).

        ``extra`` lets up to that many more tasks than slots start: a prefetch, handed to the workers' own queue so
        that a worker never waits for the event loop between two tiny tasks. They count as running (``free``
        goes negative, so the node is not idle), and cannot be stolen."""
        if self.free(device) + extra <= 0:
            return None
        fifo = self._fifo.get(device)
        if not fifo:
            return None
        for t in fifo:
            if t.state is TState.QUEUED:
                fifo.remove(t)
                t.state = TState.RUNNING
                self._running[device] += 1
                self._run_started[t.key] = now
                return t
        return None

    def unstart(self, keys: list[tuple[str, int]]) -> list[QueuedTask]:
        """RUNNING tasks that never really started (prefetches taken back from the workers) are QUEUED again, in
        the given order, ahead of the rest of their priority but behind its urgent tasks: stealable and
        reorderable as if they had never left the queue. Returns those put back."""
        back = []
        for key in keys:
            t = self._tasks.get(key)
            if t is None or t.state is not TState.RUNNING:
                continue
            self._running[t.device] -= 1
            self._run_started.pop(key, None)
            t.state = TState.QUEUED
            back.append(t)
        for dev in {t.device for t in back}:
            self._fifo[dev].put_back([t for t in back if t.device == dev])
        return back

    def peek(self, device: str) -> QueuedTask | None:
        """The task ``start_next`` would start next (slots aside), without starting it. O(1) unless the head of
        the queue is reserved for a thief."""
        for t in self._fifo.get(device, ()):
            if t.state is TState.QUEUED:
                return t
        return None

    def finish(self, key: tuple[str, int]) -> QueuedTask | None:
        t = self._tasks.pop(key, None)
        if t is None:
            return None
        if t.state is TState.RUNNING:
            self._running[t.device] -= 1
            self._run_started.pop(key, None)
        else:
            self._fifo[t.device].remove(t)
        return t

    def take(self, key: tuple[str, int]) -> QueuedTask | None:
        """Remove a QUEUED or OFFERED task (it was handed to a thief). A RUNNING one stays: None."""
        t = self._tasks.get(key)
        if t is None or t.state is TState.RUNNING:
            return None
        return self.finish(key)

    def queued(self, device: str | None = None) -> Iterator[QueuedTask]:
        """Waiting tasks (QUEUED or OFFERED), in the order they would start: highest priority, then oldest first."""
        for d in [device] if device is not None else list(self._fifo):
            yield from self._fifo.get(d, ())

    def n_queued(self, device: str | None = None) -> int:
        if device is not None:
            return len(self._fifo.get(device, ()))
        return sum(len(f) for f in self._fifo.values())

    def n_running(self, device: str | None = None) -> int:
        if device is not None:
            return self._running.get(device, 0)
        return sum(self._running.values())

    def backlog(self, device: str, now: float = 0.0) -> float:
        """Predicted seconds of work on ``device``: everything queued, plus what is left of the running tasks."""
        return sum(t.predicted for t in self._fifo.get(device, ())) + sum(self.running_left(device, now))

    def running_left(self, device: str, now: float) -> list[float]:
        """What is left of each running task on ``device`` (see ``time_left``)."""
        return [time_left(self._tasks[k].predicted, now - s) for k, s in self._run_started.items()
                if self._tasks[k].device == device]


def time_left(predicted: float, elapsed: float) -> float:
    """Seconds a task still runs, ``elapsed`` s after it started. Never less than half of ``elapsed``: a task far
    past its prediction (an unknown kernel priced at the prior, a stuck input, a gate) is likely to run on about
    as long again. Counting it as finishing "now" would keep the tasks queued behind it from ever being stolen:
    the thief would seem to gain nothing."""
    return max(predicted - elapsed, 0.5 * elapsed, 0.0)


@dataclass(frozen=True)
class StealConfig:
    margin_s: float = 0.1  # a steal must win at least this much ...
    margin_frac: float = 0.5  # ... plus this fraction of the task's runtime on the thief (estimates are rough)
    max_hops: int = 1  # a task is stolen at most this often
    max_batch: int = 16  # tasks per steal at most
    batch_per_slot: int = 1  # ... and at most this many per free slot of the thief
    offer_timeout: float = 0.5  # a reservation lapses after this: the victim may run the task again
    request_timeout: float = 1.0  # a thief that hears nothing gives up and may ask someone else
    commit_retry: float = 0.25  # the victim resends an unacknowledged commit after this, then twice as long ...
    commit_retry_max: float = 4.0  # ... each time, up to this (a commit carries the tasks' specs: inline bytes)
    commit_give_up: float = 30.0  # ... for this long (then the thief is presumed dead; the owner re-places)
    cooldown: float = 0.25  # after a refusal, that victim is not asked again for this long, doubling ...
    max_cooldown: float = 8.0  # ... up to this
    min_wait_s: float = 0.05  # victims whose gossiped wait is below this are not worth a request
    bandwidth: float = 125e6  # bytes/s assumed for the hand-over when the view knows no better
    latency: float = 0.001  # one-way message latency assumed in the gain estimate
    retention: float = 60.0  # how long a thief remembers commits it has run (dedupe of retransmissions)


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``msg`` to node ``to`` (the node wraps it in its own envelope)."""

    to: str
    msg: M.StealMsg


def _send(to: str, msg: M.StealMsg) -> Send:
    return Send(to, msg)


@dataclass(frozen=True, slots=True)
class TasksArrived:
    """Thief side: stolen tasks are now in the local queue; start what fits."""

    tasks: list[QueuedTask]


@dataclass(frozen=True, slots=True)
class Moved:
    """Victim side: tell ``owner`` that its task now lives on ``to`` (so that if ``to`` dies, the owner re-places
    it instead of waiting for us)."""

    owner: str
    task_id: str
    att: int
    src: str
    to: str
    here: float = 0.0  # the victim's predicted seconds to finish it itself, when the gate passed it
    there: float = 0.0  # ... and on the thief, transfer included


Action: TypeAlias = Send | TasksArrived | Moved

class ThiefInfo(TypedDict, total=False):
    """What a steal request says of its thief (``StealReq``'s fields), as the cost gate reads them; an estimator is
    given ``speed`` only."""

    free: dict[M.Device, int] | None
    speed: dict[M.Device, float] | None
    bw: float | None


# a node's estimate of how long ``task`` would run on a thief with ``info`` (its request), on device kind ``d``
Estimator = Callable[[QueuedTask, ThiefInfo, str], float]


@dataclass
class _Offer:
    thief: str
    rid: int
    keys: list[tuple[str, int]]
    deadline: float
    devices: dict[tuple[str, int], str] = field(default_factory=dict)  # the device kind it would use there
    gate: dict[tuple[str, int], tuple[float, float]] = field(default_factory=dict)  # (here, there) predicted


@dataclass
class _Handed:
    thief: str
    rid: int
    tasks: list[list[object]]  # what the commit carries (StealTasks with their specs)
    next_retry: float
    give_up: float
    interval: float = 0.0  # the wait before the next retransmission but one (0: ``commit_retry`` not yet doubled)


@dataclass
class _Request:
    victim: str
    rid: int
    deadline: float
    accepted: bool = False


class StealEngine:
    """One node's stealing logic, both roles. Feed it ``tick`` (timers and "am I idle?"), ``handle`` (steal
    messages) and ``peer_down``; carry out the actions."""

    def __init__(
        self,
        node_id: str,
        queue: WorkQueue,
        config: StealConfig | None = None,
        rng: random.Random | None = None,
        speed: dict[str, float] | None = None,
        estimate: Estimator | None = None,
    ) -> None:
        self.node_id = node_id
        self.queue = queue
        self.config = config or StealConfig()
        self.rng = rng or random.Random(0)
        self.speed = dict(speed or {})
        self._estimate = estimate or self._default_estimate
        # victim side: what this node knows of its link to a thief (measured, or /dev/shm for a node of its host),
        # preferred to the ingress the thief reports for itself; None where it knows nothing better
        self.link_bandwidth: Callable[[str], float | None] | None = None
        # a restarted node must not reuse request ids its peers still remember: start from a random base
        self._rid = self.rng.randrange(1 << 40)
        self._request: _Request | None = None
        self._cool: dict[str, tuple[float, float]] = {}  # victim -> (until, current cooldown)
        self._offers: dict[tuple[str, int], _Offer] = {}  # (thief, rid) -> reservation
        self._handed: dict[tuple[str, int], _Handed] = {}  # (thief, rid) -> unacknowledged commit
        self._done: dict[tuple[str, int], float] = {}  # thief side: (victim, rid) of commits run -> when
        self._got: dict[tuple[str, int], float] = {}  # thief side: task keys received by commit -> when
        self._answered: dict[tuple[str, int], float] = {}  # victim side: (thief, rid) of requests answered
        self._done_order: deque[tuple[float, str, tuple[str, int]]] = deque()  # (when, which table, key)
        self.counters = {
            "requests": 0, "refused": 0, "offered": 0, "stolen": 0, "given": 0, "lapsed": 0,
            "late_accept": 0, "dup_commit": 0, "retransmits": 0,
        }

    # ---- inputs -------------------------------------------------------------------------------------------

    def tick(self, now: float, view: LoadView | None = None) -> list[Action]:
        """Timers (lapsed reservations, commit retransmits, request timeouts), then, if this node has run dry,
        one steal request to the peer with the largest predicted wait."""
        out: list[Action] = []
        cfg = self.config
        # each step looked at only when it has something to look at: an idle node ticks after every task it
        # finishes (``ExecCore._after_finish``), and on a mesh with nothing to steal all of them are empty
        if self._offers:
            for key, off in list(self._offers.items()):
                if now >= off.deadline:
                    self._release(off)
                    self.counters["lapsed"] += len(off.keys)
                    del self._offers[key]
        if self._handed:
            for key, h in list(self._handed.items()):
                if now >= h.give_up:
                    del self._handed[key]
                elif now >= h.next_retry:
                    # backing off: a commit's specs may carry megabytes of inline arguments, and a slow or busy
                    # link delivers each copy late; at a fixed 0.25 s a 40 MB commit on a 1 Gb/s link was sent
                    # 120 times, the copies queued behind each other for a minute, and the last reached the thief
                    # after it had forgotten the first: the task ran twice (meshaios sim --workload mapreduce)
                    h.interval = min(cfg.commit_retry_max, 2 * (h.interval or cfg.commit_retry))
                    h.next_retry = now + h.interval
                    self.counters["retransmits"] += 1
                    out.append(_commit(h.thief, h.rid, h.tasks))
        order = self._done_order
        if order and now - order[0][0] > cfg.retention:
            tables = {"done": self._done, "got": self._got, "answered": self._answered}
            while order and now - order[0][0] > cfg.retention:
                when, table, k = order.popleft()
                if tables[table].get(k) == when:  # not remembered again since (a duplicate commit renews it)
                    del tables[table][k]
        req = self._request
        if req is not None and now >= req.deadline:
            self._cooldown(req.victim, now)
            self._request = None
        if self._request is None and view is not None and self.idle():
            out.extend(self._ask(now, view))
        return out

    def idle(self) -> bool:
        """A free slot and nothing queued for it: this node would sit idle until new work arrives."""
        return any(self.queue.free(d) > 0 and self.queue.n_queued(d) == 0 for d, n in self.queue.slots.items() if n)

    def handle(self, src: str, raw: Mapping[str, Any], now: float) -> list[Action]:
        """A steal message from node ``src``: checked in full by ``decode`` (``messages.check_steal``) when it came
        off the wire; the handlers still read its lists with care."""
        k = raw.get("k")
        rid = raw.get("rid")
        if k not in KINDS or type(rid) is not int:
            return []
        msg = cast(M.StealMsg, raw)
        if msg["k"] == "steal_req":
            return self._on_request(src, rid, msg, now)
        if msg["k"] == "steal_offer":
            return self._on_offer(src, rid, msg, now)
        if msg["k"] == "steal_accept":
            return self._on_accept(src, rid, msg, now)
        if msg["k"] == "steal_commit":
            return self._on_commit(src, rid, msg, now)
        self._handed.pop((src, rid), None)  # steal_ack
        return []

    def peer_down(self, node_id: str, now: float) -> list[Action]:
        """``node_id`` is dead: drop reservations for it (back to our queue), stop resending commits to it (its
        owners re-place those tasks), and stop waiting for it as a victim."""
        for key, off in list(self._offers.items()):
            if off.thief == node_id:
                self._release(off)
                del self._offers[key]
        for key in [k for k, h in self._handed.items() if h.thief == node_id]:
            del self._handed[key]
        if self._request is not None and self._request.victim == node_id:
            self._request = None
        self._cool.pop(node_id, None)
        return []

    # ---- thief --------------------------------------------------------------------------------------------

    def _ask(self, now: float, view: LoadView) -> list[Action]:
        if len(view) <= (self.node_id in view):  # no peer in the view (a lone node): nobody to ask, nothing changes
            return []
        cooling = {v for v, (until, _) in self._cool.items() if until > now}
        cooling.add(self.node_id)
        idle = [d for d in self.queue.slots if self.queue.free(d) > 0 and self.queue.n_queued(d) == 0]
        for wait, victim in view.busiest(now, exclude=cooling, limit=1, devices=idle):
            if wait < self.config.min_wait_s:
                return []
            self._rid += 1
            self._request = _Request(victim, self._rid, now + self.config.request_timeout)
            self.counters["requests"] += 1
            free = {d: self.queue.free(d) for d in self.queue.slots if self.queue.free(d) > 0}
            me = view.get(self.node_id, now)
            msg: M.StealReq = {"k": "steal_req", "rid": self._rid, "free": cast(dict[M.Device, int], free),
                               "speed": {cast(M.Device, d): self.speed.get(d, 1.0) for d in self.queue.slots}}
            if me is not None and me.bandwidth:
                msg["bw"] = me.bandwidth
            return [_send(victim, msg)]
        return []

    def _on_offer(self, src: str, rid: int, msg: M.StealOffer, now: float) -> list[Action]:
        req = self._request
        tasks = msg.get("tasks")
        if req is None or req.victim != src or req.rid != rid or req.accepted or not isinstance(tasks, list):
            # not what we asked for (late, duplicated): ignore; the victim's reservation lapses by itself
            return []
        if not tasks:
            self.counters["refused"] += 1
            self._cooldown(src, now)
            self._request = None
            return []
        # take all that we can run, unless work arrived meanwhile and no slot is free any more
        take: list[M.TaskKey] = []
        if any(self.queue.free(d) > 0 for d in self.queue.slots):
            for raw in tasks[: self.config.max_batch]:
                if not (isinstance(raw, list) and len(raw) == M.STEAL_HEADER_LEN):
                    continue
                h = M.StealTask(*raw)
                if isinstance(h.id, str) and type(h.att) is int and self.queue.slots.get(str(h.device), 0) > 0:
                    take.append((h.id, h.att))
        req.accepted = True
        req.deadline = now + self.config.request_timeout
        self._cool.pop(src, None)
        return [_send(src, {"k": "steal_accept", "rid": rid, "ids": take})]

    def _on_commit(self, src: str, rid: int, msg: M.StealCommit, now: float) -> list[Action]:
        """Always honoured, even late or unasked-for: the victim has given these tasks away for good, so
        ignoring a commit would lose them. Deduplicated, so a retransmission never runs a task twice."""
        out: list[Action] = [_send(src, {"k": "steal_ack", "rid": rid})]
        req = self._request
        if req is not None and req.victim == src and req.rid == rid:
            self._request = None
        if (src, rid) in self._done:
            self.counters["dup_commit"] += 1
            # remembered for ``retention`` from the last copy seen, not the first: copies still on their way
            # (a victim retransmits for ``commit_give_up``) must find it remembered
            self._remember("done", self._done, (src, rid), now)
            return out
        self._remember("done", self._done, (src, rid), now)
        arrived: list[QueuedTask] = []
        tasks = msg.get("tasks")
        for item in tasks if isinstance(tasks, list) else []:
            t = _from_wire(item, now)
            # deduplicated by task (id, attempt), not only by request: whatever path a copy of a commit took,
            # a task this node was given once is run once
            if t is None or t.key in self.queue or t.key in self._got:
                continue
            self._remember("got", self._got, t.key, now)
            t.path.append(src)
            if self.queue.push(t):
                arrived.append(t)
        self.counters["stolen"] += len(arrived)
        if arrived:
            out.append(TasksArrived(arrived))
        return out

    def _remember(self, table: str, d: dict[tuple[str, int], float], key: tuple[str, int], now: float) -> None:
        d[key] = now
        self._done_order.append((now, table, key))

    def _cooldown(self, victim: str, now: float) -> None:
        _, cur = self._cool.get(victim, (0.0, self.config.cooldown / 2))
        cur = min(self.config.max_cooldown, cur * 2)
        self._cool[victim] = (now + cur, cur)
        if len(self._cool) > 4096:
            for v in [v for v, (until, _) in self._cool.items() if until <= now]:
                del self._cool[v]

    # ---- victim -------------------------------------------------------------------------------------------

    def _on_request(self, thief: str, rid: int, msg: M.StealReq, now: float) -> list[Action]:
        if (thief, rid) in self._answered:
            # a duplicated or stale request: answering it again could re-offer under a request id whose commit
            # the thief has already seen
            return []
        self._remember("answered", self._answered, (thief, rid), now)
        info: ThiefInfo = {"free": msg.get("free"), "speed": msg.get("speed"), "bw": msg.get("bw")}
        chosen = self.select(thief, info, now)
        headers: list[list[object]] = []
        if chosen:
            off = _Offer(thief, rid, [], now + self.config.offer_timeout)
            for t, dev, here, there in chosen:
                t.state = TState.OFFERED
                t.rid = (thief, rid)
                off.keys.append(t.key)
                off.devices[t.key] = dev
                off.gate[t.key] = (here, there)
                headers.append(t.wire(device=dev).header())
            self._offers[(thief, rid)] = off
            self.counters["offered"] += len(chosen)
        offer: M.StealOffer = {"k": "steal_offer", "rid": rid, "tasks": cast(list[M.StealTask], headers)}
        return [_send(thief, offer)]

    def select(self, thief: str, info: ThiefInfo, now: float) -> list[tuple[QueuedTask, str, float, float]]:
        """The cost gate: queued tasks that finish earlier on ``thief`` by more than transfer plus margin.

        Walks each device's queue from the back (the tasks that would wait longest gain most); returns
        ``(task, device kind on the thief, predicted finish here, predicted finish there)``, times from now.
        O(queue length), once per request."""
        cfg = self.config
        raw_free, raw_speeds = info.get("free"), info.get("speed")
        free: dict[Any, Any] = raw_free if isinstance(raw_free, dict) else {}
        speeds: dict[Any, Any] = raw_speeds if isinstance(raw_speeds, dict) else {}
        bw = info.get("bw")
        bandwidth = float(bw) if isinstance(bw, int | float) and bw > 0 else cfg.bandwidth
        link = self.link_bandwidth(thief) if self.link_bandwidth is not None else None
        if link is not None and link > 0:
            bandwidth = link
        thief_free = {d: int(n) for d, n in free.items() if type(n) is int and n > 0 and d in ("cpu", "gpu")}
        budget = min(cfg.max_batch, cfg.batch_per_slot * sum(thief_free.values()))
        if budget <= 0:
            return []
        handshake = 3 * cfg.latency  # accept + commit, plus the request already spent
        thief_busy: dict[str, float] = dict.fromkeys(thief_free, 0.0)  # predicted work already given per device
        chosen: list[tuple[QueuedTask, str, float, float]] = []
        for dev, slots in self.queue.slots.items():
            if slots <= 0:
                continue
            waiting = list(self.queue.queued(dev))
            # when each queued task would start here: slots free up as running and earlier tasks finish
            starts = _start_times(self.queue.running_left(dev, now), [t.predicted for t in waiting], slots)
            for i in range(len(waiting) - 1, -1, -1):
                if len(chosen) >= budget:
                    break
                t = waiting[i]
                if t.state is not TState.QUEUED or t.pinned or len(t.path) >= cfg.max_hops or thief in t.path:
                    continue
                if starts[i] <= handshake:
                    continue  # it starts here before a hand-over could finish
                here = starts[i] + t.predicted
                best: tuple[float, str] | None = None
                for td in t.devices:
                    if td not in thief_free:
                        continue
                    rt = self._estimate(t, {"speed": speeds}, td)
                    there = handshake + t.nbytes / bandwidth + thief_busy[td] / thief_free[td] + rt
                    if best is None or there < best[0]:
                        best = (there, td)
                if best is None:
                    continue
                there, td = best
                rt_there = there - handshake - t.nbytes / bandwidth - thief_busy[td] / thief_free[td]
                if here - there > cfg.margin_s + cfg.margin_frac * rt_there:
                    chosen.append((t, td, here, there))
                    thief_busy[td] += rt_there
        return chosen

    def _on_accept(self, thief: str, rid: int, msg: M.StealAccept, now: float) -> list[Action]:
        key = (thief, rid)
        h = self._handed.get(key)
        if h is not None:  # a duplicated accept: the same commit again
            return [_commit(thief, rid, h.tasks)]
        off = self._offers.pop(key, None)
        ids = msg.get("ids")
        wanted = {(i[0], i[1]) for i in ids if isinstance(i, list | tuple) and len(i) >= 2} if isinstance(
            ids, list) else set()
        given: list[QueuedTask] = []
        gate: dict[tuple[str, int], tuple[float, float]] = off.gate if off is not None else {}
        if off is None:
            # the reservation lapsed (or never was): those tasks may be running here by now. Commit nothing.
            self.counters["late_accept"] += 1
        else:
            for k in off.keys:
                t = self.queue.get(k)
                if t is None or t.state is not TState.OFFERED or t.rid != key:
                    continue
                if k in wanted:
                    taken = self.queue.take(k)
                    if taken is not None:
                        taken.device = off.devices.get(k, taken.device)
                        given.append(taken)
                else:
                    t.state = TState.QUEUED
                    t.rid = None
        wire: list[list[object]] = [list(t.wire(spec=True)) for t in given]
        out: list[Action] = [_commit(thief, rid, wire)]
        if given:
            self._handed[key] = _Handed(thief, rid, wire, now + self.config.commit_retry,
                                        now + self.config.commit_give_up)
            self.counters["given"] += len(given)
            out.extend(Moved(t.owner, t.id, t.att, self.node_id, thief, *gate.get(t.key, (0.0, 0.0))) for t in given)
        return out

    def _release(self, off: _Offer) -> None:
        for k in off.keys:
            t = self.queue.get(k)
            if t is not None and t.state is TState.OFFERED and t.rid == (off.thief, off.rid):
                t.state = TState.QUEUED
                t.rid = None

    def _default_estimate(self, task: QueuedTask, info: ThiefInfo, device: str) -> float:
        """Runtime on the thief: ours, scaled by declared speeds. A node with a runtime model passes a better
        ``estimate`` (for a device it does not have itself, for instance)."""
        speeds: Mapping[Any, object] = info.get("speed") or {}  # read defensively: any key, any value
        mine = self.speed.get(task.device, 1.0)
        theirs = speeds.get(device, 1.0) if isinstance(speeds, dict) else 1.0
        if not isinstance(theirs, int | float) or theirs <= 0:
            theirs = 1.0
        return task.predicted * mine / float(theirs)

    # ---- introspection (tests, status) --------------------------------------------------------------------

    @property
    def requesting(self) -> bool:
        return self._request is not None

    def pending_commits(self) -> int:
        return len(self._handed)


def _start_times(running_left: list[float], predicted: list[float], slots: int) -> list[float]:
    """Predicted start time (from now) of each queued task, list scheduling onto ``slots`` in FIFO order."""
    free_at = sorted(running_left)[:slots]
    free_at += [0.0] * (slots - len(free_at))
    heapq.heapify(free_at)
    out: list[float] = []
    for p in predicted:
        s = heapq.heappop(free_at)
        out.append(s)
        heapq.heappush(free_at, s + p)
    return out


def _commit(thief: str, rid: int, tasks: list[list[object]]) -> Send:
    """A commit: ``tasks`` are ``StealTask``s with their specs, as lists (what msgpack makes of them anyway)."""
    return _send(thief, {"k": "steal_commit", "rid": rid, "tasks": cast(list[M.StealTask], tasks)})


def _from_wire(item: object, now: float) -> QueuedTask | None:
    if not isinstance(item, list | tuple) or len(item) != len(M.StealTask._fields):
        return None
    tid, att, owner, kernel, device, devices, nbytes, predicted, path, spec = M.StealTask(*item)
    if not (isinstance(tid, str) and type(att) is int and isinstance(owner, str) and isinstance(kernel, str)):
        return None
    if not (isinstance(device, str) and isinstance(devices, list | tuple) and isinstance(path, list | tuple)):
        return None
    if not isinstance(nbytes, int | float) or not isinstance(predicted, int | float):
        return None
    return QueuedTask(
        id=tid, att=att, owner=owner, kernel=kernel, device=device,
        devices=tuple(str(d) for d in devices) or ("cpu",), nbytes=int(nbytes), predicted=float(predicted),
        path=[str(p) for p in path], spec=spec, enqueued=now,
        # the priority travels inside the spec (a RUN task's ``prio``): the thief queues it as the victim did
        priority=prio if isinstance(spec, dict) and type(prio := spec.get("prio", 0)) is int else 0,
    )
