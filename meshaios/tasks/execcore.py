"""The executing node's task bookkeeping as one pure state machine: what the live node and the simulator both run.

A task reaches an executing node in a RUN (from its owner) or in a steal commit (from a busier peer); from then
until its result leaves, or it is aborted or handed to a thief, ``ExecCore`` holds everything about it: the fence
(``tasks/epochs.py``: one run per task and attempt, stale client epochs refused), the inputs it waits for and
holds, the local run queue (``sched.stealing.WorkQueue``) and the thief/victim protocol (``StealEngine``), the
prefetch rule, aborts, the tasks given to thieves, and the ``queued`` counter that a node gossips.

Shape: ``handle(event, now) -> list[Instruction]``. Events are frozen dataclasses (a RUN arrived, inputs are
local, workers finished a batch, an abort, a timer tick, a steal message, a peer died); instructions are frozen
dataclasses (start this on a worker, take these back from the workers' queue, fetch these inputs, send this
result, ...). No I/O, no asyncio, no clock: time comes in as ``now``. ``meshaios.node.Node`` turns sockets,
worker completions and ticks into events and carries out the instructions with real threads and sockets;
``meshaios.sim.engine`` carries them out in simulated time. Where an instruction has an answer (which prefetched
tasks the workers gave back), the executor feeds it back as an event (``Recalled``).

The task spec is the RUN message's task dict (``TaskSpec``), untouched: what this core knows about a task lives
in its own tables, never in private keys of that dict.
"""

from __future__ import annotations

import random
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from meshaios.fastinit import fast_init
from meshaios.sched.loadview import DeviceLoad, LoadView, make_summary
from meshaios.sched.model import RuntimeModel, task_features
from meshaios.sched.stealing import (
    Action as StealAction,
)
from meshaios.sched.stealing import (
    Estimator,
    Moved,
    QueuedTask,
    StealConfig,
    StealEngine,
    TasksArrived,
    TState,
    WorkQueue,
)
from meshaios.sched.stealing import Send as StealSend
from meshaios.tasks.epochs import Run, RunFence, Verdict
from meshaios.tasks.functions import library_kernel
from meshaios.tasks.owner import fn_key_kept
from meshaios.timeline import Timeline
from meshaios.wire import messages as M
from meshaios.wire.messages import Result, RunTask
from meshaios.wire.payload import Payload

__all__ = [
    "INLINE_ABORT_S",
    "INLINE_DEMOTE_S",
    "INLINE_MAX_BYTES",
    "INLINE_MAX_S",
    "INLINE_STREAK",
    "INLINE_STREAK_MAX",
    "INLINE_USER_STREAK",
    "MAX_ABORTED",
    "MAX_KERNELS",
    "PREFETCH_MAX",
    "PREFETCH_SECONDS",
    "PREFETCH_STUCK",
    "RESEND_MAX",
    "RESEND_WINDOW",
    "RUNTIME_EWMA",
    "AbortRuns",
    "DropAfter",
    "DropResult",
    "Event",
    "ExecCore",
    "ExecStats",
    "FetchInputs",
    "Finished",
    "InlineOverran",
    "InputsMissing",
    "InputsReady",
    "Instruction",
    "PeerDown",
    "PeerUp",
    "ProcessCancelled",
    "RecallFromWorkers",
    "Recalled",
    "ReleaseInputs",
    "RunTasks",
    "SendAbort",
    "SendFenced",
    "SendMoved",
    "SendResult",
    "SendSteal",
    "Settle",
    "StartOnWorker",
    "StealMessage",
    "TerminateProcessPool",
    "Tick",
]

Key: TypeAlias = tuple[str, int]  # (task id, attempt)
TaskSpec: TypeAlias = RunTask  # one task of a RUN message (wire/messages.py), as decoded
TaskResult: TypeAlias = Result  # one result of a DONE message
StealMsg: TypeAlias = M.StealMsg  # the inner ``m`` of a STEAL message (sched/stealing.py)

RUNTIME_EWMA = 0.3  # weight of the newest measured run time of a kernel on this node
MAX_KERNELS = 4096  # measured run times (and function payload -> kernel ids) kept per node, oldest forgotten first
# Prefetch: short tasks are handed to the workers ahead of their slot, up to this many predicted seconds per slot
# (and at most PREFETCH_MAX per slot). Tiny tasks need it: gated one completion at a time, a worker waits an event
# loop round trip for each next task, and completions, DONE messages and the owner's dispatches stop coming in
# batches (measured: +40% node CPU on 10,000 tiny tasks with one per slot). Longer tasks are not prefetched at all:
# they gain nothing from it and would only be hidden from thieves -- and a thief never gains from taking a task
# shorter than the steal gate's margin anyway.
PREFETCH_SECONDS = 0.05
PREFETCH_MAX = 64
PREFETCH_STUCK = 0.5  # a prefetched task not started after this long is taken back (see ExecCore._tick)
MAX_ABORTED = 100_000  # aborted attempts (and tasks given to thieves) remembered
# Results sent to another node's owner are remembered this long (at most RESEND_MAX of them, the oldest go first)
# and sent again if that owner comes back after this node declared it dead: declaring it dead closed the connection
# to it (``transport.forget``), losing what was queued there, and nothing is sent to a dead peer meanwhile. A paused
# owner that resumes before its clients fail over would otherwise wait for those results until a client's reconcile
# (60 s) resubmits them.
RESEND_WINDOW = 30.0
RESEND_MAX = 10_000
# Inline runs (``StartOnWorker.inline``): a tiny task started on a free CPU slot may run on the node's event loop
# itself, without the hand-off to a worker thread and back (two thread wake-ups and GIL hand-offs, the larger part
# of a lone tiny task's time on its node). A function qualifies once its measured run time here (the EWMA of
# ``runtime``) is under INLINE_MAX_S and its last runs in a row each took under INLINE_DEMOTE_S and returned at
# most INLINE_MAX_BYTES; the task's arguments must be at most INLINE_MAX_BYTES too, with every input in the task.
# * meshaios's own kernels (``functions.library_kernel``: code that computes and returns) need INLINE_STREAK such
#   runs. A qualified kernel's run that takes INLINE_DEMOTE_S or more (or returns more) cannot be stopped -- it
#   holds the loop once -- but demotes the kernel to the worker threads, and each demotion doubles the runs in a
#   row it needs before it runs inline again (up to INLINE_STREAK_MAX).
# * A user's function may wait on a file, a lock or a socket after being tiny many times (seen: a gated test
#   function held a node for 60 s when eight tiny runs were enough). It needs INLINE_USER_STREAK tiny runs in a
#   row, all of them on the worker threads (a slow one -- its first, which imports its module, say -- starts the
#   count again, as a run of INLINE_DEMOTE_S or more or with a larger result does later: a tiny task preempted on
#   a loaded machine). It runs inline only as the one task on the node, and only where the executor can guard the
#   run (``inline_user``): the node interrupts a run that passes INLINE_ABORT_S, garbage collection not counted,
#   and runs the task again on a worker (``InlineOverran``; tasks/guard.py), which takes the right away for good
#   (``_revoked``, counter ``inline_revoked``).
# A run between the two bounds (a tiny task preempted on a loaded machine) only raises the EWMA: the next few go to
# the workers until it is back down.
INLINE_MAX_S = 0.0002
INLINE_DEMOTE_S = 0.002
INLINE_MAX_BYTES = 64 << 10
INLINE_STREAK = 8
INLINE_STREAK_MAX = 4096
INLINE_USER_STREAK = 64
INLINE_ABORT_S = 0.05


