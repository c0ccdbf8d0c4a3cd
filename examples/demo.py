"""The README's first command: a 3-node mesh on loopback, found by mDNS, running a real job.

The job estimates pi by Monte Carlo over many independent numpy tasks (a map), then folds the partial counts
with a tree of dependent tasks (a DAG: futures passed as arguments), and checks the answer against the same
computation done locally. It prints the mesh as `meshaios status` shows it and which node ran what.

    python examples/demo.py [--nodes 3] [--tasks 2000]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np
from rich.console import Console

from meshaios.cli import render_status
from meshaios.testing.localmesh import LocalMesh, wait_for


def count_inside(seed: int, samples: int) -> int:
    """Points of the unit square inside the quarter circle, for one independent random stream."""
    rng = np.random.default_rng(seed)
    xy = rng.random((samples, 2))
    return int(np.count_nonzero((xy * xy).sum(axis=1) <= 1.0))


def add(a: int, b: int) -> int:
    return a + b


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--tasks", type=int, default=2000)
    ap.add_argument("--samples", type=int, default=20_000)
    args = ap.parse_args()
    console = Console()
    console.print(f"[bold]starting {args.nodes} meshaios nodes on 127.0.0.1 (mDNS on loopback only)...[/bold]")
    t0 = time.monotonic()
    with LocalMesh(args.nodes) as mesh, mesh.client(0) as c:
        wait_for(
            lambda: sum(m["state"] == "alive" for m in c.status()["members"]) >= args.nodes - 1,
            timeout=15,
            what="mDNS discovery",
        )
        console.print(f"{args.nodes} nodes found each other by mDNS {time.monotonic() - t0:.1f} s after launch")
        console.print(render_status(c.status()))

        t1 = time.perf_counter()
        parts = c.map(count_inside, range(args.tasks), [args.samples] * args.tasks)
        level = parts
        while len(level) > 1:  # a tree of dependent tasks: each add waits for its two inputs
            nxt = [c.submit(add, level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            if len(level) % 2:
                nxt.append(level[-1])
            level = nxt
        inside = level[0].result(timeout=300)
        elapsed = time.perf_counter() - t1

        expected = sum(count_inside(s, args.samples) for s in range(args.tasks))
        total = args.tasks * args.samples
        names = {m["id"]: m["name"] for m in c.status()["members"]}
        names[c.node["node"]] = c.node["name"]
        ran = Counter(names.get(f.node, f.node[:8]) for f in parts)
        console.print(
            f"{args.tasks} map tasks + {args.tasks - 1} reduce tasks in {elapsed:.2f} s; "
            "map tasks per node: " + ", ".join(f"{k}={v}" for k, v in sorted(ran.items()))
        )
        ok = inside == expected
        colour = "green" if ok else "red"
        console.print(
            f"[bold {colour}]pi ~= {4 * inside / total:.6f} from {total:,} samples "
            f"({'matches' if ok else 'DOES NOT MATCH'} the local computation)[/bold {colour}]"
        )
        return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
