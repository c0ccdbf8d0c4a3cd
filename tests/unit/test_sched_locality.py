"""Placement knows where data is: one account of a task's inputs (``sched.inputs``), priced by every policy.

The owner's table says where each dependency's result lives; ``Owner.inputs``/``task_info`` turn that into inline
bytes (held by the owner) and inputs held on nodes -- a dependency is never counted as both. Every policy then
keeps a consumer on the holder of its input unless the holder is busier by more than moving the input costs."""

from __future__ import annotations

import random
from typing import Any

import pytest

from meshaios.clock import ManualClock
from meshaios.sched.eft import EftPolicy
from meshaios.sched.inputs import Held, Links, TaskInputs, parse_inputs, task_inputs, transfer_seconds
from meshaios.sched.placement import POLICY_NAMES, Locality, NodeLoad, make_policy
from meshaios.tasks.owner import Dispatch, Owner, OwnerAction, OwnerConfig
from meshaios.wire.payload import Payload

MB = 1 << 20
FN = Payload(b"fn")
SMALL = Payload(b"args")


def _dispatched(actions: list[OwnerAction]) -> dict[str, str]:
    return {t["id"]: a.node for a in actions if isinstance(a, Dispatch) for t in a.tasks}


def _owner(policy: Any = None, nodes: tuple[str, ...] = ("owner", "x", "y")) -> Owner:
    o = Owner("owner", OwnerConfig(), policy, random.Random(0))
    for n in nodes:
        o.node_up(n, 2)
    return o


def _produce_on(o: Owner, tid: str, node: str, size: int, **spec: Any) -> None:
    """Submit ``tid`` and have ``node`` finish it, keeping a ``size``-byte result there (not inline)."""
    acts = o.submit(b"c", [{"id": tid, "fn": FN, "args": SMALL, "deps": [], **spec}])
    where = _dispatched(acts)[tid]
    o.completed(where, [{"id": tid, "ok": True, "size": size}])
    t = o.tasks[tid]
    t.locations = [node]  # wherever placement sent it, the test wants the copy on ``node``
    o.node_tasks.get(where, set()).discard(tid)


def test_a_dependency_held_on_a_node_is_an_input_there_not_inline_bytes_at_the_owner() -> None:
    o = _owner()
    _produce_on(o, "big", "x", 200 * MB)
    o.submit(b"c", [{"id": "use", "fn": FN, "args": SMALL, "deps": ["big"]}])
    inputs = o.inputs("use")
    assert inputs == TaskInputs(SMALL.nbytes, (Held(("x",), 200 * MB),))
    info = o.task_info("use")
    assert info is not None
    assert info["nbytes"] == SMALL.nbytes  # the bug was 200 MB + args here, priced as if the owner held it
    assert info["inputs"] == [(["x"], 200 * MB)]


def test_inline_results_and_shuffle_parts() -> None:
    o = _owner()
    acts = o.submit(b"c", [{"id": "small", "fn": FN, "args": SMALL, "deps": []}])
    o.completed(_dispatched(acts)["small"], [{"id": "small", "ok": True, "v": Payload(b"x" * 100)}])
    _produce_on(o, "map", "y", 40 * MB, parts=4)
    o.submit(b"c", [{"id": "red", "fn": FN, "args": SMALL, "deps": ["small", "map#2"]}])
    assert o.inputs("red") == TaskInputs(SMALL.nbytes + 100, (Held(("y",), 10 * MB),))
    assert o.inputs("nope") is None


def test_lost_and_unknown_dependencies_are_not_priced() -> None:
    assert task_inputs(5, ["gone", "x#1"], lambda _i: None) == TaskInputs(5, ())


def test_parse_inputs_reads_both_shapes_and_ignores_junk() -> None:
    task = {"nbytes": 10, "inputs": [[["a", "b"], 7], ["bad"], [[], 3], [["c"], -1]], "locations": {"d": 2, "e": "x"}}
    assert parse_inputs(task) == TaskInputs(10, (Held(("d",), 2), Held(("a", "b"), 7)))
    assert parse_inputs({"nbytes": "lots"}) == TaskInputs()