@dataclass
class ExecStats:
    queued: int = 0  # accepted here and not finished, aborted, lost or given away: waiting, queued or running
    finished: int = 0
    failed: int = 0


# ---- events ---------------------------------------------------------------------------------------------------


@fast_init
@dataclass(frozen=True, slots=True)
class RunTasks:
    """A RUN from ``owner`` (or this node's own owner dispatching to itself)."""

    owner: str
    tasks: list[TaskSpec]


@dataclass(frozen=True, slots=True)
class InputsReady:
    """Every input that ``FetchInputs`` named for ``key`` is now in the local store. ``local``: they all were
    when it asked, nothing was fetched for it: the task may still be stolen (a thief fetches them from here)."""

    key: Key
    local: bool = False


@dataclass(frozen=True, slots=True)
class InputsMissing:
    """No holder could deliver these inputs of ``key``: its owner must recompute them."""

    key: Key
    lost: list[str]


@fast_init
@dataclass(frozen=True, slots=True)
class Finished:
    """Workers finished these runs: ``(owner the start named, key, result)``, a burst at a time. ``threads``:
    from the worker threads (a worker is free again: prefetching resumes), not the process pool nor runs made
    inline on the node's loop (``StartOnWorker.inline``: no worker was freed)."""

    done: list[tuple[str, Key, TaskResult]]
    threads: bool = True
    # the shell sends the results first and then hands over ``Settle``: the bookkeeping that does not decide
    # those results (runtimes, the inline streaks, the timeline, refilling the slots, a steal request) waits
    # until then -- or until the next event, whichever comes first (``ExecCore.handle``), so the core decides
    # nothing differently
    settle_later: bool = False


@dataclass(frozen=True, slots=True)
class Settle:
    """What a ``Finished(settle_later=True)`` left to do: done now (nothing if it was done already)."""


@dataclass(frozen=True, slots=True)
class ProcessCancelled:
    """The process pool cancelled a run before it started (the pool was shut down)."""

    key: Key


@dataclass(frozen=True, slots=True)
class Recalled:
    """The answer to ``RecallFromWorkers``: the keys no worker had started (they never will)."""

    keys: list[Key]
    stuck: bool = False


@dataclass(frozen=True, slots=True)
class AbortRuns:
    """``owner`` cancelled these attempts (``[[id, attempt], ...]``)."""

    owner: str
    keys: list[M.TaskKey]


@dataclass(frozen=True, slots=True)
class InlineOverran:
    """An inline run of a user's function (``StartOnWorker.user``) passed INLINE_ABORT_S and was interrupted; the
    executor gave the task to a worker. ``kernel`` never runs inline here again."""

    kernel: str


@dataclass(frozen=True, slots=True)
class DropAfter:
    """``owner`` says task ``task`` is the last reader of these inputs (a FREE with ``after``): drop them when it
    succeeds here. Nothing if it is not here (finished already, or elsewhere): the owner frees them as usual."""

    task: str
    ids: list[str]


@dataclass(frozen=True, slots=True)
class Tick:
    """Timers: stuck prefetches, steal timeouts and requests."""


@dataclass(frozen=True, slots=True)
class StealMessage:
    """A steal protocol message from peer ``src`` (shape checked by the decoder)."""

    src: str
    msg: StealMsg


@dataclass(frozen=True, slots=True)
class PeerDown:
    """Membership says ``node`` is dead or left."""

    node: str


@dataclass(frozen=True, slots=True)
class PeerUp:
    """Membership says ``node``, which this node had found dead or gone, is alive again (it refuted, or rejoined)."""

    node: str


Event: TypeAlias = (
    RunTasks | InputsReady | InputsMissing | Finished | ProcessCancelled | Recalled | AbortRuns | Tick
    | StealMessage | PeerDown | PeerUp | InlineOverran | DropAfter | Settle
)

# ---- instructions ---------------------------------------------------------------------------------------------


@fast_init
@dataclass(frozen=True, slots=True)
class StartOnWorker:
    """Run ``spec`` on ``device`` ("cpu": the worker threads, or the process pool for a ``pure`` task; a GPU's
    name: its own thread). ``prefetch``: ahead of a free slot, into the workers' own queue, from which
    ``RecallFromWorkers`` may take it back until a worker starts it. ``inline``: a tiny task (see INLINE_MAX_S)
    that may run at once on the executor's own thread instead (the node's event loop), its end reported as
    ``Finished(..., threads=False)`` before any other event; an executor may also give it to a worker. ``user``:
    an inline run of a user's function, to be interrupted after INLINE_ABORT_S (then ``InlineOverran``, and the
    task goes to a worker). Report its end as ``Finished`` with ``owner``."""

    key: Key
    spec: TaskSpec
    owner: str
    device: str = "cpu"
    prefetch: bool = False
    inline: bool = False
    user: bool = False


@dataclass(frozen=True, slots=True)
class RecallFromWorkers:
    """Take these prefetched runs back from the workers' queue where no worker has started them; answer with
    ``Recalled`` (the ones taken back), at once."""

    keys: list[Key]
    stuck: bool = False


