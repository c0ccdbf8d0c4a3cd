"""The local fast path (docs/protocol.md section 1): a node also listens on a unix socket in its user's private
directory, and a client of that user on that host dials it instead of loopback TCP -- with the same CURVE handshake
and ZAP check. Real sockets, in this process (``ZmqTransport`` and ``ZmqConnection``), and real node processes."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from meshaios.errors import AuthError
from meshaios.io.connection import ZmqConnection
from meshaios.io.transport import (
    LOCAL_IPC,
    ZmqOptions,
    ZmqTransport,
    ipc_listening,
    local_endpoint,
    local_socket_path,
)
from meshaios.security import derive_keys, new_token, private_runtime_dir
from meshaios.wire import messages as M
from meshaios.wire.codec import decode, encode
from tests.security.test_transport import _serve, _until

pytestmark = pytest.mark.skipif(not LOCAL_IPC, reason="unix-socket fast path: Linux only")

KEYS = derive_keys(new_token())


@pytest.fixture
def runtime_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private ``$XDG_RUNTIME_DIR`` of this test's own, for this process and the nodes it starts (short: a unix
    socket's path has ~100 bytes)."""
    base = Path(tempfile.mkdtemp(prefix="mio"))  # 0700
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(base))
    yield base / "meshaios"
    shutil.rmtree(base, ignore_errors=True)


async def _round_trip(t: ZmqTransport, received: list[Any], conn: ZmqConnection) -> M.Message:
    """A PING from ``conn`` to the node and a PONG back: what each side sees."""
    conn.send(encode({"t": M.PING}))
    await _until(lambda: bool(received))
    ident, frames = received.pop()
    assert ident == b"c:cli"
    assert decode(frames)["t"] == M.PING
    assert t.reply(ident, encode({"t": M.PONG}))
    async with asyncio.timeout(5):
        msgs = await conn.recv_batch()
    return decode(msgs[0])


def test_a_local_client_reaches_the_node_on_its_unix_socket_with_curve(runtime_dir: Path) -> None:
    async def body(t: ZmqTransport, received: list[Any]) -> None:
        path = local_socket_path(runtime_dir, t.address)
        assert path is not None
        assert t.local_address == f"ipc://{path}"
        st_dir, st_sock = os.lstat(runtime_dir), os.lstat(path)
        assert stat.S_IMODE(st_dir.st_mode) == 0o700  # only this user may reach the socket
        assert st_dir.st_uid == os.getuid()
        assert stat.S_ISSOCK(st_sock.st_mode)
        assert ipc_listening(path)
        conn = ZmqConnection(t.address, KEYS, "cli")
        try:
            assert conn.address == t.address  # what errors and the client's bookkeeping name
            assert conn.endpoint == t.local_address
            assert (await _round_trip(t, received, conn))["t"] == M.PONG
            assert t.stats.auth_ok == 1  # the ZAP handler admitted the mesh key, as over TCP
            assert t.stats.accepted == 1
            assert t.stats.auth_rejected == 0
        finally:
            await conn.close()

    _serve(KEYS, body)
    assert not any(runtime_dir.iterdir())  # the node removed its socket file


def test_the_unix_socket_refuses_another_mesh_key(runtime_dir: Path) -> None:
    other = derive_keys(new_token())

    async def body(t: ZmqTransport, received: list[Any]) -> None:
        conn = ZmqConnection(t.address, other, "cli", handshake_ivl=1.0)
        # the right server key, a key pair of its own: the handshake completes and the ZAP handler says no
        ctx = zmq.Context()
        stranger = ctx.socket(zmq.DEALER)
        stranger.curve_serverkey = KEYS.public
        stranger.curve_publickey, stranger.curve_secretkey = zmq.curve_keypair()
        stranger.setsockopt(zmq.LINGER, 0)
        try:
            assert conn.endpoint == t.local_address  # the file is there for anyone of this user ...
            conn.send(encode({"t": M.PING}))
            stranger.connect(t.local_address)
            stranger.send_multipart(encode({"t": M.PING}))
            # ... but CURVE and ZAP decide, as over TCP
            await _until(lambda: t.stats.zap_denied >= 1 and t.stats.auth_rejected >= 2)
            await _until(lambda: isinstance(conn.diagnose(), AuthError))
            assert received == []
            assert t.stats.auth_ok == 0
        finally:
            stranger.close(0)
            ctx.term()
            await conn.close()

    _serve(KEYS, body)


def test_an_insecure_node_listens_locally_too(runtime_dir: Path) -> None:
    async def body(t: ZmqTransport, received: list[Any]) -> None:
        conn = ZmqConnection(t.address, None, "cli")
        try:
            assert conn.endpoint == t.local_address
            assert t.local_address.startswith("ipc://")
            assert (await _round_trip(t, received, conn))["t"] == M.PONG
        finally:
            await conn.close()

    _serve(None, body)


