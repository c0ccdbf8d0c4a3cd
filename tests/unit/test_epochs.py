"""Fenced ownership (tasks/epochs.py): executors' RunFence and the owner's epochs and client leases."""

from __future__ import annotations

import random
from typing import Any

from meshaios.tasks.epochs import ClientLeases, Run, RunFence, Verdict
from meshaios.tasks.owner import Deliver, Dispatch, Free, Owner, OwnerConfig, TaskState
from meshaios.wire.payload import Payload

C = b"c:client"
FN = Payload(b"fn")
ARGS = Payload(b"args")


def spec(tid: str, deps: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"id": tid, "fn": FN, "args": ARGS, "deps": list(deps)}


def owner(lease: float = 0.0, window: int = 8) -> Owner:
    return Owner("me", OwnerConfig(window_per_slot=window, client_lease=lease), rng=random.Random(0))


def dispatched(actions: list[Any]) -> list[str]:
    return [t["id"] for a in actions if isinstance(a, Dispatch) for t in a.tasks]


# ---------------------------------------------------------------------------------------------- executor side
def test_a_run_of_an_older_epoch_is_fenced_and_the_newer_epoch_reported() -> None:
    f = RunFence()
    assert f.offer(("t1", 0), Run("A", "c", 0)) is Verdict.NEW
    assert f.offer(("t2", 0), Run("B", "c", 1)) is Verdict.NEW
    assert f.offer(("t3", 0), Run("A", "c", 0)) is Verdict.FENCED
    assert f.epoch("c") == 1
    assert "t3" not in {k[0] for k in f.runs}
    # another client's runs are not affected
    assert f.offer(("u1", 0), Run("A", "d", 0)) is Verdict.NEW


def test_the_same_attempt_from_a_newer_owner_is_adopted_not_run_twice() -> None:
    """The bug this module fixes: the second RUN was dropped as a duplicate and reported to the first owner only."""
    f = RunFence()
    f.offer(("t", 0), Run("A", "c", 0))
    assert f.offer(("t", 0), Run("B", "c", 1)) is Verdict.ADOPT
    assert len(f) == 1
    assert f.done(("t", 0)) == Run("B", "c", 1)
    assert f.done(("t", 0)) is None


def test_the_same_attempt_for_another_clients_owner_is_taken_not_adopted() -> None:
    """A spread client's shards are clients of their own: two may own one task and send the same attempt. The run
    here stays its first owner's; the second is told to place it again (``Verdict.TAKEN``), not adopted."""
    f = RunFence()
    f.offer(("t", 1), Run("A", "c.1", 0))
    assert f.offer(("t", 1), Run("B", "c.2", 0)) is Verdict.TAKEN
    assert f.offer(("t", 1), Run("A", "c.2", 0)) is Verdict.DUPLICATE  # one owner of both shards: its run already
    assert f.done(("t", 1)) == Run("A", "c.1", 0)


def test_the_same_run_delivered_twice_runs_once() -> None:
    f = RunFence()
    f.offer(("t", 0), Run("A", "c", 0))
    assert f.offer(("t", 0), Run("A", "c", 0)) is Verdict.DUPLICATE
    assert f.offer(("t", 1), Run("A", "c", 0)) is Verdict.NEW  # a re-placed attempt is another run
    assert f.counters == {"fenced": 0, "adopted": 0, "duplicates": 1, "taken": 0}


def test_runs_without_a_client_are_never_fenced() -> None:
    f = RunFence()
    assert f.offer(("t", 0), Run("A")) is Verdict.NEW
    assert f.offer(("t", 0), Run("B")) is Verdict.ADOPT
    assert f.owner_of(("t", 0)) == "B"


def test_the_epoch_table_is_bounded() -> None:
    f = RunFence(max_clients=3)
    for i in range(10):
        f.offer((f"t{i}", 0), Run("A", f"c{i}", 1))
    assert len(f._epochs) == 3
    assert f.epoch("c9") == 1
    assert f.epoch("c0") == 0


def test_leases_suspend_silent_clients_and_resume_them() -> None:
    leases = ClientLeases(lease=2.0)
    leases.track(C, 0.0)
    assert leases.expire(1.0) == []
    assert leases.expire(2.5) == [C]
    assert leases.expire(3.0) == []  # reported once
    assert leases.heard(C, 3.1) is True
    assert leases.heard(C, 3.2) is False
    assert ClientLeases(lease=0.0).expire(1e9) == []


# ---------------------------------------------------------------------------------------------- owner side
def test_detach_abandons_older_work_frees_its_slots_and_delivers_nothing() -> None:
    o = owner(window=1)
    o.node_up("n1", 1)
    first = o.submit(C, [spec("a"), spec("b"), spec("c")], ep=0)
    assert dispatched(first) == ["a"]
    out = o.detach(C, 1)
    assert out == []
    assert o.tasks == {}
    assert o.pending == 0
    assert o.nodes["n1"].inflight == 0
    assert o.counters["abandoned"] == 3
    # a result still on its way is dropped, not delivered
    assert o.completed("n1", [{"id": "a", "ok": True, "v": Payload(b"1")}]) == []
    # a late SUBMIT of the older epoch (from before the failover) is stale
    assert o.submit(C, [spec("d")], ep=0) == []
    assert o.counters["stale_submits"] == 1


