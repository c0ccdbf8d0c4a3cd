"""``meshaios chaos``: a local mesh, a workload with a known answer, faults from a seeded plan, an account.

Real node processes on loopback (LocalMesh), real SIGKILL / SIGSTOP. The workload mixes independent tasks, a DAG
(a tree reduction over part of them) and a shuffle (a group-by mapreduce). Faults are injected by a thread
following ``make_plan``; killed nodes are restarted under the same name. Partitions are cut inside the nodes
(``--fault-injection``: each node drops the traffic of the peers, and of the client, on the other side), since
loopback has no links to cut; tests/system/test_partition_netns.py cuts real ones. Detection times are measured by
polling the survivors' status. The verdict: lost, hung, duplicated and wrong must all be zero; wasted work (task
executions beyond one per task, counted by the executors) is reported beside them.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import statistics
import threading
import time
from dataclasses import asdict
from typing import Any, TypedDict

from meshaios.chaos import workload as W
from meshaios.chaos.account import Account
from meshaios.chaos.plan import Fault, make_plan
from meshaios.client import Client, Future
from meshaios.errors import MeshUnavailable, TaskError
from meshaios.testing.localmesh import LocalMesh, wait_for
from meshaios.wire import messages as M

_STARTS = frozenset(("kill", "pause", "pause_entry", "partition_with", "partition_away"))  # a fault begins


class Injector(threading.Thread):
    """Applies the plan to the mesh and measures how long survivors take to call a killed node dead."""

    def __init__(self, mesh: LocalMesh, plan: list[Fault], t0: float, client: Client | None = None) -> None:
        super().__init__(name="chaos-injector", daemon=True)
        self.mesh = mesh
        self.client = client
        self.executions_lost = 0  # tasks run by nodes before they were killed (their counters die with them)
        self.plan = plan
        self.t0 = t0
        self.done = threading.Event()
        self.log: list[str] = []
        self.started = 0  # faults of the plan begun (the workload may end before the last ones are due)
        self.detection: list[float] = []
        self.errors: list[str] = []

    def run(self) -> None:
        timers: list[tuple[float, str, int]] = []
        for f in self.plan:
            timers.append((f.at, f.kind, f.node))
            end = {"kill": "restart", "pause": "resume", "pause_entry": "resume"}.get(f.kind, "heal")
            timers.append((f.at + f.duration, end, f.node))
        for at, kind, node in sorted(timers):
            while time.monotonic() - self.t0 < at:
                if self.done.wait(0.02):
                    return
            try:
                self._apply(kind, node)
            except Exception as exc:  # the run goes on; the account says what happened
                self.errors.append(f"{kind} node{node}: {exc}")

    def _apply(self, kind: str, node: int) -> None:
        t = time.monotonic() - self.t0
        p = self.mesh.by_index(node)
        self.log.append(f"{t:6.2f}s {kind:7} node{node}")
        if kind in _STARTS:
            self.started += 1
        if kind == "kill":
            victim = p.node_id
            with contextlib.suppress(Exception):
                self.executions_lost += _status(self.mesh, node)["finished"]
            self.mesh.kill(node, signal.SIGKILL)
            threading.Thread(target=self._measure, args=(victim, time.monotonic()), daemon=True).start()
        elif kind == "restart":
            self.mesh.spawn(node, name=f"node{node}")
            self.mesh.wait_ready(20)
        elif kind in ("pause", "pause_entry"):
            self.mesh.kill(node, signal.SIGSTOP)
        elif kind == "resume":
            self.mesh.kill(node, signal.SIGCONT)
        elif kind in ("partition_with", "partition_away"):
            self.partition(client_with_entry=kind == "partition_with")
        elif kind == "heal":
            for q in self.mesh.procs:
                _fault(self.mesh, q.index, [], [])

    def partition(self, client_with_entry: bool) -> None:
        """Split the nodes into halves, the client's current entry node in the first; the client is cut off from
        the half it is not on."""
        procs = sorted(self.mesh.procs, key=lambda q: q.index)
        entry = self.client.address if self.client is not None else procs[0].address
        procs.sort(key=lambda q: q.address != entry)  # stable: the entry node first, the others in index order
        k = max(1, len(procs) // 2)
        halves = [procs[:k], procs[k:]]
        self.log.append(f"        halves {[q.index for q in halves[0]]} | {[q.index for q in halves[1]]}")
        # every identity the client speaks under: one per node owning its tasks (meshaios/shards.py)
        idents = [] if self.client is None else [self.client._async.core.ident(s) for s in range(8)]
        for i, half in enumerate(halves):
            other = halves[1 - i]
            client_here = (i == 0) == client_with_entry
            for q in half:
                _fault(self.mesh, q.index, other, [] if client_here else idents)

    def _measure(self, victim: str, t_kill: float) -> None:
        """Time until every live survivor's status shows the victim dead (or left)."""
        deadline = t_kill + 15
        pending = {p.index for p in self.mesh.procs if p.alive() and p.node_id != victim}
        while pending and time.monotonic() < deadline:
            for i in list(pending):
                with contextlib.suppress(Exception):
                    p = self.mesh.by_index(i)
                    if not p.alive():
                        pending.discard(i)
                        continue
                    with self.mesh.client(i, connect_timeout=1.0, spread=1) as c:
                        st = {m["id"]: m["state"] for m in c.status(timeout=1.0)["members"]}
                    if st.get(victim) in ("dead", "left", None):
                        pending.discard(i)
            time.sleep(0.05)
        if not pending:
            self.detection.append(time.monotonic() - t_kill)


