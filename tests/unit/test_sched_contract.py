"""One contract, every placement policy (river's shared estimator checks, for schedulers).

Whatever a policy knows, the owner relies on three things: it returns one of the candidates it was given (the
owner updates that very object), it copes with the bare ``{"id": ...}`` task dict, and it is deterministic given
the injected ``rng`` (the simulator compares policies on the same seed)."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from meshaios.clock import ManualClock
from meshaios.sched.eft import EftPolicy
from meshaios.sched.loadview import DeviceLoad, make_summary
from meshaios.sched.placement import POLICY_NAMES, Locality, NodeLoad, PlacementPolicy, make_policy
from meshaios.tasks.owner import Dispatch, Owner, OwnerConfig
from meshaios.wire.payload import Payload


def _factory(name: str) -> Callable[[], PlacementPolicy]:
    if name == "eft":
        return lambda: EftPolicy(clock=ManualClock(), node_id="n0")
    if name == "local":
        return lambda: make_policy("local", node_id="n0")
    return lambda: make_policy(name)


POLICIES = [pytest.param(_factory(n), id=n) for n in POLICY_NAMES] + [
    pytest.param(lambda: Locality(EftPolicy(clock=ManualClock())), id="eft+locality"),
]


def _nodes(n: int) -> list[NodeLoad]:
    out = []
    for i in range(n):
        devs = {"cpu": DeviceLoad(2 + i % 3, 1, float(i), 1.0)}
        if i % 4 == 0:
            devs["gpu"] = DeviceLoad(1, 1, 0.0, 4.0)
        out.append(NodeLoad(f"n{i}", 2 + i % 3, inflight=i % 2, reported=i % 5, meta={"ld": make_summary(devs)}))
    return out


TASKS: list[dict[str, Any]] = [
    {"id": "bare"},
    {"id": "res", "resources": {}},
    {"id": "full", "fn_key": "meshaios.matmul", "nbytes": 1 << 20, "device": "any", "locations": {"n3": 1 << 24}},
    {"id": "gpu", "fn_key": "k", "device": "gpu"},
    {"id": "odd", "fn_key": None, "nbytes": "lots", "locations": ["not", "a", "dict"], "device": 7},
]


@pytest.mark.parametrize("make", POLICIES)
@pytest.mark.parametrize("n", [1, 2, 7, 40])
def test_returns_one_of_the_candidates_for_any_task(make: Callable[[], PlacementPolicy], n: int) -> None:
    policy = make()
    assert isinstance(policy.name, str)
    assert policy.name
    cands = _nodes(n)
    before = list(cands)
    for task in TASKS:
        got = policy.choose(dict(task), cands, random.Random(0))
        assert any(got is c for c in cands)
    assert cands == before  # the candidate list is the owner's: not reordered or trimmed


@pytest.mark.parametrize("make", POLICIES)
def test_is_deterministic_given_the_rng(make: Callable[[], PlacementPolicy]) -> None:
    def run() -> list[str]:
        policy, rng, cands = make(), random.Random(42), _nodes(30)
        out = []
        for i in range(50):
            nl = policy.choose({"id": f"t{i}", "fn_key": "k", "device": "any"}, cands, rng)
            nl.inflight += 1
            out.append(nl.node_id)
        return out

    assert run() == run()


@pytest.mark.parametrize("make", POLICIES)
@pytest.mark.parametrize("nodes", [5, 60])  # 60: the owner samples the candidates (``sched/sampling.py``)
def test_drives_a_real_owner(make: Callable[[], PlacementPolicy], nodes: int) -> None:
    """Every task submitted is dispatched to a live node, within the windows, and completes."""
    owner = Owner("n0", OwnerConfig(window_per_slot=2), make(), random.Random(1))
    for i in range(nodes):
        owner.node_up(f"n{i}", 2)
    empty = Payload(b"")
    actions = owner.submit(b"c", [{"id": f"t{i}", "fn": empty, "args": empty, "deps": []} for i in range(50)])
    done = 0
    while True:
        dispatched = [(a.node, t["id"]) for a in actions if isinstance(a, Dispatch) for t in a.tasks]
        if not dispatched:
            break
        for nl in owner.nodes.values():
            assert nl.inflight <= nl.slots * 2
        actions = []
        for node, tid in dispatched:
            actions += owner.completed(node, [{"id": tid, "ok": True, "v": empty}])
            done += 1
    assert done == 50
    assert owner.counters["done"] == 50
