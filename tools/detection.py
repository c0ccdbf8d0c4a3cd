"""Failure-detection figures for docs/reliability.md: time from SIGKILL until every survivor says "dead", and
false "dead" verdicts in a healthy mesh, with and without one node starved of CPU.

    python tools/detection.py --nodes 3 --kills 10          # detection time, p50/p99
    python tools/detection.py --nodes 6 --kills 10
    python tools/detection.py --nodes 3 --healthy 600       # false verdicts over 10 minutes
    python tools/detection.py --nodes 3 --healthy 120 --starve   # one node at SCHED_IDLE under two CPU hogs
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import statistics
import time
from typing import Any

from meshaios.testing.localmesh import LocalMesh, wait_for


def _hog(stop: Any) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def all_alive(mesh: LocalMesh, clients: dict[int, Any]) -> bool:
    ids = {p.node_id for p in mesh.procs if p.alive()}
    for c in clients.values():
        st = c.status(timeout=2)
        seen = {st["node"]["id"]} | {m["id"] for m in st["members"] if m["state"] == "alive"}
        if not ids <= seen:
            return False
    return True


def detection(nodes: int, kills: int) -> list[float]:
    times: list[float] = []
    with LocalMesh(nodes, workers=1) as mesh:
        for k in range(kills):
            victim_index = 1 + k % (nodes - 1)
            survivors = [p.index for p in mesh.procs if p.index != victim_index]
            clients = {i: mesh.client(i, spread=1) for i in survivors}
            try:
                wait_for(lambda cl=clients: all_alive(mesh, cl), timeout=30, what="all alive")
                victim = mesh.by_index(victim_index).node_id
                t0 = time.monotonic()
                mesh.kill(victim_index, signal.SIGKILL)
                pending = set(survivors)
                while pending and time.monotonic() - t0 < 30:
                    for i in list(pending):
                        st = {m["id"]: m["state"] for m in clients[i].status(timeout=2)["members"]}
                        if st.get(victim) == "dead":
                            pending.discard(i)
                    time.sleep(0.02)
                times.append(time.monotonic() - t0)
                print(f"kill {k + 1}: every survivor saw node{victim_index} dead after {times[-1]:.2f} s", flush=True)
            finally:
                for c in clients.values():
                    c.close()
            mesh.spawn(victim_index)
            mesh.wait_ready()
    return times


def healthy(nodes: int, seconds: float, starve: bool) -> dict[str, Any]:
    with LocalMesh(nodes, workers=1) as mesh:
        clients = {p.index: mesh.client(p.index, spread=1) for p in mesh.procs}
        hogs: list[multiprocessing.Process] = []
        stop = multiprocessing.Event()
        try:
            wait_for(lambda: all_alive(mesh, clients), timeout=30, what="all alive")
            if starve:
                os.sched_setscheduler(mesh.by_index(nodes - 1).pid, os.SCHED_IDLE, os.sched_param(0))
                hogs = [multiprocessing.Process(target=_hog, args=(stop,)) for _ in range(os.cpu_count() or 2)]
                for h in hogs:
                    h.start()
            t0 = time.monotonic()
            while time.monotonic() - t0 < seconds:
                time.sleep(1.0)
            verdicts = {}
            for i, c in clients.items():
                counters = c.status(timeout=10)["node"]["counters"]
                verdicts[i] = {k: v for k, v in counters.items() if k in ("member_dead", "member_suspect")}
        finally:
            stop.set()
            for h in hogs:
                h.join(timeout=5)
            for c in clients.values():
                c.close()
    dead = sum(v.get("member_dead", 0) for v in verdicts.values())
    suspect = sum(v.get("member_suspect", 0) for v in verdicts.values())
    return {"seconds": seconds, "starved": starve, "false_dead": dead, "suspect_events": suspect, "per_node": verdicts}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--kills", type=int, default=0)
    ap.add_argument("--healthy", type=float, default=0.0, help="seconds of a healthy run counting false verdicts")
    ap.add_argument("--starve", action="store_true", help="one node at SCHED_IDLE under CPU hogs")
    ap.add_argument("--json")
    args = ap.parse_args()
    out: dict[str, Any] = {"nodes": args.nodes}
    if args.kills:
        t = sorted(detection(args.nodes, args.kills))
        out["detection_s"] = {
            "n": len(t),
            "p50": round(statistics.median(t), 3),
            "p99": round(t[min(len(t) - 1, int(0.99 * len(t)))], 3),
            "min": round(t[0], 3),
            "max": round(t[-1], 3),
        }
    if args.healthy:
        out["healthy"] = healthy(args.nodes, args.healthy, args.starve)
    print(json.dumps(out, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
