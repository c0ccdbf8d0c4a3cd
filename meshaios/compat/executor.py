"""``concurrent.futures.Executor`` on the mesh: code written for ``ThreadPoolExecutor`` runs unchanged.

>>> with Client() as c, c.executor() as ex:                      # doctest: +SKIP
...     print(list(ex.map(pow, range(5), [2] * 5)))
[0, 1, 4, 9, 16]

What ``submit`` returns is a real ``concurrent.futures.Future`` (a ``MeshCallFuture``), so
``concurrent.futures.wait``/``as_completed``, ``asyncio.wrap_future`` and libraries that take an executor (Dask's
``scheduler=`` included) work with it. A call that raised re-raises its original exception where the mesh could send
it (a mesh with a token); otherwise the ``meshaios.TaskError`` that describes it. ``map(..., chunksize=n)`` sends
``n`` calls per task, as ``ProcessPoolExecutor`` does; ``timeout`` counts from the ``map`` call. The executor's own
options are given to ``client.executor(pure=, retries=, priority=, resources=, task_timeout=)``; every keyword of
``submit`` goes to the function.

States, as in ``concurrent.futures``. Each call asks the node that runs it to report its start (``rs``: the node
tells the task's owner, the owner tells the client): from then on ``running()`` is True and ``cancel()`` returns
False; the call runs to its end and its result is delivered.

- Until the report arrives (a millisecond or two after a worker picks the call up) the call counts as pending:
  ``cancel()`` returns True, the future is cancelled at once (``result()`` raises ``CancelledError``, ``wait`` and
  ``as_completed`` see it done, where a thread pool wakes them only when a worker dequeues the call) and its task
  is cancelled in the mesh: a queued call never runs; one that had just started runs to its end, its result
  dropped.
- ``pure=True`` calls run in worker processes, which do not report starts: they stay pending until they finish (a
  cancelled one's process is terminated).
- ``shutdown(cancel_futures=True)`` cancels the calls not reported running.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from meshaios.client import Future, _Remote
from meshaios.errors import CancelledTaskError, MeshUnavailable, TaskError

T = TypeVar("T")


def run_chunk(fn: Any, chunk: list[tuple[Any, ...]]) -> list[Any]:
    """A ``map`` task with ``chunksize > 1``: the calls of one chunk, in order (runs on a node)."""
    if isinstance(fn, str):
        from meshaios.tasks.functions import resolve_argument  # through the fence of the node running this task

        fn = resolve_argument(fn)
    return [fn(*args) for args in chunk]


class MeshCallFuture(concurrent.futures.Future[T]):
    """The ``concurrent.futures.Future`` of one executor call (one task in the mesh; one chunk for a chunked
    ``map``). Settled from the task's ``meshaios.Future``, with a large result fetched from its node first, so
    ``result()`` never waits on the network once ``done()`` is True. See the module's docstring for ``running()``
    and ``cancel()``."""

    def __init__(self, mesh_future: Future, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        # held until the call settles: the task's result stays in the mesh while it may still be fetched
        self._mesh: Future | None = mesh_future
        self._loop = loop  # the client's: where a large result is fetched

    @property
    def task_id(self) -> str | None:
        """The mesh task's id while the call is unfinished (for ``meshaios status`` and the logs), else None."""
        mesh = self._mesh
        return None if mesh is None else mesh.key

    def cancel(self) -> bool:
        """Cancel the call unless it has finished (True then, whether it was queued or running: see the module's
        docstring); waiters in ``wait``/``as_completed`` wake at once, and the task is cancelled in the mesh."""
        if self.cancelled():
            return True
        if not super().cancel():
            return False
        mesh, self._mesh = self._mesh, None
        with contextlib.suppress(RuntimeError):  # RuntimeError: another thread's cancel() got there first
            self.set_running_or_notify_cancel()  # CANCELLED -> CANCELLED_AND_NOTIFIED: what wakes wait()
        if mesh is not None:
            mesh.cancel()
        return True

    def _started(self, mesh: Future) -> None:
        """The node began the call (loop thread): RUNNING, so ``cancel()`` now returns False -- unless the caller
        cancelled it first."""
        with contextlib.suppress(RuntimeError):  # finished or already running: nothing to do
            if not self.done():
                self.set_running_or_notify_cancel()

    def _settle_from(self, mesh: Future) -> None:
        """``mesh`` is done (a done-callback, usually on the client's loop thread): copy its outcome here."""
        if self.done():
            return  # cancelled by the caller; the mesh was told then
        try:
            self._copy(mesh)
        except Exception as exc:  # never leave the call pending: whoever waits for it gets the reason
            self._finish(self.set_exception, exc)

    def _copy(self, mesh: Future) -> None:
        try:
            error = mesh.exception(0)
        except concurrent.futures.CancelledError:  # its meshaios future was cancelled (``client.cancel``)
            error = CancelledTaskError("")
        if isinstance(error, concurrent.futures.CancelledError):  # ... or the mesh cancelled it (a dependency was)
            self.cancel()
        elif error is not None:
            if isinstance(error, TaskError) and error.cause is not None:
                cause = error.cause
                cause.__cause__ = error  # the remote traceback stays reachable, as ``raise cause from error`` does
                error = cause
            self._finish(self.set_exception, error)
        elif not isinstance(value := mesh._cf.result(), _Remote):
            self._finish(self.set_result, value)
        else:  # a large result, still on the node that made it: fetched on the client's loop, not on this thread
            try:
                fetch = asyncio.run_coroutine_threadsafe(_fetch(mesh), self._loop)
            except RuntimeError:  # the loop is closed: the client was closed
                self._finish(self.set_exception, MeshUnavailable("client closed before the result was fetched"))
                return
            fetch.add_done_callback(self._settle_fetched)

    def _settle_fetched(self, fetch: concurrent.futures.Future[Any]) -> None:
        error = fetch.exception()
        if error is not None:
            self._finish(self.set_exception, error)
        else:
            self._finish(self.set_result, fetch.result())

    def _finish(self, setter: Callable[[Any], None], outcome: Any) -> None:
        self._mesh = None
        with contextlib.suppress(concurrent.futures.InvalidStateError):  # cancelled meanwhile: cancel() won
            setter(outcome)


