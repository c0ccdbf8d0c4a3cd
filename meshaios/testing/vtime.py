"""An asyncio event loop on virtual time: the clock moves only when the loop has nothing to do, and then straight to
its next timer. A mesh of real ``Node`` objects on the in-memory transport (``InProcessMesh(virtual=True)``) runs
on it with no threads (``InlinePool`` runs tasks on the loop, ``SyncExecutor`` runs what the node hands to an
executor): seconds of SWIM timeouts, heartbeats and failovers pass in milliseconds, and the machine's load does not
change what happens. A seed replays its faults at the same virtual times; what still varies between two runs of
one seed is what the nodes draw without it (the client's task ids, the runtimes the model learns from).

Why not a library (looptime, timeless-loop): they keep real time flowing for thread pools and I/O, which is what
makes a run depend on the machine's load; here there is no thread to wait for, and a loop that would wait on one
is a bug of the setup, not something to paper over.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import selectors
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class SyncExecutor(concurrent.futures.ThreadPoolExecutor):
    """Runs what is submitted at once, in the caller's thread (the loop's): disk I/O and decoding that the node
    puts on a thread take no virtual time and cannot race the clock. (A ``ThreadPoolExecutor`` by type only:
    ``loop.set_default_executor`` takes nothing else; no thread is ever started.)"""

    def __init__(self) -> None:
        super().__init__(max_workers=1)

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[T]:
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            fut.set_exception(exc)
        return fut


class _VirtualSelector(selectors.BaseSelector):
    """The loop's selector: polls its file descriptors without waiting; where the loop would wait for its next
    timer, moves the loop's virtual clock to that timer instead."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        self._inner = selectors.DefaultSelector()
        self._loop = loop

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._inner.select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:  # no timer at all: only another thread (asyncio's executor shutdown) can wake the loop
            return self._inner.select(None)
        self._loop.advance(timeout)
        return []

    def close(self) -> None:
        self._inner.close()

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._inner.get_map()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """``time()`` is virtual: it starts at ``start`` and moves only when the loop is idle (nothing ready to run,
    no file descriptor ready), to the next timer. Its default executor runs calls inline (``SyncExecutor``)."""

    def __init__(self, start: float = 0.0) -> None:
        self._vnow = start
        super().__init__(_VirtualSelector(self))
        self.set_default_executor(SyncExecutor())

    def time(self) -> float:
        return self._vnow

    def advance(self, dt: float) -> None:
        if dt > 0:
            self._vnow += dt


def run_virtual(main: Coroutine[Any, Any, T], *, start: float = 0.0) -> T:
    """``asyncio.run`` on a fresh ``VirtualTimeLoop``."""
    with asyncio.Runner(loop_factory=lambda: VirtualTimeLoop(start)) as runner:
        return runner.run(main)
