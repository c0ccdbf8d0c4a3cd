"""Deadlines at the owner: FIFO, EDF and model-driven order; met/missed counted when results come back."""

from __future__ import annotations

import random
from typing import Any

from meshaios.sched.placement import LeastLoaded
from meshaios.tasks.owner import Dispatch, Owner, OwnerConfig
from tests.unit.test_owner import C1, ok, spec


def order(actions: list[Any]) -> list[str]:
    return [t["id"] for a in actions if isinstance(a, Dispatch) for t in a.tasks]


def owner(mode: str, policy: Any = None) -> Owner:
    o = Owner("me", OwnerConfig(window_per_slot=1, deadline_order=mode), policy or LeastLoaded(), random.Random(0))
    o.node_up("n1", 1)
    return o


def drain(o: Owner, first: list[str], now: float = 0.0, dt: float = 1.0) -> list[str]:
    started = list(first)
    while True:
        now += dt
        new = order(o.completed("n1", [{**ok(started[-1]), "dt": dt}], now))
        if not new:
            return started
        started += new


def test_fifo_ignores_deadlines_and_counts_them() -> None:
    o = owner("fifo")
    first = order(o.submit(C1, [spec("busy")], now=0.0))
    o.submit(C1, [spec("a"), spec("b", deadline=1.5), spec("c", deadline=10.0)], now=0.0)
    assert drain(o, first) == ["busy", "a", "b", "c"]
    assert (o.counters["deadline_met"], o.counters["deadline_missed"]) == (1, 1)  # b at 3 s (late), c at 4 s


def test_edf_takes_deadlines_first_earliest_first_and_tells_the_node() -> None:
    o = owner("edf")
    first = order(o.submit(C1, [spec("busy")], now=0.0))
    o.submit(C1, [spec("a"), spec("late", deadline=10.0), spec("soon", deadline=2.5)], now=0.0)
    assert drain(o, first) == ["busy", "soon", "late", "a"]
    assert (o.counters["deadline_met"], o.counters["deadline_missed"]) == (2, 0)


def test_a_hurried_task_is_marked_for_the_node_queue() -> None:
    o = owner("edf")
    o.submit(C1, [spec("busy")], now=0.0)
    o.submit(C1, [spec("plain"), spec("due", deadline=5.0)], now=0.0)
    (d,) = [a for a in o.completed("n1", [ok("busy")], 1.0) if isinstance(a, Dispatch)]
    assert [(t["id"], t.get("urg")) for t in d.tasks] == [("due", True)]
    (d,) = [a for a in o.completed("n1", [ok("due")], 2.0) if isinstance(a, Dispatch)]
    assert [(t["id"], t.get("urg")) for t in d.tasks] == [("plain", None)]


def test_model_order_hurries_only_what_would_miss_and_reports_the_hopeless() -> None:
    class Predicts(LeastLoaded):
        ranks = True

        def rank_epoch(self) -> int:
            return 0

        def priority(self, task: Any) -> float:
            return {"slow": 5.0}.get(task["id"], 1.0)

    o = owner("model", Predicts())
    first = order(o.submit(C1, [spec("busy")], now=0.0))
    o.submit(C1, [spec("a"), spec("b"), spec("relaxed", deadline=100.0), spec("tight", deadline=2.5),
                  spec("slow", deadline=3.0)], now=0.0)
    started = drain(o, first)
    # tight (slack 1.5 s) jumps the queue; relaxed (slack 99 s) waits its turn; slow cannot make it (5 s of work
    # for 3 s): reported, and it goes after every task that still can
    assert started.index("tight") == 1
    assert started.index("relaxed") > started.index("b")
    assert o.counters["deadline_at_risk"] == 1
