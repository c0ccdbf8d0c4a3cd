"""Live work stealing between real ``meshaios node`` processes, with SIGKILL of a thief.

The owner (node 0) places with ``--placement local``: its whole window (8 tasks per slot x 2 workers = 16) lands on
itself while nodes 1 and 2 sit idle -- the pile-up that stealing must repair. Tasks sleep (the makespan must not
depend on how busy this two-core machine is) and then append ``i pid thread`` to a file: evidence of every
execution written by the task itself, not by the code under test.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from meshaios.testing.localmesh import LocalMesh, wait_for
from tests.integration import funcs

pytestmark = [pytest.mark.system, pytest.mark.usefixtures("one_owner")]  # node 0 owns the tasks

N_TASKS = 16


def runs_in(path: Path) -> list[tuple[int, int]]:
    """``(task index, pid)`` for every execution the tasks recorded."""
    out = []
    for line in path.read_text().splitlines():
        i, pid, _thread = line.split()
        out.append((int(i), int(pid)))
    return out


def converge(mesh: LocalMesh) -> None:
    """Every node sees the two others alive (what a thief needs to hear its victim's load)."""
    for i in range(3):
        with mesh.client(i) as c:
            wait_for(lambda c=c: sum(m["state"] == "alive" for m in c.status()["members"]) == 2, timeout=15)


def status_json(mesh: LocalMesh, index: int) -> dict[str, Any]:
    """What ``meshaios status --json`` prints: the steal counters are meant to be read there."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "meshaios",
            "status",
            mesh.address(index),
            "--json",
            "--token-file",
            str(mesh.token_file),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env=mesh.client_env(),
        check=True,
    )
    node: dict[str, Any] = json.loads(out.stdout)["node"]
    return node


def pile_up(
    steal: bool, log: Path, seconds: float
) -> tuple[float, list[tuple[int, int]], list[int], list[dict[str, Any]]]:
    args = ["--placement", "local"] + ([] if steal else ["--no-steal"])
    with LocalMesh(3, discovery=False, extra_args=args) as mesh:
        converge(mesh)
        with mesh.client(0) as c:
            t0 = time.perf_counter()
            futs = [c.submit(funcs.sleep_and_log, i, seconds, str(log)) for i in range(N_TASKS)]
            assert c.gather(futs, timeout=60) == [i * i for i in range(N_TASKS)]
            makespan = time.perf_counter() - t0
            assert c.stats["duplicates"] == 0
        status = [status_json(mesh, i) for i in range(3)]
        return makespan, runs_in(log), [p.pid for p in mesh.procs], status


@pytest.mark.timeout(300)  # two 3-node meshes, one after the other: 29 s on a quiet box, 120+ s seen at load 7
def test_idle_nodes_steal_from_a_pile_up_faster_and_every_task_runs_exactly_once(tmp_path: Path) -> None:
    seconds = 0.5
    on, runs, pids, status = pile_up(True, tmp_path / "on.log", seconds)
    off, runs_off, pids_off, status_off = pile_up(False, tmp_path / "off.log", seconds)
    per_pid = Counter(pid for _, pid in runs)
    print(
        f"\n{N_TASKS} x {seconds} s on node0 (--placement local): makespan {on:.2f} s with stealing, {off:.2f} s with"
        f" --no-steal; executions per node with stealing: {[per_pid[p] for p in pids]}"
    )

    assert {pid for _, pid in runs_off} == {pids_off[0]}  # without stealing the pile-up stays where it landed
    assert all(s["steal"]["stolen_in"] == s["steal"]["stolen_out"] == 0 for s in status_off)
    assert status_off[0]["steal"]["enabled"] is False

    # every task ran exactly once, in one of the mesh's processes, and idle nodes took a share (both, as a rule:
    # a thief that hears of the pile-up late -- SWIM meta, one probe period -- may find it gone)
    assert sorted(i for i, _ in runs) == list(range(N_TASKS))
    assert set(per_pid) <= set(pids)
    assert len(per_pid) >= 2
    # nothing moved twice (no bouncing): only the victim gave work away, only the idle nodes took any, and the
    # executions the evidence shows outside node 0 are exactly what it handed over -- and its owner re-pointed
    stolen_in = [s["steal"]["stolen_in"] for s in status]
    stolen_out = [s["steal"]["stolen_out"] for s in status]
    elsewhere = N_TASKS - per_pid[pids[0]]
    assert stolen_out == [elsewhere, 0, 0]
    assert stolen_in == [0, per_pid[pids[1]], per_pid[pids[2]]]
    assert status[0]["owner"]["moved"] == elsewhere
    assert sum(s["steal"]["steal_requests"] for s in status) >= 2
    assert on < 0.8 * off, (on, off)


def test_a_thief_killed_after_it_stole_loses_nothing_and_duplicates_nothing(tmp_path: Path) -> None:
    log = tmp_path / "runs.log"
    with LocalMesh(3, discovery=False, extra_args=["--placement", "local"]) as mesh:
        converge(mesh)
        thief = mesh.by_index(1)
        with mesh.client(0) as c, mesh.client(1) as tc:
            futs = [c.submit(funcs.sleep_and_log, i, 1.0, str(log)) for i in range(N_TASKS)]
            wait_for(lambda: tc.status()["node"]["steal"]["stolen_in"] > 0, timeout=15, interval=0.02, what="a steal")
            mesh.kill(1)  # SIGKILL, mid-task: what it stole must be re-placed by the owner
            assert c.gather(futs, timeout=60) == [i * i for i in range(N_TASKS)]
            assert c.stats["results"] == N_TASKS
            assert c.stats["duplicates"] == 0
            assert all(f.node != thief.node_id for f in futs)
            owner = c.status()["node"]["owner"]
        assert owner["moved"] >= 1
        assert owner["replaced"] >= 1
        runs = runs_in(log)
        # every task ran exactly once: the thief died before finishing anything it took (1 s tasks, killed right
        # after its first steal), and what it held ran once elsewhere
        assert sorted(i for i, _ in runs) == list(range(N_TASKS))
        assert thief.pid not in {pid for _, pid in runs}


def test_short_tasks_prefetched_behind_blocking_ones_are_taken_back_and_stolen(tmp_path: Path) -> None:
    """Node 0's two workers are held by tasks that block (until a file exists); 20 tasks of a kernel known to be
    tiny were prefetched to those workers behind them. They are taken back (PREFETCH_STUCK) and an idle node
    steals and runs them while the blockers still block -- before, they waited for the blockers."""
    from tests.system import sched_funcs

    log, gate = str(tmp_path / "starts"), str(tmp_path / "gate")
    with LocalMesh(2, workers=2, discovery=False, extra_args=["--placement", "local"]) as mesh:
        for i in range(2):
            with mesh.client(i) as c:
                wait_for(lambda c=c: sum(m["state"] == "alive" for m in c.status()["members"]) == 1, timeout=15)
        with mesh.client(0) as c:
            try:
                assert len(c.gather(c.map(sched_funcs.mark, [log] * 50, [f"W{i}" for i in range(50)]))) == 50
                blockers = c.map(sched_funcs.gated, [log] * 2, ["B0", "B1"], [gate] * 2)
                wait_for(lambda: {"B0", "B1"} <= set(sched_funcs.started(log)), 30, what="both workers blocked")
                short = c.map(sched_funcs.mark, [log] * 20, [f"S{i}" for i in range(20)])
                assert len(c.gather(short, timeout=60)) == 20
                assert "B0:end" not in sched_funcs.started(log)  # the blockers still block
                node0 = c.status()["node"]
                assert node0["counters"].get("prefetch_recalled", 0) >= 1
                assert node0["steal"]["stolen_out"] >= 1
            finally:
                Path(gate).touch()
            assert c.gather(blockers, timeout=60) == ["B0", "B1"]
