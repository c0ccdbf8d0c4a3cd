"""Fault-injection property test of the mesh on a virtual clock: one seed, one random small run, its invariants.

Each seed draws a cluster (3-6 nodes), a small workload (a DAG or independent tasks, a few dozen) and faults --
node kills, pauses (a gray failure: SWIM may declare the node dead and it comes back), partitions, SWIM message
loss, links that race -- and runs it on ``Simulation`` (the production ``Owner``, ``ExecCore``, ``StealEngine``,
placement and SWIM on ``SimNet``). ``check`` then asserts what a client and an operator rely on:

* every task the client submitted is delivered exactly once, as a success, and nothing else is delivered;
* a task's worker ran it more than once only if a fault explains it: one of the nodes that ran it, or handed it
  to a thief, was killed, paused or declared dead by a peer while alive;
* nothing leaks once the run has drained: every ``ExecCore`` holds no task (``queued`` 0, empty queue, no task
  waiting for inputs, holding inputs, prefetched or in the process pool), its steal engine has no request,
  reservation or unacknowledged commit, every ``Owner`` has nothing pending, no simulated worker is busy.

Replay a seed with its event trace: ``python -m meshaios.sim --replay-seed N`` (or ``replay(N)``).
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass, field, replace

from meshaios.sim.engine import Faults, SimConfig, SimResult, Simulation
from meshaios.sim.workloads import NodeSpec, Workload, heterogeneous_cluster, independent, layered_dag
from meshaios.tasks.execcore import MAX_ABORTED

__all__ = ["ChaosRun", "check", "describe", "replay", "run_seed", "scenario"]

DRAIN = 10.0  # simulated seconds the mesh runs on after the last result before the leak check


@dataclass
class ChaosRun:
    seed: int
    sim: Simulation
    result: SimResult
    problems: list[str] = field(default_factory=list)
    faults: int = 0  # faults injected: kills + pauses + partitions (+ SWIM loss, counted once)


def scenario(
    seed: int, trace: int = 0, pause_owner: bool = True, partitions: bool = True
) -> tuple[list[NodeSpec], Workload, SimConfig]:
    """The cluster, workload and faults of one seed (deterministic). ``pause_owner``: now and then pause the node
    that the client submits to as well; ``partitions``: now and then cut some nodes off from the others."""
    rng = random.Random(f"chaos/{seed}")
    n = rng.randint(3, 6)
    nodes = heterogeneous_cluster(n, seed)
    tasks = rng.randint(12, 48)
    work = layered_dag(tasks, seed) if rng.random() < 0.6 else independent(tasks, seed)
    ids = [s.node_id for s in nodes]
    owner = ids[0]
    kills: list[tuple[float, int]] = []
    if n > 3 and rng.random() < 0.4:
        kills.append((rng.uniform(0.0, 3.0), 1))
    pauses = []
    for _ in range(rng.choice((0, 1, 1, 2, 3))):
        anyone = rng.random() < 0.1
        who = rng.choice(ids if pause_owner and anyone else ids[1:])
        pauses.append((rng.uniform(0.0, 4.0), who, rng.choice((0.2, 1.0, 3.0, 8.0))))
    faults = Faults(
        jitter=rng.choice((0.0, 0.002, 0.02)),
        pauses=tuple(sorted(pauses)),
        swim_drop=rng.choice((0.0, 0.0, 0.02, 0.1)),
        forget_loss=rng.choice((0.0, 0.5, 1.0)),
    )
    policy = rng.choice(("eft", "eft", "round-robin", "least-loaded"))
    stealing = rng.random() < 0.7
    if partitions and rng.random() < 0.3:  # drawn last: the seeds' other faults stay what they were without
        group = tuple(sorted(rng.sample(ids, rng.randint(1, n // 2))))
        faults = replace(faults, partitions=((rng.uniform(0.0, 4.0), group, rng.choice((0.5, 2.0, 5.0))),))
    # half the seeds let EFT put GPU kernels on GPUs (queued for GPU slots, stolen by GPU nodes): drawn apart, so
    # that every other draw of a seed stays what it was
    gpu_choice = random.Random(f"chaos-gpu/{seed}").random() < 0.5
    cfg = SimConfig(policy=policy, seed=seed, stealing=stealing, membership="swim", kills=tuple(kills),
                    faults=faults, drain=DRAIN, max_time=600.0, trace=trace, gpu_choice=gpu_choice)
    assert owner == sorted(ids)[0]  # the simulator's owner (its first node id)
    return nodes, work, cfg


def run_seed(seed: int, trace: int = 0, pause_owner: bool = True, partitions: bool = True) -> ChaosRun:
    nodes, work, cfg = scenario(seed, trace, pause_owner, partitions)
    sim = Simulation(nodes, work, cfg)
    result = sim.run()
    run = ChaosRun(seed, sim, result, check(sim, result))
    run.faults = len(cfg.kills) + len(cfg.faults.pauses) + len(cfg.faults.partitions) + (cfg.faults.swim_drop > 0)
    return run


def check(sim: Simulation, result: SimResult) -> list[str]:
    """Every violated invariant of a finished (drained) run, in words; empty when all hold."""
    bad: list[str] = []
    submitted = set(sim.tasks)
    for tid in sorted(submitted):
        got = sim.delivered.get(tid, 0)
        if got != 1:
            bad.append(f"task {tid} delivered {got} times")
    for tid in sorted(set(sim.delivered) - submitted):
        bad.append(f"a result for {tid}, which the client never submitted")
    for r in sim.failed:
        bad.append(f"task {r.get('id')} failed: {r.get('err')}")
    faulty = set(sim.killed) | sim.paused_ids | sim.false_dead
    for tid, where in sorted(sim.runs.items()):
        # the nodes that ran it or handed it to a thief: a paused node's stale attempt may be stolen when it resumes
        if len(where) > 1 and not faulty.intersection(where + sim.moves.get(tid, [])):
            bad.append(f"task {tid} ran {len(where)} times ({', '.join(where)}) with no fault on the nodes that ran "
                       "or handed it over")
    for nid, node in sorted(sim.nodes.items()):
        if not node.alive:
            continue
        core = node.core
        held = {**core.held(), "workers busy": sum(len(p.running) + len(p.waiting) for p in node.pools.values())}
        for what, count in held.items():
            if count:
                bad.append(f"{nid} leaks {what}: {int(count)}")
        if len(core.aborted) > MAX_ABORTED:
            bad.append(f"{nid} remembers {len(core.aborted)} aborted attempts (bound {MAX_ABORTED})")
        if node.owner is not None and node.owner.pending:
            bad.append(f"{nid}'s owner has {node.owner.pending} tasks pending")
    return bad


def replay(seed: int, events: int = 60, pause_owner: bool = True) -> ChaosRun:
    """Run ``seed`` again and print its faults, its problems and its last ``events`` events."""
    run = run_seed(seed, trace=events, pause_owner=pause_owner)
    sys.stdout.write(describe(run))
    return run


def describe(run: ChaosRun) -> str:
    sim, cfg, r = run.sim, run.sim.config, run.result
    lines = [
        f"seed {run.seed}: {len(sim.nodes)} nodes, {len(sim.tasks)} tasks, policy {cfg.policy}, stealing "
        f"{sim.stealing}, kills {cfg.kills}, faults {cfg.faults}",
        f"killed {sim.killed}, paused {sorted(sim.paused_ids)}, declared dead while alive {sorted(sim.false_dead)}, "
        f"messages lost to closed connections {sim.forget_lost}",
        f"completed {r.completed}/{r.tasks}, duplicate executions {r.duplicate_executions}, simulated "
        f"{sim.now - sim.start:.2f} s",
        *("  " + p for p in run.problems or ["no problem"]),
        *(f"  {t - sim.start:10.4f} {kind:7s} {_short(data)}" for t, kind, data in sim.trace),
    ]
    return "\n".join(lines) + "\n"


def _short(data: object, width: int = 110) -> str:
    text = repr(data)
    return text if len(text) <= width else text[: width - 3] + "..."
