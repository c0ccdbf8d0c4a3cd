"""Several clients submitting no-op tasks at once, each attached to a different node: total tasks/s.

    .venv/bin/python tools/bench/many_clients.py --nodes 3 --clients 8 --tasks 2000 --spread 1,4 --repeat 3

``LocalMesh(nodes, workers=1)`` (as ``run.py``'s meshaios engine), secure by default; client ``i`` is attached to
node ``i % nodes`` and owns its tasks on up to ``spread`` nodes (meshaios/shards.py). Every client maps its
``tasks`` no-ops at the same moment (a barrier) and waits for them; the figure is all tasks over the wall time from
the barrier to the last client's last result. Spreads alternate within a repeat, on the same mesh, so that load
drifting on a shared machine falls on each alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

HERE = str(Path(__file__).resolve().parent)
sys.path.insert(0, HERE)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (HERE, os.environ.get("PYTHONPATH", "")) if p)  # nodes import it

import benchtasks as bt  # noqa: E402

from meshaios.testing.localmesh import LocalMesh, wait_for  # noqa: E402


def one_round(mesh: LocalMesh, nodes: int, clients: int, tasks: int, spread: int) -> float:
    cs = [mesh.client(i % nodes, spread=spread) for i in range(clients)]
    try:
        for c in cs:
            wait_for(lambda c=c: len(c._async.core.shards) >= min(spread, nodes), 30, what="owners")
            c.gather(c.map(bt.noop, range(200)), timeout=120)  # warm-up
        barrier = threading.Barrier(clients + 1)
        errors: list[BaseException] = []

        def work(c: object) -> None:
            barrier.wait()
            try:
                got = c.gather(c.map(bt.noop, range(tasks)), timeout=600)  # type: ignore[attr-defined]
                assert got == list(range(tasks))
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(c,)) for c in cs]
        for t in threads:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
        if errors:
            raise errors[0]
        return clients * tasks / elapsed
    finally:
        for c in cs:
            c.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--tasks", type=int, default=2000, help="no-op tasks per client")
    p.add_argument("--spread", default="1,4", help="comma-separated client spreads to compare")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--insecure", action="store_true")
    args = p.parse_args()
    spreads = [int(x) for x in args.spread.split(",")]
    rates: dict[int, list[float]] = {s: [] for s in spreads}
    with LocalMesh(args.nodes, workers=1, discovery=False, insecure=args.insecure) as mesh:
        with mesh.client(0, spread=1) as c:
            peers = args.nodes - 1
            wait_for(lambda: sum(m["state"] == "alive" for m in c.status()["members"]) >= peers, 30, what="mesh")
        for r in range(args.repeat):
            for s in spreads:
                rate = one_round(mesh, args.nodes, args.clients, args.tasks, s)
                rates[s].append(rate)
                print(f"repeat {r + 1}: spread {s}: {rate:,.0f} tasks/s", flush=True)
    for s in spreads:
        xs = rates[s]
        print(
            f"{args.clients} clients x {args.tasks} no-ops on {args.nodes} nodes, spread {s}: "
            f"median {statistics.median(xs):,.0f} tasks/s (range {min(xs):,.0f}-{max(xs):,.0f})"
        )


if __name__ == "__main__":
    main()
