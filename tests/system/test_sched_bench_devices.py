"""The device experiment of ``tools/sched_bench.py --devices`` (issue 18) on real node processes, small: kernel
chains submitted with ``device="gpu"`` run on the fake-GPU node's GPU, every step of a chain there, and plain CPU
tasks on CPUs -- as the nodes' own timelines report it (``status``'s ``node.timeline``: node, device, start,
end); with ``device="any"`` EFT picks per task, and what ran on a GPU ran on the GPU node."""

from __future__ import annotations

import pytest

from tests.system.test_gpu_resident_processes import load_script

pytestmark = pytest.mark.system

CHAINS, CPU_TASKS, N = 2, 6, 64  # 16 KiB matrices: kept on the device only because the steps ask (keep_on_device)


def test_gpu_chains_run_on_the_gpu_node_and_cpu_tasks_on_cpus_in_the_nodes_timelines() -> None:
    bench = load_script("tools/sched_bench.py")
    r = bench.device_run(CHAINS, CPU_TASKS, N, choice="gpu")
    assert r["wrong"] == 0
    rows = r["timeline"]
    assert len(rows) == CHAINS * len(bench.CHAIN_STEPS) + CPU_TASKS
    for x in rows:  # every task has its record, from the node that ran it
        assert x["start"] is not None, x
        assert x["end"] is not None, x
        assert x["end"] >= x["start"], x
    gpu = [x for x in rows if x["kind"] == "gpu"]
    assert {(x["node"], x["device"]) for x in gpu} == {(r["gpu_node"], "gpu")}
    assert {x["device"] for x in rows if x["kind"] == "cpu"} == {"cpu"}
    s = bench.device_summary(r)
    assert s["chains_whole_on_gpu_node"] == CHAINS
    assert s["cpu_tasks_on_cpu"] == CPU_TASKS
    # chained on the device: the two weights (put once) and each chain's input go in, each row sum comes out
    assert r["copies"]["h2d"] == 2 + CHAINS
    assert r["copies"]["d2h"] == CHAINS


def test_with_device_any_eft_picks_per_task_and_a_gpu_pick_runs_on_the_gpu_node() -> None:
    bench = load_script("tools/sched_bench.py")
    r = bench.device_run(CHAINS, CPU_TASKS, N, choice="any")
    assert r["wrong"] == 0
    rows = r["timeline"]
    assert all(x["device"] in ("cpu", "gpu") for x in rows), rows
    assert all(x["node"] == r["gpu_node"] for x in rows if x["device"] == "gpu"), rows
    assert {x["device"] for x in rows if x["kind"] == "cpu"} == {"cpu"}
