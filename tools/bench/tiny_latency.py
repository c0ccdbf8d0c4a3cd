"""Sequential tiny tasks (``submit(noop, i).result()``, one at a time) on a ``LocalMesh`` of real node processes,
with the CPU time each thread of the client and of every node spent per task (from ``/proc/<pid>/task/*/stat``):
where a round trip's microseconds go, thread by thread, without a profiler's overhead. Needs only meshaios, so it
compares two trees of the code in one sitting (``PYTHONPATH=<tree>``; the nodes run the same tree: the script
changes to its directory, since ``python -m meshaios`` imports from the working directory first)::

    for i in 1 2 3; do for tree in /tmp/old /tmp/new; do
        PYTHONPATH=$tree .venv/bin/python tools/bench/tiny_latency.py --nodes 1 --tasks 3000; done; done

Prints the median, 10th and 99th percentile round trip, how many tasks took the caller's direct path, then per
process the user and system CPU microseconds per task of each thread that used any (the loop thread is
``MainThread`` in a node and ``meshaios-client`` in the client; ``ZMQbg/IO/0`` is libzmq's I/O thread, which
encrypts and moves the bytes).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p)
sys.path.insert(0, str(HERE))

import benchtasks as bt  # noqa: E402  (the nodes import it by reference, from HERE)

import meshaios  # noqa: E402
from meshaios.testing.localmesh import LocalMesh  # noqa: E402


def thread_cpu(pid: int) -> dict[str, tuple[float, float]]:
    """``name/tid`` -> (user, system) CPU seconds of every thread of ``pid``."""
    tick = os.sysconf("SC_CLK_TCK")
    names = {t.native_id: t.name for t in threading.enumerate()} if pid == os.getpid() else {}
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            raw = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        name = names.get(int(tid), "MainThread" if int(tid) == pid else comm)
        out[f"{name}/{tid}"] = (int(fields[11]) / tick, int(fields[12]) / tick)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=1)
    ap.add_argument("--tasks", type=int, default=3000)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--after-map", type=int, default=0, metavar="N",
                    help="first map N no-ops and gather them (as run.py's noop workload does before latency)")
    args = ap.parse_args()
    # the nodes run ``python -m meshaios``, which imports from the working directory first: this tree's, then
    os.chdir(Path(meshaios.__file__).resolve().parents[1])
    with LocalMesh(args.nodes, workers=1, discovery=False) as mesh, mesh.client(0) as c:
        if args.after_map:
            c.gather(c.map(bt.noop, range(args.after_map)), timeout=120)
        for i in range(args.warmup):
            c.submit(bt.noop, i).result(30)
        pids = {"client": os.getpid(), **{p.name: p.pid for p in mesh.procs}}
        before = {k: thread_cpu(p) for k, p in pids.items()}
        times = []
        for i in range(args.tasks):
            t0 = time.perf_counter()
            c.submit(bt.noop, i).result(30)
            times.append(time.perf_counter() - t0)
        after = {k: thread_cpu(p) for k, p in pids.items()}
        a = c._async
        paths = [getattr(a, k, "-") for k in ("sent_direct", "read_direct", "handed_back")]  # "-": an older tree
    times.sort()
    n = args.tasks
    compiled = getattr(meshaios, "compiled", list)()  # (an older tree has no meshaios.compiled)
    print(f"{meshaios.__file__} ({'compiled: ' + ', '.join(compiled) if compiled else 'pure Python'}): "
          f"{args.nodes} node(s), {n} sequential tiny tasks: median "
          f"{statistics.median(times) * 1e3:.3f} ms, p10 {times[n // 10] * 1e3:.3f} ms, p99 "
          f"{times[int(n * 0.99)] * 1e3:.3f} ms")  # fmt: skip
    # since the client started, warm-up included: SUBMITs its calling thread sent, answers that thread read itself,
    # and other messages it read and handed to the loop (docs/performance.md sections 16 and 20)
    print(f"  client paths: sent directly {paths[0]}, answers read by the caller {paths[1]}, handed back {paths[2]}")
    for proc, threads in after.items():
        parts = []
        for t, (user, system) in sorted(threads.items()):
            u0, s0 = before[proc].get(t, (0.0, 0.0))
            du, ds = (user - u0) / n * 1e6, (system - s0) / n * 1e6
            if du + ds >= 1:
                parts.append(f"{t.split('/')[0]} {du:.0f}+{ds:.0f}")
        print(f"  {proc}: CPU-us per task (user+system): {', '.join(parts)}")


if __name__ == "__main__":
    main()
