"""Tier two: real Node objects in one event loop on the in-memory transport, with fault injection."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest
import uvloop

from meshaios.errors import MeshUnavailable, SerializationError, TaskError
from meshaios.testing.inproc import InProcessMesh
from tests.integration import funcs
from tests.integration.polling import wait_for


def run(fn: Callable[[], Awaitable[Any]]) -> Any:
    return uvloop.run(asyncio.wait_for(fn(), 60))


def test_map_spreads_over_all_nodes_and_returns_every_result() -> None:
    async def main() -> None:
        async with InProcessMesh(3) as mesh:
            await mesh.wait_converged()
            c = await mesh.client(0)
            futs = c.map(funcs.slow_square, range(300), [0.002] * 300)
            results = await c.gather(futs)
            assert results == [x * x for x in range(300)]
            per_node = Counter(f.node for f in futs)
            assert set(per_node) == {n.node_id for n in mesh.nodes}, per_node

    run(main)


def test_dag_of_dependent_tasks() -> None:
    async def main() -> None:
        async with InProcessMesh(3) as mesh:
            await mesh.wait_converged()
            c = await mesh.client(1)
            level = c.map(funcs.square, range(64))
            while len(level) > 1:
                level = [c.submit(funcs.add, level[i], level[i + 1]) for i in range(0, len(level), 2)]
            assert await level[0] == sum(x * x for x in range(64))

    run(main)


def test_raising_task_gives_task_error_with_remote_traceback_and_node_keeps_serving() -> None:
    async def main() -> None:
        async with InProcessMesh(2) as mesh:
            await mesh.wait_converged()
            c = await mesh.client(0)
            with pytest.raises(TaskError) as info:
                await c.submit(funcs.boom, "kaput")
            err = info.value
            assert err.remote_type == "ValueError"
            assert "kaput" in err.message
            assert "in boom" in err.remote_traceback
            assert isinstance(err.cause, ValueError)
            dependent = c.submit(funcs.add, c.submit(funcs.boom, "x"), 1)
            with pytest.raises(TaskError, match="dependency"):
                await dependent
            assert await c.submit(funcs.square, 7) == 49

    run(main)


def test_retries_rerun_a_failing_task() -> None:
    async def main() -> None:
        async with InProcessMesh(1) as mesh:
            c = await mesh.client(0)
            with pytest.raises(TaskError):
                await c.submit(funcs.boom, "again", retries=2)
            assert mesh.nodes[0].owner.counters["retried"] == 2

    run(main)


def test_killed_node_work_is_replaced_and_every_result_arrives_once() -> None:
    async def main() -> None:
        async with InProcessMesh(3) as mesh:
            await mesh.wait_converged()
            c = await mesh.client(0)
            futs = c.map(funcs.slow_square, range(400), [0.005] * 400)
            await asyncio.sleep(0.1)
            mesh.kill(2)
            results = await c.gather(futs)
            assert results == [x * x for x in range(400)]
            assert c.stats["results"] == 400
            assert c.stats["duplicates"] == 0
            owner = mesh.nodes[0].owner
            assert owner.counters["replaced"] > 0, "the killed node had work in flight that was re-placed"
            dead = mesh.nodes[2].node_id
            assert mesh.nodes[1].swim.get(dead).state.value == "dead"

    run(main)


def test_partition_heals_and_work_continues() -> None:
    async def main() -> None:
        async with InProcessMesh(3) as mesh:
            await mesh.wait_converged()
            mesh.partition([0], [1, 2])
            c = await mesh.client(0)
            assert await c.gather(c.map(funcs.square, range(50))) == [x * x for x in range(50)]
            mesh.heal()
            await mesh.wait_converged(timeout=10)
            futs = c.map(funcs.slow_square, range(200), [0.002] * 200)
            assert await c.gather(futs) == [x * x for x in range(200)]
            assert len({f.node for f in futs}) == 3

    run(main)


def test_arrays_travel_as_frames_and_come_back_identical() -> None:
    async def main() -> None:
        async with InProcessMesh(2) as mesh:
            await mesh.wait_converged()
            c = await mesh.client(0)
            a = np.random.default_rng(0).standard_normal((300, 200))
            out = await c.gather([c.submit(funcs.double_array, a) for _ in range(6)])
            for o in out:
                assert o.dtype == a.dtype
                assert o.shape == a.shape
                assert np.array_equal(o, a * 2)

    run(main)


def test_insecure_mesh_refuses_lambdas_but_runs_importable_functions() -> None:
    async def main() -> None:
        async with InProcessMesh(2, insecure=True, allowed_modules=("tests.integration.funcs",)) as mesh:
            c = await mesh.client(0)
            with pytest.raises(SerializationError, match="insecure"):
                c.submit(lambda x: x, 1)
            assert await c.submit(funcs.square, 5) == 25

    run(main)


def test_insecure_mesh_runs_only_allowed_functions() -> None:
    async def main() -> None:
        async with InProcessMesh(2, insecure=True) as mesh:
            c = await mesh.client(0)
            with pytest.raises(TaskError, match=r"refused.*tests\.integration\.funcs.*not allowed"):
                await c.submit(funcs.square, 5)

    run(main)


def test_lambdas_and_closures_run_on_a_secure_mesh() -> None:
    async def main() -> None:
        async with InProcessMesh(2) as mesh:
            c = await mesh.client(0)
            k = 3
            assert await c.gather(c.map(lambda x: x * k, range(5))) == [0, 3, 6, 9, 12]

    run(main)


def test_released_futures_are_forgotten_by_the_owner() -> None:
    async def main() -> None:
        async with InProcessMesh(1) as mesh:
            c = await mesh.client(0)
            futs = c.map(funcs.square, range(100))
            await c.gather(futs)
            owner = mesh.nodes[0].owner
            assert len(owner.tasks) == 100
            del futs
            for _ in range(100):
                await asyncio.sleep(0.01)
                if not owner.tasks:
                    break
            assert not owner.tasks

    run(main)


def test_client_fails_over_when_its_entry_node_dies_and_gets_every_result_once() -> None:
    async def main() -> None:
        async with InProcessMesh(3) as mesh:
            await mesh.wait_converged()
            c = await mesh.client(0, heartbeat_timeout=1.0)
            await wait_for(lambda: len(c._known_nodes) == 3, 10, "the client learnt the other nodes (a status poll)")
            level = c.map(funcs.slow_square, range(64), [0.02] * 64)
            firsts = level
            while len(level) > 1:
                level = [c.submit(funcs.add, level[i], level[i + 1]) for i in range(0, len(level), 2)]
            await asyncio.sleep(0.1)
            mesh.kill(0)  # the entry node, owner of every task
            assert await level[0] == sum(x * x for x in range(64))
            assert await c.gather(firsts) == [x * x for x in range(64)]
            assert c.failovers == 1
            assert c.stats["results"] >= 64

    run(main)


def test_client_gets_a_clear_error_when_every_node_is_gone() -> None:
    async def main() -> None:
        async with InProcessMesh(2) as mesh:
            await mesh.wait_converged()
            c = await mesh.client(0, heartbeat_timeout=0.8, failover_timeout=1.5)
            await wait_for(lambda: len(c._known_nodes) == 2, 10, "the client learnt the other node")
            f = c.submit(funcs.slow_square, 3, 5.0)
            await asyncio.sleep(0.05)
            mesh.kill(0)
            mesh.kill(1)
            with pytest.raises(MeshUnavailable, match="no other node"):
                await f

    run(main)


def test_a_hanging_task_times_out_with_a_clear_error_and_the_node_keeps_serving() -> None:
    async def main() -> None:
        async with InProcessMesh(1, workers=2) as mesh:
            c = await mesh.client(0)
            with pytest.raises(TaskError, match=r"did not finish within 0\.3 s"):
                await c.submit(funcs.slow_square, 2, 3.0, task_timeout=0.3)
            assert await c.submit(funcs.square, 9) == 81

    run(main)


def test_pure_task_runs_in_a_worker_process_and_a_killed_worker_is_an_error() -> None:
    async def main() -> None:
        async with InProcessMesh(1) as mesh:
            c = await mesh.client(0)
            import os

            node_pid = os.getpid()
            assert await c.submit(funcs.pid, pure=True) != node_pid
            with pytest.raises(TaskError, match="worker process running this task died"):
                await c.submit(os._exit, 3, pure=True)
            assert await c.submit(funcs.square, 4, pure=True) == 16

    run(main)


def test_learned_placement_runs_work_and_the_model_learns_from_it() -> None:
    async def main() -> None:
        async with InProcessMesh(3, placement="eft") as mesh:
            await mesh.wait_converged()
            c = await mesh.client(0, spread=1)  # node 0 owns all: its model learns from all
            futs = c.map(funcs.slow_square, range(120), [0.005] * 120)
            assert await c.gather(futs) == [x * x for x in range(120)]
            stats = mesh.nodes[0].model.stats()
            assert stats["observations"] >= 100, stats
            assert len({f.node for f in futs}) >= 2

    run(main)


def test_eft_hears_its_peers_load_with_stealing_off_too() -> None:
    """EFT's queue term reads the peers' gossiped load summaries; they must flow when nobody steals as well."""

    async def main() -> None:
        async with InProcessMesh(3, placement="eft", steal=False) as mesh:
            await mesh.wait_converged()
            c = await mesh.client(0)
            assert await c.gather(c.map(funcs.slow_square, range(30), [0.005] * 30)) == [x * x for x in range(30)]
            node = mesh.nodes[0]
            peers = {n.node_id for n in mesh.nodes[1:]}
            for _ in range(100):  # summaries are rebuilt every other tick and ride on SWIM traffic
                if all(node.loadview.get(p, node.clock.now()) is not None for p in peers):
                    break
                await asyncio.sleep(0.05)
            assert all(node.loadview.get(p, node.clock.now()) is not None for p in peers)

    run(main)


def test_a_future_its_owner_forgot_is_reconciled_not_left_hanging() -> None:
    """The entry node answers pings but no longer has the task (here: its owner drops it, as a node restarted
    behind the same address would have): after ``reconcile_after`` without progress the client resubmits what is
    pending, and the owner runs what it lost."""

    async def main() -> None:
        async with InProcessMesh(2) as mesh:
            await mesh.wait_converged()
            c = await mesh.client(0, reconcile_after=1.0, spread=1)  # node 0 owns the task
            fut = c.submit(funcs.slow_square, 7, 0.3)
            owner = mesh.nodes[0].owner
            while fut.key not in owner.tasks:  # noqa: ASYNC110 - the owner has no event for a submit
                await asyncio.sleep(0.01)
            lost = owner.tasks.pop(fut.key)  # amnesia: its result, when it comes, is dropped as unknown
            owner._count_pending(lost.client, -1)
            if lost.node is not None:
                owner._unassign(lost.id, lost.node)
            assert await fut == 49
            assert c.reconciles >= 1

    run(main)
