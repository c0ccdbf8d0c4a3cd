"""The owner's one entry, ``Owner.handle(event, now)``: every event carries the time, and objects nobody can ask
for any more come out as ``Free`` instructions (batched per ``OwnerTick``), not through a polled method."""

from __future__ import annotations

import random

from meshaios.tasks.owner import (
    MAX_UNREACHABLE,
    AddLocation,
    Cancel,
    ClientHeard,
    Completed,
    Deliver,
    Dispatch,
    Free,
    Keep,
    LoadHeard,
    NodeDown,
    NodeUp,
    Owner,
    OwnerAction,
    OwnerConfig,
    OwnerTick,
    RegisterPut,
    Release,
    ReleaseClient,
    RunStarted,
    SubmitTasks,
    TaskMoved,
    TaskState,
)
from meshaios.wire.payload import Payload
from tests.unit.test_owner import C1, C2, delivered, dispatched, ok, spec


def frees(actions: list[OwnerAction]) -> dict[str, list[str]]:
    return {a.node: sorted(a.ids) for a in actions if isinstance(a, Free)}


def owner() -> Owner:
    o = Owner("me", OwnerConfig(window_per_slot=1), rng=random.Random(0))
    o.handle(NodeUp("n1", 1), 0.0)
    o.handle(NodeUp("n2", 1), 0.0)
    return o


def test_a_task_goes_through_handle_from_submit_to_delivery() -> None:
    o = owner()
    out = o.handle(SubmitTasks(C1, [spec("a"), spec("b"), spec("c")]), 1.0)
    placed = dispatched(out)
    assert sorted(t for ts in placed.values() for t in ts) == ["a", "b"]
    node_a = next(n for n, ts in placed.items() if "a" in ts)
    o.handle(RunStarted(node_a, [["a", 0]]), 1.5)
    out = o.handle(Completed(node_a, [ok("a")]), 2.0)
    assert [r["id"] for a in out if isinstance(a, Deliver) for r in a.results] == ["a"]
    assert dispatched(out) == {node_a: ["c"]}  # the freed window takes the next task
    assert o.handle(LoadHeard("n1", 3), 2.0) == []
    assert o.nodes["n1"].reported == 3
    assert o.now == 2.0


def test_a_copy_no_owner_would_free_is_freed_when_its_holder_says_it_has_it() -> None:
    """A put's replica whose STORED came late (its put acknowledged without it, perhaps released): the owner counts
    it if it still tracks the put and the node, else frees it at once, so that no copy is left behind."""
    o = owner()
    o.handle(RegisterPut(C1, "p1", ["n2"], 100), 0.0)
    assert o.handle(AddLocation("p1", "n1"), 0.1) == []  # counted: freed with the rest
    assert o.lookup("p1") is not None
    assert "n1" in o.lookup("p1").locations  # type: ignore[union-attr]
    assert frees(o.handle(AddLocation("gone", "n2"), 0.2)) == {"n2": ["gone"]}  # forgotten (released) already
    assert frees(o.handle(AddLocation("p1", "n9"), 0.3)) == {"n9": ["p1"]}  # a node this owner counts as gone
    assert o.handle(AddLocation("p1", "n1"), 0.4) == []  # said twice: counted once
    assert o.lookup("p1").locations.count("n1") == 1  # type: ignore[union-attr]


def test_a_put_out_of_one_executors_reach_is_asked_for_again_while_its_holder_is_live() -> None:
    """An executor that could fetch a put from none of its holders (cut off from them, or thinking them dead) is
    not proof the put is gone while this owner counts a holder live: the task goes again; after MAX_UNREACHABLE
    such reports the put is lost (ObjectLost), and the copies it still lists are freed, not left behind."""
    o = owner()
    o.handle(RegisterPut(C1, "p1", ["n2"], 1 << 20), 0.0)
    out = o.handle(SubmitTasks(C1, [spec("r", ("p1",))]), 0.0)
    node = next(iter(dispatched(out)))
    for attempt in range(MAX_UNREACHABLE):
        out = o.handle(Completed(node, [{"id": "r", "att": attempt, "ok": False, "lost": ["p1"]}]), 1.0 + attempt)
        assert not [r for r in delivered(out) if r["id"] == "r"], attempt  # not failed: asked for again
        node = next(iter(dispatched(out) or dispatched(o.handle(OwnerTick(), 1.5 + attempt))))
    out = o.handle(Completed(node, [{"id": "r", "att": MAX_UNREACHABLE, "ok": False, "lost": ["p1"]}]), 9.0)
    [res] = [r for r in delivered(out) if r["id"] == "r"]
    assert "ObjectLost" in res["err"]["type"]
    assert frees(out) == {"n2": ["p1"]}  # with the completion that gave it up


