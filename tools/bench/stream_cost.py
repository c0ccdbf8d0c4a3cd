"""What streaming costs: a ``put`` of SIZE on a two-node mesh without /dev/shm (``--no-shm``), so both the client's
upload to its node and the replica from that node to the other travel as streams (``store/stream.py``).

    python tools/bench/stream_cost.py --size 256MiB --rounds 3
    PYTHONPATH=<other tree> python tools/bench/stream_cost.py ...     # A/B two chunk settings, alternating

Prints the chunk size and window in use, each put's wall time, and the nodes' CPU per put (user + system of both
node processes, from /proc): CPU is the figure that survives a loaded machine.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from large_put import _size  # this directory: run as a script

from meshaios.store.stream import StreamConfig
from meshaios.testing.localmesh import LocalMesh, wait_for


def _cpu(pids: list[int]) -> float:
    ticks = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="256MiB")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    size = _size(args.size)
    x = np.random.default_rng(0).integers(0, 255, size, dtype=np.uint8)
    cfg = StreamConfig()
    with LocalMesh(2, discovery=False, extra_args=["--no-shm"]) as mesh, mesh.client(0) as c:
        wait_for(lambda: len(c.status()["members"]) == 1, timeout=20, what="the two nodes meet")
        pids = [p.pid for p in mesh.procs]
        times = []
        cpu0 = _cpu(pids)
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            f = c.put(x)
            times.append(time.perf_counter() - t0)
            del f
        cpu = (_cpu(pids) - cpu0) / args.rounds
    print(f"chunk {cfg.chunk >> 20} MiB x {cfg.window} in flight: put {size >> 20} MiB "
          f"{' '.join(f'{t:.2f}' for t in times)} s (median {sorted(times)[len(times) // 2]:.2f} s); "
          f"node CPU {cpu:.2f} s per put")  # fmt: skip


if __name__ == "__main__":
    main()
