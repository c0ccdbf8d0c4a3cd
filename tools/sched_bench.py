"""The learned scheduler on real nodes (issue 5, acceptance 2).

A 3-node local mesh: node0 a plain CPU node, node1 with a fake GPU, node2 deliberately slowed 4x
(``MESHAIOS_SLOWDOWN``: every task holds its worker ``slowdown`` times as long, as on a slower machine). One client
submits a mixed workload of real built-in kernels (matmul, blur, histogram on the CPU; conv2d pinned to the GPU)
and an I/O-bound function (it waits on "a remote service" for a time that grows with its input), sizes drawn at
random, none seen before the run but for a short warm-up. The same workload runs once per placement policy on a
fresh mesh; the makespan, where the tasks went, and the owner's runtime-model MAPE are printed side by side.

    python tools/sched_bench.py [--tasks 400] [--slowdown 4] [--repeat 2] [--json out.json]

``--devices`` runs the device experiment instead (issue 18): EFT on 3 nodes, node1 with a fake GPU declared 8x;
chains of kernel tasks (matmul, gelu, matmul, gelu, layer_norm, row sum; N x N float32, each step's result kept
on the device for the next) submitted with ``device="any"`` (EFT picks per task) or ``--choice gpu`` (pinned),
among plain CPU tasks; it prints the per-task timeline the nodes report (task, node, device, start, end), where
the GPU and CPU tasks ran, and the GPU node's host<->device copies:

    python tools/sched_bench.py --devices [--choice any|gpu] [--chains 6] [--cpu-tasks 24] [--n 256] [--real-gpu]

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


# ---- the device experiment (issue 18): GPU kernel chains chained on the GPU node, CPU tasks elsewhere -----------
CHAIN_STEPS = ("matmul", "gelu", "matmul", "gelu", "layer_norm", "sum")  # a layer of an MLP, its row sums back


def cpu_work(a: np.ndarray) -> float:
    """A CPU task with no GPU implementation (a plain function): it never asks for a device."""
    return float(np.sort(a, kind="stable").cumsum()[-1])


def device_workload(chains: int, cpu_tasks: int, n: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray],
                                                                              list[np.ndarray]]:
    """Two N x N float32 weights shared by every chain, one input per chain, one vector per CPU task."""
    rng = np.random.default_rng(seed)
    ws = [(rng.standard_normal((n, n)) / np.sqrt(n)).astype(np.float32) for _ in range(2)]
    xs = [rng.standard_normal((n, n)).astype(np.float32) for _ in range(chains)]
    vs = [rng.random(200_000 * (1 + i % 3)) for i in range(cpu_tasks)]
    return ws, xs, vs


def chain_reference(x: np.ndarray, ws: list[np.ndarray]) -> np.ndarray:
    reg = default_registry()
    h = x
    for step, w in zip(("matmul", "gelu", "matmul", "gelu"), (ws[0], None, ws[1], None), strict=True):
        h = reg.get(f"meshaios.{step}").call("cpu", (h,) if w is None else (h, w))
    h = reg.get("meshaios.layer_norm").call("cpu", (h,))
    out: np.ndarray = reg.get("meshaios.sum").call("cpu", (h,), {"axis": 1})
    return out


def device_run(chains: int = 6, cpu_tasks: int = 24, n: int = 256, choice: str = "any", seed: int = 0,
               pin: bool = False, workers: int = 1, real_gpu: bool = False) -> dict[str, Any]:
    """A 3-node mesh of real processes, EFT placement: node1 has a fake GPU declared 8x (its only GPU: real ones
    are ignored; ``real_gpu``: the GPUs cupy sees instead), node0 and node2 are CPU-only (``--no-gpu``). One
    client submits ``chains`` chains of kernel tasks (CHAIN_STEPS; every step but the last
    ``keep_on_device=True``, each with ``device=choice``: ``"any"``, EFT picks, or ``"gpu"``, pinned)
    interleaved with ``cpu_tasks`` plain CPU tasks. Returns the per-task timeline as the nodes report it
    (``status``'s ``node.timeline``: node, device kind, start, end), and the GPU node's copies."""
    reg = default_registry()
    ws, xs, vs = device_workload(chains, cpu_tasks, n, seed)
    gpu_args = [] if real_gpu else ["--no-gpu", "--fake-gpu", "speed=8,memory=1GiB"]
    mesh = LocalMesh(3, workers=workers, extra_args=["--placement", "eft"], env=dict(SINGLE_THREADED),
                     per_node_args={0: ["--no-gpu"], 1: gpu_args, 2: ["--no-gpu"]})
    try:
        mesh.start()
        if pin:
            cores = pinning(os.cpu_count() or 1)
            for i in range(3):
                pin_threads(mesh.procs[i].pid, cores[f"node{i}"])
        names = {p.node_id: p.name for p in mesh.procs}
        gpu_node = mesh.by_index(1).node_id
        with mesh.client(0) as c, mesh.client(1) as c1:
            wait_for(lambda: len(c.status()["members"]) == 2, timeout=15, what="discovery")
            for i in (0, 2):  # every owner knows node1's GPU (its gossiped devices) before the first task
                with mesh.client(i) as ci:
                    wait_for(lambda ci=ci: any(m["id"] == gpu_node and "gpu" in str(m["devices"])
                                               for m in ci.status()["members"]), timeout=15, what="the GPU gossiped")
            gpu_name = next(iter(c1.status()["node"]["gpu"]))
            before = dict(c1.status()["node"]["gpu"][gpu_name])
            wrefs = [c.put(w, device="gpu") for w in ws]  # the weights, onto the GPU node's device once
            tasks: list[tuple[str, int, str, Any]] = []  # (kind, chain, step, future)
            cpu_left = list(enumerate(vs))
            per_chain = max(1, -(-cpu_tasks // max(1, chains)))  # CPU tasks submitted between two chains
            t0 = time.time()
            for j, x in enumerate(xs):
                h: Any = x
                for k, step in enumerate(CHAIN_STEPS):
                    kern = reg.get(f"meshaios.{step}")
                    last = k == len(CHAIN_STEPS) - 1
                    args = (h, wrefs[0] if k == 0 else wrefs[1]) if step == "matmul" else (h,)
                    kw = {"axis": 1} if step == "sum" else {}
                    h = c.submit(kern, *args, device=choice, keep_on_device=not last, **kw)
                    tasks.append(("gpu", j, step, h))
                for _ in range(per_chain):
                    if cpu_left:
                        i, v = cpu_left.pop(0)
                        tasks.append(("cpu", i, "cpu_work", c.submit(cpu_work, v)))
            for i, v in cpu_left:
                tasks.append(("cpu", i, "cpu_work", c.submit(cpu_work, v)))
            # only the chains' row sums and the CPU tasks' results come back: the intermediates stay on the GPU
            wanted = [t for t in tasks if t[0] == "cpu" or t[2] == "sum"]
            results = c.gather([f for *_, f in wanted], timeout=300)
            makespan = time.time() - t0
            wrong = 0
            for (kind, j, step, _f), r in zip(wanted, results, strict=True):
                if kind == "gpu" and step == "sum":
                    wrong += not np.allclose(r, chain_reference(xs[j], ws), rtol=1e-3, atol=1e-2)
                elif kind == "cpu":
                    wrong += not np.isclose(r, cpu_work(vs[j]))
            after = dict(c1.status()["node"]["gpu"][gpu_name])
            records: dict[str, Any] = {}
            for i in range(3):  # each node's own report of what it ran (its most recent 200 attempts)
                with mesh.client(i) as ci:
                    for r in ci.status()["node"]["timeline"]:
                        if r["outcome"] == "ok":
                            records[r["task"]] = r
        rows = []
        for kind, j, step, f in tasks:
            r = records.get(f.task_id)
            rows.append({
                "task": f"chain{j}.{step}" if kind == "gpu" else f"cpu{j}",
                "kind": kind,
                "chain": j if kind == "gpu" else None,
                "node": names.get(r["node"], r["node"][:8]) if r else names.get(f.node, "?"),
                "device": r["device"] if r else "?",
                "start": round(r["started"] - t0, 4) if r and r["started"] is not None else None,
                "end": round(r["finished"] - t0, 4) if r and r["finished"] is not None else None,
            })  # fmt: skip
        return {
            "choice": choice,
            "chains": chains,
            "cpu_tasks": cpu_tasks,
            "n": n,
            "makespan_s": round(makespan, 3),
            "wrong": wrong,
            "gpu_node": names[gpu_node],
            "gpu": gpu_name,
            "fake": not real_gpu,
            "copies": {k: int(after[k]) - int(before[k]) for k in ("h2d", "d2h", "h2d_bytes", "d2h_bytes")},
            "timeline": rows,
        }
    finally:
        mesh.close()


def device_summary(r: dict[str, Any]) -> dict[str, Any]:
    """What the timeline says: where the GPU tasks ran (and whether each chain stayed on one device of one node),
    where the CPU tasks ran."""
    rows = r["timeline"]
    gpu_rows = [x for x in rows if x["kind"] == "gpu"]
    cpu_rows = [x for x in rows if x["kind"] == "cpu"]
    where: dict[str, dict[str, int]] = {"gpu": {}, "cpu": {}}
    for x in rows:
        at = f"{x['node']}/{x['device']}"
        where[x["kind"]][at] = where[x["kind"]].get(at, 0) + 1
    chained = 0
    for j in range(r["chains"]):
        steps = {(x["node"], x["device"]) for x in gpu_rows if x["chain"] == j}
        chained += steps == {(r["gpu_node"], "gpu")}
    return {
        "gpu_tasks": len(gpu_rows),
        "gpu_tasks_on_gpu_node_gpu": sum(x["node"] == r["gpu_node"] and x["device"] == "gpu" for x in gpu_rows),
        "chains_whole_on_gpu_node": chained,
        "cpu_tasks": len(cpu_rows),
        "cpu_tasks_on_cpu": sum(x["device"] == "cpu" for x in cpu_rows),
        "cpu_tasks_off_gpu_node": sum(x["node"] != r["gpu_node"] for x in cpu_rows),
        "where": {k: dict(sorted(v.items())) for k, v in where.items()},
    }


def print_devices(r: dict[str, Any]) -> None:
    print(f"device choice: {r['chains']} chains of {len(CHAIN_STEPS)} kernel tasks (N={r['n']}, "
          f"device={r['choice']!r}) + {r['cpu_tasks']} CPU tasks; GPU node {r['gpu_node']} "
          f"({r['gpu']}{', fake, declared 8x' if r['fake'] else ''})")
    print(f"{'task':18} {'node':6} {'device':6} {'start s':>8} {'end s':>8}")
    for x in sorted(r["timeline"], key=lambda x: (x["start"] is None, x["start"] or 0.0)):
        start = "-" if x["start"] is None else f"{x['start']:.4f}"
        end = "-" if x["end"] is None else f"{x['end']:.4f}"
        print(f"{x['task']:18} {x['node']:6} {x['device']:6} {start:>8} {end:>8}")
    s = device_summary(r)
    cp = r["copies"]
    print(f"\nGPU tasks: {s['gpu_tasks_on_gpu_node_gpu']} of {s['gpu_tasks']} on {r['gpu_node']}'s GPU; chains whole "
          f"on it: {s['chains_whole_on_gpu_node']} of {r['chains']}; where: {s['where']['gpu']}")
    print(f"CPU tasks: {s['cpu_tasks_on_cpu']} of {s['cpu_tasks']} on a CPU, {s['cpu_tasks_off_gpu_node']} off the GPU "
          f"node; where: {s['where']['cpu']}")
    print(f"GPU node copies: {cp['h2d']} host->device ({cp['h2d_bytes'] / 2**20:.1f} MiB), {cp['d2h']} device->host "
          f"({cp['d2h_bytes'] / 2**10:.1f} KiB); makespan {r['makespan_s']:.2f} s; wrong results {r['wrong']}")


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
    ap.add_argument("--devices", action="store_true",
                    help="the device experiment instead: GPU kernel chains and CPU tasks, a per-task timeline")
    ap.add_argument("--chains", type=int, default=6, help="--devices: chains of kernel tasks")
    ap.add_argument("--cpu-tasks", type=int, default=24, help="--devices: plain CPU tasks")
    ap.add_argument("--n", type=int, default=256, help="--devices: N of the chains' N x N float32 matrices")
    ap.add_argument("--choice", choices=("any", "gpu"), default="any",
                    help="--devices: the chains' submit(device=...): 'any' (EFT picks) or 'gpu' (pinned)")
    ap.add_argument("--real-gpu", action="store_true", help="--devices: node1 uses the GPUs cupy sees, not a fake one")
    args = ap.parse_args()
    if args.devices:
        r = device_run(args.chains, args.cpu_tasks, args.n, args.choice, args.seed,
                       pin=not args.no_pin and (os.cpu_count() or 1) >= 2, real_gpu=args.real_gpu)
        r["summary"] = device_summary(r)
        print_devices(r)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(r, fh, indent=2)
        return 1 if r["wrong"] else 0
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
