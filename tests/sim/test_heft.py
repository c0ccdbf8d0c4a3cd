"""HEFT as published: the worked example of Topcuoglu, Hariri & Wu (IEEE TPDS 13(3), 2002, Figs. 2-3).

The computation costs (Fig. 2's table) and edge costs are the paper's; the expected upward ranks are the paper's
table of rank_u values, and the expected schedule is its Fig. 3(a), as reproduced by public implementations
(github.com/mackncheesiest/heft test_canonical_graph, github.com/sina33/heft). Communication costs are given per
edge with unit rates and no start-up, zero between tasks on one processor."""

from __future__ import annotations

from collections.abc import Hashable

import pytest

from meshaios.sim.heft import Processor, heft, heft_schedule, lower_bound, upward_ranks
from meshaios.sim.workloads import NodeSpec, SimTask

# task -> cost on P1, P2, P3
W = {
    1: (14, 16, 9), 2: (13, 19, 18), 3: (11, 13, 19), 4: (13, 8, 17), 5: (12, 13, 10),
    6: (13, 16, 9), 7: (7, 15, 11), 8: (5, 11, 14), 9: (18, 12, 20), 10: (21, 7, 16),
}
EDGES = {
    (1, 2): 18, (1, 3): 12, (1, 4): 9, (1, 5): 11, (1, 6): 14, (2, 8): 19, (2, 9): 16, (3, 7): 23,
    (4, 8): 27, (4, 9): 23, (5, 9): 13, (6, 8): 15, (7, 10): 17, (8, 10): 11, (9, 10): 13,
}
PROCS = [Processor("P1", "P1"), Processor("P2", "P2"), Processor("P3", "P3")]
TASKS = list(W)
PREDS = {t: {u: float(c) for (u, v), c in EDGES.items() if v == t} for t in TASKS}


def _comp(t: int, p: Processor) -> float:
    return float(W[t][PROCS.index(p)])


def _unit(_a: Hashable, _b: Hashable) -> tuple[float, float]:
    return 0.0, 1.0


def test_upward_ranks_are_the_papers() -> None:
    rank = upward_ranks(TASKS, PREDS, PROCS, _comp, _unit)
    expected = {1: 108.0, 2: 77.0, 3: 80.0, 4: 80.0, 5: 69.0, 6: 63.333, 7: 42.667, 8: 35.667, 9: 44.333,
                10: 14.667}
    assert {t: round(r, 3) for t, r in rank.items()} == expected


def test_the_papers_example_reproduces_its_schedule_and_makespan_80() -> None:
    placed = heft_schedule(TASKS, PREDS, PROCS, _comp, _unit)
    got = {t: (p.proc, p.start, p.finish) for t, p in placed.items()}
    assert got == {
        1: ("P3", 0, 9), 3: ("P3", 9, 28), 4: ("P2", 18, 26), 2: ("P1", 27, 40), 5: ("P3", 28, 38),
        6: ("P2", 26, 42), 9: ("P2", 56, 68), 7: ("P3", 38, 49), 8: ("P1", 57, 62), 10: ("P2", 73, 80),
    }
    assert max(p.finish for p in placed.values()) == 80


def test_data_ready_time_is_the_latest_predecessor_not_the_sum_of_transfers() -> None:
    """Two inputs from another processor arrive in parallel: the task starts after the slower one."""
    procs = [Processor("a", "a"), Processor("b", "b")]
    preds = {"x": {}, "y": {}, "z": {"x": 5.0, "y": 5.0}}
    costs = {("x", "a"): 1.0, ("y", "a"): 1.0, ("z", "a"): 100.0, ("x", "b"): 100.0, ("y", "b"): 100.0,
             ("z", "b"): 1.0}
    placed = heft_schedule(["x", "y", "z"], preds, procs, lambda t, p: costs[(t, str(p.name))], _unit)
    assert (placed["x"].proc, placed["y"].proc, placed["z"].proc) == ("a", "a", "b")
    # x and y finish at 1 and 2 on a; their 5-unit transfers overlap: z is ready at max(1, 2) + 5 = 7, not 1 + 10
    assert placed["z"].start == 7.0


def test_insertion_fills_an_idle_gap() -> None:
    """A short independent task goes into the gap a dependent task left on the processor, not at its end."""
    procs = [Processor("only", "only")]
    preds = {"long": {}, "after": {"long": 0.0}, "short": {}}
    cost = {"long": 4.0, "after": 1.0, "short": 2.0}
    # force a gap: "after" is released at 10, so [4, 10) is idle when "short" (released at 0) is scheduled last
    release = {"long": 0.0, "after": 10.0, "short": 0.0}
    placed = heft_schedule(["long", "after", "short"], preds, procs, lambda t, _p: cost[t], _unit,
                           submitted=lambda t: 0.0, floor=lambda t, _p: release[t], order="fifo")
    assert (placed["after"].start, placed["short"].start) == (10.0, 4.0)


def test_a_processor_with_lanes_is_that_many_processors_sharing_memory() -> None:
    procs = [Processor("n", "n", lanes=2)]
    placed = heft_schedule(["a", "b"], {}, procs, lambda _t, _p: 3.0, _unit)
    assert sorted((p.lane, p.start) for p in placed.values()) == [(0, 0.0), (1, 0.0)]


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="no processor"):
        heft_schedule(["a"], {}, PROCS, lambda _t, _p: None, _unit)
    with pytest.raises(ValueError, match="topological"):
        heft_schedule(["b", "a"], {"b": {"a": 1.0}}, PROCS, lambda _t, _p: 1.0, _unit, order="fifo")
    with pytest.raises(ValueError, match="order"):
        heft_schedule(["a"], {}, PROCS, lambda _t, _p: 1.0, _unit, order="nope")


def test_the_simulated_mesh_maps_slots_to_lanes_and_links_to_the_receiver() -> None:
    """Two nodes, one slot each; b's link is slow. A chain a0 -> a1 with a big edge stays on one node."""
    nodes = [NodeSpec("a", "std", 1, 1.0, 1.0, bandwidth=1e6), NodeSpec("b", "std", 1, 1.0, 1.0, bandwidth=1e6)]
    t0 = SimTask("t0", "app.parse", 0, 1.0, "cpu", 10_000_000)
    t1 = SimTask("t1", "app.parse", 0, 1.0, "cpu", 64, deps=["t0"], dep_bytes={"t0": 10_000_000})
    assert heft([t0, t1], nodes, "a", latency=0.0) == pytest.approx(2.0)
    assert heft([t0, t1], nodes, "a") >= lower_bound([t0, t1], nodes)
