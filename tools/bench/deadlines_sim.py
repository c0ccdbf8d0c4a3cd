"""Deadline-met fraction in the simulator: FIFO, EDF without the runtime model, and EDF with it.

    .venv/bin/python tools/bench/deadlines_sim.py --nodes 10 --tasks 1000 --seeds 2

Runs the ``deadlines`` workload (``meshaios.sim.workloads.deadlines``: long batch tasks, then bursts of short
requests with deadlines) through the real ``Owner`` under each ``OwnerConfig.deadline_order``, placement ``eft``.
"""

from __future__ import annotations

import argparse
import sys

from meshaios.sim.engine import SimConfig, Simulation
from meshaios.sim.workloads import heterogeneous_cluster, make_workload


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--seeds", type=int, default=2)
    args = ap.parse_args()
    sys.stdout.write("| seed | order | deadlines met | at risk (reported) | makespan |\n|---|---|---|---|---|\n")
    for seed in range(args.seeds):
        for order in ("fifo", "edf", "model"):
            wl = make_workload("deadlines", args.tasks, seed)
            cfg = SimConfig(policy="eft", seed=seed, deadline_order=order)
            r = Simulation(heterogeneous_cluster(args.nodes, seed), wl, cfg).run()
            frac = r.deadline_met / max(1, r.deadline_tasks)
            sys.stdout.write(f"| {seed} | {order} | {r.deadline_met}/{r.deadline_tasks} = {frac:.3f} | "
                             f"{r.deadline_at_risk} | {r.makespan:.1f} s |\n")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
