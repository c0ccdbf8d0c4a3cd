"""Live work stealing on real Node objects (in-process mesh): a pile-up on one node is spread by idle peers.

The owner places with ``local`` (everything on itself while its window of 16 is open): the "all tasks land on one
node" case. Tasks are sleep-bound so that the makespan does not depend on how busy this machine's two cores are.
Evidence of execution is a file each task appends ``i pid thread`` to -- not a counter the node keeps.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop

from meshaios.ids import short
from meshaios.testing.inproc import InProcessMesh
from tests.integration import funcs

N_TASKS = 16  # the owner's whole window (8 per slot x 2 workers): all of it lands on node 0
SECONDS = 0.4


def run(fn: Callable[[], Awaitable[Any]]) -> Any:
    return uvloop.run(asyncio.wait_for(fn(), 60))


def executions(path: Path, mesh: InProcessMesh) -> list[tuple[int, str]]:
    """``(task index, node name)`` per line of evidence; the worker thread's name says which node ran it."""
    by_short = {f"mesh-{short(n.node_id)}": n.name for n in mesh.nodes}
    out = []
    for line in path.read_text().splitlines():
        i, _pid, thread = line.split()
        out.append((int(i), by_short[thread.rsplit("-", 1)[0]]))
    return out


async def pile_up(steal: bool) -> tuple[float, list[tuple[int, str]], dict[str, dict[str, Any]], dict[str, int]]:
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "runs.log"
        async with InProcessMesh(3, placement="local", steal=steal) as mesh:
            await mesh.wait_converged()
            c = await mesh.client(0, spread=1)  # node 0 owns and places (locally) every task
            t0 = time.perf_counter()
            futs = [c.submit(funcs.sleep_and_log, i, SECONDS, str(log)) for i in range(N_TASKS)]
            assert await c.gather(futs) == [i * i for i in range(N_TASKS)]
            makespan = time.perf_counter() - t0
            assert c.stats["duplicates"] == 0
            runs = executions(log, mesh)
            # the client's record of who ran each task agrees with the evidence
            names = {n.node_id: n.name for n in mesh.nodes}
            assert sorted((i, names[f.node]) for i, f in enumerate(futs)) == sorted(runs)
            steal_status = {n.name: n.status()["node"]["steal"] for n in mesh.nodes}
            return makespan, runs, steal_status, dict(mesh.nodes[0].owner.counters)


def test_idle_peers_steal_from_a_pile_up_and_each_task_runs_exactly_once() -> None:
    on, runs, steal, owner = run(lambda: pile_up(steal=True))
    off, runs_off, steal_off, _ = run(lambda: pile_up(steal=False))
    print(f"\n{N_TASKS} x {SECONDS} s tasks placed on n0: makespan {on:.2f} s with stealing, {off:.2f} s without")
    print("executions per node with stealing:", dict(Counter(n for _, n in runs)))

    # without stealing, the pile-up stays where it landed
    assert {n for _, n in runs_off} == {"n0"}
    assert all(s["stolen_in"] == s["stolen_out"] == 0 for s in steal_off.values())

    # with it, every task ran exactly once, and both idle peers took a share
    assert sorted(i for i, _ in runs) == list(range(N_TASKS))
    elsewhere = [i for i, n in runs if n != "n0"]
    assert {n for _, n in runs} == {"n0", "n1", "n2"}
    # each task moved at most once, from the pile-up to a thief: thieves never give work away, the victim never
    # takes any, and what ran elsewhere is exactly what the victim handed over and its owner re-pointed
    assert steal["n0"]["stolen_out"] == len(elsewhere) == steal["n1"]["stolen_in"] + steal["n2"]["stolen_in"]
    assert steal["n0"]["stolen_in"] == steal["n1"]["stolen_out"] == steal["n2"]["stolen_out"] == 0
    assert owner["moved"] == len(elsewhere)
    assert owner["replaced"] == 0
    assert on < 0.8 * off, (on, off)


def test_tasks_whose_stored_inputs_are_on_the_busy_node_are_stolen_and_their_thieves_fetch_them() -> None:
    """A shuffle's map tasks run next to their inputs: queued behind each other there, nothing was fetched for
    them, so an idle peer may take them and fetch the input itself (before, any task with a stored input was
    pinned where it was queued, and the other nodes idled)."""

    async def go() -> tuple[list[tuple[int, str]], dict[str, dict[str, Any]], dict[str, int]]:
        with tempfile.TemporaryDirectory() as tmp:
            log = Path(tmp) / "runs.log"
            async with InProcessMesh(3, placement="local", steal=True) as mesh:
                await mesh.wait_converged()
                c = await mesh.client(0, spread=1)  # node 0 places every task on itself
                arrays = [c.submit(funcs.make_array, 1 << 17, i) for i in range(N_TASKS)]  # 1 MiB each, on n0
                futs = [c.submit(funcs.sum_after_sleep_and_log, i, a, SECONDS, str(log)) for i, a in enumerate(arrays)]
                want = [float(funcs.make_array(1 << 17, i).sum()) for i in range(N_TASKS)]
                assert await c.gather(futs) == want
                fetched = {n.name: n.counters["fetched_bytes"] for n in mesh.nodes}
                return executions(log, mesh), {n.name: n.status()["node"]["steal"] for n in mesh.nodes}, fetched

    runs, steal, fetched = run(go)
    assert sorted(i for i, _ in runs) == list(range(N_TASKS))
    elsewhere = [i for i, n in runs if n != "n0"]
    assert elsewhere, runs
    assert steal["n0"]["stolen_out"] == len(elsewhere)
    # each thief fetched the input of every task it took (1 MiB and more each), the busy node nothing
    assert fetched["n0"] == 0
    for name in ("n1", "n2"):
        assert fetched[name] >= steal[name]["stolen_in"] * (1 << 20), (name, fetched, steal)


def test_a_thief_that_dies_after_stealing_has_its_tasks_replaced_and_the_client_gets_each_result_once() -> None:
    async def main() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            log = Path(tmp) / "runs.log"
            async with InProcessMesh(3, placement="local") as mesh:
                await mesh.wait_converged()
                c = await mesh.client(0, spread=1)
                futs = [c.submit(funcs.sleep_and_log, i, 1.0, str(log)) for i in range(N_TASKS)]
                thief = mesh.nodes[1]
                deadline = time.monotonic() + 10
                while thief.status()["node"]["steal"]["stolen_in"] == 0:
                    assert time.monotonic() < deadline, "node 1 never stole"
                    await asyncio.sleep(0.02)
                mesh.kill(1)  # silent at once, mid-task: what it stole must be re-placed by the owner
                assert await c.gather(futs) == [i * i for i in range(N_TASKS)]
                assert c.stats["results"] == N_TASKS
                assert c.stats["duplicates"] == 0
                owner = mesh.nodes[0].owner
                assert owner.counters["moved"] >= 1
                assert owner.counters["replaced"] >= 1, "the stolen tasks should have been re-placed"
                assert all(f.node != thief.node_id for f in futs)

    run(main)
