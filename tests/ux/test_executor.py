"""``MeshExecutor``: code written for ``ThreadPoolExecutor`` gives the same results on the mesh."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from meshaios.client import Client
from meshaios.compat.executor import MeshExecutor
from meshaios.testing.localmesh import LocalMesh, wait_for
from tests.ux import cf_funcs, funcs


def compute_all(executor: Executor) -> dict[str, Any]:
    """Written for a ThreadPoolExecutor: submit, as_completed, wait, map (plain, chunked, several iterables),
    exceptions, and asyncio interop."""
    by_future = {executor.submit(funcs.square, i): i for i in range(20)}
    squares = {by_future[f]: f.result() for f in concurrent.futures.as_completed(by_future, timeout=60)}
    sums = list(executor.map(funcs.add, range(10), range(100, 110)))
    chunked = list(executor.map(funcs.square, range(23), chunksize=5))
    done, not_done = concurrent.futures.wait([executor.submit(funcs.slow_square, 7, 0.05)], timeout=60)
    try:
        executor.submit(funcs.boom, "no good").result(timeout=60)
        error = ""
    except ValueError as exc:  # the original exception type, as a thread pool raises it
        error = f"ValueError: {exc}"
    big = executor.submit(funcs.big, 50_000).result(timeout=60)  # 400 kB: fetched from the node that made it

    async def with_asyncio() -> list[int]:
        return list(await asyncio.gather(*(asyncio.wrap_future(executor.submit(funcs.square, i)) for i in range(5))))

    return {
        "squares": squares,
        "sums": sums,
        "chunked": chunked,
        "waited": [f.result() for f in done] + [len(not_done)],
        "error": error,
        "big": float(big.sum()),
        "asyncio": asyncio.run(with_asyncio()),
    }


@pytest.fixture
def executor(client: Client) -> Iterator[Executor]:
    ex = client.executor() if hasattr(client, "executor") else MeshExecutor(client)
    with ex:
        yield ex


def test_same_results_as_a_thread_pool(executor: Executor) -> None:
    with ThreadPoolExecutor(4) as pool:
        expected = compute_all(pool)
    got = compute_all(executor)
    assert got == expected
    assert got["squares"] == {i: i * i for i in range(20)}
    assert got["big"] == float(np.arange(50_000).sum())


def test_map_timeout_counts_from_the_call_and_cancels_the_rest(executor: Executor, tmp_path: Any) -> None:
    gate = str(tmp_path / "gate")
    try:
        it = executor.map(cf_funcs.wait_for_file, [gate] * 4, timeout=0.3)
        with pytest.raises(TimeoutError):
            list(it)
    finally:
        (tmp_path / "gate").touch()
    # the client keeps working after cancelled futures' results arrive and are dropped
    assert list(executor.map(funcs.square, range(3))) == [0, 1, 4]


def test_map_is_eager_and_lazy_results_come_in_order(executor: Executor, tmp_path: Any) -> None:
    from tests.system import sched_funcs

    log = str(tmp_path / "log")
    it = executor.map(sched_funcs.mark, [log] * 3, ["c", "a", "b"], [0.3, 0.0, 0.1])
    # submitted at the call, not at the first next(): every call starts while nobody iterates
    wait_for(lambda: sorted(sched_funcs.started(log)) == ["a", "b", "c"], 30, what="every call started")
    assert list(it) == ["c", "a", "b"]
    with pytest.raises(ValueError, match="chunksize"):
        executor.map(funcs.square, [1], chunksize=0)


def test_shutdown_semantics(client: Client, tmp_path: Any) -> None:
    gate = str(tmp_path / "gate")
    ex = MeshExecutor(client)
    try:
        slow = [ex.submit(cf_funcs.wait_for_file, gate) for _ in range(3)]  # unfinished until the gate opens
        fast = ex.submit(funcs.square, 4)
        assert fast.result(timeout=30) == 16
        wait_for(lambda: all(f.running() for f in slow), 30, what="the three calls reported running")
        ex.shutdown(wait=False, cancel_futures=True)
        assert not any(f.cancelled() for f in slow)  # running calls are not cancelled, as in a thread pool
        with pytest.raises(RuntimeError, match="after shutdown"):
            ex.submit(funcs.square, 1)
    finally:
        (tmp_path / "gate").touch()
    assert [f.result(timeout=30) for f in slow] == [None] * 3

    ex2 = MeshExecutor(client)
    pending = [ex2.submit(funcs.slow_square, i, 0.2) for i in range(4)]
    ex2.shutdown(wait=True)
    assert all(f.done() and not f.cancelled() for f in pending)
    assert [f.result() for f in pending] == [0, 1, 4, 9]
    assert client.submit(funcs.square, 9).result(timeout=30) == 81  # the client is not the executor's to close


def test_cancel_before_the_result_and_dask_takes_it_as_a_scheduler(client: Client) -> None:
    ex = MeshExecutor(client)
    f = ex.submit(funcs.slow_square, 2, 0.5)
    assert f.cancel()
    assert f.cancelled()
    time.sleep(0.7)  # the mesh's late result is dropped without disturbing the client
    assert ex.submit(funcs.add, 1, 2).result(timeout=30) == 3

    dask = pytest.importorskip("dask")
    import dask.array as da

    x = da.arange(1000, chunks=100)
    assert dask.compute((x * 2).sum(), scheduler=ex)[0] == 999_000  # Dask's own executor path
    ex.shutdown()


# ---- concurrent.futures semantics (adapted from CPython's Lib/test/test_concurrent_futures) -------------------


def test_keywords_reach_the_function_and_options_stay_the_executors(client: Client) -> None:
    with client.executor(retries=1) as ex:
        got = ex.submit(funcs.keywords, retries=3, pure=True, priority=5, timeout=1).result(timeout=60)
    assert got == {"retries": 3, "pure": True, "priority": 5, "timeout": 1}


def test_no_stale_references(client: Client) -> None:
    """CPython's test_no_stale_references: a bound method's object is not kept alive by the executor."""
    import gc
    import threading
    import weakref

    obj = funcs.Holder()
    collected = threading.Event()
    ref = weakref.ref(obj, lambda _: collected.set())
    with client.executor() as ex:
        assert ex.submit(obj.method).result(timeout=60) == 7
        del obj
        gc.collect()
        assert collected.wait(10)
    assert ref() is None


def test_map_does_not_hold_its_last_result(client: Client) -> None:
    """CPython's test_free_reference (adapted): what map() yielded is not kept alive by the iterator."""
    import gc
    import weakref

    with client.executor() as ex:
        it = ex.map(funcs.big, [10, 20])
        first = next(it)
        ref = weakref.ref(first)
        del first
        # the thread that settled the call may hold it for a moment longer: not the iterator's reference
        wait_for(lambda: gc.collect() >= 0 and ref() is None, 10, what="the first result freed")
        assert len(next(it)) == 20


