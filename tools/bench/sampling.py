"""Peak memory while a workload runs (psutil), and py-spy profiles of chosen processes.

``RssSampler`` polls every process of the benchmark's tree (this process and all its descendants) every 20 ms:
RSS of each task-running process (the engine's ``worker_pids()``) and the sum over all the engine's processes
(every descendant: nodes, workers, nannies, raylet, GCS...). This process (the client, and for Dask the in-process
scheduler) is left out of the sum: its RSS says more about the harness than the engine; ``client_growth_mb`` says
how much it grew during the workload.
``private`` is RSS minus shared pages: for Ray, whose workers map the shared-memory object store, RSS counts those
shared pages in every process that touched them, so ``private`` is the fairer per-worker figure there.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import psutil

MB = 1e6


@dataclass
class RssPeaks:
    worker_rss: dict[int, int] = field(default_factory=dict)  # pid -> peak RSS bytes
    worker_private: dict[int, int] = field(default_factory=dict)
    client_start: int = -1  # this process's RSS at the first sample
    client_rss: int = 0
    engine_rss: int = 0  # peak of the summed RSS of every descendant process (the engine's, not the client's)
    samples: int = 0

    def summary(self) -> dict[str, float]:
        return {
            "worker_rss_max_mb": max(self.worker_rss.values(), default=0) / MB,
            "worker_private_max_mb": max(self.worker_private.values(), default=0) / MB,
            "client_growth_mb": max(0, self.client_rss - self.client_start) / MB,
            "engine_rss_mb": self.engine_rss / MB,
            "workers": len(self.worker_rss),
            "samples": self.samples,
        }


class RssSampler:
    def __init__(self, worker_pids: Callable[[], list[int]], interval: float = 0.02, refresh: float = 0.5) -> None:
        self.worker_pids = worker_pids
        self.interval = interval
        self.refresh = refresh
        self.peaks = RssPeaks()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        me = psutil.Process()
        tree: dict[int, psutil.Process] = {}
        workers: set[int] = set()
        next_refresh = 0.0
        pk = self.peaks
        while True:
            now = time.monotonic()
            if now >= next_refresh:
                with contextlib.suppress(Exception):
                    workers = set(self.worker_pids())
                with contextlib.suppress(psutil.Error):
                    tree = {p.pid: p for p in me.children(recursive=True)}
                tree[me.pid] = me
                next_refresh = now + self.refresh
            total = 0
            for pid, p in list(tree.items()):
                try:
                    mi = p.memory_info()
                except psutil.Error:
                    tree.pop(pid, None)
                    continue
                if pid == me.pid:
                    if pk.client_start < 0:
                        pk.client_start = mi.rss
                    pk.client_rss = max(pk.client_rss, mi.rss)
                    continue
                total += mi.rss
                if pid in workers:
                    pk.worker_rss[pid] = max(pk.worker_rss.get(pid, 0), mi.rss)
                    private = mi.rss - getattr(mi, "shared", 0)
                    pk.worker_private[pid] = max(pk.worker_private.get(pid, 0), private)
            pk.engine_rss = max(pk.engine_rss, total)
            pk.samples += 1
            if self._stop.wait(self.interval):
                return


def tree_cpu() -> dict[int, float]:
    """CPU seconds (user + system) so far of this process and every descendant, by pid."""
    me = psutil.Process()
    out: dict[int, float] = {}
    for p in [me, *me.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
    return out


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(v - before.get(pid, 0.0) for pid, v in after.items())


def tree_kernel() -> dict[int, tuple[float, int]]:
    """Kernel CPU seconds and minor page faults so far of this process and every descendant, by pid: where an
    engine's CPU goes into faulting in and zeroing fresh memory, or copying into /dev/shm (performance.md 22)."""
    me = psutil.Process()
    out: dict[int, tuple[float, int]] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for p in [me, *me.children(recursive=True)]:
        with contextlib.suppress(psutil.Error, OSError):
            stat = Path(f"/proc/{p.pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            out[p.pid] = (int(fields[12]) / tick, int(fields[7]))  # stime, minflt
    return out


def kernel_delta(before: dict[int, tuple[float, int]], after: dict[int, tuple[float, int]]) -> tuple[float, int]:
    """Kernel CPU seconds and minor faults between two ``tree_kernel`` samples."""
    secs = sum(v[0] - before.get(pid, (0.0, 0))[0] for pid, v in after.items())
    faults = sum(v[1] - before.get(pid, (0.0, 0))[1] for pid, v in after.items())
    return secs, faults


def thread_cpu(pids: dict[str, int]) -> dict[tuple[str, str], float]:
    """Per-thread CPU from /proc: libzmq's I/O threads are named ``ZMQbg/IO/n``, so the time spent in them
    (CurveZMQ encryption, socket copies) separates from the Python threads' (named after the process)."""
    out: dict[tuple[str, str], float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for label, pid in pids.items():
        task_dir = Path(f"/proc/{pid}/task")
        with contextlib.suppress(OSError):
            for tdir in task_dir.iterdir():
                with contextlib.suppress(OSError):
                    name = (tdir / "comm").read_text().strip()
                    stat = (tdir / "stat").read_text()
                    fields = stat[stat.rindex(")") + 2 :].split()
                    secs = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
                    key = (label, _thread_group(name))
                    out[key] = out.get(key, 0.0) + secs
    return out


def _thread_group(name: str) -> str:
    if name.startswith("ZMQbg/IO"):
        return "libzmq I/O threads"
    if name.startswith("ZMQbg"):
        return "libzmq other"
    return "python threads"


def thread_cpu_report(
    before: dict[tuple[str, str], float], after: dict[tuple[str, str], float], wall: float
) -> list[str]:
    lines = []
    for label in dict.fromkeys(k[0] for k in after):
        parts = {k[1]: v - before.get(k, 0.0) for k, v in after.items() if k[0] == label}
        detail = ", ".join(f"{g} {v:.2f} s" for g, v in sorted(parts.items(), key=lambda kv: -kv[1]))
        lines.append(f"{label}: {sum(parts.values()):.2f} CPU-s in {wall:.2f} s wall ({detail})")
    return lines


class PySpy:
    """``py-spy record`` on each pid while the ``with`` block runs; raw (collapsed) stacks land in ``out``."""

    def __init__(self, pids: dict[str, int], out: Path, rate: int = 250) -> None:
        self.pids = pids
        self.out = out
        self.rate = rate
        self.procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def __enter__(self) -> PySpy:
        self.out.mkdir(parents=True, exist_ok=True)
        exe = _py_spy()
        for name, pid in self.pids.items():
            path = self.out / f"{name}.txt"
            cmd = [exe, "record", "--pid", str(pid), "--rate", str(self.rate), "--format", "raw", "-o", str(path)]
            # --gil: only samples holding the GIL (Python work, not waiting); --nonblocking: never pause the process
            # (a paused node misses heartbeats and the mesh starts failing it over)
            cmd += ["--threads", "--gil", "--nonblocking"]
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            self.procs.append((name, proc, path))
        time.sleep(1.0)  # py-spy attaches asynchronously
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        for _, proc, _ in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGINT)
        for _, proc, _ in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def files(self) -> dict[str, Path]:
        return {name: path for name, _, path in self.procs if path.exists()}


def _py_spy() -> str:
    import shutil
    import sys

    here = Path(sys.executable).parent / "py-spy"
    found = str(here) if here.exists() else shutil.which("py-spy")
    if not found:
        raise RuntimeError("py-spy is not installed: bash tools/bench/setup.sh installs it into .bench-venv")
    return found


def summarise_profile(path: Path, top: int = 15) -> dict[str, list[tuple[str, float]]]:
    """Where the samples went: by leaf function (self time), by meshaios function (inclusive) and by thread, as
    fractions of all samples.

    Recorded with ``--gil``, so the fractions are of the time some thread of the process held the GIL: Python
    work, not waiting, and not C code that releases the GIL (libzmq's I/O threads, numpy kernels that release it).
    """
    leaf: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    thread: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        frames = stack.split(";")
        total += count
        leaf[_short(frames[-1])] += count
        thread[frames[0]] += count
        for f in {_short(f) for f in frames if " (meshaios/" in f}:
            inclusive[f] += count
    if total == 0:
        return {"self": [], "meshaios_inclusive": [], "threads": [], "samples": [("total", 0.0)]}
    return {
        "self": [(k, v / total) for k, v in leaf.most_common(top)],
        "meshaios_inclusive": [(k, v / total) for k, v in inclusive.most_common(top)],
        "threads": [(k, v / total) for k, v in thread.most_common(6)],
        "samples": [("total", float(total))],
    }


def _short(frame: str) -> str:
    # "func (path/to/module.py:123)" -> "func (module.py)"
    name, _, loc = frame.partition(" (")
    file = loc.rsplit(":", 1)[0].rsplit("/", 1)[-1].rstrip(")")
    return f"{name} ({file})" if file else name
