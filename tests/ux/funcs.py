"""Importable task functions for the UX tests (node processes import them by reference)."""

from __future__ import annotations

import os
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


def gated_square(x: int, delay: float, gate: str) -> int:
    """Slow until the file ``gate`` exists, instant after: a job that runs exactly as long as a test needs it
    (the nodes of a LocalMesh share the test's file system)."""
    if not os.path.exists(gate):
        time.sleep(delay)
    return x * x


def keywords(**kwargs: object) -> dict[str, object]:
    return dict(kwargs)


class Holder:
    """Its bound method is submitted; the test checks that the client does not keep the object alive."""

    def method(self) -> int:
        return 7
