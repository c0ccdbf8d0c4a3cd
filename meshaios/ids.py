"""Identifiers: short, random, printable, and unique without coordination (there is no leader to hand them out)."""

from __future__ import annotations

import os
import random
import threading

BATCH = 64  # ids' worth of random bytes read at once: one getrandom system call per 64 ids, not one per id


class _Pool(threading.local):
    """Each thread's ids drawn and not yet handed out (96 random bits each, in hex)."""

    def __init__(self) -> None:
        self.ids: list[str] = []


_pool = _Pool()


def _forget() -> None:
    """In a forked child: the ids its parent drew before the fork are the parent's to hand out, not its own."""
    global _pool
    _pool = _Pool()


os.register_at_fork(after_in_child=_forget)


def new_id(prefix: str = "", rng: random.Random | None = None) -> str:
    """A 96-bit random id in hex, from the operating system's randomness (drawn ``BATCH`` at a time). An ``rng``
    makes it deterministic for the simulator and tests."""
    if rng is not None:
        return prefix + rng.getrandbits(96).to_bytes(12, "big").hex()
    ids = _pool.ids
    if not ids:
        raw = os.urandom(12 * BATCH).hex()
        ids.extend([raw[i : i + 24] for i in range(0, 24 * BATCH, 24)])
    return prefix + ids.pop()


def short(node_id: str) -> str:
    """The first characters of an id, for logs and tables."""
    return node_id[:8]
