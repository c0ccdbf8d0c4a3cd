"""Stored results whose owner is gone: a result an executor keeps (large, or a map output's parts) whose ``done``
reached no live owner that counts it is dropped after ``ORPHAN_GRACE``, like a put's copy -- but never a newer
copy stored under the same ids by a later run of the task (a newer attempt, or a newer client epoch: the owner
its client failed over to), nor one an owner claimed. Real nodes on the in-process mesh, virtual time."""

from __future__ import annotations

import asyncio
import operator

from meshaios.store.copies import COPY_CHECK_EVERY, ORPHAN_GRACE
from meshaios.tasks.owner import Detach, OwnedTask
from meshaios.testing.inproc import InProcessMesh
from meshaios.testing.vtime import run_virtual
from meshaios.wire import messages as M
from meshaios.wire.payload import Payload
from meshaios.wire.values import dumps


def _done(tid: str, att: int, parts: int = 0) -> M.Result:
    r: M.Result = {"id": tid, "att": att, "ok": True, "size": 8}
    if parts:
        r["parts"] = parts
    return r


def test_an_orphaned_result_goes_but_never_a_newer_copy_under_its_ids_nor_a_claimed_one() -> None:
    async def scenario() -> tuple[set[str], dict[str, int], dict[str, tuple[str, ...]]]:
        async with InProcessMesh(2, virtual=True, workers=1) as mesh:
            await mesh.wait_converged()
            x = mesh.nodes[0]
            for obj in ("gone", "m#0", "m#1", "late", "kept"):
                x.store.put(obj, Payload(b"12345678"))
            dead, other = "0" * 24, "1" * 24  # owners this node never saw alive: dead to it
            # its done reached no owner: nobody would ever free it
            x.copybook.kept_result(dead, _done("gone", 0), 0, x.clock.now())
            # a map task's parts, then the task again here (its client failed over: epoch 1) for an owner that
            # counts them -- this node itself -- under the same ids: the old run's timer must not reach them,
            # nor the old owner's late free (it only stops counting them)
            x.copybook.kept_result(dead, _done("m", 0, parts=2), 0, x.clock.now())
            x.copybook.kept_result(x.node_id, _done("m", 0, parts=2), 1, x.clock.now())
            x._free(dead, ["m#0", "m#1"])
            # the newer run first, then an older one that finished later (attempt 0 < 1): the newer record stands
            x.copybook.kept_result(x.node_id, _done("late", 1), 0, x.clock.now())
            x.copybook.kept_result(dead, _done("late", 0), 0, x.clock.now())
            # an owner that adopted the task (its client failed over to it) claims the copy: kept
            x.copybook.kept_result(other, _done("kept", 0), 0, x.clock.now())
            x._claimed(x.node_id, ["kept"])
            await asyncio.sleep(ORPHAN_GRACE + COPY_CHECK_EVERY + 1)
            return set(x.store.keys()), dict(x.counters), {o: run.owners for o, run in x.copybook.results.items()}

    left, counters, owners = run_virtual(scenario())
    assert left == {"m#0", "m#1", "late", "kept"}
    assert counters["orphan_results_dropped"] == 1
    me = next(iter(owners["m#0"]))
    assert owners == {"m#0": (me,), "m#1": (me,), "late": (me, "0" * 24), "kept": ("1" * 24, me)}


def _run(tid: str, att: int, ep: int) -> M.RunTask:
    """A task whose result is stored, not inline (100 kB): ``operator.mul(b"x", 100_000)``, of client ``cli``."""
    return {"id": tid, "att": att, "fn": dumps({"ref": "operator:mul"}, allow_pickle=False)[0],
            "args": dumps([[b"x", 100_000], {}], allow_pickle=False)[0], "deps": {}, "pure": False,
            "c": "cli", "ep": ep}  # fmt: skip


