"""The executing node's core (``meshaios.tasks.execcore``) as a state machine: events in, instructions out.

These are the rules that ``Node`` and the simulator both run: the fence (duplicate, adopted, fenced RUNs),
inputs, the work queue and prefetch, recall, aborts in every state a task can be in here, work stealing's hand
over, and the ``queued`` counter that a node gossips.
"""

from __future__ import annotations

import json
from typing import Any, cast

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from meshaios.devices.registry import default_registry
from meshaios.sched.loadview import LoadView
from meshaios.sched.model import RuntimeModel
from meshaios.sched.stealing import TState, _Request
from meshaios.tasks.execcore import (
    INLINE_ABORT_S,
    INLINE_DEMOTE_S,
    INLINE_MAX_BYTES,
    INLINE_MAX_S,
    INLINE_STREAK,
    INLINE_USER_STREAK,
    PREFETCH_STUCK,
    RESEND_WINDOW,
    AbortRuns,
    DropAfter,
    DropResult,
    ExecCore,
    FetchInputs,
    Finished,
    InlineOverran,
    InputsMissing,
    InputsReady,
    Instruction,
    PeerDown,
    PeerUp,
    Recalled,
    RecallFromWorkers,
    ReleaseInputs,
    RunTasks,
    SendAbort,
    SendFenced,
    SendMoved,
    SendResult,
    SendSteal,
    Settle,
    StartOnWorker,
    StealMessage,
    TerminateProcessPool,
    Tick,
)
from meshaios.tasks.functions import encode_function
from meshaios.wire.messages import RunTask
from meshaios.wire.payload import Payload

# meshaios's own kernels by name, as a client encodes them: the only functions that may run inline (library_kernel)
FN = encode_function(default_registry().get("meshaios.add"), allow_pickle=False)
FN_B = encode_function(default_registry().get("meshaios.multiply"), allow_pickle=False)
USER_FN = encode_function(json.dumps, allow_pickle=False)  # by reference: a user's function


def core(slots: int = 2, steal: bool = False, gpus: tuple[str, ...] = ()) -> ExecCore:
    return ExecCore("me", {"cpu": slots}, model=RuntimeModel(), view=LoadView(), steal=steal, gpus=gpus)


def task(tid: str, att: int = 0, *, fn: Payload = FN, deps: dict[str, Any] | None = None, **extra: Any) -> RunTask:
    return cast(RunTask, {"id": tid, "att": att, "fn": fn, "args": Payload(b"x"), "deps": deps or {}, "pure": False,
                          **extra})


def of(kind: type, out: list[Instruction]) -> list[Any]:
    return [i for i in out if isinstance(i, kind)]


def started(out: list[Instruction]) -> list[tuple[str, int]]:
    return [i.key for i in of(StartOnWorker, out)]


def ok(key: tuple[str, int], dt: float = 0.001, **extra: Any) -> dict[str, Any]:
    return {"id": key[0], "att": key[1], "ok": True, "v": None, "dt": dt, **extra}


def finish(c: ExecCore, out: list[Instruction], now: float = 1.0, dt: float = 0.001) -> list[Instruction]:
    """Every start in ``out`` finishes."""
    return c.handle(Finished([(s.owner, s.key, ok(s.key, dt)) for s in of(StartOnWorker, out)]), now)


def make_tiny(c: ExecCore, fn: Payload = FN) -> None:
    """Measure ``fn``'s kernel as tiny here: from now on its tasks are prefetched."""
    out = c.handle(RunTasks("o", [task("warm", fn=fn)]), 0.0)
    finish(c, out, 0.0)
    assert c.stats.queued == 0


# ---- RUN: accept, duplicate, adopt, fenced -------------------------------------------------------------------


def test_a_run_fills_the_free_slots_and_queues_the_rest() -> None:
    c = core(slots=2)
    out = c.handle(RunTasks("o", [task("a"), task("b"), task("c")]), 0.0)
    assert started(out) == [("a", 0), ("b", 0)]
    assert all(not s.prefetch and s.owner == "o" and s.device == "cpu" for s in of(StartOnWorker, out))
    assert c.stats.queued == 3
    assert c.queue.n_queued() == 1
    out = c.handle(Finished([("o", ("a", 0), ok(("a", 0), dt=0.5))]), 1.0)
    assert [r.result["id"] for r in of(SendResult, out)] == ["a"]
    assert started(out) == [("c", 0)]
    assert c.stats.queued == 2
    assert c.stats.finished == 1


def test_a_run_delivered_twice_runs_once() -> None:
    c = core(slots=1)
    first = c.handle(RunTasks("o", [task("a"), task("b")]), 0.0)
    again = c.handle(RunTasks("o", [task("a"), task("b")]), 0.1)
    assert started(first) == [("a", 0)]
    assert started(again) == []
    assert c.stats.queued == 2
    assert c.fence.counters["duplicates"] == 2


def test_a_newer_owner_of_the_client_adopts_the_run_and_gets_its_result() -> None:
    c = core(slots=1)
    c.handle(RunTasks("old", [task("a", c="cl", ep=0), task("b", c="cl", ep=0)]), 0.0)
    out = c.handle(RunTasks("new", [task("a", c="cl", ep=1), task("b", c="cl", ep=1)]), 0.1)
    assert started(out) == []
    assert c.stats.queued == 2
    qt = c.queue.get(("b", 0))
    assert qt is not None
    assert qt.owner == "new"
    out = c.handle(Finished([("old", ("a", 0), ok(("a", 0)))]), 0.2)  # started for "old"
    assert [(r.owner, r.result["id"]) for r in of(SendResult, out)] == [("new", "a")]


def test_a_run_here_for_another_clients_owner_is_placed_again_by_the_later_owner() -> None:
    """Two shards of a spread client (two client identities, two owners) both own a task -- an input of both,
    carried from one to the other done -- and recompute it at once, under the same attempt: adopted, the run
    reported to the later owner only and the first waited for ever (fault seed 266 with a shuffle: two reducers
    hung). The later owner is told it moved to no node it knows, so it places it again as a new attempt."""
    c = core(slots=1)
    c.handle(RunTasks("A", [task("m", 1, c="cl.1", ep=0)]), 0.0)
    out = c.handle(RunTasks("B", [task("m", 1, c="cl.2", ep=0), task("n", 0, c="cl.2", ep=0)]), 0.1)
    assert started(out) == []
    assert of(SendMoved, out) == [SendMoved("B", [["m", 1, ""]])]
    assert c.stats.queued == 2  # m for A, n for B
    out = c.handle(Finished([("A", ("m", 1), ok(("m", 1)))]), 0.2)
    assert [(r.owner, r.result["id"]) for r in of(SendResult, out)] == [("A", "m")]
    assert c.fence.counters["taken"] == 1


def test_a_run_from_an_owner_its_client_has_left_is_refused_and_that_owner_told() -> None:
    c = core()
    c.handle(RunTasks("new", [task("a", c="cl", ep=2)]), 0.0)
    out = c.handle(RunTasks("old", [task("b", c="cl", ep=1), task("c", c="cl", ep=1)]), 0.1)
    assert started(out) == []
    assert c.stats.queued == 1
    assert of(SendFenced, out) == [SendFenced("old", "cl", 2)]  # once per client, not per task


