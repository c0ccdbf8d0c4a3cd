"""EftPolicy on hand-built cases: device choice, locality against speed, queues, sampling in large meshes."""

from __future__ import annotations

import random
from typing import Any

import pytest

from meshaios.clock import ManualClock
from meshaios.sched.eft import EftConfig, EftPolicy, allowed_devices
from meshaios.sched.loadview import DeviceLoad, LoadView, make_summary
from meshaios.sched.model import RuntimeModel, task_features
from meshaios.sched.placement import NodeLoad

MB = 1 << 20
GB = 1 << 30


def _model(**kernels: tuple[float, float | None]) -> RuntimeModel:
    """kernel name (with '_' for '.') -> (cpu seconds, gpu seconds or None) at any size (size does not matter)."""
    m = RuntimeModel()
    for name, (cpu, gpu) in kernels.items():
        k = name.replace("_", ".")
        for i in range(30):
            nbytes = (1 + i % 5) * MB
            m.learn_one(task_features(k, nbytes, "cpu"), cpu)
            if gpu is not None:
                m.learn_one(task_features(k, nbytes, "gpu"), gpu)
    return m


def _node(nid: str, cpu: int = 4, gpu: int = 0, speed: float = 1.0, gpu_speed: float = 1.0,
          backlog: float = 0.0) -> NodeLoad:
    devs = {"cpu": DeviceLoad(cpu, cpu, backlog, speed)}
    if gpu:
        devs["gpu"] = DeviceLoad(gpu, gpu, 0.0, gpu_speed)
    return NodeLoad(nid, cpu, meta={"ld": make_summary(devs)})


def _policy(model: RuntimeModel, view: LoadView | None = None, node_id: str = "owner", **cfg: Any) -> EftPolicy:
    return EftPolicy(model, view or LoadView(), ManualClock(100.0), node_id=node_id, config=EftConfig(**cfg))


def test_allowed_devices() -> None:
    assert allowed_devices({}) == ("cpu",)
    assert allowed_devices({"device": "any"}) == ("cpu", "gpu")
    assert allowed_devices({"device": "gpu:1"}) == ("gpu",)


def test_prefers_the_gpu_node_for_a_gpu_fast_kernel() -> None:
    pol = _policy(_model(k_mm=(2.0, 0.1)))
    cands = [_node("cpu1"), _node("cpu2"), _node("gpu1", gpu=1)]
    task = {"id": "t", "fn_key": "k.mm", "nbytes": 0, "device": "any"}
    assert pol.choose(task, cands, random.Random(0)).node_id == "gpu1"
    assert task["placed_device"] == "gpu"
    assert task["predicted_s"] == pytest.approx(0.1, rel=0.3)


def test_keeps_a_gpu_slow_kernel_on_a_cpu() -> None:
    pol = _policy(_model(k_sum=(0.05, 0.5)))
    task = {"id": "t", "fn_key": "k.sum", "device": "any"}
    pol.choose(task, [_node("gpu1", gpu=1)], random.Random(0))
    assert task["placed_device"] == "cpu"


def test_a_cpu_only_task_never_gets_a_gpu() -> None:
    pol = _policy(_model(k_mm=(2.0, 0.1)))
    task = {"id": "t", "fn_key": "k.mm", "device": "cpu"}
    pol.choose(task, [_node("gpu1", gpu=1)], random.Random(0))
    assert task["placed_device"] == "cpu"


def test_prefers_data_locality_when_transfer_is_expensive() -> None:
    pol = _policy(_model(k_parse=(1.0, None)))
    cands = [_node("a"), _node("b"), _node("c")]
    task = {"id": "t", "fn_key": "k.parse", "locations": {"b": 1 * GB}}  # 8.6 s over 1 Gb/s, 1 s to compute
    assert pol.choose(task, cands, random.Random(0)).node_id == "b"


def test_moves_data_when_the_compute_gain_is_larger() -> None:
    pol = _policy(_model(k_parse=(1.0, None)))
    cands = [_node("slow", speed=0.05), _node("fast")]
    task = {"id": "t", "fn_key": "k.parse", "locations": {"slow": 10 * MB}}  # 0.08 s to move, 19 s saved
    assert pol.choose(task, cands, random.Random(0)).node_id == "fast"