def test_an_older_epoch_run_that_finishes_after_a_claim_leaves_the_copy_to_the_newer_owner() -> None:
    """An executor holds a result that owner ``a`` counts (client epoch 0); the client failed over to owner ``b``
    (epoch 1), which adopted the task done and claimed the copy. Then a run of epoch 0 -- ``a``'s, sent before it
    learnt of the failover -- finishes here and stores under the same id: ``b`` still counts it, so ``a``'s free
    (``a`` has let the client's work go) must not take it. Likewise a copy that ``b``'s own run (epoch 1) stored,
    then a late run of epoch 0 of the same task: the newer record stands and ``a``'s free is ignored. Both runs go
    through the executor's real path (RUN, fence, worker, ``CopyBook.kept_result``)."""

    async def scenario() -> tuple[set[str], dict[str, tuple[tuple[str, ...], int, int]]]:
        async with InProcessMesh(2, virtual=True, workers=1) as mesh:
            await mesh.wait_converged()
            x = mesh.nodes[0]
            a, b = "a" * 24, "b" * 24  # the owners: their own frees are what this test sends
            # the copy a counts, claimed by b after the failover
            x._accept_run(a, [_run("claimed", 0, 0)])
            await asyncio.sleep(1)
            x._claimed(b, ["claimed"])
            # a's run of epoch 0 again (attempt 1: a re-placed it) reaches this node only now, and finishes
            x._accept_run(a, [_run("claimed", 1, 0)])
            # and a task b ran here (epoch 1) that a's older run (epoch 0) finishes after
            x._accept_run(b, [_run("newer", 0, 1)])
            await asyncio.sleep(1)
            x._accept_run(a, [_run("newer", 0, 0)])
            await asyncio.sleep(1)
            x._free(a, ["claimed", "newer"])
            return set(x.store.keys()), {o: (run.owners, run.ep, run.att) for o, run in x.copybook.results.items()}

    left, records = run_virtual(scenario())
    assert left == {"claimed", "newer"}
    # who counts each copy now, and the run whose record stands (client epoch, attempt): the newest
    assert records == {"claimed": (("b" * 24,), 0, 1), "newer": (("b" * 24,), 1, 0)}


def test_a_detach_free_that_beats_the_new_owners_claim_leaves_the_copy_to_the_claim() -> None:
    """The owner a client left frees its copies of the client's finished tasks as soon as it learns of the failover
    (DETACH, FENCED), while the new owner claims them (the client brought them along done): sent at about the same
    moment, the free may reach the holder first. It used to take the copy the new owner counted (a recompute when
    it was read); now a copy freed that way is kept ``FREE_HOLD`` for a claim. Real nodes: the client's result on
    its executor, the former owner's real DETACH path, the new owner's real CLAIM, its link to the holder held."""

    async def scenario() -> tuple[bool, tuple[str, ...], str, bool]:
        async with InProcessMesh(3, virtual=True, seed=1, task_seconds=0.01) as mesh:
            await mesh.wait_converged()
            c = await mesh.client(0, spread=1)
            big = c.submit(operator.mul, b"x", 100_000)  # 100 kB: stored on its executor, not inline
            await big
            a = mesh.nodes[0]
            t = a.owner.lookup(big.key)
            assert t is not None
            x = next(n for n in mesh.nodes if n.node_id in t.locations)
            b = next(n for n in mesh.nodes[1:] if n is not x)
            adopted = OwnedTask(id=t.id, client=b"c:new", fn=Payload(b""), args=Payload(b""), deps=[])
            adopted.locations = list(t.locations)
            mesh.hub.hold([b.address], [x.address])  # the new owner's CLAIM reaches the holder late
            b._claim(adopted)
            a._owner(Detach(t.client, 1))  # the client is at epoch 1 under b: a frees its copy at once
            await asyncio.sleep(0.5)
            mesh.hub.unhold()
            await asyncio.sleep(0.5)
            kept = t.id in x.store
            run = x.copybook.results.get(t.id)
            x._free(b.node_id, [t.id])  # the claimer lets it go: it goes
            await c.close()
            return kept, run.owners if run is not None else (), b.node_id, t.id in x.store

    kept, owners, b, left = run_virtual(scenario())
    assert kept
    assert owners == (b,)
    assert not left


def test_a_replica_stored_for_an_owner_declared_dead_is_freed_after_the_grace() -> None:
    async def scenario() -> tuple[bool, dict[str, str]]:
        async with InProcessMesh(2, virtual=True, workers=1) as mesh:
            await mesh.wait_converged()
            x, o = mesh.nodes
            mesh.kill(1)  # o dies; x declares it dead ...
            async with asyncio.timeout(60):  # virtual seconds; SWIM's verdict has no event to wait on
                while (m := x.swim.get(o.node_id)) is None or m.state.value != "dead":  # noqa: ASYNC110
                    await asyncio.sleep(0.5)
            # ... and then o's STORE, sent before it died, arrives (a slow link)
            msg: M.Store = {"t": M.STORE, "src": o.node_id, "id": "p", "val": Payload(b"12345678")}
            x._on_store(b"n:" + o.node_id.encode(), msg)
            await asyncio.sleep(ORPHAN_GRACE + 3 * COPY_CHECK_EVERY)
            return "p" in x.store, dict(x.copybook.copies)

    kept, copies = run_virtual(scenario())
    assert not kept, copies
