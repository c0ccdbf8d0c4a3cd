"""``meshaios sim``: run a workload on a simulated mesh under several placement policies and compare them.

Examples::

    python -m meshaios.sim --nodes 20 --tasks 2000 --workload burst --policy all
    python -m meshaios.sim --nodes 200 --workload mixed --policy eft --membership swim --kill 3@10 --json
    python -m meshaios.sim --bench-placement 10,100,1000
    python -m meshaios.sim --cluster uniform --nodes 3 --per-host 3 --host-cores 2 --workload benchdag --tasks 150

Every run is seeded: the same arguments give the same schedules (only the measured wall-clock costs vary).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

from meshaios.config import NodeConfig
from meshaios.sched.loadview import DeviceLoad, LoadView, make_summary
from meshaios.sched.model import RuntimeModel, task_features
from meshaios.sched.placement import NodeLoad, PlacementPolicy, PlacementTask, make_policy
from meshaios.sim.engine import SimConfig, Simulation
from meshaios.sim.heft import heft, lower_bound
from meshaios.sim.workloads import (
    CATALOG,
    WORKLOADS,
    heterogeneous_cluster,
    make_workload,
    on_hosts,
    uniform_cluster,
)
from meshaios.tasks.owner import Owner, OwnerConfig
from meshaios.wire.payload import Payload

__all__ = ["bench_placement", "compare", "main"]

BASELINES = ("round-robin", "random", "least-loaded", "power-of-two")
ALL_POLICIES = ("eft", *BASELINES)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="meshaios sim", description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--nodes", type=int, default=20, help="simulated nodes (default 20)")
    p.add_argument("--tasks", type=int, default=2000, help="tasks in the workload (default 2000)")
    p.add_argument("--workload", choices=WORKLOADS, default="burst", help="workload shape (default burst)")
    p.add_argument("--policy", default="all", help="all, or one of: " + ", ".join((*ALL_POLICIES, "local")))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--window", type=int, default=OwnerConfig().window_per_slot,
                   help="owner's in-flight window per slot (default: the Owner's default)")
    p.add_argument("--membership", choices=("oracle", "swim"), default="oracle",
                   help="oracle: exact and instant; swim: the real SWIM protocol on a simulated network")
    p.add_argument("--steal", choices=("auto", "on", "off"), default="auto",
                   help="work stealing: auto = on for eft, off for the baselines")
    p.add_argument("--late-binding", choices=("on", "off"), default="on" if OwnerConfig().late_binding else "off",
                   help="eft is offered full nodes too and a task may wait for its best node (as meshaios node)")
    p.add_argument("--locality", choices=("on", "off"), default="on",
                   help="baselines weigh moving a task's inputs against waiting for their holder, as in meshaios "
                        "node (default on); off: the bare policies")
    p.add_argument("--liars", type=float, default=0.0,
                   help="fraction of slow nodes that declare full speed (default 0)")
    p.add_argument("--kill", action="append", default=[], metavar="N@T",
                   help="SIGKILL N random non-owner nodes T seconds after the start (repeatable)")
    p.add_argument("--owners", type=int, default=1, help="nodes that clients submit to (default 1)")
    p.add_argument("--cluster", choices=("mixed", "uniform"), default="mixed",
                   help="mixed: GPU, fast, slow and standard nodes (default); uniform: standard CPU nodes of one "
                        "worker each, as tools/bench starts LocalMesh")
    p.add_argument("--per-host", type=int, default=1, metavar="K",
                   help="K nodes (in order) to each host: they share its cores and a same-host link (default 1: "
                        "a host per node, no host ids)")
    p.add_argument("--host-cores", type=int, default=2, metavar="C", help="cores of each host (default 2)")
    p.add_argument("--host-aware", choices=("on", "off"), default="on",
                   help="nodes know their own host's cores, as meshaios node (default on); off: placement and the "
                        "steal gate do not read them")
    p.add_argument("--no-heft", action="store_true", help="skip the offline HEFT reference")
    p.add_argument("--bench-placement", metavar="N,N,...",
                   help="instead of a workload: CPU time per placement decision for these mesh sizes "
                        "(median and range of 7 runs)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    p.add_argument("--curve", action="store_true", help="keep the MAPE-over-time curve in the JSON")
    p.add_argument("--replay-seed", type=int, metavar="N",
                   help="instead of a workload: replay seed N of the fault-injection property test (sim/chaos.py) "
                        "and print its faults, the invariants it broke and its last events")
    return p


def _kills(specs: Sequence[str]) -> tuple[tuple[float, int], ...]:
    out = []
    for s in specs:
        n, _, t = s.partition("@")
        out.append((float(t or 0.0), int(n)))
    return tuple(out)


def compare(args: argparse.Namespace, argv: Sequence[str] = ()) -> dict[str, Any]:
    """Run the workload under each requested policy (same cluster, same tasks) plus the offline references."""
    nodes = (uniform_cluster(args.nodes) if args.cluster == "uniform"
             else heterogeneous_cluster(args.nodes, args.seed, args.liars))
    nodes = on_hosts(nodes, args.per_host, args.host_cores)
    workload = make_workload(args.workload, args.tasks, args.seed)
    policies = list(ALL_POLICIES) if args.policy == "all" else [args.policy]
    doc: dict[str, Any] = {
        "command": " ".join(["meshaios sim", *argv]),
        "nodes": args.nodes,
        "tasks": len(workload.tasks),
        "workload": args.workload,
        "seed": args.seed,
        "window_per_slot": args.window,
        "membership": args.membership,
        "cluster": _cluster_summary(nodes),
    }
    if args.per_host > 1:
        doc["hosts"] = {"per_host": args.per_host, "cores": args.host_cores, "aware": args.host_aware == "on"}
    if not args.no_heft:
        owner = sorted(n.node_id for n in nodes)[0]
        doc["heft"] = round(heft(workload.tasks, nodes, owner), 4)
        doc["heft_fifo"] = round(heft(workload.tasks, nodes, owner, order="fifo"), 4)
        doc["lower_bound"] = round(lower_bound(workload.tasks, nodes), 4)
    results = []
    for name in policies:
        steal = None if args.steal == "auto" else args.steal == "on"
        cfg = SimConfig(
            policy=name, seed=args.seed, stealing=steal, membership=args.membership, owners=args.owners,
            window_per_slot=args.window, kills=_kills(args.kill),
            late_binding=args.late_binding == "on", locality=args.locality == "on",
            host_aware=args.host_aware == "on",
        )
        r = Simulation(nodes, make_workload(args.workload, args.tasks, args.seed), cfg).run()
        d = r.as_dict()
        if not args.curve:
            d.pop("mape_curve", None)
        if "heft" in doc and doc["heft"] > 0:
            d["vs_heft"] = round(r.makespan / doc["heft"], 3)
        results.append(d)
    by = {d["policy"]: d for d in results}
    if "eft" in by:
        e = by["eft"]["makespan"]
        for d in results:
            d["eft_makespan_reduction"] = round(1 - e / d["makespan"], 3) if d["makespan"] else 0.0
    doc["results"] = results
    return doc


def _cluster_summary(nodes: Sequence[Any]) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for n in nodes:
        kinds[n.kind] = kinds.get(n.kind, 0) + 1
    return kinds


def bench_placement(sizes: Sequence[int], decisions: int = 1000, seed: int = 0, repeats: int = 7,
                    ) -> list[dict[str, Any]]:
    """CPU time of one placement decision as the mesh grows (``time.thread_time``: the decision's own work,
    not whatever else the machine runs), median of ``repeats`` runs, with their range under ``<key>_range``.

    ``<policy>_us``: the policy alone, handed every node (what a policy costs when it must see the whole mesh).
    Through the owner (``Owner.submit``, which builds the candidates: every node in a small mesh, a sample plus
    the inputs' holders in a large one, ``sched/sampling.py``): ``owner_eft_us`` places all tasks in one pass;
    ``owner_eft_one_us`` and ``owner_default_one_us`` (the default policy, least-loaded with locality) submit
    one task at a time, one placement pass per decision, as a steady stream of tasks or results does. The EFT
    model and load view are warm: every kernel seen, every node reported; every task reads 4 MiB from each of
    two random nodes."""
    out = []
    for n in sizes:
        rng = random.Random(seed)
        specs = heterogeneous_cluster(n, seed)
        model = RuntimeModel()
        for k in CATALOG:
            for d in ("cpu", "gpu") if k.gpu else ("cpu",):
                for i in range(5):
                    model.learn_one(task_features(k.name, (i + 1) << 20, d), k.base * (i + 1))
        view = LoadView()
        loads = []
        for s in specs:
            devs = {"cpu": DeviceLoad(s.cpu_slots, 0, rng.uniform(0, 10), s.cpu_declared)}
            if s.gpu_slots:
                devs["gpu"] = DeviceLoad(s.gpu_slots, 0, rng.uniform(0, 10), s.gpu_declared)
            summ = make_summary(devs, queued=3, stealable=2, bandwidth=s.bandwidth)
            view.update(s.node_id, summ, 0.0)
            loads.append(NodeLoad(s.node_id, s.cpu_slots, meta={"ld": summ}))
        tasks: list[PlacementTask] = []
        for i in range(decisions):
            k = rng.choice(CATALOG)
            holders = rng.sample(specs, min(2, n))
            tasks.append({"id": f"t{i}", "fn_key": k.name, "nbytes": 1 << 20, "device": "any" if k.gpu else "cpu",
                          "locations": {h.node_id: 4 << 20 for h in holders}})
        row: dict[str, Any] = {"nodes": n}
        me = specs[0].node_id

        for name in ("eft", *BASELINES):
            times = []
            for _ in range(repeats):
                pol = _bench_policy(name, model, view, me)
                t0 = time.thread_time()
                for t in tasks:
                    pol.choose(t.copy(), loads, rng)
                times.append(time.thread_time() - t0)
            _record(row, f"{name}_us", times, decisions)
        info = {t["id"]: t for t in tasks}
        empty = Payload(b"")
        specs_msgs = [{"id": t["id"], "fn": empty, "args": empty, "deps": []} for t in tasks]
        for key, name, one in (("owner_eft_us", "eft", False), ("owner_eft_one_us", "eft", True),
                               ("owner_default_one_us", NodeConfig.placement, True)):
            times = []
            for _ in range(repeats):
                owner = Owner(me, OwnerConfig(window_per_slot=decisions), _bench_policy(name, model, view, me),
                              random.Random(seed), info=info.get)
                for nl in loads:
                    owner.node_up(nl.node_id, nl.slots, nl.meta)
                t0 = time.thread_time()
                if one:
                    for spec in specs_msgs:
                        owner.submit(b"c", [spec], 0.0)
                else:
                    owner.submit(b"c", specs_msgs, 0.0)
                times.append(time.thread_time() - t0)
            _record(row, key, times, decisions)
        out.append(row)
    return out


def _cell(row: dict[str, Any], key: str) -> str:
    rng = row.get(key + "_range")
    return f"{row[key]} ({rng[0]}-{rng[1]})" if rng else str(row[key])


def _bench_policy(name: str, model: RuntimeModel, view: LoadView, node_id: str) -> PlacementPolicy:
    """The policy as ``meshaios node`` builds it (``make_policy``), on the benchmark's fixed clock."""
    return make_policy(name, model=model, view=view, clock=_FixedClock(), node_id=node_id)


def _record(row: dict[str, Any], key: str, times: list[float], decisions: int) -> None:
    us = sorted(t / decisions * 1e6 for t in times)
    row[key] = round(statistics.median(us), 2)
    row[key + "_range"] = [round(us[0], 2), round(us[-1], 2)]


class _FixedClock:
    def now(self) -> float:
        return 0.0


def _table(doc: dict[str, Any]) -> str:
    lines = [
        f"{doc['workload']}: {doc['tasks']} tasks on {doc['nodes']} nodes {doc['cluster']}, seed {doc['seed']}, "
        f"window {doc['window_per_slot']}/slot, membership {doc['membership']}",
    ]
    if "hosts" in doc:
        h = doc["hosts"]
        aware = "on" if h["aware"] else "off"
        lines.append(f"hosts of {h['per_host']} nodes sharing {h['cores']} cores, host-aware {aware}")
    if "heft" in doc:
        lines.append(f"offline HEFT (true runtimes) {doc['heft']:.2f} s; same in FIFO order {doc['heft_fifo']:.2f} s; "
                     f"lower bound {doc['lower_bound']:.2f} s")
    lines.append(f"{'policy':<14}{'makespan':>10}{'xHEFT':>7}{'mean':>8}{'job':>8}{'steals':>8}{'wasted':>7}"
                 f"{'lost':>6}{'dup':>5}{'MAPE':>7}{'us/dec':>8}{'moved MB':>10}")
    for d in doc["results"]:
        lines.append(
            f"{d['policy']:<14}{d['makespan']:>10.2f}{d.get('vs_heft', 0):>7.2f}{d['mean_completion']:>8.2f}"
            f"{d['mean_job_completion']:>8.2f}{d['steals']:>8}{d['wasted_steals']:>7}{d['lost']:>6}"
            f"{d['duplicate_executions']:>5}{d['mape']:>7.3f}{d['decision_us']:>8.1f}{d['bytes_moved'] / 1e6:>10.0f}"
        )
    return "\n".join(lines)


def _out(text: str) -> None:
    """The command's output (stdout, not logging: it is the result, often piped into jq)."""
    sys.stdout.write(text + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.replay_seed is not None:
        from meshaios.sim.chaos import replay

        return 1 if replay(args.replay_seed).problems else 0
    if args.bench_placement:
        sizes = [int(x) for x in args.bench_placement.split(",") if x.strip()]
        rows = bench_placement(sizes, seed=args.seed)
        if args.json:
            _out(json.dumps({"bench_placement": rows}, indent=2))
        else:
            keys = [k for k in rows[0] if not k.endswith("_range")] if rows else []
            _out("CPU us per decision (time.thread_time), median (min-max) of 7 runs of 1,000 decisions")
            _out("  ".join(f"{k:>22}" for k in keys))
            for r in rows:
                _out("  ".join(f"{_cell(r, k):>22}" for k in keys))
        return 0
    if args.policy != "all" and args.policy not in (*ALL_POLICIES, "local"):
        sys.stderr.write(f"unknown policy {args.policy!r}\n")
        return 2
    doc = compare(args, argv)
    _out(json.dumps(doc, indent=2) if args.json else _table(doc))
    return 0