@dataclass(frozen=True, slots=True)
class FetchInputs:
    """Make ``remote`` (input id -> (holders, bytes)) local for the task ``key``; then ``InputsReady`` (or
    ``InputsMissing``)."""

    key: Key
    spec: TaskSpec
    remote: dict[str, tuple[list[str], int]]


@fast_init
@dataclass(frozen=True, slots=True)
class SendResult:
    owner: str
    result: TaskResult
    ep: int = 0  # the client's epoch of the run (tasks/epochs.py): with ``att``, which run stored here is newer


@dataclass(frozen=True, slots=True)
class SendAbort:
    """Forward ``owner``'s abort of ``keys`` to ``node`` (a thief we gave them to)."""

    node: str
    owner: str
    keys: list[M.TaskKey]


@dataclass(frozen=True, slots=True)
class SendMoved:
    """Tell ``owner`` where its tasks went: ``[[id, attempt, thief], ...]``. ``here``: for each, the seconds this
    node predicted it would take to finish it itself when the steal gate let it go (the simulator's "wasted
    steal" measure; not sent)."""

    owner: str
    moves: list[list[Any]]
    here: list[float] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SendFenced:
    """Tell ``owner`` that its runs for ``client`` were refused: that client is at epoch ``ep`` elsewhere."""

    owner: str
    client: str
    ep: int


@dataclass(frozen=True, slots=True)
class SendSteal:
    to: str
    msg: StealMsg


@dataclass(frozen=True, slots=True)
class ReleaseInputs:
    """No task here needs these inputs any more: a fetched copy of one may go."""

    ids: list[str]


@dataclass(frozen=True, slots=True)
class DropResult:
    """Delete ``obj`` (and its parts) from this node's store: the result of an aborted run, which is not wanted,
    or an input whose last user just succeeded here (the RUN's ``fr``: its owner would free it a round trip
    later)."""

    obj: str
    parts: int = 0


@dataclass(frozen=True, slots=True)
class TerminateProcessPool:
    """A process cannot be told to stop one task: stop the pool; the innocent tasks in it run again."""


Instruction: TypeAlias = (
    StartOnWorker | RecallFromWorkers | FetchInputs | SendResult | SendAbort | SendMoved | SendFenced | SendSteal
    | ReleaseInputs | DropResult | TerminateProcessPool
)

_NO_INPUTS: tuple[str, ...] = ()
_CPU: tuple[str, ...] = ("cpu",)
_GPU: tuple[str, ...] = ("gpu",)
_GPU_OR_CPU: tuple[str, ...] = ("gpu", "cpu")
_ONE_GPU = {"gpu": 1}  # the one resource request a thief's free GPU slot satisfies


def _rkey(kernel: str, device: str) -> str:
    """The key of a kernel's measured run time on a device kind (``runtime``)."""
    return kernel if device == "cpu" else kernel + "@gpu"