def _fault(mesh: LocalMesh, index: int, cut: list[Any], clients: list[str]) -> None:
    """Tell node ``index`` to drop the traffic of the nodes in ``cut`` and of these clients (nothing: heal)."""
    msg: M.Fault = {
        "t": M.FAULT, "nodes": [q.node_id for q in cut], "addrs": [q.address for q in cut], "clients": clients
    }
    with mesh.client(index, connect_timeout=2.0, spread=1) as c:
        c._call(c._async._request(msg, M.PONG, 2.0), timeout=5.0)


def _status(mesh: LocalMesh, index: int) -> M.StatusNode:
    with mesh.client(index, connect_timeout=1.0, spread=1) as c:
        node: M.StatusNode = c.status(timeout=1.0)["node"]
        return node


def run_workload(
    c: Client, tasks: int, delay: float, shuffle_chunks: int, deadline_s: float = 300.0
) -> tuple[Account, float, int]:
    """The job, its account, its run time and how many tasks it submitted (each should run once)."""
    t0 = time.perf_counter()
    account = Account()
    completions: dict[str, int] = {}

    def count(f: Future) -> None:
        completions[f.key] = completions.get(f.key, 0) + 1

    futs = c.map(W.work, range(tasks), [delay] * tasks)
    dag_n = min(256, tasks)
    level: list[Future] = futs[:dag_n]
    n_tasks = tasks + shuffle_chunks + 4  # the map, the mapreduce's map and reduce tasks; the DAG's adds below
    while len(level) > 1:
        nxt = [c.submit(W.add, level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        n_tasks += len(nxt)
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    dag = level[0]
    shuffle = c.mapreduce(W.chunk, W.group_sum, range(shuffle_chunks), partitions=4)
    for f in [*futs, dag, *shuffle]:
        f.add_done_callback(count)

    deadline = time.monotonic() + deadline_s
    for i, f in enumerate(futs):
        account.record(f"task{i}", W.expected_work(i), *_outcome(f, deadline), completions=completions.get(f.key, 1))
    account.record("dag", sum(W.expected_work(i) for i in range(dag_n)), *_outcome(dag, deadline))
    merged: dict[int, int] = {}
    outcome = "ok"
    for f in shuffle:
        o, v = _outcome(f, deadline)
        if o != "ok":
            outcome = o
            merged = {}
            break
        merged.update(v)
    account.record("shuffle", W.expected_group_sum(range(shuffle_chunks)), outcome, merged)
    return account, time.perf_counter() - t0, n_tasks


LOSS_ERRORS = frozenset({"meshaios.NodeLost", "meshaios.ObjectLost", "meshaios.LineageLost"})


def _outcome(f: Future, deadline: float) -> tuple[str, Any]:
    try:
        return "ok", f.result(timeout=max(0.1, deadline - time.monotonic()))
    except TimeoutError:
        return "hung", None
    except Exception as exc:
        lost = isinstance(exc, MeshUnavailable) or (isinstance(exc, TaskError) and exc.remote_type in LOSS_ERRORS)
        return "lost" if lost else "failed", f"{type(exc).__name__}: {exc}"


class Detection(TypedDict):
    count: int  # kills whose detection was measured
    p50: float | None
    p99: float | None


class ChaosReport(TypedDict, total=False):
    """What ``chaos`` returns (and ``meshaios chaos --json`` writes)."""

    seed: int
    nodes: int
    tasks: int
    plan: list[dict[str, object]]  # the faults planned (``chaos.plan.Fault``)
    baseline_s: float  # the job without faults (not with --no-baseline)
    faulty_s: float
    overhead: float  # faulty_s / baseline_s
    failovers: int
    owners: int  # nodes that owned the client's tasks (its shards, meshaios/shards.py)
    reconciles: int
    resubmitted: int
    client_duplicate_deliveries: int
    slots_free_after_s: float | None
    re_executions: int
    job_tasks: int
    executions: int
    wasted: int  # runs beyond one per task
    wasted_pct: float
    account: dict[str, object]  # ``chaos.account.Account``: submitted, ok, failed, lost, hung, ... examples
    valid: bool
    faults: list[str]
    faults_made: int  # of len(plan): the faults begun before the workload ended
    injector_errors: list[str]
    detection_s: Detection


def chaos(args: argparse.Namespace) -> ChaosReport:
    plan = make_plan(
        args.seed,
        args.nodes,
        args.kills,
        args.window,
        pauses=args.pauses,
        entry_pauses=args.entry_pauses,
        partitions=args.partitions,
    )
    report: ChaosReport = {
        "seed": args.seed,
        "nodes": args.nodes,
        "tasks": args.tasks,
        "plan": [asdict(f) for f in plan],
    }
    if args.delay is None:  # stretch the job over the faults' starts (postponed ones included): they land mid-job
        span = max([args.window] + [f.at + 1.0 for f in plan])
        args.delay = span * args.nodes * args.workers / max(1, args.tasks)
    extra = ["--fault-injection"] if any(f.kind.startswith("partition") for f in plan) else []
    with LocalMesh(args.nodes, workers=args.workers, extra_args=extra, startup_timeout=60.0) as mesh:
        with mesh.client(0, spread=1) as c:
            wait_for(lambda: len(c.status()["members"]) >= args.nodes - 1, timeout=20, what="discovery")
        spread = {} if args.spread is None else {"spread": args.spread}
        if not args.no_baseline:
            with mesh.client(0, **spread) as c:
                _, report["baseline_s"], _ = run_workload(c, args.tasks, args.delay, args.shuffle_chunks)
            _wait_idle(mesh)
        executions_before = _executions(mesh)
        with mesh.client(0, heartbeat_timeout=args.failover_after, reconcile_after=args.reconcile_after, **spread) as c:
            wait_for(lambda: len(c._async._known_nodes) >= args.nodes, timeout=10, what="client learns the mesh")
            owners = min(c._async.spread, args.nodes)
            wait_for(lambda: len(c._async.core.shards) >= owners, timeout=10, what="the client's owners")
            injector = Injector(mesh, plan, time.monotonic(), c)
            injector.start()
            account, elapsed, n_tasks = run_workload(c, args.tasks, args.delay, args.shuffle_chunks, args.deadline)
            injector.done.set()
            injector.join(timeout=30)
            report["faulty_s"] = elapsed
            report["failovers"] = c._async.failovers
            report["owners"] = len(c._async.core.shards)
            report["reconciles"] = c._async.reconciles
            report["resubmitted"] = c._async.resubmitted
            report["client_duplicate_deliveries"] = c._async.stats["duplicates"]
        t_idle = time.monotonic()
        idle = _wait_idle(mesh)
        report["slots_free_after_s"] = round(time.monotonic() - t_idle, 3) if idle else None
        report["re_executions"] = _re_executions(mesh)
        executions = _executions(mesh) + injector.executions_lost - executions_before
        report["job_tasks"] = n_tasks
        report["executions"] = executions
        report["wasted"] = executions - n_tasks  # runs beyond one per task (a killed node's count is taken at kill)
        report["wasted_pct"] = round(100.0 * report["wasted"] / max(1, n_tasks), 2)
    det = sorted(injector.detection)
    report["account"] = asdict(account)
    report["valid"] = account.valid
    report["faults"] = injector.log
    report["faults_made"] = injector.started
    report["injector_errors"] = injector.errors
    report["detection_s"] = {
        "count": len(det),
        "p50": round(statistics.median(det), 3) if det else None,
        "p99": round(det[min(len(det) - 1, int(0.99 * len(det)))], 3) if det else None,
    }
    if "baseline_s" in report:
        report["overhead"] = round(report["faulty_s"] / report["baseline_s"], 2)
    return report


def _wait_idle(mesh: LocalMesh) -> bool:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        busy = 0
        for p in mesh.procs:
            if not p.alive():
                continue
            with contextlib.suppress(Exception), mesh.client(p.index, connect_timeout=1.0, spread=1) as c:
                busy += c.status(timeout=1.0)["node"]["queued"]
        if busy == 0:
            return True
        time.sleep(0.1)
    return False


def _executions(mesh: LocalMesh) -> int:
    """Tasks run so far by the live nodes (finished, with a value or an error), as each executor counts them."""
    total = 0
    for p in mesh.procs:
        if p.alive():
            with contextlib.suppress(Exception):
                total += _status(mesh, p.index).get("finished", 0)
    return total


def _re_executions(mesh: LocalMesh) -> int:
    total = 0
    for p in mesh.procs:
        if not p.alive():
            continue
        with contextlib.suppress(Exception), mesh.client(p.index, connect_timeout=1.0, spread=1) as c:
            o = c.status(timeout=1.0)["node"]["owner"]
            total += o.get("replaced", 0) + o.get("recomputed", 0) + o.get("lost_inputs", 0)
    return total


def render(report: ChaosReport) -> str:
    a = report["account"]
    lines = [
        f"meshaios chaos: seed {report['seed']}, {report['nodes']} nodes, {report['tasks']} tasks + a DAG + a shuffle",
        f"faults ({report['faults_made']} of {len(report['plan'])} planned made"
        + (", the rest due after the job ended" if report["faults_made"] < len(report["plan"]) else "")
        + "): "
        + ("; ".join(s.strip() for s in report["faults"]) or "none"),
        f"submitted {a['submitted']}  ok {a['ok']}  failed {a['failed']}  lost {a['lost']}  hung {a['hung']}  "
        f"duplicated {a['duplicated']}  wrong {a['wrong']}",
        f"wasted work: {report['executions']} executions for {report['job_tasks']} tasks, "
        f"{report['wasted']} beyond one each ({report['wasted_pct']}%)",
        f"client owners {report['owners']}, failovers {report['failovers']}, reconciles {report['reconciles']}, "
        f"tasks resubmitted {report['resubmitted']}, "
        f"re-executions on owners {report['re_executions']}",
        f"detection of killed nodes: p50 {report['detection_s']['p50']} s, p99 {report['detection_s']['p99']} s "
        f"({report['detection_s']['count']} kills measured)",
        f"run {report['faulty_s']:.2f} s"
        + (f" vs {report['baseline_s']:.2f} s fault-free (x{report['overhead']})" if "baseline_s" in report else "")
        + f"; slots free again {report['slots_free_after_s']} s after the job",
    ]
    examples = a.get("examples")
    if isinstance(examples, list) and examples:
        lines.append("examples: " + "; ".join(map(str, examples)))
    if report["injector_errors"]:
        lines.append("injector errors: " + "; ".join(report["injector_errors"]))
    lines.append("VALID: nothing lost, hung, duplicated or wrong" if report["valid"] else "INVALID")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nodes", type=int, default=5)
    p.add_argument("--tasks", type=int, default=10_000)
    p.add_argument("--kills", type=int, default=4)
    p.add_argument("--pauses", type=int, default=0, help="SIGSTOP/SIGCONT faults of non-entry nodes (gray failures)")
    p.add_argument("--entry-pauses", type=int, default=0, help="SIGSTOP/SIGCONT of the client's entry node, 5-10 s")
    p.add_argument(
        "--partitions", type=int, default=0, help="split the mesh in halves for 5-10 s, the client on either side"
    )
    p.add_argument("--reconcile-after", type=float, default=15.0, help="client: reconcile after this long idle")
    p.add_argument("--deadline", type=float, default=300.0, help="seconds the job may take; then pending is 'hung'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--window", type=float, default=8.0, help="seconds over which faults are spread")
    p.add_argument("--delay", type=float, help="seconds each tiny task sleeps (default: spread over the window)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--shuffle-chunks", type=int, default=12)
    p.add_argument("--failover-after", type=float, default=3.0, help="client heartbeat timeout")
    p.add_argument(
        "--spread", type=int, help="nodes owning the client's tasks (default: the client's, up to the mesh size)"
    )
    p.add_argument("--no-baseline", action="store_true", help="skip the fault-free reference run")
    p.add_argument("--json", help="write the report here as JSON")