def test_gpu_tasks_wait_in_the_queue_for_a_gpu_slot_one_per_device_and_are_counted() -> None:
    c = core(slots=1, gpus=("gpu0", "gpu1"))
    assert c.queue.slots == {"cpu": 1, "gpu": 2}
    out = c.handle(RunTasks("o", [task(f"g{i}", resources={"gpu": 1}) for i in range(3)]), 0.0)
    assert [(s.key[0], s.device) for s in of(StartOnWorker, out)] == [("g0", "gpu0"), ("g1", "gpu1")]
    assert c.stats.queued == 3
    assert c.queue.n_queued("gpu") == 1  # g2 waits for a GPU slot, in the queue (stealable, abortable)
    out = c.handle(Finished([("o", ("g1", 0), ok(("g1", 0), dev="gpu"))]), 1.0)
    assert [(s.key[0], s.device) for s in of(StartOnWorker, out)] == [("g2", "gpu1")]  # the GPU that freed
    finish(c, [*out, StartOnWorker(("g0", 0), task("g0"), "o", "gpu0")])
    assert c.stats.queued == 0
    assert c.runtime == {c.kernel(FN) + "@gpu": 0.001}  # measured apart from the kernel's CPU runs


def test_gpu_slots_per_device_and_the_device_that_holds_the_inputs_is_preferred() -> None:
    held = {"x": "gpu1"}
    c = ExecCore("me", {"cpu": 1}, model=RuntimeModel(), view=LoadView(), steal=False, gpus=("gpu0", "gpu1"),
                 gpu_slots=2, gpu_affinity=lambda spec: next((held[d] for d in spec["deps"] if d in held), None))
    assert c.queue.slots["gpu"] == 4
    tasks = [task(f"g{i}", resources={"gpu": 1}, deps={"x": None}) for i in range(3)]
    out = c.handle(RunTasks("o", tasks), 0.0)
    for i in range(3):
        out += c.handle(InputsReady((f"g{i}", 0)), 0.1)
    # two slots on the GPU that keeps "x", then the other GPU
    assert [s.device for s in of(StartOnWorker, out)] == ["gpu1", "gpu1", "gpu0"]


def test_a_gpu_task_on_a_node_without_a_gpu_runs_on_its_cpus() -> None:
    c = core(slots=1)
    out = c.handle(RunTasks("o", [task("g", resources={"gpu": 1}), task("p", device="gpu")]), 0.0)
    assert [(s.key[0], s.device) for s in of(StartOnWorker, out)] == [("g", "cpu")]
    assert c.queue.n_queued("cpu") == 1


def test_the_owners_device_pick_in_the_run_is_what_runs() -> None:
    c = core(slots=2, gpus=("gpu0",))
    out = c.handle(RunTasks("o", [task("on-gpu", device="gpu"), task("on-cpu", device="cpu"), task("plain")]), 0.0)
    assert sorted((s.key[0], s.device) for s in of(StartOnWorker, out)) == [
        ("on-cpu", "cpu"), ("on-gpu", "gpu0"), ("plain", "cpu")]


def test_a_queued_gpu_task_is_aborted_and_never_starts() -> None:
    c = core(slots=1, gpus=("gpu0",))
    out = c.handle(RunTasks("o", [task("g0", resources={"gpu": 1}), task("g1", resources={"gpu": 1})]), 0.0)
    assert started(out) == [("g0", 0)]
    c.handle(AbortRuns("o", [["g1", 0], ["g0", 0]]), 0.1)
    assert c.queue.n_queued("gpu") == 0
    assert c.stats.queued == 1  # g0 runs on: its result will be dropped
    out = c.handle(Finished([("o", ("g0", 0), ok(("g0", 0), dev="gpu"))]), 0.2)
    assert of(SendResult, out) == []
    assert started(out) == []
    assert c.stats.queued == 0
    out = c.handle(RunTasks("o", [task("g2", resources={"gpu": 1})]), 0.3)
    assert [s.device for s in of(StartOnWorker, out)] == ["gpu0"]  # the slot was given back


def _gpu_victim() -> ExecCore:
    victim = core(slots=1, steal=True, gpus=("gpu0",))
    victim.handle(RunTasks("o", [task(f"g{i}", resources={"gpu": 1}) for i in range(6)]), 0.0)
    assert victim.queue.n_queued("gpu") == 5
    return victim


def test_a_cpu_only_thief_is_never_offered_a_task_that_needs_a_gpu() -> None:
    victim = _gpu_victim()
    req = {"k": "steal_req", "rid": 1, "free": {"cpu": 8}, "speed": {"cpu": 4.0}}
    offer = of(SendSteal, victim.handle(StealMessage("cpu-thief", req), 1.0))[0].msg
    assert offer == {"k": "steal_offer", "rid": 1, "tasks": []}
    # and a CPU-only node does not accept one even if a (faulty) victim offered it
    thief = core(slots=4, steal=True)
    thief.steal._request = _Request("v", 1, 10.0)
    bogus = {"k": "steal_offer", "rid": 1, "tasks": [["g1", 0, "o", "k", "gpu", ["gpu"], 1, 1.0, []]]}
    accepts = [m.msg for m in of(SendSteal, thief.handle(StealMessage("v", bogus), 1.0))]
    assert accepts == [{"k": "steal_accept", "rid": 1, "ids": []}]


def test_a_gpu_thief_steals_queued_gpu_tasks_and_runs_them_on_its_gpu() -> None:
    victim = _gpu_victim()
    req = {"k": "steal_req", "rid": 1, "free": {"gpu": 1}, "speed": {"cpu": 1.0, "gpu": 1.0}}
    offer = of(SendSteal, victim.handle(StealMessage("gpu-thief", req), 1.0))[0].msg
    assert [h[4] for h in offer["tasks"]] == ["gpu"]  # one per free slot of the thief, for its GPU
    accept = {"k": "steal_accept", "rid": 1, "ids": [h[:2] for h in offer["tasks"]]}
    out = victim.handle(StealMessage("gpu-thief", accept), 1.01)
    given = next(i.msg for i in of(SendSteal, out) if i.msg["k"] == "steal_commit")["tasks"]
    assert victim.stats.queued == 5
    thief = core(slots=2, steal=True, gpus=("fakegpu:0",))
    out = thief.handle(StealMessage("victim", {"k": "steal_commit", "rid": 1, "tasks": given}), 1.02)
    assert [(s.key, s.device) for s in of(StartOnWorker, out)] == [((given[0][0], 0), "fakegpu:0")]


def test_a_task_placed_on_a_gpu_by_choice_may_be_stolen_by_a_cpu_thief() -> None:
    victim = core(slots=1, steal=True, gpus=("gpu0",))
    victim.handle(RunTasks("o", [task(f"p{i}", device="gpu") for i in range(6)]), 0.0)
    req = {"k": "steal_req", "rid": 1, "free": {"cpu": 4}, "speed": {"cpu": 1.0}}
    offer = of(SendSteal, victim.handle(StealMessage("cpu-thief", req), 1.0))[0].msg
    assert offer["tasks"]
    assert {h[4] for h in offer["tasks"]} == {"cpu"}


# ---- inputs -------------------------------------------------------------------------------------------------