def test_a_lost_report_about_copies_replaced_since_its_attempt_was_sent_frees_nothing() -> None:
    """Two reducers read parts of one map output. The first reports its part lost: the map output's copies are
    freed and it is recomputed. The second, sent before that, then reports its own part lost -- the old copy it was
    told of. That says nothing of the new copies: freeing them (and recomputing again) freed a part under a reducer
    that had found it local, which then failed with WireError (tests/system/test_mapreduce_processes.py)."""
    o = Owner("me", OwnerConfig(window_per_slot=4), rng=random.Random(0))
    o.handle(NodeUp("n1", 2), 0.0)
    o.handle(NodeUp("n2", 2), 0.0)
    [mnode] = dispatched(o.handle(SubmitTasks(C1, [spec("m", parts=2)]), 0.0))
    o.handle(Completed(mnode, [{"id": "m", "att": 0, "ok": True, "size": 20, "parts": 2}]), 0.1)
    out = o.handle(SubmitTasks(C1, [spec("r0", ("m#0",)), spec("r1", ("m#1",))]), 0.2)
    where = {tid: n for n, tids in dispatched(out).items() for tid in tids}
    out = o.handle(Completed(where["r0"], [{"id": "r0", "att": 0, "ok": False, "lost": ["m#0"]}]), 0.3)
    assert frees(out) == {mnode: ["m#0", "m#1"]}
    [new] = [n for n, tids in dispatched(out).items() if "m" in tids]
    out = o.handle(Completed(new, [{"id": "m", "att": 1, "ok": True, "size": 20, "parts": 2}]), 0.4)
    assert "r0" in [t for ts in dispatched(out).values() for t in ts]
    out = o.handle(Completed(where["r1"], [{"id": "r1", "att": 0, "ok": False, "lost": ["m#1"]}]), 0.5)
    assert frees(out) == {}  # the new copies stay
    assert o.counters["recomputed"] == 1
    [run] = [t for a in out if isinstance(a, Dispatch) for t in a.tasks if t["id"] == "r1"]
    assert run["deps"] == {"m#1": {"loc": [new], "size": 10}}  # again, to the new copy


def test_a_duplicate_map_output_is_freed_part_by_part_and_never_where_the_counted_copy_is() -> None:
    """A map task re-placed (its node presumed dead) runs twice: the late copy's parts go (freeing the base id
    left every ``id#j`` behind, found by the fault injection's shuffle workload), and a duplicate from the node
    that holds the counted copy -- the very same ids -- frees nothing."""
    o = owner()
    [first] = dispatched(o.handle(SubmitTasks(C1, [spec("m", parts=2)]), 0.0))
    second = "n1" if first == "n2" else "n2"
    o.handle(Completed(second, [{"id": "m", "att": 1, "ok": True, "size": 20, "parts": 2}]), 0.5)
    out = o.handle(Completed(first, [{"id": "m", "att": 0, "ok": True, "size": 20, "parts": 2}]), 1.0)
    assert frees(out) == {first: ["m#0", "m#1"]}
    assert frees(o.handle(Completed(second, [{"id": "m", "att": 1, "ok": True, "size": 20, "parts": 2}]), 1.5)) == {}


