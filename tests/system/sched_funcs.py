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
