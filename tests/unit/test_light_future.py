"""``meshaios.Future`` keeps its outcome in two attributes and makes its ``concurrent.futures.Future`` (lock,
condition, waiters) only when a thread waits, a callback is added or it is cancelled. Settled here by hand from
another thread, as the client's loop thread settles it (``_set_result``/``_set_exception``)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

import meshaios
from meshaios.client import Future
from meshaios.errors import CancelledTaskError, MeshTimeoutError, TaskError


def mesh_future(key: str) -> Future:
    return Future(key, None)  # type: ignore[arg-type]  # no client: nothing to release, nothing to fetch


def later(delay: float, fn: Any, *args: Any) -> threading.Thread:
    t = threading.Timer(delay, fn, args)
    t.start()
    return t


def test_settled_before_anyone_looks_it_never_makes_a_concurrent_future() -> None:
    f, g = mesh_future("f"), mesh_future("g")
    assert not f.done()
    f._set_result(41)
    g._set_exception(TaskError("g", "ValueError", "bad", ""))
    assert f.done()
    assert g.done()
    assert f.result() == 41
    assert f.exception() is None
    assert isinstance(g.exception(), TaskError)
    with pytest.raises(TaskError):
        g.result()
    assert not f.cancel()
    assert not f.cancelled()
    assert f._cf_ is None
    assert g._cf_ is None
    seen: list[Any] = []
    f.add_done_callback(lambda fut: seen.append(fut.result()))  # a callback on a done future runs at once
    assert seen == [41]


def test_a_thread_blocked_in_result_or_exception_wakes_when_the_loop_settles_it() -> None:
    f, g = mesh_future("f"), mesh_future("g")
    later(0.05, f._set_result, "v")
    later(0.05, g._set_exception, TaskError("g", "KeyError", "k", ""))
    assert f.result(timeout=10) == "v"
    assert isinstance(g.exception(timeout=10), TaskError)
    h = mesh_future("h")
    with pytest.raises(MeshTimeoutError):
        h.result(timeout=0.01)


def test_callbacks_added_before_the_outcome_run_once_with_it_from_the_settling_thread() -> None:
    f = mesh_future("f")
    seen: list[tuple[Any, str]] = []
    f.add_done_callback(lambda fut: seen.append((fut.result(), threading.current_thread().name)))
    t = threading.Thread(target=f._set_result, args=(7,), name="settler")
    t.start()
    t.join()
    assert seen == [(7, "settler")]
    f._set_result(8)  # a second outcome is ignored
    assert f.result() == 7


def test_await_from_a_loop_while_another_thread_settles() -> None:
    async def main() -> list[Any]:
        f, g, done = mesh_future("f"), mesh_future("g"), mesh_future("done")
        done._set_result("early")
        later(0.05, f._set_result, 1)
        later(0.05, g._set_exception, TaskError("g", "ValueError", "bad", ""))
        out = [await done, await f]
        with pytest.raises(TaskError):
            await g
        return out

    assert asyncio.run(main()) == ["early", 1]


def test_as_completed_and_wait_from_other_threads() -> None:
    fs = [mesh_future(f"t{i}") for i in range(20)]
    for f in fs[:5]:
        f._set_result(f.key)  # light: done before anyone waits
    got: list[str] = []
    waiter = threading.Thread(target=lambda: got.extend(f.result() for f in meshaios.as_completed(fs, timeout=30)))
    waiter.start()
    for f in fs[5:]:
        time.sleep(0.002)
        f._set_result(f.key)
    waiter.join(30)
    assert sorted(got) == sorted(f.key for f in fs)
    assert meshaios.wait(fs, timeout=0).not_done == set()


def test_cancel_wins_over_a_later_outcome_and_loses_to_an_earlier_one() -> None:
    f, g = mesh_future("f"), mesh_future("g")
    assert f._cancel_local()
    f._set_result(1)  # the owner's late answer: the cancel stands
    assert f.cancelled()
    assert f.done()
    with pytest.raises(CancelledTaskError):
        f.result()
    g._set_result(2)
    assert not g._cancel_local()
    assert g.result() == 2


def test_many_waiters_and_one_settler_race_without_losing_an_outcome() -> None:
    fs = [mesh_future(f"t{i}") for i in range(2000)]
    results: list[Any] = [None] * len(fs)

    def wait_all(offset: int) -> None:
        for i in range(offset, len(fs), 4):
            results[i] = fs[i].result(timeout=30)

    waiters = [threading.Thread(target=wait_all, args=(k,)) for k in range(4)]
    for t in waiters:
        t.start()
    for i, f in enumerate(fs):
        f._set_result(i)
    for t in waiters:
        t.join(30)
    assert results == list(range(len(fs)))


def test_a_lone_thread_in_result_waits_on_one_lock_and_never_makes_a_concurrent_future() -> None:
    """A sequential ``submit().result()``: the settling thread releases the waiter's lock, nothing else."""
    f = mesh_future("f")
    later(0.05, f._set_result, "v")
    assert f.result(timeout=10) == "v"
    assert f._cf_ is None
    assert f._waiter is None
    g = mesh_future("g")
    later(0.05, g._set_exception, TaskError("g", "KeyError", "k", ""))
    with pytest.raises(TaskError):
        g.result(timeout=10)
    assert g._cf_ is None
    h = mesh_future("h")
    with pytest.raises(MeshTimeoutError):
        h.result(timeout=0.01)
    assert h._waiter is None  # a later result() waits afresh
    h._set_result(3)
    assert h.result(timeout=0) == 3


def test_a_thread_waiting_on_the_lock_wakes_for_a_cancel_a_callback_or_a_second_waiter() -> None:
    """Another thread makes the ``concurrent.futures.Future`` while the first waits on its lock: the outcome goes
    there, and the first thread still gets it (or the cancellation)."""
    for how in ("cancel", "callback", "second waiter"):
        f = mesh_future(how)
        out: list[Any] = []

        def wait(f: Future = f, out: list[Any] = out) -> None:
            try:
                out.append(f.result(timeout=10))
            except CancelledTaskError as exc:
                out.append(exc)

        first = threading.Thread(target=wait)
        first.start()
        while f._waiter is None:  # the first waits on its lock now
            time.sleep(0.001)
        if how == "cancel":
            assert f._cancel_local()
        elif how == "callback":
            seen: list[Any] = []
            f.add_done_callback(seen.append)
            f._set_result("late")
        else:
            second = threading.Thread(target=wait)
            second.start()
            while f._cf_ is None:  # the second made the concurrent.futures.Future (and waits on it)
                time.sleep(0.001)
            f._set_result("both")
            second.join(10)
        first.join(10)
        assert not first.is_alive()
        if how == "cancel":
            assert len(out) == 1
            assert isinstance(out[0], CancelledTaskError)
        elif how == "callback":
            assert out == ["late"]
            assert seen == [f]
        else:
            assert out == ["both", "both"]
