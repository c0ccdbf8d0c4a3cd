"""Shared fixtures. Leak guards (tests/leakguard.py): a test leaves no thread, socket, loop or child process."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator

import pytest

from meshaios.testing import localmesh
from meshaios.testing.zygote import Zygote
from tests import leakguard

LEAK_GRACE = 5.0  # seconds for a stopping node's threads, sockets and children to finish going away


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the user's real token or node registry."""
    root = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(root / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(root / "state"))
    monkeypatch.delenv("MESHAIOS_TOKEN", raising=False)
    monkeypatch.delenv("MESHAIOS_ADDRESS", raising=False)


@pytest.fixture(autouse=True)
def _no_leaks() -> Iterator[None]:
    """Every test leaves no thread (daemon or not), socket, event-loop or ZeroMQ handle, or child process behind.
    Fixtures of a wider scope are set up before this one and torn down after it, so what they hold is not counted."""
    before = leakguard.snapshot()
    yield
    found = leakguard.leaks(before, grace=LEAK_GRACE)
    if found:
        gc.collect()  # an unreferenced loop or socket is closed by its finaliser: only what is still reachable leaks
        found = leakguard.leaks(before, grace=1.0)
    assert not found, found.describe()


def pytest_configure(config: pytest.Config) -> None:
    leakguard.warm_up()
    # Nodes of every LocalMesh are forked from one process that has imported meshaios once (about 1.3 s of CPU saved
    # per node, several hundred nodes per run). Started before any test, so that no test is blamed for it; its
    # children count as ours for the leak guard.
    if os.environ.get("MESHAIOS_TEST_ZYGOTE", "1") == "0":  # to tell a forking problem from a node's
        return
    localmesh.ZYGOTE = Zygote()
    localmesh.ZYGOTE.start()
    assert localmesh.ZYGOTE.pid is not None
    leakguard.ADOPTED_PARENTS.add(localmesh.ZYGOTE.pid)


def pytest_unconfigure(config: pytest.Config) -> None:
    if localmesh.ZYGOTE is not None:
        localmesh.ZYGOTE.close()
        localmesh.ZYGOTE = None


def pytest_report_header() -> str:
    return f"meshaios tests, pid {os.getpid()}"
