"""A client whose tasks are owned by several nodes (``spread``, meshaios/shards.py): real Node objects on the
in-memory transport. Independent tasks are shared among the owners; a DAG whose inputs live on different owners
is still computed once and right; an owner killed mid-job fails over on its own while the others carry on."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvloop

from meshaios.errors import TaskError
from meshaios.testing.inproc import InProcessMesh
from tests.integration import funcs
from tests.integration.polling import wait_for


def run(fn: Callable[[], Awaitable[Any]]) -> Any:
    return uvloop.run(asyncio.wait_for(fn(), 60))


def owned(mesh: InProcessMesh) -> list[int]:
    """Tasks each node's owner has been submitted (by any client)."""
    return [n.owner.counters["submitted"] for n in mesh.nodes]


def test_a_client_spread_over_three_owners_shares_its_tasks_among_them() -> None:
    async def main() -> None:
        async with InProcessMesh(3) as mesh:
            await mesh.wait_converged()
            c = await mesh.client(0, spread=3)
            assert len(c.core.shards) == 3
            assert len({s.node for s in c.core.shards.values()}) == 3
            futs = c.map(funcs.square, range(300))
            assert await c.gather(futs) == [x * x for x in range(300)]
            counts = owned(mesh)
            assert sum(counts) == 300, counts
            assert min(counts) >= 80, counts
            assert c.stats["results"] == 300
            assert c.stats["duplicates"] == 0

    run(main)


def test_one_owner_is_exactly_the_client_of_before() -> None:
    async def main() -> None:
        async with InProcessMesh(3) as mesh:
            await mesh.wait_converged()
            c = await mesh.client(1, spread=1)
            await wait_for(lambda: len(c._known_nodes) == 3, 10, "peers learnt")  # and still no second shard
            assert await c.gather(c.map(funcs.square, range(50))) == [x * x for x in range(50)]
            assert len(c.core.shards) == 1
            assert owned(mesh) == [0, 50, 0]
            assert c.core.ident(0) == c.client_id

    run(main)


def test_a_dag_across_owners_is_computed_once_and_right() -> None:
    async def main() -> None:
        async with InProcessMesh(3) as mesh:
            await mesh.wait_converged()
            c = await mesh.client(0, spread=3)
            level = c.map(funcs.square, range(64))
            while len(level) > 1:
                level = [c.submit(funcs.add, level[i], level[i + 1]) for i in range(0, len(level), 2)]
            assert await level[0] == sum(x * x for x in range(64))
            # 64 + 63 tasks, each run once: inputs carried to another owner are adopted as done, not run again
            assert sum(n.exec.finished for n in mesh.nodes) == 127
            assert c.stats["duplicates"] == 0
            assert not c.core.held

    run(main)


def test_large_inputs_owned_elsewhere_are_fetched_where_they_live() -> None:
    async def main() -> None:
        async with InProcessMesh(3) as mesh:
            await mesh.wait_converged()
            c = await mesh.client(0, spread=3)
            arrays = [c.submit(funcs.make_array, 50_000, s) for s in range(3)]  # 400 kB each: stay where made
            await asyncio.sleep(0)  # routed when the submissions go out
            assert len({c.core.shard_of[a.key] for a in arrays}) == 3  # one per owner
            total = c.submit(funcs.total, *arrays)
            want = sum(float(np.random.default_rng(s).standard_normal(50_000).sum()) for s in range(3))
            assert await total == pytest.approx(want)
            del arrays
            await asyncio.sleep(0.2)

    run(main)


def test_an_input_that_failed_on_another_owner_fails_its_dependents_here() -> None:
    async def main() -> None:
        async with InProcessMesh(3) as mesh:
            await mesh.wait_converged()
            c = await mesh.client(0, spread=3)
            a = c.submit(funcs.slow_square, 2, 0.3)
            b = c.submit(funcs.boom, "no")
            await asyncio.sleep(0)
            if c.core.shard_of[a.key] == c.core.shard_of[b.key]:
                pytest.skip("both inputs on one owner")  # not with least-loaded routing of two tasks
            await asyncio.sleep(0)
            d = c.submit(funcs.add, a, b)
            with pytest.raises(TaskError, match="no"):
                await d
            assert await a == 4

    run(main)


def test_a_killed_owner_fails_over_alone_and_every_result_arrives_once() -> None:
    async def main() -> None:
        async with InProcessMesh(4) as mesh:
            await mesh.wait_converged()
            c = await mesh.client(0, spread=3, heartbeat_timeout=1.0)
            level = c.map(funcs.slow_square, range(64), [0.02] * 64)
            firsts = level
            while len(level) > 1:
                level = [c.submit(funcs.add, level[i], level[i + 1]) for i in range(0, len(level), 2)]
            await asyncio.sleep(0.1)
            victim = c.core.shards[1].node
            mesh.kill(next(i for i, n in enumerate(mesh.nodes) if n.node_id == victim))
            assert await c.gather(firsts) == [x * x for x in range(64)]
            assert await level[0] == sum(x * x for x in range(64))
            assert c.failovers == 1
            assert c.core.shards[1].node != victim
            assert c.core.shards[1].epoch == 1
            assert c.core.shards[0].epoch == 0
            assert c.core.shards[2].epoch == 0
            assert c.stats["results"] == 127  # each future once

    run(main)


def test_cancelling_a_spread_clients_tasks_cancels_them_at_every_owner(tmp_path: Path) -> None:
    async def main() -> None:
        async with InProcessMesh(3) as mesh:
            await mesh.wait_converged()
            c = await mesh.client(0, spread=3)
            gate = tmp_path / "gate"  # the tasks that start run until the gate opens, after the cancel
            futs = c.map(funcs.square_at_gate, range(60), [str(gate)] * 60)
            await wait_for(
                lambda: len({c.core.shard_of.get(f.key) for f in futs} - {None}) == 3, 10, "tasks at three owners"
            )
            assert c.cancel(futs) >= 50
            gate.touch()
            results = await asyncio.gather(*(f._result_async() for f in futs), return_exceptions=True)
            cancelled = sum(isinstance(r, BaseException) for r in results)
            assert cancelled >= 50
            assert all(r == i * i for i, r in enumerate(results) if not isinstance(r, BaseException))
            assert sum(n.owner.counters["cancelled"] for n in mesh.nodes) >= 50 - 6
            assert not c._pending

    run(main)
