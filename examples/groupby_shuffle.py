"""A numpy group-by-key aggregation over ~1 GB, hash-partitioned and shuffled peer to peer between nodes.

Every map task generates one chunk of (key, value) int64 rows on the node that runs it; the mesh hash-partitions
each chunk into P parts (the hash_partition kernel), reducer j pulls part j of every chunk from the node holding
it and sums values per key. The answer is checked exactly against a single-process numpy computation. Node
memory limits are set below the data size, so the object stores spill to disk; spill counts and peak RSS per
node are printed.

    python examples/groupby_shuffle.py [--gb 1.0] [--partitions 32] [--nodes 3] [--memory-limit 256MiB]
"""

from __future__ import annotations

import argparse
import functools
import time

import numpy as np
from rich.console import Console

from meshaios.testing.localmesh import LocalMesh, wait_for

KEYS = 100_000


def make_chunk(seed: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, KEYS, rows, dtype=np.int64), rng.integers(-1000, 1000, rows, dtype=np.int64)


def group_sum(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sums = np.bincount(keys, weights=values, minlength=KEYS)
    present = np.bincount(keys, minlength=KEYS) > 0
    idx = np.flatnonzero(present)
    return idx.astype(np.int64), np.rint(sums[idx]).astype(np.int64)


def peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--gb", type=float, default=1.0, help="total size of keys + values")
    ap.add_argument("--partitions", type=int, default=32)
    ap.add_argument("--chunks", type=int, default=32)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--memory-limit", default="256MiB", help="per-node object store limit (spill beyond it)")
    args = ap.parse_args()
    console = Console()
    rows = int(args.gb * 1e9 / 16 / args.chunks)
    total_bytes = rows * 16 * args.chunks
    console.print(
        f"[bold]{args.nodes}-node mesh on 127.0.0.1; {total_bytes / 1e9:.2f} GB of int64 key/value rows in "
        f"{args.chunks} chunks -> {args.partitions} partitions; store limit {args.memory_limit} per node[/bold]"
    )
    with LocalMesh(args.nodes, extra_args=["--memory-limit", args.memory_limit]) as mesh, mesh.client(0) as c:
        wait_for(lambda: len(c.status()["members"]) >= args.nodes - 1, timeout=15, what="discovery")
        t0 = time.perf_counter()
        # each mapper makes its chunk where it runs and hash-partitions it at once: nothing crosses the network
        # but the shuffle itself (reducer j pulls part j of every chunk from whichever node holds it)
        mapper = functools.partial(make_chunk, rows=rows)
        outs = c.mapreduce(mapper, group_sum, range(args.chunks), partitions=args.partitions)
        got = np.zeros(KEYS, dtype=np.int64)
        for f in c.as_completed(outs):
            idx, sums = f.result()
            got[idx] += sums
        elapsed = time.perf_counter() - t0

        expected = np.zeros(KEYS, dtype=np.int64)
        for s in range(args.chunks):
            k, v = make_chunk(s, rows)
            expected += np.bincount(k, weights=v, minlength=KEYS).astype(np.int64)
        ok = bool(np.array_equal(got, expected))
        spills = 0
        for i in range(args.nodes):
            with mesh.client(i) as ci:
                spills += ci.status()["node"]["store"]["spill_events"]
        rss = [peak_rss(p.pid) for p in mesh.procs]
        console.print(
            f"shuffled and reduced in {elapsed:.1f} s ({total_bytes / elapsed / 1e6:.0f} MB/s); "
            f"spill events: {spills}; "
            "peak RSS per node: " + ", ".join(f"{r / 2**20:.0f} MiB" for r in rss)
        )
        colour = "green" if ok else "red"
        console.print(
            f"[bold {colour}]group-by sum over {KEYS:,} keys "
            f"{'equals' if ok else 'DIFFERS FROM'} the single-process numpy result[/bold {colour}]"
        )
        return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
