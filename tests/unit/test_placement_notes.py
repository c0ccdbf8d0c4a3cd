"""What a placement policy notes per choice travels with the task's ``Dispatch`` and nowhere else, live or simulated.

The node and the simulator run the same ``Owner``; it tells its policy what it knows of each task (``info``, by
default ``Owner.task_info``), and the dict the policy saw and wrote back (EFT's ``placed_device``,
``predicted_s``) goes into the ``Dispatch`` of the pass that sent the task, or is dropped when the task waits. So
nothing is kept per task, whatever becomes of the task afterwards.
"""

from __future__ import annotations

import random
from typing import Any

from meshaios.sched.placement import NodeLoad, PlacementPolicy
from meshaios.tasks.owner import Dispatch, Owner, OwnerAction, OwnerConfig, TaskState
from meshaios.wire.payload import Payload

FN = Payload(b"fn")
ARGS = Payload(b"args")
CLIENT = b"client-1"


def spec(tid: str) -> dict[str, Any]:
    return {"id": tid, "fn": FN, "args": ARGS, "deps": []}


class Notes(PlacementPolicy):
    """Prefers node ``fast``, even when its window is full (late binding), and writes back its pick, as EFT does."""

    name = "notes"
    late_binding = True

    def choose(self, task: Any, candidates: list[NodeLoad], rng: random.Random) -> NodeLoad:
        pick = next((c for c in candidates if c.node_id == "fast"), candidates[0])
        task["placed_device"] = "gpu" if pick.node_id == "fast" else "cpu"
        return pick


def owner(late_binding: bool) -> Owner:
    o = Owner("me", OwnerConfig(window_per_slot=1, late_binding=late_binding), Notes(), random.Random(0),
              info=lambda tid: {"fn_key": "k"})
    o.node_up("fast", 1)
    o.node_up("slow", 1)
    return o


def dispatches(actions: list[OwnerAction]) -> list[Dispatch]:
    out = [a for a in actions if isinstance(a, Dispatch)]
    for d in out:  # a note for every task a dispatch carries, and for nothing else
        assert set(d.placed) == {t["id"] for t in d.tasks}
    return out


def test_a_dispatch_carries_what_the_policy_noted() -> None:
    o = owner(late_binding=False)
    out = dispatches(o.submit(CLIENT, [spec("a"), spec("b")], now=0.0))
    by_node = {d.node: d for d in out}
    assert by_node["fast"].placed["a"]["placed_device"] == "gpu"
    assert by_node["fast"].placed["a"]["fn_key"] == "k"  # the task info the policy saw
    assert by_node["slow"].placed["b"]["placed_device"] == "cpu"


def test_notes_of_tasks_that_wait_finish_fail_or_are_abandoned_go_nowhere() -> None:
    """Hundreds of tasks through every end a task can have: each dispatch carries the notes of its own tasks."""
    o = owner(late_binding=True)
    running: list[str] = []
    ends = {TaskState.DONE: 0, TaskState.FAILED: 0}
    for i in range(300):
        out = o.submit(CLIENT, [spec(f"t{i}")], now=float(i))
        running += [t["id"] for d in dispatches(out) for t in d.tasks]
        if i % 2 and running:
            tid = running.pop(0)
            result: dict[str, Any] = {"id": tid, "ok": True, "v": Payload(b"v")}
            if i % 3 == 0:
                result = {"id": tid, "ok": False, "fatal": True, "err": {"type": "E", "msg": "", "tb": ""}}
            node = o.tasks[tid].node
            assert node is not None
            out = o.completed(node, [result], now=float(i))
            ends[o.tasks[tid].state] += 1
            running += [t["id"] for d in dispatches(out) for t in d.tasks]
    assert ends[TaskState.DONE] > 50
    assert ends[TaskState.FAILED] > 20
    dispatches(o.node_down("fast"))  # what ran there is placed again, on ``slow``; what waited is placed anew
    o.detach(CLIENT, 1)  # the client moved on: its remaining work is abandoned