def test_a_late_stored_result_of_a_task_finished_and_forgotten_here_is_freed_part_by_part() -> None:
    """A map task re-placed (its node presumed dead: paused) finishes elsewhere, is read and released; then the
    paused node's result arrives. Nobody counts that copy and nobody else would free it: every part goes (found by
    the fault injection's shuffle workload, seed 19: three parts left behind)."""
    o = owner()
    [first] = dispatched(o.handle(SubmitTasks(C1, [spec("m", parts=2)]), 0.0))
    second = "n1" if first == "n2" else "n2"
    assert dispatched(o.handle(NodeDown(first), 0.5)) == {second: ["m"]}
    o.handle(Completed(second, [{"id": "m", "att": 1, "ok": True, "size": 20, "parts": 2}]), 1.0)
    o.handle(Release(["m"]), 1.5)
    assert frees(o.handle(OwnerTick(), 1.5)) == {second: ["m#0", "m#1"]}
    assert "m" not in o.tasks
    o.handle(NodeUp(first, 1), 2.0)
    out = o.handle(Completed(first, [{"id": "m", "att": 0, "ok": True, "size": 20, "parts": 2}]), 2.0)
    assert frees(out) == {first: ["m#0", "m#1"]}
    out = o.handle(Completed(first, [{"id": "s", "att": 0, "ok": True, "size": 20}]), 2.1)
    assert frees(out) == {first: ["s"]}  # a whole result the same way


def test_a_lost_report_of_an_attempt_older_than_the_one_dispatched_frees_and_recomputes_nothing() -> None:
    """A reducer runs again (its client reconciled: attempt 1 dispatched) while its first attempt, on the same node,
    reports a map output part lost. That report is about attempt 0: it must not free the map output's copies,
    recompute the map, nor take attempt 1 off its node (judged against the newest dispatch, it did all three)."""
    o = owner()
    [mnode] = dispatched(o.handle(SubmitTasks(C1, [spec("m", parts=2)]), 0.0))
    o.handle(Completed(mnode, [{"id": "m", "att": 0, "ok": True, "size": 20, "parts": 2}]), 0.1)
    [rnode] = dispatched(o.handle(SubmitTasks(C1, [spec("r", ("m#0",))]), 0.2))
    out = o.handle(SubmitTasks(C1, [spec("r", ("m#0",), rc=True)]), 60.0)  # waited long: a new attempt
    [again] = [a for a in out if isinstance(a, Dispatch)]
    assert [(t["id"], t["att"]) for t in again.tasks] == [("r", 1)]
    out = o.handle(Completed(rnode, [{"id": "r", "att": 0, "ok": False, "lost": ["m#0"]}]), 60.5)
    assert frees(out) == {}
    assert dispatched(out) == {}
    assert frees(o.handle(OwnerTick(), 61.0)) == {}
    assert o.counters["recomputed"] == 0
    r = o.tasks["r"]
    assert (r.state, r.attempt, r.node) == (TaskState.DISPATCHED, 1, again.node)
    assert "r" in o.node_tasks[again.node]  # still watched there: its node's death re-places it
    out = o.handle(Completed(again.node, [{"id": "r", "att": 1, "ok": True, "v": Payload(b"x")}]), 61.5)
    assert [d["id"] for d in delivered(out)] == ["r"]


def test_a_failure_of_an_attempt_older_than_the_one_dispatched_neither_retries_nor_fails_the_task() -> None:
    """Attempt 0 of a task fails (say its node was presumed dead and came back with an error) after attempt 1 was
    dispatched elsewhere. Judged against the newest dispatch it used up a retry and ran the task a third time --
    or, with no retry left, failed the task for good while attempt 1 was running -- and took attempt 1 off its
    node. Now it changes nothing: attempt 1's outcome decides."""
    for retries in (0, 1):
        o = owner()
        [first] = dispatched(o.handle(SubmitTasks(C1, [spec("r", retries=retries)]), 0.0))
        out = o.handle(SubmitTasks(C1, [spec("r", rc=True, retries=retries)]), 60.0)  # waited long: a new attempt
        [again] = [a for a in out if isinstance(a, Dispatch)]
        assert [(t["id"], t["att"]) for t in again.tasks] == [("r", 1)]
        err = {"type": "RuntimeError", "msg": "from the run given up"}
        out = o.handle(Completed(first, [{"id": "r", "att": 0, "ok": False, "err": err}]), 60.5)
        assert dispatched(out) == {}
        assert delivered(out) == []
        r = o.tasks["r"]
        assert (r.state, r.attempt, r.node, r.retries) == (TaskState.DISPATCHED, 1, again.node, retries)
        assert "r" in o.node_tasks[again.node]
        assert o.counters["stale_reports"] == 1
        out = o.handle(Completed(again.node, [{"id": "r", "att": 1, "ok": True, "v": Payload(b"x")}]), 61.0)
        assert [d["id"] for d in delivered(out)] == ["r"]


