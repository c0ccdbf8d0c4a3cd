"""Review of the local fast path (docs/protocol.md section 1, docs/security.md): what another local user, a socket
planted where a node's would be, a sweep racing a node that starts, and a path too long for a unix socket can do to
it. Real sockets: a ``ZmqTransport`` in this process, other users' processes (root only: ``setuid`` to nobody)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from meshaios.errors import AuthError
from meshaios.io import transport
from meshaios.io.connection import ZmqConnection
from meshaios.io.transport import LOCAL_IPC, ZmqOptions, ZmqTransport, ipc_listening, local_endpoint
from meshaios.security import derive_keys, new_token, private_runtime_dir
from meshaios.wire import messages as M
from meshaios.wire.codec import encode
from tests.security.test_local_ipc import (
    KEYS,
    _round_trip,
    runtime_dir,  # noqa: F401 - the fixture: a private $XDG_RUNTIME_DIR
)
from tests.security.test_transport import _serve, _until

pytestmark = pytest.mark.skipif(not LOCAL_IPC, reason="unix-socket fast path: Linux only")

NOBODY = 65534
as_root = pytest.mark.skipif(os.getuid() != 0, reason="needs root, to act as another user")


@pytest.fixture
def shared_base(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``$XDG_RUNTIME_DIR`` made like /tmp (1777: anyone may create in it, nobody remove another's entry), so that
    the ``meshaios`` directory's own rights are all that keeps other users out."""
    base = Path(tempfile.mkdtemp(prefix="mio"))
    os.chmod(base, 0o1777)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(base))
    yield base
    subprocess.run(["rm", "-rf", str(base)], check=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_nobody(fn: Callable[[Callable[[str], None]], None]) -> tuple[int, int]:
    """Run ``fn(say)`` in a forked child that became user nobody (no exec: the test's interpreter may lie where
    nobody cannot read); what it says comes back on the pipe returned, with the child's pid."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)

            def say(line: str) -> None:
                os.write(w, (line + "\n").encode())

            fn(say)
            code = 0
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.write(w, f"child error {exc!r}\n".encode())
        finally:
            os._exit(code)
    os.close(w)
    return pid, r


def _read_all(pid: int, r: int) -> str:
    with os.fdopen(r) as fh:
        out = fh.read()
    os.waitpid(pid, 0)
    return out


@as_root
def test_another_user_cannot_reach_a_node_through_its_unix_socket(shared_base: Path) -> None:
    async def body(t: ZmqTransport, received: list[Any]) -> None:
        path = t.local_address.removeprefix("ipc://")
        assert path.startswith(str(shared_base / "meshaios") + "/")

        def probe(say: Callable[[str], None]) -> None:
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(path)
                say("connected")
            except OSError as e:
                say(f"refused {e.errno}")
            try:
                os.listdir(os.path.dirname(path))
                say("listed")
            except OSError as e:
                say(f"unlisted {e.errno}")
            say(f"endpoint {local_endpoint(t.address)}")

        out = await asyncio.to_thread(_read_all, *_as_nobody(probe))
        assert f"refused {errno.EACCES}" in out, out
        assert f"unlisted {errno.EACCES}" in out, out
        assert "endpoint None" in out, out  # and its clients dial TCP (CURVE decides there)
        assert received == []
        assert t.stats.accepted == 0

    _serve(KEYS, body)


def _planter(directory: Path, kind: str, name: str) -> Callable[[Callable[[str], None]], None]:
    def plant(say: Callable[[str], None]) -> None:
        if kind == "link":
            own = Path(f"{directory}.own")
            own.mkdir(mode=0o700)
            directory.symlink_to(own)
        else:
            directory.mkdir(mode=int(kind, 8))
            os.chmod(directory, int(kind, 8))
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(directory / name))
        s.listen()
        say("planted")
        s.settimeout(60)
        with contextlib.suppress(OSError):
            s.accept()
            say("ACCEPTED")

    return plant


@as_root
@pytest.mark.parametrize("kind", ["777", "700", "link"])
def test_a_directory_planted_by_another_user_before_the_node_starts_is_not_used(shared_base: Path, kind: str) -> None:
    """Another user makes ``<dir>`` first (open, private to itself, or a link to a directory of its own), with a
    listening socket named as the node's will be: the node does not listen there, and its clients dial TCP."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    directory = shared_base / "meshaios"
    name = transport.local_socket_path(directory, address)
    assert name is not None
    pid, r = _as_nobody(_planter(directory, kind, name.name))
    fh = os.fdopen(r)
    try:
        line = fh.readline()
        assert line.strip() == "planted", line + fh.read()
        assert ipc_listening(name)
        assert os.lstat(directory).st_uid == NOBODY

        async def body(t: ZmqTransport, received: list[Any]) -> None:
            assert t.address == address
            assert t.local_address == ""  # the directory is not ours: no socket in it
            assert private_runtime_dir() is None
            assert local_endpoint(address) is None
            conn = ZmqConnection(t.address, KEYS, "cli")
            try:
                assert conn.endpoint == address
                assert (await _round_trip(t, received, conn))["t"] == M.PONG
            finally:
                await conn.close()

        _serve(KEYS, body, port=port)
        assert os.lstat(directory).st_uid == NOBODY  # the node changed nothing of the other user's
        assert ipc_listening(name)  # and nobody dialled the planted socket (it would have said so and left)
    finally:
        os.kill(pid, signal.SIGKILL)
        out = fh.read()
        fh.close()
        os.waitpid(pid, 0)
    assert "ACCEPTED" not in out, out


@pytest.mark.parametrize("impostor", ["another key", "no curve", "the mesh key"])
def test_a_socket_planted_in_the_nodes_place_cannot_pass_for_the_node(runtime_dir: Path, impostor: str) -> None:  # noqa: F811
    """Whatever listens at the node's path (here: a socket of this user's own, in the private directory), a client
    dials it with the mesh's key as the server key: CURVE authenticates the server, so a listener without the mesh's
    secret gets nothing from it and cannot answer it."""
    assert private_runtime_dir(create=True) == runtime_dir
    address = f"tcp://127.0.0.1:{_free_port()}"
    path = transport.local_socket_path(runtime_dir, address)
    assert path is not None
    ctx = zmq.Context()
    fake = ctx.socket(zmq.ROUTER)
    fake.setsockopt(zmq.LINGER, 0)
    if impostor != "no curve":
        fake.curve_server = True
        fake.curve_publickey, fake.curve_secretkey = (
            (KEYS.public, KEYS.secret) if impostor == "the mesh key" else zmq.curve_keypair()
        )
    fake.bind(f"ipc://{path}")

    async def body() -> None:
        conn = ZmqConnection(address, KEYS, "cli", handshake_ivl=1.0)
        try:
            assert conn.endpoint == f"ipc://{path}"  # the client does dial it ...
            conn.send(encode({"t": M.PING}))
            if impostor == "the mesh key":  # the control: a listener holding the mesh's secret is the mesh
                await _until(lambda: fake.poll(0) != 0)
                assert fake.recv_multipart()[0] == b"c:cli"
                return
            # ... but only the mesh's key may answer as the server: the handshake fails, nothing gets through
            await _until(lambda: isinstance(conn.diagnose(), AuthError))
            assert fake.poll(300) == 0
            assert not conn.handshake_ok
        finally:
            await conn.close()

    try:
        asyncio.run(body())
    finally:
        fake.close(0)
        ctx.term()


def test_a_sweep_that_races_a_starting_node_leaves_its_clients_working(
    runtime_dir: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Node A reads the listeners (``/proc/net/unix``) before node B binds and removes B's file after: B's clients
    connected on the socket carry on, new ones dial TCP (the file is gone) and are answered; B's close removes no
    file that is not its own."""

    async def body(b: ZmqTransport, received: list[Any]) -> None:
        path = Path(b.local_address.removeprefix("ipc://"))
        before = ZmqConnection(b.address, KEYS, "cli")
        try:
            assert before.endpoint == b.local_address
            assert (await _round_trip(b, received, before))["t"] == M.PONG
            # A's sweep, with the list of listeners it read before B listened: B's live file goes
            monkeypatch.setattr(transport, "_listening_paths", lambda: set())
            a = ZmqTransport(ZmqOptions(node_id="a"), KEYS)
            await a.start()
            monkeypatch.undo()
            try:
                assert not await asyncio.to_thread(os.path.lexists, path)
                assert a.local_address
                assert a.local_address != b.local_address
                assert (await _round_trip(b, received, before))["t"] == M.PONG  # the live connection carries on
                assert local_endpoint(b.address) is None
                after = ZmqConnection(b.address, KEYS, "cli")
                try:
                    assert after.endpoint == b.address  # over TCP, answered
                    after.send(encode({"t": M.PING}))
                    await _until(lambda: bool(received))
                    assert received.pop()[0] == b"c:cli"
                finally:
                    await after.close()
            finally:
                await a.close()
        finally:
            await before.close()

    _serve(KEYS, body)
    assert not any(runtime_dir.iterdir())


def test_a_runtime_dir_too_long_for_a_unix_socket_means_tcp(monkeypatch: pytest.MonkeyPatch) -> None:
    base = Path(tempfile.mkdtemp(prefix="mio"))
    long = base / ("x" * 60) / ("y" * 40)
    long.mkdir(parents=True, mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(long))
    try:

        async def body(t: ZmqTransport, received: list[Any]) -> None:
            assert transport.local_socket_path(long / "meshaios", t.address) is None
            assert t.local_address == ""
            conn = ZmqConnection(t.address, KEYS, "cli")
            try:
                assert conn.endpoint == t.address
                assert (await _round_trip(t, received, conn))["t"] == M.PONG
            finally:
                await conn.close()

        _serve(KEYS, body)
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)


_OTHER_NS = """
import asyncio, sys
from meshaios.io.connection import ZmqConnection
from meshaios.io.transport import ZmqOptions, ZmqTransport
from meshaios.security import derive_keys
from meshaios.wire import messages as M
from meshaios.wire.codec import decode, encode

async def main() -> None:
    t = ZmqTransport(ZmqOptions(port=int(sys.argv[2]), node_id="other"), derive_keys(sys.argv[1]))
    await t.start()
    zap = asyncio.create_task(t.serve_zap())
    conn = ZmqConnection(t.address, derive_keys(sys.argv[1]), "cli")
    conn.send(encode({"t": M.PING}))
    async with asyncio.timeout(10):
        while True:
            got = await t.recv_batch()
            if got:
                break
    assert decode(got[0][1])["t"] == M.PING
    print(t.local_address, conn.endpoint, flush=True)
    await asyncio.to_thread(sys.stdin.read)  # until the test is done
    await conn.close()
    zap.cancel()
    await t.close()

asyncio.run(main())
"""


def _there(endpoint: str) -> bool:
    return os.path.lexists(endpoint.removeprefix("ipc://"))


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@as_root
def test_nodes_in_two_network_namespaces_with_one_address_keep_to_their_own_sockets(
    runtime_dir: Path,  # noqa: F811
) -> None:
    """``ip netns``-style isolation with /tmp shared: the node in the other namespace announces the same address,
    and each side's clients dial their own namespace's node; neither's start sweeps the other's live file."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare and iproute2")
    token = new_token()
    keys = derive_keys(token)
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}

    async def body(t: ZmqTransport, received: list[Any]) -> None:
        mine = t.local_address
        proc = await asyncio.create_subprocess_exec(
            "unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" -c "$1" "$2" "$3"',
            sys.executable, _OTHER_NS, token, str(port),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env=env,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            async with asyncio.timeout(30):
                line = (await proc.stdout.readline()).decode()
            theirs, their_client = line.split() if len(line.split()) == 2 else (line, "")
            assert theirs.startswith("ipc://"), line + (await proc.stdout.read()).decode()
            assert their_client == theirs  # their client dialled their node, in their namespace
            assert theirs != mine
            assert theirs.rsplit("-", 1)[1].split(".")[0] == mine.rsplit("-", 1)[1].split(".")[0] == str(port)
            assert _names(runtime_dir) == sorted([Path(mine).name, Path(theirs).name])  # their start swept none of ours
            # a node starting here sweeps neither (theirs is listed in their namespace only)
            third = ZmqTransport(ZmqOptions(node_id="third"), keys)
            await third.start()
            try:
                assert _there(theirs)
                assert _there(mine)
            finally:
                await third.close()
            conn = ZmqConnection(t.address, keys, "cli")
            try:
                assert conn.endpoint == mine
                assert (await _round_trip(t, received, conn))["t"] == M.PONG
            finally:
                await conn.close()
        finally:
            if proc.stdin is not None:
                proc.stdin.close()
            async with asyncio.timeout(15):
                await proc.wait()
        assert not _there(theirs)  # it removed its own file as it stopped

    _serve(keys, body, port=port)
