"""Time as an injected dependency.

The pure core never reads the system clock: it is handed ``now`` (seconds, float) by whoever drives it. The
asyncio shell uses ``MonotonicClock``; tests and the simulator use ``ManualClock`` so that hundreds of nodes can
run in one process at simulated time.
"""

from __future__ import annotations

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