def test_frees_come_out_of_the_tick_as_instructions() -> None:
    o = owner()
    out = o.handle(SubmitTasks(C1, [spec("a")]), 0.0)
    node = next(iter(dispatched(out)))
    o.handle(Completed(node, [{"id": "a", "ok": True, "size": 1 << 20}]), 1.0)  # held on ``node``
    o.handle(AddLocation("a", "n1" if node == "n2" else "n2"), 1.0)  # a copy elsewhere too
    assert frees(o.handle(OwnerTick(), 1.5)) == {}
    assert o.handle(Release(["a"]), 2.0) == []  # nothing waits for it any more
    out = o.handle(OwnerTick(), 2.5)
    assert frees(out) == {"n1": ["a"], "n2": ["a"]}
    assert frees(o.handle(OwnerTick(), 3.0)) == {}  # once


def test_a_completion_frees_the_inputs_it_was_the_last_to_need_at_once() -> None:
    """The input of a finished consumer goes out as ``Free`` with the ``Completed`` that made it unneeded, not a
    tick later: its node is already allocating the next task's result meanwhile (the DAG's peak memory)."""
    o = owner()
    node = next(iter(dispatched(o.handle(SubmitTasks(C1, [spec("a")]), 0.0))))
    o.handle(Completed(node, [{"id": "a", "ok": True, "size": 1 << 20}]), 1.0)  # a large result, held on ``node``
    placed = dispatched(o.handle(SubmitTasks(C1, [spec("b", ("a",))]), 1.0))
    # the client let go of it; ``b`` still needs it -- where ``b`` runs next to it, that node drops it when ``b``
    # succeeds (``Free`` with ``after``), with no round trip to this owner
    on = next(iter(placed))
    assert o.handle(Release(["a"]), 1.5) == ([Free(node, ["a"], after="b")] if on == node else [])
    assert frees(o.handle(OwnerTick(), 1.6)) == {}
    out = o.handle(Completed(on, [ok("b")]), 2.0)
    assert frees(out) == {node: ["a"]}
    assert frees(o.handle(OwnerTick(), 2.1)) == {}  # once


def test_every_event_stamps_the_owners_clock_for_what_it_dispatches() -> None:
    """A node coming up at t = 100 dispatches a waiting task with a timeout: its deadline counts from 100, not from
    the last time a method that took ``now`` was called (issue 16's stale clock)."""
    o = Owner("me", OwnerConfig(window_per_slot=1), rng=random.Random(0))
    o.handle(SubmitTasks(C1, [spec("t", timeout=5.0)]), 0.0)  # no node yet: it waits
    out = o.handle(NodeUp("n1", 1), 100.0)
    assert dispatched(out) == {"n1": ["t"]}
    assert o.handle(OwnerTick(), 104.0) == []  # not timed out: 4 s after its dispatch
    out = o.handle(OwnerTick(), 105.5)
    assert o.tasks["t"].state is TaskState.FAILED


def test_the_remaining_events_reach_their_handlers() -> None:
    o = owner()
    o.handle(SubmitTasks(C1, [spec("a"), spec("b"), spec("c")]), 0.0)
    o.handle(RegisterPut(C1, "p", ["n1"], 10), 0.0)
    assert o.tasks["p"].state is TaskState.DONE
    o.handle(Keep(C1, ["p"]), 0.0)
    assert o.handle(ClientHeard(C1), 0.5) == []
    src = o.tasks["a"].node
    assert src is not None
    dst = "n1" if src == "n2" else "n2"
    o.handle(TaskMoved("a", src, dst, 0), 1.0)
    assert o.tasks["a"].node == dst
    out = o.handle(Cancel(C1, ["c"]), 1.0)
    assert o.tasks["c"].state is TaskState.FAILED
    assert any(isinstance(a, Deliver) for a in out)
    out = o.handle(NodeDown(dst), 2.0)
    assert o.tasks["a"].node in (None, src)  # re-placed
    o.handle(ReleaseClient(C1), 3.0)
    assert all(t.released for t in o.tasks.values() if t.client == C1)


