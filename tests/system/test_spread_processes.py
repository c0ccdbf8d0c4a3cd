"""Ownership spread over real node processes (meshaios/shards.py): a client's tasks are owned by three nodes, each
node's status counts the tasks it owns, and losing one owner to SIGKILL and another to SIGSTOP loses nothing: every
future completes once, with the right value."""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import pytest

from meshaios.chaos import workload as W
from meshaios.testing.localmesh import LocalMesh, wait_for

pytestmark = pytest.mark.system


def _owned(mesh: LocalMesh, index: int) -> int:
    with mesh.client(index, connect_timeout=2.0, spread=1) as c:
        return int(c.status(timeout=2.0)["node"]["owner"]["submitted"])


def test_each_node_owns_a_share_of_one_clients_tasks() -> None:
    with LocalMesh(3) as mesh:
        with mesh.client(0, spread=3) as c:
            wait_for(lambda: len(c._async.core.shards) == 3, 20, what="three owners")
            futs = c.map(W.work, range(600), [0.0] * 600)
            assert c.gather(futs, timeout=60) == [W.expected_work(i) for i in range(600)]
        owned = [_owned(mesh, p.index) for p in mesh.procs]
        assert sum(owned) == 600, owned
        assert min(owned) >= 100, owned


def test_an_owner_killed_and_another_paused_lose_nothing() -> None:
    tasks = 2000
    with LocalMesh(4) as mesh, mesh.client(0, spread=3, heartbeat_timeout=2.0) as c:
        wait_for(lambda: len(c._async.core.shards) == 3, 20, what="three owners")
        wait_for(lambda: len(c._async._known_nodes) >= 4, 10, what="the client learns the mesh")
        completions: dict[str, int] = {}
        lock = threading.Lock()

        def count(f: Any) -> None:
            with lock:
                completions[f.key] = completions.get(f.key, 0) + 1

        futs = c.map(W.work, range(tasks), [0.004] * tasks)
        level = futs[:64]
        while len(level) > 1:  # a tree whose inputs are owned by all three shards
            level = [c.submit(W.add, level[i], level[i + 1]) for i in range(0, len(level), 2)]
        dag = level[0]
        for f in [*futs, dag]:
            f.add_done_callback(count)
        wait_for(lambda: sum(f.done() for f in futs) >= 200, 60, what="the job under way")
        shards = c._async.core.shards
        by_node = {p.node_id: p.index for p in mesh.procs}
        killed, paused = by_node[shards[1].node], by_node[shards[2].node]
        mesh.kill(killed, signal.SIGKILL)
        mesh.kill(paused, signal.SIGSTOP)
        try:
            time.sleep(6.0)
        finally:
            mesh.kill(paused, signal.SIGCONT)
        values = c.gather(futs, timeout=120)
        assert values == [W.expected_work(i) for i in range(tasks)]
        assert dag.result(timeout=60) == sum(W.expected_work(i) for i in range(64))
        assert c._async.failovers >= 2, c._async.failovers
        assert {s.sid: s.epoch >= 1 for s in shards.values()} == {0: False, 1: True, 2: True}
        wait_for(lambda: len(completions) == tasks + 1, 10, what="every callback")
        assert set(completions.values()) == {1}  # each future completed once
        assert c.stats["results"] == tasks + 63
