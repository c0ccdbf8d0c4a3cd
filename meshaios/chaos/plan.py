"""Which faults happen when: a pure function of the seed, so a failing run can be replayed exactly."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the workload starts
    # "kill" (SIGKILL, restarted later), "pause" (SIGSTOP then SIGCONT; the entry node with "pause_entry"),
    # "partition_with" / "partition_away" (the mesh split in two halves, the client's entry node in the first; the
    # client on the entry node's side, or on the other one), healed after ``duration``
    kind: str
    node: int
    duration: float  # how long until restart / resume / heal


def make_plan(
    seed: int,
    nodes: int,
    kills: int,
    window: float,
    pauses: int = 0,
    entry_kill: bool | None = None,
    entry_pauses: int = 0,
    partitions: int = 0,
) -> list[Fault]:
    """``kills`` SIGKILLs spread over ``window`` seconds, never more than ``nodes - 1`` nodes down at once.

    Node 0 is the client's entry node; whether it is among the victims is drawn from the seed unless forced.
    ``entry_pauses`` SIGSTOP the entry node for 5-10 s (gray failures: it comes back after the client failed over);
    ``partitions`` split the mesh for 5-10 s, the client on either side of its entry node (drawn from the seed).
    A partition starts only when every node is up, and nothing else starts until it has healed.
    """
    rng = random.Random(seed)
    if entry_kill is None:
        entry_kill = rng.random() < 0.5
    faults: list[Fault] = []
    n_faults = kills + pauses + entry_pauses + partitions
    times = sorted(rng.uniform(0.1 * window, 0.9 * window) for _ in range(n_faults))
    kinds = ["kill"] * kills + ["pause"] * pauses + ["pause_entry"] * entry_pauses + ["partition"] * partitions
    rng.shuffle(kinds)
    down_until: dict[int, float] = {}
    for i, (t, kind) in enumerate(zip(times, kinds, strict=True)):
        up = [n for n in range(nodes) if down_until.get(n, -1.0) <= t]
        if kind == "partition":
            if len(up) < nodes or nodes < 2:
                continue  # only a whole mesh is split
            side = "partition_with" if rng.random() < 0.5 else "partition_away"
            duration = rng.uniform(5.0, 10.0)
            for n in range(nodes):
                down_until[n] = t + duration + 3.0  # the halves merge again before anything else happens
            faults.append(Fault(round(t, 3), side, 0, round(duration, 3)))
            continue
        if len(up) <= 1:
            continue  # keep at least one node up
        if kind == "pause_entry":
            if 0 not in up:
                continue
            duration = rng.uniform(5.0, 10.0)
            down_until[0] = t + duration + 1.0
            faults.append(Fault(round(t, 3), kind, 0, round(duration, 3)))
            continue
        if i == 0 and entry_kill and kind == "kill" and 0 in up:
            victim = 0
        else:
            victim = rng.choice([n for n in up if n != 0] or up)
        duration = rng.uniform(1.0, 3.0) if kind == "kill" else rng.uniform(2.0, 4.0)
        down_until[victim] = t + duration + 1.0
        faults.append(Fault(round(t, 3), kind, victim, round(duration, 3)))
    return faults