def test_remote_inputs_are_fetched_then_the_task_is_queued_pinned_and_its_inputs_released_after() -> None:
    c = core(slots=1)
    busy = c.handle(RunTasks("o", [task("busy")]), 0.0)
    deps = {"x": {"loc": ["h"], "size": 10}, "y": None, "z": Payload(b"inline")}
    out = c.handle(RunTasks("o", [task("a", deps=deps), task("b", deps={"x": {"loc": ["h"], "size": 10}})]), 0.0)
    fetches = of(FetchInputs, out)
    assert [f.key for f in fetches] == [("a", 0), ("b", 0)]
    assert fetches[0].remote == {"x": (["h"], 10), "y": ([], 0)}
    assert c.input_refs == {"x": 2, "y": 1}
    assert c.stats.queued == 3
    assert c.handle(InputsReady(("a", 0)), 0.1) == []  # queued behind "busy"
    qt = c.queue.get(("a", 0))
    assert qt is not None
    assert qt.pinned
    out = finish(c, busy)
    assert started(out) == [("a", 0)]
    out = finish(c, out)
    assert of(ReleaseInputs, out) == [ReleaseInputs(["y"])]  # "x" is still needed by "b"
    out = c.handle(InputsMissing(("b", 0), ["x"]), 0.3)
    assert [r.result for r in of(SendResult, out)] == [{"id": "b", "att": 0, "ok": False, "lost": ["x"]}]
    assert of(ReleaseInputs, out) == [ReleaseInputs(["x"])]
    assert c.input_refs == {}
    assert c.stats.queued == 0


def test_the_last_user_of_an_input_drops_it_when_it_succeeds_before_the_next_task_starts() -> None:
    """Issue 17 (performance.md section 15): a RUN's ``fr`` names inputs the task is the last user of; when it
    succeeds they go from the store (``DropResult``) before the next queued task starts and before its result is
    sent; not when it fails, nor one that another task here still reads."""
    c = core(slots=1)
    here = {"loc": ["me"], "size": 100 << 20}
    tasks = [task("m", deps={"s": here, "x": here}, fr=["s", "x"]), task("n", deps={"x": here}),
             task("q", deps={"x": here}, fr=["x"])]
    fetches = of(FetchInputs, c.handle(RunTasks("o", tasks), 0.0))
    out = [i for f in fetches for i in c.handle(InputsReady(f.key, local=True), 0.1)]
    assert started(out) == [("m", 0)]
    out = finish(c, out, dt=0.5)
    assert of(DropResult, out) == [DropResult("s")]  # x: n and q still read it
    kinds = [type(i) for i in out]
    assert kinds.index(DropResult) < kinds.index(SendResult) < kinds.index(StartOnWorker)
    assert started(out) == [("n", 0)]
    out = finish(c, out, dt=0.5)
    assert of(DropResult, out) == []
    assert started(out) == [("q", 0)]
    out = c.handle(Finished([("o", ("q", 0), {"id": "q", "att": 0, "ok": False, "err": {}})]), 2.0)
    assert of(DropResult, out) == []  # failed: it may run again
    assert c.counters["inputs_dropped_at_finish"] == 1


def test_a_free_after_a_running_reader_drops_the_input_when_that_reader_succeeds() -> None:
    c = core(slots=1)
    here = {"loc": ["me"], "size": 100 << 20}
    fetches = of(FetchInputs, c.handle(RunTasks("o", [task("m", deps={"s": here}), task("n", deps={"t": here})]),
                                       0.0))
    out = [i for f in fetches for i in c.handle(InputsReady(f.key, local=True), 0.1)]
    assert started(out) == [("m", 0)]
    assert c.handle(DropAfter("m", ["s"]), 0.2) == []
    assert c.handle(DropAfter("gone", ["t"]), 0.2) == []  # not here: ignored (its owner frees it as usual)
    out = finish(c, out, dt=0.5)
    assert of(DropResult, out) == [DropResult("s")]
    assert c.held()["drop after"] == 0


def test_a_task_whose_stored_inputs_were_here_all_along_can_be_stolen_and_its_thief_fetches_them() -> None:
    """A map task queued next to its input (nothing fetched for it) is not pinned: an idle node may take it, pays
    for moving the input (the steal gate prices ``nbytes``, which counts it), fetches it before running it, and
    the victim lets go of its reference. One whose inputs were fetched here stays pinned."""
    size = 25 << 20
    victim = core(slots=1, steal=True)
    specs = [task(f"m{i}", fn=USER_FN, deps={f"x{i}": {"loc": ["me"], "size": size}}) for i in range(6)]
    out = victim.handle(RunTasks("o", specs), 0.0)
    assert len(of(FetchInputs, out)) == 6
    for i in range(6):
        victim.handle(InputsReady((f"m{i}", 0), local=True), 0.0)
    fetched = task("f", fn=USER_FN, deps={"y": {"loc": ["h"], "size": size}})
    victim.handle(RunTasks("o", [fetched]), 0.0)
    victim.handle(InputsReady(("f", 0)), 0.0)  # fetched from "h": pinned here
    queued = [victim.queue.get((f"m{i}", 0)) for i in range(1, 6)]
    assert all(qt is not None and not qt.pinned and qt.nbytes >= size for qt in queued)
    pinned = victim.queue.get(("f", 0))
    assert pinned is not None
    assert pinned.pinned

    req = {"k": "steal_req", "rid": 1, "free": {"cpu": 1}, "speed": {"cpu": 1.0}, "bw": 2e9}
    offer = of(SendSteal, victim.handle(StealMessage("thief", req), 1.0))[0].msg
    offered = [h[0] for h in offer["tasks"]]
    assert offered
    assert "f" not in offered  # not the pinned one
    assert "m0" not in offered  # nor the running one
    accept = {"k": "steal_accept", "rid": 1, "ids": [h[:2] for h in offer["tasks"]]}
    out = victim.handle(StealMessage("thief", accept), 1.01)
    given = next(i.msg for i in of(SendSteal, out) if i.msg["k"] == "steal_commit")["tasks"]
    assert sorted(d for r in of(ReleaseInputs, out) for d in r.ids) == sorted(f"x{t[0][1:]}" for t in given)

    thief = core(slots=1, steal=True)
    out = thief.handle(StealMessage("victim", {"k": "steal_commit", "rid": 1, "tasks": given}), 1.02)
    assert started(out) == []  # not before its input is here
    fetch = of(FetchInputs, out)
    assert [f.key for f in fetch] == [(given[0][0], 0)]
    assert fetch[0].remote == {f"x{given[0][0][1:]}": (["me"], size)}
    out = thief.handle(InputsReady((given[0][0], 0)), 1.1)
    assert started(out) == [(given[0][0], 0)]
    assert thief.stats.queued == 1


# ---- prefetch and recall ------------------------------------------------------------------------------------


def test_tiny_tasks_are_prefetched_past_the_slots_and_a_kernel_that_turns_out_long_is_recalled() -> None:
    c = core(slots=2)
    make_tiny(c)
    out = c.handle(RunTasks("o", [task(f"t{i}") for i in range(10)]), 1.0)
    starts = of(StartOnWorker, out)
    assert len(starts) == 10  # 2 in the slots, the rest prefetched (50 ms of 1 ms tasks per slot)
    assert [s.prefetch for s in starts] == [False, False] + [True] * 8
    assert c.prefetched == 8
    assert c.queue.n_queued() == 0
    # t0 ran 0.2 s: the kernel is not tiny after all; what no worker has started comes back
    out = c.handle(Finished([("o", ("t0", 0), ok(("t0", 0), dt=0.2))]), 1.2)
    recall = of(RecallFromWorkers, out)
    assert len(recall) == 1
    assert not recall[0].stuck
    assert sorted(recall[0].keys) == sorted(s.key for s in starts[2:])
    back = recall[0].keys[2:]  # the workers had started two of them
    out = c.handle(Recalled(back), 1.2)
    assert c.counters["prefetch_recalled"] == 6
    assert c.prefetched == 2
    assert started(out) == []  # t1 and the two begun hold both slots; nothing is prefetched of a long kernel
    assert [t.key for t in c.queue.queued()] == back
    assert all(t.state is TState.QUEUED for t in c.queue.queued())
    assert c.stats.queued == 9
    out = c.handle(Finished([("o", ("t1", 0), ok(("t1", 0), dt=0.2))]), 1.4)
    assert started(out) == []  # t1's slot: still two begun
    out = c.handle(Finished([("o", k, ok(k, dt=0.2)) for k in recall[0].keys[:2]]), 1.6)
    assert started(out) == back[:2]  # the slots free: the ones put back start first, one per slot


