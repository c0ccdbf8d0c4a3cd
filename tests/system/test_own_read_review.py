"""Review of the sync client's own read (``AsyncClient._read_own``, io/lean.py, docs/performance.md sections 20 and
29) under concurrency, against a real node process: many threads each sending lone tasks from their own thread and
reading their own answers, a cancel from another thread racing a caller that reads, and a read left begun by a
thread (the state Ctrl-Cs in a row inside ``end_read`` leave) taken up again by that same thread. What must hold:
every future gets exactly its own value, each result is counted once, nothing is left pending or kept, and the
connection is read by the loop again afterwards. Unfinished tasks wait on a file the test creates
(``funcs.square_at_gate``), never on a sleep."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshaios.errors import CancelledTaskError
from meshaios.testing.localmesh import LocalMesh, wait_for
from tests.integration import funcs
from tests.system.test_direct_submit_processes import _reading, _settled
from tests.system.test_own_read_races import _warm

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def mesh() -> Iterator[LocalMesh]:
    with LocalMesh(1, discovery=False, startup_timeout=60) as m:
        yield m


def _run_threads(n: int, body: object) -> list[BaseException]:
    errors: list[BaseException] = []

    def run(k: int) -> None:
        try:
            body(k)  # type: ignore[operator]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not any(t.is_alive() for t in threads), "a thread still waits"
    return errors


def test_eight_threads_each_sending_lone_tasks_get_exactly_their_own_answers(mesh: LocalMesh) -> None:
    """8 threads x 200 tasks, each thread waiting on its own task before sending the next: some go from the
    caller's thread (``_submit_direct``) and are read by it, others are refused the read while another thread
    reads (the loop reads for them), some answers are read by the wrong thread and handed to the loop. Each
    ``result()`` is its own task's value; every result is counted once; nothing stays pending or kept."""
    threads, per = 8, 200
    with mesh.client(0, heartbeat_timeout=60.0) as c:
        _warm(c)
        a = c._async
        results = c.stats["results"]
        sent, read = a.sent_direct, a.read_direct

        def body(k: int) -> None:
            for i in range(per):
                x = k * 1000 + i
                assert c.submit(funcs.square, x).result(timeout=60) == x * x

        errors = _run_threads(threads, body)
        assert not errors, errors[:3]
        wait_for(lambda: _settled(c), 20, what="the loop recorded every task and its result")
        assert c.stats["results"] == results + threads * per
        assert c.stats["duplicates"] == 0
        assert not _reading(c)
        assert a.sent_direct > sent  # the direct path was taken under concurrency too
        assert a.read_direct >= read
        assert c.submit(funcs.square, 9).result(timeout=30) == 81


def test_threads_cancelling_each_others_lone_tasks_while_their_callers_read(mesh: LocalMesh, tmp_path: Path) -> None:
    """4 threads each send a gated lone task and wait on it (one of them reads the connection); another thread
    cancels every one of them: each ``result()`` raises ``CancelledTaskError`` (none waits forever), and afterwards
    lone tasks go and come back as before."""
    gate = str(tmp_path / "gate")
    n = 4
    with mesh.client(0, heartbeat_timeout=60.0) as c:
        _warm(c)
        futs: list[object] = [None] * n
        made = threading.Barrier(n + 1)

        def body(k: int) -> None:
            f = c.submit(funcs.square_at_gate, k, gate)
            futs[k] = f
            made.wait(30)
            with pytest.raises(CancelledTaskError):
                f.result(timeout=60)

        def canceller() -> None:
            made.wait(30)
            # a caller's read of a gated task ends at the first PONG (within a heartbeat, 0.25 s): the cancels come
            # during a read when it is caught, after it otherwise -- each must end its ``result()`` either way
            deadline = time.monotonic() + 1.0
            while not _reading(c) and time.monotonic() < deadline:
                pass
            for f in futs:
                assert f is not None
                f.cancel()  # type: ignore[attr-defined]

        t = threading.Thread(target=canceller)
        t.start()
        try:
            errors = _run_threads(n, body)
        finally:
            t.join(60)
            Path(gate).touch()
        assert not errors, errors[:3]
        assert not t.is_alive()
        wait_for(lambda: not _reading(c), 10, what="the connection back to the loop")
        for i in range(20):
            assert c.submit(funcs.square, i).result(timeout=30) == i * i
        wait_for(lambda: _settled(c), 20, what="the loop recorded every task and its result")
        assert c.stats["duplicates"] == 0


