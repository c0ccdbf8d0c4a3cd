"""Identifiers: short, random, printable, and unique without coordination (there is no leader to hand them out)."""

from __future__ import annotations

import os
import random


def new_id(prefix: str = "", rng: random.Random | None = None) -> str:
    """A 96-bit random id in hex. An ``rng`` makes it deterministic for the simulator and tests."""
    raw = rng.getrandbits(96).to_bytes(12, "big") if rng is not None else os.urandom(12)
    return prefix + raw.hex()


def short(node_id: str) -> str:
    """The first characters of an id, for logs and tables."""
    return node_id[:8]
