"""Which faults happen when: a pure function of the seed, so a failing run can be replayed exactly."""

from __future__ import annotations

import heapq
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


_STAGGER = 0.5  # seconds between the starts of faults that were postponed to the same moment


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
    A partition starts only when every node is up, and nothing else starts until it has healed. A fault that
    cannot start at its drawn time (its node down, too few nodes up, a partition waiting for the whole mesh) is
    postponed to the moment it can (``_STAGGER`` s apart), never dropped: every fault asked for is in the plan, in
    time order. A mesh of one node gets none (each would take its last node down).
    """
    rng = random.Random(seed)
    if entry_kill is None:
        entry_kill = rng.random() < 0.5
    faults: list[Fault] = []
    n_faults = kills + pauses + entry_pauses + partitions
    times = sorted(rng.uniform(0.1 * window, 0.9 * window) for _ in range(n_faults))
    kinds = ["kill"] * kills + ["pause"] * pauses + ["pause_entry"] * entry_pauses + ["partition"] * partitions
    rng.shuffle(kinds)
    pending = [(t, i, kind, False) for i, (t, kind) in enumerate(zip(times, kinds, strict=True))]
    heapq.heapify(pending)
    down_until: dict[int, float] = {}
    first = True
    last = float("-inf")  # when the latest fault started
    while pending and nodes >= 2:
        t, i, kind, postponed = heapq.heappop(pending)
        if postponed and t < last + _STAGGER:
            heapq.heappush(pending, (last + _STAGGER, i, kind, True))  # postponed faults do not all start at once
            continue
        up = [n for n in range(nodes) if down_until.get(n, -1.0) <= t]
        if kind == "partition":
            ready = len(up) == nodes  # only a whole mesh is split
        elif kind == "pause_entry":
            ready = len(up) > 1 and 0 in up
        else:
            ready = len(up) > 1  # keep at least one node up
        if not ready:
            # when the next node is back (something is down, or it would be ready)
            heapq.heappush(pending, (min(u for u in down_until.values() if u > t), i, kind, True))
            continue
        last = t
        if kind == "partition":
            side = "partition_with" if rng.random() < 0.5 else "partition_away"
            duration = rng.uniform(5.0, 10.0)
            for n in range(nodes):
                down_until[n] = t + duration + 3.0  # the halves merge again before anything else happens
            faults.append(Fault(round(t, 3), side, 0, round(duration, 3)))
        elif kind == "pause_entry":
            duration = rng.uniform(5.0, 10.0)
            down_until[0] = t + duration + 1.0
            faults.append(Fault(round(t, 3), kind, 0, round(duration, 3)))
        else:
            if first and entry_kill and kind == "kill" and 0 in up:
                victim = 0
            else:
                victim = rng.choice([n for n in up if n != 0] or up)
            duration = rng.uniform(1.0, 3.0) if kind == "kill" else rng.uniform(2.0, 4.0)
            down_until[victim] = t + duration + 1.0
            faults.append(Fault(round(t, 3), kind, victim, round(duration, 3)))
        first = False
    return faults
