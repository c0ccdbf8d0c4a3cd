"""The suite's zygote (meshaios.testing.zygote): a forked node is a process of its own, in a session of its own, with
the caller's environment and log file, and its exit status reaches the caller."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from meshaios.testing import localmesh
from meshaios.testing.localmesh import LocalMesh
from meshaios.testing.zygote import ForkedProcess

pytestmark = pytest.mark.system


def test_a_forked_node_runs_in_its_own_session_and_its_exit_status_comes_back() -> None:
    assert localmesh.ZYGOTE is not None  # tests/conftest.py sets it
    with LocalMesh(1, discovery=False, env={"MESHAIOS_ZYGOTE_PROBE": "yes"}) as mesh:
        p = mesh.by_index(0)
        assert isinstance(p.proc, ForkedProcess)
        assert os.getsid(p.pid) == p.pid  # a session of its own, as start_new_session gives a Popen'd node
        assert os.getppid() != p.pid
        with mesh.client() as c:
            assert c.submit(abs, -3).result(30) == 3
            assert c.submit(os.getenv, "MESHAIOS_ZYGOTE_PROBE").result(30) == "yes"  # the caller's environment
            assert c.submit(os.getcwd).result(30) == os.getcwd()
        assert "listening on" in mesh.log(0)
        assert p.proc.poll() is None
        mesh.kill(0, signal.SIGKILL)
        assert p.proc.returncode == -signal.SIGKILL
        assert not p.alive()


def test_a_forked_command_that_fails_reports_its_exit_status_and_writes_its_log(tmp_path: Path) -> None:
    assert localmesh.ZYGOTE is not None
    log = tmp_path / "out.log"
    proc = localmesh.ZYGOTE.spawn(["node", "--no-such-flag"], dict(os.environ), str(log))
    assert proc.wait(timeout=30) == 2  # argparse's usage error
    assert "unrecognized arguments: --no-such-flag" in log.read_text()
