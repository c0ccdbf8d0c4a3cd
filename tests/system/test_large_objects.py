"""Large objects are routine (issue 17): a big put and its readers never make a busy node look dead, and readers
of a put whose holders all died get ``ObjectLost`` at once. Real node processes, CurveZMQ, default settings."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from meshaios import ObjectLost
from meshaios.testing.localmesh import LocalMesh, wait_for
from tests.integration import funcs

pytestmark = pytest.mark.system


def membership_trouble(mesh: LocalMesh) -> dict[str, dict[str, int]]:
    """Per node, every SWIM transition other than 'alive' it has seen: suspicions, deaths, departures."""
    out = {}
    for p in mesh.procs:
        with mesh.client(p.index) as c:
            counters = c.status()["node"]["counters"]
        bad = {k: v for k, v in counters.items() if k.startswith("member_") and k != "member_alive"}
        if bad:
            out[p.name] = bad
    return out


def put_then_read(mesh: LocalMesh, nbytes: int, rounds: int) -> None:
    with mesh.client(0) as c:
        wait_for(lambda: len(c.status()["members"]) == len(mesh.procs) - 1, timeout=20, what="full membership")
        for i in range(rounds):
            value = np.full(nbytes // 8, float(i))
            f = c.put(value, timeout=600)
            holders = c._async._puts[f.key][1]
            assert len(holders) == 2, f"round {i}: the put was acknowledged with holders {holders}"
            readers = [c.submit(funcs.total, f) for _ in range(3)]
            assert c.gather(readers, timeout=600, progress=False) == [float(i) * (nbytes // 8)] * 3, f"round {i}"
            del f, readers, value
        assert c._async.failovers == 0
    assert membership_trouble(mesh) == {}


def test_a_large_put_and_three_readers_never_make_a_node_look_dead() -> None:
    with LocalMesh(3, startup_timeout=60) as mesh:
        put_then_read(mesh, 128 << 20, rounds=2)


@pytest.mark.slow
@pytest.mark.timeout(1200)  # 20 rounds of a 1 GiB put and three readers: 2-6 s a round alone, more under load
def test_a_1gb_put_and_three_readers_twenty_times_in_a_row() -> None:
    with LocalMesh(3, startup_timeout=60) as mesh:
        put_then_read(mesh, 1 << 30, rounds=20)


def holder_indices(mesh: LocalMesh, holders: list[str]) -> list[int]:
    return [p.index for p in mesh.procs if p.node_id in holders]


def test_readers_of_a_put_whose_holders_were_killed_get_object_lost_within_10s() -> None:
    with LocalMesh(4, startup_timeout=60) as mesh, mesh.client(0) as c:
        wait_for(lambda: len(c.status()["members"]) == 3, timeout=20, what="full membership")
        f = c.put(np.ones((32 << 20) // 8), timeout=120)
        holders = c._async._puts[f.key][1]
        assert len(holders) == 2
        killed = holder_indices(mesh, holders)
        assert 0 in killed  # the entry node keeps a copy
        t0 = time.monotonic()
        for i in killed:
            mesh.kill(i)
        readers = [c.submit(funcs.total, f) for _ in range(3)]
        outcomes: list[Any] = []
        for r in readers:
            with pytest.raises(ObjectLost) as info:
                r.result(timeout=30)
            outcomes.append(info.value)
        with pytest.raises(ObjectLost) as direct:
            f.result(timeout=30)
        elapsed = time.monotonic() - t0
        assert elapsed < 10.0, f"readers learned of the loss after {elapsed:.1f} s"
        assert all(e.object_id == f.key for e in [*outcomes, direct.value])
        assert f.key in str(direct.value)


def test_messages_with_megabyte_headers_travel_as_streams_and_are_accepted() -> None:
    """No frame over 4 MiB crosses a node's ROUTER (``MAX_FRAME_BYTES``), so everything larger travels as a stream
    and is decoded whole: a 6 MB byte string as a task's argument and result, and a map of 4,000 tasks of 3 KB
    arguments (a submit carries 2,000 tasks; arguments under 64 KiB sit in its header, 6 MB). A streamed header is
    bounded by ``max_header_bytes``, not by the frame limit (it was, and such a submit was refused)."""
    big = bytes(range(256)) * (6_000_000 // 256)
    blobs = [bytes([i % 251]) * 3000 for i in range(4000)]
    with LocalMesh(2, discovery=False) as mesh, mesh.client(0) as c:
        wait_for(lambda: len(c.status()["members"]) == 1, timeout=20, what="the two nodes meet")
        assert c.submit(funcs.identity, big).result(timeout=120) == big
        assert c.gather(c.map(funcs.identity, blobs), timeout=300, progress=False) == blobs
        node = c.status()["node"]
        assert node["streams"]["in_bytes"] >= 6_000_000  # the big task came in as a stream
        assert node["counters"].get("bad_frames", 0) == 0


def test_a_map_whose_arguments_add_up_to_more_than_a_header_may_hold_completes() -> None:
    """2,000 tasks of 40 KB arguments: each argument rides in its SUBMIT's header (under 64 KiB), 80 MB for one
    SUBMIT of 2,000, over the node's 64 MiB header limit; it was refused and every future waited. The client now
    splits SUBMITs at about 16 MiB of header (``client.submit_batches``)."""
    blobs = [bytes([i % 251]) * 40_000 for i in range(2000)]
    with LocalMesh(1, discovery=False) as mesh, mesh.client(0) as c:
        assert c.gather(c.map(len, blobs), timeout=300, progress=False) == [40_000] * 2000
        assert c.status()["node"]["counters"].get("bad_frames", 0) == 0
