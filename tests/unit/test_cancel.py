"""Cancellation at the owner: queued tasks never dispatch, dispatched ones are aborted on their node, dependents
fail, and a client that went away (closed, or silent past its lease: the node decides) has its tasks cancelled."""

from __future__ import annotations

import random

from meshaios.sched.placement import LeastLoaded
from meshaios.tasks.owner import Abort, Owner, OwnerConfig, TaskState
from tests.unit.test_owner import C1, C2, delivered, dispatched, ok, spec


def make() -> Owner:
    o = Owner("me", OwnerConfig(window_per_slot=1), LeastLoaded(), random.Random(0))
    o.node_up("n1", 1)
    return o


def aborts(actions: list[object]) -> list[tuple[str, list[list[object]]]]:
    return [(a.node, a.keys) for a in actions if isinstance(a, Abort)]


def test_a_queued_task_is_never_dispatched_and_its_client_hears_it_was_cancelled() -> None:
    o = make()
    o.submit(C1, [spec("a"), spec("b"), spec("c")])
    out = o.cancel(C1, ["b"])
    assert delivered(out)[0]["err"]["type"] == "meshaios.Cancelled"
    assert aborts(out) == []
    assert o.pending == 2
    assert dispatched(o.completed("n1", [ok("a")])) == {"n1": ["c"]}  # b is skipped
    assert o.counters["cancelled"] == 1


def test_a_dispatched_task_is_aborted_on_its_node_and_its_slot_reopens() -> None:
    o = make()
    o.submit(C1, [spec("a"), spec("b")])
    out = o.cancel(C1, ["a"])
    assert aborts(out) == [("n1", [("a", 0)])]
    assert dispatched(out) == {"n1": ["b"]}  # the window the aborted task held goes to the next one
    assert o.nodes["n1"].inflight == 1
    later = o.completed("n1", [ok("a")])  # the node finished it before the abort arrived: dropped
    assert delivered(later) == []
    assert o.tasks["a"].state is TaskState.FAILED


def test_dependents_fail_as_cancelled() -> None:
    o = make()
    o.submit(C1, [spec("a"), spec("b", deps=("a",)), spec("c", deps=("b",))])
    out = o.cancel(C1, ["a"])
    errs = {r["id"]: r["err"]["type"] for r in delivered(out)}
    assert errs == {"a": "meshaios.Cancelled", "b": "meshaios.Cancelled", "c": "meshaios.Cancelled"}
    assert o.pending == 0


def test_only_its_own_unfinished_tasks_can_be_cancelled() -> None:
    o = make()
    o.submit(C1, [spec("a"), spec("b")])
    o.completed("n1", [ok("a")])
    assert o.cancel(C2, ["b"]) == []  # another client's
    assert o.cancel(C1, ["a", "zz", 7]) == []  # finished, unknown, garbage
    assert o.tasks["b"].state is TaskState.DISPATCHED


def test_a_spec_cancelled_before_it_was_sent_is_registered_cancelled() -> None:
    o = make()
    out = o.submit(C1, [spec("a", cancel=True), spec("b", deps=("a",))])
    assert dispatched(out) == {}
    assert {r["id"] for r in delivered(out)} == {"a", "b"}


def test_a_client_that_went_away_has_its_unfinished_tasks_cancelled() -> None:
    o = make()
    o.submit(C1, [spec("a"), spec("b")])
    o.submit(C2, [spec("x")])
    out = o.cancel_client(C1)
    assert aborts(out) == [("n1", [("a", 0)])]
    assert {r["id"] for r in delivered(out)} == {"a", "b"}
    assert o.tasks["x"].state is not TaskState.FAILED  # C2's
