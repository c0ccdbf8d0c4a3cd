from __future__ import annotations

from collections.abc import Iterator

import pytest

from meshaios.testing.localmesh import LocalMesh


@pytest.fixture
def one_owner(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every client of the test (subprocesses too) owns its tasks on its entry node alone (``MESHAIOS_SPREAD=1``):
    for tests that watch that node own, place, cancel or count a client's tasks (docs/architecture.md section 4)."""
    monkeypatch.setenv("MESHAIOS_SPREAD", "1")


@pytest.fixture(scope="module")
def mesh3() -> Iterator[LocalMesh]:
    """Three real node processes on loopback, one token, found by mDNS (no --join)."""
    with LocalMesh(3) as mesh:
        yield mesh