def test_a_stuck_prefetch_is_taken_back_and_prefetching_pauses_until_a_worker_finishes() -> None:
    c = core(slots=1)
    make_tiny(c)
    out = c.handle(RunTasks("o", [task(f"t{i}") for i in range(4)]), 1.0)
    assert [s.prefetch for s in of(StartOnWorker, out)] == [False, True, True, True]
    assert of(RecallFromWorkers, c.handle(Tick(), 1.0 + PREFETCH_STUCK / 2)) == []
    out = c.handle(Tick(), 1.0 + PREFETCH_STUCK * 2)
    recall = of(RecallFromWorkers, out)
    assert recall
    assert recall[0].stuck
    out = c.handle(Recalled(recall[0].keys, stuck=True), 2.1)
    assert started(out) == []
    assert c.queue.n_queued() == 3
    out = c.handle(Finished([("o", ("t0", 0), ok(("t0", 0)))]), 2.2)
    assert started(out) == [("t1", 0), ("t2", 0), ("t3", 0)]  # a worker is free: prefetching resumes


def test_a_recall_answered_empty_changes_nothing() -> None:
    c = core(slots=1)
    make_tiny(c)
    c.handle(RunTasks("o", [task("t0"), task("t1")]), 1.0)
    assert c.handle(Recalled([], stuck=True), 2.0) == []
    assert c.prefetched == 1
    assert c.stats.queued == 2


# ---- aborts, in every state ---------------------------------------------------------------------------------


def test_abort_of_a_queued_task_removes_it_and_a_late_run_of_it_is_dropped() -> None:
    c = core(slots=1)
    c.handle(RunTasks("o", [task("a"), task("b")]), 0.0)
    out = c.handle(AbortRuns("o", [["b", 0]]), 0.1)
    assert out == []
    assert c.stats.queued == 1
    assert ("b", 0) not in c.queue
    assert started(c.handle(RunTasks("o", [task("b")]), 0.2)) == []  # late RUN of the aborted attempt
    assert c.stats.queued == 1
    assert c.counters["aborted"] == 1


def test_abort_from_another_owner_does_not_touch_the_task() -> None:
    c = core(slots=1)
    c.handle(RunTasks("o", [task("a"), task("b")]), 0.0)
    c.handle(AbortRuns("someone", [["b", 0]]), 0.1)
    assert ("b", 0) in c.queue
    assert c.stats.queued == 2


def test_abort_of_a_task_waiting_for_inputs_forgets_it_when_they_arrive() -> None:
    c = core()
    c.handle(RunTasks("o", [task("a", deps={"x": {"loc": ["h"], "size": 1}})]), 0.0)
    assert c.handle(AbortRuns("o", [["a", 0]]), 0.1) == []
    out = c.handle(InputsReady(("a", 0)), 0.2)
    assert out == [ReleaseInputs(["x"])]
    assert c.stats.queued == 0
    assert c.input_refs == {}
    assert c.fence.done(("a", 0)) is None


def test_abort_of_a_prefetched_task_takes_it_back_or_drops_its_result() -> None:
    c = core(slots=1)
    make_tiny(c)
    c.handle(RunTasks("o", [task("t0"), task("t1"), task("t2")]), 1.0)
    out = c.handle(AbortRuns("o", [["t1", 0], ["t2", 0]]), 1.1)
    assert of(RecallFromWorkers, out) == [RecallFromWorkers([("t1", 0), ("t2", 0)])]
    # t1 had not started: it never will; t2 had: it runs, and its result is dropped
    assert c.handle(Recalled([("t1", 0)]), 1.1) == []
    assert c.stats.queued == 2
    assert c.counters.get("prefetch_recalled", 0) == 0
    out = c.handle(Finished([("o", ("t2", 0), ok(("t2", 0), parts=2))]), 1.2)
    assert of(SendResult, out) == []
    assert of(DropResult, out) == [DropResult("t2", 2)]
    assert c.counters["aborted_results_dropped"] == 1
    assert c.stats.queued == 1


def test_abort_of_a_running_task_drops_its_result_and_releases_its_inputs() -> None:
    c = core(slots=1)
    c.handle(RunTasks("o", [task("a", deps={"x": {"loc": ["h"], "size": 1}})]), 0.0)
    out = c.handle(InputsReady(("a", 0)), 0.1)
    assert started(out) == [("a", 0)]
    assert c.handle(AbortRuns("o", [["a", 0]]), 0.2) == []  # running on a thread: nothing to do now
    out = c.handle(Finished([("o", ("a", 0), ok(("a", 0)))]), 0.3)
    assert of(SendResult, out) == []
    assert of(ReleaseInputs, out) == [ReleaseInputs(["x"])]
    assert of(DropResult, out) == [DropResult("a", 0)]
    assert c.stats.queued == 0
    assert c.stats.finished == 0


def test_abort_of_a_pure_task_in_the_process_pool_terminates_the_pool() -> None:
    c = core(slots=2)
    c.handle(RunTasks("o", [task("p", pure=True), task("q", pure=True)]), 0.0)
    out = c.handle(AbortRuns("o", [["p", 0]]), 0.1)
    assert of(TerminateProcessPool, out) == [TerminateProcessPool()]
    assert c.was_aborted(("p", 0), "o")
    assert not c.was_aborted(("q", 0), "o")


def test_a_failed_result_counts_as_failed() -> None:
    c = core()
    out = c.handle(RunTasks("o", [task("a")]), 0.0)
    err = {"id": "a", "att": 0, "ok": False, "err": {"type": "ValueError"}}
    out = c.handle(Finished([("o", ("a", 0), err)]), 0.1)
    assert of(SendResult, out) == [SendResult("o", err)]
    assert (c.stats.finished, c.stats.failed, c.stats.queued) == (1, 1, 0)


def test_results_sent_to_an_owner_declared_dead_go_again_when_it_comes_back() -> None:
    """Regression (found by tests/sim/test_chaos.py): declaring a peer dead closes the connection to it, losing the
    DONEs still queued there, and nothing is sent to a dead peer. A paused owner that resumes and refutes before its
    client fails over then waited for those results until the client's 60 s reconcile; now the executor sends them
    again when it is back."""
    c = core(slots=2)
    out = c.handle(RunTasks("o", [task("a"), task("b"), task("c")]), 0.0)
    done = c.handle(Finished([("o", ("a", 0), ok(("a", 0)))]), 1.0)  # queued when "o" froze: lost on forget
    assert [r.result["id"] for r in of(SendResult, done)] == ["a"]
    assert c.handle(PeerUp("o"), 1.5) == []  # never declared dead: nothing to send again
    c.handle(PeerDown("o"), 3.0)
    c.handle(Finished([("o", ("b", 0), ok(("b", 0)))]), 4.0)  # not sent: the shell sends nothing to a dead peer
    c.handle(PeerDown("other"), 4.5)
    again = c.handle(PeerUp("o"), 5.0)
    assert [(i.owner, i.result["id"]) for i in of(SendResult, again)] == [("o", "a"), ("o", "b")]
    assert c.counters["results_resent"] == 2
    assert c.handle(PeerUp("o"), 5.5) == []  # once per return
    c.handle(PeerDown("o"), 6.0)
    assert [i.result["id"] for i in of(SendResult, c.handle(PeerUp("o"), 6.0 + RESEND_WINDOW - 2.0))] == ["b"]
    c.handle(PeerDown("o"), 100.0)
    assert c.handle(PeerUp("o"), 101.0) == []  # older than RESEND_WINDOW: forgotten
    assert started(out) == [("a", 0), ("b", 0)]


