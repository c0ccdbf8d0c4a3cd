"""OverrunGuard (tasks/guard.py): a user's function run inline is interrupted when it overstays, wherever it waits,
and whatever SIGALRM handler and timer were there before are there after."""

from __future__ import annotations

import gc
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from meshaios.tasks.guard import InlineOverrun, OverrunGuard


@pytest.fixture
def own_alarm() -> Iterator[list[int]]:
    """A SIGALRM handler of someone else's and a timer of theirs, armed far ahead (as pytest-timeout's are)."""
    seen: list[int] = []
    before = signal.getsignal(signal.SIGALRM)
    left = signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, lambda *_: seen.append(1))
    signal.setitimer(signal.ITIMER_REAL, 100.0)
    try:
        yield seen
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)
        if left[0] > 0:
            signal.setitimer(signal.ITIMER_REAL, *left)


def test_a_call_that_returns_in_time_is_not_touched_and_the_previous_handler_and_timer_come_back(
    own_alarm: list[int],
) -> None:
    theirs = signal.getsignal(signal.SIGALRM)
    g = OverrunGuard(5.0)
    assert g.usable()
    assert g.call(sum, [1, 2, 3]) == 6
    assert g.fired == 0
    assert signal.getsignal(signal.SIGALRM) is theirs
    left, _ = signal.getitimer(signal.ITIMER_REAL)
    assert 0 < left <= 100.0  # their timer runs on
    assert own_alarm == []


@pytest.mark.parametrize("wait", ["sleep", "lock", "event", "busy"])
def test_a_call_that_waits_or_computes_too_long_is_interrupted(wait: str, own_alarm: list[int]) -> None:
    theirs = signal.getsignal(signal.SIGALRM)
    held = threading.Lock()
    held.acquire()

    def stuck() -> None:
        if wait == "sleep":
            time.sleep(60)
        elif wait == "lock":
            held.acquire()
        elif wait == "event":
            threading.Event().wait()
        else:
            while True:
                pass

    g = OverrunGuard(0.02)
    with pytest.raises(InlineOverrun):
        g.call(stuck)
    g.disarm()
    assert g.fired == 1
    assert signal.getsignal(signal.SIGALRM) is theirs
    assert signal.getitimer(signal.ITIMER_REAL)[0] > 0
    assert own_alarm == []


def test_a_function_that_swallows_the_interruption_is_interrupted_again_until_it_returns() -> None:
    caught: list[BaseException] = []

    def stubborn() -> str:
        for _ in range(3):
            try:
                time.sleep(60)
            except BaseException as exc:  # what a careless user function does
                caught.append(exc)
        return "gave up"

    g = OverrunGuard(0.02)
    assert g.call(stubborn) == "gave up"
    assert g.fired == 3  # the caller sees fired move: the run does not count (node._run_guarded)
    assert all(isinstance(e, InlineOverrun) for e in caught)


def test_only_the_main_thread_can_be_guarded() -> None:
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(OverrunGuard(1.0).usable()))
    t.start()
    t.join()
    assert out == [False]


def test_time_the_garbage_collector_takes_during_the_call_does_not_count() -> None:
    """A full collection that starts inside a tiny call (it took 40 ms on a node) is not the call waiting."""
    heap = [[i] for i in range(300_000)]  # containers: a full collection walks them all
    g = OverrunGuard(0.001)
    t0 = time.perf_counter()
    assert g.call(gc.collect) >= 0
    if time.perf_counter() - t0 < 0.003:
        pytest.skip("the collection was too quick to pass the limit here")
    assert g.fired == 0
    del heap
