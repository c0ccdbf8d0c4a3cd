"""The CLI as a person meets it: a status that fits 80 columns, errors that say what to do, ``--version``."""

from __future__ import annotations

import fcntl
import os
import re
import select
import socket
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from meshaios import __version__
from meshaios.client import Client
from meshaios.security import new_token
from meshaios.testing.localmesh import LocalMesh, wait_for

MESHAIOS = [sys.executable, "-m", "meshaios"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_in_pty(cmd: list[str], columns: int, env: dict[str, str], timeout: float = 30.0) -> str:
    """Run ``cmd`` with its stdout on a pseudo-terminal ``columns`` wide; return what it printed."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {**env, "TERM": "xterm", "COLUMNS": str(columns)}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=subprocess.PIPE, env=env, close_fds=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        assert proc.wait(timeout=max(1.0, deadline - time.monotonic())) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
        os.close(master)
    text = out.decode(errors="replace")
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07", "", text).replace("\r", "")


def test_version() -> None:
    out = subprocess.run([*MESHAIOS, "--version"], capture_output=True, text=True, timeout=30, check=True).stdout
    assert out.strip() == f"meshaios {__version__}"


def test_status_fits_80_columns_in_a_terminal(ux_mesh: LocalMesh, client: Client) -> None:
    cmd = [*MESHAIOS, "status", ux_mesh.address(0), "--token-file", str(ux_mesh.token_file)]
    screen = _run_in_pty(cmd, 80, ux_mesh.client_env())
    lines = [ln for ln in screen.splitlines() if ln.strip()]
    assert all(len(ln) <= 80 for ln in lines), screen
    header = next(ln for ln in lines if ln.startswith("node "))
    # every column of the mesh's three nodes fits: none dropped, none squeezed to a letter
    assert header.split() == ["node", "name", "address", "state", "dev", "w", "run", "queue", "done", "store", "up"]
    for i in range(3):
        row = next(ln for ln in lines[lines.index(header) + 1 :] if f" node{i} " in ln)
        cells = row.split()
        assert cells[1] == f"node{i}", row
        assert cells[2] == ux_mesh.address(i).split("://")[1], row
        assert cells[3] == "alive", row
        assert cells[4].startswith("cpu:"), row
        assert not any(c.endswith("…") and len(c) <= 2 for c in cells), row
    assert re.search(r"3 alive \| running \d+ queued \d+ pending \d+ \| done \d+ failed \d+ \| \d+ tasks/s", screen)


def test_status_drops_columns_rather_than_truncating_them(ux_mesh: LocalMesh, client: Client) -> None:
    cmd = [*MESHAIOS, "status", ux_mesh.address(0), "--token-file", str(ux_mesh.token_file)]
    screen = _run_in_pty(cmd, 50, ux_mesh.client_env())
    lines = [ln for ln in screen.splitlines() if ln.strip()]
    header = next(ln for ln in lines if ln.startswith("node "))
    assert all(len(ln) <= 50 for ln in lines[lines.index(header) :]), screen
    assert {"node", "name", "state", "run"} <= set(header.split())
    assert "up" not in header.split()
    assert "(narrow terminal:" in screen
    for ln in lines[lines.index(header) + 1 :]:
        if " node1 " in ln:
            assert "alive" in ln.split()


def test_a_second_node_on_a_port_in_use_says_what_to_do(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "xdg")}
    args = ["node", "--insecure", "--no-discovery", "--no-http", "--port", str(port)]
    first = subprocess.Popen([*MESHAIOS, *args, "--state-dir", str(tmp_path / "a")], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: list((tmp_path / "a" / "nodes").glob("*.json")), 30, what="first node ready")
        second = subprocess.run([*MESHAIOS, *args, "--state-dir", str(tmp_path / "b")], env=env,
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 2
        assert "Traceback" not in second.stderr
        last = second.stderr.strip().splitlines()[-1]
        assert last.startswith("meshaios: error:"), last
        assert f"127.0.0.1:{port} is already in use" in last, last
        assert "--port 0" in last
    finally:
        first.terminate()
        first.wait(timeout=30)
        assert first.stderr is not None
        first.stderr.close()


def test_status_with_another_meshs_token_names_the_other_mesh(tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    for f in (mine, theirs):
        f.write_text(new_token() + "\n")
        f.chmod(0o600)
    env = {**os.environ, "XDG_STATE_HOME": str(xdg)}
    env.pop("MESHAIOS_TOKEN", None)
    env.pop("MESHAIOS_ADDRESS", None)
    node = subprocess.Popen(
        [*MESHAIOS, "node", "--bind", "127.0.0.1", "--port", "0", "--no-discovery", "--no-http",
         "--token-file", str(theirs), "--state-dir", str(xdg / "meshaios")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: list((xdg / "meshaios" / "nodes").glob("*.json")), 30, what="node ready")
        out = subprocess.run([*MESHAIOS, "status", "--token-file", str(mine), "--timeout", "3"], env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2
        assert "belongs to another mesh" in out.stderr, out.stderr
        assert "no meshaios node found" not in out.stderr
    finally:
        node.terminate()
        node.wait(timeout=30)


@pytest.mark.parametrize("width", [80, 100, 132])
def test_render_never_exceeds_the_width(width: int) -> None:
    from rich.console import Console

    from meshaios.status_view import render

    me = {"id": "a" * 32, "name": "a-very-long-host-name.example.org", "addr": "tcp://192.168.100.200:5577",
          "mesh": "m" * 16, "secure": True, "workers": 64, "running": 64, "queued": 123456, "finished": 9876543,
          "failed": 3, "devices": "cpu:64,gpu:8(2 fake)", "uptime": 400000.0, "pending": 5000,
          "store": {"bytes_in_memory": 5 * 2**40}, "http": "http://127.0.0.1:1234", "tasks_per_s": 12345.6,
          "gpu": {f"gpu:{i}": {"resident_objects": 123456, "resident_bytes": 70 * 2**30, "limit": 71 * 2**30,
                               "h2d": 98765432, "d2h": 12345678, "evictions": 4567890} for i in range(2)}}
    members = [{"id": f"{i:032x}", "name": f"worker-{i}-of-the-cluster", "addr": f"tcp://10.0.0.{i}:5577",
                "state": ("alive", "suspect", "dead", "left")[i % 4], "devices": "cpu:16", "workers": 16,
                "running": 3, "queued": 10, "finished": 1000 * i, "failed": 0, "pending": 1, "store_bytes": 2**30,
                "uptime": 60.0 * i, "tasks_per_s": 1.5} for i in range(12)]
    console = Console(width=width, record=True, force_terminal=False)
    console.print(render({"node": me, "members": members}, width))
    text = console.export_text()
    assert all(len(ln) <= width for ln in text.splitlines()), text
    assert any(ln.startswith("gpu:1 kept ") for ln in text.splitlines()), text
    header = next(ln for ln in text.splitlines() if ln.startswith("node "))
    assert {"node", "state", "name", "run", "queue"} <= set(header.split())
