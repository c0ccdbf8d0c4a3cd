"""Placement that does not need the whole mesh (``sched/sampling.py``): the index of the owner's nodes, the sample
of one decision, and the owner handing its policy a sample in a large mesh and every node in a small one."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from meshaios.sched.placement import NodeLoad, PlacementPolicy, PlacementTask
from meshaios.sched.sampling import SCAN_BELOW, NodeIndex, SampleConfig, holder_ids, sample
from meshaios.tasks.owner import Dispatch, Owner, OwnerConfig
from meshaios.wire.payload import Payload

EMPTY = Payload(b"")


def _index(n: int, window: int = 2) -> tuple[NodeIndex, dict[str, NodeLoad]]:
    index = NodeIndex()
    nodes = {}
    for i in range(n):
        nl = NodeLoad(f"n{i}", 2, window=window)
        index.add(nl)
        nodes[nl.node_id] = nl
    return index, nodes


def test_holders_and_the_local_node_are_always_candidates() -> None:
    index, nodes = _index(500)
    for seed in range(50):
        got = {nl.node_id for nl in sample(index, nodes, random.Random(seed), d=2, open_only=True,
                                           extra=["n7", "n400", "me-unknown", "n0"])}
        assert {"n7", "n400", "n0"} <= got
        assert len(got) <= 2 + 3


def test_a_full_holder_is_offered_only_to_a_late_binding_policy() -> None:
    index, nodes = _index(100)
    nodes["n7"].inflight = 2  # its window is full
    early = {nl.node_id for nl in sample(index, nodes, random.Random(0), d=3, open_only=True, extra=["n7"])}
    late = {nl.node_id for nl in sample(index, nodes, random.Random(0), d=3, open_only=False, extra=["n7"])}
    assert "n7" not in early
    assert "n7" in late


def test_d_at_least_the_mesh_size_gives_every_open_node() -> None:
    index, nodes = _index(6)
    nodes["n2"].inflight = 2
    got = sample(index, nodes, random.Random(0), d=6, open_only=True)
    assert sorted(nl.node_id for nl in got) == ["n0", "n1", "n3", "n4", "n5"]
    got = sample(index, nodes, random.Random(0), d=6, open_only=False)
    assert sorted(nl.node_id for nl in got) == [f"n{i}" for i in range(6)]


def test_the_sample_is_deterministic_given_the_rng() -> None:
    def run() -> list[list[str]]:
        index, nodes = _index(300)
        rng = random.Random(42)
        out = []
        for i in range(100):
            got = sample(index, nodes, rng, d=4, open_only=True, extra=[f"n{i}"])
            got[0].inflight += 1
            out.append([nl.node_id for nl in got])
            if i % 10 == 0:
                index.remove(nodes.pop(f"n{i + 1}"))
        return out

    assert run() == run()


def test_resources_few_nodes_have_are_found_or_reported_missing() -> None:
    index, nodes = _index(200)
    gpu = {"n13", "n150"}
    fits = lambda nl: nl.node_id in gpu  # noqa: E731
    got = sample(index, nodes, random.Random(1), d=4, open_only=True, extra=["n150"], fits=fits)
    assert {nl.node_id for nl in got} <= gpu
    assert "n150" in {nl.node_id for nl in got}
    assert sample(index, nodes, random.Random(1), d=4, open_only=True, fits=lambda nl: False) == []


def test_holder_ids_take_every_inputs_first_holder_largest_first_up_to_the_limit() -> None:
    task: PlacementTask = {"inputs": [(["a", "b"], 10), (["c"], 1000), (["d", "e"], 500)], "locations": {"f": 3}}
    assert holder_ids(task) == ["a", "c", "d", "b", "e", "f"]
    assert holder_ids(task, limit=2) == ["c", "d"]  # more inputs than room: the largest ones'
    assert holder_ids({"inputs": "junk", "locations": None}) == []  # type: ignore[typeddict-item]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["add", "remove", "inflight", "window", "slots"]),
                          st.integers(0, 9), st.integers(-3, 5)), max_size=80))
def test_the_index_always_agrees_with_a_scan(ops: list[tuple[str, int, int]]) -> None:
    """Whatever happens to the nodes, the open bag, the totals and the sample match a scan of the nodes."""
    index = NodeIndex()
    nodes: dict[str, NodeLoad] = {}
    for op, i, v in ops:
        nid = f"n{i}"
        nl = nodes.get(nid)
        if op == "add" and nl is None:
            nodes[nid] = nl = NodeLoad(nid, 1 + i % 3, inflight=max(0, v), window=2 + i % 2)
            index.add(nl)
        elif nl is None:
            continue
        elif op == "remove":
            index.remove(nodes.pop(nid))
            nl.inflight += 1  # a removed node's changes no longer count
        elif op == "inflight":
            nl.inflight = max(0, nl.inflight + v)
        elif op == "window":
            nl.window = max(0, v)
        else:
            nl.slots = max(1, nl.slots + v)
        open_ids = sorted(n.node_id for n in nodes.values() if not n.full)
        assert sorted(n.node_id for n in index.draw(random.Random(0), 100, True)) == open_ids
        assert index.open_count == len(open_ids)
        assert len(index) == len(nodes)
        assert index.slots == sum(n.slots for n in nodes.values())
        assert index.inflight == sum(n.inflight for n in nodes.values())


# ------------------------------------------------------------------------------------------- through the owner
class Records(PlacementPolicy):
    """Least-loaded, recording the candidates it was offered; prefers node ``n3``."""

    name = "records"

    def __init__(self) -> None:
        self.offered: list[set[str]] = []

    def choose(self, task: PlacementTask, candidates: list[NodeLoad], rng: random.Random) -> NodeLoad:
        self.offered.append({c.node_id for c in candidates})
        return min(candidates, key=lambda c: (c.load, c.node_id))

    def prefer(self, task: PlacementTask, rng: random.Random) -> list[str]:
        return ["n3"]


def _owner(n: int, info: dict[str, Any], sampling: SampleConfig | None = None) -> tuple[Owner, Records]:
    pol = Records()
    o = Owner("n0", OwnerConfig(window_per_slot=4), pol, random.Random(0), info=info.get, sampling=sampling)
    for i in range(n):
        o.node_up(f"n{i}", 2)
    return o, pol


def _submit(o: Owner, ids: list[str]) -> dict[str, str]:
    acts = o.submit(b"c", [{"id": t, "fn": EMPTY, "args": EMPTY, "deps": []} for t in ids])
    return {t["id"]: a.node for a in acts if isinstance(a, Dispatch) for t in a.tasks}


def test_a_large_mesh_offers_a_sample_with_the_holders_the_owner_and_the_favourites() -> None:
    info = {f"t{i}": {"inputs": [[[f"n{50 + i}"], 1 << 20]]} for i in range(20)}
    o, pol = _owner(400, info)
    placed = _submit(o, list(info))
    assert len(placed) == 20
    for i, offered in enumerate(pol.offered):
        assert {f"n{50 + i}", "n0", "n3"} <= offered
        assert len(offered) <= SampleConfig().d + 3


def test_a_small_mesh_offers_every_node_with_an_open_window() -> None:
    o, pol = _owner(SCAN_BELOW, {})
    _submit(o, [f"t{i}" for i in range(10)])
    assert pol.offered[0] == {f"n{i}" for i in range(SCAN_BELOW)}
    o, pol = _owner(100, {}, SampleConfig(d=100))  # d at least the mesh size: exact too
    _submit(o, ["t0"])
    assert pol.offered[0] == {f"n{i}" for i in range(100)}


def test_a_large_mesh_fills_every_window_and_stops_when_all_are_full() -> None:
    o, _ = _owner(100, {})
    placed = _submit(o, [f"t{i}" for i in range(900)])
    assert len(placed) == 100 * 2 * 4  # every window filled, through samples of open nodes only
    assert all(nl.full for nl in o.nodes.values())
    assert len(o.ready) == 100


def test_a_task_that_may_use_a_gpu_is_offered_gpu_nodes_in_a_large_mesh() -> None:
    pol = Records()
    info: dict[str, Any] = {f"t{i}": {"device": "any" if i % 2 else "cpu"} for i in range(20)}
    o = Owner("n0", OwnerConfig(window_per_slot=4), pol, random.Random(0), info=info.get)
    gpus = {f"n{i}" for i in range(0, 400, 97)}  # 5 of 400 nodes, n0 among them
    for i in range(400):
        o.node_up(f"n{i}", 2, {"res": {"gpu": 1}} if f"n{i}" in gpus else None)
    o.node_up("n0", 2)  # its metadata changed: no GPU any more
    _submit(o, list(info))
    for i, offered in enumerate(pol.offered):
        got = offered & (gpus - {"n0"})
        assert len(got) >= (2 if i % 2 else 0)
