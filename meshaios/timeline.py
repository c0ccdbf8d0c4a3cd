"""A per-task timeline on each node: where a task's time went, in bounded memory.

For every task attempt a node runs it records when the task was queued here (its RUN arrived), when it asked
peers for its inputs and when they had all arrived, when it started and finished, on which device, and how many
input bytes it moved. ``meshaios status --json`` shows the most recent ones (``node.timeline``) and a summary of
where the time went (``node.timeline_summary``: queueing, waiting for inputs, running); the dashboard draws them as
a task stream, one lane per worker slot; ``tools/bench/run.py --profile`` prints the summary of each node. The
summary also counts the run time of every attempt that ran here in ``RUN_BUCKETS``, per device (``run_hist``):
the ``meshaios_task_duration_seconds`` histogram of ``/metrics``.

Pure bookkeeping: times are passed in (the node's monotonic clock); ``recent(offset=...)`` converts to wall time
for people. Bounded: at most ``capacity`` finished records (a ring buffer: the oldest go first) and ``max_open``
records of tasks still in flight (beyond that the oldest open record is dropped and counted in ``dropped``).

    >>> tl = Timeline("n1", capacity=2)
    >>> tl.queued("t", 0, "owner", now=1.0)
    >>> tl.finished("t", 0, ok=True, run_s=0.5, device="cpu", now=2.0)
    >>> r = tl.recent()[0]
    >>> (r["queued"], r["started"], r["finished"], r["wait_s"], r["run_s"])
    (1.0, 1.5, 2.0, 0.5, 0.5)
"""

from __future__ import annotations

import bisect
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import TypedDict

__all__ = ["RUN_BUCKETS", "TaskRecord", "TaskTimes", "Timeline", "TimelineSummary"]

# upper bounds (seconds) of the run-time histogram: ``summary()["run_hist"]``, the dashboard's chart and the
# ``meshaios_task_duration_seconds`` metric
RUN_BUCKETS: tuple[float, ...] = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
_MAX_HIST_DEVICES = 64


class TaskRecord(TypedDict):
    """One finished attempt as ``recent()`` gives it: in ``status`` (``node.timeline``) and on the dashboard."""

    task: str
    attempt: int
    owner: str
    node: str
    device: str
    queued: float | None
    inputs_requested: float | None
    inputs_arrived: float | None
    started: float | None
    finished: float | None
    bytes_in: int
    outcome: str
    fetch_s: float
    wait_s: float
    run_s: float


class DeviceHistogram(TypedDict):
    counts: list[int]  # per ``RUN_BUCKETS`` bucket, and one beyond
    sum: float


class RunHistogram(TypedDict):
    buckets: list[float]
    devices: dict[str, DeviceHistogram]


class TimelineSummary(TypedDict):
    """``summary()``: where this node's task time went (``status``'s ``node.timeline_summary``)."""

    tasks: int
    in_flight: int
    recorded: int
    dropped: int
    wait_s: float
    fetch_s: float
    run_s: float
    bytes_in: int
    share: dict[str, float]
    run_hist: RunHistogram


@dataclass(slots=True)
class TaskTimes:
    task: str
    attempt: int
    owner: str
    node: str
    queued: float
    inputs_requested: float | None = None
    inputs_arrived: float | None = None
    started: float | None = None
    finished: float | None = None
    device: str = "cpu"
    bytes_in: int = 0  # input bytes fetched from peers for this task
    outcome: str = ""  # "ok", "error", "lost" (inputs could not be fetched), "moved" (stolen), "cancelled"

    def as_dict(self, offset: float = 0.0) -> TaskRecord:
        def at(t: float | None) -> float | None:
            return None if t is None else round(t + offset, 6)

        fetch_s, wait_s, run_s = self.spans()
        return {
            "task": self.task,
            "attempt": self.attempt,
            "owner": self.owner,
            "node": self.node,
            "device": self.device,
            "queued": at(self.queued),
            "inputs_requested": at(self.inputs_requested),
            "inputs_arrived": at(self.inputs_arrived),
            "started": at(self.started),
            "finished": at(self.finished),
            "bytes_in": self.bytes_in,
            "outcome": self.outcome,
            "fetch_s": fetch_s,
            "wait_s": wait_s,
            "run_s": run_s,
        }

    def spans(self) -> tuple[float, float, float]:
        """``(fetch_s, wait_s, run_s)`` as ``as_dict`` gives them (rounded to the microsecond), without the rest of
        the record: ``Timeline.finished`` adds them up for every task."""
        fetch = (self.inputs_arrived - self.inputs_requested
                 if self.inputs_arrived is not None and self.inputs_requested is not None else 0.0)
        start = self.started if self.started is not None else self.finished
        wait = max(0.0, (start if start is not None else self.queued) - self.queued - fetch)
        run = round(self.finished - self.started, 6) if self.finished is not None and self.started is not None else 0.0
        return round(fetch, 6), round(wait, 6), run


