"""The local fast path with real node processes (docs/protocol.md section 1): a client of the nodes' user on their
host reaches each node on its unix socket, CURVE included, and gets its answers there, and the nodes dial each other
there too; a node told not to listen locally (``MESHAIOS_LOCAL_IPC=0``) is reached over TCP; a node that stops
removes its socket file."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshaios.io.transport import LOCAL_IPC, local_socket_path
from meshaios.testing.localmesh import LocalMesh, wait_for
from tests.integration import funcs
from tests.security.test_local_ipc import (
    accepted_on,
    runtime_dir,  # noqa: F401 - the fixture: a private $XDG_RUNTIME_DIR
)

pytestmark = [pytest.mark.system, pytest.mark.skipif(not LOCAL_IPC, reason="unix-socket fast path: Linux only")]


@pytest.mark.parametrize("local", [True, False])
def test_a_local_client_talks_to_its_nodes_on_their_unix_sockets(runtime_dir: Path, local: bool) -> None:  # noqa: F811
    env = {} if local else {"MESHAIOS_LOCAL_IPC": "0"}
    with LocalMesh(2, discovery=False, env=env) as mesh:
        paths = [local_socket_path(runtime_dir, mesh.address(i)) for i in range(2)]
        with mesh.client(0, spread=2) as c:
            wait_for(lambda: len(c._async._conns) == 2, timeout=15, what="connections to both owners")
            assert [c.submit(funcs.square, i).result(timeout=30) for i in range(20)] == [i * i for i in range(20)]
            assert c.gather(c.map(funcs.add, range(50), range(50)), timeout=30) == [2 * i for i in range(50)]
            endpoints = sorted(conn.endpoint for conn in c._async._conns.values())
            # on each node's unix socket: the client's connection, and at least the other node's SWIM lane
            accepted = [accepted_on(f"ipc://{p}") for p in paths]
            addresses = sorted(conn.address for conn in c._async._conns.values())
        assert addresses == sorted(mesh.address(i) for i in range(2))
        if local:
            assert endpoints == sorted(f"ipc://{p}" for p in paths)
            assert all(p is not None and p.exists() for p in paths)
            assert min(accepted) >= 2, accepted
        else:
            assert endpoints == addresses
            assert not runtime_dir.exists()
    assert not runtime_dir.exists() or not any(runtime_dir.iterdir())  # each node removed its socket file