def test_chooses_the_local_cpu_when_moving_the_data_to_a_gpu_costs_more_than_it_saves() -> None:
    pol = _policy(_model(k_mm=(3.0, 0.3)))
    cands = [_node("holder"), _node("gpu1", gpu=1)]
    big = {"id": "t1", "fn_key": "k.mm", "device": "any", "locations": {"holder": 2 * GB}}  # 17 s to move
    assert pol.choose(big, cands, random.Random(0)).node_id == "holder"
    assert big["placed_device"] == "cpu"
    small = {"id": "t2", "fn_key": "k.mm", "device": "any", "locations": {"holder": 10 * MB}}
    assert pol.choose(small, cands, random.Random(0)).node_id == "gpu1"
    assert small["placed_device"] == "gpu"


def test_inline_arguments_favour_the_owner() -> None:
    pol = _policy(_model(k_parse=(0.5, None)), node_id="owner")
    cands = [_node("other"), _node("owner")]
    task = {"id": "t", "fn_key": "k.parse", "nbytes": 1 * GB}
    assert pol.choose(task, cands, random.Random(0)).node_id == "owner"


def test_avoids_a_node_with_a_long_gossiped_queue() -> None:
    view = LoadView()
    view.update("busy", make_summary({"cpu": DeviceLoad(4, 0, 400.0, 1.0)}), 100.0)
    view.update("idle", make_summary({"cpu": DeviceLoad(4, 4, 0.0, 1.0)}), 100.0)
    pol = _policy(_model(k_parse=(1.0, None)), view)
    task = {"id": "t", "fn_key": "k.parse"}
    assert pol.choose(task, [_node("busy"), _node("idle")], random.Random(0)).node_id == "idle"


def test_a_declared_slow_node_gets_the_short_tasks_not_the_long_ones() -> None:
    pol = _policy(_model(k_long=(10.0, None), k_short=(0.01, None)))
    slow, fast = _node("slow", cpu=1, speed=0.25), _node("fast", cpu=1)
    fast.inflight = 1  # a 10 s task already there
    pol.choose({"id": "x", "fn_key": "k.long"}, [fast], random.Random(0))
    long = {"id": "t1", "fn_key": "k.long"}
    assert pol.choose(long, [slow, fast], random.Random(0)).node_id == "fast"  # 20 s there beats 40 s here
    short = {"id": "t2", "fn_key": "k.short"}
    assert pol.choose(short, [slow, fast], random.Random(0)).node_id == "slow"


def test_spreads_equal_work_over_equal_nodes() -> None:
    """The policy remembers what it placed (no completion callback needed): no pile-up on the first node."""
    pol = _policy(_model(k_parse=(1.0, None)))
    cands = [_node(f"n{i}", cpu=2) for i in range(4)]
    counts: dict[str, int] = {}
    for i in range(8):
        nl = pol.choose({"id": f"t{i}", "fn_key": "k.parse"}, cands, random.Random(i))
        nl.inflight += 1  # what the owner does
        counts[nl.node_id] = counts.get(nl.node_id, 0) + 1
    assert counts == {f"n{i}": 2 for i in range(4)}


def test_finished_work_is_forgotten_when_the_owner_reports_fewer_in_flight() -> None:
    pol = _policy(_model(k_parse=(1.0, None)))
    a, b = _node("a", cpu=1), _node("b", cpu=1)
    for i in range(3):
        nl = pol.choose({"id": f"t{i}", "fn_key": "k.parse"}, [a], random.Random(0))
        nl.inflight += 1
    a.inflight = 0  # all three done
    assert pol.choose({"id": "t9", "fn_key": "k.parse"}, [b, a], random.Random(0)).node_id in ("a", "b")
    est = pol.estimate({"fn_key": "k.parse"}, a)
    assert est is not None
    assert est.start == pytest.approx(100.0)


def test_large_mesh_evaluates_a_sample_plus_the_data_holders() -> None:
    pol = _policy(_model(k_parse=(1.0, None)), node_id="n0000")
    cands = [_node(f"n{i:04d}") for i in range(500)]
    task = {"id": "t", "fn_key": "k.parse", "locations": {"n0321": 1 * GB}}
    chosen = pol.choose(task, cands, random.Random(0))
    assert chosen.node_id == "n0321"
    cfg = pol.config
    assert pol.evaluated <= cfg.sample + 1 + 1 + cfg.keep_winners + cfg.gpu_sample
    assert chosen in cands


