"""Fixtures for the security tests: real node processes on loopback, and ways to look inside them."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from meshaios.io.transport import apply_client_curve
from meshaios.security import derive_keys
from meshaios.testing.localmesh import LocalMesh, pin_threads


def rss_mib(pid: int) -> float:
    """Resident set size of a process, from /proc (no psutil)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used, from /proc."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of a node process by thread kind, from /proc: ``loop`` (the main thread: the event loop),
    ``zap`` (the auth thread, ``meshaios.io.zap``), ``zmq-io`` (libzmq's I/O threads: TCP, ZMTP, CurveZMQ
    crypto), ``other`` (the rest)."""
    out = {"loop": 0.0, "zap": 0.0, "zmq-io": 0.0, "other": 0.0}
    tck = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as fh:
                stat = fh.read()
        except OSError:  # the thread has just ended
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        kind = (
            "loop" if tid == str(pid) else "zap" if comm == "meshaios-zap"
            else "zmq-io" if comm.startswith("ZMQbg/IO") else "other"
        )  # fmt: skip
        out[kind] += (int(fields[11]) + int(fields[12])) / tck
    return out


def percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def transport(client: Any) -> dict[str, int]:
    st: dict[str, int] = client.status()["node"]["transport"]
    return st


def node_view(client: Any) -> dict[str, Any]:
    st: dict[str, Any] = client.status()["node"]
    return st


def authed_dealer(ctx: zmq.Context[Any], mesh: LocalMesh, index: int = 0, ident: bytes = b"") -> zmq.Socket[Any]:
    """A raw DEALER that holds the mesh key: an authenticated peer that may send anything at all."""
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    if ident:
        s.setsockopt(zmq.ROUTING_ID, ident)
    apply_client_curve(s, derive_keys(mesh.token))
    s.connect(mesh.address(index))
    return s


@pytest.fixture
def zctx() -> Iterator[zmq.Context[Any]]:
    ctx: zmq.Context[Any] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.fixture(scope="module")
def node1() -> Iterator[LocalMesh]:
    """One secure node process (no mDNS), shared by a module's tests: they check counters as deltas."""
    with LocalMesh(1, discovery=False, workers=2) as mesh:
        yield mesh


def wait_until(cond: Callable[[], Any], timeout: float, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(0.05)


def canary_path(tmp_path: Path, name: str) -> Path:
    p = tmp_path / f"canary-{name}-{os.getpid()}"
    assert not p.exists()
    return p


class OwnCores:
    """The attacker stands in for another machine on the LAN, so it gets a core of its own: the node and the
    legitimate client (this process) run on core 0, the attacker on the others. Without this, on a two-core test
    box the attacker's own CPU and its kernel TCP work land on the cores being measured, which a remote attacker's
    cannot (measured: attacking a *different* node process on this box still raised the p99 2.5-3.7x)."""

    def __init__(self, mesh: LocalMesh) -> None:
        self.pids = [p.pid for p in mesh.procs]
        self.all = set(range(os.cpu_count() or 1))
        self.active = len(self.all) >= 2
        if len(self.all) >= 8:  # a machine with cores to spare: four for the node, two for the client
            self.node, self.client = {0, 1, 2, 3}, {4, 5}
        else:
            self.node = self.client = {0}
        self.attacker = self.all - self.node - self.client

    def __enter__(self) -> OwnCores:
        if self.active:
            for pid in self.pids:
                pin_threads(pid, self.node)
            pin_threads("self", self.client)
        return self

    def place_attacker(self, pid: int) -> None:
        """Right after it started, before its interpreter has loaded anything (no preexec_fn: this process has
        threads, and a fork with threads running must not run Python before exec)."""
        if self.active:
            pin_threads(pid, self.attacker)

    def __exit__(self, *exc: object) -> None:
        if self.active:
            for pid in [*self.pids, "self"]:
                pin_threads(pid, self.all)
