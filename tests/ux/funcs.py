"""Importable task functions for the UX tests (node processes import them by reference)."""

from __future__ import annotations

import time

import numpy as np


def square(x: int) -> int:
    return x * x


def add(a: int, b: int) -> int:
    return a + b


def slow_square(x: int, delay: float = 0.05) -> int:
    time.sleep(delay)
    return x * x


def boom(msg: str) -> None:
    raise ValueError(msg)


def big(n: int) -> np.ndarray:
    """A result larger than the inline limit: it stays on its node and is fetched on demand."""
    return np.arange(n, dtype=np.float64)
