"""The sync client's caller thread sending a lone task's SUBMIT itself (``AsyncClient._submit_direct``, issue 19,
docs/performance.md section 16) and reading its answer itself while it waits (``AsyncClient._read_own``, section
20), against real node processes and sockets: every result arrives once and right, alone, mixed with other threads'
work, refused, and across a failover of the node that owns the tasks (killed or stopped while the caller reads)."""

from __future__ import annotations

import concurrent.futures
import signal
import threading
from collections.abc import Iterator

import pytest

from meshaios import Client
from meshaios.chaos import workload as W
from meshaios.errors import RequestRefused
from meshaios.testing.localmesh import LocalMesh, wait_for
from tests.integration import funcs

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def mesh() -> Iterator[LocalMesh]:
    with LocalMesh(1, discovery=False, startup_timeout=60) as m:
        yield m


def _settled(c: Client) -> bool:
    """Nothing of the client's in flight, handed over or kept for its loop: looked at on the loop's thread, so never
    in the middle of its ``_adopt`` (which empties the hand-over before it records what was in it)."""
    a = c._async

    def check() -> bool:
        return (
            not a._pending and not a._handover and not a._handback and a._inflight == 0
            and not any(getattr(getattr(conn, "_lean", None), "_kept", None) for conn in a._conns.values())
        )

    loop = a._loop
    if loop is None or loop.is_closed():
        return check()
    out: concurrent.futures.Future[bool] = concurrent.futures.Future()
    loop.call_soon_threadsafe(lambda: out.set_result(check()))
    return out.result(10)


def _reading(c: Client) -> bool:
    conn = c._async._conns.get(0)
    return conn is not None and conn._lean.reading  # type: ignore[attr-defined]


def test_sequential_tasks_are_sent_from_the_callers_thread_and_each_settles_once(mesh: LocalMesh) -> None:
    with mesh.client(0) as c:
        assert c.submit(funcs.square, -1).result(timeout=30) == 1  # may go the ordinary way while the shard opens
        # A lone task goes the direct way whenever nothing of the client's is unfinished or unrecorded: each task
        # here waits until the loop's thread has recorded the one before (back to back, the caller may outrun the
        # loop's thread on a busy box, and then the task goes the ordinary way: the phase after this one)
        for i in range(40):
            wait_for(lambda: _settled(c), 10, interval=0.001, what="the loop recorded every task and its result")
            sent, read = c._async.sent_direct, c._async.read_direct
            assert c.submit(funcs.square, i).result(timeout=30) == i * i
            assert c._async.sent_direct == sent + 1, i
            assert c._async.read_direct <= read + 1
        # Which thread reads an answer is a race by design: the loop's thread, woken by the socket's signal before
        # the caller has begun its read, reads it and hands it over (26-38 of these 40 were the caller's own, by
        # load). tests/system/test_own_read_races.py holds the caller's read open to test that path deterministically.
        sent = c._async.sent_direct
        for i in range(300):  # back to back: the caller's thread against the loop's
            assert c.submit(funcs.square, i).result(timeout=30) == i * i
        assert c._async.sent_direct > sent
        wait_for(lambda: _settled(c), 10, what="the loop recorded every task and its result")
        assert c.stats["results"] == 341
        assert c.stats["duplicates"] == 0
        # a task with an input, or many at once, go the ordinary way and still find what was sent directly
        f = c.submit(funcs.square, 7)
        assert c.submit(funcs.add, f, 1).result(timeout=30) == 50
        assert c.gather(c.map(funcs.square, range(50)), timeout=30) == [i * i for i in range(50)]


def test_threads_submitting_at_once_mix_both_paths_and_every_result_is_right(mesh: LocalMesh) -> None:
    errors: list[BaseException] = []
    with mesh.client(0) as c:

        def one_at_a_time(base: int) -> None:
            try:
                for i in range(base, base + 150):
                    assert c.submit(funcs.square, i).result(timeout=60) == i * i
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=one_at_a_time, args=(k * 1000,)) for k in range(4)]
        for t in threads:
            t.start()
        futs = c.map(funcs.add, range(400), range(400))
        assert c.gather(futs, timeout=60) == [2 * i for i in range(400)]
        for t in threads:
            t.join(60)
        assert not errors, errors[:3]
        wait_for(lambda: _settled(c), 10, what="the loop recorded every task and its result")
        assert c.stats["results"] == 4 * 150 + 400
        assert c.stats["duplicates"] == 0


def test_a_refused_direct_submit_fails_its_task_and_the_client_carries_on(mesh: LocalMesh) -> None:
    with mesh.client(0) as c:
        assert c.submit(funcs.square, 2).result(timeout=30) == 4
        spec, fut = c._async._prepare(funcs.square, (3,), {})
        spec["fn"] = "not a function payload"  # type: ignore[typeddict-item]  # the node refuses the SUBMIT
        assert c._async._submit_direct((spec, fut))
        with pytest.raises(RequestRefused):
            fut.result(timeout=30)
        assert c.submit(funcs.square, 5).result(timeout=30) == 25
        wait_for(lambda: _settled(c), 10, what="the loop recorded every task and its result")


