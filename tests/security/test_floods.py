"""Floods and backpressure, measured: the memory of a node a client floods with tasks, of a sender whose peer
stopped reading (SIGSTOP), and of a node that unauthenticated connections try to make buffer a "handshake".

Figures print with ``-s``; docs/security.md records them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import struct
import time

import pytest

from meshaios.io.transport import ZmqOptions, ZmqTransport
from meshaios.security import derive_keys
from meshaios.testing.localmesh import LocalMesh, wait_for
from meshaios.wire import messages as M
from meshaios.wire.codec import encode
from tests.security import canary
from tests.security.conftest import node_view, rss_mib

pytestmark = pytest.mark.system


# ---------------------------------------------------------------------------------------------- submit flood
def test_submit_flood_keeps_node_memory_bounded() -> None:
    """Acceptance 3, scaled down: 60,000 slow tasks submitted at once to one node with one worker. With
    backpressure the node holds a bounded number of them; without, its RSS grows with every task."""
    n, window = 60_000, 10_000  # the client's default window, named
    with LocalMesh(1, discovery=False, workers=1) as mesh, mesh.client(0, window=window) as c:
        pid = mesh.procs[0].pid
        c.submit(canary.noop, 0).result(timeout=10)
        base = rss_mib(pid)
        futs = c.map(canary.slow, [0.05] * n)
        # the node holds the most it ever will once the client's window is full (the rest waits in the client,
        # and from then on one task goes in as one comes out); without backpressure all n would be in by then
        full = min(n, window)
        peak = base
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            peak = max(peak, rss_mib(pid))
            if node_view(c).get("owner", {}).get("submitted", 0) >= full:
                break
            time.sleep(0.2)
        assert node_view(c)["owner"]["submitted"] >= full, "the client never filled its window"
        peak = max(peak, rss_mib(pid))
        print(f"{n} tasks submitted: node RSS {base:.0f} -> {peak:.0f} MiB ({(peak - base) * 2**20 / n:.0f} B/task)")
        del futs
        assert peak - base < 24


@pytest.mark.slow
@pytest.mark.parametrize("n", [50_000, 200_000])
def test_submit_flood_figures(n: int) -> None:
    """The numbers behind the xfail above (docs/security.md): node and client RSS per pending task."""
    with LocalMesh(1, discovery=False, workers=2) as mesh, mesh.client(0) as c:
        pid, me = mesh.procs[0].pid, os.getpid()
        c.submit(canary.noop, 0).result(timeout=10)
        base, mine = rss_mib(pid), rss_mib(me)
        t0 = time.monotonic()
        futs = c.map(canary.slow, [0.05] * n)
        wait_for(lambda: c.status(timeout=60)["node"]["owner"]["submitted"] > n, 120, 0.2, "all submitted")
        grown = rss_mib(pid) - base
        print(f"{n} tasks: map+submit {time.monotonic() - t0:.1f} s; node RSS +{grown:.0f} MiB "
              f"({grown * 2**20 / n:.0f} B/task); client RSS +{rss_mib(me) - mine:.0f} MiB")  # fmt: skip
        del futs
        assert mesh.procs[0].alive()


# ---------------------------------------------------------------------------------------------- a peer stops reading
def _stream(t: ZmqTransport, addr: str, n: int, size: int) -> tuple[int, int]:
    ok = dropped = 0
    for i in range(n):
        if t.send(addr, encode({"t": M.PING, "pad": bytes(size), "i": i})):
            ok += 1
        else:
            dropped += 1
    return ok, dropped


@pytest.mark.parametrize(("hwm", "bounded"), [(10_000, True), (0, False)])
def test_sender_memory_is_bounded_by_the_hwm_when_the_peer_is_stopped(hwm: int, bounded: bool) -> None:
    """The node's own transport sends 100,000 messages of 2 KiB (200 MiB) to a node process that was SIGSTOPped
    after the connection came up. With the high-water mark (the default, 10,000 messages) sends beyond it are
    dropped and counted, and this process's RSS grows by about HWM x size; ``hwm=0`` (unlimited, the control)
    shows what the mark prevents. The stopped node recovers on SIGCONT."""
    n, size = 100_000, 2048
    with LocalMesh(1, discovery=False) as mesh, mesh.client(0) as c:
        keys = derive_keys(mesh.token)
        t = ZmqTransport(ZmqOptions(hwm=hwm, node_id="sender"), keys)

        async def run() -> tuple[float, float, int, int]:
            await t.start()
            before = node_view(c)["transport"]["received"]
            t.send(mesh.address(0), encode({"t": M.PING}))
            # until the handshake is done and the node has read our ping (a status poll in a thread: no sleep loop)
            await asyncio.to_thread(
                wait_for, lambda: node_view(c)["transport"]["received"] >= before + 1, 10, 0.05, "ping read"
            )
            os.kill(mesh.procs[0].pid, signal.SIGSTOP)
            try:
                base = rss_mib(os.getpid())
                ok, dropped = _stream(t, mesh.address(0), n, size)
                await asyncio.sleep(0.5)  # let the I/O thread push what it can into the socket buffers
                grown = rss_mib(os.getpid()) - base
            finally:
                os.kill(mesh.procs[0].pid, signal.SIGCONT)
            await t.close()
            return base, grown, ok, dropped

        base, grown, ok, dropped = asyncio.run(run())
        print(f"hwm={hwm}: {ok} queued, {dropped} dropped; sender RSS +{grown:.0f} MiB (from {base:.0f})")
        assert ok + dropped == n
        if bounded:
            assert dropped > 0
            assert t.stats.dropped == dropped
            assert grown < 3 * hwm * size / 2**20 + 32  # the queue, plus socket buffers and allocator slack
        else:
            assert dropped == 0
            assert grown > 0.5 * n * size / 2**20  # the control: everything was kept
        assert c.status(timeout=20)["node"]["state"] == "alive"  # the stopped node is back


# ---------------------------------------------------------------------------------------------- pre-auth buffering
def _preauth_stream(port: int, frame: int, chunk_mib: int) -> socket.socket:
    """A ZMTP 3 greeting for CURVE, then a handshake "command" declared ``frame`` bytes long, ``chunk_mib`` of it
    sent: libzmq buffers it (ZMQ_MAXMSGSIZE applies to handshake commands too) before any key is checked."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"\xff" + b"\0" * 8 + b"\x7f\x03\x00" + b"CURVE".ljust(20, b"\0") + b"\0" * 32)
    s.sendall(b"\x06" + struct.pack(">Q", frame))
    chunk = bytes(1 << 20)
    try:
        for _ in range(chunk_mib):
            s.sendall(chunk)
    except OSError:
        pass  # the node hung up: fine
    return s


