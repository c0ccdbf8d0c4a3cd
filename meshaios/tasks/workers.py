"""Worker threads that take tasks from a queue and hand results back to the event loop in batches.

Why not ``loop.run_in_executor``: for tiny tasks its per-task cost (an asyncio future, a concurrent future, a
done-callback and one loop wake-up per task) is larger than the task. Here a worker appends its result to a
shared list and wakes the loop only when that list was empty, so a burst of completions costs one wake-up and
one pass of the node's bookkeeping.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger(__name__)

_STOP = object()


class WorkerPool:
    def __init__(
        self,
        n: int,
        name: str,
        loop: asyncio.AbstractEventLoop,
        on_done: Callable[[list[tuple[Any, Any]]], None],
    ) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._loop = loop
        self._on_done = on_done
        self._lock = threading.Lock()
        self._done: list[tuple[Any, Any]] = []
        self._waiting: set[Any] = set()  # keys of items submitted with one and not started yet (see ``recall``)
        self.busy = 0
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(n)]
        for t in self._threads:
            t.start()

    def submit(self, ctx: Any, fn: Callable[[Any], Any], arg: Any, key: Any = None) -> None:
        """Queue ``fn(arg)``; with a ``key``, it may be taken back by ``recall`` until a worker starts it."""
        if key is not None:
            with self._lock:
                self._waiting.add(key)
        self._queue.put((ctx, fn, arg, key))

    def recall(self, keys: list[Any]) -> list[Any]:
        """Take back the items of ``keys`` that no worker has started: they will never run (a worker skips them).
        Returns those taken back; the others run (or ran) as usual. Atomic with a worker's start."""
        with self._lock:
            back = [k for k in keys if k in self._waiting]
            self._waiting.difference_update(back)
        return back

    def _work(self) -> None:
        while self._work_one(self._queue.get()):
            pass

    def _work_one(self, item: Any) -> bool:
        """One item; False to stop. A function of its own so that nothing of a finished task -- its arguments, its
        inputs, its result -- stays referenced from this thread's frame while it waits for the next one (a quiet
        node held the last task's 100 MiB inputs until another task came)."""
        if item is _STOP:
            return False
        ctx, fn, arg, key = item
        with self._lock:
            if key is not None:
                if key not in self._waiting:
                    return True  # recalled
                self._waiting.discard(key)
            self.busy += 1
        try:
            result: Any = fn(arg)
        except BaseException as exc:  # handed to the loop: a task must never kill its worker thread
            result = exc
        with self._lock:
            self.busy -= 1
            first = not self._done
            self._done.append((ctx, result))
        if first:
            try:
                self._loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # the loop is closed: the node is gone, nobody wants the result
                return False
        return True

    def _drain(self) -> None:
        with self._lock:
            batch, self._done = self._done, []
        if batch:
            self._on_done(batch)

    def shutdown(self, timeout: float = 1.0) -> None:
        """Stop taking work. Threads stuck in a task are left to finish on their own (daemon threads)."""
        for _ in self._threads:
            self._queue.put(_STOP)
        for t in self._threads:
            t.join(timeout=timeout / max(1, len(self._threads)))


class Pool(Protocol):
    """What the node needs of a pool of task runners (``WorkerPool``, or ``InlinePool`` on a virtual clock)."""

    busy: int

    def submit(self, ctx: Any, fn: Callable[[Any], Any], arg: Any, key: Any = None) -> None: ...

    def recall(self, keys: list[Any]) -> list[Any]: ...

    def shutdown(self, timeout: float = 1.0) -> None: ...


PoolFactory = Callable[[int, str, asyncio.AbstractEventLoop, Callable[[list[tuple[Any, Any]]], None]], Pool]


class InlinePool:
    """Runs submitted items on the event loop itself, ``n`` at a time in submission order, one loop callback per
    item: no threads, so a mesh on a virtual clock (``meshaios.testing.vtime``) is deterministic -- a worker
    thread's real time would let virtual time run ahead of it. Same contract as ``WorkerPool``: ``recall`` takes
    back items not started; a raised exception is handed to ``on_done`` as the result. For tests and simulations
    only: a task blocks the loop while it runs. ``task_seconds``: how long (on the loop's clock) each item holds
    its slot before its result is handed back, so that on a virtual clock work is in flight when faults strike."""

    def __init__(
        self,
        n: int,
        name: str,
        loop: asyncio.AbstractEventLoop,
        on_done: Callable[[list[tuple[Any, Any]]], None],
        task_seconds: float = 0.0,
    ) -> None:
        self.n = max(1, n)
        self.task_seconds = task_seconds
        self._loop = loop
        self._on_done = on_done
        self._queue: collections.deque[tuple[Any, Callable[[Any], Any], Any, Any]] = collections.deque()
        self._waiting: set[Any] = set()
        self._stopped = False
        self._scheduled = False
        self.busy = 0

    def submit(self, ctx: Any, fn: Callable[[Any], Any], arg: Any, key: Any = None) -> None:
        if key is not None:
            self._waiting.add(key)
        self._queue.append((ctx, fn, arg, key))
        self._schedule()

    def recall(self, keys: list[Any]) -> list[Any]:
        back = [k for k in keys if k in self._waiting]
        self._waiting.difference_update(back)
        return back

    def _schedule(self) -> None:
        if not self._scheduled and self._queue and self.busy < self.n and not self._stopped:
            self._scheduled = True
            self._loop.call_soon(self._run_next)

    def _run_next(self) -> None:
        self._scheduled = False
        while self._queue and not self._stopped:
            ctx, fn, arg, key = self._queue.popleft()
            if key is not None:
                if key not in self._waiting:
                    continue  # recalled
                self._waiting.discard(key)
            self.busy += 1
            try:
                result: Any = fn(arg)
            except BaseException as exc:  # as in a worker thread: handed to the loop
                result = exc
            if self.task_seconds > 0:
                self._loop.call_later(self.task_seconds, self._finish, ctx, result)
            else:
                self._finish(ctx, result)
            break
        self._schedule()

    def _finish(self, ctx: Any, result: Any) -> None:
        self.busy -= 1
        if not self._stopped:
            self._on_done([(ctx, result)])
        self._schedule()

    def shutdown(self, timeout: float = 1.0) -> None:
        self._stopped = True
