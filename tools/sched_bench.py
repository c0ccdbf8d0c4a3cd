"""The learned scheduler on real nodes (issue 5, acceptance 2).

A 3-node local mesh: node0 a plain CPU node, node1 with a fake GPU, node2 deliberately slowed 4x
(``MESHAIOS_SLOWDOWN``: every task holds its worker ``slowdown`` times as long, as on a slower machine). One client
submits a mixed workload of real built-in kernels (matmul, blur, histogram on the CPU; conv2d pinned to the GPU)
and an I/O-bound function (it waits on "a remote service" for a time that grows with its input), sizes drawn at
random, none seen before the run but for a short warm-up. The same workload runs once per placement policy on a
fresh mesh; the makespan, where the tasks went, and the owner's runtime-model MAPE are printed side by side.

    python tools/sched_bench.py [--tasks 400] [--slowdown 4] [--repeat 2] [--json out.json]

The nodes run one worker each and single-threaded BLAS: three "machines" share this box's cores, and a CPU-bound
kernel on one of them must not steal the others' cores (on a LAN they have their own). Figures: docs/scheduling.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

import numpy as np

from meshaios.devices import default_registry
from meshaios.testing.localmesh import LocalMesh, pin_threads, wait_for

POLICIES = ("round-robin/nosteal", "round-robin", "least-loaded", "eft")
SINGLE_THREADED = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def remote_call(a: np.ndarray) -> float:
    """Waits on a slow external service for a time that grows with the request (CPU stays free meanwhile)."""
    time.sleep(a.nbytes / 4e6)
    return float(a[0])


Step = tuple[Any, tuple[Any, ...], dict[str, Any], dict[str, Any] | None]  # fn, args, kwargs, resources
PREV = object()  # in a step's args: the previous step's result (a dependency: its data stays where it was made)


def make_image(seed: int, thumbnail: np.ndarray) -> np.ndarray:
    """A camera frame arrives on whichever node runs this: the data of a pipeline starts life on some node. The
    request carries a thumbnail (1/16 of the width), so its size tells the runtime model how big the frame is."""
    n = len(thumbnail)
    return np.random.default_rng(seed).random((4, n, n), dtype=np.float32)


def workload(tasks: int, seed: int) -> list[list[Step]]:
    """Chains of steps (an image pipeline: frame -> blur -> edge [-> conv2d on the GPU] -> histogram), 1-4 MB
    between steps, plus independent calls to a slow service, some of them long. A chain's later steps run fastest
    where its data already is; a long call must not end up on the slow node."""
    reg = default_registry()
    rng = np.random.default_rng(seed)
    waits = {n: rng.random(n) for n in (10_000, 30_000, 100_000)}  # 20, 60, 200 ms
    long_waits = {n: rng.random(n) for n in (300_000, 500_000)}  # 0.6, 1 s
    kern = rng.random((9, 9), dtype=np.float32)
    rows = {n: np.zeros((n, n // 16), dtype=np.float32) for n in (256, 384, 512)}
    blur, edge, conv, hist = (reg.get(f"meshaios.{k}") for k in ("blur", "edge", "conv2d", "histogram"))
    out: list[list[Step]] = []
    n = 0
    while n < tasks:
        r = rng.random()
        if r < 0.55:
            chain: list[Step] = [
                (make_image, (int(rng.integers(1 << 30)), rows[int(rng.choice(list(rows)))]), {}, None),
                (blur, (PREV,), {"sigma": 2.0}, None),
                (edge, (PREV,), {}, None),
            ]
            if rng.random() < 0.3:
                chain.append((conv, (PREV, kern), {"mode": "same"}, {"gpu": 1}))
            chain.append((hist, (PREV,), {"bins": 32, "range": (0.0, 64.0)}, None))  # covers every value
        elif r < 0.93:
            chain = [(remote_call, (waits[int(rng.choice(list(waits)))],), {}, None)]
        else:
            chain = [(remote_call, (long_waits[int(rng.choice(list(long_waits)))],), {}, None)]
        out.append(chain)
        n += len(chain)
    return out


def submit_all(c: Any, chains: list[list[Step]]) -> list[Any]:
    futs = []
    for chain in chains:
        prev = None
        for fn, args, kwargs, res in chain:
            prev = c.submit(fn, *[prev if a is PREV else a for a in args], resources=res, **kwargs)
            futs.append(prev)
    return futs


# Three "machines" on one box: each node's threads are pinned, so a CPU-bound kernel on one node does not take
# another's core at random moments (on a LAN they have their own). With two cores: node0 (the owner, with the
# client) on core 0, node1 (fake GPU) and the slowed node2 on core 1 -- node2 computes a quarter of the time. With
# eight or more, every node gets two cores of its own (worker and event loop) and the client two more.
def pinning(cores: int) -> dict[str, set[int]]:
    if cores >= 8:
        return {"node0": {0, 1}, "node1": {2, 3}, "node2": {4, 5}, "client": {6, 7}}
    return {"node0": {0}, "node1": {1}, "node2": {1}, "client": {0}}


def run(policy: str, tasks: int, slowdown: float, seed: int, pin: bool) -> dict[str, Any]:
    """``policy`` is a placement policy name, or ``name/nosteal`` (work stealing off), ``name/early`` (no late
    binding: the owner offers only nodes with an open window)."""
    name, _, variant = policy.partition("/")
    extra = ["--placement", name, "--no-gpu"]  # the fake GPU is the experiment's, even on a machine with a real one
    extra += {"nosteal": ["--no-steal"], "early": ["--late-binding", "off"], "": []}[variant]
    mesh = LocalMesh(3, workers=1, extra_args=extra, env=dict(SINGLE_THREADED),
                     per_node_args={1: ["--fake-gpu", "speed=1,memory=8GiB"]})
    try:
        for i in range(3):  # node 2 is the slow machine: only its environment carries the slowdown
            mesh.env["MESHAIOS_SLOWDOWN"] = str(slowdown) if i == 2 else "1"
            mesh.spawn(i)
        mesh.env.pop("MESHAIOS_SLOWDOWN")
        mesh.wait_ready()
        if pin:
            cores = pinning(os.cpu_count() or 1)
            for i in range(3):
                pin_threads(mesh.procs[i].pid, cores[f"node{i}"])  # a ready node has started its workers
            os.sched_setaffinity(0, cores["client"])
        with mesh.client(0) as c:
            wait_for(lambda: len(c.status()["members"]) == 2, timeout=15, what="discovery")
            c.gather(submit_all(c, workload(40, seed + 1000)), timeout=300)  # a first taste for the model
            work = workload(tasks, seed)
            t0 = time.perf_counter()
            futs = submit_all(c, work)
            c.gather(futs, timeout=600)
            makespan = time.perf_counter() - t0
            st = c.status()
            names = {m["id"]: m["name"] for m in st["members"]}
            names[st["node"]["id"]] = st["node"]["name"]
            per_node: dict[str, int] = {}
            for f in futs:
                name = names.get(f.node, f.node[:8])
                per_node[name] = per_node.get(name, 0) + 1
            return {
                "policy": policy,
                "makespan_s": round(makespan, 3),
                "model": st["node"]["model"],
                "tasks_per_node": dict(sorted(per_node.items())),
            }
    finally:
        mesh.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=400)
    ap.add_argument("--slowdown", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=1, help="runs per policy, interleaved (medians are printed)")
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--no-pin", action="store_true", help="do not pin the nodes to cores")
    ap.add_argument("--verbose", action="store_true", help="the model's per-kernel MAPE")
    ap.add_argument("--json")
    args = ap.parse_args()
    policies = args.policies.split(",")
    rows: list[dict[str, Any]] = []
    for rep in range(args.repeat):
        for p in policies:
            r = run(p, args.tasks, args.slowdown, args.seed, pin=not args.no_pin and (os.cpu_count() or 1) >= 2)
            r["repeat"] = rep
            rows.append(r)
            m = r["model"]
            print(f"{p:13} run {rep}: makespan {r['makespan_s']:6.2f} s   model: {m.get('observations')} observations,"
                  f" MAPE {m.get('mape', 0):.0%}   tasks per node {r['tasks_per_node']}", flush=True)
            if args.verbose:
                kinds = ", ".join(f"{k[:14]} {n} {e:.0%}" for k, n, e in m.get("per_kernel", []))
                print(f"   per kernel (n, MAPE): {kinds}")
    print("\nmedian over repeats:")
    base = statistics.median(r["makespan_s"] for r in rows if r["policy"] == policies[0])
    for p in policies:
        ms = statistics.median(r["makespan_s"] for r in rows if r["policy"] == p)
        mape = statistics.median(r["model"].get("mape", 0) for r in rows if r["policy"] == p)
        print(f"{p:13} makespan {ms:6.2f} s  ({ms / base:.2f}x {policies[0]})   MAPE {mape:.0%}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
