"""``meshaios.LocalMesh`` as a notebook uses it: started and closed by hand, outside a ``with`` block."""

from __future__ import annotations

import os

import pytest

import meshaios
from meshaios.testing.localmesh import LocalMesh

pytestmark = pytest.mark.system


def test_a_local_mesh_started_and_closed_by_hand_runs_work_and_leaves_no_process() -> None:
    assert meshaios.LocalMesh is LocalMesh
    mesh = meshaios.LocalMesh(2)
    try:
        mesh.start()
        pids = [p.pid for p in mesh.procs]
        assert len(pids) == 2
        assert all(p.alive() for p in mesh.procs)
        c = mesh.client()
        try:
            assert c.gather(c.map(pow, range(10), [2] * 10), timeout=60) == [i * i for i in range(10)]
        finally:
            c.close()
    finally:
        mesh.close()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # reaped by close(): no such process any more
    assert not mesh.root.exists()