@pytest.mark.slow
def test_unauthenticated_handshake_buffering_with_1gib_frames() -> None:
    """The figure for docs/security.md: 4 connections x 290 MiB with the former default, 1 GiB frames."""
    env = {"MESHAIOS_MAX_FRAME_BYTES": str(1 << 30)}
    with LocalMesh(1, discovery=False, env=env) as mesh, mesh.client(0) as c:
        pid = mesh.procs[0].pid
        port = int(mesh.address(0).rsplit(":", 1)[1])
        base = rss_mib(pid)
        t0 = time.monotonic()
        socks = [_preauth_stream(port, 300 << 20, 290) for _ in range(4)]
        peak, took = rss_mib(pid) - base, time.monotonic() - t0
        wait_for(lambda: rss_mib(pid) - base < 64, 15, 0.2, "memory back")
        back = time.monotonic() - t0
        for s in socks:
            s.close()
        print(f"pre-auth, 1 GiB frames: +{peak:.0f} MiB in {took:.1f} s, back to +64 MiB after {back:.1f} s")
        assert c.submit(canary.noop, 1).result(timeout=10) == 1


def test_unauthenticated_handshake_buffering_is_bounded_by_frame_size_and_time() -> None:
    """Known limit (libzmq): before authentication a connection can make the node buffer one frame of up to
    ``max_frame_bytes``. The node's ``handshake_ivl`` drops it after a few seconds and the memory comes back; the
    frame limit from config caps each connection. Here: 4 connections, 64 MiB frames, 1 s handshake limit."""
    frame = 64 << 20
    with (
        LocalMesh(1, discovery=False, env={"MESHAIOS_MAX_FRAME_BYTES": str(frame)}) as mesh,
        mesh.client(0) as c,
    ):
        pid = mesh.procs[0].pid
        port = int(mesh.address(0).rsplit(":", 1)[1])
        base = rss_mib(pid)
        socks = [_preauth_stream(port, 1 << 40, 128) for _ in range(2)]  # declared 1 TiB: refused at once
        over = rss_mib(pid) - base
        socks += [_preauth_stream(port, frame - 16, 60) for _ in range(4)]  # under the limit: buffered...
        peak = rss_mib(pid) - base
        time.sleep(6.5)  # ...until handshake_ivl (5 s by default) hangs up on them
        after = rss_mib(pid) - base
        for s in socks:
            s.close()
        print(f"pre-auth buffering: oversized +{over:.0f} MiB; 4 x 60 MiB under the limit: peak +{peak:.0f} MiB, "
              f"{after:.0f} MiB after the handshake timeout")  # fmt: skip
        assert over < 16
        assert peak < 4 * frame / 2**20 + 32
        assert after < 32
        assert c.submit(canary.noop, 1).result(timeout=10) == 1
        assert node_view(c)["transport"]["auth_rejected"] >= 6