def test_results_for_this_nodes_own_owner_are_not_remembered() -> None:
    c = core(slots=1)
    c.handle(RunTasks("me", [task("a")]), 0.0)
    c.handle(Finished([("me", ("a", 0), ok(("a", 0)))]), 1.0)
    c.handle(PeerDown("me"), 2.0)
    assert c.handle(PeerUp("me"), 3.0) == []


# ---- work stealing ------------------------------------------------------------------------------------------


def _steal(victim: ExecCore, thief: str = "thief", rid: int = 1) -> tuple[list[Any], list[Instruction]]:
    """One hand-over from ``victim`` to ``thief``: request, offer, accept; returns the commit and all output."""
    req = {"k": "steal_req", "rid": rid, "free": {"cpu": 4}, "speed": {"cpu": 1.0}}
    out = victim.handle(StealMessage(thief, req), 1.0)
    offer = of(SendSteal, out)[0].msg
    assert offer["k"] == "steal_offer"
    assert offer["tasks"]
    accept = {"k": "steal_accept", "rid": rid, "ids": [h[:2] for h in offer["tasks"]]}
    out = victim.handle(StealMessage(thief, accept), 1.01)
    commit = next(i.msg for i in of(SendSteal, out) if i.msg["k"] == "steal_commit")
    return commit["tasks"], out


def test_tasks_given_to_a_thief_leave_the_count_their_owner_is_told_and_an_abort_follows_them() -> None:
    victim = core(slots=1, steal=True)
    victim.handle(RunTasks("o", [task(f"t{i}") for i in range(6)]), 0.0)
    given, out = _steal(victim)
    moved = of(SendMoved, out)
    assert len(moved) == 1
    assert moved[0].owner == "o"
    assert sorted(m[0] for m in moved[0].moves) == sorted(g[0] for g in given)
    assert victim.stats.queued == 6 - len(given)
    tid = given[0][0]
    out = victim.handle(AbortRuns("o", [[tid, 0]]), 1.1)
    assert of(SendAbort, out) == [SendAbort("thief", "o", [(tid, 0)])]


def test_the_thief_runs_what_a_commit_carries_once_unless_its_abort_overtook_it() -> None:
    victim = core(slots=1, steal=True)
    victim.handle(RunTasks("o", [task(f"t{i}") for i in range(6)]), 0.0)
    given, _ = _steal(victim)
    thief = core(slots=4, steal=True)
    thief.handle(AbortRuns("o", [[given[0][0], 0]]), 1.0)  # the abort reached the thief before the commit
    commit = {"k": "steal_commit", "rid": 1, "tasks": given}
    out = thief.handle(StealMessage("me", commit), 1.02)
    assert sorted(started(out)) == sorted((g[0], 0) for g in given[1:])
    assert thief.stats.queued == len(given) - 1
    again = thief.handle(StealMessage("me", commit), 1.03)  # retransmitted: acknowledged, not run again
    assert started(again) == []
    assert thief.stats.queued == len(given) - 1


def test_abort_of_a_task_reserved_for_a_thief_removes_it_and_the_thiefs_accept_commits_nothing() -> None:
    victim = core(slots=1, steal=True)
    victim.handle(RunTasks("o", [task(f"t{i}") for i in range(6)]), 0.0)
    req = {"k": "steal_req", "rid": 1, "free": {"cpu": 4}, "speed": {"cpu": 1.0}}
    offer = of(SendSteal, victim.handle(StealMessage("thief", req), 1.0))[0].msg
    offered = [h[:2] for h in offer["tasks"]]
    assert offered
    victim.handle(AbortRuns("o", offered), 1.1)
    assert victim.stats.queued == 6 - len(offered)
    out = victim.handle(StealMessage("thief", {"k": "steal_accept", "rid": 1, "ids": offered}), 1.2)
    commits = [i.msg for i in of(SendSteal, out) if i.msg["k"] == "steal_commit"]
    assert all(not c["tasks"] for c in commits)
    assert of(SendMoved, out) == []


def test_a_dead_thiefs_reservations_are_runnable_again() -> None:
    victim = core(slots=1, steal=True)
    victim.handle(RunTasks("o", [task(f"t{i}") for i in range(6)]), 0.0)
    req = {"k": "steal_req", "rid": 1, "free": {"cpu": 4}, "speed": {"cpu": 1.0}}
    victim.handle(StealMessage("thief", req), 1.0)
    assert any(t.state is TState.OFFERED for t in victim.queue.queued())
    victim.handle(PeerDown("thief"), 1.1)
    assert all(t.state is TState.QUEUED for t in victim.queue.queued())
    assert victim.stats.queued == 6


# ---- the stateful test --------------------------------------------------------------------------------------

KEYS = [(f"t{i}", a) for i in range(6) for a in (0, 1)]
OWNERS = ["o1", "o2"]
GPUS = ("g0", "g1")


# ---- inline runs of tiny tasks (StartOnWorker.inline) ---------------------------------------------------------


def inline_core(slots: int = 1) -> ExecCore:
    return ExecCore("me", {"cpu": slots}, model=RuntimeModel(), view=LoadView(), steal=False, inline=True)


def run_one(c: ExecCore, t: RunTask, dt: float, now: float = 0.0, **result: Any) -> StartOnWorker:
    """``t`` arrives alone on an idle core, starts on the free slot and finishes after ``dt``: its start."""
    out = c.handle(RunTasks("o", [t]), now)
    (start,) = of(StartOnWorker, out)
    c.handle(Finished([("o", start.key, ok(start.key, dt, **result))], threads=not start.inline), now)
    return start


def test_a_function_runs_inline_after_enough_tiny_runs_in_a_row_and_only_with_inline_on() -> None:
    c = inline_core()
    starts = [run_one(c, task(f"t{i}"), dt=INLINE_MAX_S / 4) for i in range(INLINE_STREAK + 2)]
    assert [s.inline for s in starts] == [False] * INLINE_STREAK + [True, True]
    assert c.counters["ran_inline"] == 2
    assert c.stats.queued == 0
    assert c.stats.finished == INLINE_STREAK + 2
    off = core(slots=1)  # the simulator's default: never inline
    assert not any(run_one(off, task(f"u{i}"), dt=1e-6).inline for i in range(INLINE_STREAK + 2))


def test_bookkeeping_left_for_settle_decides_nothing_differently() -> None:
    """``Finished(settle_later=True)`` (the node's inline runs: the result leaves first) returns the results alone;
    the rest -- runtimes, the inline streak, the timeline, refilling the slot -- comes with ``Settle`` or ahead of
    the next event, whichever is first: the same instructions in the same order, and the same state, as at once."""
    now_c, later_c = inline_core(), inline_core()
    now_out: list[Instruction] = []
    later_out: list[Instruction] = []
    for c, out, later in ((now_c, now_out, False), (later_c, later_out, True)):
        out += c.handle(RunTasks("o", [task("a"), task("b")]), 0.0)  # one runs, one waits for the slot
        for key in (("a", 0), ("b", 0)):
            got = c.handle(Finished([("o", key, ok(key, 1e-5))], settle_later=later), 0.5)
            if later:
                assert got == [SendResult("o", ok(key, 1e-5))]  # the result alone: "b" starts with Settle
                assert c.owes
            out += got + c.handle(Settle(), 0.7)
        for i in range(1, INLINE_STREAK + 4):
            out += c.handle(RunTasks("o", [task(f"t{i}")]), float(i))
            start = of(StartOnWorker, out)[-1]
            out += c.handle(Finished([("o", start.key, ok(start.key, 1e-5))], threads=not start.inline,
                                     settle_later=later), i + 0.5)  # fmt: skip
            if not later or i % 2:  # else settled ahead of the next RUN
                out += c.handle(Settle(), i + 0.7)
        assert c.handle(Settle(), 99.0) == []  # nothing twice
    assert later_out == now_out
    assert any(s.inline for s in of(StartOnWorker, later_out))
    assert later_c.runtime == now_c.runtime
    assert later_c.timeline.recent() == now_c.timeline.recent()
    assert dict(later_c.counters) == dict(now_c.counters)
    assert later_c.held() == now_c.held()