async def _fetch(mesh: Future) -> Any:
    return await mesh


class MeshExecutor(concurrent.futures.Executor):
    """``concurrent.futures.Executor`` over a ``meshaios.Client``. It does not own the client: ``shutdown`` waits
    for (or cancels) this executor's futures and leaves the client open."""

    def __init__(self, client: Any, *, pure: bool = False, retries: int = 0, **options: Any) -> None:
        self._client = client
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

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> MeshCallFuture[T]:
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            mesh_future = self._client._submit_call(fn, args, kwargs, report_start=True, **self._options)
            cf: MeshCallFuture[T] = MeshCallFuture(mesh_future, self._client._loop)
            self._pending.add(cf)
        cf.add_done_callback(self._forget)
        self._client._loop.call_soon_threadsafe(mesh_future._add_start_callback, cf._started)
        mesh_future.add_done_callback(cf._settle_from)
        return cf

    def _forget(self, cf: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._pending.discard(cf)

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        **kwargs: Any,
    ) -> Iterator[T]:
        """Like ``Executor.map``: every call is submitted now; results come in order; ``timeout`` counts from this
        call; leaving the iterator early (or its ``TimeoutError``) cancels what has not finished."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1")
        if kwargs:
            # Python 3.14's ``buffersize``: every call is submitted at once here, so no other keyword is understood
            raise TypeError(f"map() got unexpected keyword arguments {sorted(kwargs)}")
        end = None if timeout is None else time.monotonic() + timeout
        calls = zip(*iterables, strict=False)
        if chunksize == 1:
            futures: list[concurrent.futures.Future[Any]] = [self.submit(fn, *args) for args in calls]
            return _in_order(futures, end, chunked=False)
        from meshaios.tasks.functions import import_ref

        ref = import_ref(fn) or fn  # by reference where possible: insecure meshes cannot take pickled code
        chunks: list[concurrent.futures.Future[Any]] = [
            self.submit(run_chunk, ref, list(c)) for c in _batched(calls, chunksize)
        ]
        return _in_order(chunks, end, chunked=True)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more submissions; ``cancel_futures=True`` cancels every unfinished call (queued or running, see the
        module's docstring); ``wait=True`` returns when every call has finished or been cancelled."""
        with self._lock:
            self._shutdown = True
            pending = list(self._pending)
        if cancel_futures:
            for f in pending:
                f.cancel()
        if wait:
            concurrent.futures.wait(pending)


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
                    yield from _result_or_cancel(futures.pop(), timeout)
                else:
                    yield _result_or_cancel(futures.pop(), timeout)
        finally:
            for f in futures:
                f.cancel()

    return results()


def _result_or_cancel(future: concurrent.futures.Future[Any], timeout: float | None) -> Any:
    """The result; if it times out (or the wait is interrupted), the call is cancelled too: popped from ``map``'s
    list already, it would otherwise escape the cancelling of the rest (CPython's
    test_executor_map_current_future_cancel)."""
    try:
        return future.result(timeout)
    finally:
        future.cancel()  # a no-op on a finished call
