"""The owner state machine: exact action lists for each stimulus, plus a stateful property test."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from meshaios.sched.placement import LeastLoaded, NodeLoad, PlacementPolicy, PowerOfTwo, RoundRobin, make_policy
from meshaios.tasks.owner import Deliver, Dispatch, Owner, OwnerAction, OwnerConfig, TaskState
from meshaios.wire.payload import Payload

FN = Payload(b"fn")
ARGS = Payload(b"args")
C1 = b"client-1"
C2 = b"client-2"


def spec(tid: str, deps: tuple[str, ...] = (), **extra: Any) -> dict[str, Any]:
    return {"id": tid, "fn": FN, "args": ARGS, "deps": list(deps), **extra}


def run(
    tid: str, att: int = 0, deps: dict[str, Payload | None] | None = None, pure: bool = False, ep: int = 0
) -> dict[str, Any]:
    """The RUN task dict the owner should send (it names the client and its epoch: the executors' fence)."""
    return {"id": tid, "att": att, "c": C1.decode(), "ep": ep, "fn": FN, "args": ARGS, "deps": deps or {}, "pure": pure}


def val(tid: str) -> Payload:
    return Payload(b"value-of-" + tid.encode())


def ok(tid: str) -> dict[str, Any]:
    return {"id": tid, "ok": True, "v": val(tid)}


def err(tid: str, *, fatal: bool = False, msg: str = "boom") -> dict[str, Any]:
    r: dict[str, Any] = {"id": tid, "ok": False, "err": {"type": "ValueError", "msg": msg, "tb": "Traceback..."}}
    if fatal:
        r["fatal"] = True
    return r


def delivered_ok(tid: str, node: str) -> dict[str, Any]:
    return {"id": tid, "ok": True, "v": val(tid), "node": node}


def dispatched(actions: list[OwnerAction]) -> dict[str, list[str]]:
    return {a.node: [t["id"] for t in a.tasks] for a in actions if isinstance(a, Dispatch)}


def delivered(actions: list[OwnerAction]) -> list[dict[str, Any]]:
    return [r for a in actions if isinstance(a, Deliver) for r in a.results]


def make(window: int = 8, max_node_failures: int = 3, seed: int = 0) -> Owner:
    return Owner(
        "me", OwnerConfig(window_per_slot=window, max_node_failures=max_node_failures), rng=random.Random(seed)
    )


def check_inflight(o: Owner) -> None:
    for nid, nl in o.nodes.items():
        running_there = [t.id for t in o.tasks.values() if t.state is TaskState.DISPATCHED and t.node == nid]
        assert nl.inflight >= 0
        assert nl.inflight == len(o.node_tasks[nid]) == len(running_there)


# ---------------------------------------------------------------------------------------------- dispatch
def test_submit_to_one_node_gives_one_dispatch_with_the_task() -> None:
    o = make()
    assert o.node_up("n1", 2) == []
    actions = o.submit(C1, [spec("a", pure=True)])
    assert actions == [Dispatch("n1", [run("a", pure=True)])]
    assert o.tasks["a"].state is TaskState.DISPATCHED
    assert o.tasks["a"].node == "n1"
    assert o.nodes["n1"].inflight == 1
    assert o.pending == 1


def test_submit_before_any_node_waits_then_node_up_dispatches() -> None:
    o = make()
    assert o.submit(C1, [spec("a"), spec("b")]) == []
    assert o.tasks["a"].state is TaskState.READY
    assert o.node_up("n1", 1) == [Dispatch("n1", [run("a"), run("b")])]


def test_completion_delivers_the_result_to_the_submitting_client() -> None:
    o = make()
    o.node_up("n1", 1)
    o.submit(C1, [spec("a")])
    o.submit(C2, [spec("b")])
    actions = o.completed("n1", [ok("a"), ok("b")])
    assert actions == [Deliver(C1, [delivered_ok("a", "n1")]), Deliver(C2, [delivered_ok("b", "n1")])]
    assert o.pending == 0
    assert o.nodes["n1"].inflight == 0
    assert o.counters["done"] == 2


def test_window_per_slot_is_respected_and_the_queue_drains_as_results_come_back() -> None:
    o = make(window=2)
    o.node_up("n1", 1)
    actions = o.submit(C1, [spec(t) for t in "abcde"])
    assert actions == [Dispatch("n1", [run("a"), run("b")])]
    assert list(o.ready) == ["c", "d", "e"]
    assert o.completed("n1", [ok("a")]) == [Deliver(C1, [delivered_ok("a", "n1")]), Dispatch("n1", [run("c")])]
    assert o.completed("n1", [ok("b"), ok("c")]) == [
        Deliver(C1, [delivered_ok("b", "n1"), delivered_ok("c", "n1")]),
        Dispatch("n1", [run("d"), run("e")]),
    ]
    assert o.completed("n1", [ok("d")]) == [Deliver(C1, [delivered_ok("d", "n1")])]
    assert o.nodes["n1"].inflight == 1
    check_inflight(o)


def test_window_scales_with_slots() -> None:
    o = make(window=2)
    o.node_up("n1", 3)
    assert dispatched(o.submit(C1, [spec(str(i)) for i in range(10)])) == {"n1": [str(i) for i in range(6)]}


def test_least_loaded_spreads_evenly_across_three_equal_nodes() -> None:
    o = make(window=4)
    for n in ("n1", "n2", "n3"):
        o.node_up(n, 1)
    by_node = dispatched(o.submit(C1, [spec(str(i)) for i in range(9)]))
    assert sorted(by_node) == ["n1", "n2", "n3"]
    assert [len(v) for v in by_node.values()] == [3, 3, 3]
    assert sorted(t for ts in by_node.values() for t in ts) == sorted(str(i) for i in range(9))
    check_inflight(o)


def test_least_loaded_gives_a_node_with_more_slots_more_work() -> None:
    o = make(window=4)
    o.node_up("small", 1)
    o.node_up("big", 3)
    by_node = dispatched(o.submit(C1, [spec(str(i)) for i in range(8)]))
    assert len(by_node["big"]) == 6
    assert len(by_node["small"]) == 2


def test_least_loaded_avoids_a_node_reported_busy_by_others() -> None:
    o = make(window=4)
    o.node_up("n1", 1)
    o.node_up("n2", 1)
    o.node_load("n1", 3)  # other owners keep it busy
    by_node = dispatched(o.submit(C1, [spec(str(i)) for i in range(3)]))
    assert by_node == {"n2": ["0", "1", "2"]}
    o.node_load("nobody", 5)  # unknown nodes are ignored


def test_node_up_again_updates_slots_but_keeps_inflight() -> None:
    o = make(window=1)
    o.node_up("n1", 1)
    o.submit(C1, [spec("a"), spec("b")])
    assert o.node_up("n1", 2) == [Dispatch("n1", [run("b")])]
    assert o.nodes["n1"].inflight == 2
    assert o.nodes["n1"].slots == 2


# ---------------------------------------------------------------------------------------------- dependencies
def test_dependent_waits_and_is_dispatched_with_the_dependency_value() -> None:
    o = make()
    o.node_up("n1", 1)
    assert o.submit(C1, [spec("a"), spec("b", ("a",))]) == [Dispatch("n1", [run("a")])]
    assert o.tasks["b"].state is TaskState.WAITING
    assert o.completed("n1", [ok("a")]) == [
        Deliver(C1, [delivered_ok("a", "n1")]),
        Dispatch("n1", [run("b", deps={"a": val("a")})]),
    ]


def test_dependent_of_a_done_task_is_dispatched_at_once() -> None:
    o = make()
    o.node_up("n1", 1)
    o.submit(C1, [spec("a")])
    o.completed("n1", [ok("a")])
    assert o.submit(C1, [spec("b", ("a",))]) == [Dispatch("n1", [run("b", deps={"a": val("a")})])]


def test_task_with_two_deps_waits_for_both() -> None:
    o = make()
    o.node_up("n1", 1)
    o.submit(C1, [spec("a"), spec("b"), spec("c", ("a", "b"))])
    assert dispatched(o.completed("n1", [ok("a")])) == {}
    assert dispatched(o.completed("n1", [ok("b")])) == {"n1": ["c"]}


def test_dep_failure_fails_dependents_transitively_naming_the_dep() -> None:
    o = make()
    o.node_up("n1", 1)
    o.submit(C1, [spec("a"), spec("b", ("a",)), spec("c", ("b",)), spec("x")])
    o.submit(C2, [spec("d", ("c", "x"))])
    actions = o.completed("n1", [err("a")])
    results = {r["id"]: r for r in delivered(actions)}
    assert sorted(results) == ["a", "b", "c", "d"]
    assert [a.client for a in actions if isinstance(a, Deliver)] == [C1, C2]
    assert results["a"]["err"]["msg"] == "boom"
    assert results["a"]["node"] == "n1"
    assert "dependency a failed" in results["b"]["err"]["msg"]
    assert "dependency b failed" in results["c"]["err"]["msg"]
    assert "dependency c failed" in results["d"]["err"]["msg"]
    assert all(not r["ok"] for r in results.values())
    assert results["d"]["err"]["type"] == "ValueError"
    assert dispatched(actions) == {}
    # x is untouched and still delivers normally
    assert delivered(o.completed("n1", [ok("x")])) == [delivered_ok("x", "n1")]
    assert o.pending == 0


def test_submitting_on_top_of_a_failed_task_fails_at_once() -> None:
    o = make()
    o.node_up("n1", 1)
    o.submit(C1, [spec("a")])
    o.completed("n1", [err("a")])
    actions = o.submit(C1, [spec("b", ("a",))])
    assert dispatched(actions) == {}
    [r] = delivered(actions)
    assert r["id"] == "b"
    assert not r["ok"]
    assert "dependency a failed" in r["err"]["msg"]


def test_dependents_of_a_failed_task_carry_its_original_exception() -> None:
    """The pickled exception (``exc``, on a mesh with a token) becomes every dependent's ``TaskError.cause``."""
    o = make()
    o.node_up("n1", 1)
    o.submit(C1, [spec("a"), spec("b", ("a",)), spec("c", ("b",))])
    failure = err("a")
    failure["err"]["exc"] = Payload(b"pickled ValueError")
    results = {r["id"]: r for r in delivered(o.completed("n1", [failure]))}
    assert {tid: r["err"].get("exc") for tid, r in results.items()} == {t: failure["err"]["exc"] for t in "abc"}
    [late] = delivered(o.submit(C1, [spec("d", ("c",))]))  # on top of the failed task, later
    assert late["err"]["exc"] == failure["err"]["exc"]
    o.submit(C1, [spec("e")])
    [plain] = [r for r in delivered(o.completed("n1", [err("e")]))]
    assert "exc" not in plain["err"]  # none made up where the failure had none


def test_unknown_dependency_fails_the_task() -> None:
    o = make()
    o.node_up("n1", 1)
    actions = o.submit(C1, [spec("b", ("ghost",))])
    assert dispatched(actions) == {}
    [r] = delivered(actions)
    assert r["id"] == "b"
    assert r["err"]["type"] == "meshaios.UnknownDependency"
    assert "ghost" in r["err"]["msg"]
    assert o.tasks["b"].state is TaskState.FAILED


def test_task_depending_on_itself_fails_instead_of_waiting_forever() -> None:
    o = make()
    o.node_up("n1", 1)
    [r] = delivered(o.submit(C1, [spec("a", ("a",))]))
    assert r["id"] == "a"
    assert r["err"]["type"] == "meshaios.UnknownDependency"
    assert o.pending == 0


def test_dependency_later_in_the_same_batch_is_unknown() -> None:
    o = make()
    o.node_up("n1", 1)
    actions = o.submit(C1, [spec("b", ("a",)), spec("a")])
    assert dispatched(actions) == {"n1": ["a"]}
    assert [r["id"] for r in delivered(actions)] == ["b"]


# ---------------------------------------------------------------------------------------------- node failures
def test_node_down_requeues_with_the_next_attempt_on_another_node() -> None:
    o = make()
    o.node_up("n1", 1)
    o.submit(C1, [spec("a"), spec("b")])
    o.node_up("n2", 1)
    assert o.node_down("n1") == [Dispatch("n2", [run("a", att=1), run("b", att=1)])]
    assert o.tasks["a"].node == "n2"
    assert o.counters["replaced"] == 2
    assert "n1" not in o.nodes
    check_inflight(o)


def test_node_down_with_no_other_node_keeps_tasks_ready_at_the_front() -> None:
    o = make(window=1)
    o.node_up("n1", 1)
    o.submit(C1, [spec("a"), spec("b")])
    assert o.node_down("n1") == []
    assert list(o.ready) == ["a", "b"]
    assert o.tasks["a"].attempt == 1
    assert o.tasks["b"].attempt == 0
    assert o.node_up("n2", 1) == [Dispatch("n2", [run("a", att=1)])]


def test_node_down_of_an_unknown_node_does_nothing() -> None:
    o = make()
    o.node_up("n1", 1)
    o.submit(C1, [spec("a")])
    assert o.node_down("nobody") == []
    assert o.tasks["a"].state is TaskState.DISPATCHED


def test_too_many_node_failures_fail_the_task() -> None:
    o = make(max_node_failures=1)
    o.node_up("n1", 1)
    o.submit(C1, [spec("a")])
    assert o.node_down("n1") == []
    assert o.node_up("n2", 1) == [Dispatch("n2", [run("a", att=1)])]
    actions = o.node_down("n2")
    [r] = delivered(actions)
    assert r["id"] == "a"
    assert not r["ok"]
    assert r["err"]["type"] == "meshaios.NodeLost"
    assert r["node"] == "n2"
    assert o.tasks["a"].state is TaskState.FAILED
    assert o.counters["failed"] == 1


def test_late_result_from_the_old_node_is_delivered_once() -> None:
    o = make()
    o.node_up("n1", 1)
    o.node_up("n2", 1)
    o.node_load("n2", 100)  # place "a" on n1
    o.submit(C1, [spec("a")])
    o.node_load("n2", 0)
    assert dispatched(o.node_down("n1")) == {"n2": ["a"]}
    deliveries: Counter[str] = Counter()
    first = o.completed("n1", [ok("a")])  # n1 was not dead after all
    assert first == [Deliver(C1, [delivered_ok("a", "n1")])]
    deliveries.update(r["id"] for r in delivered(first))
    assert o.nodes["n2"].inflight == 0  # the re-run no longer counts against n2
    second = o.completed("n2", [ok("a")])
    assert second == []
    deliveries.update(r["id"] for r in delivered(second))
    assert deliveries == {"a": 1}
    assert o.counters["duplicates"] == 1
    check_inflight(o)


def test_late_result_after_the_rerun_finished_is_dropped() -> None:
    o = make()
    o.node_up("n1", 1)
    o.submit(C1, [spec("a")])
    o.node_up("n2", 1)
    o.node_down("n1")
    assert delivered(o.completed("n2", [ok("a")])) == [delivered_ok("a", "n2")]
    assert o.completed("n1", [ok("a")]) == []
    assert o.completed("n2", [ok("a")]) == []
    assert o.counters["duplicates"] == 2


def test_late_result_for_a_requeued_task_is_taken_and_the_rerun_skipped() -> None:
    o = make()
    o.node_up("n1", 1)
    o.submit(C1, [spec("a")])
    o.node_down("n1")
    assert o.tasks["a"].state is TaskState.READY
    assert o.completed("n1", [ok("a")]) == [Deliver(C1, [delivered_ok("a", "n1")])]
    assert o.node_up("n2", 1) == []  # nothing left to run


def test_late_error_for_a_requeued_task_is_dropped_and_the_task_reruns() -> None:
    o = make()
    o.node_up("n1", 1)
    o.submit(C1, [spec("a")])
    o.node_down("n1")
    assert o.completed("n1", [err("a")]) == []
    assert o.node_up("n2", 1) == [Dispatch("n2", [run("a", att=1)])]


def test_result_for_an_unknown_task_is_a_duplicate() -> None:
    o = make()
    o.node_up("n1", 1)
    assert o.completed("n1", [ok("zzz")]) == []
    assert o.counters["duplicates"] == 1
    check_inflight(o)


# ---------------------------------------------------------------------------------------------- retries
def test_errors_are_retried_then_delivered() -> None:
    o = make()
    o.node_up("n1", 1)
    o.submit(C1, [spec("a", retries=2)])
    assert o.completed("n1", [err("a")]) == [Dispatch("n1", [run("a", att=1)])]
    assert o.completed("n1", [err("a")]) == [Dispatch("n1", [run("a", att=2)])]
    actions = o.completed("n1", [err("a", msg="third")])
    assert actions == [
        Deliver(
            C1,
            [
                {
                    "id": "a",
                    "ok": False,
                    "err": {"type": "ValueError", "msg": "third", "tb": "Traceback...", "node": "n1"},
                    "node": "n1",
                }
            ],
        )
    ]
    assert o.counters["retried"] == 2


def test_retry_succeeds() -> None:
    o = make()
    o.node_up("n1", 1)
    o.submit(C1, [spec("a", retries=1)])
    o.completed("n1", [err("a")])
    assert delivered(o.completed("n1", [ok("a")])) == [delivered_ok("a", "n1")]


def test_fatal_errors_are_not_retried() -> None:
    o = make()
    o.node_up("n1", 1)
    o.submit(C1, [spec("a", retries=5)])
    actions = o.completed("n1", [err("a", fatal=True)])
    assert dispatched(actions) == {}
    assert [r["id"] for r in delivered(actions)] == ["a"]


@pytest.mark.parametrize("retries", ["3", -2, True, 1.5, None])
def test_malformed_retries_mean_no_retries(retries: Any) -> None:
    o = make()
    o.node_up("n1", 1)
    o.submit(C1, [spec("a", retries=retries)])
    assert o.tasks["a"].retries == 0
    assert [r["id"] for r in delivered(o.completed("n1", [err("a")]))] == ["a"]


# ---------------------------------------------------------------------------------------------- idempotence
def test_resubmitting_a_pending_task_does_not_dispatch_it_again() -> None:
    o = make()
    o.node_up("n1", 1)
    o.submit(C1, [spec("a")])
    assert o.submit(C2, [spec("a")]) == []
    assert o.counters["submitted"] == 1
    assert o.nodes["n1"].inflight == 1
    # the result goes to the client that asked last (it may have reconnected through another route)
    assert o.completed("n1", [ok("a")]) == [Deliver(C2, [delivered_ok("a", "n1")])]


def test_resubmitting_a_finished_task_redelivers_its_result() -> None:
    o = make()
    o.node_up("n1", 1)
    o.submit(C1, [spec("a"), spec("b")])
    o.completed("n1", [ok("a"), err("b")])
    actions = o.submit(C2, [spec("a"), spec("b"), spec("c")])
    assert actions[0] == Deliver(C2, [delivered_ok("a", "n1"), delivered(actions)[1]])
    assert delivered(actions)[1]["id"] == "b"
    assert not delivered(actions)[1]["ok"]
    assert dispatched(actions) == {"n1": ["c"]}


# ---------------------------------------------------------------------------------------------- release
def test_release_forgets_a_finished_result() -> None:
    o = make()
    o.node_up("n1", 1)
    o.submit(C1, [spec("a")])
    o.completed("n1", [ok("a")])
    o.release(["a", "never-heard-of"])
    assert "a" not in o.tasks


def test_release_of_a_pending_task_forgets_it_once_delivered() -> None:
    o = make()
    o.node_up("n1", 1)
    o.submit(C1, [spec("a")])
    o.release(["a"])
    assert "a" in o.tasks
    assert delivered(o.completed("n1", [ok("a")])) == [delivered_ok("a", "n1")]
    assert "a" not in o.tasks


def test_released_dependency_is_kept_for_a_waiting_dependent() -> None:
    o = make()
    o.node_up("n1", 1)
    o.submit(C1, [spec("a"), spec("b", ("a",))])
    o.release(["a"])
    assert o.completed("n1", [ok("a")])[-1] == Dispatch("n1", [run("b", deps={"a": val("a")})])
    assert "a" in o.tasks
    o.completed("n1", [ok("b")])
    assert "a" not in o.tasks


def test_released_done_dependency_is_kept_for_a_ready_but_undispatched_dependent() -> None:
    """Regression: the dependent was submitted after its dependency finished, and queued behind a full window."""
    o = make(window=1)
    o.node_up("n1", 1)
    o.submit(C1, [spec("a")])
    o.completed("n1", [ok("a")])
    o.submit(C1, [spec("x")])  # fills the only slot
    assert o.submit(C1, [spec("b", ("a",))]) == []
    assert o.tasks["b"].state is TaskState.READY
    o.release(["a"])
    assert "a" in o.tasks
    actions = o.completed("n1", [ok("x")])
    assert actions[-1] == Dispatch("n1", [run("b", deps={"a": val("a")})])
    o.completed("n1", [ok("b")])
    assert "a" not in o.tasks


def test_released_dependency_survives_its_dependent_being_requeued() -> None:
    o = make()
    o.node_up("n1", 1)
    o.submit(C1, [spec("a")])
    o.completed("n1", [ok("a")])
    o.submit(C1, [spec("b", ("a",))])
    o.release(["a"])
    o.node_up("n2", 1)
    assert o.node_down("n1") == [Dispatch("n2", [run("b", att=1, deps={"a": val("a")})])]


def test_released_dependency_is_forgotten_when_its_dependent_fails_through_another_dep() -> None:
    o = make()
    o.node_up("n1", 1)
    o.submit(C1, [spec("a"), spec("z")])
    o.completed("n1", [ok("a")])
    o.submit(C1, [spec("b", ("a", "z"))])
    o.release(["a"])
    assert "a" in o.tasks
    o.completed("n1", [err("z")])
    assert o.tasks["b"].state is TaskState.FAILED
    assert "a" not in o.tasks


# ---------------------------------------------------------------------------------------------- placement policies
@pytest.mark.parametrize("name", ["least-loaded", "power-of-two", "round-robin", "random"])
def test_every_policy_picks_one_of_the_candidates(name: str) -> None:
    policy = make_policy(name)
    assert policy.name == name
    nodes = [NodeLoad(f"n{i}", slots=1 + i % 2, inflight=i) for i in range(5)]
    rng = random.Random(1)
    picks = {policy.choose({"id": str(i)}, nodes, rng).node_id for i in range(50)}
    assert picks <= {n.node_id for n in nodes}
    assert policy.choose({"id": "x"}, nodes[:1], rng) is nodes[0]


def test_unknown_policy_name_is_refused() -> None:
    with pytest.raises(ValueError, match="least-loaded"):
        make_policy("fastest")


def test_least_loaded_picks_the_lowest_work_per_slot_and_breaks_ties_at_random() -> None:
    busy = NodeLoad("busy", slots=1, inflight=3)
    big = NodeLoad("big", slots=4, inflight=3)  # (3 + 1) / 4 = 1.0 < 4.0
    assert LeastLoaded().choose({}, [busy, big], random.Random(0)) is big
    reported = NodeLoad("reported", slots=4, inflight=0, reported=20)  # others keep it busy
    assert LeastLoaded().choose({}, [reported, big], random.Random(0)) is big
    twins = [NodeLoad("a", 1), NodeLoad("b", 1)]
    assert {LeastLoaded().choose({}, twins, random.Random(seed)).node_id for seed in range(20)} == {"a", "b"}


def test_least_loaded_gives_a_tie_to_the_owners_own_node_and_a_burst_still_spreads() -> None:
    """Sequential tiny tasks stay on the owner (no hop each way); a heavier home loses; a map spreads."""
    nodes = [NodeLoad("peer", 1), NodeLoad("home", 1), NodeLoad("far", 1)]
    policy = make_policy("least-loaded", node_id="home")
    assert {policy.choose({"id": str(s)}, nodes, random.Random(s)).node_id for s in range(20)} == {"home"}
    nodes[1].inflight = 1  # home is running one: the others are lighter
    assert {policy.choose({}, nodes, random.Random(s)).node_id for s in range(20)} == {"peer", "far"}
    o = Owner("home", OwnerConfig(window_per_slot=4), LeastLoaded("home"), random.Random(0))
    for n in nodes:
        o.node_up(n.node_id, 1)
    by_node = dispatched(o.submit(C1, [spec(str(i)) for i in range(6)]))
    assert {n: len(ts) for n, ts in by_node.items()} == {"home": 2, "peer": 2, "far": 2}
    assert by_node["home"][0] == "0"  # the first of the burst stays home


def test_power_of_two_keeps_the_lighter_of_its_sample() -> None:
    heavy = [NodeLoad(f"h{i}", slots=1, inflight=10) for i in range(3)]
    light = NodeLoad("light", slots=1)
    picks = Counter(PowerOfTwo().choose({}, [*heavy, light], random.Random(s)).node_id for s in range(200))
    # "light" wins whenever it is sampled (half the time) and never loses a comparison
    assert 70 < picks["light"] < 130


def test_round_robin_cycles_through_every_node() -> None:
    rr = RoundRobin()
    nodes = [NodeLoad(n, 1) for n in ("c", "a", "b")]
    picks = [rr.choose({}, nodes, random.Random(0)).node_id for _ in range(6)]
    assert sorted(picks[:3]) == ["a", "b", "c"]
    assert picks[:3] == picks[3:]


def test_node_load_counts_the_task_being_placed() -> None:
    assert NodeLoad("n", slots=2).load == 0.5
    assert NodeLoad("n", slots=2, inflight=3, reported=1).load == 2.0
    assert NodeLoad("n", slots=0).load == 1.0  # no division by zero


# ---------------------------------------------------------------------------------------------- stateful
NODES = ("n0", "n1", "n2")


class OwnerMachine(RuleBasedStateMachine):
    """Random submits (with deps), completions, node churn, late and duplicate results, releases."""

    def __init__(self) -> None:
        super().__init__()
        self.owner = Owner("me", OwnerConfig(window_per_slot=1, max_node_failures=2), rng=random.Random(0))
        self.up: set[str] = set()
        self.running: dict[str, list[tuple[str, int]]] = {n: [] for n in NODES}
        self.zombies: list[tuple[str, str, int]] = []  # (node, task, attempt) from nodes presumed dead
        self.finished: list[tuple[str, dict[str, Any]]] = []  # results already sent, for replay
        self.submitted: list[str] = []
        self.deliveries: Counter[str] = Counter()
        self.released: set[str] = set()
        self.seq = 0

    # -- plumbing
    def apply(self, actions: list[OwnerAction]) -> None:
        for a in actions:
            if isinstance(a, Dispatch):
                assert a.node in self.up, f"dispatch to {a.node}, which is not up"
                for t in a.tasks:
                    # every dependency travels with the task: a released result was not forgotten too early
                    assert all(isinstance(v, Payload) for v in t["deps"].values()), t
                    assert set(t["deps"]) == set(self.owner.tasks[t["id"]].deps)
                    self.running[a.node].append((t["id"], t["att"]))
            else:
                assert a.client == C1
                for r in a.results:
                    self.deliveries[r["id"]] += 1

    def result(self, tid: str, good: bool, fatal: bool) -> dict[str, Any]:
        return ok(tid) if good else err(tid, fatal=fatal)

    # -- rules
    @initialize()
    def start(self) -> None:
        self.apply(self.owner.node_up("n0", 1))
        self.up.add("n0")

    @rule(
        n=st.integers(1, 3),
        deps=st.lists(st.integers(0, 50), max_size=3),
        retries=st.integers(0, 1),
        bogus=st.booleans(),
    )
    def submit(self, n: int, deps: list[int], retries: int, bogus: bool) -> None:
        batch = []
        for _ in range(n):
            tid = f"t{self.seq}"
            self.seq += 1
            dep_ids = [self.submitted[i % len(self.submitted)] for i in deps] if self.submitted else []
            if bogus and not dep_ids:
                dep_ids = ["ghost"]
            batch.append(spec(tid, tuple(dep_ids), retries=retries))
            self.submitted.append(tid)
        self.apply(self.owner.submit(C1, batch))

    @precondition(lambda self: any(self.running[n] for n in self.up))
    @rule(data=st.data(), good=st.booleans(), fatal=st.booleans())
    def complete(self, data: st.DataObject, good: bool, fatal: bool) -> None:
        node = data.draw(st.sampled_from(sorted(n for n in self.up if self.running[n])))
        i = data.draw(st.integers(0, len(self.running[node]) - 1))
        tid, _att = self.running[node].pop(i)
        r = self.result(tid, good, fatal)
        self.finished.append((node, r))
        self.apply(self.owner.completed(node, [r]))

    @precondition(lambda self: bool(self.zombies))
    @rule(data=st.data(), good=st.booleans())
    def late_result(self, data: st.DataObject, good: bool) -> None:
        node, tid, _att = self.zombies.pop(data.draw(st.integers(0, len(self.zombies) - 1)))
        r = self.result(tid, good, False)
        self.finished.append((node, r))
        self.apply(self.owner.completed(node, [r]))

    @precondition(lambda self: bool(self.finished))
    @rule(data=st.data())
    def replay_result(self, data: st.DataObject) -> None:
        node, r = data.draw(st.sampled_from(self.finished))
        before = dict(self.deliveries)
        self.apply(self.owner.completed(node, [r]))
        if r["ok"]:  # an ok result is final: its replay can never deliver anything
            assert dict(self.deliveries) == before

    @rule(node=st.sampled_from(NODES), slots=st.integers(1, 2))
    def node_up(self, node: str, slots: int) -> None:
        self.up.add(node)
        self.apply(self.owner.node_up(node, slots))

    @precondition(lambda self: bool(self.up))
    @rule(data=st.data())
    def node_down(self, data: st.DataObject) -> None:
        node = data.draw(st.sampled_from(sorted(self.up)))
        self.up.discard(node)
        self.zombies.extend((node, tid, att) for tid, att in self.running[node])
        self.running[node] = []
        self.apply(self.owner.node_down(node))

    @precondition(lambda self: bool(self.submitted))
    @rule(data=st.data(), finished_only=st.booleans())
    def release(self, data: st.DataObject, finished_only: bool) -> None:
        done = sorted(t for t, c in self.deliveries.items() if c and t not in self.released)
        tid = data.draw(st.sampled_from(done if finished_only and done else self.submitted))
        self.released.add(tid)
        self.owner.release([tid])

    @rule()
    def settle(self) -> None:
        """All nodes up, every dispatched task completes: then every task has been delivered exactly once."""
        for n in NODES:
            if n not in self.up:
                self.up.add(n)
                self.apply(self.owner.node_up(n, 1))
        for _ in range(10_000):
            busy = [n for n in NODES if self.running[n]]
            if not busy:
                break
            tid, _att = self.running[busy[0]].pop(0)
            self.apply(self.owner.completed(busy[0], [ok(tid)]))
        assert not any(self.running.values())
        assert self.owner.pending == 0
        assert not self.owner.ready or all(
            tid not in self.owner.tasks or self.owner.tasks[tid].state is not TaskState.READY
            for tid in self.owner.ready
        )
        missing = [t for t in self.submitted if self.deliveries[t] != 1]
        assert not missing, f"not delivered exactly once: {missing[:5]}"
        # released results nobody needs any more are gone (no leak)
        leaked = [t for t in self.released if t in self.owner.tasks]
        assert not leaked, f"released but kept: {leaked[:5]}"

    # -- invariants
    @invariant()
    def delivered_at_most_once(self) -> None:
        assert all(c == 1 for c in self.deliveries.values()), self.deliveries.most_common(3)

    @invariant()
    def inflight_matches_dispatched_tasks(self) -> None:
        assert set(self.owner.nodes) == self.up
        check_inflight(self.owner)
        for nid, tids in self.owner.node_tasks.items():
            for tid in tids:
                t = self.owner.tasks[tid]
                assert t.state is TaskState.DISPATCHED
                assert t.node == nid

    @invariant()
    def finished_tasks_are_delivered(self) -> None:
        for tid, t in self.owner.tasks.items():
            if t.state in (TaskState.DONE, TaskState.FAILED):
                assert self.deliveries[tid] == 1

    def teardown(self) -> None:
        self.settle()


TestOwnerMachine = OwnerMachine.TestCase
TestOwnerMachine.settings = settings(
    max_examples=300, stateful_step_count=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def test_a_client_over_its_pending_cap_is_refused_not_queued() -> None:
    from meshaios.tasks.owner import OwnerConfig

    o = Owner("n1", OwnerConfig(max_pending_per_client=3))
    o.node_up("n1", 1)
    out = o.submit(C1, [spec(f"t{i}") for i in range(5)])
    refused = [r for a in out if isinstance(a, Deliver) for r in a.results]
    assert [r["id"] for r in refused] == ["t3", "t4"]
    assert all(r["err"]["type"] == "meshaios.Busy" for r in refused)
    assert o.pending == 3
    assert "t3" not in o.tasks


# ---------------------------------------------------------------------------------------------- late binding
class PrefersFast(PlacementPolicy):
    """A late-binding policy that always wants the node called "fast" (as EFT does when it is much quicker)."""

    name = "prefers-fast"
    late_binding = True

    def __init__(self) -> None:
        self.retracted: list[str] = []
        self.offered: list[list[str]] = []

    def choose(self, task: dict[str, Any], candidates: list[NodeLoad], rng: random.Random) -> NodeLoad:
        self.offered.append(sorted(c.node_id for c in candidates))
        return next((c for c in candidates if c.node_id == "fast"), candidates[0])

    def retract(self, node_id: str) -> None:
        self.retracted.append(node_id)


def test_late_binding_keeps_a_task_waiting_for_its_busy_best_node() -> None:
    pol = PrefersFast()
    o = Owner("me", OwnerConfig(window_per_slot=1, late_binding=True), policy=pol)
    o.node_up("fast", 1)
    o.node_up("slow", 1)
    out = o.submit(C1, [spec(f"t{i}") for i in range(3)])
    assert dispatched(out) == {"fast": ["t0"]}  # not t1 to the slow node just because its window is open
    assert pol.offered[-1] == ["fast", "slow"]  # offered the full node too
    assert pol.retracted == ["fast", "fast"]  # the placements it did not get are taken back
    assert [o.tasks[t].state for t in ("t1", "t2")] == [TaskState.READY, TaskState.READY]
    out = o.completed("fast", [ok("t0")])
    assert dispatched(out) == {"fast": ["t1"]}  # in submission order, once the fast node has room
    check_inflight(o)


def test_without_late_binding_a_policy_sees_only_open_windows() -> None:
    pol = PrefersFast()
    o = Owner("me", OwnerConfig(window_per_slot=1, late_binding=False), policy=pol)
    o.node_up("fast", 1)
    o.node_up("slow", 1)
    out = o.submit(C1, [spec(f"t{i}") for i in range(3)])
    assert dispatched(out) == {"fast": ["t0"], "slow": ["t1"]}
    assert pol.retracted == []


def test_late_binding_does_not_let_a_waiting_task_block_others() -> None:
    """A GPU task whose only node is full waits without a policy call; CPU work behind it still flows."""
    pol = PrefersFast()
    o = Owner("me", OwnerConfig(window_per_slot=1, late_binding=True), policy=pol)
    o.node_up("fast", 1, {"res": {"gpu": 1}})
    o.node_up("slow", 1)
    out = o.submit(C1, [spec("g0", resources={"gpu": 1}), spec("g1", resources={"gpu": 1})])
    assert dispatched(out) == {"fast": ["g0"]}
    calls = len(pol.offered)
    out = o.submit(C1, [spec("c0")])
    assert dispatched(out) == {}  # c0 also prefers the busy fast node: it waits too
    assert len(pol.offered) == calls + 1  # g1 was skipped without asking the policy
    assert o.ready[0] == "g1"  # still first in line


def test_late_binding_bounds_the_work_of_one_pass() -> None:
    pol = PrefersFast()
    o = Owner("me", OwnerConfig(window_per_slot=1, late_binding=True, max_deferred_per_pass=5), policy=pol)
    o.node_up("fast", 1)
    o.node_up("slow", 1)
    o.submit(C1, [spec(f"t{i}") for i in range(100)])
    assert len(pol.offered) == 1 + 5  # t0 placed, then five deferrals end the pass
    assert list(o.ready)[:3] == ["t1", "t2", "t3"]  # order kept


# ---------------------------------------------------------------------------------------------- rank order
class Predicts(PlacementPolicy):
    """Always the first candidate, but it predicts runtimes: the owner takes the longest first."""

    name = "predicts"
    ranks = True

    def __init__(self, seconds: dict[str, float]) -> None:
        self.seconds = seconds
        self.epoch = 0

    def choose(self, task: dict[str, Any], candidates: list[NodeLoad], rng: random.Random) -> NodeLoad:
        return candidates[0]

    def priority(self, task: dict[str, Any]) -> float:
        return self.seconds.get(task["id"], 0.0)

    def rank_epoch(self) -> int:
        return self.epoch


def ranked_owner(seconds: dict[str, float], **cfg: Any) -> tuple[Owner, Predicts]:
    inner = Predicts(seconds)
    o = Owner("me", OwnerConfig(window_per_slot=1, **cfg), inner, info=lambda tid: {"id": tid})
    o.node_up("n", 1)
    return o, inner


def drain(o: Owner) -> list[str]:
    order = []
    running = [t.id for t in o.tasks.values() if t.state is TaskState.DISPATCHED]
    while running:
        order += running
        out = o.completed("n", [ok(t) for t in running])
        running = [tid for ids in dispatched(out).values() for tid in ids]
    return order


def test_rank_order_takes_the_longest_of_tasks_submitted_together_first() -> None:
    o, _ = ranked_owner({"short": 1.0, "long": 5.0, "mid": 3.0, "busy": 0.0})
    o.submit(C1, [spec("busy")], now=0.0)  # takes the only slot, so the next three queue up
    o.submit(C1, [spec("short"), spec("long"), spec("mid")], now=0.0)
    assert drain(o) == ["busy", "long", "mid", "short"]


def test_rank_order_lets_a_task_that_waited_long_enough_go_first() -> None:
    """The key is submission time minus predicted runtime: no task starves behind ever-longer newcomers."""
    o, _ = ranked_owner({"old": 1.0, "new": 5.0, "newer": 30.0, "busy": 0.0})
    o.submit(C1, [spec("busy")], now=0.0)
    o.submit(C1, [spec("old")], now=0.0)  # key 0.1 x 0 - 1 = -1
    o.submit(C1, [spec("new")], now=100.0)  # key 10 - 5 = 5: "old" has waited long enough to go first
    o.submit(C1, [spec("newer")], now=200.0)  # key 20 - 30 = -10: long enough to overtake both
    assert drain(o) == ["busy", "newer", "old", "new"]


def test_rank_order_is_off_for_policies_that_do_not_predict_and_when_disabled() -> None:
    o, _ = ranked_owner({"a": 1.0, "b": 5.0, "busy": 0.0}, rank_order=False)
    o.submit(C1, [spec("busy")], now=0.0)
    o.submit(C1, [spec("a"), spec("b")], now=0.0)
    assert drain(o) == ["busy", "a", "b"]


def test_ranks_are_recomputed_when_the_model_has_learned_more() -> None:
    o, inner = ranked_owner({"a": 1.0, "b": 5.0, "busy": 0.0})
    o.submit(C1, [spec("busy")], now=0.0)
    o.submit(C1, [spec("a"), spec("b")], now=0.0)
    assert list(o.ready) == ["b", "a"]
    inner.seconds["a"] = 9.0  # the model changed its mind...
    o.completed("n", [ok("busy")])
    assert o.tasks["b"].state is TaskState.DISPATCHED  # ...but a new epoch had not begun: cached ranks were used
    o.submit(C1, [spec("c")], now=0.0)
    inner.epoch = 1
    inner.seconds["c"] = 3.0
    o.completed("n", [ok("b")])
    # with a's old rank (1 s) c (3 s) would go first; recomputed, a (9 s) does
    assert [t.id for t in o.tasks.values() if t.state is TaskState.DISPATCHED] == ["a"]


# ------------------------------------------------------------------------------- start reports, fire and forget
def test_start_reports_reach_only_the_clients_that_asked_and_only_for_the_current_attempt() -> None:
    from meshaios.tasks.owner import Started

    o = make()
    o.node_up("n1", 4)
    actions = o.submit(C1, [spec("a", rs=True), spec("b")])
    tasks = {t["id"]: t for a in actions if isinstance(a, Dispatch) for t in a.tasks}
    assert tasks["a"]["rs"] is True
    assert "rs" not in tasks["b"]
    assert o.started("n1", [["a", 0], ["b", 0]]) == [Started(C1, ["a"])]
    assert o.started("n1", [["a", 1], ["zz", 0], "junk", ["a"]]) == []  # another attempt, unknown, malformed
    o.completed("n1", [ok("a")])
    assert o.started("n1", [["a", 0]]) == []  # finished: a late report is dropped


def test_a_leaving_client_keeps_its_fire_and_forget_tasks_and_their_dependencies() -> None:
    o = make()
    o.node_up("n1", 1)
    o.submit(C1, [spec("blocker"), spec("dep"), spec("kept", ("dep",)), spec("other")])
    o.keep(C1, ["kept", "unknown"])
    assert o.tasks["dep"].kept
    assert o.tasks["kept"].kept
    assert not o.tasks["other"].kept
    o.cancel_client(C1)
    assert o.tasks["other"].state is TaskState.FAILED
    assert o.tasks["dep"].state is not TaskState.FAILED
    assert o.tasks["kept"].state is not TaskState.FAILED
    o.completed("n1", [ok("blocker")])
    actions = o.completed("n1", [ok("dep")])
    assert dispatched(actions) == {"n1": ["kept"]}


# ------------------------------------------------------------------------------------------------ graph order
MiB100 = 100 * 2**20


def stored(tid: str, size: int = MiB100) -> dict[str, Any]:
    """A result left on its node (``size`` bytes there), as an executor reports a large one."""
    return {"id": tid, "ok": True, "size": size}


def two_chains(o: Owner, prio_second: int = 0) -> list[OwnerAction]:
    """x0, x2 (100 MiB each) held on n1; then two chains x -> scale -> mix, submitted chain by chain."""
    o.node_up("n1", 1)
    assert dispatched(o.submit(C1, [spec("x0"), spec("x2")])) == {"n1": ["x0", "x2"]}
    o.completed("n1", [stored("x0"), stored("x2")])
    second = {"priority": prio_second} if prio_second else {}
    return o.submit(C1, [spec("s0", ("x0",)), spec("m0", ("s0",)), spec("s2", ("x2",), **second),
                         spec("m2", ("s2",), **second)])


def test_a_consumer_made_ready_goes_ahead_of_the_next_chain_on_a_busy_node() -> None:
    """Graph order (dask.order's aim): n1 runs s0; s2 would only queue behind it, and s0's finish makes m0 ready,
    submitted before s2: s2 waits, so m0 runs next and the node never holds both chains' intermediates."""
    o = make()
    assert dispatched(two_chains(o)) == {"n1": ["s0"]}
    assert o.counters["held_for_order"] == 1
    assert [t.id for t in o.tasks.values() if t.state is TaskState.READY] == ["s2"]
    assert dispatched(o.completed("n1", [stored("s0")])) == {"n1": ["m0", "s2"]}
    check_inflight(o)


def test_graph_order_never_passes_a_higher_priority() -> None:
    o = make()
    assert dispatched(two_chains(o, prio_second=5)) == {"n1": ["s2", "s0"]}  # the user's priority first
    assert o.counters["held_for_order"] == 0


def test_the_ready_queue_takes_a_client_tasks_in_submission_order() -> None:
    """A consumer that becomes ready late goes ahead of tasks submitted after it, not behind them."""
    o = make(window=1)
    o.node_up("n1", 1)
    o.submit(C1, [spec("a"), spec("b", ("a",)), spec("c"), spec("d")])
    assert [t for t in o.ready] == ["c", "d"]
    o.completed("n1", [ok("a")])  # b ready: ahead of c and d, which were submitted after it
    assert o.tasks["b"].state is TaskState.DISPATCHED
    assert list(o.ready) == ["c", "d"]


def runs(actions: list[OwnerAction]) -> dict[str, dict[str, Any]]:
    return {t["id"]: t for a in actions if isinstance(a, Dispatch) for t in a.tasks}


def test_the_last_user_of_a_released_input_is_told_to_drop_it_when_it_succeeds() -> None:
    """Issue 17 (performance.md section 15): the RUN of a task that is the last user of a released stored input
    names it (``fr``), so its executor drops it the moment the task succeeds, not when ``Free`` comes a round trip
    later; an input with another consumer still pending, one the client holds, or a small one is not named."""
    o = make()
    o.node_up("n1", 1)
    o.submit(C1, [spec("big"), spec("small"), spec("kept"), spec("s"), spec("m", ("s", "big", "small", "kept")),
                  spec("other", ("big", "s", "m"))])
    o.completed("n1", [stored("big"), stored("small", 4096), stored("kept")])
    o.release(["s", "big", "small"])  # the client let go of them after submitting their readers
    acts = o.completed("n1", [stored("s")])
    assert "fr" not in runs(acts)["m"]  # s and big have another reader pending; small is under ORDER_MIN_BYTES
    acts = o.completed("n1", [stored("m")])
    assert runs(acts)["other"]["fr"] == ["big", "s"]  # m has finished: other is their last reader
    check_inflight(o)


def test_an_input_released_while_its_last_reader_runs_on_its_holder_goes_when_that_reader_succeeds() -> None:
    """The client releases a result once it has it, usually after its reader was dispatched: the holder is told
    that the reader running there is its last one (``Free`` with ``after``); not a reader on another node, nor
    while another reader is pending."""
    from meshaios.tasks.owner import Free

    o = make()
    o.node_up("n1", 1)
    o.node_up("n2", 1)
    o.submit(C1, [spec("s"), spec("m", ("s",)), spec("t"), spec("u", ("t",)), spec("v", ("t",))])
    first = o.tasks["s"].node
    o.completed(first, [stored("s")])
    assert o.tasks["m"].node == first  # next to its input
    assert o.release(["s"]) == [Free(first, ["s"], after="m")]
    o.completed(o.tasks["t"].node, [stored("t")])
    assert o.release(["t"]) == []  # u and v both still read it
    check_inflight(o)


def test_tiny_tasks_without_inputs_are_never_held() -> None:
    o = make()
    o.node_up("n1", 1)
    acts = o.submit(C1, [spec("a"), spec("b", ("a",)), *(spec(f"t{i}") for i in range(5))])
    assert dispatched(acts) == {"n1": ["a", "t0", "t1", "t2", "t3", "t4"]}
    assert o.counters["held_for_order"] == 0
