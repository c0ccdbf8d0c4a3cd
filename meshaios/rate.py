"""A rate over a sliding window from samples of a monotonic counter (tasks finished per second, say)."""

from __future__ import annotations

from collections import deque


class RateMeter:
    """``rate(now, count)`` records a sample and returns the count's growth per second over ``window`` seconds."""

    def __init__(self, window: float = 5.0) -> None:
        self.window = window
        self._samples: deque[tuple[float, int]] = deque()

    def rate(self, now: float, count: int) -> float:
        self._samples.append((now, count))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window:
            self._samples.popleft()
        t0, c0 = self._samples[0]
        return (count - c0) / (now - t0) if now > t0 else 0.0