def test_transfer_is_zero_on_a_holder_and_bytes_over_bandwidth_elsewhere() -> None:
    inp = TaskInputs(MB, (Held(("x", "z"), 100 * MB),))
    links = Links(default=100 * MB, latency=0.0)
    assert transfer_seconds(inp, "owner", "owner", links.bandwidth, 0.0) == pytest.approx(1.0)
    assert transfer_seconds(inp, "x", "owner", links.bandwidth, 0.0) == pytest.approx(0.01)
    assert transfer_seconds(inp, "z", "owner", links.bandwidth, 0.0) == pytest.approx(0.01)


def test_links_prefer_a_measurement_then_the_reported_ingress_then_the_default() -> None:
    links = Links(default=1e8, max_pairs=2)
    assert links.bandwidth("a", "b") == 1e8
    assert links.bandwidth("a", "b", reported=5e8) == 5e8
    links.observe("a", "b", 100 * MB, 0.1)
    assert links.bandwidth("a", "b", reported=5e8) == pytest.approx(100 * MB / 0.1)
    links.observe("a", "b", 100, 1.0)  # too small to say anything about bandwidth
    links.observe("a", "b", 100 * MB, 0.0)  # no time: ignored
    assert links.measured("a", "b") == pytest.approx(100 * MB / 0.1)
    links.observe("c", "b", 100 * MB, 1.0)
    links.observe("d", "b", 100 * MB, 1.0)  # bounded: the oldest pair goes
    assert links.measured("a", "b") is None
    assert set(links.snapshot()) == {"c->b", "d->b"}
    with pytest.raises(ValueError, match="positive"):
        Links(default=0)


def test_an_unmeasured_pair_of_one_host_is_priced_at_shared_memory_speed() -> None:
    links = Links(default=125e6, local=1e9)
    links.hosts.update({"a": "h1", "b": "h1", "c": "h2"})
    assert links.bandwidth("a", "b", reported=2e8) == 1e9  # /dev/shm, whatever b measured from elsewhere
    assert links.bandwidth("a", "c", reported=2e8) == 2e8  # another host: the network
    assert links.bandwidth("a", "d") == 125e6  # a node whose host nobody told us
    links.observe("a", "b", 100 * MB, 0.05)
    assert links.bandwidth("a", "b") == pytest.approx(100 * MB / 0.05)  # a measurement beats the assumption


def test_an_unmeasured_pair_of_one_host_takes_the_pair_measured_the_other_way() -> None:
    """A node measures only what it fetches (``src -> itself``). Priced at ``local`` the other way, a copy out to a
    peer of the host looked 2x cheaper than one in (the DAG benchmark: 0.45 GB/s measured, 1 GB/s assumed), and
    the steal gate on a victim priced a thief's 200 MiB fetch at 0.21 s; it took 0.33 s."""
    links = Links(default=125e6, local=1e9)
    links.hosts.update({"a": "h1", "b": "h1", "c": "h2"})
    links.observe("b", "a", 100 * MB, 0.25)  # a fetched from b
    assert links.bandwidth("a", "b", reported=2e9) == pytest.approx(100 * MB / 0.25)
    links.observe("c", "a", 100 * MB, 0.5)
    assert links.bandwidth("a", "c", reported=2e8) == 2e8  # another host: not symmetric, the reported ingress


def test_a_consumer_leaves_its_busy_holder_for_an_idle_node_of_the_same_host() -> None:
    """Two nodes of one machine, 200 MB input on x with 3 tasks ahead per slot: priced at the network's 1 Gb/s the
    copy (1.7 s) costs more than waiting behind them, so x keeps the consumer -- and y, never fetching, never
    measures that it could have had it in 0.2 s. Priced at shared-memory speed, y takes it."""
    cands = [NodeLoad("x", 1, inflight=3), NodeLoad("y", 1, inflight=0)]
    task = {"id": "use", "nbytes": 64, "inputs": [[["x"], 200 * MB]]}
    apart = Locality(make_policy("least-loaded", locality=False), node_id="x", task_s=0.5)
    assert apart.choose(dict(task), cands, random.Random(0)).node_id == "x"
    together = Locality(make_policy("least-loaded", locality=False), node_id="x", task_s=0.5)
    together.links.hosts.update({"x": "h", "y": "h"})
    assert together.choose(dict(task), cands, random.Random(0)).node_id == "y"


def _cands(holder_inflight: int, other_inflight: int = 0) -> list[NodeLoad]:
    return [NodeLoad("owner", 2, inflight=other_inflight), NodeLoad("x", 2, inflight=holder_inflight),
            NodeLoad("y", 2, inflight=other_inflight)]


