"""Time as an injected dependency.

The pure core never reads the system clock: it is handed ``now`` (seconds, float) by whoever drives it. The
asyncio shell uses ``MonotonicClock``; tests and the simulator use ``ManualClock`` so that hundreds of nodes can
run in one process at simulated time.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...


class MonotonicClock:
    def now(self) -> float:
        return time.monotonic()


class ManualClock:
    def __init__(self, start: float = 0.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, dt: float) -> float:
        if dt < 0:
            raise ValueError("time does not go backwards")
        self._now += dt
        return self._now

    def set(self, t: float) -> None:
        if t < self._now:
            raise ValueError("time does not go backwards")
        self._now = t


class Every:
    """A periodic job scheduled by time, not by counting ticks (ticks are 50 ms apart only when the loop is idle):
    ``due(now)`` is true once per ``period``, first one period after the first call. Behind by more than a period
    (a paused process, a long handler), it runs once and starts over from ``now``: no burst of catch-up runs."""

    def __init__(self, period: float) -> None:
        if not period > 0:
            raise ValueError("a period must be positive")
        self.period = period
        self._next: float | None = None

    def due(self, now: float) -> bool:
        if self._next is None:
            self._next = now + self.period
            return False
        if now < self._next:
            return False
        self._next = self._next + self.period if self._next + self.period > now else now + self.period
        return True


class LoopClock:
    """An event loop's own clock (``loop.time()``): on a ``meshaios.testing.vtime.VirtualTimeLoop`` that is
    virtual time, so a node or client given this clock sees the same time as its timers and timeouts."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def now(self) -> float:
        return self._loop.time()
