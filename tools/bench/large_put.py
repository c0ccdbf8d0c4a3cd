"""Large objects on a real mesh (issue 17): a ``put`` of SIZE bytes followed by three readers, ROUNDS times.

    python tools/bench/large_put.py --size 1GiB --rounds 20      # the issue's acceptance run (default settings)
    python tools/bench/large_put.py --size 300MB --rounds 2 --nodes 1

Prints, per round, the put and read times; at the end whether every round was right, the client's failovers and
every SWIM transition other than 'alive' the nodes counted (suspicions, deaths). Exits 1 if any of them is off.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from meshaios.testing.localmesh import LocalMesh, wait_for


def _size(text: str) -> int:
    units = {"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "kb": 10**3, "mb": 10**6, "gb": 10**9, "b": 1}
    t = text.strip().lower()
    for u, f in units.items():
        if t.endswith(u):
            return int(float(t[: -len(u)]) * f)
    return int(t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1GiB")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--nodes", type=int, default=3)
    args = ap.parse_args()
    n = _size(args.size) // 8
    ok = True
    with LocalMesh(args.nodes, startup_timeout=60) as mesh:
        with mesh.client(0) as c:
            wait_for(lambda: len(c.status()["members"]) == args.nodes - 1, timeout=30, what="full membership")
            for i in range(args.rounds):
                value = np.full(n, float(i))
                t0 = time.monotonic()
                f = c.put(value, timeout=600)
                t1 = time.monotonic()
                if args.nodes > 1:
                    got = c.gather([c.submit(np.sum, f) for _ in range(3)], timeout=600, progress=False)
                    right = got == [float(i) * n] * 3
                else:
                    right = bool((f.result(timeout=600) == value).all())
                t2 = time.monotonic()
                ok &= right
                print(f"round {i}: put {t1 - t0:.1f} s, readers {t2 - t1:.1f} s, {'ok' if right else 'WRONG'}")
                del f, value
            failovers = c._async.failovers
        trouble = {}
        for p in mesh.procs:
            with mesh.client(p.index, spread=1) as ci:
                counters = ci.status()["node"]["counters"]
            bad = {k: v for k, v in counters.items() if k.startswith("member_") and k != "member_alive"}
            if bad:
                trouble[p.name] = bad
    print(
        f"{args.rounds} rounds of {args.size}: {'all right' if ok else 'WRONG RESULTS'}, {failovers} failovers, "
        f"membership trouble: {trouble or 'none'}"
    )
    return 0 if ok and not failovers and not trouble else 1


if __name__ == "__main__":
    sys.exit(main())
