"""Tiny calls run inline on the executing node's event loop (ExecCore ``StartOnWorker.inline``): meshaios's own
kernels after a few tiny runs, a user's function after many and under a guard that interrupts it when it
overstays (tasks/guard.py). Real Node objects in one event loop on the in-memory transport. Which thread ran a task
tells inline (the loop's: this test's main thread) from a worker (``mesh-<node>-<i>``)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvloop

from meshaios.devices.registry import default_registry
from meshaios.errors import CancelledTaskError
from meshaios.tasks.execcore import INLINE_STREAK, INLINE_USER_STREAK
from meshaios.testing.inproc import InProcessMesh
from tests.integration import funcs
from tests.integration.polling import wait_for

LOOP_THREAD = threading.main_thread().name
ADD = default_registry().get("meshaios.add")


def run(fn: Callable[[], Awaitable[Any]]) -> Any:
    return uvloop.run(asyncio.wait_for(fn(), 60))


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_sequential_tiny_kernel_calls_run_inline_and_each_result_is_counted_once() -> None:
    async def main() -> None:
        async with InProcessMesh(1, workers=1) as mesh:
            node = mesh.nodes[0]
            c = await mesh.client(0)
            x = np.arange(8.0)
            for i in range(8 * INLINE_STREAK):
                assert (await c.submit(ADD, x, float(i)) == x + i).all()
            assert node.counters["ran_inline"] > 0  # after its streak, unless a run was slow (see execcore)
            assert [await c.submit(funcs.square, i) for i in range(50)] == [i * i for i in range(50)]
            n = 8 * INLINE_STREAK + 50
            assert c.stats["results"] == n
            assert c.stats["duplicates"] == 0
            assert node.exec.finished == n
            assert node.exec.queued == 0
            assert node.owner.pending == 0

    run(main)


def test_a_users_function_runs_inline_once_proven_tiny_and_when_it_then_blocks_the_node_still_answers(
    tmp_path: Path,
) -> None:
    """Tiny on the workers INLINE_USER_STREAK times in a row, then inline; then a call waits (a file, a lock, a
    socket): on the loop that would stop the node (it held a node of tests/ux for 60 s when eight tiny runs were
    enough and nothing interrupted it). The run is interrupted, the task runs again on a worker, the node answers
    meanwhile, and the function never runs inline there again."""

    async def main() -> None:
        async with InProcessMesh(1, workers=1) as mesh:
            node = mesh.nodes[0]
            c = await mesh.client(0)
            worker = f"mesh-{node.node_id[:8]}-0"
            opened, warm = tmp_path / "open", str(tmp_path / "warm")
            opened.touch()

            async def tiny() -> str:
                return str(await c.submit(funcs.thread_at_gate, str(opened), warm))

            where = [await tiny() for _ in range(INLINE_USER_STREAK)]
            while where[-1] != LOOP_THREAD:  # a run preempted on a loaded machine starts the count again
                assert len(where) < 20 * INLINE_USER_STREAK, where
                where.append(await tiny())
            assert set(where[:INLINE_USER_STREAK]) == {worker}  # on the worker until proven tiny
            gate, started = tmp_path / "gate", tmp_path / "started"
            slow = c.submit(funcs.thread_at_gate, str(gate), str(started))  # waits until the test opens the gate
            await c.ping()  # answered while the call waits: interrupted inline, it runs on a worker now
            await wait_for(lambda: _lines(started) == 2, 30, "the call started again on a worker")
            await c.ping()
            assert not slow.done()
            gate.touch()
            assert await slow == worker
            assert node.counters["inline_interrupted"] == 1
            assert node.counters["inline_revoked"] == 1
            again = {await tiny() for _ in range(2 * INLINE_USER_STREAK)}
            assert again == {worker}  # never inline again
            assert c.stats["duplicates"] == 0

    run(main)


def test_a_users_function_run_inline_finds_no_running_event_loop_as_on_a_worker() -> None:
    async def main() -> None:
        async with InProcessMesh(1, workers=1) as mesh:
            c = await mesh.client(0)
            seen = [await c.submit(funcs.thread_and_loop) for _ in range(INLINE_USER_STREAK)]
            while not seen[-1].startswith(LOOP_THREAD):
                assert len(seen) < 20 * INLINE_USER_STREAK, seen
                seen.append(await c.submit(funcs.thread_and_loop))
            assert all(s.endswith(" no loop") for s in seen), seen  # on the worker and inline alike
            assert asyncio.get_running_loop() is not None  # and the node's loop is back

    run(main)


def test_a_queued_call_of_an_inline_kernel_can_be_cancelled_and_never_runs(tmp_path: Path) -> None:
    async def main() -> None:
        async with InProcessMesh(1, workers=1) as mesh:
            node = mesh.nodes[0]
            c = await mesh.client(0)
            x = np.arange(4.0)
            for _ in range(INLINE_STREAK + 1):
                await c.submit(ADD, x, 1.0)  # tiny: its queued calls are prefetched, or run inline
            log, gate, started = tmp_path / "ran", tmp_path / "gate", tmp_path / "started"
            blocker = c.submit(funcs.thread_at_gate, str(gate), str(started))  # holds the one slot until the gate
            await wait_for(started.exists, 30, "the blocker started")
            queued = [c.submit(funcs.sleep_and_log, i, 0.0, str(log)) for i in range(1, 4)]
            doomed = c.submit(ADD, x, 2.0)
            await wait_for(lambda: node.exec.queued == 5, 30, "the four calls queued behind the blocker")
            doomed.cancel()
            with pytest.raises(CancelledTaskError):
                await doomed
            gate.touch()
            assert await blocker == f"mesh-{node.node_id[:8]}-0"
            assert await c.gather(queued) == [1, 4, 9]
            assert await c.submit(funcs.square, 4) == 16
            assert node.exec.queued == 0
            assert node.owner.pending == 0

    run(main)


def test_small_results_are_released_with_the_next_heartbeat_and_the_owner_forgets_them() -> None:
    async def main() -> None:
        async with InProcessMesh(1, workers=1) as mesh:
            owner = mesh.nodes[0].owner
            c = await mesh.client(0)
            for i in range(30):
                assert await c.submit(funcs.square, i) == i * i  # each future dropped at once: a lazy release
            big = c.submit(funcs.make_array, 100_000, 1)  # kept at the node (a remote result): released at once
            await c._fetch(big.key)
            for _ in range(300):  # the heartbeat (PING_INTERVAL) takes the lazy ones
                if len(owner.tasks) <= 1:
                    break
                await asyncio.sleep(0.01)
            assert list(owner.tasks) == [big.key]
            del big
            for _ in range(300):
                if not owner.tasks:
                    break
                await asyncio.sleep(0.01)
            assert not owner.tasks

    run(main)