def test_a_read_left_begun_is_taken_up_by_the_same_threads_next_lone_task(mesh: LocalMesh) -> None:
    """The state Ctrl-Cs in a row inside ``end_read`` leave: this thread began a read it never ended. Its next lone
    task goes from this thread, which reads again (``thread_begins`` lets the same thread go on), ends the read,
    and the loop reads afterwards: another thread's tasks come back too."""
    with mesh.client(0, heartbeat_timeout=60.0) as c:
        _warm(c)
        conn = c._async._conns[0]
        assert conn.begin_read()  # ... and never ended
        f = c.submit(funcs.square, 6)
        assert f._direct is not None
        assert f.result(timeout=30) == 36
        assert not _reading(c)
        got: list[int] = []
        t = threading.Thread(target=lambda: got.append(c.submit(funcs.square, 7).result(timeout=30)))
        t.start()
        t.join(60)
        assert got == [49]
        wait_for(lambda: _settled(c), 20, what="the loop recorded every task and its result")
        assert c.stats["duplicates"] == 0


def test_lone_tasks_of_some_threads_and_batches_of_another_all_come_back(mesh: LocalMesh) -> None:
    """4 threads send lone tasks one after another while a fifth sends batches of 50 and gathers them: the lone
    ones go from their callers' threads while nothing else is unfinished, the ordinary way otherwise; every value
    is its own task's, each result is counted once."""
    with mesh.client(0, heartbeat_timeout=60.0) as c:
        _warm(c)
        results = c.stats["results"]

        def body(k: int) -> None:
            if k == 4:
                for r in range(10):
                    xs = [r * 100 + j for j in range(50)]
                    assert c.gather([c.submit(funcs.square, x) for x in xs], timeout=60) == [x * x for x in xs]
                return
            for i in range(150):
                x = k * 1000 + i
                assert c.submit(funcs.square, x).result(timeout=60) == x * x

        errors = _run_threads(5, body)
        assert not errors, errors[:3]
        wait_for(lambda: _settled(c), 20, what="the loop recorded every task and its result")
        assert c.stats["results"] == results + 4 * 150 + 10 * 50
        assert c.stats["duplicates"] == 0
        assert not _reading(c)


def _ctrl_cs_in_end_read(c: Any, n: int) -> Any:
    """A lone task whose caller gets ``n`` Ctrl-Cs in ``_read_own``'s ``end_read`` calls, each before the read is
    ended: the read ends all the same (before, two left it begun, refusing every other reader and the loop until
    the heartbeat timeout failed the connection over, and leaking its wake-up pipe at close)."""
    conn = c._async._conns[0]
    orig = conn.end_read
    calls = [0]

    def end_read(*args: Any) -> bool:
        calls[0] += 1
        if calls[0] <= n:
            raise KeyboardInterrupt
        return bool(orig(*args))

    conn.end_read = end_read
    try:
        f = c.submit(funcs.square, 3)
        assert f._direct is not None
        with pytest.raises(KeyboardInterrupt):
            f.result(timeout=10, cancel_on_interrupt=False)
    finally:
        conn.end_read = orig
    assert calls[0] == n + 1
    assert not conn._lean.reading
    return conn


@pytest.mark.parametrize("ctrl_cs", [2, 5])
def test_ctrl_cs_in_a_row_in_end_read_leave_no_read_begun(mesh: LocalMesh, ctrl_cs: int) -> None:
    with mesh.client(0, heartbeat_timeout=60.0) as c:
        _warm(c)
        wait_for(lambda: _settled(c), 10, what="the loop recorded every task and its result")
        _ctrl_cs_in_end_read(c, ctrl_cs)
        got: list[Any] = []
        t = threading.Thread(target=lambda: got.append(c.submit(funcs.square, 4).result(timeout=10)))
        t.start()
        t.join(30)
        assert got == [16]  # another thread's lone task: the socket is read again
        assert c.submit(funcs.add, c.submit(funcs.square, 2), 1).result(timeout=10) == 5  # the ordinary way
        assert c._async.failovers == 0


def test_closing_after_ctrl_cs_in_end_read_closes_the_wake_up_pipe(mesh: LocalMesh) -> None:
    c = mesh.client(0, heartbeat_timeout=60.0)
    try:
        _warm(c)
        conn = _ctrl_cs_in_end_read(c, 2)
    finally:
        c.close()
    assert conn._lean._pipe is None
