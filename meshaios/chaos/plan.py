"""Which faults happen when: a pure function of the seed, so a failing run can be replayed exactly."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the workload starts
    kind: str  # "kill" (SIGKILL, restarted later), "pause" (SIGSTOP then SIGCONT)
    node: int
    duration: float  # how long until restart / resume


def make_plan(
    seed: int, nodes: int, kills: int, window: float, pauses: int = 0, entry_kill: bool | None = None
) -> list[Fault]:
    """``kills`` SIGKILLs spread over ``window`` seconds, never more than ``nodes - 1`` nodes down at once.

    Node 0 is the client's entry node; whether it is among the victims is drawn from the seed unless forced.
    """
    rng = random.Random(seed)
    if entry_kill is None:
        entry_kill = rng.random() < 0.5
    faults: list[Fault] = []
    times = sorted(rng.uniform(0.1 * window, 0.9 * window) for _ in range(kills + pauses))
    kinds = ["kill"] * kills + ["pause"] * pauses
    rng.shuffle(kinds)
    down_until: dict[int, float] = {}
    for i, (t, kind) in enumerate(zip(times, kinds, strict=True)):
        up = [n for n in range(nodes) if down_until.get(n, -1.0) <= t]
        if len(up) <= 1:
            continue  # keep at least one node up
        if i == 0 and entry_kill and kind == "kill" and 0 in up:
            victim = 0
        else:
            victim = rng.choice([n for n in up if n != 0] or up)
        duration = rng.uniform(1.0, 3.0) if kind == "kill" else rng.uniform(2.0, 4.0)
        down_until[victim] = t + duration + 1.0
        faults.append(Fault(round(t, 3), kind, victim, round(duration, 3)))
    return faults
