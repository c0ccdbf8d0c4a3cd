"""CPython's ``Lib/test/test_concurrent_futures`` cases, adapted to ``client.executor()`` and to meshaios futures.

Each test names the CPython case it adapts. Where CPython blocks a call on a ``threading.Event``, the call here
blocks on a file (``gate``) that the test opens in a ``finally`` (the fixture's teardown included: the mesh is
shared with the rest of the session). The ``wait``/``as_completed`` cases run three ways (``flavour``): executor
futures with ``concurrent.futures.wait``/``as_completed``; executor futures with ``meshaios.wait``/
``meshaios.as_completed``; plain ``meshaios.Future`` objects from ``client.submit`` with ``meshaios.wait``/
``meshaios.as_completed``, mixed with ``concurrent.futures`` futures in every state, as CPython mixes them.

Adapted with a difference, on purpose (see ``meshaios.compat.executor``):
- ``test_cancel_futures``: ``shutdown(cancel_futures=True)`` cancels every call not yet reported running (a start
  report takes a moment to arrive): every future ends cancelled or finished without error; one call is awaited
  first so that "some finished" holds without a race.
- ``test_executor_map_current_future_cancel``: the pool's one worker is the mesh's every slot, held by gated
  tasks submitted outside the executor.
- ``test_map_timeout``: the blocking call is gated, and the timeout 3 s instead of 5 s.
- ``test_pending_calls_race``: without ``sys.setswitchinterval(1e-6)``: the race it hunted is in the standard
  library's waiters, which both ``wait`` functions use unchanged.

Not adapted, and why:
- ``test_max_workers_negative``, ``test_default_workers``, ``test_saturation``, ``test_idle_thread_reuse``,
  ``test_threads_terminate``, ``test_processes_terminate``, ``test_thread_names_*``, ``test_hang_global_shutdown_lock``,
  ``test_process_fork_from_a_threadpool``, ``test_shutdown_gh_132969_*``: they inspect the executor's own threads,
  processes and ``max_workers``; a ``MeshExecutor`` has none (each node's pools are the node's, shared by clients).
- ``test_interpreter_shutdown``, ``test_submit_after_interpreter_shutdown``, ``test_hang_gh83386``,
  ``test_cancel_futures_wait_false``: exit hooks of the executor's threads. A ``MeshExecutor`` registers none: a
  script that exits without ``shutdown()`` leaves its calls to the mesh, which cancels a gone client's queued
  tasks after its lease (docs/scheduling.md, cancellation).
- ``test_init.py`` (``initializer=``): nodes run many clients' tasks; there is no per-executor worker to initialise.
- ``test_deadlock.py``, ``test_process_pool.py``, ``test_interpreter_pool.py``: crashes and pickling failures inside
  a local process pool; their mesh counterparts (a worker process killed, an unpicklable result) are covered by
  tests/system.
- ``test_future.py``: the ``Future`` class's own state machine on bare futures; what an executor future must do in
  each state is adapted in ``test_future_states_of_a_call``; callback-error logging and ``InvalidStateError`` cases
  are the standard library's own code, unchanged.
- ``test_free_reference_yielded_future`` on bare ``concurrent.futures`` futures is the standard library's; it is
  adapted here with meshaios futures through ``meshaios.as_completed``.
"""

from __future__ import annotations

import concurrent.futures
import gc
import itertools
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import meshaios
from meshaios.client import Client
from meshaios.compat.executor import MeshExecutor
from meshaios.testing.localmesh import wait_for
from tests.system import sched_funcs
from tests.ux import cf_funcs
from tests.ux.cf_funcs import capture, make_dummy_object, mul, wait_and_raise, wait_for_file

T = 60.0  # a bound on any result: the tests never wait for it unless something is broken


@pytest.fixture
def ex(client: Client) -> Iterator[MeshExecutor]:
    executor: MeshExecutor = client.executor()
    try:
        yield executor
    finally:
        executor.shutdown(wait=False, cancel_futures=True)


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[str]:
    """A file the gated calls wait for; opened at teardown whatever the test did."""
    path = tmp_path / "gate"
    try:
        yield str(path)
    finally:
        path.touch()


