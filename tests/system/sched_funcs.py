"""Task functions for the scheduling tests on real nodes (imported by reference in the node processes).

Each records that it started by appending one line to a file, before it does anything else: evidence written by
the task itself, in the order the tasks really started, not by the code under test."""

from __future__ import annotations

import os
import time


def mark(path: str, tag: str, seconds: float = 0.0) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{tag}\n".encode())  # one write with O_APPEND: lines from many threads never interleave
    finally:
        os.close(fd)
    if seconds:
        time.sleep(seconds)
    return tag


def started(path: str) -> list[str]:
    try:
        with open(path) as fh:
            return fh.read().split()
    except FileNotFoundError:
        return []


def gated(path: str, tag: str, gate: str, limit: float = 600.0) -> str:
    """Starts (recorded), then holds its slot until the file ``gate`` exists (at most ``limit`` s), then records
    that it ended."""
    mark(path, tag)
    end = time.monotonic() + limit
    while not os.path.exists(gate) and time.monotonic() < end:
        time.sleep(0.005)
    mark(path, tag + ":end")
    return tag


def spin(path: str, tag: str, seconds: float) -> int:
    """CPU-bound, in a worker process (``pure=True``): records ``tag pid``, spins, records its end."""
    mark(path, f"{tag}:{os.getpid()}")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    mark(path, tag + ":end")
    return os.getpid()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