def test_large_mesh_finds_a_gpu_for_a_gpu_task() -> None:
    pol = _policy(_model(k_mm=(5.0, 0.1)))
    cands = [_node(f"c{i:03d}") for i in range(300)] + [_node("g1", gpu=1)]
    task = {"id": "t", "fn_key": "k.mm", "device": "any"}
    assert pol.choose(task, cands, random.Random(1)).node_id == "g1"


def test_copes_with_the_bare_task_dict_of_todays_owner() -> None:
    pol = _policy(RuntimeModel())
    task: dict[str, Any] = {"id": "t", "resources": {}}
    nl = pol.choose(task, [NodeLoad("a", 2), NodeLoad("b", 2)], random.Random(0))
    assert nl.node_id in ("a", "b")
    assert task["placed_device"] == "cpu"
    assert task["predicted_s"] > 0


def test_no_node_with_the_required_device_falls_back_to_least_loaded() -> None:
    pol = _policy(_model(k_mm=(2.0, 0.1)))
    a, b = _node("a"), _node("b")
    a.inflight = 3
    task = {"id": "t", "fn_key": "k.mm", "device": "gpu"}
    assert pol.choose(task, [a, b], random.Random(0)).node_id == "b"


def test_a_nodes_own_kernel_factor_counts_until_the_owner_has_seen_it_run() -> None:
    view = LoadView()
    view.update("strong", make_summary({"cpu": DeviceLoad(4, 4, 0.0, 1.0)}, kernel_factors={"k.parse": 4.0}), 100.0)
    view.update("plain", make_summary({"cpu": DeviceLoad(4, 4, 0.0, 1.0)}), 100.0)
    pol = _policy(_model(k_parse=(1.0, None)), view)
    task = {"id": "t", "fn_key": "k.parse"}
    assert pol.choose(task, [_node("plain"), _node("strong")], random.Random(0)).node_id == "strong"
    assert task["predicted_s"] == pytest.approx(0.25, rel=0.3)


def test_replicated_inputs_are_free_on_any_holder() -> None:
    pol = _policy(_model(k_parse=(1.0, None)))
    cands = [_node("a"), _node("b"), _node("c")]
    task = {"id": "t", "fn_key": "k.parse", "inputs": [[["b", "c"], 1 * GB], [["c"], 1 * MB]]}
    assert pol.choose(task, cands, random.Random(0)).node_id == "c"
    est_b, est_a = pol.estimate(task, cands[1]), pol.estimate(task, cands[0])
    assert est_b is not None
    assert est_a is not None
    assert est_b.transfer < 0.1 < est_a.transfer


def test_waits_for_a_full_node_only_when_it_is_clearly_sooner() -> None:
    """Late binding: a full node is picked (the owner then holds the task for it) only if its estimated finish beats
    the best open node's by more than ``wait_margin``; estimates are noisy, and an idle slot is a certain loss."""
    for margin, expected in ((0.2, "fast"), (0.5, "slow")):
        pol = _policy(_model(k_f=(1.0, None)), wait_margin=margin)
        fast = _node("fast", cpu=1, speed=4.0)  # 0.25 s per task
        slow = _node("slow", cpu=1, speed=1.0)  # 1 s per task
        fast.window = slow.window = 2
        for i in range(2):  # fill the fast node's window through the policy, so it knows that queue
            assert pol.choose({"id": f"q{i}", "fn_key": "k.f"}, [fast], random.Random(0)) is fast
            fast.inflight += 1
        task = {"id": "t", "fn_key": "k.f"}
        # waiting for the fast node finishes in ~0.75 s, against ~1 s on the idle slow one: 25% sooner
        assert pol.choose(task, [fast, slow], random.Random(0)).node_id == expected, margin


def test_a_node_without_a_window_is_never_full() -> None:
    nl = NodeLoad("n", 2, inflight=100)
    assert not nl.full
    nl.window = 100
    assert nl.full
