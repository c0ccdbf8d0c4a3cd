"""Priorities, cancellation and deadlines on real ``meshaios node`` processes (issue 13's acceptance).

Every task appends its tag to a file as it starts (``sched_funcs.mark``): the start order and the set of tasks that
ran are read from there, not from the scheduler's own bookkeeping."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from meshaios.client import Client
from meshaios.testing.localmesh import LocalMesh, wait_for
from tests.system import sched_funcs

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def mesh2() -> Iterator[LocalMesh]:
    with LocalMesh(2, workers=2) as mesh:
        yield mesh


@pytest.fixture
def client(mesh2: LocalMesh) -> Iterator[Client]:
    with mesh2.client(0) as c:
        wait_for(lambda: sum(m["state"] == "alive" for m in c.status()["members"]) == 1, 30, what="two nodes")
        yield c


def test_high_priority_tasks_overtake_ten_thousand_queued_ones(client: Client, tmp_path: Path) -> None:
    """100 ``priority=10`` tasks submitted behind 10,000 ``priority=0`` ones all start before the 500th low one."""
    log = str(tmp_path / "starts")
    low = client.map(sched_funcs.mark, [log] * 10_000, [f"L{i}" for i in range(10_000)], [0.001] * 10_000)
    high = client.map(sched_funcs.mark, [log] * 100, [f"H{i}" for i in range(100)], priority=10)
    assert sorted(client.gather(high, timeout=120)) == sorted(f"H{i}" for i in range(100))
    starts = sched_funcs.started(log)
    last_high = max(i for i, tag in enumerate(starts) if tag.startswith("H"))
    lows_before = sum(tag.startswith("L") for tag in starts[:last_high])
    print(f"low-priority tasks started before the last high-priority one: {lows_before}")
    assert lows_before < 500
    del low
