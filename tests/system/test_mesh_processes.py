"""Tier three: real `meshaios node` processes on loopback, real mDNS, real CURVE, real SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest

from meshaios import AuthError, Client, TaskError
from meshaios.testing.localmesh import LocalMesh, wait_for
from tests.integration import funcs

pytestmark = pytest.mark.system


def alive_view(c: Client) -> set[str]:
    st = c.status()
    return {st["node"]["id"]} | {m["id"] for m in st["members"] if m["state"] == "alive"}


def test_three_nodes_find_each_other_by_mdns_within_3s(mesh3: LocalMesh) -> None:
    ids = {p.node_id for p in mesh3.procs}
    clients = [mesh3.client(i) for i in range(3)]
    try:
        t0 = time.monotonic()
        wait_for(lambda: all(alive_view(c) == ids for c in clients), timeout=3.0, what="mDNS discovery")
        print(f"all three saw each other {time.monotonic() - t0:.2f} s after the last node was ready")
    finally:
        for c in clients:
            c.close()


def test_status_command_lists_all_three_alive(mesh3: LocalMesh) -> None:
    ids = {p.node_id for p in mesh3.procs}
    for i in range(3):
        with mesh3.client(i) as c:
            wait_for(lambda c=c: alive_view(c) == ids, timeout=5.0)
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "meshaios",
                "status",
                mesh3.address(i),
                "--json",
                "--token-file",
                str(mesh3.token_file),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            env=mesh3.client_env(),
            check=True,
        )
        data = json.loads(out.stdout)
        seen = {data["node"]["id"]} | {m["id"] for m in data["members"] if m["state"] == "alive"}
        assert seen == ids
        table = subprocess.run(
            [sys.executable, "-m", "meshaios", "status", mesh3.address(i), "--token-file", str(mesh3.token_file)],
            capture_output=True,
            text=True,
            timeout=30,
            env=mesh3.client_env(),
            check=True,
        ).stdout
        assert "3 alive |" in table  # the mesh line
        assert sum(ln.split()[3:4] == ["alive"] for ln in table.splitlines()) == 3  # one row per node
        for p in mesh3.procs:
            assert p.name in table


def test_map_of_10000_tiny_tasks_is_correct_and_spread_over_all_nodes(mesh3: LocalMesh) -> None:
    with mesh3.client(1) as c:
        wait_for(lambda: len(alive_view(c)) == 3, timeout=5.0)
        t0 = time.perf_counter()
        futs = c.map(pow, range(10_000), [2] * 10_000)
        results = c.gather(futs, timeout=120)
        dt = time.perf_counter() - t0
        assert results == [x**2 for x in range(10_000)]
        per_node = Counter(f.node for f in futs)
        print(f"10,000 tasks in {dt:.2f} s ({10_000 / dt:.0f}/s), per node: {dict(per_node)}")
        assert set(per_node) == {p.node_id for p in mesh3.procs}


def test_100mb_array_round_trips_bit_identical(mesh3: LocalMesh) -> None:
    a = np.random.default_rng(1).standard_normal(100 * 2**20 // 8)
    with mesh3.client(0) as c:
        out = c.submit(funcs.identity, a).result(timeout=120)
    assert out.dtype == a.dtype
    assert out.shape == a.shape
    assert out.tobytes() == a.tobytes()


def test_raising_task_reports_remote_traceback_and_node_keeps_serving(mesh3: LocalMesh) -> None:
    with mesh3.client(2) as c:
        with pytest.raises(TaskError) as info:
            c.submit(funcs.boom, "remote failure").result(timeout=30)
        assert info.value.remote_type == "ValueError"
        assert "remote failure" in str(info.value)
        assert 'funcs.py", line' in info.value.remote_traceback
        assert c.submit(funcs.square, 12).result(timeout=30) == 144
    assert all(p.alive() for p in mesh3.procs)


def test_wrong_token_client_gets_a_clear_error_fast(mesh3: LocalMesh) -> None:
    t0 = time.monotonic()
    with pytest.raises(AuthError, match="token"):
        Client(mesh3.address(0), token="x" * 43, connect_timeout=3)
    assert time.monotonic() - t0 < 5
    with pytest.raises(AuthError):
        Client(mesh3.address(0), insecure=True, connect_timeout=3)


def test_wrong_token_node_gets_nothing(mesh3: LocalMesh) -> None:
    with LocalMesh(1, discovery=False, extra_args=["--join", mesh3.address(0)]) as rogue:
        with rogue.client(0) as c:
            time.sleep(1.5)  # several SWIM probe periods in which it tries to join through its seed
            assert c.status()["members"] == []
        with mesh3.client(0) as c:
            assert rogue.procs[0].node_id not in {m["id"] for m in c.status()["members"]}


def test_tokenless_node_refuses_to_start(tmp_path: pytest.TempPathFactory) -> None:
    env = dict(os.environ)
    env.pop("MESHAIOS_TOKEN", None)
    out = subprocess.run(
        [sys.executable, "-m", "meshaios", "node", "--bind", "127.0.0.1", "--port", "0", "--no-discovery"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert out.returncode == 2
    assert "no mesh token" in out.stderr
    assert "--insecure" in out.stderr


def test_insecure_mesh_moves_a_100mb_array_with_pickle_impossible() -> None:
    """On an insecure mesh pickle is refused outright, so this round trip proves arrays never use it."""
    a = np.arange(100 * 2**20 // 8, dtype=np.int64)
    allow = ["--allow-module", "tests.integration.funcs"]
    with LocalMesh(2, insecure=True, discovery=False, extra_args=allow) as mesh, mesh.client(0) as c:
        wait_for(lambda: len(alive_view(c)) == 2, timeout=10)
        outs = [c.submit(funcs.identity, a) for _ in range(2)]
        for f in outs:
            assert np.array_equal(f.result(timeout=120), a)


def test_sigkill_during_map_completes_and_survivors_mark_node_dead() -> None:
    with LocalMesh(3) as mesh, mesh.client(0) as c:
        ids = {p.node_id for p in mesh.procs}
        wait_for(lambda: alive_view(c) == ids, timeout=5)
        futs = c.map(funcs.slow_square, range(1000), [0.01] * 1000)
        wait_for(lambda: sum(f.done() for f in futs) > 100, timeout=30)
        victim = mesh.by_index(2)
        t_kill = time.monotonic()
        mesh.kill(2, signal.SIGKILL)
        assert c.gather(futs, timeout=120) == [x * x for x in range(1000)]
        with mesh.client(1) as c1:
            for cl in (c, c1):
                wait_for(
                    lambda cl=cl: any(
                        m["id"] == victim.node_id and m["state"] == "dead" for m in cl.status()["members"]
                    ),
                    timeout=max(0.1, 5 - (time.monotonic() - t_kill)),
                    what="dead verdict within 5 s",
                )
        print(f"dead on both survivors {time.monotonic() - t_kill:.2f} s after SIGKILL")
        # the owner says at INFO what the death cost it
        line = next(ln for ln in mesh.log(0).splitlines() if f"member {victim.node_id[:8]} dead:" in ln)
        assert int(line.split(": ", 2)[2].split(" of the tasks")[0]) > 0, line


def test_runtime_model_learns_gossips_and_survives_a_restart() -> None:
    with LocalMesh(2) as mesh:
        with mesh.client(0, spread=1) as c:  # node 0 owns the tasks: its model learns from them
            wait_for(lambda: len(alive_view(c)) == 2, timeout=10)
            c.gather(c.map(funcs.slow_square, range(60), [0.003] * 60), timeout=60)
            learned = c.status()["node"]["model"]
            assert learned["observations"] >= 50
        with mesh.client(1) as c1:  # the other node knows the kernel from gossip, without having owned it
            wait_for(lambda: c1.status()["node"]["model"]["peer_kernels"] >= 1, timeout=10, what="model gossip")
        mesh.kill(0, signal.SIGTERM)  # a clean stop saves the model
        mesh.by_index(0).proc.wait(timeout=10)
        mesh.spawn(0)
        mesh.wait_ready()
        with mesh.client(0) as c:
            assert c.status()["node"]["model"]["observations"] >= 50
