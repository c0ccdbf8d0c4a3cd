"""A user's function proven tiny runs inline on a real node process's event loop (its main thread), under the
guard of tasks/guard.py: when a later call blocks, the node answers its client and its peer's SWIM probes
meanwhile, the task runs again on a worker and its one result is the worker's, and the function never runs inline
there again."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshaios.tasks.execcore import INLINE_USER_STREAK
from meshaios.testing.localmesh import LocalMesh, wait_for
from tests.integration import funcs

pytestmark = pytest.mark.system


def test_a_proven_tiny_function_that_blocks_inline_is_interrupted_and_the_node_keeps_answering(tmp_path: Path) -> None:
    with LocalMesh(2, workers=1) as mesh, mesh.client(0, spread=1) as c, mesh.client(1, spread=1) as peer:
        node0 = c.node["node"]
        wait_for(lambda: any(m["id"] == node0 and m["state"] == "alive" for m in peer.status()["members"]), 20,
                 what="the peer sees node 0")  # fmt: skip
        opened, warm = tmp_path / "open", str(tmp_path / "warm")
        opened.touch()

        def tiny() -> str:
            return str(c.submit(funcs.thread_at_gate, str(opened), warm).result(30))

        where = [tiny() for _ in range(INLINE_USER_STREAK)]
        while where[-1] != "MainThread":  # a slow run (its first imports the module) starts the count again
            assert len(where) < 20 * INLINE_USER_STREAK, where
            where.append(tiny())
        gate, started = tmp_path / "gate", tmp_path / "started"
        slow = c.submit(funcs.thread_at_gate, str(gate), str(started))  # waits until the test opens the gate
        for _ in range(5):  # while it waits: its node answers the client, and its peer still finds it alive
            assert c.ping(timeout=5.0) >= 0
            assert any(m["id"] == node0 and m["state"] == "alive" for m in peer.status()["members"])
        wait_for(lambda: started.exists() and started.read_bytes().count(b"\n") == 2, 30,
                 what="interrupted inline, the call started again on a worker")  # fmt: skip
        assert not slow.done()
        gate.touch()
        worker = slow.result(30)
        assert worker.startswith("mesh-")  # the run that counted is the worker's
        counters = c.status()["node"]["counters"]
        assert counters["inline_interrupted"] == 1
        assert counters["inline_revoked"] == 1
        assert {tiny() for _ in range(2 * INLINE_USER_STREAK)} == {worker}