def test_detach_frees_the_copies_of_finished_work_at_once_held_for_the_new_owners_claim() -> None:
    """Its new owner claims the copies it counts at about the same moment: the FREE says so (``hold``), and the
    holder keeps a copy no other owner counts yet a while (store/copies.py ``FREE_HOLD``), for that claim."""
    o = owner()
    o.node_up("n1", 2)
    o.submit(C, [spec("a"), spec("b")], ep=0)
    o.completed("n1", [{"id": "a", "ok": True, "size": 8}, {"id": "b", "ok": True, "size": 8}])
    assert o.detach(C, 1) == [Free("n1", ["a", "b"], hold=True)]
    assert o.tasks == {}


def test_detach_keeps_work_of_the_current_epoch_and_of_other_clients() -> None:
    o = owner()
    o.node_up("n1", 2)
    o.submit(C, [spec("a")], ep=0)
    o.submit(C, [spec("b")], ep=1)  # the client came back to us under a newer epoch
    o.submit(b"c:other", [spec("x")], ep=0)
    o.detach(C, 1)
    assert set(o.tasks) == {"b", "x"}  # "a" was neither resubmitted nor current
    assert o.pending == 2


def test_a_resubmission_under_a_newer_epoch_reowns_known_tasks() -> None:
    o = owner()
    o.node_up("n1", 2)
    o.submit(C, [spec("a")], ep=0)
    o.submit(C, [spec("a")], ep=2)
    assert o.tasks["a"].ep == 2
    o.detach(C, 2)  # a DETACH of the epoch we hold changes nothing
    assert "a" in o.tasks


def test_runs_carry_the_client_and_its_epoch() -> None:
    o = owner()
    o.node_up("n1", 2)
    (d,) = o.submit(C, [spec("a")], ep=3)
    assert isinstance(d, Dispatch)
    assert (d.tasks[0]["c"], d.tasks[0]["ep"]) == (C.decode(), 3)


def test_a_silent_client_has_its_work_held_back_until_it_speaks() -> None:
    o = owner(lease=2.0, window=1)
    o.node_up("n1", 1)
    assert dispatched(o.submit(C, [spec("a"), spec("b"), spec("c")], now=0.0)) == ["a"]
    o.tick(5.0)  # silent for 5 s: suspended
    done = o.completed("n1", [{"id": "a", "ok": True, "v": Payload(b"1")}])
    assert [a for a in done if isinstance(a, Deliver)]  # finished work is still delivered
    assert dispatched(done) == []  # but nothing new goes out
    assert o.tasks["b"].state is TaskState.READY
    assert o.counters["held"] == 2  # b and c
    resumed = o.heard(C, 5.5)
    assert dispatched(resumed) == ["b"]  # in its original order
    assert o.heard(C, 5.6) == []


def test_leases_are_off_in_the_pure_owner_by_default() -> None:
    o = Owner("me", OwnerConfig(window_per_slot=1), rng=random.Random(0))
    o.node_up("n1", 1)
    o.submit(C, [spec("a"), spec("b")], now=0.0)
    o.tick(1000.0)
    assert dispatched(o.completed("n1", [{"id": "a", "ok": True, "v": Payload(b"1")}])) == ["b"]


def test_module_examples() -> None:
    import doctest

    from meshaios.tasks import epochs as fencing

    assert doctest.testmod(fencing).failed == 0


def test_a_failed_over_client_brings_finished_inputs_along_and_they_do_not_run_again() -> None:
    o = owner()
    o.node_up("n1", 2)
    inline = {**spec("a"), "done": {"v": Payload(b"1")}, "rel": False}
    remote = {**spec("b"), "done": {"loc": ["n1"], "size": 10, "parts": 0}, "rel": True}
    gone = {**spec("c"), "done": {"loc": ["n9"], "size": 10, "parts": 0}, "rel": False}  # its holder is unknown
    out = o.submit(C, [inline, remote, gone, spec("d", deps=("a", "b", "c"))], ep=1)
    assert dispatched(out) == ["c"]  # only what nobody has runs again; d waits for it
    assert not [a for a in out if isinstance(a, Deliver)]  # the client has these results already
    assert (o.tasks["a"].state, o.tasks["b"].state, o.tasks["d"].state) == (
        TaskState.DONE,
        TaskState.DONE,
        TaskState.WAITING,
    )
    assert o.tasks["b"].locations == ["n1"]
    assert o.counters["adopted_done"] == 2
    assert o.pending == 2


def test_the_newest_owner_of_a_client_is_remembered_for_stolen_runs() -> None:
    f = RunFence()
    assert f.newest("c") is None
    f.offer(("t1", 0), Run("A", "c", 0))
    f.offer(("t2", 0), Run("B", "c", 1))
    assert f.newest("c") == Run("B", "c", 1)
    # a stolen run of the old epoch is refused as A's; offered again for B, it runs here
    assert f.offer(("t3", 0), Run("A", "c", 0)) is Verdict.FENCED
    assert f.offer(("t3", 0), Run("B", "c", 1)) is Verdict.NEW


def test_a_reconciling_client_gets_its_in_flight_tasks_run_again() -> None:
    o = owner()
    o.node_up("n1", 2)
    o.submit(C, [spec("a")], ep=0)
    again = o.submit(C, [{**spec("a"), "rc": True}], ep=0)  # nothing finished for long: the run may be lost
    assert [(t["id"], t["att"]) for a in again if isinstance(a, Dispatch) for t in a.tasks] == [("a", 1)]
    assert o.counters["reconciled"] == 1
    assert o.nodes["n1"].inflight == 1
    # the first attempt's result, should it come after all, is as good (first result wins)
    out = o.completed("n1", [{"id": "a", "att": 0, "ok": True, "v": Payload(b"1")}])
    assert [a for a in out if isinstance(a, Deliver)]
