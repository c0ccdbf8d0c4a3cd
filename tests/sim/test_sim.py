"""The simulator: learned placement beats the baselines, stealing repairs a pile-up, nothing is lost or run twice.

Seeded and deterministic: these are comparisons of schedules, not of wall-clock timings."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from meshaios.sim.cli import bench_placement, main
from meshaios.sim.engine import SimConfig, SimResult, Simulation
from meshaios.sim.heft import heft, lower_bound
from meshaios.sim.workloads import heterogeneous_cluster, make_workload


def _run(policy: str, workload: str = "burst", tasks: int = 2000, nodes: int = 20, seed: int = 0,
         **cfg: object) -> SimResult:
    return Simulation(heterogeneous_cluster(nodes, seed), make_workload(workload, tasks, seed),
                      SimConfig(policy=policy, seed=seed, **cfg)).run()  # type: ignore[arg-type]


def test_learned_eft_beats_round_robin_and_random_on_a_heterogeneous_mesh() -> None:
    """20 nodes (GPU, fast, slow and standard), waves of mixed kernels whose runtimes the policy must learn."""
    eft, rr, rnd = _run("eft"), _run("round-robin"), _run("random")
    for r in (eft, rr, rnd):
        assert r.completed == r.tasks == 2000
        assert r.duplicate_executions == 0
    assert eft.makespan < 0.85 * rr.makespan
    assert eft.makespan < 0.85 * rnd.makespan
    assert eft.mean_job_completion < 0.7 * min(rr.mean_job_completion, rnd.mean_job_completion)
    assert eft.mape < 0.35  # it learned the runtimes as it went


def test_the_simulation_is_deterministic() -> None:
    a = _run("eft", tasks=600)
    b = _run("eft", tasks=600)
    assert (a.makespan, a.steals, a.events, a.mean_completion) == (b.makespan, b.steals, b.events, b.mean_completion)


def test_idle_peers_steal_when_all_tasks_land_on_one_node() -> None:
    common = {"policy": "local", "workload": "independent", "tasks": 600, "nodes": 8, "window_per_slot": 1000}
    piled = _run(stealing=False, **common)  # type: ignore[arg-type]
    stolen = _run(stealing=True, **common)  # type: ignore[arg-type]
    assert stolen.steals > 100
    assert stolen.makespan < 0.4 * piled.makespan
    assert stolen.completed == stolen.tasks
    assert stolen.duplicate_executions == 0  # no task ever executed twice ...
    assert stolen.max_moves == 1  # ... and none moved more than once, so none bounced between two nodes


def test_with_gpu_choice_eft_puts_gpu_kernels_on_gpus_through_the_executors_gpu_queue() -> None:
    """As ``meshaios node --gpu-choice``: kernels with a GPU implementation reach EFT as "any"; what it puts on a
    GPU travels as the RUN's ``device`` and waits in that node's ExecCore for its GPU slot. Without it no task
    runs on a GPU (none asks for one)."""
    off = Simulation(heterogeneous_cluster(20, 0), make_workload("burst", 1000, 0), SimConfig(policy="eft"))
    on = Simulation(heterogeneous_cluster(20, 0), make_workload("burst", 1000, 0),
                    SimConfig(policy="eft", gpu_choice=True))
    r_off, r_on = off.run(), on.run()
    assert off.gpu_runs == 0
    assert on.gpu_runs > 0
    for r in (r_off, r_on):
        assert r.completed == r.tasks
        assert r.duplicate_executions == 0


def test_a_node_dying_mid_run_loses_nothing() -> None:
    r = _run("eft", tasks=800, kills=((3.0, 2),))
    assert len(r.killed) == 2
    assert r.completed == r.tasks
    assert r.replaced > 0


def test_runs_on_the_real_swim_protocol() -> None:
    r = _run("eft", tasks=300, nodes=8, membership="swim", kills=((2.0, 1),))
    assert r.completed == r.tasks
    assert r.killed


@pytest.mark.parametrize("workload", ["independent", "dag", "mapreduce", "mixed", "burst"])
def test_every_workload_completes_and_heft_is_sane(workload: str) -> None:
    nodes = heterogeneous_cluster(10, 1)
    w = make_workload(workload, 300, 1)
    h = heft(w.tasks, nodes, "n000")
    assert h >= lower_bound(w.tasks, nodes) - 1e-9
    r = _run("eft", workload=workload, tasks=300, nodes=10, seed=1)
    assert r.completed == r.tasks
    assert r.makespan >= lower_bound(w.tasks, nodes) - 1e-9


def test_late_binding_runs() -> None:
    r = _run("eft", tasks=600, late_binding=True)
    assert r.completed == r.tasks
    assert r.duplicate_executions == 0


def test_cli_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--nodes", "6", "--tasks", "120", "--workload", "mixed", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {d["policy"] for d in doc["results"]} == {"eft", "round-robin", "random", "least-loaded", "power-of-two"}
    assert doc["heft"] > 0
    assert all(d["lost"] == 0 for d in doc["results"])


def test_cli_rejects_an_unknown_policy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--policy", "nope"]) == 2


def test_runs_as_a_module() -> None:
    out = subprocess.run([sys.executable, "-m", "meshaios.sim", "--nodes", "5", "--tasks", "60", "--policy", "eft",
                          "--json", "--no-heft"], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout)["results"][0]["completed"] == 60


def test_placement_cost_benchmark_runs() -> None:
    rows = bench_placement([10, 50], decisions=50, repeats=1)
    assert [r["nodes"] for r in rows] == [10, 50]
    assert all(r["eft_us"] > 0 for r in rows)


@pytest.mark.slow
def test_placement_cost_stays_flat_up_to_a_thousand_nodes() -> None:
    rows = bench_placement([10, 1000], decisions=1000, repeats=5)
    assert rows[1]["eft_us"] < 2.0 * rows[0]["eft_us"]


@pytest.mark.slow
def test_a_thousand_node_mesh() -> None:
    r = _run("eft", tasks=10000, nodes=1000)
    assert r.completed == r.tasks
