"""Stored results whose owner is gone: a result an executor keeps (large, or a map output's parts) whose ``done``
reached no live owner that counts it is dropped after ``ORPHAN_GRACE``, like a put's copy -- but never a newer
copy stored under the same ids by a later run of the task (a newer attempt, or a newer client epoch: the owner
its client failed over to), nor one an owner claimed. Real nodes on the in-process mesh, virtual time."""

from __future__ import annotations

import asyncio

from meshaios.node import COPY_CHECK_EVERY, ORPHAN_GRACE
from meshaios.testing.inproc import InProcessMesh
from meshaios.testing.vtime import run_virtual
from meshaios.wire import messages as M
from meshaios.wire.payload import Payload


def _done(tid: str, att: int, parts: int = 0) -> M.Result:
    r: M.Result = {"id": tid, "att": att, "ok": True, "size": 8}
    if parts:
        r["parts"] = parts
    return r


def test_an_orphaned_result_goes_but_never_a_newer_copy_under_its_ids_nor_a_claimed_one() -> None:
    async def scenario() -> tuple[set[str], dict[str, int]]:
        async with InProcessMesh(2, virtual=True, workers=1) as mesh:
            await mesh.wait_converged()
            x = mesh.nodes[0]
            for obj in ("gone", "m#0", "m#1", "late", "kept"):
                x.store.put(obj, Payload(b"12345678"))
            dead, other = "0" * 24, "1" * 24  # owners this node never saw alive: dead to it
            x._keep_result(dead, _done("gone", 0), 0)  # its done reached no owner: nobody would ever free it
            # a map task's parts, then the task again here (its client failed over: epoch 1) for an owner that
            # counts them -- this node itself -- under the same ids: the old run's timer must not reach them,
            # nor the old owner's late free
            x._keep_result(dead, _done("m", 0, parts=2), 0)
            x._keep_result(x.node_id, _done("m", 0, parts=2), 1)
            x._free(dead, ["m#0", "m#1"])
            # the newer run first, then an older one that finished later (attempt 0 < 1): the newer record stands
            x._keep_result(x.node_id, _done("late", 1), 0)
            x._keep_result(dead, _done("late", 0), 0)
            # an owner that adopted the task (its client failed over to it) claims the copy: kept
            x._keep_result(other, _done("kept", 0), 0)
            x._claimed(x.node_id, ["kept"])
            await asyncio.sleep(ORPHAN_GRACE + COPY_CHECK_EVERY + 1)
            return set(x.store.keys()), dict(x.counters)

    left, counters = run_virtual(scenario())
    assert left == {"m#0", "m#1", "late", "kept"}
    assert counters["orphan_results_dropped"] == 1
    assert counters["replaced_copies_kept"] == 2