def user_core() -> ExecCore:
    """A core whose executor can interrupt a user's function run inline (the node on its main thread)."""
    return ExecCore("me", {"cpu": 1}, model=RuntimeModel(), view=LoadView(), steal=False, inline=True,
                    inline_user=True)  # fmt: skip


def test_a_users_function_runs_inline_only_after_many_tiny_runs_on_the_workers_and_only_where_guarded() -> None:
    """It may be fast eight times and wait on a file, a lock or a socket the ninth: it needs INLINE_USER_STREAK tiny
    runs on the workers, and an executor that interrupts an inline run that overstays (``inline_user``)."""
    c = user_core()
    starts = [run_one(c, task(f"u{i}", fn=USER_FN), dt=1e-6) for i in range(INLINE_USER_STREAK + 2)]
    assert [s.inline for s in starts] == [False] * INLINE_USER_STREAK + [True, True]
    assert [s.user for s in starts[-2:]] == [True, True]
    assert run_one(c, task("k", fn=FN), dt=1e-6).inline is False  # a kernel still needs its own streak ...
    kernel = [run_one(c, task(f"k{i}", fn=FN), dt=1e-6) for i in range(INLINE_STREAK)][-1]
    assert kernel.inline  # ... and is not interrupted
    assert not kernel.user
    unguarded = inline_core()  # not on the main thread, say: a user's function never runs inline
    starts = [run_one(unguarded, task(f"u{i}", fn=USER_FN), dt=1e-6) for i in range(2 * INLINE_USER_STREAK)]
    assert not any(s.inline for s in starts)
    assert unguarded.counters["ran_inline"] == 0


def test_a_slow_run_of_a_users_function_restarts_its_count() -> None:
    """Its first call imports its module, a run is preempted or meets a full collection: it counts again from no
    tiny runs (only an interrupted inline run revokes it for good: the next test)."""
    c = user_core()
    run_one(c, task("first", fn=USER_FN), dt=0.5)
    for i in range(INLINE_USER_STREAK - 1):
        run_one(c, task(f"u{i}", fn=USER_FN), dt=1e-6)
    run_one(c, task("preempted", fn=USER_FN), dt=INLINE_DEMOTE_S)  # not yet qualified: the count starts again
    starts = [run_one(c, task(f"v{i}", fn=USER_FN), dt=1e-6) for i in range(INLINE_USER_STREAK + 1)]
    assert [s.inline for s in starts][-2:] == [False, True]
    assert run_one(c, task("collected", fn=USER_FN), dt=INLINE_ABORT_S).inline  # qualified; slow, not interrupted
    starts = [run_one(c, task(f"w{i}", fn=USER_FN), dt=1e-6) for i in range(INLINE_USER_STREAK + 1)]
    assert [s.inline for s in starts][-2:] == [False, True]
    assert c.counters["inline_revoked"] == 0


def test_an_interrupted_inline_run_revokes_its_function_and_the_task_is_still_counted_once() -> None:
    c = user_core()
    for i in range(INLINE_USER_STREAK):
        run_one(c, task(f"u{i}", fn=USER_FN), dt=1e-6)
    (start,) = of(StartOnWorker, c.handle(RunTasks("o", [task("stuck", fn=USER_FN)]), 1.0))
    assert start.inline
    assert start.user
    assert c.handle(InlineOverran(c.kernel(USER_FN)), 1.0) == []  # the executor gave it to a worker
    assert c.counters["inline_revoked"] == 1
    out = c.handle(Finished([("o", start.key, ok(start.key, 60.0))]), 61.0)  # the worker's run, 60 s later
    assert [r.result["id"] for r in of(SendResult, out)] == ["stuck"]
    assert c.stats.queued == 0
    assert not run_one(c, task("next", fn=USER_FN), dt=1e-6).inline


def test_a_users_function_runs_inline_only_as_the_one_task_here() -> None:
    c = user_core()
    for i in range(INLINE_USER_STREAK):
        run_one(c, task(f"u{i}", fn=USER_FN), dt=1e-6)
    out = c.handle(RunTasks("o", [task(f"b{i}", fn=USER_FN) for i in range(3)]), 1.0)
    assert not any(s.inline for s in of(StartOnWorker, out))  # others are waiting: the loop has work to do


def test_only_tiny_self_contained_tasks_on_a_free_cpu_slot_run_inline() -> None:
    c = inline_core(slots=1)
    for i in range(INLINE_STREAK):
        run_one(c, task(f"w{i}"), dt=1e-6)
    big = task("big")
    big["args"] = Payload(b"x" * (INLINE_MAX_BYTES + 1))
    for t in (task("pure", pure=True), task("rs", rs=True), task("res", resources={"memory": 1}),
              task("parts", parts=2), task("remote", deps={"d": {"loc": ["n2"], "size": 10}}), big):
        out = c.handle(RunTasks("o", [t]), 1.0)
        assert not any(s.inline for s in of(StartOnWorker, out)), t["id"]
        for f in of(FetchInputs, out):
            out = c.handle(InputsReady(f.key), 1.0)
            assert not any(s.inline for s in of(StartOnWorker, out)), t["id"]
        finish(c, out, 1.0, dt=1e-6)
    # a burst: the first takes the free slot and may run inline; those prefetched behind it go to the workers
    out = c.handle(RunTasks("o", [task(f"b{i}") for i in range(5)]), 2.0)
    assert [s.inline for s in of(StartOnWorker, out)] == [True, False, False, False, False]
    assert [s.prefetch for s in of(StartOnWorker, out)] == [False, True, True, True, True]


def test_a_slow_run_demotes_its_function_and_each_demotion_doubles_the_wait() -> None:
    c = inline_core()
    for i in range(INLINE_STREAK):
        run_one(c, task(f"w{i}"), dt=1e-6)
    assert run_one(c, task("slow"), dt=INLINE_DEMOTE_S).inline  # it qualified; it turned out slow
    assert c.counters["inline_demoted"] == 1
    # the next runs go to the workers: its measured time must come down under INLINE_MAX_S, then twice the streak
    starts = [run_one(c, task(f"x{i}"), dt=1e-6) for i in range(2 * INLINE_STREAK + 1)]
    assert [s.inline for s in starts] == [False] * (2 * INLINE_STREAK) + [True]
    run_one(c, task("slow2"), dt=0.5)
    starts = [run_one(c, task(f"y{i}"), dt=1e-6) for i in range(4 * INLINE_STREAK + 1)]
    assert [s.inline for s in starts] == [False] * (4 * INLINE_STREAK) + [True]
    assert c.counters["inline_demoted"] == 2
    # a run between the bounds (preempted, say) demotes nothing: the next go to the workers while the EWMA is high
    assert run_one(c, task("medium"), dt=INLINE_DEMOTE_S / 2).inline
    after = [run_one(c, task(f"m{i}"), dt=1e-6).inline for i in range(12)]
    assert after[0] is False
    assert after[-1] is True
    assert c.counters["inline_demoted"] == 2
    # a large result demotes like a slow run; a slow run before it qualified only restarts the count
    run_one(c, task("bigresult"), dt=1e-6, v=Payload(b"x" * (INLINE_MAX_BYTES + 1)))
    assert c.counters["inline_demoted"] == 3
    run_one(c, task("slow3"), dt=0.5)
    assert c.counters["inline_demoted"] == 3


