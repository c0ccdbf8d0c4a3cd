from __future__ import annotations

from collections.abc import Iterator

import pytest

from meshaios.testing.localmesh import LocalMesh


@pytest.fixture(scope="module")
def mesh3() -> Iterator[LocalMesh]:
    """Three real node processes on loopback, one token, found by mDNS (no --join)."""
    with LocalMesh(3) as mesh:
        yield mesh
