"""The learned scheduler on real nodes: a 3-node local mesh where one node is deliberately slow
(``MESHAIOS_SLOWDOWN``), running a mixed workload of task kinds with different, unknown runtimes, placed once
with ``--placement eft`` and once with ``round-robin``. Prints makespans and the runtime model's MAPE.

    python tools/sched_bench.py [--tasks 600] [--slowdown 4]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from meshaios.testing.localmesh import LocalMesh, wait_for


def kind_matmul(a: np.ndarray) -> float:
    return float((a @ a).trace())


def kind_spin(a: np.ndarray) -> float:
    """Work proportional to the input's size, as in real kernels (the model sees input bytes, not values)."""
    time.sleep(a.nbytes / 4e6)
    return float(a[0])


def kind_sort(a: np.ndarray) -> float:
    return float(np.sort(a)[-1])


def workload(tasks: int, seed: int) -> list[tuple[Any, tuple[Any, ...]]]:
    rng = np.random.default_rng(seed)
    arrays = {n: rng.random(n) for n in (10_000, 40_000, 160_000)}
    squares = {n: rng.random((n, n)) for n in (100, 180, 260)}
    out: list[tuple[Any, tuple[Any, ...]]] = []
    for _ in range(tasks):
        r = rng.random()
        if r < 0.4:
            out.append((kind_spin, (arrays[int(rng.choice(list(arrays)))],)))
        elif r < 0.7:
            out.append((kind_matmul, (squares[int(rng.choice(list(squares)))],)))
        else:
            out.append((kind_sort, (arrays[int(rng.choice(list(arrays)))],)))
    return out


def run(policy: str, tasks: int, slowdown: float, seed: int) -> dict[str, Any]:
    mesh = LocalMesh(3, workers=2, extra_args=["--placement", policy])
    try:
        for i in range(3):  # node 2 is the slow machine: only its environment carries the slowdown
            mesh.env["MESHAIOS_SLOWDOWN"] = str(slowdown) if i == 2 else "1"
            mesh.spawn(i)
        mesh.env.pop("MESHAIOS_SLOWDOWN")
        mesh.wait_ready()
        with mesh.client(0) as c:
            wait_for(lambda: len(c.status()["members"]) == 2, timeout=15, what="discovery")
            work = workload(tasks, seed)
            warm = [c.submit(fn, *a) for fn, a in workload(60, seed + 1)]  # a first taste for the model
            c.gather(warm, timeout=300)
            t0 = time.perf_counter()
            futs = [c.submit(fn, *a) for fn, a in work]
            c.gather(futs, timeout=600)
            makespan = time.perf_counter() - t0
            st = c.status()["node"]
            per_node: dict[str, int] = {}
            names = {m["id"]: m["name"] for m in c.status()["members"]}
            names[st["id"]] = st["name"]
            for f in futs:
                per_node[names.get(f.node, f.node[:8])] = per_node.get(names.get(f.node, f.node[:8]), 0) + 1
            return {
                "policy": policy,
                "makespan_s": round(makespan, 3),
                "model": st["model"],
                "tasks_per_node": per_node,
            }
    finally:
        mesh.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=600)
    ap.add_argument("--slowdown", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = [run(p, args.tasks, args.slowdown, args.seed) for p in ("round-robin", "least-loaded", "eft")]
    for r in rows:
        m = r["model"]
        print(
            f"{r['policy']:13} makespan {r['makespan_s']:7.2f} s   model: {m.get('observations')} observations, "
            f"MAPE {m.get('mape', 0):.0%}   tasks per node {r['tasks_per_node']}"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