@pytest.fixture
def gate2(tmp_path: Path) -> Iterator[str]:
    path = tmp_path / "gate2"
    try:
        yield str(path)
    finally:
        path.touch()


def freed(ref: weakref.ref[Any]) -> bool:
    """The object is collected; the client's loop thread, which settled its future and woke the caller, may hold
    it a moment longer (CPython's worker threads do the same): that reference is not the one under test."""
    return bool(wait_for(lambda: gc.collect() >= 0 and ref() is None, T, what="the object collected"))


def open_gate(path: str) -> None:
    Path(path).touch()


@dataclass
class Flavour:
    name: str
    submit: Callable[..., Any]
    wait: Callable[..., Any]
    as_completed: Callable[..., Any]


@pytest.fixture(params=["executor", "executor-meshaios", "client"])
def flavour(request: pytest.FixtureRequest, client: Client, ex: MeshExecutor) -> Flavour:
    if request.param == "executor":
        return Flavour("executor", ex.submit, concurrent.futures.wait, concurrent.futures.as_completed)
    if request.param == "executor-meshaios":
        return Flavour("executor-meshaios", ex.submit, meshaios.wait, meshaios.as_completed)
    return Flavour("client", client.submit, meshaios.wait, meshaios.as_completed)


def done_futures() -> SimpleNamespace:
    """CPython's ``util.py`` futures in every state, made through the public API."""
    successful: concurrent.futures.Future[Any] = concurrent.futures.Future()
    successful.set_result(42)
    exception: concurrent.futures.Future[Any] = concurrent.futures.Future()
    exception.set_exception(OSError())
    cancelled: concurrent.futures.Future[Any] = concurrent.futures.Future()
    cancelled.cancel()
    notified: concurrent.futures.Future[Any] = concurrent.futures.Future()
    notified.cancel()
    notified.set_running_or_notify_cancel()
    running: concurrent.futures.Future[Any] = concurrent.futures.Future()
    running.set_running_or_notify_cancel()
    return SimpleNamespace(
        SUCCESSFUL=successful,
        EXCEPTION=exception,
        CANCELLED=cancelled,
        CANCELLED_AND_NOTIFIED=notified,
        PENDING=concurrent.futures.Future(),
        RUNNING=running,
    )


# ---- executor.py: ExecutorTest ---------------------------------------------------------------------------------


def test_submit(flavour: Flavour) -> None:
    assert flavour.submit(pow, 2, 8).result(timeout=T) == 256