def _one_at_a_time(c: Client, n: int, results: list[int], errors: list[BaseException]) -> threading.Thread:
    """A thread that runs ``n`` small tasks one after the other, each waited for before the next."""

    def run() -> None:
        try:
            for i in range(n):
                results.append(c.submit(W.work, i, 0.002).result(timeout=60))
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    return t


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "stopped"])
def test_tasks_sent_directly_survive_the_death_of_their_owner(sig: signal.Signals) -> None:
    results: list[int] = []
    errors: list[BaseException] = []
    with LocalMesh(2, startup_timeout=60) as mesh, mesh.client(0, spread=1, heartbeat_timeout=2.0) as c:
        wait_for(lambda: len(c._async._known_nodes) >= 2, 30, what="the client learns the other node")

        t = _one_at_a_time(c, 400, results, errors)
        wait_for(lambda: len(results) >= 100, 30, what="the job under way")
        wait_for(lambda: _reading(c), 10, what="the caller reads the connection")
        mesh.kill(0, sig)  # while the caller reads its connection for the answer, most likely
        try:
            t.join(120)
        finally:
            if sig == signal.SIGSTOP:
                mesh.kill(0, signal.SIGCONT)
        assert not errors, errors[:3]
        assert results == [W.expected_work(i) for i in range(400)]
        assert c._async.failovers == 1
        wait_for(lambda: _settled(c), 10, what="the loop recorded every task and its result")
        assert c.stats["results"] == 400
        assert c._async.sent_direct > 100  # before the failover, and after it on the new connection
        assert c._async.read_direct > 100


def test_results_of_other_futures_that_the_waiting_thread_reads_reach_their_futures(mesh: LocalMesh) -> None:
    with mesh.client(0) as c:
        assert c.submit(funcs.square, 1).result(timeout=30) == 1
        slow = c.submit(funcs.slow_square, 3, 1.0)  # sent directly; its caller reads the connection while it waits
        got: list[int] = []
        waiter = threading.Thread(target=lambda: got.append(slow.result(timeout=60)))
        waiter.start()
        wait_for(lambda: _reading(c), 10, what="the waiting thread reads the connection")
        # the map's SUBMIT goes out from the loop, its results come while the other thread reads
        assert c.gather(c.map(funcs.square, range(200)), timeout=60) == [i * i for i in range(200)]
        assert c.submit(funcs.add, 2, 3, priority=1).result(timeout=30) == 5
        waiter.join(60)
        assert got == [9]
        assert c._async.handed_back >= 1  # the map's results or a PONG, read by that thread, handed to the loop
        wait_for(lambda: _settled(c), 10, what="the loop recorded every task and its result")
        assert c.stats["results"] == 1 + 1 + 200 + 1
        assert c.stats["duplicates"] == 0


def test_a_caller_reading_its_own_answers_while_another_threads_map_runs(mesh: LocalMesh) -> None:
    errors: list[BaseException] = []
    with mesh.client(0) as c:
        done = 0

        def one_at_a_time() -> None:
            nonlocal done
            try:
                for i in range(300):
                    assert c.submit(funcs.square, i).result(timeout=60) == i * i
                    done += 1
            except BaseException as exc:
                errors.append(exc)

        t = threading.Thread(target=one_at_a_time)
        t.start()
        wait_for(lambda: c._async.read_direct >= 20, 30, what="the caller reads its own answers")
        for k in range(3):  # maps start while the caller reads; its next tasks go the ordinary way meanwhile
            wait_for(lambda: _reading(c) or done == 300, 10, what="the caller reads")
            assert c.gather(c.map(funcs.add, range(300), [k] * 300), timeout=60) == [i + k for i in range(300)]
        t.join(60)
        assert not errors, errors[:3]
        wait_for(lambda: _settled(c), 10, what="the loop recorded every task and its result")
        assert c.stats["results"] == 300 + 3 * 300
        assert c.stats["duplicates"] == 0


def test_lone_tasks_go_directly_to_each_owner_in_turn_and_survive_the_loss_of_one() -> None:
    """Several shards (``spread``): a lone task goes from the caller's thread to the next live owner in turn, its
    answer read from that owner's connection; killing one owner mid-loop loses nothing."""
    results: list[int] = []
    errors: list[BaseException] = []
    with LocalMesh(3, startup_timeout=60) as mesh, mesh.client(0, spread=2, heartbeat_timeout=2.0) as c:
        a = c._async
        wait_for(lambda: len(a.core.shards) == 2, 20, what="two owners")
        wait_for(lambda: len(a._known_nodes) >= 3, 30, what="the client learns the mesh")

        t = _one_at_a_time(c, 400, results, errors)
        wait_for(lambda: len(results) >= 100, 30, what="the job under way")
        owned = {}
        for p in mesh.procs:
            with mesh.client(p.index, connect_timeout=2.0, spread=1) as other:
                owned[p.node_id] = int(other.status(timeout=5.0)["node"]["owner"]["submitted"])
        assert all(owned[s.node] >= 30 for s in a.core.shards.values()), owned  # both owners take lone tasks
        victim = next(p.index for p in mesh.procs if p.node_id == a.core.shards[1].node)
        mesh.kill(victim, signal.SIGKILL)
        t.join(120)
        assert not errors, errors[:3]
        assert results == [W.expected_work(i) for i in range(400)]
        assert a.failovers == 1
        wait_for(lambda: _settled(c), 10, what="the loop recorded every task and its result")
        assert c.stats["results"] == 400
        assert c.stats["duplicates"] == 0
        assert a.sent_direct > 300
        assert a.read_direct > 200
