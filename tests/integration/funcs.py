"""Importable task functions for tests (insecure meshes run functions only by import reference)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

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


def make_array(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n)


def total(*arrays: np.ndarray) -> float:
    return float(sum(float(a.sum()) for a in arrays))


def inspect_input(a: np.ndarray) -> tuple[float, bool, str]:
    """The array's sum, whether it is writeable, and what holds its bytes (``mmap``: a shared-memory mapping)."""
    base: object = a
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    return float(a.sum()), bool(a.flags.writeable), type(base).__name__


def word_counts(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for w in text.split():
        out[w] = out.get(w, 0) + 1
    return out


def sum_values(key: object, values: list[int]) -> int:
    return sum(values)


def keyed_chunk(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 1000, n, dtype=np.int64), rng.integers(0, 100, n, dtype=np.int64)


def group_sum(keys: np.ndarray, values: np.ndarray) -> dict[int, int]:
    uniq, inv = np.unique(keys, return_inverse=True)
    sums = np.bincount(inv, weights=values, minlength=len(uniq)).astype(np.int64)
    return {int(k): int(v) for k, v in zip(uniq, sums, strict=True)}


def slow_chunk(seed: int, rows: int, delay: float) -> tuple[np.ndarray, np.ndarray]:
    time.sleep(delay)
    return keyed_chunk(rows, seed)


def sleep_and_log(i: int, seconds: float, path: str) -> int:
    """Sleep, then append one line ``i pid thread`` to ``path``: evidence of every execution that the code under
    test does not write (one small O_APPEND write is atomic, whichever process or thread makes it)."""
    time.sleep(seconds)
    line = f"{i} {os.getpid()} {threading.current_thread().name}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return i * i


def sum_after_sleep_and_log(i: int, a: np.ndarray, seconds: float, path: str) -> float:
    """``sleep_and_log`` for a task that reads a stored array: its sum."""
    sleep_and_log(i, seconds, path)
    return float(a.sum())


# ---- word count, the textbook MapReduce -----------------------------------------------------------------

WORDS = ("the", "a", "cat", "hat", "sat", "on", "mat", "and", "end", "of", "it", "is")


def make_doc(seed: int, words: int = 400) -> str:
    """A document in which most words repeat many times (a dozen-word vocabulary, skewed), plus a few rare ones."""
    rng = np.random.default_rng(seed)
    picks = [WORDS[min(int(i), len(WORDS) - 1)] for i in rng.geometric(0.3, words) - 1]
    return " ".join([*picks, f"rare{seed}", f"rare{seed % 3}"])


def doc_pairs(seed: int) -> list[tuple[str, int]]:
    return [(w, 1) for w in make_doc(seed).split()]


def doc_pairs_gen(seed: int) -> Iterator[tuple[str, int]]:
    for w in make_doc(seed).split():
        yield w, 1


def doc_counts(seed: int) -> dict[str, int]:
    return word_counts(make_doc(seed))


def equal_key(i: int) -> list[tuple[object, int]]:
    """Map task ``i`` emits one of four keys, three of which compare equal (1 == True == 1.0)."""
    return [((1, True, 1.0, 2)[i], i)]


def thread_after(delay: float) -> str:
    """Sleep, then name the executor thread that ran this (``mesh-fakegpu:0-0``: a slot of that node's GPU)."""
    time.sleep(delay)
    return threading.current_thread().name


def thread_at_gate(gate: str, started: str) -> str:
    """Append a line to ``started``, wait until the file ``gate`` exists (the test creates it), then name the executor
    thread that ran this. A test holds a slot, or a call inline on the loop, for exactly as long as it needs to,
    whatever the machine's load; the wait polls, so ``OverrunGuard`` can interrupt it inline (as it would
    ``time.sleep``)."""
    fd = os.open(started, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"started\n")
    finally:
        os.close(fd)
    _wait_for_file(gate)
    return threading.current_thread().name


def square_at_gate(x: int, gate: str) -> int:
    """``x * x`` once the file ``gate`` exists: tasks that stay running, however loaded the machine, until the test
    lets them finish."""
    _wait_for_file(gate)
    return x * x


def _wait_for_file(path: str) -> None:
    deadline = time.monotonic() + 60
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} was not created within 60 s")
        time.sleep(0.005)


def thread_name() -> str:
    """The executor thread that ran this: a worker's ``mesh-<node>-<i>``, or the event loop's (an inline run)."""
    return threading.current_thread().name


def thread_and_loop() -> str:
    """The executor thread that ran this, and whether it found a running event loop there (a worker finds none,
    and a user's function run inline on a node's loop must not either: ``asyncio.run`` would refuse)."""
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return f"{threading.current_thread().name} no loop"
    return f"{threading.current_thread().name} loop"
