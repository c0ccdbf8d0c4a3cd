"""What one object costs to hand to a node of the same machine: through /dev/shm vs as a CurveZMQ message.

    .venv/bin/python tools/bench/shm_cost.py            # sizes 64 KiB .. 100 MiB, medians of several tries

shm: ``store.shm.write_file`` (the holder's one copy into a new 0600 file) + ``open_ref`` (the receiver's checks,
read-only mapping, unlink) + one pass over the array (the page faults of first use), all in this process.
socket: one message of the same size, DEALER -> ROUTER over TCP loopback with CurveZMQ, zero-copy on both ends,
until the receiver has it all (two libzmq I/O threads, as two nodes would have). The threshold ``shm.MIN_BYTES``
was chosen from this table (docs/dataplane.md).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from meshaios.store import shm
from meshaios.wire.values import dumps, loads

SIZES = (64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20, 100 << 20)


def tries(size: int) -> int:
    return 5 if size >= 16 << 20 else 40


def shm_seconds(area: shm.ShmArea, arr: np.ndarray[Any, Any]) -> float:
    payload, _ = dumps(arr, allow_pickle=False)
    path = area.new_path()
    t0 = time.perf_counter()
    sizes = shm.write_file(path, payload)
    got = loads(shm.open_ref(area.dir, shm.ShmRef(path.name, payload.blob, sizes)), allow_pickle=False)
    float(got.sum())
    return time.perf_counter() - t0


def curve_pair() -> tuple[zmq.Context[Any], zmq.Socket[Any], zmq.Socket[Any]]:
    ctx: zmq.Context[Any] = zmq.Context(io_threads=2)
    public, secret = zmq.curve_keypair()
    rcv = ctx.socket(zmq.ROUTER)
    rcv.curve_server = True
    rcv.curve_secretkey = secret
    rcv.curve_publickey = public
    rcv.bind("tcp://127.0.0.1:*")
    snd = ctx.socket(zmq.DEALER)
    cpub, csec = zmq.curve_keypair()
    snd.curve_serverkey = public
    snd.curve_publickey = cpub
    snd.curve_secretkey = csec
    snd.connect(rcv.getsockopt(zmq.LAST_ENDPOINT).decode())
    snd.send(b"hello")
    rcv.recv_multipart()
    return ctx, snd, rcv


def curve_seconds(snd: zmq.Socket[Any], rcv: zmq.Socket[Any], arr: np.ndarray[Any, Any]) -> float:
    t0 = time.perf_counter()
    snd.send(arr, copy=False)
    _, frame = rcv.recv_multipart(copy=False)
    float(np.frombuffer(frame.buffer, dtype=arr.dtype).sum())
    return time.perf_counter() - t0


def main() -> int:
    root = Path(tempfile.gettempdir()) if not shm.host_id() else shm.SHM_ROOT
    area = shm.ShmArea("shm-cost", "bench", root=root)
    if not area.open():
        print("no usable shared-memory directory", file=sys.stderr)
        return 1
    ctx, snd, rcv = curve_pair()
    print("| object | /dev/shm handover | CurveZMQ message | socket / shm |")
    print("|---|---|---|---|")
    try:
        for size in SIZES:
            arr = np.random.default_rng(0).standard_normal(size // 8)
            s = statistics.median(shm_seconds(area, arr) for _ in range(tries(size)))
            c = statistics.median(curve_seconds(snd, rcv, arr) for _ in range(tries(size)))
            label = f"{size >> 20} MiB" if size >= 1 << 20 else f"{size >> 10} KiB"
            print(f"| {label} | {s * 1e3:.2f} ms ({size / s / 1e9:.2f} GB/s) | {c * 1e3:.2f} ms "
                  f"({size / c / 1e9:.2f} GB/s) | {c / s:.1f}x |")  # fmt: skip
    finally:
        area.close()
        snd.close(0)
        rcv.close(0)
        ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
