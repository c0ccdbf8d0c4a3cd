"""Worker threads that take tasks from a queue and hand results back to the event loop in batches.

Why not ``loop.run_in_executor``: for tiny tasks its per-task cost (an asyncio future, a concurrent future, a
done-callback and one loop wake-up per task) is larger than the task. Here a worker appends its result to a
shared list and wakes the loop only when that list was empty, so a burst of completions costs one wake-up and
one pass of the node's bookkeeping.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

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
        self.busy = 0
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(n)]
        for t in self._threads:
            t.start()

    def submit(self, ctx: Any, fn: Callable[[Any], Any], arg: Any) -> None:
        self._queue.put((ctx, fn, arg))

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            ctx, fn, arg = item
            with self._lock:
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
                    return

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
