"""Importable task functions for tests (insecure meshes run functions only by import reference)."""

from __future__ import annotations

import os
import time

import numpy as np


def square(x: int) -> int:
    return x * x


def add(a: int, b: int) -> int:
    return a + b


def slow_square(x: int, delay: float = 0.01) -> int:
    time.sleep(delay)
    return x * x


def boom(msg: str) -> None:
    raise ValueError(msg)


def double_array(a: np.ndarray) -> np.ndarray:
    return a * 2


def identity(x: object) -> object:
    return x


def pid() -> int:
    return os.getpid()