class ExecCore:
    """One executing node's task bookkeeping. Call ``handle`` from one thread (the node's loop, or the
    simulator); ``aborted`` may be read from a worker thread (a prefetched run checks it before starting)."""

    def __init__(
        self,
        node_id: str,
        slots: dict[str, int],
        *,
        model: RuntimeModel,
        view: LoadView,
        timeline: Timeline | None = None,
        counters: MutableMapping[str, int] | None = None,
        steal: bool = True,
        steal_config: StealConfig | None = None,
        steal_seed: str | None = None,
        speed: dict[str, float] | None = None,
        gpus: Iterable[str] = (),
        gpu_slots: int = 1,
        gpu_affinity: Callable[[TaskSpec], str | None] | None = None,
        estimate: Estimator | None = None,
        inline: bool = False,
        inline_user: bool = False,
    ) -> None:
        self.node_id = node_id
        self.model = model
        self.view = view
        self.timeline = timeline if timeline is not None else Timeline(node_id)
        self.counters: MutableMapping[str, int] = counters if counters is not None else defaultdict(int)
        self.stats = ExecStats()
        self.speed = dict(speed or {"cpu": 1.0})
        # GPU device names (``fakegpu:0``, ``gpu:1``; the simulator's own), each with ``gpu_slots`` slots (a task
        # thread and its CUDA stream each). GPU tasks wait in the work queue like CPU ones, under the device kind
        # ``gpu`` with one slot per GPU slot of the node, and a device is chosen when one starts (``_pick_gpu``):
        # the GPU that holds its inputs (``gpu_affinity``: which device keeps them) if it has a free slot, else
        # the least busy one
        self.gpus = list(gpus)
        self.gpu_slots = max(1, int(gpu_slots))
        self._affinity = gpu_affinity
        self._gpu_busy: dict[str, int] = dict.fromkeys(self.gpus, 0)
        self._on_gpu: dict[Key, str] = {}  # GPU tasks started and not finished -> their device
        self._gpu_next = 0
        slots = dict(slots)
        if self.gpus:
            slots["gpu"] = len(self.gpus) * self.gpu_slots
        self.queue = WorkQueue(slots)
        self.steal_enabled = steal
        self.steal = StealEngine(
            node_id, self.queue, steal_config or StealConfig(),
            random.Random(steal_seed if steal_seed is not None else f"steal/{node_id}"),
            speed=self.speed, estimate=estimate,
        )  # fmt: skip
        self.fence = RunFence()
        # attempts aborted by their owner -> that owner (a late RUN, commit, result or prefetched start is dropped)
        self.aborted: dict[Key, str] = {}
        self._given: dict[Key, str] = {}  # tasks handed to thieves -> thief: an abort follows them there
        self._waiting: dict[Key, tuple[str, TaskSpec]] = {}  # waiting for inputs: (owner, spec)
        self._inputs: dict[Key, tuple[str, ...]] = {}  # remote inputs a task holds here, until it is done
        self.input_refs: dict[str, int] = {}  # input id -> how many tasks here hold it
        self._drop_after: dict[str, list[str]] = {}  # task id -> inputs it is the last reader of (``DropAfter``)
        self._prefetched: dict[Key, tuple[str, float]] = {}  # handed to the workers early: (kernel, when)
        self._prefetch_paused = False  # after a stuck prefetch was taken back, until a worker finishes a task
        self._procs: dict[Key, str] = {}  # pure tasks in the process pool -> the owner their start named
        # kernel (``kernel@gpu`` on a GPU) -> measured seconds here (EWMA): the queue's predictions
        self.runtime: dict[str, float] = {}
        self._kernels: dict[bytes, str] = {}  # function payload -> kernel id, for small payloads
        # inline runs (INLINE_MAX_S): on for an executor that can run a task on its own thread (the node's loop)
        self.inline = inline
        # and a user's function too (INLINE_USER_STREAK): the executor interrupts an inline run that overstays
        self.inline_user = inline and inline_user
        self._revoked: dict[str, None] = {}  # user functions slow once after qualifying: never inline again
        self._fast: dict[str, int] = {}  # kernel -> its runs here in a row that were tiny (see _tiny)
        self._library: dict[str, bool] = {}  # kernel -> one of meshaios's own (the only ones that may run inline)
        self._streak: dict[str, int] = {}  # kernel -> tiny runs in a row it needs to run inline, once demoted
        self._sent: deque[tuple[float, str, TaskResult]] = deque()  # results sent to other owners: (when, owner, it)
        self._down: dict[str, float] = {}  # peers declared dead or gone -> when: results go again if they come back
        self._handlers: dict[type, Callable[[Any, float], list[Instruction]]] = {
            RunTasks: self._run, InputsReady: self._inputs_ready, InputsMissing: self._inputs_missing,
            Finished: self._finished, ProcessCancelled: self._process_cancelled, Recalled: self._recalled,
            AbortRuns: self._abort, Tick: self._tick, StealMessage: self._steal_message, PeerDown: self._peer_down,
            PeerUp: self._peer_up, InlineOverran: self._inline_overran, DropAfter: self._drop_after_event,
            Settle: self._settle,
        }  # fmt: skip
        # what ``Finished(settle_later=True)`` left: (queued task, key, result, ok) per result, and its time
        self._unsettled: list[tuple[QueuedTask | None, Key, TaskResult, bool]] = []
        self._unsettled_at = 0.0
        self.owes = False  # a ``Settle`` is due

    # ---- the entry point ------------------------------------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Instruction]:
        if self.owes and type(event) is not Settle:  # what was left comes first, as if it had not been left
            out = self._settle(None, now)
            out.extend(self._handlers[type(event)](event, now))
            return out
        return self._handlers[type(event)](event, now)

    # ---- queries (status, the shell) ------------------------------------------------------------------------

    def held(self) -> dict[str, int]:
        """What this core still holds for tasks, by kind: all zero once every task it took is done or gone (the
        leak check of the fault-injection tests, in the simulator and on the in-process mesh alike)."""
        return {
            "queued": self.stats.queued, "queue": len(self.queue._tasks), "waiting": len(self._waiting),
            "inputs": len(self._inputs), "input_refs": len(self.input_refs), "prefetched": len(self._prefetched),
            "procs": len(self._procs), "drop after": len(self._drop_after),
            "steal request": int(self.steal._request is not None),
            "steal offers": len(self.steal._offers), "steal commits": len(self.steal._handed),
        }  # fmt: skip

    def was_aborted(self, key: Key, owner: str) -> bool:
        """``owner`` aborted this attempt (so a process-pool run of it is not resubmitted)."""
        return self.aborted.get(key) == owner

    @property
    def prefetched(self) -> int:
        return len(self._prefetched)

    def predict(self, kernel: str, nbytes: int, device: str = "cpu") -> float:
        """Seconds a task of ``kernel`` takes here: what this node measured last (it ran the kernel), else what
        the runtime model says (gossip, or its prior). Only the queue's backlog and the steal gate use it."""
        rt = self.runtime.get(_rkey(kernel, device))
        if rt is not None:
            return rt
        x = task_features(kernel, nbytes, device, speed=self.speed.get(device, 1.0), node=self.node_id)
        return self.model.predict_one(x)

    def kernel(self, fn: Payload) -> str:
        """``fn_key`` of a function payload, remembered for small ones (``fn_key_kept``)."""
        return fn_key_kept(fn, self._kernels, MAX_KERNELS)

    def refresh_predictions(self) -> None:
        """Tasks queued before their kernel's first run here were predicted from the prior (0.5 s for the unknown):
        bring them up to date before they are summed into a backlog or weighed by the steal gate. O(queue)."""
        for t in self.queue.queued():
            rt = self.runtime.get(_rkey(t.kernel, t.device))
            if rt is not None:
                t.predicted = rt

    def load_summary(self, now: float, bandwidth: float | None = None) -> M.LoadSummary:
        """What this node tells its peers about its queue (``sched/loadview.py``): the thieves' victim list."""
        self.refresh_predictions()
        q = self.queue
        stealable = sum(1 for t in q.queued() if t.state is TState.QUEUED and not t.pinned and not t.path)
        devices = {
            d: DeviceLoad(n, max(0, q.free(d)), q.backlog(d, now), self.speed.get(d, 1.0))
            for d, n in q.slots.items() if n > 0
        }  # fmt: skip
        return make_summary(devices, queued=q.n_queued(), stealable=stealable, bandwidth=bandwidth)

    # ---- RUN and inputs -------------------------------------------------------------------------------------

    def _run(self, ev: RunTasks, now: float) -> list[Instruction]:
        out: list[Instruction] = []
        owner = ev.owner
        fenced: dict[str, int] = {}
        taken: list[list[Any]] = []
        fence = self.fence
        for task in ev.tasks:
            key = (task["id"], task["att"])
            if self.aborted and self.aborted.get(key) == owner:
                continue  # aborted already (a late RUN of it): never started
            verdict = fence.offer(key, Run(owner, task.get("c", ""), task.get("ep", 0)))
            if verdict is not Verdict.NEW:
                if verdict is Verdict.FENCED:  # from an owner its client has left: refused, and that owner told
                    fenced[task["c"]] = fence.epoch(task["c"])
                elif verdict is Verdict.ADOPT:  # here already for an owner the client has left: runs once, for this one
                    qt = self.queue.get(key)
                    if qt is not None:
                        qt.owner = owner  # a thief that takes it reports to the new owner too
                elif verdict is Verdict.TAKEN:  # here for another client's owner: this one places it again
                    taken.append([key[0], key[1], ""])
                continue  # DUPLICATE: the same attempt delivered twice runs once
            self.stats.queued += 1
            self.timeline.queued(key[0], key[1], owner, now)
            if not self._fetch_first(key, task, owner, out):
                self._enqueue(key, task, owner, now, out)
        for client, ep in fenced.items():
            out.append(SendFenced(owner, client, ep))
        if taken:  # "moved to a node you do not know": re-placed at once, as a new attempt (``Owner.moved``)
            out.append(SendMoved(owner, taken))
        self._start_queued(now, out)
        return out

    def _fetch_first(self, key: Key, task: TaskSpec, owner: str, out: list[Instruction]) -> bool:
        """If ``task`` reads results held in stores (not inline), ask for them (``FetchInputs``) and keep it
        waiting until ``InputsReady``; False if it has none."""
        deps = task["deps"]
        if not deps:
            return False
        remote: dict[str, tuple[list[str], int]] = {}
        for d, v in deps.items():
            if isinstance(v, dict):
                locs = [x for x in v.get("loc", ()) if isinstance(x, str)]
                size = v.get("size", 0)
                remote[d] = (locs, size if type(size) is int else 0)
            elif v is None:
                remote[d] = ([], 0)
        if not remote:
            return False
        self._inputs[key] = tuple(remote)
        refs = self.input_refs
        for d in remote:
            refs[d] = refs.get(d, 0) + 1
        self._waiting[key] = (owner, task)
        out.append(FetchInputs(key, task, remote))
        return True

    def _inputs_ready(self, ev: InputsReady, now: float) -> list[Instruction]:
        w = self._waiting.pop(ev.key, None)
        if w is None:
            return []
        out: list[Instruction] = []
        owner, task = w
        if self._was_aborted(ev.key, owner, now, out):
            return out
        self.timeline.inputs_arrived(ev.key[0], ev.key[1], now)
        self._enqueue(ev.key, task, owner, now, out, fetched=not ev.local)
        self._start_queued(now, out)
        return out

    def _inputs_missing(self, ev: InputsMissing, now: float) -> list[Instruction]:
        key = ev.key
        w = self._waiting.pop(key, None)
        if w is None:
            return []
        out: list[Instruction] = []
        owner = w[0]
        if self._was_aborted(key, owner, now, out):
            return out
        self.timeline.finished(key[0], key[1], False, now, outcome="lost")
        run = self.fence.done(key)
        self.stats.queued -= 1
        self._release(key, out)
        out.append(SendResult(run.owner if run is not None else owner,
                              {"id": key[0], "att": key[1], "ok": False, "lost": ev.lost}))
        return out

    def _enqueue(
        self, key: Key, task: TaskSpec, owner: str, now: float, out: list[Instruction], fetched: bool = False
    ) -> None:
        """Into the local run queue, from which ``_start_queued`` feeds the workers as slots free.

        Its device kind: ``gpu`` if it asks for a GPU (``resources``: a GPU only, on a thief too) or its owner
        placed it on one (the RUN's ``device``, EFT's pick: a thief may weigh its CPU too), and this node has a
        GPU; else ``cpu``. A task whose inputs were ``fetched`` here, or that asks for resources a thief may lack
        (anything but one GPU, which the steal protocol checks), is queued but pinned. One whose stored inputs
        were here all along may be stolen: its ``nbytes`` (what moves with it, priced by the steal gate) count
        them, and the thief fetches them from here (``_arrived``)."""
        res = task.get("resources")
        device, devices = "cpu", _CPU
        if self.gpus:
            if res and res.get("gpu", 0) > 0:
                device, devices = "gpu", _GPU
            elif task.get("device") == "gpu":
                device, devices = "gpu", _GPU_OR_CPU
        kernel = self.kernel(task["fn"])
        nbytes = task["args"].nbytes
        if task["deps"]:
            for v in task["deps"].values():
                if isinstance(v, Payload):
                    nbytes += v.nbytes
                elif isinstance(v, dict) and type(size := v.get("size", 0)) is int:
                    nbytes += size
        qt = QueuedTask(
            id=key[0],
            att=key[1],
            owner=owner,
            kernel=kernel,
            device=device,
            devices=devices,
            nbytes=nbytes,
            predicted=self.predict(kernel, nbytes, device),
            spec=task,
            enqueued=now,
            pinned=fetched or bool(res and res != _ONE_GPU),
            priority=task.get("prio", 0),
            urgent=task.get("urg", False),
        )
        self.queue.push(qt)

    def _start_queued(self, now: float, out: list[Instruction]) -> None:
        """Hand queued tasks to the workers while slots allow, then prefetch short ones (see PREFETCH_SECONDS)."""
        q = self.queue
        for device in q.slots:
            while (qt := q.start_next(device, now)) is not None:
                self._start(qt, device, False, out)
        while not self._prefetch_paused and (head := q.peek("cpu")) is not None:
            predicted = self.runtime.get(head.kernel, head.predicted)  # queued before its kernel first ran here?
            if predicted >= PREFETCH_SECONDS:
                return
            per_slot = min(PREFETCH_MAX, int(PREFETCH_SECONDS / max(predicted, 1e-6)))
            qt = q.start_next("cpu", now, per_slot * q.slots["cpu"])
            if qt is None:
                return
            spec = qt.spec
            prefetch = not spec.get("pure") and "resources" not in spec
            if prefetch:
                self._prefetched[qt.key] = (qt.kernel, now)
            self._start(qt, "cpu", prefetch, out)

    def _start(self, qt: QueuedTask, kind: str, prefetch: bool, out: list[Instruction]) -> None:
        device = kind
        if kind == "gpu":
            device = self._pick_gpu(qt.spec)
            self._on_gpu[qt.key] = device
            self._gpu_busy[device] += 1
        elif qt.spec.get("pure"):
            self._procs[qt.key] = qt.owner
        inline = user = False
        if self.inline and not prefetch and kind == "cpu":
            inline, user = self._may_inline(qt)
        if inline:
            self.counters["ran_inline"] += 1
        out.append(StartOnWorker(qt.key, qt.spec, qt.owner, device, prefetch, inline, user))

    def _library_kernel(self, qt: QueuedTask) -> bool:
        library = self._library.get(qt.kernel)
        if library is None:
            library = self._library[qt.kernel] = library_kernel(qt.spec["fn"])
            if len(self._library) > MAX_KERNELS:
                self._library.clear()
        return library

    def _may_inline(self, qt: QueuedTask) -> tuple[bool, bool]:
        """(inline, a user's function): a task this small, of a function measured tiny here, often enough in a
        row (INLINE_MAX_S); a user's function only as the one task here, never after a slow run."""
        kernel = qt.kernel
        if self._library_kernel(qt):
            user, need = False, self._streak.get(kernel, INLINE_STREAK)
        elif self.inline_user and self.stats.queued == 1 and kernel not in self._revoked:
            user, need = True, INLINE_USER_STREAK
        else:
            return False, False
        return self._small_and_tiny(qt, need), user

    def _small_and_tiny(self, qt: QueuedTask, need: int) -> bool:
        spec = qt.spec
        return (
            self._fast.get(qt.kernel, 0) >= need
            and self.runtime.get(qt.kernel, INLINE_MAX_S) < INLINE_MAX_S
            and qt.nbytes <= INLINE_MAX_BYTES
            and qt.key not in self._inputs  # every input is in the task: nothing to read from the store
            and not spec.get("pure")
            and not spec.get("rs")
            and "resources" not in spec
            and "parts" not in spec
        )

    def _tiny(self, kernel: str, result: TaskResult, dt: float) -> None:
        """Count a finished CPU run of ``kernel`` towards (or against) running its tasks inline."""
        v = result.get("v")
        small = "size" not in result and (not isinstance(v, Payload) or v.nbytes <= INLINE_MAX_BYTES)
        if dt < INLINE_DEMOTE_S and small:
            fast = self._fast
            if len(fast) >= MAX_KERNELS and kernel not in fast:
                fast.clear()
            fast[kernel] = fast.get(kernel, 0) + 1
            return
        if self._library.get(kernel) is False:  # a user's function counts again from no tiny runs (only an
            # interrupted inline run, ``InlineOverran``, revokes it: a run's ``dt`` counts collections and GIL waits)
            self._fast.pop(kernel, None)
            return
        need = self._streak.get(kernel, INLINE_STREAK)
        if self._fast.pop(kernel, 0) >= need:  # it qualified: it may have held the loop, so it waits longer now
            if len(self._streak) >= MAX_KERNELS:
                self._streak.clear()
            self._streak[kernel] = min(2 * need, INLINE_STREAK_MAX)
            self.counters["inline_demoted"] += 1

    def _revoke(self, kernel: str) -> None:
        revoked = self._revoked
        if kernel not in revoked:
            if len(revoked) >= MAX_KERNELS:  # the oldest goes: it must qualify again from no tiny runs
                del revoked[next(iter(revoked))]
            revoked[kernel] = None
            self.counters["inline_revoked"] += 1

    def _inline_overran(self, ev: InlineOverran, now: float) -> list[Instruction]:
        self._fast.pop(ev.kernel, None)
        self._revoke(ev.kernel)
        return []

    def _pick_gpu(self, spec: TaskSpec) -> str:
        """The GPU a starting task runs on: the one that keeps its inputs if it has a free slot, else the least
        busy, taking turns among equals. The queue started it, so some GPU has a free slot."""
        busy = self._gpu_busy
        if self._affinity is not None:
            want = self._affinity(spec)
            if want is not None and busy.get(want, self.gpu_slots) < self.gpu_slots:
                return want
        n = len(self.gpus)
        order = [self.gpus[(self._gpu_next + i) % n] for i in range(n)]
        best = min(order, key=lambda g: busy[g])  # the first of the least busy, in turn order
        self._gpu_next = (self.gpus.index(best) + 1) % n
        return best

    # ---- completions ----------------------------------------------------------------------------------------

    def _finished(self, ev: Finished, now: float) -> list[Instruction]:
        out: list[Instruction] = []
        if ev.threads:
            self._prefetch_paused = False  # a worker is free again
        long: set[str] = set()  # kernels that turned out not to be short
        later = ev.settle_later
        for owner, key, result in ev.done:
            self._finish_one(owner, key, result, now, out, long, later)
        if later:
            self.owes = True
            self._unsettled_at = now
            return out
        self._after_results(long, now, out)
        return out

    def _settle(self, ev: Settle | None, now: float) -> list[Instruction]:
        out: list[Instruction] = []
        if not self.owes:
            return out
        self.owes = False
        left, self._unsettled = self._unsettled, []
        at = self._unsettled_at  # the time of the ``Finished``: the same records and decisions as without the wait
        long: set[str] = set()
        for qt, key, result, ok in left:
            self._account(qt, key, result, ok, at, long)
        self._after_results(long, at, out)
        return out

    def _after_results(self, long: set[str], now: float, out: list[Instruction]) -> None:
        if long and self._prefetched:
            # what was prefetched of them and has not started goes back to the queue, where thieves, priorities
            # and deadlines reach it again (the same function with other arguments, say). Without this, tasks of
            # 0.2 s predicted at 1 ms (up to 50 per slot) sat in the workers' queue, unstealable, with urgent work
            # behind them: the deadline test of tests/system/test_scheduling_processes.py met 0 of 20 deadlines.
            keys = [k for k, (kern, _) in self._prefetched.items() if kern in long]
            if keys:
                out.append(RecallFromWorkers(keys))
        self._after_finish(now, out)

    def _finish_one(
        self, owner: str, key: Key, result: TaskResult, now: float, out: list[Instruction], long: set[str],
        later: bool = False,
    ) -> None:
        run = self.fence.done(key)
        if run is not None:
            owner = run.owner  # the newest owner that asked for this run (a superseded one's was adopted)
        qt = self.queue.finish(key)
        if self._on_gpu:
            gpu = self._on_gpu.pop(key, None)
            if gpu is not None:
                self._gpu_busy[gpu] -= 1
        if self._prefetched:
            self._prefetched.pop(key, None)
        if self._procs:
            self._procs.pop(key, None)
        self.stats.queued -= 1
        if self.aborted and self.aborted.get(key) == owner:
            # cancelled while it ran: its owner has forgotten it; the result (kept here if large) is dropped
            self.counters["aborted_results_dropped"] += 1
            self.timeline.finished(key[0], key[1], False, now, outcome="cancelled")
            self._release(key, out)
            if result.get("ok"):
                out.append(DropResult(key[0], result.get("parts") or 0))
            return
        after = self._drop_after.pop(key[0], None) if self._drop_after else None
        if self._inputs:
            self._release(key, out)
        self.stats.finished += 1
        ok = bool(result["ok"])
        if ok and qt is not None and (last := qt.spec.get("fr")):
            self._drop_last_used(last, out)
        if ok and after:
            self._drop_last_used(after, out)
        if not ok:
            self.stats.failed += 1
        if later:
            self._unsettled.append((qt, key, result, ok))
        else:
            self._account(qt, key, result, ok, now, long)
        out.append(SendResult(owner, result, run.ep if run is not None else 0))
        if owner != self.node_id:
            sent = self._sent
            sent.append((now, owner, result))
            while len(sent) > RESEND_MAX or sent[0][0] < now - RESEND_WINDOW:
                sent.popleft()

    def _account(self, qt: QueuedTask | None, key: Key, result: TaskResult, ok: bool, now: float,
                 long: set[str]) -> None:
        """A finished run's runtime (the queue's predictions, the inline streaks, a prefetched kernel found long)
        and its timeline record."""
        dt = result.get("dt")
        if qt is not None and type(dt) is float:
            self._measured(_rkey(qt.kernel, qt.device), dt)
            if self.inline and qt.device == "cpu":
                self._tiny(qt.kernel, result, dt)
            if self._prefetched and qt.device == "cpu" and self.runtime[qt.kernel] >= PREFETCH_SECONDS:
                long.add(qt.kernel)
        self.timeline.finished(key[0], key[1], ok, now, run_s=dt if type(dt) is float else None,
                               device=str(result.get("dev", "cpu")))

    def _after_finish(self, now: float, out: list[Instruction]) -> None:
        """Refill the freed slots; if that leaves one idle, look for work to steal now rather than next tick."""
        if self.queue:  # nothing queued or running here (a lone task's run over): nothing to start
            self._start_queued(now, out)
        if self.steal_enabled and not self.steal.requesting and self.steal.idle():
            self._steal_actions(self.steal.tick(now, self.view), now, out)

    def _process_cancelled(self, ev: ProcessCancelled, now: float) -> list[Instruction]:
        out: list[Instruction] = []
        if self._procs.pop(ev.key, None) is None:
            return out
        self.queue.finish(ev.key)
        self._cancelled_here(ev.key, now, out)
        return out

    def _measured(self, kernel: str, seconds: float) -> None:
        """``kernel``: its ``_rkey`` (a kernel's GPU runs are measured apart from its CPU ones)."""
        old = self.runtime.pop(kernel, None)  # re-inserted last: the dict stays in least-recently-run order
        self.runtime[kernel] = seconds if old is None else old + RUNTIME_EWMA * (seconds - old)
        if len(self.runtime) > MAX_KERNELS:
            del self.runtime[next(iter(self.runtime))]

    def _drop_after_event(self, ev: DropAfter, now: float) -> list[Instruction]:
        if any(k[0] == ev.task for k in self._inputs):  # waiting, queued or running here, with stored inputs
            self._drop_after.setdefault(ev.task, []).extend(ev.ids)
        return []

    def _drop_last_used(self, ids: Iterable[object], out: list[Instruction]) -> None:
        """The task that finished was the last user of these inputs (its owner said so: RUN ``fr``): they go
        from the store now, before the next task here allocates its result, unless a task here still reads one."""
        refs = self.input_refs
        for d in ids:
            if isinstance(d, str) and d not in refs:
                out.append(DropResult(d))
                self.counters["inputs_dropped_at_finish"] += 1

    def _release(self, key: Key, out: list[Instruction]) -> None:
        if self._drop_after:
            self._drop_after.pop(key[0], None)  # failed, aborted, lost or given away: the owner frees them as usual
        inputs = self._inputs.pop(key, _NO_INPUTS)
        if not inputs:
            return
        refs = self.input_refs
        gone = []
        for d in inputs:
            n = refs.get(d, 0) - 1
            if n <= 0:
                refs.pop(d, None)
                gone.append(d)
            else:
                refs[d] = n
        if gone:
            out.append(ReleaseInputs(gone))

    # ---- prefetch recall ------------------------------------------------------------------------------------

    def _recalled(self, ev: Recalled, now: float) -> list[Instruction]:
        """Prefetched runs the workers gave back: an aborted one is forgotten; the others are queued again,
        ahead of their priority level (``WorkQueue.unstart``), stealable and reorderable."""
        out: list[Instruction] = []
        back: list[Key] = []
        for key in ev.keys:
            if self._prefetched.pop(key, None) is None:
                continue
            qt = self.queue.get(key)
            if qt is not None and self.aborted.get(key) == qt.owner:
                self.queue.finish(key)
                self._cancelled_here(key, now, out)
            else:
                back.append(key)
        if back:
            self.queue.unstart(back)
            self.counters["prefetch_recalled"] += len(back)
        if ev.stuck and ev.keys:
            self._prefetch_paused = True
        if back:
            self._start_queued(now, out)
        return out

    # ---- timers, stealing, membership ---------------------------------------------------------------------

    def _tick(self, ev: Tick, now: float) -> list[Instruction]:
        out: list[Instruction] = []
        if self._prefetched and any(now - t > PREFETCH_STUCK for _, t in self._prefetched.values()):
            # every worker is held by something long (a task far past its prediction, a blocking call), and the
            # short tasks prefetched behind it would wait for it, unstealable: they go back to the queue, and
            # nothing more is prefetched until a worker finishes a task
            out.append(RecallFromWorkers(list(self._prefetched), stuck=True))
        if self.steal_enabled:
            self._steal_actions(self.steal.tick(now, self.view), now, out)
            self._start_queued(now, out)  # reservations that lapsed are runnable here again
        return out

    def _steal_message(self, ev: StealMessage, now: float) -> list[Instruction]:
        out: list[Instruction] = []
        if ev.msg.get("k") == "steal_req":
            self.refresh_predictions()
        self._steal_actions(self.steal.handle(ev.src, ev.msg, now), now, out)
        self._start_queued(now, out)  # tasks whose reservation the thief declined are runnable here again
        return out

    def _peer_down(self, ev: PeerDown, now: float) -> list[Instruction]:
        out: list[Instruction] = []
        if len(self._down) >= 64:  # gone for longer than the window: nothing of theirs would be sent again
            self._down = {n: t for n, t in self._down.items() if t >= now - RESEND_WINDOW}
        self._down[ev.node] = now
        self._steal_actions(self.steal.peer_down(ev.node, now), now, out)  # its reservations here: runnable again
        self._start_queued(now, out)
        return out

    def _peer_up(self, ev: PeerUp, now: float) -> list[Instruction]:
        """A peer this node had declared dead is back: the results sent to it in the last ``RESEND_WINDOW`` go
        again (see ``RESEND_WINDOW``; its owner takes each result once, ``Owner.completed``)."""
        down = self._down.pop(ev.node, None)
        if down is None:
            return []
        while self._sent and self._sent[0][0] < now - RESEND_WINDOW:
            self._sent.popleft()
        out: list[Instruction] = [SendResult(ev.node, r) for _, owner, r in self._sent if owner == ev.node]
        self.counters["results_resent"] += len(out)
        return out

    def _steal_actions(self, actions: list[StealAction], now: float, out: list[Instruction]) -> None:
        moves: dict[str, list[list[Any]]] = {}
        here: dict[str, list[float]] = {}
        arrived = False
        for a in actions:
            if isinstance(a, StealSend):
                out.append(SendSteal(a.to, a.msg))
            elif isinstance(a, TasksArrived):
                for qt in a.tasks:
                    arrived |= self._arrived(qt, now, out)
            elif isinstance(a, Moved):
                # given away for good: no longer ours to run, and its owner must hear where it went
                key = (a.task_id, a.att)
                run = self.fence.done(key)
                self.stats.queued -= 1
                if self._inputs:
                    self._release(key, out)  # its stored inputs were here: the thief fetches its own copies
                self.timeline.moved(a.task_id, a.att, now)
                owner = run.owner if run is not None else a.owner
                moves.setdefault(owner, []).append([a.task_id, a.att, a.to])
                here.setdefault(owner, []).append(a.here)
                self._given[key] = a.to  # an abort from its owner follows it there
                if len(self._given) > MAX_ABORTED:
                    del self._given[next(iter(self._given))]
        if arrived:
            self._start_queued(now, out)
        for owner, items in moves.items():
            out.append(SendMoved(owner, items, here[owner]))

    def _arrived(self, qt: QueuedTask, now: float, out: list[Instruction]) -> bool:
        """Thief side: a stolen task is in our queue (the engine put it there, deduplicated by id and attempt)."""
        spec = qt.spec
        if self.aborted.get(qt.key) == qt.owner:  # its abort overtook the commit: never started
            self.queue.take(qt.key)
            return False
        verdict = self.fence.offer(qt.key, Run(qt.owner, spec.get("c", ""), spec.get("ep", 0)))
        newest = self.fence.newest(spec["c"]) if verdict is Verdict.FENCED else None
        if newest is not None:
            # taken from a queue that still held it for an owner its client has left; that queue's node has told
            # the owner owed its result (the newest, where it had adopted the run) that it moved here: so it runs
            # here, for the newest owner -- dropped, it would leave that owner waiting for ever
            out.append(SendFenced(qt.owner, spec["c"], newest.ep))
            qt.owner, spec["ep"] = newest.owner, newest.ep
            verdict = self.fence.offer(qt.key, newest)
        if verdict is not Verdict.NEW:  # here already by another route: it runs once
            self.queue.take(qt.key)
            if verdict is Verdict.TAKEN:  # for another client's owner: its own owner places it again
                out.append(SendMoved(qt.owner, [[qt.id, qt.att, ""]]))
            return False
        self.stats.queued += 1
        self.timeline.queued(qt.id, qt.att, qt.owner, now)
        if self._fetch_first(qt.key, spec, qt.owner, out):
            self.queue.take(qt.key)  # its stored inputs come first; ``InputsReady`` queues it again, pinned
            return False
        qt.predicted = self.predict(qt.kernel, qt.nbytes, qt.device)
        return True

    # ---- cancellation ---------------------------------------------------------------------------------------

    def _abort(self, ev: AbortRuns, now: float) -> list[Instruction]:
        """``owner`` cancelled these attempts. Queued here (in the work queue, reserved for a thief): removed,
        never started. Prefetched to the worker threads: taken back (``Recalled``) if no worker started it.
        Waiting for inputs: forgotten when they arrive (or are lost). Given to a thief: the abort follows.
        Running on a thread: it finishes and its result is dropped (``_finish_one``). Running in the process pool:
        the pool is terminated and the other tasks that were in it run again in a fresh one. Remembered, so that
        a RUN, a steal commit or a prefetched start of the same attempt arriving later is dropped too."""
        out: list[Instruction] = []
        owner = ev.owner
        forward: dict[str, list[M.TaskKey]] = {}
        recall: list[Key] = []
        kill_pool = False
        for tid, att in ev.keys:
            key = (tid, att)
            self.aborted[key] = owner
            if len(self.aborted) > MAX_ABORTED:
                del self.aborted[next(iter(self.aborted))]
            self.counters["aborted"] += 1
            qt = self.queue.get(key)
            if qt is not None and qt.owner == owner:
                if qt.state is not TState.RUNNING:
                    self.queue.take(key)
                    self._cancelled_here(key, now, out)
                    continue
                if key in self._prefetched:  # not started, perhaps: then it never will be
                    recall.append(key)
                    continue
            if self._procs.get(key) == owner:
                kill_pool = True
                continue
            thief = self._given.pop(key, None)
            if thief is not None:
                forward.setdefault(thief, []).append((tid, att))
        if recall:
            out.append(RecallFromWorkers(recall))
        for thief, ks in forward.items():
            out.append(SendAbort(thief, owner, ks))
        if kill_pool:
            out.append(TerminateProcessPool())
        return out

    def _was_aborted(self, key: Key, owner: str, now: float, out: list[Instruction]) -> bool:
        """A task that waited for its inputs and was aborted meanwhile: forget it (its inputs are released)."""
        if not self.aborted or self.aborted.get(key) != owner:
            return False
        self._cancelled_here(key, now, out)
        return True

    def _cancelled_here(self, key: Key, now: float, out: list[Instruction]) -> None:
        """An aborted attempt that never started here is forgotten: fence, count, timeline, inputs."""
        self.fence.done(key)
        self.stats.queued -= 1
        self.timeline.finished(key[0], key[1], False, now, outcome="cancelled")
        self._release(key, out)
