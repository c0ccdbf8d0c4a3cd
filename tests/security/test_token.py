"""The token stays secret: 0600 on disk, never in a log line (debug included), never in mDNS, never on a command
line, never in ``status``. (Key derivation and the file helpers have unit tests in ``tests/unit/test_security.py``.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from meshaios import AuthError, Client
from meshaios.io.discovery import SERVICE_TYPE
from meshaios.security import derive_keys, new_token, read_token
from meshaios.testing.localmesh import LocalMesh, wait_for
from tests.security import canary
from tests.security.attacks import dealer_attempts

pytestmark = pytest.mark.system


def _secrets(token: str) -> list[bytes]:
    keys = derive_keys(token)
    return [token.encode(), keys.secret]


async def _txt_records(expect: set[str], timeout: float = 10.0) -> dict[str, dict[bytes, bytes | None]]:
    """Every ``_meshaios._tcp`` service announced on loopback, with its TXT properties, once the services of the
    node ids in ``expect`` have been seen (other meshes may announce on the same loopback)."""
    azc = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    names: set[str] = set()
    seen = asyncio.Event()

    def on_change(zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if state_change is not ServiceStateChange.Removed:
            names.add(name)
            if all(any(i in n for n in names) for i in expect):
                seen.set()

    browser = AsyncServiceBrowser(azc.zeroconf, [SERVICE_TYPE], handlers=[on_change])
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await seen.wait()
        await asyncio.sleep(0.5)  # the others answer within the same query round
        out = {}
        for name in sorted(names):  # a copy: other meshes on loopback may announce while this awaits
            info = AsyncServiceInfo(SERVICE_TYPE, name)
            if await info.async_request(azc.zeroconf, 2000):
                out[name] = dict(info.properties)
        return out
    finally:
        await browser.async_cancel()
        await azc.async_close()


def test_token_is_never_logged_announced_or_shown(tmp_path: Path) -> None:
    """Two nodes at debug level, found by mDNS, doing work, refusing wrong tokens and unauthenticated attempts:
    the token and the secret key appear in no log, no TXT record, no status, no command line."""
    # fork=False: the command line checked below is the one `python -m meshaios node` gets, not the zygote's
    with LocalMesh(2, discovery=True, extra_args=["--log-level", "debug"], fork=False) as mesh:
        secret = _secrets(mesh.token)
        with mesh.client(0) as c:
            wait_for(lambda: len(c.status()["members"]) == 1, timeout=10, what="the two nodes meet")
            assert c.gather(c.map(canary.noop, range(50)), timeout=30) == list(range(50))
            status = repr(c.status()).encode()
        with pytest.raises(AuthError):
            Client(mesh.address(0), token=new_token(), connect_timeout=2)
        dealer_attempts(mesh.address(0), "curve-unknown", 20, derive_keys(mesh.token).public, str(tmp_path / "x"))
        records = asyncio.run(_txt_records({mesh.by_index(i).node_id for i in range(2)}))
        # other meshes may announce on this loopback too (a developer's node, another test run): every record is
        # searched for our secret, and ours must all name our mesh id
        ids = {mesh.by_index(i).node_id.encode() for i in range(2)}
        ours = {name: props for name, props in records.items() if props.get(b"id") in ids}
        assert len(ours) == 2, sorted(records)
        mesh_id = derive_keys(mesh.token).mesh_id
        for name, props in records.items():
            flat = name.encode() + b"".join(k + b"=" + (v or b"") for k, v in props.items())
            if name in ours:
                assert props.get(b"mesh") == mesh_id.encode()
            for s in secret:
                assert s not in flat, name
        for i in range(2):
            log = mesh.log(i).encode()
            assert b"DEBUG" in log  # the test is worth something only if debug logging was on
            for s in secret:
                assert s not in log
            cmdline = Path(f"/proc/{mesh.procs[i].pid}/cmdline").read_bytes()
            assert mesh.token.encode() not in cmdline
        for s in secret:
            assert s not in status


def test_meshaios_init_writes_a_private_token_file(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "token"
    out = subprocess.run(
        [sys.executable, "-m", "meshaios", "init", "--token-file", str(path)],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = path.read_text().strip()
    assert token not in out.stdout + out.stderr  # printed only with --print
    assert len(token) >= 43


def test_a_token_file_others_can_read_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "token"
    token = new_token()
    path.write_text(token + "\n")
    os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING, logger="meshaios.security"):
        assert read_token(path) == token
    assert "chmod 600" in caplog.text
    assert token not in caplog.text
    caplog.clear()
    os.chmod(path, 0o600)
    with caplog.at_level(logging.WARNING, logger="meshaios.security"):
        assert read_token(path) == token
    assert caplog.text == ""
