"""``logs.RateLimitedLog``: the one rate-limited logger (the node's bad-frame and fence warnings, mDNS debug lines)."""

from __future__ import annotations

import logging

import pytest

from meshaios.logs import RateLimitedLog

LOG = logging.getLogger("meshaios.test.ratelimited")


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOG.name]


def test_each_key_speaks_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    rl = RateLimitedLog(LOG, interval=10.0, budget=None, clock=clock)
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        for i in range(5):
            rl.warning(("peer-a", "wire"), "bad frame %d from a", i)
            rl.warning(("peer-b", "wire"), "bad frame %d from b", i)
        clock.t = 9.9
        rl.warning(("peer-a", "wire"), "still too soon")
        clock.t = 10.0
        rl.warning(("peer-a", "wire"), "again from a")
    assert messages(caplog) == ["bad frame 0 from a", "bad frame 0 from b", "again from a"]
    assert rl.suppressed == 9


def test_fresh_identities_cannot_buy_a_fresh_allowance(caplog: pytest.LogCaptureFixture) -> None:
    """A budget over all keys: 1,000 identities give 3 lines, then one line saying how many were held back."""
    clock = Clock()
    rl = RateLimitedLog(LOG, interval=10.0, budget=3, clock=clock)
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        for i in range(1000):
            rl.warning((f"peer-{i}", "wire"), "bad frame from %d", i)
        clock.t = 10.0
        rl.warning(("peer-x", "wire"), "a new interval")
    assert messages(caplog) == [
        "bad frame from 0", "bad frame from 1", "bad frame from 2",
        "997 similar messages suppressed in the last 10 s", "a new interval",
    ]


def test_memory_is_bounded_and_a_silenced_level_costs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    rl = RateLimitedLog(LOG, interval=60.0, budget=None, max_keys=8, clock=Clock())
    with caplog.at_level(logging.INFO, logger=LOG.name):
        for i in range(100):
            assert not rl.debug(("mesh", f"svc-{i}"), "ignoring %d", i)  # DEBUG is off: nothing kept, nothing said
        assert rl.suppressed == 0
        for i in range(100):
            rl.warning(("mesh", f"svc-{i}"), "ignoring %d", i)
    assert len(rl._last) <= 8
    assert len(messages(caplog)) == 100
