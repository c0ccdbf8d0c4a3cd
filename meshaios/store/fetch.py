"""Which objects a node must pull before it can run a task, from where, and how many bytes at once.

Pure bookkeeping (events in, actions out) so that the fetch policy -- dedupe concurrent fetches of one object,
cap bytes in flight, try the next holder when one dies, give up with the exact list of lost objects -- is tested
without sockets and reused by the simulator. The node does the sends and the object-store writes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Generic, TypeAlias, TypeVar

T = TypeVar("T")  # what waits for the inputs: the planner only hands it back (the node's RUN task, or a client GET)


@dataclass(frozen=True, slots=True)
class SendFetch:
    """Ask ``holder`` for ``obj``."""

    holder: str
    obj: str
    req: int


@dataclass(frozen=True, slots=True)
class Runnable(Generic[T]):
    """Every input of the task is now local."""

    task: T


@dataclass(frozen=True, slots=True)
class InputsLost(Generic[T]):
    """No holder could deliver these inputs: the owner must recompute them (lineage)."""

    task: T
    lost: list[str]


FetchAction: TypeAlias = SendFetch | Runnable[T] | InputsLost[T]


@dataclass(slots=True)
class _Want:
    obj: str
    holders: list[str]
    size: int
    tried: list[str] = field(default_factory=list)
    req: int = 0
    holder: str = ""
    started: float = 0.0
    waiters: list[int] = field(default_factory=list)
    timeouts: int = 0


@dataclass(slots=True)
class _Waiting(Generic[T]):
    task: T
    missing: set[str]
    lost: list[str] = field(default_factory=list)


MAX_TIMEOUTS = 3  # unanswered fetches of one object before a live holder's silence counts as "not there"


class FetchPlanner(Generic[T]):
    def __init__(self, max_bytes_in_flight: int = 256 << 20, timeout: float = 60.0) -> None:
        self.max_bytes_in_flight = max_bytes_in_flight
        self.timeout = timeout
        self.bytes_in_flight = 0
        self._wants: dict[str, _Want] = {}
        self._queue: deque[str] = deque()  # objects waiting for in-flight budget
        self._by_req: dict[int, str] = {}
        self._tasks: dict[int, _Waiting[T]] = {}
        self._next_req = 0
        self._next_task = 0
        self.fetched = 0
        self.fetched_bytes = 0
        self.failed = 0

    def need(
        self, task: T, remote: dict[str, tuple[list[str], int]], have: set[str], now: float
    ) -> list[FetchAction[T]]:
        """``remote``: obj -> (holders, size) for inputs not inline; ``have``: those already in the local store."""
        missing = {o for o in remote if o not in have}
        if not missing:
            return [Runnable(task)]
        tid = self._next_task
        self._next_task += 1
        self._tasks[tid] = _Waiting(task, missing)
        out: list[FetchAction[T]] = []
        for obj in sorted(missing):
            w = self._wants.get(obj)
            if w is None:
                holders, size = remote[obj]
                w = _Want(obj, list(holders), size)
                self._wants[obj] = w
                self._queue.append(obj)
            w.waiters.append(tid)
        out.extend(self._start(now))
        return out

    def request(self, req: int) -> tuple[str, int, float] | None:
        """``(holder, bytes, sent at)`` of a fetch still in flight: with the reply's arrival time, a measurement of
        that link's bandwidth (``sched.inputs.Links``)."""
        obj = self._by_req.get(req)
        w = self._wants.get(obj) if obj is not None else None
        return None if w is None else (w.holder, w.size, w.started)

    def arrived(self, req: int, ok: bool, now: float) -> list[FetchAction[T]]:
        """A reply to ``req``: the object is now in the store (ok) or the holder did not have it."""
        obj = self._by_req.pop(req, None)
        if obj is None:
            return []  # late reply to a request we gave up on
        w = self._wants[obj]
        self.bytes_in_flight -= w.size
        if ok:
            self.fetched += 1
            self.fetched_bytes += w.size
            del self._wants[obj]
            out = self._resolve(w, lost=False)
        else:
            out = self._retry(w)
        out.extend(self._start(now))
        return out

    def holder_dead(self, node: str, now: float) -> list[FetchAction[T]]:
        out: list[FetchAction[T]] = []
        for w in list(self._wants.values()):
            if node in w.holders:
                w.holders.remove(node)
            if w.holder == node and w.req:
                self._by_req.pop(w.req, None)
                self.bytes_in_flight -= w.size
                out.extend(self._retry(w))
        out.extend(self._start(now))
        return out

    def tick(self, now: float) -> list[FetchAction[T]]:
        """Fetches unanswered for ``timeout`` s go to another holder. Silence is not an answer: a holder still
        alive (``holder_dead`` was not called) is asked again, after the others, until it has been silent
        ``MAX_TIMEOUTS`` times -- a request or its reply may have been dropped (a full queue between two nodes
        drops a message), and a put, which has no lineage, would otherwise be declared lost while a live node
        holds it."""
        out: list[FetchAction[T]] = []
        for w in list(self._wants.values()):
            if w.req and now - w.started > self.timeout:
                self._by_req.pop(w.req, None)
                self.bytes_in_flight -= w.size
                w.timeouts += 1
                if w.timeouts < MAX_TIMEOUTS and w.holder in w.tried:
                    w.tried.remove(w.holder)
                    w.holders.remove(w.holder)
                    w.holders.append(w.holder)  # the others first
                out.extend(self._retry(w))
        out.extend(self._start(now))
        return out

    @property
    def pending(self) -> int:
        return len(self._wants)

    # ---- internals ----------------------------------------------------------------------------------------
    def _retry(self, w: _Want) -> list[FetchAction[T]]:
        w.req = 0
        w.holder = ""
        if any(h not in w.tried for h in w.holders):
            self._queue.appendleft(w.obj)
            return []
        self.failed += 1
        del self._wants[w.obj]
        return self._resolve(w, lost=True)

    def _resolve(self, w: _Want, lost: bool) -> list[FetchAction[T]]:
        out: list[FetchAction[T]] = []
        for tid in w.waiters:
            t = self._tasks.get(tid)
            if t is None:
                continue
            t.missing.discard(w.obj)
            if lost:
                t.lost.append(w.obj)
            if not t.missing:
                del self._tasks[tid]
                out.append(InputsLost(t.task, sorted(t.lost)) if t.lost else Runnable(t.task))
        return out

    def _start(self, now: float) -> list[FetchAction[T]]:
        out: list[FetchAction[T]] = []
        while self._queue:
            obj = self._queue[0]
            w = self._wants.get(obj)
            if w is None or w.req:
                self._queue.popleft()
                continue
            # always let one fetch through, however large, or a big object could never move
            if self.bytes_in_flight and self.bytes_in_flight + w.size > self.max_bytes_in_flight:
                break
            self._queue.popleft()
            holder = next((h for h in w.holders if h not in w.tried), None)
            if holder is None:
                self.failed += 1
                del self._wants[obj]
                out.extend(self._resolve(w, lost=True))
                continue
            self._next_req += 1
            w.req = self._next_req
            w.holder = holder
            w.tried.append(holder)
            w.started = now
            self._by_req[w.req] = obj
            self.bytes_in_flight += w.size
            out.append(SendFetch(holder, obj, w.req))
        return out
