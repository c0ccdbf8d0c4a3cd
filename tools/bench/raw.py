"""The raw limits: what pyzmq, msgpack and memcpy allow on this machine, so every engine figure can be read as a
fraction of it.

The server side of each two-process measurement runs as ``python raw.py serve MODE``: it binds 127.0.0.1 on a
free port, prints the endpoint on stdout and serves until the client says ``stop`` (or its stdin closes).

- round trip: DEALER -> ROUTER echo, one message in flight, blocking sockets on both sides or zmq.asyncio on
  uvloop on both sides;
- bulk: 8 MiB numpy arrays as zero-copy multipart messages (``copy=False`` on both ends), DEALER -> ROUTER sink,
  which answers once it has them all; also with CurveZMQ on, the price of meshaios's default encryption;
- memcpy: ``np.copyto`` of 400 MiB into a prefaulted array, in this process;
- msgpack: packing and unpacking a ~270-byte task dict, in this process.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import msgpack
import numpy as np
import zmq
import zmq.asyncio

BULK_BYTES = 8 << 20
MODES = ("echo-blocking", "echo-async", "sink-blocking", "sink-async", "sink-curve")


# ---- servers (in their own process) ---------------------------------------------------------------------


def _bind(sock: zmq.Socket[Any]) -> str:
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.bind("tcp://127.0.0.1:*")
    endpoint = sock.getsockopt(zmq.LAST_ENDPOINT)
    return endpoint.decode() if isinstance(endpoint, bytes) else str(endpoint)


def _serve_blocking(mode: str) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    public = b""
    if mode == "sink-curve":  # CurveZMQ, as a meshaios node with a token (no ZAP: any client key is let in)
        public, secret = zmq.curve_keypair()
        sock.curve_server = True
        sock.curve_secretkey = secret
        sock.curve_publickey = public
    print(_bind(sock), public.decode(), flush=True)
    received = 0
    while True:
        frames = sock.recv_multipart(copy=False)
        tag = frames[1].bytes
        if tag == b"stop":
            break
        if mode == "echo-blocking":
            sock.send_multipart(frames, copy=False)
        elif tag == b"end":
            sock.send_multipart([frames[0], str(received).encode()])
            received = 0
        else:
            received += len(frames[2].buffer)
    sock.close(0)
    ctx.term()


async def _serve_async(mode: str) -> None:
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.ROUTER)
    print(_bind(sock), flush=True)
    received = 0
    while True:
        frames = await sock.recv_multipart(copy=False)
        tag = frames[1].bytes
        if tag == b"stop":
            break
        if mode == "echo-async":
            await sock.send_multipart(frames, copy=False)
        elif tag == b"end":
            await sock.send_multipart([frames[0], str(received).encode()])
            received = 0
        else:
            received += len(frames[2].buffer)
    sock.close(0)
    ctx.term()


def serve(mode: str) -> None:
    def watch_stdin() -> None:  # the parent went away: do not outlive it
        sys.stdin.read()
        import os

        os._exit(0)

    threading.Thread(target=watch_stdin, daemon=True).start()
    if mode.endswith("async"):
        import uvloop

        uvloop.run(_serve_async(mode))
    else:
        _serve_blocking(mode)


@contextlib.contextmanager
def server(mode: str) -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "serve", mode], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("tcp://"):
            raise RuntimeError(f"raw {mode} server did not start: {line!r}")
        yield line
    finally:
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _dealer(ctx: zmq.Context[Any], line: str) -> zmq.Socket[Any]:
    """Connects to what ``server`` yielded: ``endpoint [server public key]``."""
    endpoint, _, server_key = line.partition(" ")
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    if server_key:
        public, secret = zmq.curve_keypair()
        sock.curve_serverkey = server_key.encode()
        sock.curve_publickey = public
        sock.curve_secretkey = secret
    sock.connect(endpoint)
    return sock


# ---- clients (in the benchmark process) -----------------------------------------------------------------


def round_trip_blocking(n: int) -> float:
    """Median round trip in microseconds, one message in flight."""
    with server("echo-blocking") as ep:
        ctx = zmq.Context()
        sock = _dealer(ctx, ep)
        try:
            msg = [b"x", b"0" * 64]
            for _ in range(200):
                sock.send_multipart(msg)
                sock.recv_multipart()
            times = []
            for _ in range(n):
                t = time.perf_counter_ns()
                sock.send_multipart(msg)
                sock.recv_multipart()
                times.append(time.perf_counter_ns() - t)
            sock.send_multipart([b"stop"])
        finally:
            sock.close(0)
            ctx.term()
    return float(np.median(times)) / 1e3


def round_trip_async(n: int) -> float:
    async def go(ep: str) -> float:
        ctx = zmq.asyncio.Context()
        sock = _dealer(ctx, ep)  # type: ignore[arg-type]
        try:
            msg = [b"x", b"0" * 64]
            for _ in range(200):
                await sock.send_multipart(msg)
                await sock.recv_multipart()
            times = []
            for _ in range(n):
                t = time.perf_counter_ns()
                await sock.send_multipart(msg)
                await sock.recv_multipart()
                times.append(time.perf_counter_ns() - t)
            await sock.send_multipart([b"stop"])
        finally:
            sock.close(0)
            ctx.term()
        return float(np.median(times)) / 1e3

    import uvloop

    with server("echo-async") as ep:
        return uvloop.run(go(ep))


def bulk_blocking(count: int, curve: bool = False) -> float:
    """GB/s moving ``count`` 8 MiB arrays, zero-copy, one process to another (``curve``: CurveZMQ-encrypted)."""
    arr = np.arange(BULK_BYTES // 8, dtype=np.int64)
    with server("sink-curve" if curve else "sink-blocking") as ep:
        ctx = zmq.Context()
        sock = _dealer(ctx, ep)
        try:
            for _ in range(4):  # warm-up: connection up, pages touched on the receiving side
                sock.send_multipart([b"d", arr], copy=False)
            sock.send_multipart([b"end"])
            sock.recv_multipart()
            t = time.perf_counter()
            for _ in range(count):
                sock.send_multipart([b"d", arr], copy=False)
            sock.send_multipart([b"end"])
            got = int(sock.recv_multipart()[0])
            dt = time.perf_counter() - t
            sock.send_multipart([b"stop"])
        finally:
            sock.close(0)
            ctx.term()
    if got != count * BULK_BYTES:
        raise RuntimeError(f"bulk sink got {got} bytes, expected {count * BULK_BYTES}")
    return got / dt / 1e9


def bulk_async(count: int) -> float:
    arr = np.arange(BULK_BYTES // 8, dtype=np.int64)

    async def go(ep: str) -> float:
        ctx = zmq.asyncio.Context()
        sock = _dealer(ctx, ep)  # type: ignore[arg-type]
        try:
            for _ in range(4):
                await sock.send_multipart([b"d", arr], copy=False)
            await sock.send_multipart([b"end"])
            await sock.recv_multipart()
            t = time.perf_counter()
            for _ in range(count):
                await sock.send_multipart([b"d", arr], copy=False)
            await sock.send_multipart([b"end"])
            got = int((await sock.recv_multipart())[0])
            dt = time.perf_counter() - t
            await sock.send_multipart([b"stop"])
        finally:
            sock.close(0)
            ctx.term()
        if got != count * BULK_BYTES:
            raise RuntimeError(f"bulk sink got {got} bytes, expected {count * BULK_BYTES}")
        return got / dt / 1e9

    import uvloop

    with server("sink-async") as ep:
        return uvloop.run(go(ep))


def memcpy(mib: int = 400) -> float:
    """GB/s of ``np.copyto`` between two prefaulted arrays (best of 3)."""
    src = np.ones(mib << 17, dtype=np.int64)
    dst = np.zeros_like(src)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t)
    return src.nbytes / best / 1e9


def msgpack_rates(n: int) -> tuple[float, float]:
    """(packs/s, unpacks/s) of a ~270-byte task dict, like the ones a task framework puts on the wire."""
    task = {
        "id": "t-5f2c0e1a9b7d4c3e8a6f1d2b",
        "att": 0,
        "fn": {"ref": "benchtasks:noop"},
        "args": [[12345], {}],
        "deps": {},
        "pure": False,
        "retries": 0,
        "owner": "n-8d3f2a1c6b9e4d7f",
        "meta": {"submitted": 1.7e9, "client": "c-0a1b2c3d4e5f", "tags": ["bench", "noop"], "prio": 0},
        "pad": "x" * 64,
    }
    packer = msgpack.Packer()
    blob = packer.pack(task)
    t = time.perf_counter()
    for _ in range(n):
        packer.pack(task)
    pack_rate = n / (time.perf_counter() - t)
    t = time.perf_counter()
    for _ in range(n):
        msgpack.unpackb(blob)
    return pack_rate, n / (time.perf_counter() - t)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve" and sys.argv[2] in MODES:
        serve(sys.argv[2])
    else:
        raise SystemExit(f"usage: {sys.argv[0]} serve {{{','.join(MODES)}}}")
