"""``Every``: periodic work by elapsed time, as the node's timer uses it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshaios.clock import Every


def test_due_once_per_period_from_the_first_call() -> None:
    e = Every(2.0)
    assert [e.due(t) for t in (10.0, 11.9, 12.0, 12.05, 13.9, 14.0)] == [False, False, True, False, False, True]


def test_a_pause_gives_one_run_not_a_burst() -> None:
    e = Every(0.1)
    e.due(0.0)
    assert e.due(30.0)  # 300 periods late: once
    assert not e.due(30.05)
    assert e.due(30.1)


def test_a_period_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Every(0.0)


@given(st.lists(st.floats(min_value=0.0, max_value=5.0), min_size=1, max_size=200))
def test_never_more_runs_than_periods_and_never_a_period_without_one(steps: list[float]) -> None:
    e, now, runs = Every(1.0), 0.0, 0
    e.due(now)
    last = 0.0  # the first run is due one period after the first call
    for dt in steps:
        now += dt
        ran = e.due(now)
        if now - last >= 1.0:
            assert ran  # a period since the last run: this call runs
        if ran:
            runs += 1
            last = now
    assert runs <= int(now) + 1
