"""Waiting for a condition that spans state the test cannot await directly."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest


async def wait_for(cond: Callable[[], bool], limit: float, what: str) -> float:
    """Poll ``cond`` until it holds; return the seconds it took. Fails the test after ``limit`` seconds.

    Polling (every 5 ms) because the conditions span several nodes' snapshots and counters at once.
    """
    start = time.monotonic()
    try:
        async with asyncio.timeout(limit):
            while not cond():  # noqa: ASYNC110 - see docstring
                await asyncio.sleep(0.005)
    except TimeoutError:
        pytest.fail(f"not within {limit} s: {what}")
    return time.monotonic() - start
