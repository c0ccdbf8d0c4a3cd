"""Priorities: higher first at the owner (dominating rank order), fair turns between clients of equal priority,
in a node's work queue, and in what work stealing gives away."""

from __future__ import annotations

import random
from typing import Any

from meshaios.sched.placement import LeastLoaded
from meshaios.sched.stealing import QueuedTask, StealEngine, TasksArrived, WorkQueue
from meshaios.tasks.owner import Dispatch, Owner, OwnerConfig
from tests.unit.test_owner import C1, C2, ok, spec
from tests.unit.test_sched_stealing import _exchange


def order(actions: list[Any]) -> list[str]:
    return [t["id"] for a in actions if isinstance(a, Dispatch) for t in a.tasks]


def one_slot_owner(**cfg: Any) -> Owner:
    o = Owner("me", OwnerConfig(window_per_slot=1, **cfg), LeastLoaded(), random.Random(0))
    o.node_up("n1", 1)
    return o


def drain(o: Owner, first: list[str]) -> list[str]:
    """Run tasks one at a time on the single slot; the order they were dispatched in."""
    started = list(first)
    while True:
        new = order(o.completed("n1", [ok(started[-1])]))
        if not new:
            return started
        started += new


def test_higher_priority_starts_first_and_fifo_within_a_priority() -> None:
    o = one_slot_owner()
    first = order(o.submit(C1, [spec("busy")]))
    o.submit(C1, [spec(f"lo{i}") for i in range(3)])
    o.submit(C1, [spec("hi0", priority=10), spec("mid", priority=5), spec("hi1", priority=10)])
    o.submit(C1, [spec("neg", priority=-1), spec("lo3")])
    assert list(o.ready) == ["hi0", "hi1", "mid", "lo0", "lo1", "lo2", "lo3", "neg"]
    assert drain(o, first) == ["busy", "hi0", "hi1", "mid", "lo0", "lo1", "lo2", "lo3", "neg"]


def test_the_priority_travels_to_the_executor() -> None:
    o = one_slot_owner()
    (d,) = o.submit(C1, [spec("a", priority=7)])
    assert isinstance(d, Dispatch)
    assert d.tasks[0]["prio"] == 7
    assert o.submit(C1, [spec("b")]) == []  # window full: nothing dispatched yet
    (d,) = [a for a in o.completed("n1", [ok("a")]) if isinstance(a, Dispatch)]
    assert "prio" not in d.tasks[0]  # the default costs nothing on the wire


def test_a_bad_priority_is_the_default() -> None:
    o = one_slot_owner()
    o.submit(C1, [spec("busy"), spec("x", priority="high"), spec("y", priority=2**40), spec("z", priority=True)])
    assert o.tasks["x"].priority == 0
    assert o.tasks["z"].priority == 0
    assert o.tasks["y"].priority == 2**31 - 1


def test_clients_of_equal_priority_take_turns() -> None:
    o = one_slot_owner()
    first = order(o.submit(C1, [spec("busy")]))
    o.submit(C1, [spec(f"a{i}") for i in range(100)])
    o.submit(C2, [spec(f"b{i}") for i in range(3)])
    assert drain(o, first)[:8] == ["busy", "a0", "b0", "a1", "b1", "a2", "b2", "a3"]


def test_priority_dominates_the_rank_order() -> None:
    """With a policy that predicts runtimes, long tasks go first among equals -- but never before a higher
    priority."""

    class Ranker(LeastLoaded):
        ranks = True

        def rank_epoch(self) -> int:
            return 0

        def priority(self, task: Any) -> float:
            return 100.0 if task["id"].startswith("long") else 1.0

    o = Owner("me", OwnerConfig(window_per_slot=1), Ranker(), random.Random(0))
    o.node_up("n1", 1)
    first = order(o.submit(C1, [spec("busy")]))
    o.submit(C1, [spec("short0"), spec("long0"), spec("short1", priority=1), spec("long1")])
    assert drain(o, first) == ["busy", "short1", "long0", "long1", "short0"]


def test_re_placed_work_goes_first_within_its_priority() -> None:
    o = Owner("me", OwnerConfig(window_per_slot=1), LeastLoaded(), random.Random(0))
    o.node_up("n1", 1)
    o.node_up("n2", 1)
    o.submit(C1, [spec("x"), spec("y", priority=3)])
    o.submit(C1, [spec("lo"), spec("hi", priority=3)])
    assert o.tasks["x"].node is not None
    assert o.tasks["y"].node is not None
    dead = o.tasks["x"].node
    assert dead is not None
    o.node_down(dead)
    assert list(o.ready) == ["hi", "x", "lo"]  # x was dispatched before: first among priority 0


# ------------------------------------------------------------------------------------------- node work queue


def qt(i: int, prio: int = 0, predicted: float = 1.0) -> QueuedTask:
    return QueuedTask(id=f"t{i}", att=0, owner="own", kernel="k", predicted=predicted, spec={"prio": prio},
                      priority=prio)


def test_work_queue_starts_higher_priority_first() -> None:
    q = WorkQueue({"cpu": 1})
    for i, p in enumerate([0, 0, 5, 0, 5, -2, 9]):
        q.push(qt(i, p))
    assert [t.id for t in q.queued()] == ["t6", "t2", "t4", "t0", "t1", "t3", "t5"]
    started = []
    while (t := q.start_next("cpu")) is not None:
        started.append(t.id)
        q.finish(t.key)
    assert started == ["t6", "t2", "t4", "t0", "t1", "t3", "t5"]
    assert len(q) == 0
    assert q.n_queued() == 0


def test_stealing_gives_away_the_lowest_priority_and_keeps_it_on_the_thief() -> None:
    vq = WorkQueue({"cpu": 1})
    for i in range(10):
        vq.push(qt(i, prio=10 if i >= 8 else 0))  # the two high ones were queued last
    victim = StealEngine("victim", vq)
    thief = StealEngine("thief", WorkQueue({"cpu": 2}))
    log = _exchange(victim, thief)
    arrived = [t for a in log if isinstance(a, TasksArrived) for t in a.tasks]
    assert arrived
    assert all(t.priority == 0 for t in arrived)
    assert {t.id for t in arrived} <= {"t7", "t6"}
    assert [t.id for t in vq.queued()][:2] == ["t8", "t9"]
    # a stolen task keeps its priority in the thief's queue (it travels in the spec)
    vq2 = WorkQueue({"cpu": 1})
    for i in range(10):
        vq2.push(qt(i, prio=4))
    log = _exchange(StealEngine("victim", vq2), StealEngine("thief", WorkQueue({"cpu": 2})))
    assert [t.priority for a in log if isinstance(a, TasksArrived) for t in a.tasks] == [4, 4]

