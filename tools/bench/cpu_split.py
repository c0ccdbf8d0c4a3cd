"""Where an engine's CPU goes over the DAG or the shuffle: user and kernel time and minor page faults, per
process and per thread, for each timed run (docs/performance.md section 22).

    PYTHONPATH=$PWD .bench-venv/bin/python tools/bench/cpu_split.py meshaios 2 dag 3
    PYTHONPATH=$PWD .bench-venv/bin/python tools/bench/cpu_split.py ray 2 shuffle 3 --perf /tmp/ray.data

Engines as in ``run.py`` (``engines.ENGINES``), the same inputs and sizes (100 MiB DAG arrays, 25 MiB shuffle
partitions), each run after a warm-up at toy size, in the same loopback-only sandbox as ``run.py``. ``--perf FILE``
records ``perf record -g`` of every process of the engine during the timed runs only (``perf report -i FILE``).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402  (this folder on the path first)

TICK = os.sysconf("SC_CLK_TCK")
Sample = dict[tuple[int, str, str], tuple[float, float, int]]  # (pid, process, thread) -> user, sys, minflt


def snapshot() -> Sample:
    """CPU (user, system) and minor faults of every thread of this process and its descendants."""
    import psutil

    out: Sample = {}
    me = psutil.Process()
    for p in [me, *me.children(recursive=True)]:
        with contextlib.suppress(psutil.Error, OSError):
            name = p.name()
            for tdir in Path(f"/proc/{p.pid}/task").iterdir():
                with contextlib.suppress(OSError):
                    st = (tdir / "stat").read_text()
                    comm = st[st.index("(") + 1 : st.rindex(")")].rstrip("0123456789/")
                    f = st[st.rindex(")") + 2 :].split()
                    key = (p.pid, name, comm)
                    u, s, mf = out.get(key, (0.0, 0.0, 0))
                    out[key] = (u + int(f[11]) / TICK, s + int(f[12]) / TICK, mf + int(f[7]))
    return out


def report(before: Sample, after: Sample, label: str) -> None:
    procs: dict[tuple[int, str], list[float]] = {}
    threads: dict[tuple[int, str, str], list[float]] = {}
    for key, (u, s, mf) in after.items():
        u0, s0, mf0 = before.get(key, (0.0, 0.0, 0))
        d = (u - u0, s - s0, mf - mf0)
        for acc in (procs.setdefault(key[:2], [0.0, 0.0, 0.0]), threads.setdefault(key, [0.0, 0.0, 0.0])):
            for i in range(3):
                acc[i] += d[i]
    tot = [sum(v[i] for v in procs.values()) for i in range(3)]
    print(f"== {label}: user {tot[0]:.2f} s, system {tot[1]:.2f} s, CPU {tot[0] + tot[1]:.2f} s, "
          f"minor faults {tot[2]:.0f}")  # fmt: skip
    for (pid, name), (u, s, mf) in sorted(procs.items(), key=lambda kv: -(kv[1][0] + kv[1][1])):
        if u + s < 0.02 and mf < 1000:
            continue
        print(f"  {pid:>7} {name[:24]:24} user {u:5.2f} system {s:5.2f} minor faults {mf:>8.0f}")
        for (tpid, _, comm), (tu, ts, tmf) in sorted(threads.items(), key=lambda kv: -(kv[1][0] + kv[1][1])):
            if tpid == pid and (tu + ts >= 0.02 or tmf >= 1000):
                print(f"          thread {comm[:16]:16} user {tu:5.2f} system {ts:5.2f} minor faults {tmf:>8.0f}")


class Perf:
    """``perf record -g`` of the given processes, enabled only around the timed runs (``--control`` fifos)."""

    def __init__(self, out: str, pids: list[int]) -> None:
        d = Path(tempfile.mkdtemp(prefix="cpu-split-"))
        ctl, ack = d / "ctl", d / "ack"
        os.mkfifo(ctl)
        os.mkfifo(ack)
        cmd = ["perf", "record", "-g", "-F", "2000", "-D", "-1", "--control", f"fifo:{ctl},{ack}", "-o", out,
               "-p", ",".join(map(str, pids))]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.ctl = open(ctl, "w")  # noqa: SIM115 (open for the life of the recording)
        self.ack = open(ack)  # noqa: SIM115

    def command(self, what: str) -> None:
        self.ctl.write(what + "\n")
        self.ctl.flush()
        self.ack.readline()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("engine")
    ap.add_argument("size", type=int)
    ap.add_argument("workload", choices=["dag", "shuffle"])
    ap.add_argument("repeat", type=int)
    ap.add_argument("--perf", help="perf record the engine's processes during the timed runs into this file")
    args = ap.parse_args()
    if os.environ.get(run.SANDBOX_ENV) != "1":
        env = run.child_env("netns+pidns (loopback only)")
        base = ["unshare", "--net", "--pid", "--fork", "--mount-proc", "--kill-child"]
        return subprocess.call([*base, sys.executable, __file__, *sys.argv[1:]], env=env)
    run.loopback_up()
    import benchtasks as bt
    import engines
    import psutil

    eng: Any = engines.ENGINES[args.engine](args.size)
    eng.start()
    perf = None
    try:
        if args.perf:
            time.sleep(1)
            perf = Perf(args.perf, [p.pid for p in psutil.Process().children(recursive=True)])
        for rep in range(args.repeat):
            if args.workload == "dag":
                eng.dag(eng.dag_inputs(bt.DAG_COLS * 16, 60), 60)
                time.sleep(0.5)
                inputs = eng.dag_inputs((100 << 20) // 8, 120)
            else:
                eng.shuffle(eng.shuffle_inputs(1024, 60), 60)
                time.sleep(0.5)
                inputs = eng.shuffle_inputs((25 << 20) // 8, 120)
            gc.collect()
            time.sleep(0.3)
            if perf is not None:
                perf.command("enable")
            a = snapshot()
            t = time.perf_counter()
            if args.workload == "dag":
                eng.dag(inputs, 120)
            else:
                eng.shuffle(inputs, 120)
            secs = time.perf_counter() - t
            b = snapshot()
            if perf is not None:
                perf.command("disable")
            del inputs
            report(a, b, f"{eng.label} {args.workload} {rep + 1}/{args.repeat}: {secs:.3f} s, "
                         f"load {os.getloadavg()[0]:.1f}")  # fmt: skip
            gc.collect()
            time.sleep(0.5)
    finally:
        if perf is not None:
            perf.stop()
        eng.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
