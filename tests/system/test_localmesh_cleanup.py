"""Nodes started by ``LocalMesh`` end with the process that started them, even when it is SIGKILLed (no cleanup
code runs): they run in a session of their own, so nothing else would stop them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from meshaios.testing.localmesh import wait_for

pytestmark = pytest.mark.system

STARTER = """
import sys, time
from meshaios.testing.localmesh import LocalMesh
mesh = LocalMesh(1, insecure=True)
mesh.start()
print(" ".join(str(p.pid) for p in mesh.procs), flush=True)
time.sleep(600)
"""


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie waiting for a parent that no longer reaps it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def test_nodes_stop_when_the_process_that_started_them_is_killed() -> None:
    starter = subprocess.Popen([sys.executable, "-c", STARTER], stdout=subprocess.PIPE, text=True)
    pids: list[int] = []
    try:
        assert starter.stdout is not None
        pids = [int(x) for x in starter.stdout.readline().split()]
        assert len(pids) == 1
        assert running(pids[0])
        starter.kill()
        starter.wait(timeout=10)
        wait_for(lambda: not any(running(p) for p in pids), 15, what="the node stopped")
    finally:
        for p in pids:
            if running(p):
                os.kill(p, signal.SIGKILL)
        if starter.poll() is None:
            starter.kill()
            starter.wait()