def test_submit_keyword(ex: MeshExecutor) -> None:
    assert ex.submit(mul, 2, y=8).result(timeout=T) == 16
    args, kwargs = ex.submit(capture, 1, self=2, fn=3).result(timeout=T)
    assert (tuple(args), kwargs) == ((1,), {"self": 2, "fn": 3})
    with pytest.raises(TypeError):
        ex.submit(fn=capture, arg=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        ex.submit(arg=1)  # type: ignore[call-arg]


def test_map(ex: MeshExecutor) -> None:
    expected = list(map(pow, range(10), range(10)))
    assert list(ex.map(pow, range(10), range(10))) == expected
    assert list(ex.map(pow, range(10), range(10), chunksize=3)) == expected


def test_map_exception(ex: MeshExecutor) -> None:
    it = ex.map(divmod, [1, 1, 1, 1], [2, 3, 0, 5])
    assert tuple(next(it)) == (0, 1)
    assert tuple(next(it)) == (0, 1)
    with pytest.raises(ZeroDivisionError):  # the original exception, as a thread pool raises it
        next(it)


def test_map_timeout(ex: MeshExecutor, gate: str, tmp_path: Path) -> None:
    opened = tmp_path / "open"
    opened.touch()
    it = ex.map(wait_for_file, [str(opened), str(opened), gate], timeout=3)
    assert [next(it), next(it)] == [None, None]
    with pytest.raises(TimeoutError):
        next(it)


def test_shutdown_race_issue12456(client: Client) -> None:
    ex = client.executor()
    ex.map(str, [2] * (ex._max_workers + 1))
    ex.shutdown()


def test_no_stale_references(ex: MeshExecutor) -> None:
    my_object = cf_funcs.MyObject()
    collected = threading.Event()
    ref = weakref.ref(my_object, lambda _: collected.set())
    ex.submit(my_object.my_method)  # the future is deliberately discarded, as CPython's test does
    del my_object
    wait_for(lambda: gc.collect() >= 0 and collected.is_set(), T, what="the object collected")
    assert ref() is None


def test_free_reference(ex: MeshExecutor) -> None:
    for obj in ex.map(make_dummy_object, range(10)):
        wr = weakref.ref(obj)
        del obj
        assert freed(wr)


# ---- test_thread_pool.py -----------------------------------------------------------------------------------------


def test_map_submits_without_iteration(client: Client, tmp_path: Path) -> None:
    log = str(tmp_path / "log")
    ex = client.executor()
    ex.map(sched_funcs.mark, [log] * 10, [str(i) for i in range(10)])  # never iterated
    ex.shutdown(wait=True)
    assert sorted(sched_funcs.started(log), key=int) == [str(i) for i in range(10)]


def test_executor_map_current_future_cancel(client: Client, tmp_path: Path, gate: str) -> None:
    log = str(tmp_path / "log")
    slots = client.executor()._max_workers
    blockers = client.map(sched_funcs.gated, [log] * slots, [f"first{i}" for i in range(slots)], [gate] * slots)
    try:
        wait_for(lambda: len(sched_funcs.started(log)) == slots, T, what="every slot of the mesh held")
        with client.executor() as ex:
            gen = ex.map(sched_funcs.mark, [log, log], ["second", "third"], timeout=0)
            try:
                with pytest.raises(TimeoutError):
                    next(gen)
            finally:
                gen.close()
            client.ping()  # the cancels were sent before this ping: the owner has them
            open_gate(gate)
    finally:
        open_gate(gate)
    client.gather(blockers, timeout=T)
    wait_for(lambda: client.status()["node"]["pending"] == 0, T, what="nothing pending")
    assert "second" not in sched_funcs.started(log)
    assert "third" not in sched_funcs.started(log)


# ---- test_wait.py ----------------------------------------------------------------------------------------------


def test_wait_20369(flavour: Flavour) -> None:
    future = flavour.submit(mul, 1, 2)
    done, not_done = flavour.wait([future, future], return_when=concurrent.futures.ALL_COMPLETED)
    assert done == {future}
    assert not_done == set()


def test_first_completed(flavour: Flavour, gate: str) -> None:
    d = done_futures()
    future1 = flavour.submit(mul, 21, 2)
    future2 = flavour.submit(wait_for_file, gate)
    try:
        done, not_done = flavour.wait([d.CANCELLED, future1, future2], return_when=concurrent.futures.FIRST_COMPLETED)
        assert done == {future1}
        assert not_done == {d.CANCELLED, future2}
    finally:
        open_gate(gate)
    future2.result(timeout=T)


def test_first_completed_some_already_completed(flavour: Flavour, gate: str) -> None:
    d = done_futures()
    future1 = flavour.submit(wait_for_file, gate)
    try:
        finished, pending = flavour.wait(
            [d.CANCELLED_AND_NOTIFIED, d.SUCCESSFUL, future1], return_when=concurrent.futures.FIRST_COMPLETED
        )
        assert finished == {d.CANCELLED_AND_NOTIFIED, d.SUCCESSFUL}
        assert pending == {future1}
    finally:
        open_gate(gate)
    future1.result(timeout=T)


def test_first_exception(flavour: Flavour, gate: str, gate2: str) -> None:
    future1 = flavour.submit(mul, 2, 21)
    future2 = flavour.submit(wait_and_raise, gate)
    future3 = flavour.submit(wait_for_file, gate2)
    try:

        def wait_for_future1() -> None:  # future1 finishes before future2 can
            future1.result(timeout=T)
            open_gate(gate)

        t = threading.Thread(target=wait_for_future1)
        t.start()
        finished, pending = flavour.wait([future1, future2, future3], return_when=concurrent.futures.FIRST_EXCEPTION)
        assert finished == {future1, future2}
        assert pending == {future3}
        t.join(T)
    finally:
        open_gate(gate)
        open_gate(gate2)
    future3.result(timeout=T)


def test_first_exception_some_already_complete(flavour: Flavour, gate: str) -> None:
    d = done_futures()
    future1 = flavour.submit(divmod, 21, 0)
    future2 = flavour.submit(wait_for_file, gate)
    try:
        finished, pending = flavour.wait(
            [d.SUCCESSFUL, d.CANCELLED, d.CANCELLED_AND_NOTIFIED, future1, future2],
            return_when=concurrent.futures.FIRST_EXCEPTION,
        )
        assert finished == {d.SUCCESSFUL, d.CANCELLED_AND_NOTIFIED, future1}
        assert pending == {d.CANCELLED, future2}
    finally:
        open_gate(gate)
    future2.result(timeout=T)


def test_first_exception_one_already_failed(flavour: Flavour, gate: str) -> None:
    d = done_futures()
    future1 = flavour.submit(wait_for_file, gate)
    try:
        finished, pending = flavour.wait([d.EXCEPTION, future1], return_when=concurrent.futures.FIRST_EXCEPTION)
        assert finished == {d.EXCEPTION}
        assert pending == {future1}
    finally:
        open_gate(gate)
    future1.result(timeout=T)


def test_all_completed(flavour: Flavour) -> None:
    d = done_futures()
    future1 = flavour.submit(divmod, 2, 0)
    future2 = flavour.submit(mul, 2, 21)
    given = [d.SUCCESSFUL, d.CANCELLED_AND_NOTIFIED, d.EXCEPTION, future1, future2]
    finished, pending = flavour.wait(given, return_when=concurrent.futures.ALL_COMPLETED)
    assert finished == set(given)
    assert pending == set()


def test_wait_timeout(flavour: Flavour, gate: str) -> None:
    d = done_futures()
    future = flavour.submit(wait_for_file, gate)
    try:
        finished, pending = flavour.wait(
            [d.CANCELLED_AND_NOTIFIED, d.EXCEPTION, d.SUCCESSFUL, future],
            timeout=0.05,
            return_when=concurrent.futures.ALL_COMPLETED,
        )
        assert finished == {d.CANCELLED_AND_NOTIFIED, d.EXCEPTION, d.SUCCESSFUL}
        assert pending == {future}
    finally:
        open_gate(gate)
    future.result(timeout=T)


def test_pending_calls_race(flavour: Flavour, gate: str) -> None:
    fs = {flavour.submit(wait_for_file, gate) for _ in range(100)}
    open_gate(gate)
    done, not_done = flavour.wait(fs, timeout=T, return_when=concurrent.futures.ALL_COMPLETED)
    assert done == fs
    assert not_done == set()


# ---- test_as_completed.py --------------------------------------------------------------------------------------


def test_as_completed_no_timeout(flavour: Flavour) -> None:
    d = done_futures()
    future1 = flavour.submit(mul, 2, 21)
    future2 = flavour.submit(mul, 7, 6)
    given = {d.CANCELLED_AND_NOTIFIED, d.EXCEPTION, d.SUCCESSFUL, future1, future2}
    assert set(flavour.as_completed(given)) == given


@pytest.mark.parametrize("timeout", [0, 0.1])
def test_future_times_out(flavour: Flavour, gate: str, timeout: float) -> None:
    d = done_futures()
    already_completed = {d.CANCELLED_AND_NOTIFIED, d.EXCEPTION, d.SUCCESSFUL}
    future = flavour.submit(wait_for_file, gate)
    try:
        it = flavour.as_completed(already_completed | {future}, timeout)
        assert {next(it) for _ in already_completed} == already_completed
        with pytest.raises(TimeoutError):
            next(it)  # ``future`` is not yielded
    finally:
        open_gate(gate)
    future.result(timeout=T)


def test_duplicate_futures(flavour: Flavour) -> None:
    future1 = flavour.submit(mul, 3, 4)
    completed = list(flavour.as_completed(itertools.repeat(future1, 3)))
    assert completed == [future1]


def test_free_reference_yielded_future(client: Client, gate: str) -> None:
    """meshaios.as_completed keeps no reference to a meshaios future it has yielded, finished early or late."""
    futures_list = [client.submit(wait_for_file, gate) for _ in range(4)]
    futures_list += [client.submit(mul, 6, 7) for _ in range(2)]
    try:
        wait_for(lambda: all(f.done() for f in futures_list[4:]), T, what="two futures finished")
        it = meshaios.as_completed(futures_list, timeout=0)
        for _ in range(2):
            future = next(it)
            futures_list.remove(future)
            wr = weakref.ref(future)
            del future
            assert freed(wr)
        with pytest.raises(TimeoutError):
            next(it)
        del it
        assert len(futures_list) == 4
    finally:
        open_gate(gate)
    for future in meshaios.as_completed(futures_list, timeout=T):
        futures_list.remove(future)
        wr = weakref.ref(future)
        del future
        assert freed(wr)
    assert futures_list == []


def test_correct_timeout_exception_msg(client: Client, gate: str) -> None:
    d = done_futures()
    with pytest.raises(TimeoutError) as info:
        list(meshaios.as_completed([d.CANCELLED_AND_NOTIFIED, d.PENDING, d.RUNNING, d.SUCCESSFUL], timeout=0))
    assert str(info.value) == "2 (of 4) futures unfinished"
    assert isinstance(info.value, meshaios.MeshTimeoutError)

    done = client.submit(mul, 1, 1)
    done.result(timeout=T)
    blocked = client.submit(wait_for_file, gate)
    try:
        with pytest.raises(meshaios.MeshTimeoutError, match=r"^1 \(of 2\) futures unfinished$"):
            list(client.as_completed([done, blocked], timeout=0))
    finally:
        open_gate(gate)
    blocked.result(timeout=T)


# ---- test_shutdown.py ------------------------------------------------------------------------------------------


def test_run_after_shutdown(client: Client) -> None:
    ex = client.executor()
    ex.shutdown()
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        ex.submit(pow, 2, 5)


def test_hang_issue12364(client: Client) -> None:
    ex = client.executor()
    fs = [ex.submit(time.sleep, 0.01) for _ in range(50)]
    ex.shutdown()
    for f in fs:
        assert f.done()
        f.result()


def test_cancel_futures(client: Client) -> None:
    ex = client.executor()
    fs = [ex.submit(time.sleep, 0.1) for _ in range(200)]
    fs[0].result(timeout=T)  # at least one finished (CPython leaves this to the race)
    ex.shutdown(cancel_futures=True)
    cancelled = [f for f in fs if f.cancelled()]
    # 200 calls of 0.1 s on the mesh's six slots (and what each node prefetches for them): most had not started when
    # shutdown came. (With 50 and "more than 20", a client spreading its calls over three owners, each starting its
    # share at once, left exactly 20 once.)
    assert len(cancelled) > 100
    others = [f for f in fs if not f.cancelled()]
    assert others
    for f in others:
        assert f.done()
        assert f.exception() is None


def test_hang_gh94440(client: Client) -> None:
    ex = client.executor()
    ex.submit(int).result(timeout=T)
    ex.submit(int).cancel()
    t = threading.Thread(target=ex.shutdown, kwargs={"wait": True})
    t.start()
    t.join(T)
    assert not t.is_alive(), "shutdown(wait=True) hangs on a cancelled call"


def test_context_manager_shutdown(client: Client) -> None:
    with client.executor() as e:
        assert list(e.map(abs, range(-5, 5))) == [5, 4, 3, 2, 1, 0, 1, 2, 3, 4]
    with pytest.raises(RuntimeError):
        e.submit(abs, 1)


@pytest.mark.parametrize("how", ["del", "shutdown_no_wait"])
def test_shutdown_no_wait_and_del(client: Client, how: str) -> None:
    """test_del_shutdown and test_shutdown_no_wait: calls submitted before still compute."""
    executor: MeshExecutor | None = client.executor()
    assert executor is not None
    res = executor.map(abs, range(-5, 5))
    if how == "del":
        executor = None
        gc.collect()
    else:
        executor.shutdown(wait=False)
    assert list(res) == [abs(v) for v in range(-5, 5)]


# ---- test_future.py, on an executor call's future --------------------------------------------------------------


def test_future_states_of_a_call(ex: MeshExecutor, client: Client, gate: str) -> None:
    called: list[Any] = []
    blocked = client.submit(wait_for_file, gate)
    running = ex.submit(wait_for_file, gate)
    pending = ex.submit(mul, blocked, 2)  # cannot start before its input exists: queued at the owner
    try:
        wait_for(running.running, T, what="the call reported running")  # its node tells us (start report)
        assert not running.done()
        assert not running.cancelled()
        assert "running" in repr(running)
        assert not running.cancel()  # as in a thread pool: a running call cannot be cancelled
        assert running.running()
        assert not running.cancelled()

        assert not pending.running()
        assert not pending.done()
        assert not pending.cancelled()
        assert "pending" in repr(pending)
        pending.add_done_callback(called.append)
        assert pending.cancel()
        assert pending.cancel()  # cancelling twice: still True, as concurrent.futures answers
        assert pending.cancelled()
        assert pending.done()
        assert not pending.running()
        assert called == [pending]
        with pytest.raises(concurrent.futures.CancelledError):
            pending.result(timeout=0)
        with pytest.raises(concurrent.futures.CancelledError):
            pending.exception(timeout=0)
        # woken at once: a cancelled call is CANCELLED_AND_NOTIFIED, not left for a worker to notice
        done, _ = concurrent.futures.wait([pending], timeout=0)
        assert done == {pending}
        assert list(concurrent.futures.as_completed([pending], timeout=0)) == [pending]
    finally:
        open_gate(gate)
    running.result(timeout=T)
    assert not running.running()
    blocked.result(timeout=T)

    finished = ex.submit(mul, 6, 7)
    assert finished.result(timeout=T) == 42
    assert finished.done()
    assert not finished.running()
    assert not finished.cancelled()
    assert not finished.cancel()  # a finished call cannot be cancelled
    assert finished.exception() is None
    late: list[Any] = []
    finished.add_done_callback(late.append)  # called at once on a done future
    assert late == [finished]

    failed = ex.submit(divmod, 1, 0)
    assert isinstance(failed.exception(timeout=T), ZeroDivisionError)
    assert not failed.cancel()


def test_a_running_call_cannot_be_cancelled(ex: MeshExecutor, tmp_path: Path, gate: str) -> None:
    """As in a thread pool: once its node reports the start, ``running()`` is True and ``cancel()`` False; the call
    runs to its end and its result is delivered."""
    log = str(tmp_path / "log")
    f = ex.submit(sched_funcs.gated, log, "run", gate)
    try:
        wait_for(lambda: "run" in sched_funcs.started(log), T, what="the call started on a node")
        wait_for(f.running, T, what="its start reported")
        assert not f.cancel()
        assert not f.cancelled()
    finally:
        open_gate(gate)
    assert f.result(timeout=T) == "run"
    assert not f.running()


def test_a_call_whose_input_was_cancelled_is_cancelled(ex: MeshExecutor, client: Client, gate: str) -> None:
    """The mesh cancels a task whose input was cancelled; its executor future is then cancelled, as a future whose
    ``result()`` raises ``CancelledError`` is in ``concurrent.futures``."""
    blocked = client.submit(wait_for_file, gate)
    try:
        dependent = ex.submit(mul, blocked, 2)
        assert blocked.cancel()
        with pytest.raises(concurrent.futures.CancelledError):
            dependent.result(timeout=T)
        assert dependent.cancelled()
        assert concurrent.futures.wait([dependent], timeout=0).done == {dependent}
    finally:
        open_gate(gate)


def test_meshaios_futures_and_the_standard_library(client: Client, gate: str) -> None:
    """concurrent.futures.wait cannot take a meshaios.Future (not a concurrent.futures.Future): the error says what
    to use; meshaios.wait takes both kinds, and a cancelled meshaios future wakes it at once."""
    f = client.submit(mul, 2, 3)
    with pytest.raises(AttributeError, match=r"meshaios\.wait"):
        concurrent.futures.wait([f], timeout=T)
    assert meshaios.wait([f], timeout=T).done == {f}
    blocked = client.submit(wait_for_file, gate)
    try:
        assert blocked.cancel()
        done, not_done = meshaios.wait([blocked], timeout=0)
        assert (done, not_done) == ({blocked}, set())
        assert list(meshaios.as_completed([blocked], timeout=0)) == [blocked]
    finally:
        open_gate(gate)
    with pytest.raises(ValueError, match="return_when"):
        meshaios.wait([f], return_when="SOMETIMES")
    with pytest.raises(TypeError, match="futures"):
        meshaios.wait([42])
