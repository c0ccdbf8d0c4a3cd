"""A budget for unauthenticated connections (issue 14): connections held open without ever authenticating ran a
node out of file descriptors -- new clients took 4.3 s to connect, 1 round in 5 failed, nothing was logged. Now at
most ``max_unproven`` connections may be open without having delivered a message; beyond it the oldest is closed
(``io/transport.py``), and a warning says so."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from typing import Any

import pytest
import zmq

from meshaios import Client
from meshaios.testing.localmesh import LocalMesh, wait_for
from meshaios.wire import messages as M
from meshaios.wire.codec import encode
from tests.security import canary
from tests.security.conftest import node_view

pytestmark = pytest.mark.system

HOLDER = """
import socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
held = []
for _ in range(n):
    s = socket.create_connection((host, port), timeout=5)
    held.append(s)  # connected, silent: no greeting, no handshake
print(len(held), flush=True)
sys.stdin.read()  # hold them until told to stop
"""


def test_held_connections_cannot_starve_a_node_of_descriptors() -> None:
    held = 2000
    with LocalMesh(1, discovery=False, env={"MESHAIOS_MAX_UNPROVEN": "64"}, startup_timeout=60) as mesh:
        host, port = mesh.address(0).removeprefix("tcp://").rsplit(":", 1)
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLDER, host, port, str(held)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert holder.stdout is not None
            assert int(holder.stdout.readline()) == held
            times = []
            for i in range(5):
                t0 = time.monotonic()
                with Client(mesh.address(0), token=mesh.token, connect_timeout=5) as c:
                    assert c.submit(canary.noop, i).result(timeout=5) == i
                    times.append(time.monotonic() - t0)
                    view = node_view(c)
        finally:
            holder.communicate(input="", timeout=30)
        st = view["transport"]
        assert st["unproven_evicted"] >= held - 64 - 10  # monitor events may lag a little behind
        assert st["unproven_open"] <= 64 + 10
        assert max(times) < 1.0, times
        log = wait_for(lambda: "not authenticated (cap 64)" in mesh.log(0) and mesh.log(0), timeout=5)
        assert log.count("not authenticated (cap 64)") <= 3  # rate-limited
        print(f"\n{held} held connections: clients connected and ran a task in {max(times) * 1e3:.0f} ms at worst; "
              f"{st['unproven_evicted']} closed, {st['unproven_open']} open unauthenticated")  # fmt: skip


def test_running_out_of_descriptors_is_logged(zctx: zmq.Context[Any]) -> None:
    """Connections that do authenticate (anyone can, on an insecure node) are not capped: past the open-files
    limit the node cannot accept more, and now it says so instead of failing silently."""
    with LocalMesh(1, insecure=True, discovery=False, startup_timeout=60) as mesh:
        pid = mesh.procs[0].pid
        in_use = len(os.listdir(f"/proc/{pid}/fd"))
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (in_use + 40, in_use + 40))
        socks = []
        for _ in range(80):  # each sends a message at once: proven, so not closed as unauthenticated
            s = zctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(mesh.address(0))
            s.send_multipart(encode({"t": M.PING}))
            socks.append(s)
        log = wait_for(lambda: "cannot accept connections" in mesh.log(0) and mesh.log(0), timeout=15)
        assert "open-files limit" in log
        for s in socks:
            s.close(0)
        # the node closes its ends as it notices: a client that connected before then could find it still at its
        # limit, its handshake cut off half way (seen once in CI: the client took that for refused credentials)
        wait_for(lambda: len(os.listdir(f"/proc/{pid}/fd")) < in_use + 20, timeout=15, what="the node freed its fds")
        with mesh.client(0) as c:  # once they are gone, the node accepts again
            assert node_view(c)["transport"]["accept_failed"] > 0
