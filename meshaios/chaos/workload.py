"""Task functions with known answers, importable by reference on every node."""

from __future__ import annotations

import time

import numpy as np

MOD = 1_000_003


def work(i: int, delay: float) -> int:
    """A tiny task whose answer is known in advance; ``delay`` stretches the run so that faults land mid-job."""
    if delay:
        time.sleep(delay)
    return (i * i + 7) % MOD


def expected_work(i: int) -> int:
    return (i * i + 7) % MOD


def add(a: int, b: int) -> int:
    return a + b


def chunk(seed: int, rows: int = 20_000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 500, rows, dtype=np.int64), rng.integers(0, 100, rows, dtype=np.int64)


def group_sum(keys: np.ndarray, values: np.ndarray) -> dict[int, int]:
    sums = np.bincount(keys, weights=values, minlength=500).astype(np.int64)
    present = np.flatnonzero(np.bincount(keys, minlength=500))
    return {int(k): int(sums[k]) for k in present}


def expected_group_sum(seeds: range) -> dict[int, int]:
    out: dict[int, int] = {}
    for s in seeds:
        for k, v in group_sum(*chunk(s)).items():
            out[k] = out.get(k, 0) + v
    return out