def test_an_inline_run_is_accounted_like_any_other_and_can_be_aborted_before_it_starts() -> None:
    c = inline_core(slots=1)
    for i in range(INLINE_STREAK):
        run_one(c, task(f"w{i}"), dt=1e-6)
    c.handle(RunTasks("o", [task("long", fn=FN_B)]), 1.0)  # holds the slot (another function, not tiny)
    out = c.handle(RunTasks("o", [task("a"), task("b")]), 1.0)
    assert [(s.key, s.prefetch, s.inline) for s in of(StartOnWorker, out)] == [(("a", 0), True, False),
                                                                              (("b", 0), True, False)]
    (recall,) = of(RecallFromWorkers, c.handle(Tick(), 1.0 + PREFETCH_STUCK + 0.1))  # stuck behind "long"
    c.handle(Recalled(recall.keys, stuck=True), 1.7)  # back in the queue, not started
    assert c.handle(AbortRuns("o", [("a", 0)]), 1.8) == []
    out = c.handle(Finished([("o", ("long", 0), ok(("long", 0), 0.5))]), 2.0)
    (b,) = of(StartOnWorker, out)
    assert b.key == ("b", 0)
    assert b.inline
    out = c.handle(Finished([("o", b.key, ok(b.key, 1e-6))], threads=False), 2.0)
    assert [r.result["id"] for r in of(SendResult, out)] == ["b"]
    assert c.stats.queued == 0
    assert len(c.fence) == 0
    assert len(c.queue) == 0


class ExecCoreMachine(RuleBasedStateMachine):
    """Random RUNs (duplicated, re-owned, with inputs, some for a GPU), completions, aborts, recalls, ticks and lost
    inputs, with an executor that plays the worker pool honestly (a recall returns what no worker has started). No
    key is ever on a worker twice at once, no GPU runs more tasks than its slots, no attempt is reported twice,
    ``queued`` never goes negative, and once every worker and fetch has answered, ``queued`` is back to 0 and
    nothing is left behind."""

    def __init__(self) -> None:
        super().__init__()
        self.c = core(slots=2, gpus=GPUS)
        make_tiny(self.c)
        make_tiny(self.c, FN_B)
        self.now = 1.0
        self.on_worker: dict[tuple[str, int], StartOnWorker] = {}  # started, not finished
        self.worker_started: set[tuple[str, int]] = set()  # ... and begun by a worker (cannot be recalled)
        self.fetching: set[tuple[str, int]] = set()
        self.reported: set[tuple[str, int]] = set()
        self.recalls: list[RecallFromWorkers] = []

    def _do(self, out: list[Instruction]) -> None:
        for ins in out:
            if isinstance(ins, StartOnWorker):
                assert ins.key not in self.on_worker, f"{ins.key} started twice"
                self.on_worker[ins.key] = ins
            elif isinstance(ins, FetchInputs):
                assert ins.key not in self.fetching
                self.fetching.add(ins.key)
            elif isinstance(ins, SendResult):
                key = (ins.result["id"], ins.result["att"])
                assert key not in self.reported, f"{key} reported twice"
                self.reported.add(key)
            elif isinstance(ins, RecallFromWorkers):
                self.recalls.append(ins)
        while self.recalls:  # the pool answers a recall at once
            r = self.recalls.pop(0)
            back = [k for k in r.keys if k in self.on_worker and self.on_worker[k].prefetch
                    and k not in self.worker_started]
            for k in back:
                del self.on_worker[k]
            self._do(self.c.handle(Recalled(back, r.stuck), self.now))

    def _step(self) -> None:
        self.now += 0.01

    @rule(
        keys=st.lists(st.sampled_from(KEYS), min_size=1, max_size=4, unique=True),
        owner=st.sampled_from(OWNERS),
        inputs=st.booleans(),
        b=st.booleans(),
        gpu=st.sampled_from([{}, {"resources": {"gpu": 1}}, {"device": "gpu"}]),
    )
    def run(self, keys: list[tuple[str, int]], owner: str, inputs: bool, b: bool, gpu: dict[str, Any]) -> None:
        self._step()
        keys = [k for k in keys if k not in self.reported]  # a finished attempt is not sent again
        deps = {"x": {"loc": ["h"], "size": 8}} if inputs else {}
        tasks = [task(k[0], k[1], fn=FN_B if b else FN, deps=deps, c="cl", ep=OWNERS.index(owner), **gpu)
                 for k in keys]
        self._do(self.c.handle(RunTasks(owner, tasks), self.now))

    @precondition(lambda self: self.on_worker)
    @rule(data=st.data(), dt=st.sampled_from([0.001, 0.2]))
    def finish(self, data: st.DataObject, dt: float) -> None:
        self._step()
        keys = sorted(self.on_worker)
        done = data.draw(st.lists(st.sampled_from(keys), min_size=1, max_size=3, unique=True))
        batch = []
        for k in done:
            s = self.on_worker.pop(k)
            self.worker_started.discard(k)
            batch.append((s.owner, k, ok(k, dt)))
        self._do(self.c.handle(Finished(batch), self.now))

    @precondition(lambda self: self.on_worker)
    @rule(data=st.data())
    def worker_begins(self, data: st.DataObject) -> None:
        self.worker_started.add(data.draw(st.sampled_from(sorted(self.on_worker))))

    @precondition(lambda self: self.fetching)
    @rule(data=st.data(), lost=st.booleans())
    def inputs(self, data: st.DataObject, lost: bool) -> None:
        self._step()
        k = data.draw(st.sampled_from(sorted(self.fetching)))
        self.fetching.discard(k)
        self._do(self.c.handle(InputsMissing(k, ["x"]) if lost else InputsReady(k), self.now))

    @rule(keys=st.lists(st.sampled_from(KEYS), min_size=1, max_size=3, unique=True), owner=st.sampled_from(OWNERS))
    def abort(self, keys: list[tuple[str, int]], owner: str) -> None:
        self._step()
        self._do(self.c.handle(AbortRuns(owner, [list(k) for k in keys]), self.now))

    @rule(dt=st.sampled_from([0.01, PREFETCH_STUCK + 0.1]))
    def tick(self, dt: float) -> None:
        self.now += dt
        self._do(self.c.handle(Tick(), self.now))

    @invariant()
    def counters_never_negative(self) -> None:
        s = self.c.stats
        assert s.queued >= 0
        assert s.finished >= 0
        assert s.failed >= 0
        assert all(n > 0 for n in self.c.input_refs.values())
        assert self.c.queue.n_running() >= 0
        on_gpu = [s.device for s in self.on_worker.values() if s.device != "cpu"]
        assert {g: on_gpu.count(g) for g in GPUS} == self.c._gpu_busy  # one slot each: at most one task
        assert all(on_gpu.count(g) <= self.c.gpu_slots for g in GPUS)

    def teardown(self) -> None:
        # every fetch answers and every worker finishes: nothing may be left counted or held
        for _ in range(100):
            if not (self.fetching or self.on_worker):
                break
            for k in sorted(self.fetching):
                self.fetching.discard(k)
                self._do(self.c.handle(InputsReady(k), self.now))
            batch = [(s.owner, k, ok(k)) for k, s in sorted(self.on_worker.items())]
            self.on_worker.clear()
            self.worker_started.clear()
            if batch:
                self._do(self.c.handle(Finished(batch), self.now))
        assert self.c.stats.queued == 0
        assert len(self.c.queue) == 0
        assert len(self.c.fence) == 0
        assert self.c.input_refs == {}
        assert self.c.prefetched == 0
        assert self.c._gpu_busy == dict.fromkeys(GPUS, 0)
        assert self.c._on_gpu == {}


