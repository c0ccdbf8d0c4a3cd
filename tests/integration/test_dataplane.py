"""The data plane on an in-process mesh: results stay where they are made, move peer to peer, survive loss."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest
import uvloop

from meshaios.errors import TaskError
from meshaios.testing.inproc import InProcessMesh
from tests.integration import funcs

N = 500_000  # 4 MB float64: far above the inline limit, so results stay on their node

GPU_NODES = {1: {"fake_gpus": ("memory=8GiB",)}, 2: {"fake_gpus": ("memory=8GiB",)}}


def run(fn: Callable[[], Awaitable[Any]]) -> Any:
    return uvloop.run(asyncio.wait_for(fn(), 90))


def test_large_results_move_peer_to_peer_never_through_the_owner() -> None:
    async def main() -> None:
        async with InProcessMesh(3, per_node=GPU_NODES) as mesh:
            await mesh.wait_converged()
            c = await mesh.client(0)  # node 0 owns the tasks but has no GPU, so it runs none of them
            gpu = {"gpu": 1}
            parts = [c.submit(funcs.make_array, N, s, resources=gpu) for s in range(6)]
            totals = [c.submit(funcs.total, *parts, resources=gpu) for _ in range(2)]
            expected = sum(float(funcs.make_array(N, s).sum()) for s in range(6))
            for t in totals:
                assert await t == pytest.approx(expected)
            owner = mesh.nodes[0]
            assert owner.counters["fetched_bytes"] == 0
            assert owner.counters["served_bytes"] == 0
            assert owner.store.stats.objects == 0
            moved = sum(n.counters["fetched_bytes"] for n in mesh.nodes[1:])
            served = sum(n.counters["served_bytes"] for n in mesh.nodes[1:])
            assert moved == served
            producers = Counter(p.node for p in parts)
            if len(producers) == 2:  # both GPU nodes produced: each total needed the other node's arrays
                assert moved >= N * 8
            a = await parts[0]  # the client fetches a large result only when asked
            assert np.array_equal(a, funcs.make_array(N, 0))

    run(main)


def test_lost_results_are_recomputed_from_lineage() -> None:
    async def main() -> None:
        async with InProcessMesh(3, per_node=GPU_NODES) as mesh:
            await mesh.wait_converged()
            c = await mesh.client(0)
            parts = [c.submit(funcs.make_array, N, s, resources={"gpu": 1}) for s in range(4)]
            for p in parts:
                await asyncio.wrap_future(p._cf)  # finished, results still on nodes 1 and 2
            victim = next(i for i in (1, 2) if any(p.node == mesh.nodes[i].node_id for p in parts))
            mesh.kill(victim)
            total = c.submit(funcs.total, *parts)
            expected = sum(float(funcs.make_array(N, s).sum()) for s in range(4))
            assert await total == pytest.approx(expected)
            assert mesh.nodes[0].owner.counters["recomputed"] >= 1
            for s, p in enumerate(parts):  # and the client can still read every one of them
                assert np.array_equal(await p, funcs.make_array(N, s))

    run(main)


def test_put_is_replicated_and_survives_its_node() -> None:
    async def main() -> None:
        async with InProcessMesh(3) as mesh:
            await mesh.wait_converged()
            c = await mesh.client(1)
            data = np.arange(N, dtype=np.float64)
            ref = await c.put(data)
            assert await c.submit(funcs.total, ref) == pytest.approx(float(data.sum()))
            holders = [i for i, n in enumerate(mesh.nodes) if ref.key in n.store]
            assert len(holders) == 2
            assert 1 in holders
            mesh.kill(next(i for i in holders if i != 1))
            await asyncio.sleep(0.5)
            assert await c.submit(funcs.total, ref) == pytest.approx(float(data.sum()))
            assert np.array_equal(await ref, data)

    run(main)


def test_mapreduce_word_count() -> None:
    async def main() -> None:
        words = ["alpha", "beta", "gamma", "delta", "eps"]
        rng = np.random.default_rng(3)
        docs = [" ".join(rng.choice(words, 200)) for _ in range(12)]
        expected: Counter[str] = Counter()
        for d in docs:
            expected.update(d.split())
        async with InProcessMesh(3) as mesh:
            await mesh.wait_converged()
            c = await mesh.client(0)
            outs = c.mapreduce(funcs.word_counts, funcs.sum_values, docs, partitions=4)
            merged: dict[str, int] = {}
            for part in await c.gather(outs):
                assert not set(part) & set(merged), "a key reached two reducers"
                merged.update(part)
            assert merged == dict(expected)

    run(main)


def test_array_shuffle_with_spilling_nodes() -> None:
    async def main() -> None:
        chunks = [funcs.keyed_chunk(200_000, s) for s in range(8)]
        keys = np.concatenate([k for k, _ in chunks])
        vals = np.concatenate([v for _, v in chunks])
        expected = funcs.group_sum(keys, vals)
        async with InProcessMesh(3, memory_limit=2 << 20) as mesh:  # 2 MiB: far less than the data
            await mesh.wait_converged()
            c = await mesh.client(0)
            maps = [c.submit(funcs.keyed_chunk, 200_000, s) for s in range(8)]
            outs = c.shuffle(maps, partitions=8, reducer=funcs.group_sum)
            merged: dict[int, int] = {}
            for part in await c.gather(outs):
                merged.update(part)
            assert merged == expected
            assert sum(n.store.stats.spill_events for n in mesh.nodes) > 0

    run(main)


def test_unsatisfiable_resources_fail_fast_with_what_exists() -> None:
    async def main() -> None:
        async with InProcessMesh(2, per_node={1: {"fake_gpus": ("memory=8GiB",)}}) as mesh:
            await mesh.wait_converged()
            c = await mesh.client(0)
            with pytest.raises(TaskError, match=r"gpu_memory=64\.0GiB.*gpu_memory=8\.0GiB"):
                await c.submit(funcs.square, 3, resources={"gpu": 1, "gpu_memory": "64GiB"})
            f = c.submit(funcs.pid, resources={"gpu": 1})
            await f
            assert f.node == mesh.nodes[1].node_id

    run(main)


def test_a_client_get_relayed_through_a_node_leaves_that_nodes_queued_task_its_input() -> None:
    """Regression: node 0 fetches ``a`` for a task queued there (its only worker is busy) while a client GET for
    ``a`` is relayed through node 0 and shares that fetch. Answering the GET used to drop the relayed copy from the
    store -- the queued task's input -- and the task then failed with "dependency was not sent with the task"."""

    async def main() -> None:
        per_node = {0: {"workers": 1, "placement": "local", "steal": False}, 1: {"fake_gpus": ("memory=8GiB",)}}
        async with InProcessMesh(2, per_node=per_node) as mesh:
            await mesh.wait_converged()
            c = await mesh.client(0, spread=1)  # node 0 owns and places (locally) every task
            a = c.submit(funcs.make_array, N, 7, resources={"gpu": 1})  # made on node 1, stays there
            busy = c.submit(funcs.slow_square, 3, 0.5)  # node 0's only worker, for half a second
            assert np.array_equal(await a, funcs.make_array(N, 7))  # relayed once: node 0 keeps no copy
            assert a.key not in mesh.nodes[0].store
            b = c.submit(funcs.total, a)  # placed on node 0, queued behind ``busy``; node 0 fetches ``a``
            got = asyncio.ensure_future(c._fetch(a.key))  # the GET joins that fetch
            value = await got
            assert np.array_equal(value, funcs.make_array(N, 7))
            assert await b == pytest.approx(float(funcs.make_array(N, 7).sum()))
            assert await busy == 9
            assert b.node == mesh.nodes[0].node_id

    run(main)
