"""Runtime directories with unusual paths (rev19i's review; both failed before the fix): ``_listening_paths`` split
/proc/net/unix lines on whitespace and dropped any line with more than 8 fields, so a live socket in a directory whose
path holds a space was never seen as listening -- clients never used it and every node that started swept the others'
live socket files. A socket name that is not UTF-8 (any process's) made the whole read fail the same way."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from meshaios.io.transport import LOCAL_IPC, ZmqOptions, ZmqTransport, ipc_listening, local_endpoint
from tests.security.test_local_ipc import KEYS
from tests.security.test_transport import _serve

pytestmark = pytest.mark.skipif(not LOCAL_IPC, reason="unix-socket fast path: Linux only")


def test_a_runtime_dir_with_a_space_still_works(monkeypatch: pytest.MonkeyPatch) -> None:
    base = Path(tempfile.mkdtemp(prefix="mio sp"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(base))
    try:

        async def body(t: ZmqTransport, received: list[Any]) -> None:
            assert t.local_address
            path = Path(t.local_address.removeprefix("ipc://"))
            other = ZmqTransport(ZmqOptions(node_id="other"), KEYS)
            await other.start()  # its start-up sweep must leave our live socket alone
            try:
                assert os.path.lexists(path), "a live node's socket file was swept by another node's start"  # noqa: ASYNC240
                assert ipc_listening(path)
                assert local_endpoint(t.address) == t.local_address
            finally:
                await other.close()

        _serve(KEYS, body)
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)


def test_a_socket_name_that_is_not_utf8_hides_no_listener(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    base = Path(tempfile.mkdtemp(prefix="mio-b"))
    odd = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        odd.bind(os.fsencode(base) + b"/\xff\xfe")  # another process's listener with a name that is not UTF-8
        odd.listen(1)
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(base))

        async def body(t: ZmqTransport, received: list[Any]) -> None:
            assert t.local_address
            path = Path(t.local_address.removeprefix("ipc://"))
            assert ipc_listening(path)
            assert local_endpoint(t.address) == t.local_address

        _serve(KEYS, body)
    finally:
        odd.close()
        subprocess.run(["rm", "-rf", str(base)], check=False)