class Timeline:
    def __init__(self, node: str, capacity: int = 2048, max_open: int = 65_536) -> None:
        if capacity < 1 or max_open < 1:
            raise ValueError("capacity and max_open must be at least 1")
        self.node = node
        self.capacity = capacity
        self.max_open = max_open
        self._open: OrderedDict[tuple[str, int], TaskTimes] = OrderedDict()
        self._done: deque[TaskTimes] = deque(maxlen=capacity)
        self.dropped = 0
        # running totals over every finished record, not only those still in the ring
        self.totals = {"tasks": 0, "wait_s": 0.0, "fetch_s": 0.0, "run_s": 0.0, "bytes_in": 0}
        # run times of every attempt that ran here (ok or error), by device: counts per RUN_BUCKETS (+ one over)
        self.run_hist: dict[str, list[int]] = {}
        self.run_sum: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._done)

    @property
    def open(self) -> int:
        return len(self._open)

    def queued(self, task: str, attempt: int, owner: str, now: float) -> None:
        key = (task, attempt)
        if key in self._open:
            return
        self._open[key] = TaskTimes(task, attempt, owner, self.node, now)
        while len(self._open) > self.max_open:
            self._open.popitem(last=False)
            self.dropped += 1

    def inputs_requested(self, task: str, attempt: int, nbytes: int, now: float) -> None:
        r = self._open.get((task, attempt))
        if r is not None and r.inputs_requested is None:
            r.inputs_requested = now
            r.bytes_in += max(0, nbytes)

    def inputs_arrived(self, task: str, attempt: int, now: float) -> None:
        r = self._open.get((task, attempt))
        if r is not None and r.inputs_requested is not None and r.inputs_arrived is None:
            r.inputs_arrived = now

    def started(self, task: str, attempt: int, device: str, now: float) -> None:
        r = self._open.get((task, attempt))
        if r is not None and r.started is None:
            r.started, r.device = now, device

    def finished(self, task: str, attempt: int, ok: bool, now: float, run_s: float | None = None,
                 device: str | None = None, outcome: str | None = None) -> None:
        """The attempt is over. ``run_s``: how long it ran (the worker's own measurement): the start is then
        ``now - run_s`` (a task handed to a worker ahead of its slot starts when the worker takes it)."""
        r = self._open.pop((task, attempt), None)
        if r is None:
            return
        r.finished = now
        if run_s is not None and run_s >= 0:
            r.started = max(r.queued, now - run_s)
        if device is not None:
            r.device = device
        r.outcome = outcome or ("ok" if ok else "error")
        self._done.append(r)
        fetch_s, wait_s, run_s = r.spans()
        totals = self.totals
        totals["tasks"] += 1
        totals["wait_s"] += wait_s
        totals["fetch_s"] += fetch_s
        totals["run_s"] += run_s
        totals["bytes_in"] += r.bytes_in
        if r.outcome in ("ok", "error") and r.started is not None:
            dev = r.device if r.device in self.run_hist or len(self.run_hist) < _MAX_HIST_DEVICES else "other"
            counts = self.run_hist.get(dev)
            if counts is None:
                counts = self.run_hist[dev] = [0] * (len(RUN_BUCKETS) + 1)
            counts[bisect.bisect_left(RUN_BUCKETS, run_s)] += 1
            self.run_sum[dev] = self.run_sum.get(dev, 0.0) + run_s

    def moved(self, task: str, attempt: int, now: float) -> None:
        """Stolen by a peer before it started: it ends here, and starts a new record there."""
        self.finished(task, attempt, ok=True, now=now, outcome="moved")

    def recent(self, limit: int = 500, offset: float = 0.0) -> list[TaskRecord]:
        """The last ``limit`` finished records, oldest first (``offset`` is added to every time)."""
        items = list(self._done)[-max(0, limit):] if limit else []
        return [r.as_dict(offset) for r in items]

    def summary(self) -> TimelineSummary:
        """Where this node's task time went, over every task it finished (not only those still recorded)."""
        t = self.totals
        n = t["tasks"]
        busy = t["wait_s"] + t["fetch_s"] + t["run_s"]
        return {
            "tasks": int(n),
            "in_flight": len(self._open),
            "recorded": len(self._done),
            "dropped": self.dropped,
            "wait_s": round(t["wait_s"], 4),
            "fetch_s": round(t["fetch_s"], 4),
            "run_s": round(t["run_s"], 4),
            "bytes_in": int(t["bytes_in"]),
            "share": {k: round(t[k] / busy, 3) if busy else 0.0 for k in ("wait_s", "fetch_s", "run_s")},
            "run_hist": {
                "buckets": list(RUN_BUCKETS),
                "devices": {d: {"counts": list(c), "sum": round(self.run_sum[d], 6)} for d, c in self.run_hist.items()},
            },
        }