def _a_part_lost_on_the_only_node() -> tuple[Owner, list[OwnerAction]]:
    """A map task done on n1, the only node; its reader reports a part lost: what the owner does about it."""
    o = Owner("me", OwnerConfig(window_per_slot=4), rng=random.Random(0))
    o.handle(NodeUp("n1", 2), 0.0)
    o.handle(SubmitTasks(C1, [spec("m", parts=2)]), 0.0)
    o.handle(Completed("n1", [{"id": "m", "att": 0, "ok": True, "size": 20, "parts": 2}]), 0.1)
    o.handle(SubmitTasks(C1, [spec("r0", ("m#0",))]), 0.2)
    return o, o.handle(Completed("n1", [{"id": "r0", "att": 0, "ok": False, "lost": ["m#0"]}]), 0.3)


def test_the_free_of_a_lost_copy_goes_out_before_the_run_that_stores_it_again_there() -> None:
    """A reader reports a map output's part lost: its copies are freed and the map task recomputed -- on the same
    node, here the only one. The new run stores under the same ids; a FREE sent after its RUN (frees came last in
    a completion's actions) reached the node while the new run was storing, took the new copy, and with its
    ``done`` lost on the way nothing was left to restate it: the owner waited for ever (fault seed 147 with a
    shuffle and ``gray``, one run in twelve)."""
    _, out = _a_part_lost_on_the_only_node()
    order = [(type(a).__name__, a.node) for a in out if isinstance(a, (Free, Dispatch))]
    assert order == [("Free", "n1"), ("Dispatch", "n1")]
    assert frees(out) == {"n1": ["m#0", "m#1"]}
    assert dispatched(out) == {"n1": ["m"]}


def test_a_reconcile_runs_again_the_recompute_a_waiting_task_waits_on() -> None:
    """A reducer reports its input lost; the map task is recomputed and the reducer waits for it. The recompute's
    RUN (or DONE) is lost on its way: nobody will ever report it. The client, with no result for a long while,
    reconciles the reducer (``rc``) -- it does not know of the recompute, and never names it. The reducer is
    waiting, not in flight: the run it waits on, the map task's, goes again as a new attempt (fault seed 147 with
    a shuffle and ``gray``: the reducer waited for ever)."""
    o, out = _a_part_lost_on_the_only_node()
    assert dispatched(out) == {"n1": ["m"]}  # its RUN is lost: no result ever comes
    assert o.tasks["r0"].state is TaskState.WAITING
    out = o.handle(SubmitTasks(C1, [{**spec("r0", ("m#0",)), "rc": True}]), 60.0)
    assert dispatched(out) == {"n1": ["m"]}
    assert o.tasks["m"].attempt == 2
    assert o.counters["reconciled"] == 1
    out = o.handle(Completed("n1", [{"id": "m", "att": 2, "ok": True, "size": 20, "parts": 2}]), 60.1)
    assert dispatched(out) == {"n1": ["r0"]}


def test_a_task_taken_over_by_another_client_identity_runs_at_that_identitys_epoch() -> None:
    """Two shards of a spread client on one node: the second (failed over here, epoch 1) and the first (epoch 0)
    both submit a task (an input of both). Taken over by the first, the task ran as the first's identity at the
    second's epoch: executors then fenced the first's own runs of epoch 0, and their FENCED made this owner drop
    all of the first shard's work (fault seed 808 with ``--gray --shuffle``)."""
    o = Owner("me", OwnerConfig(window_per_slot=1), rng=random.Random(0))
    o.handle(SubmitTasks(C2, [spec("a")], 1), 0.0)
    o.handle(SubmitTasks(C1, [spec("a")], 0), 0.1)
    out = o.handle(NodeUp("n1", 1), 0.2)
    [run] = [t for a in out if isinstance(a, Dispatch) for t in a.tasks]
    assert (run["c"], run["ep"]) == (C1.decode("latin-1"), 0)
