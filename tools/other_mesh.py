"""Another mesh on this machine's loopback, busy, until interrupted: for checking that the test suite (or anything
else) is not disturbed by a mesh of another token announcing itself by mDNS next to it.

    python tools/other_mesh.py &          # 3 nodes of a fresh token, a 200-task map every 2 s
    python -m pytest                      # the suite, meanwhile
    kill %1                               # its nodes stop with it (by PID; they also stop if this process dies)
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

from meshaios.testing.localmesh import LocalMesh


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=3)
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # leave the ``with`` blocks: the nodes are stopped
    with LocalMesh(args.nodes) as mesh, mesh.client(0) as c:
        print(f"other mesh up: node PIDs {[p.pid for p in mesh.procs]}, {mesh.address(0)}", flush=True)
        while True:
            c.gather(c.map(pow, range(200), [2] * 200), timeout=120)
            time.sleep(2)


if __name__ == "__main__":
    main()