TestExecCoreMachine = ExecCoreMachine.TestCase
TestExecCoreMachine.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


class TwoNodeStealMachine(RuleBasedStateMachine):
    """A busy victim (a CPU slot and a GPU) and two idle thieves, one with a GPU and one without, stealing over a
    network that drops, duplicates and reorders steal messages, while the owner aborts tasks (its aborts reach the
    victim, which forwards them); some tasks need a GPU, some were placed on one. A task is never on two workers
    at once nor reported twice, one that needs a GPU runs on a GPU (so never on the CPU-only node), no count goes
    negative, and once the network is drained and every worker done, every task that was not aborted was reported
    exactly once and every core holds nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.view = LoadView()
        self.cores = {
            "A": ExecCore("A", {"cpu": 1}, model=RuntimeModel(), view=self.view, steal=True, gpus=("A:gpu",)),
            "B": ExecCore("B", {"cpu": 2}, model=RuntimeModel(), view=self.view, steal=True, gpus=("B:gpu",)),
            "C": ExecCore("C", {"cpu": 2}, model=RuntimeModel(), view=self.view, steal=True),
        }
        self.needs_gpu: set[tuple[str, int]] = set()
        self.now = 0.0
        self.sent = 0
        self.net: list[tuple[str, str, Any]] = []  # (to, src, message or AbortRuns)
        self.on_worker: dict[tuple[str, int], tuple[str, StartOnWorker]] = {}
        self.reported: set[tuple[str, int]] = set()
        self.aborted: set[tuple[str, int]] = set()

    def _do(self, nid: str, out: list[Instruction]) -> None:
        for ins in out:
            if isinstance(ins, StartOnWorker):
                assert ins.key not in self.on_worker, f"{ins.key} on two workers"
                assert ins.key not in self.needs_gpu or ins.device == f"{nid}:gpu", f"{ins.key} on {ins.device}"
                self.on_worker[ins.key] = (nid, ins)
            elif isinstance(ins, SendResult):
                key = (ins.result["id"], ins.result["att"])
                assert key not in self.reported, f"{key} reported twice"
                self.reported.add(key)
            elif isinstance(ins, SendSteal):
                self.net.append((ins.to, nid, ins.msg))
            elif isinstance(ins, SendAbort):
                self.net.append((ins.node, nid, AbortRuns(ins.owner, ins.keys)))
            elif isinstance(ins, RecallFromWorkers):
                back = [k for k in ins.keys if k in self.on_worker and self.on_worker[k][1].prefetch]
                for k in back:
                    del self.on_worker[k]
                self._do(nid, self.cores[nid].handle(Recalled(back, ins.stuck), self.now))

    def _deliver(self, to: str, src: str, m: Any) -> None:
        ev = m if isinstance(m, AbortRuns) else StealMessage(src, m)
        self._do(to, self.cores[to].handle(ev, self.now))

    @rule(n=st.integers(1, 6), gpu=st.sampled_from([{}, {"resources": {"gpu": 1}}, {"device": "gpu"}]))
    def run(self, n: int, gpu: dict[str, Any]) -> None:
        # an unknown kernel: 0.5 s predicted, never prefetched
        tasks = [task(f"t{self.sent + i}", **gpu) for i in range(n)]
        if "resources" in gpu:
            self.needs_gpu.update((t["id"], 0) for t in tasks)
        self.sent += n
        self._do("A", self.cores["A"].handle(RunTasks("o", tasks), self.now))

    @rule()
    def publish(self) -> None:
        for nid, c in self.cores.items():
            self.view.update(nid, c.load_summary(self.now), self.now)

    @rule(nid=st.sampled_from(["A", "B", "C"]), dt=st.sampled_from([0.01, 0.3, 1.1]))
    def tick(self, nid: str, dt: float) -> None:
        self.now += dt
        self.publish()  # a node's summary is fresh at every tick (node.py: every 0.1 s)
        self._do(nid, self.cores[nid].handle(Tick(), self.now))

    @precondition(lambda self: self.net)
    @rule(data=st.data(), fate=st.sampled_from(["deliver", "deliver", "deliver", "duplicate", "drop"]))
    def network(self, data: st.DataObject, fate: str) -> None:
        i = data.draw(st.integers(0, len(self.net) - 1))  # any message: reordering
        to, src, m = self.net[i] if fate == "duplicate" else self.net.pop(i)
        if fate != "drop" or isinstance(m, AbortRuns):  # an abort travels on the reliable data connection
            self._deliver(to, src, m)

    @precondition(lambda self: self.on_worker)
    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.on_worker)))
        nid, s = self.on_worker.pop(key)
        self.now += 0.01
        self._do(nid, self.cores[nid].handle(Finished([(s.owner, key, ok(key, 0.5))]), self.now))

    @precondition(lambda self: self.sent)
    @rule(data=st.data())
    def abort(self, data: st.DataObject) -> None:
        key = (f"t{data.draw(st.integers(0, self.sent - 1))}", 0)
        self.aborted.add(key)
        self._do("A", self.cores["A"].handle(AbortRuns("o", [list(key)]), self.now))

    @precondition(lambda self: len(self.cores["B"].fence) or len(self.cores["C"].fence))
    @rule(data=st.data(), straight=st.booleans())
    def abort_stolen(self, data: st.DataObject, straight: bool) -> None:
        """The owner aborts a task a thief holds: through the victim (it has not heard of the move yet), or
        straight to the thief."""
        thief = data.draw(st.sampled_from([t for t in "BC" if len(self.cores[t].fence)]))
        via = thief if straight else "A"
        key = data.draw(st.sampled_from(sorted(self.cores[thief].fence.runs)))
        self.aborted.add(key)
        self._do(via, self.cores[via].handle(AbortRuns("o", [list(key)]), self.now))

    @invariant()
    def counts_never_negative(self) -> None:
        for c in self.cores.values():
            assert c.stats.queued >= 0
            assert c.queue.n_running() >= 0

    def teardown(self) -> None:
        for _ in range(200):
            while self.net:
                self._deliver(*self.net.pop(0))
            for key in sorted(self.on_worker):
                nid, s = self.on_worker.pop(key)
                self._do(nid, self.cores[nid].handle(Finished([(s.owner, key, ok(key, 0.5))]), self.now))
            self.now += 0.3
            for nid, c in self.cores.items():
                self._do(nid, c.handle(Tick(), self.now))
            if not self.net and not self.on_worker and all(c.stats.queued == 0 for c in self.cores.values()):
                break
        for c in self.cores.values():
            assert c.stats.queued == 0
            assert len(c.queue) == 0
            assert len(c.fence) == 0
        expected = {(f"t{i}", 0) for i in range(self.sent)} - self.aborted
        assert expected <= self.reported


TestTwoNodeSteal = TwoNodeStealMachine.TestCase
TestTwoNodeSteal.settings = settings(
    max_examples=150, stateful_step_count=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