@pytest.mark.parametrize("how", ["node option off", "client option off", "directory open to others"])
def test_tcp_where_the_unix_socket_is_absent_or_not_private(runtime_dir: Path, how: str) -> None:
    async def body(t: ZmqTransport, received: list[Any]) -> None:
        if how == "node option off":
            assert t.local_address == ""
        else:
            assert t.local_address
        local = how != "client option off"
        if how == "directory open to others":
            os.chmod(runtime_dir, 0o755)
            assert private_runtime_dir() is None
            assert private_runtime_dir(create=True) is None
        assert local_endpoint(t.address) is None or not local
        conn = ZmqConnection(t.address, KEYS, "cli", local=local)
        try:
            assert conn.endpoint == t.address
            assert (await _round_trip(t, received, conn))["t"] == M.PONG
        finally:
            await conn.close()

    _serve(KEYS, body, local_ipc=how != "node option off")
    if how == "node option off":
        assert not runtime_dir.exists()


def test_no_unix_socket_to_a_node_that_died(runtime_dir: Path) -> None:
    """A node killed leaves its socket file, with no listener behind it: a client dialling it would wait for ever;
    the next node to start removes it."""
    assert private_runtime_dir(create=True) == runtime_dir
    address = "tcp://127.0.0.1:9"
    path = local_socket_path(runtime_dir, address)
    assert path is not None
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))
    dead.listen()
    assert ipc_listening(path)
    assert local_endpoint(address) == f"ipc://{path}"
    dead.close()
    assert path.exists()
    assert not ipc_listening(path)
    assert local_endpoint(address) is None
    other = runtime_dir / "not-a-socket"
    other.write_text("")

    async def body(t: ZmqTransport, received: list[Any]) -> None:
        assert t.local_address

    _serve(KEYS, body)  # the next node to start sweeps such files away (only sockets with no listener)
    assert sorted(runtime_dir.iterdir()) == [other]


def accepted_on(endpoint: str) -> int:
    """Connections a node accepted on its unix socket and holds now (``/proc/net/unix`` lists them under its path,
    connected: state 03)."""
    want = endpoint.removeprefix("ipc://")
    with open("/proc/net/unix") as fh:
        return sum(1 for line in fh if line.split()[-1] == want and line.split()[5] == "03")


def test_a_node_dials_a_peer_of_its_host_on_the_unix_socket(runtime_dir: Path) -> None:
    async def body(t: ZmqTransport, received: list[Any]) -> None:
        for local in (True, False):
            peer = ZmqTransport(ZmqOptions(node_id="peer", local_ipc=local), KEYS)
            try:
                await peer.start()
                assert peer.send(t.address, encode({"t": M.PING}))
                await _until(lambda: bool(received))
                ident, frames = received.pop()
                assert ident == b"n:peer"
                assert decode(frames)["t"] == M.PING
                # its DEALER came in on the unix socket; with ``local_ipc`` off, over TCP
                assert accepted_on(t.local_address) == int(local)
            finally:
                await peer.close()
            await _until(lambda: accepted_on(t.local_address) == 0)

    _serve(KEYS, body)


def test_a_second_node_does_not_take_a_live_nodes_socket(runtime_dir: Path) -> None:
    """Two nodes announcing one address (one in another network namespace, say): the second keeps off the first's
    unix socket rather than steal it (libzmq would replace the file)."""

    async def body(t: ZmqTransport, received: list[Any]) -> None:
        second = ZmqTransport(ZmqOptions(), KEYS)
        second.address = t.address
        r = second.ctx.socket(zmq.ROUTER)
        try:
            assert second._bind_local(r, runtime_dir) == ""
            assert local_endpoint(t.address) == t.local_address
        finally:
            r.close(0)
            second.ctx.term()

    _serve(KEYS, body)


def test_no_socket_for_an_address_it_cannot_name(tmp_path: Path) -> None:
    netns = os.stat("/proc/self/ns/net").st_ino
    assert local_socket_path(tmp_path, "tcp://127.0.0.1:5577") == tmp_path / f"127.0.0.1-5577.{netns}"
    assert local_socket_path(tmp_path, "tcp://[::1]:5577") == tmp_path / f"::1-5577.{netns}"
    assert local_socket_path(tmp_path, "ipc:///x") is None
    assert local_socket_path(tmp_path, "tcp://a/b:1") is None
    assert local_socket_path(Path("/" + "d" * 120), "tcp://127.0.0.1:5577") is None  # longer than a sun_path


def test_the_private_directory_is_refused_unless_it_is_this_users_alone(runtime_dir: Path, tmp_path: Path) -> None:
    assert private_runtime_dir() is None  # not made yet, and not made by a client's look-up
    assert private_runtime_dir(create=True) == runtime_dir
    assert stat.S_IMODE(os.lstat(runtime_dir).st_mode) == 0o700
    os.chmod(runtime_dir, 0o710)
    assert private_runtime_dir(create=True) is None  # open to the group: refused, never loosened or tightened
    assert stat.S_IMODE(os.lstat(runtime_dir).st_mode) == 0o710
    runtime_dir.rmdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    runtime_dir.symlink_to(elsewhere)
    assert private_runtime_dir(create=True) is None  # a link (someone else's, perhaps) is not followed
    runtime_dir.unlink()
    if os.getuid() == 0:
        runtime_dir.mkdir(mode=0o700)
        os.chown(runtime_dir, 65534, 65534)
        assert private_runtime_dir(create=True) is None  # another user's
