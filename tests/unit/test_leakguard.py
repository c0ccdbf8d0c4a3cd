"""The leak guard (tests/leakguard.py, autouse in tests/conftest.py) sees what a test leaves behind -- daemon threads
like every thread meshaios starts, sockets, event loops, child processes -- and stops seeing it once it is gone."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from tests import leakguard

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parents[2]


def test_a_daemon_thread_is_a_leak_until_it_ends() -> None:
    before = leakguard.snapshot()
    stop = threading.Event()
    t = threading.Thread(target=stop.wait, name="meshaios-test-worker", daemon=True)
    t.start()
    found = leakguard.leaks(before, grace=0.2)
    assert found.threads
    assert "meshaios-test-worker" in found.threads[0]
    stop.set()
    assert not leakguard.leaks(before, grace=5.0)


def test_sockets_and_an_unclosed_event_loop_are_leaks_until_closed() -> None:
    before = leakguard.snapshot()
    a, b = socket.socketpair()
    loop = asyncio.new_event_loop()
    found = leakguard.leaks(before, grace=0.2)
    assert "socket" in found.describe()
    assert "eventpoll" in found.describe()
    a.close()
    b.close()
    loop.close()
    assert not leakguard.leaks(before, grace=5.0)


def test_a_child_process_is_a_leak_until_reaped() -> None:
    before = leakguard.snapshot()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert leakguard.leaks(before, grace=0.2).children == [child.pid]
    finally:
        child.kill()
        child.wait()
    assert not leakguard.leaks(before, grace=5.0)


def test_the_autouse_guard_fails_a_test_that_leaks(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard as the suite runs it: a test that leaves a daemon thread running errors at teardown, naming it."""
    pytester.makeconftest("from tests.conftest import _no_leaks, pytest_configure  # noqa: F401\n")
    pytester.makepyfile(
        test_leaky=textwrap.dedent(
            """
            import threading

            STOP = threading.Event()

            def test_leaks_a_daemon_thread():
                threading.Thread(target=STOP.wait, name="leaky-daemon", daemon=True).start()

            def test_clean():
                pass
            """
        )
    )
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-o", "addopts=")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*test leaked threads*leaky-daemon*"])
