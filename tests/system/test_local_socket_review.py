"""Review of the local fast path's lifecycle with real node processes (docs/protocol.md section 1): a node
SIGKILLed leaves its socket file and its unix-socket client fails over as a TCP one does (no future waits for ever);
a node started again on the same port listens there again, and a new client dials it there."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest

from meshaios.chaos.runner import _fault
from meshaios.io.transport import LOCAL_IPC, ipc_listening, local_endpoint, local_socket_path
from meshaios.testing.localmesh import LocalMesh, wait_for
from tests.integration import funcs
from tests.security.test_local_ipc import (
    accepted_on,
    runtime_dir,  # noqa: F401 - the fixture: a private $XDG_RUNTIME_DIR
)

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


def _state_of(mesh: LocalMesh, index: int, other: int) -> str | None:
    with mesh.client(index, connect_timeout=2.0, spread=1) as c:
        members = {m["id"]: m["state"] for m in c.status(timeout=2.0)["members"]}
    state: str | None = members.get(mesh.by_index(other).node_id)
    return state


def test_the_chaos_cut_still_cuts_nodes_that_talk_on_unix_sockets(runtime_dir: Path) -> None:  # noqa: F811
    """``meshaios chaos`` partitions by telling nodes to drop each other's traffic (``--fault-injection``): with the
    nodes' lanes on their unix sockets, not loopback TCP, the cut still bites (each calls the other dead) and heals."""
    with LocalMesh(2, discovery=False, extra_args=["--fault-injection"]) as mesh:
        paths = [local_socket_path(runtime_dir, mesh.address(i)) for i in range(2)]
        assert all(p is not None for p in paths)
        # the peers' lanes came in on the unix sockets: the cut below is made on them
        wait_for(lambda: all(accepted_on(f"ipc://{p}") >= 1 for p in paths), timeout=15, what="peer lanes on ipc")
        wait_for(lambda: _state_of(mesh, 0, 1) == "alive" == _state_of(mesh, 1, 0), timeout=15, what="both alive")
        procs = [mesh.by_index(i) for i in range(2)]
        _fault(mesh, 0, [procs[1]], [])
        _fault(mesh, 1, [procs[0]], [])
        wait_for(
            lambda: _state_of(mesh, 0, 1) in ("suspect", "dead") and _state_of(mesh, 1, 0) in ("suspect", "dead"),
            timeout=20,
            what="each node to lose the other",
        )
        _fault(mesh, 0, [], [])
        _fault(mesh, 1, [], [])
        wait_for(lambda: _state_of(mesh, 0, 1) == "alive" == _state_of(mesh, 1, 0), timeout=30, what="healed")


def test_a_unix_socket_client_reaches_its_node_restarted_without_the_local_socket(
    runtime_dir: Path,  # noqa: F811
) -> None:
    """The client's connection dials the unix socket it found at first; the node is killed and started again on
    its port with ``local_ipc`` off, which sweeps the dead file: the client must reach it over TCP, not wait for a
    socket file that no longer comes."""
    port = _free_port()
    with LocalMesh(1, discovery=False, per_node_args={0: ["--port", str(port)]}) as mesh:
        address = mesh.address(0)
        path = local_socket_path(runtime_dir, address)
        assert path is not None
        with mesh.client(0) as c:
            assert c.submit(funcs.square, 3).result(timeout=30) == 9
            assert {conn.endpoint for conn in c._async._conns.values()} == {f"ipc://{path}"}
            mesh.kill(0, signal.SIGKILL)
            mesh.env["MESHAIOS_LOCAL_IPC"] = "0"
            mesh.spawn(0)
            mesh.wait_ready()
            assert mesh.address(0) == address
            assert not path.exists()  # swept by the restarted node, which does not listen locally
            futs = [c.submit(funcs.square, i) for i in range(10)]
            assert [f.result(timeout=60) for f in futs] == [i * i for i in range(10)]
            assert {conn.endpoint for conn in c._async._conns.values()} == {address}