def _node(mesh: LocalMesh, index: int) -> dict[str, Any]:
    with mesh.client(index) as c:
        me: dict[str, Any] = c.status()["node"]
        return me


def test_cancelled_queued_calls_never_run_and_shutdown_cancels(
    client: Client, ux_mesh: LocalMesh, tmp_path: Any
) -> None:
    from tests.system import sched_funcs

    log, gate = str(tmp_path / "starts"), str(tmp_path / "gate")
    aborted = [_node(ux_mesh, i)["counters"].get("aborted", 0) for i in range(3)]

    # every slot of the mesh held, by tasks outside the executor: its calls stay queued
    blockers = client.map(sched_funcs.gated, [log] * 6, [f"B{i}" for i in range(6)], [gate] * 6)
    try:
        ex = client.executor()
        wait_for(lambda: len(sched_funcs.started(log)) == 6, 30, what="every slot held")
        queued = [ex.submit(sched_funcs.mark, log, f"Q{i}") for i in range(20)]
        assert queued[0].cancel()
        assert queued[0].cancelled()
        with pytest.raises(concurrent.futures.CancelledError):
            queued[0].result()
        ex.shutdown(wait=False, cancel_futures=True)
        assert all(f.cancelled() for f in queued)
        with pytest.raises(RuntimeError):
            ex.submit(funcs.square, 1)
        client.ping()  # the cancels were sent before this ping: the owner has them
        # ... and its aborts reach the nodes a moment later: each holds its two blockers and nothing it has not
        # aborted (calls prefetched to its workers stay counted until a worker drops them, so: at most that many)
        wait_for(
            lambda: all(
                (me := _node(ux_mesh, i))["queued"] - 2 <= me["counters"].get("aborted", 0) - aborted[i]
                for i in range(3)
            ),
            30,
            what="every queued call the nodes hold aborted",
        )
    finally:
        (tmp_path / "gate").touch()  # whatever happened: the mesh is shared by the session's later tests
    assert client.gather(blockers, timeout=60) == [f"B{i}" for i in range(6)]
    wait_for(lambda: client.status()["node"]["pending"] == 0, 30, what="nothing pending")
    assert [t for t in sched_funcs.started(log) if t.startswith("Q")] == []
