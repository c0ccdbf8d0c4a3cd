"""``Owner.moved``: a stolen task's accounting follows it to the thief (work stealing, ``sched/stealing.py``)."""

from __future__ import annotations

import random
from typing import Any

from meshaios.sched.placement import make_policy
from meshaios.tasks.owner import Deliver, Dispatch, Owner, OwnerAction, OwnerConfig, TaskState
from meshaios.wire.payload import Payload

FN = Payload(b"fn")
ARGS = Payload(b"args")
C1 = b"client-1"


def spec(tid: str) -> dict[str, Any]:
    return {"id": tid, "fn": FN, "args": ARGS, "deps": []}


def ok(tid: str) -> dict[str, Any]:
    return {"id": tid, "ok": True, "v": Payload(b"value-of-" + tid.encode())}


def dispatched(actions: list[OwnerAction]) -> dict[str, list[tuple[str, int]]]:
    return {a.node: [(t["id"], t["att"]) for t in a.tasks] for a in actions if isinstance(a, Dispatch)}


def delivered(actions: list[OwnerAction]) -> list[str]:
    return [r["id"] for a in actions if isinstance(a, Deliver) for r in a.results]


def check_inflight(o: Owner) -> None:
    """The invariant ``moved`` must keep: every node's in-flight count is exactly the tasks dispatched to it."""
    for nid, nl in o.nodes.items():
        there = {t.id for t in o.tasks.values() if t.state is TaskState.DISPATCHED and t.node == nid}
        assert nl.inflight == len(o.node_tasks[nid]), nid
        assert o.node_tasks[nid] == there, nid


def pile_up() -> Owner:
    """Owner ``v`` places on itself first (``local``); once its window (2) is full the rest goes to ``t`` until
    that is full too, and ``x4``, ``x5`` wait at the owner: a mesh where every window is full."""
    o = Owner("v", OwnerConfig(window_per_slot=2), make_policy("local", node_id="v"), random.Random(0))
    o.node_up("v", 1)
    o.node_up("t", 1)
    actions = o.submit(C1, [spec(f"x{i}") for i in range(6)])
    assert dispatched(actions) == {"v": [("x0", 0), ("x1", 0)], "t": [("x2", 0), ("x3", 0)]}
    assert list(o.ready) == ["x4", "x5"]
    return o


def test_moved_repoints_the_task_and_reopens_the_victims_window() -> None:
    o = pile_up()
    actions = o.moved("x1", "v", "t", attempt=0)
    assert dispatched(actions) == {"v": [("x4", 0)]}  # the victim's window opened: the owner keeps feeding it
    assert o.tasks["x1"].node == "t"
    assert o.nodes["t"].inflight == 3
    assert o.nodes["v"].inflight == 2
    assert o.counters["moved"] == 1
    check_inflight(o)


def test_result_from_the_thief_is_accepted_and_a_late_copy_from_the_victim_is_a_duplicate() -> None:
    o = pile_up()
    o.moved("x1", "v", "t")
    assert delivered(o.completed("t", [ok("x1")])) == ["x1"]
    assert o.tasks["x1"].node == "t"
    assert delivered(o.completed("v", [ok("x1")])) == []
    assert o.counters["duplicates"] == 1
    check_inflight(o)


def test_thief_dies_after_the_move_and_the_stolen_task_is_replaced() -> None:
    o = pile_up()
    o.moved("x1", "v", "t")
    assert dispatched(o.node_down("t")) == {}  # the victim's window is full again (x0, x4)
    assert o.counters["replaced"] == 3  # x1 (stolen), x2, x3
    assert o.tasks["x1"].attempt == 1
    assert list(o.ready) == ["x1", "x2", "x3", "x5"]  # re-placed work first
    assert dispatched(o.completed("v", [ok("x0")])) == {"v": [("x1", 1)]}
    check_inflight(o)


def test_victim_dies_after_the_move_and_the_stolen_task_stays_with_the_thief() -> None:
    o = pile_up()
    o.moved("x1", "v", "t")
    o.node_down("v")
    assert o.tasks["x1"].state is TaskState.DISPATCHED
    assert o.tasks["x1"].node == "t"
    assert o.tasks["x1"].attempt == 0
    assert o.counters["replaced"] == 2  # x0, x4: what v still had
    assert delivered(o.completed("t", [ok("x1")])) == ["x1"]
    check_inflight(o)


def test_moved_for_a_finished_task_is_ignored() -> None:
    o = pile_up()
    o.completed("t", [ok("x1")])  # the thief's result overtook the victim's message
    assert o.moved("x1", "v", "t") == []
    assert o.counters["moved_ignored"] == 1
    check_inflight(o)


def test_moved_twice_or_from_the_wrong_node_or_attempt_changes_nothing() -> None:
    o = pile_up()
    o.moved("x1", "v", "t")
    assert o.moved("x1", "v", "t") == []  # duplicated message: x1 is on t now
    assert o.moved("x0", "t", "v") == []  # x0 is not on t
    assert o.moved("x0", "v", "t", attempt=3) == []  # a stale attempt
    assert o.moved("x0", "v", "v") == []
    assert o.moved("x5", "v", "t") == []  # not dispatched at all
    assert o.moved("nope", "v", "t") == []
    assert o.counters["moved"] == 1
    assert o.counters["moved_ignored"] == 6
    assert o.tasks["x0"].node == "v"
    check_inflight(o)


def test_moved_to_a_node_the_owner_does_not_know_replaces_the_task_at_once() -> None:
    o = pile_up()
    o.node_down("t")
    actions = o.moved("x1", "v", "t")  # the thief died before the victim's message arrived
    assert o.tasks["x1"].attempt == 1
    assert o.counters["replaced"] == 3
    assert dispatched(actions) == {"v": [("x1", 1)]}  # the victim's window reopened: it goes there, first
    check_inflight(o)


def test_victim_dies_after_several_moves_and_only_what_it_still_had_is_replaced() -> None:
    o = pile_up()
    assert dispatched(o.moved("x0", "v", "t")) == {"v": [("x4", 0)]}
    assert dispatched(o.moved("x1", "v", "t")) == {"v": [("x5", 0)]}
    o.node_down("v")
    assert o.counters["replaced"] == 2  # x4, x5
    assert all(o.tasks[tid].node == "t" and o.tasks[tid].attempt == 0 for tid in ("x0", "x1", "x2", "x3"))
    check_inflight(o)