CONSUMER = {"id": "use", "fn_key": "k", "nbytes": 64, "inputs": [[["x"], 200 * MB]]}


@pytest.mark.parametrize("name", [n for n in POLICY_NAMES if n not in ("eft", "local")])
def test_every_baseline_keeps_a_consumer_on_the_holder_unless_it_is_far_busier(name: str) -> None:
    for seed in range(6):  # whatever the inner policy would have picked
        policy = make_policy(name, node_id="owner")
        assert isinstance(policy, Locality)
        got = policy.choose(dict(CONSUMER), _cands(holder_inflight=3), random.Random(seed))
        assert got.node_id == "x"
        # 40 tasks ahead per slot at 0.5 s each is 20 s of waiting: moving 200 MB at 1 Gb/s (1.7 s) is cheaper, so
        # the policy's own pick stands
        got = make_policy(name, node_id="owner").choose(dict(CONSUMER), _cands(holder_inflight=80),
                                                         random.Random(seed))
        bare = make_policy(name, node_id="owner", locality=False).choose(dict(CONSUMER), _cands(holder_inflight=80),
                                                                          random.Random(seed))
        assert got.node_id == bare.node_id


def test_without_locality_a_baseline_ignores_where_the_input_is() -> None:
    rr = make_policy("round-robin", locality=False)
    picks = {rr.choose(dict(CONSUMER), _cands(3), random.Random(0)).node_id for _ in range(3)}
    assert picks == {"owner", "x", "y"}


def test_small_inputs_are_left_to_the_inner_policy() -> None:
    task = {"id": "t", "inputs": [[["x"], 1000]]}
    rr = make_policy("round-robin")
    assert {rr.choose(dict(task), _cands(0), random.Random(0)).node_id for _ in range(3)} == {"owner", "x", "y"}


@pytest.mark.parametrize("policy", ["least-loaded", "eft"])
def test_through_a_real_owner_consumers_of_a_big_result_run_on_its_holder(policy: str) -> None:
    """The owner's own task info, as the node wires it (the owner tells any policy what it knows of a task)."""
    inner = make_policy(policy, node_id="owner", clock=ManualClock()) if policy != "eft" else EftPolicy(
        clock=ManualClock(), node_id="owner")
    o = _owner(inner)
    _produce_on(o, "big", "x", 200 * MB)
    acts = o.submit(b"c", [{"id": f"use{i}", "fn": FN, "args": SMALL, "deps": ["big"]} for i in range(3)])
    assert set(_dispatched(acts).values()) == {"x"}


def test_the_owner_weighs_its_own_nodes_load_from_other_owners() -> None:
    """A peer's load reaches the owner on its DONEs; its own node's comes from ``self_load`` (the node's executor:
    tasks of every owner accepted and not finished). With two owners the owner's node used to look idle while it
    ran the other owner's work: tasks queued there behind it, and data moved to it (the DAG benchmark)."""
    o = Owner("owner", OwnerConfig(), make_policy("least-loaded", node_id="owner"), random.Random(0))
    for n in ("owner", "x"):
        o.node_up(n, 1)
    o.self_load = lambda: 2  # another owner's two tasks run and wait on this node
    acts = o.submit(b"c", [{"id": f"t{i}", "fn": FN, "args": SMALL, "deps": []} for i in range(2)])
    assert _dispatched(acts) == {"t0": "x", "t1": "x"}


def test_a_consumer_stays_on_the_idle_holder_when_the_owners_node_is_busy_with_other_owners() -> None:
    o = Owner("owner", OwnerConfig(), make_policy("least-loaded", node_id="owner"), random.Random(0))
    for n in ("owner", "x"):
        o.node_up(n, 1)
    _produce_on(o, "a", "x", 100 * MB)
    _produce_on(o, "b", "owner", 100 * MB)
    o.node_load("x", 1)  # x runs one task (its DONE said so)
    o.self_load = lambda: 3  # the owner's node: three of the other owner's tasks
    acts = o.submit(b"c", [{"id": "mix", "fn": FN, "args": SMALL, "deps": ["a", "b"]}])
    assert _dispatched(acts) == {"mix": "x"}  # not to the owner's node, behind three tasks
