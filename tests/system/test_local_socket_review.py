"""Review of the local fast path's lifecycle with real node processes (docs/protocol.md section 1): a node
SIGKILLed leaves its socket file and its unix-socket client fails over as a TCP one does (no future waits for ever);
a node started again on the same port listens there again, and a new client dials it there."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest

from meshaios.io.transport import LOCAL_IPC, ipc_listening, local_endpoint, local_socket_path
from meshaios.testing.localmesh import LocalMesh, wait_for
from tests.integration import funcs
from tests.security.test_local_ipc import runtime_dir  # noqa: F401 - the fixture: a private $XDG_RUNTIME_DIR

pytestmark = [pytest.mark.system, pytest.mark.skipif(not LOCAL_IPC, reason="unix-socket fast path: Linux only")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_unix_socket_client_fails_over_from_a_killed_node_and_a_restart_listens_again(
    runtime_dir: Path,  # noqa: F811
) -> None:
    port = _free_port()
    with LocalMesh(2, discovery=False, per_node_args={0: ["--port", str(port)]}) as mesh:
        address = mesh.address(0)
        assert address == f"tcp://127.0.0.1:{port}"
        path = local_socket_path(runtime_dir, address)
        assert path is not None
        with mesh.client(0) as c:
            assert c.submit(funcs.square, 3).result(timeout=30) == 9
            wait_for(lambda: address in {conn.address for conn in c._async._conns.values()}, timeout=15, what="conn")
            endpoints = {conn.address: conn.endpoint for conn in c._async._conns.values()}
            assert endpoints[address] == f"ipc://{path}"  # the entry node on its unix socket
            mesh.kill(0, signal.SIGKILL)
            assert path.is_socket()  # a killed node leaves its file ...
            assert not ipc_listening(path)  # ... with nobody behind it
            assert local_endpoint(address) is None
            # the client fails over to node 1 as from a TCP connection: every future completes
            futs = [c.submit(funcs.square, i) for i in range(20)]
            assert [f.result(timeout=60) for f in futs] == [i * i for i in range(20)]
        mesh.spawn(0)  # the same port again
        mesh.wait_ready()
        assert mesh.address(0) == address
        wait_for(lambda: ipc_listening(path), timeout=15, what="the restarted node's unix socket")
        assert local_endpoint(address) == f"ipc://{path}"
        with mesh.client(0) as c2:
            assert c2.submit(funcs.add, 2, 3).result(timeout=30) == 5
            mine = {conn.endpoint for conn in c2._async._conns.values() if conn.address == address}
            assert mine == {f"ipc://{path}"}
    assert not any(runtime_dir.iterdir())  # both nodes removed their files on a clean stop
