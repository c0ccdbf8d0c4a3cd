"""``concurrent.futures.Executor`` on the mesh: code written for ``ThreadPoolExecutor`` runs unchanged.

>>> with Client() as c, c.executor() as ex:                      # doctest: +SKIP
...     print(list(ex.map(pow, range(5), [2] * 5)))
[0, 1, 4, 9, 16]

What it returns are real ``concurrent.futures.Future`` objects, so ``concurrent.futures.wait``/``as_completed``,
``asyncio.wrap_future`` and libraries that take an executor (Dask's ``scheduler=`` included) work with them. A task
that raised re-raises its original exception where the mesh could send it (a mesh with a token); otherwise the
``meshaios.TaskError`` that describes it. ``map(..., chunksize=n)`` sends ``n`` calls per task, as
``ProcessPoolExecutor`` does. ``cancel()`` succeeds while the call has not finished and cancels its task in the mesh
(``meshaios.Future.cancel``): a queued call never runs, so ``shutdown(cancel_futures=True)`` runs nothing more; one
already running on a node's thread runs to its end with its result dropped (a ``pure=True`` one's process is
terminated). Not (yet) as ``concurrent.futures`` has it: nodes do not report when a call starts, so ``running()``
stays False and ``cancel()`` of a running call returns True. The executor's own options are given to
``client.executor(pure=, retries=, priority=, resources=, task_timeout=)``; every keyword of ``submit`` goes to the
function.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from meshaios.errors import TaskError

T = TypeVar("T")


def run_chunk(fn: Any, chunk: list[tuple[Any, ...]]) -> list[Any]:
    """A ``map`` task with ``chunksize > 1``: the calls of one chunk, in order (runs on a node)."""
    if isinstance(fn, str):
        from meshaios.tasks.functions import resolve_argument  # through the fence of the node running this task

        fn = resolve_argument(fn)
    return [fn(*args) for args in chunk]


class MeshExecutor(concurrent.futures.Executor):
    """``concurrent.futures.Executor`` over a ``meshaios.Client``. It does not own the client: ``shutdown`` waits
    for (or cancels) this executor's futures and leaves the client open."""

    def __init__(self, client: Any, *, pure: bool = False, retries: int = 0, **options: Any) -> None:
        self._client = client
        self._loop: asyncio.AbstractEventLoop = client._loop
        # meshaios's options for every call (``Client.executor``): never mixed with the call's own keywords
        self._options: dict[str, Any] = {"pure": pure, "retries": retries, **options}
        self._lock = threading.Lock()
        self._shutdown = False
        self._pending: set[concurrent.futures.Future[Any]] = set()

    @property
    def _max_workers(self) -> int:
        """How many calls the mesh runs at once (read by libraries that size their batches, e.g. Dask)."""
        try:
            status = self._client.status()
        except Exception:
            return 1
        me = status.get("node", {})
        alive = [m for m in status.get("members", []) if m.get("state") == "alive"]
        return max(1, int(me.get("workers", 1)) + sum(int(m.get("workers", 0)) for m in alive))

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[T]:
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            mesh_future = self._client._submit_call(fn, args, kwargs, **self._options)
            cf: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(_result_of(mesh_future), self._loop)
            self._pending.add(cf)
        cf.add_done_callback(functools.partial(self._forget, mesh_future))
        return cf

    def _forget(self, mesh_future: Any, cf: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._pending.discard(cf)
        if cf.cancelled():
            mesh_future.cancel()  # the call is cancelled in the mesh too: queued, it never runs

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        **kwargs: Any,
    ) -> Iterator[T]:
        """Like ``Executor.map``: every call is submitted now; results come in order; ``timeout`` counts from this
        call; leaving the iterator early cancels what has not finished."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1")
        if kwargs:
            # Python 3.14's ``buffersize``: every call is submitted at once here, so no other keyword is understood
            raise TypeError(f"map() got unexpected keyword arguments {sorted(kwargs)}")
        end = None if timeout is None else time.monotonic() + timeout
        calls = zip(*iterables, strict=False)
        if chunksize == 1:
            futures = [self.submit(fn, *args) for args in calls]
            return _in_order(futures, end, chunked=False)
        from meshaios.tasks.functions import import_ref

        ref = import_ref(fn) or fn  # by reference where possible: insecure meshes cannot take pickled code
        chunks = [self.submit(run_chunk, ref, list(c)) for c in _batched(calls, chunksize)]
        return _in_order(chunks, end, chunked=True)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            pending = list(self._pending)
        if cancel_futures:
            for f in pending:
                f.cancel()
        if wait:
            concurrent.futures.wait(pending)


async def _result_of(mesh_future: Any) -> Any:
    """On the client's loop: the task's value (fetched from the node that holds it, if large), or its error.

    Shielded: cancelling the ``concurrent.futures.Future`` must not cancel the client's own future, which the
    client still resolves when the result arrives.
    """
    inner = asyncio.ensure_future(mesh_future)
    # when the call is cancelled its mesh task is too, and ``inner`` ends in CancelledTaskError that nobody awaits
    inner.add_done_callback(lambda t: t.cancelled() or t.exception())
    try:
        return await asyncio.shield(inner)
    except TaskError as exc:
        if exc.cause is not None:
            raise exc.cause from exc
        raise


def _batched(it: Iterable[T], n: int) -> Iterator[tuple[T, ...]]:
    iterator = iter(it)
    while chunk := tuple(itertools.islice(iterator, n)):
        yield chunk


def _in_order(futures: list[concurrent.futures.Future[Any]], end: float | None, *, chunked: bool) -> Iterator[Any]:
    # a generator made here, not in ``map``: the submissions above happen at the call, not at the first next()
    def results() -> Iterator[Any]:
        try:
            futures.reverse()  # pop() from the end is O(1) and drops our reference to each result as we go
            while futures:
                # no local name holds the future or its value while the caller has it (CPython's
                # test_free_reference: map() must not keep its last result alive)
                timeout = None if end is None else max(0.0, end - time.monotonic())
                if chunked:
                    yield from futures.pop().result(timeout)
                else:
                    yield futures.pop().result(timeout)
        finally:
            for f in futures:
                f.cancel()

    return results()
