# ruff: noqa: RUF001  (the tables print multiplication signs and en dashes on purpose)
"""meshaios vs Dask distributed vs Ray, side by side in one run, with the raw limits of the machine.

    bash tools/bench/setup.sh                                  # once: .bench-venv/ with meshaios, dask, ray
    .bench-venv/bin/python tools/bench/run.py                  # full run (~10 min on 2 cores)
    .bench-venv/bin/python tools/bench/run.py --quick          # smoke run (< 3 min)
    .bench-venv/bin/python tools/bench/run.py --only noop,latency,ray,meshaios --repeat 5
    .bench-venv/bin/python tools/bench/run.py --only shuffle,meshaios --profile prof/   # py-spy the nodes
    .bench-venv/bin/python tools/bench/run.py --sizes 1,4,8    # scaling mode (many cores): every engine at 1/4/8
    .bench-venv/bin/python tools/bench/run.py --only wordcount,meshaios,dask --wordcount-mb 20 --repeat 1

Workloads (``../shared/baselines.md`` has the peers' reference figures; docs/performance.md has the results):
  noop     10,000 no-op tasks submitted at once from one client, waited for: tasks/s
  latency  one tiny task at a time, submit -> result, back to back: median and p99 of >= 500 per repetition
  shuffle  16 partitions of 25 MiB int64 materialised on the workers before the clock; map = bucket by the top
           4 bits of x * 0x9E3779B97F4A7C15 (uint64 wrap) into 16 slices; reducer j gets slice j of every map
           output and returns (count, wrapping int64 sum); checked against a one-process reference
  dag      numpy kernels over 100 MiB float64 arrays (elementwise, a 64x64 matmul, pairwise adds) whose inputs
           come from different tasks, so data moves between workers; checked against a local reference
  wordcount  a generated text corpus (100 MB: 16 partitions of lines of Zipf-distributed words, ~50,000
           distinct) materialised on the workers before the clock; word frequencies of the whole corpus. meshaios:
           ``mapreduce`` with a Counter per partition as mapper, 16 hash partitions, a summing reducer (and, as a
           second figure, the textbook form: (word, 1) pairs with a map-side combiner); Dask: a bag of lines,
           ``.str.split().flatten().frequencies()``; both checked against collections.Counter in one plain Python
           process, whose time is the "word count in one process" raw figure
  raw      pyzmq DEALER/ROUTER round trip (blocking, and zmq.asyncio on uvloop), 8 MiB zero-copy multipart
           GB/s between two processes, np.copyto memcpy GB/s, msgpack pack/unpack rates
Peak RSS per worker process (and of all the engine's processes together) is sampled during shuffle and dag, as is
the CPU time of every process.

Engines, equal worker counts: meshaios = LocalMesh(n, workers=1) (n node processes, one task thread each,
CurveZMQ on, the client on node 0); dask = LocalCluster(n_workers=n, threads_per_worker=1, processes=True) and
dask-tuned = the same with ``distributed.scheduler.worker-saturation: inf``; ray = ray.init(num_cpus=n). meshaios
also runs with 3 nodes, compared against the peers' 2 workers (this machine has 2 cores).

Every figure is the median over ``--repeat`` rounds with min-max; a round starts, measures and stops every engine
once, so load drifting on a shared machine falls on all engines alike. Ratios are "how many times better meshaios
is" (> 1: meshaios wins), from medians measured in this same run.

The whole run happens in a private network namespace with only loopback (and a private PID namespace, so every
process it started dies with it, whatever happens): nothing can bind or send beyond 127.0.0.1. ``--no-sandbox``
runs without it where ``unshare`` is not allowed. BLAS/OpenMP pools get one thread per process for every engine
(what Dask and Ray already do for their workers); OPENBLAS_CORETYPE and the like are left as the machine sets them.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SANDBOX_ENV = "MESHAIOS_BENCH_CHILD"
WARMUP_TIMEOUT = 60.0  # a broken engine shows here, before the long timeouts of the measured runs

WORKLOADS = ("raw", "noop", "latency", "shuffle", "dag", "wordcount")
ENGINE_NAMES = ("meshaios", "meshaios-plain", "meshaios-noshm", "dask", "dask-tuned", "ray")
PEERS = ("dask", "dask-tuned", "ray")
MESH = ("meshaios", "meshaios-plain", "meshaios-noshm")

# (engine, size, workloads): one cluster per line, started once, every workload of the line run on it
PLAN: list[tuple[str, int, tuple[str, ...]]] = [
    ("meshaios", 1, ("noop", "latency")),
    ("meshaios", 2, ("noop", "latency", "shuffle", "dag", "wordcount")),
    ("meshaios", 3, ("noop", "latency", "shuffle", "dag", "wordcount")),
    # no token: no CurveZMQ, like the peers
    ("meshaios-plain", 2, ("noop", "latency", "shuffle", "dag", "wordcount")),
    # same-host objects over the socket (--no-shm): the data plane before /dev/shm transfers, for before/after
    ("meshaios-noshm", 2, ("shuffle", "dag")),
    ("meshaios-noshm", 3, ("shuffle", "dag")),
    ("dask", 1, ("noop", "latency")),
    ("dask", 2, ("noop", "latency", "shuffle", "dag", "wordcount")),
    ("dask-tuned", 1, ("noop",)),  # worker-saturation only changes how queued tasks are handed out
    ("dask-tuned", 2, ("noop", "shuffle", "dag", "wordcount")),
    ("ray", 1, ("noop", "latency")),
    ("ray", 2, ("noop", "latency", "shuffle", "dag")),
]


@dataclass(frozen=True)
class Params:
    repeat: int
    noop_tasks: int
    latency_samples: int
    shuffle_part_bytes: int
    dag_array_bytes: int
    wordcount_bytes: int
    raw_round_trips: int
    raw_bulk_messages: int
    timeout: float
    deadline: float


FULL = Params(
    repeat=3,
    noop_tasks=10_000,
    latency_samples=500,
    shuffle_part_bytes=25 << 20,
    dag_array_bytes=100 << 20,
    wordcount_bytes=100_000_000,
    raw_round_trips=2000,
    raw_bulk_messages=100,
    timeout=300,
    deadline=40 * 60,
)
QUICK = Params(
    repeat=1,
    noop_tasks=1000,
    latency_samples=100,
    shuffle_part_bytes=1 << 20,
    dag_array_bytes=4 << 20,
    wordcount_bytes=4_000_000,
    raw_round_trips=300,
    raw_bulk_messages=16,
    timeout=60,
    deadline=6 * 60,
)


# ---- results ----------------------------------------------------------------------------------------------


@dataclass
class Figure:
    workload: str
    metric: str
    unit: str
    higher_is_better: bool
    engine: str
    size: int
    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        s = sorted(self.samples)
        n = len(s)
        return (s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2) if n else float("nan")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(median=self.median, min=min(self.samples, default=None), max=max(self.samples, default=None))
        return d


class Results:
    def __init__(self) -> None:
        self.figures: dict[tuple[str, str, str, int], Figure] = {}
        self.errors: list[dict[str, str]] = []
        self.checks: list[dict[str, Any]] = []
        self.loads: list[dict[str, Any]] = []  # the machine's load average as each engine started

    def add(self, workload: str, metric: str, unit: str, hib: bool, engine: str, size: int, value: float) -> None:
        key = (workload, metric, engine, size)
        fig = self.figures.get(key)
        if fig is None:
            fig = self.figures[key] = Figure(workload, metric, unit, hib, engine, size)
        fig.samples.append(value)

    def get(self, workload: str, metric: str, engine: str, size: int) -> Figure | None:
        f = self.figures.get((workload, metric, engine, size))
        return f if f is not None and f.samples else None

    def error(self, where: str, exc: BaseException) -> None:
        log(f"!! {where}: {type(exc).__name__}: {exc}")
        self.errors.append({"where": where, "error": f"{type(exc).__name__}: {exc}", "tb": traceback.format_exc()})


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---- workloads --------------------------------------------------------------------------------------------


def run_raw(res: Results, p: Params, rep: int) -> None:
    import raw

    cases: list[tuple[str, str, bool, Callable[[], float]]] = [
        ("zmq round trip, blocking", "us", False, lambda: raw.round_trip_blocking(p.raw_round_trips)),
        ("zmq round trip, asyncio+uvloop", "us", False, lambda: raw.round_trip_async(p.raw_round_trips)),
        ("8 MiB zero-copy multipart, blocking", "GB/s", True, lambda: raw.bulk_blocking(p.raw_bulk_messages)),
        ("8 MiB zero-copy multipart, asyncio+uvloop", "GB/s", True, lambda: raw.bulk_async(p.raw_bulk_messages)),
        ("8 MiB multipart, blocking, CurveZMQ", "GB/s", True, lambda: raw.bulk_blocking(p.raw_bulk_messages, True)),
        ("np.copyto 400 MiB, prefaulted", "GB/s", True, raw.memcpy),
        ("shuffle in one process, numpy (no engine)", "s", False, lambda: shuffle_one_process(p)),
    ]
    for metric, unit, hib, fn in cases:
        try:
            v = fn()
        except Exception as exc:
            res.error(f"raw {metric}", exc)
            continue
        res.add("raw", metric, unit, hib, "raw", 0, v)
        log(f"raw {metric}: {v:.3g} {unit} ({rep + 1}/{p.repeat})")
    pack, unpack = raw.msgpack_rates(100 * p.raw_round_trips)
    res.add("raw", "msgpack pack ~270 B task dict", "M/s", True, "raw", 0, pack / 1e6)
    res.add("raw", "msgpack unpack ~270 B task dict", "M/s", True, "raw", 0, unpack / 1e6)


def shuffle_one_process(p: Params) -> float:
    import benchtasks as bt

    parts = [bt.make_partition(i, p.shuffle_part_bytes // 8) for i in range(bt.NPARTS)]
    t = time.perf_counter()
    out = bt.shuffle_local(parts)
    secs = time.perf_counter() - t
    if out != bt.shuffle_reference(p.shuffle_part_bytes // 8):
        raise RuntimeError("one-process shuffle does not match the reference")
    return secs


class Probe:
    """Around each timed region: CPU seconds of the whole process tree; with ``--profile``, for meshaios, py-spy
    on every node and the client, and per-thread CPU and syscall I/O bytes of each process."""

    def __init__(self, profile_dir: Path | None) -> None:
        self.profile_dir = profile_dir
        self.report: list[str] = []

    @contextlib.contextmanager
    def timed(self, eng: Any, workload: str, rep: int) -> Iterator[dict[str, float]]:
        from sampling import PySpy, cpu_delta, kernel_delta, thread_cpu, thread_cpu_report, tree_cpu, tree_kernel

        box: dict[str, float] = {}
        profiling = self.profile_dir is not None and eng.name in MESH
        spy = None
        if profiling:
            assert self.profile_dir is not None
            pids = {f"node{i}": pid for i, pid in enumerate(eng.worker_pids())}
            pids["client"] = os.getpid()
            tl0 = eng.timelines() if hasattr(eng, "timelines") else {}
            spy = PySpy(pids, self.profile_dir / f"{eng.name}-{eng.size}-{workload}-{rep}")
            spy.__enter__()
            tc0 = thread_cpu(pids)
        cpu0, kern0 = tree_cpu(), tree_kernel()
        t0 = time.perf_counter()
        try:
            yield box
        finally:
            wall = time.perf_counter() - t0
            box["cpu"] = cpu_delta(cpu0, tree_cpu())
            box["kernel"], faults = kernel_delta(kern0, tree_kernel())
            box["minflt"] = float(faults)
            if spy is not None:
                tc1 = thread_cpu(pids)
                spy.__exit__(None, None, None)
                self.report.append(f"{eng.label} {workload} rep {rep + 1}, per process:")
                self.report += [f"  {line}" for line in thread_cpu_report(tc0, tc1, wall)]
                if hasattr(eng, "timelines"):
                    self.report += [f"  {line}" for line in timeline_report(tl0, eng.timelines())]


def timeline_report(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> list[str]:
    """Where each node's task time went during the timed region (the difference of its timeline totals)."""
    out = []
    for name, a in sorted(after.items()):
        b = before.get(name, {})
        keys = ("tasks", "wait_s", "fetch_s", "run_s", "bytes_in", "shm_in")
        d = {k: float(a.get(k, 0)) - float(b.get(k, 0)) for k in keys}
        if d["tasks"] <= 0:
            continue
        out.append(f"{name} task timeline: {d['tasks']:.0f} tasks; queued {d['wait_s']:.2f} s, fetching inputs "
                   f"{d['fetch_s']:.2f} s ({d['bytes_in'] / 1e6:.0f} MB, {d['shm_in'] / 1e6:.0f} MB of it through "
                   f"/dev/shm), running {d['run_s']:.2f} s (task-seconds)")
    return out


def run_noop(eng: Any, res: Results, p: Params, probe: Probe, rep: int) -> None:
    eng.noop(min(p.noop_tasks, 500), WARMUP_TIMEOUT)  # warm-up
    with probe.timed(eng, "noop", rep) as box:
        t = time.perf_counter()
        eng.noop(p.noop_tasks, p.timeout)
        rate = p.noop_tasks / (time.perf_counter() - t)
    cpu_us = box["cpu"] / p.noop_tasks * 1e6
    res.add("noop", f"{p.noop_tasks:,} no-op tasks", "tasks/s", True, eng.name, eng.size, rate)
    res.add("noop", "CPU per task, all processes", "µs", False, eng.name, eng.size, cpu_us)
    log(f"{eng.label} noop: {rate:,.0f} tasks/s, {cpu_us:.0f} CPU-µs/task ({rep + 1}/{p.repeat})")
    gc.collect()


def run_latency(eng: Any, res: Results, p: Params, probe: Probe, rep: int) -> None:
    for i in range(20):
        eng.tiny(i, WARMUP_TIMEOUT)
    times = []
    with probe.timed(eng, "latency", rep):
        for i in range(p.latency_samples):
            t = time.perf_counter()
            eng.tiny(i, p.timeout)
            times.append(time.perf_counter() - t)
    times.sort()
    med = times[len(times) // 2] * 1e3
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))] * 1e3
    res.add("latency", "median", "ms", False, eng.name, eng.size, med)
    res.add("latency", "p99", "ms", False, eng.name, eng.size, p99)
    log(f"{eng.label} latency: median {med:.3f} ms, p99 {p99:.3f} ms ({rep + 1}/{p.repeat})")


def _settle() -> None:
    gc.collect()
    time.sleep(0.5)  # let engines drop what the last repetition released


def run_shuffle(eng: Any, res: Results, p: Params, probe: Probe, rep: int, reference: list[tuple[int, int]]) -> None:
    import benchtasks as bt
    from sampling import RssSampler

    length = p.shuffle_part_bytes // 8
    total_mb = bt.NPARTS * length * 8 / 1e6
    eng.shuffle(eng.shuffle_inputs(1024, WARMUP_TIMEOUT), WARMUP_TIMEOUT)  # warm-up: workers import and allocate
    _settle()
    with RssSampler(eng.worker_pids) as rss:
        inputs = eng.shuffle_inputs(length, p.timeout)
        with probe.timed(eng, "shuffle", rep) as box:
            t = time.perf_counter()
            out = eng.shuffle(inputs, p.timeout)
            secs = time.perf_counter() - t
        del inputs
    ok = [tuple(x) for x in out] == reference
    res.checks.append({"workload": "shuffle", "engine": eng.name, "size": eng.size, "rep": rep, "ok": ok})
    if not ok:
        raise RuntimeError(f"{eng.label} shuffle result does not match the reference")
    _add_data_figures(res, "shuffle", eng, secs, box, rss.peaks.summary())
    res.add("shuffle", "throughput", "MB/s", True, eng.name, eng.size, total_mb / secs)
    log(f"{eng.label} shuffle: {secs:.3f} s, {total_mb / secs:.0f} MB/s, {_rss_line(rss)} ({rep + 1}/{p.repeat})")
    del out
    _settle()


def run_dag(eng: Any, res: Results, p: Params, probe: Probe, rep: int, reference: tuple[float, float]) -> None:
    import benchtasks as bt
    from sampling import RssSampler

    length = p.dag_array_bytes // 8
    eng.dag(eng.dag_inputs(bt.DAG_COLS * 16, WARMUP_TIMEOUT), WARMUP_TIMEOUT)  # warm-up
    _settle()
    with RssSampler(eng.worker_pids) as rss:
        inputs = eng.dag_inputs(length, p.timeout)
        with probe.timed(eng, "dag", rep) as box:
            t = time.perf_counter()
            out = eng.dag(inputs, p.timeout)
            secs = time.perf_counter() - t
        del inputs
    ok = bt.dag_matches(out, reference)
    res.checks.append({"workload": "dag", "engine": eng.name, "size": eng.size, "rep": rep, "ok": ok})
    if not ok:
        raise RuntimeError(f"{eng.label} DAG result {out!r} does not match the reference {reference!r}")
    _add_data_figures(res, "dag", eng, secs, box, rss.peaks.summary())
    log(f"{eng.label} dag: {secs:.3f} s, {_rss_line(rss)} ({rep + 1}/{p.repeat})")
    _settle()


def wordcount_one_process(p: Params) -> tuple[float, float, dict[str, int]]:
    """The word count in one plain Python process (collections.Counter): wall and CPU time, and the answer."""
    import benchtasks as bt

    parts = [bt.make_docs(i, p.wordcount_bytes // bt.NPARTS) for i in range(bt.NPARTS)]
    t, cpu = time.perf_counter(), time.process_time()
    counts = bt.wordcount_local(parts)
    return time.perf_counter() - t, time.process_time() - cpu, counts


def run_wordcount(eng: Any, res: Results, p: Params, probe: Probe, rep: int, reference: dict[str, int]) -> None:
    import benchtasks as bt
    from sampling import RssSampler

    total_mb = p.wordcount_bytes / 1e6
    variants = [("time", eng.wordcount)]
    if hasattr(eng, "wordcount_pairs"):
        variants.append(("time, (word, 1) pairs + combiner", eng.wordcount_pairs))
    eng.wordcount(eng.wordcount_inputs(4096, WARMUP_TIMEOUT), WARMUP_TIMEOUT)  # warm-up
    _settle()
    with RssSampler(eng.worker_pids) as rss:
        inputs = eng.wordcount_inputs(p.wordcount_bytes // bt.NPARTS, p.timeout)
        times: dict[str, float] = {}
        for metric, fn in variants:
            with probe.timed(eng, "wordcount", rep) as box:
                t = time.perf_counter()
                out = fn(inputs, p.timeout)
                secs = times[metric] = time.perf_counter() - t
            ok = out == reference
            res.checks.append({"workload": "wordcount", "engine": eng.name, "size": eng.size, "rep": rep, "ok": ok})
            if not ok:
                raise RuntimeError(f"{eng.label} word count ({metric}) does not match collections.Counter")
            if metric == "time":
                res.add("wordcount", "CPU time, all processes", "s", False, eng.name, eng.size, box["cpu"])
                res.add("wordcount", "throughput", "MB/s", True, eng.name, eng.size, total_mb / secs)
            res.add("wordcount", metric, "s", False, eng.name, eng.size, secs)
            del out
        del inputs
    peaks = rss.peaks.summary()
    res.add("wordcount", "peak RSS per worker (max)", "MB", False, eng.name, eng.size, peaks["worker_rss_max_mb"])
    detail = ", ".join(f"{m}: {s:.3f} s" for m, s in times.items())
    log(f"{eng.label} wordcount {total_mb:.0f} MB: {detail}, {_rss_line(rss)} ({rep + 1}/{p.repeat})")
    _settle()


def _add_data_figures(
    res: Results, workload: str, eng: Any, secs: float, box: dict[str, float], rss: dict[str, float]
) -> None:
    res.add(workload, "time", "s", False, eng.name, eng.size, secs)
    res.add(workload, "CPU time, all processes", "s", False, eng.name, eng.size, box["cpu"])
    # the kernel's share: faulting in and zeroing fresh pages, copying into /dev/shm (performance.md section 22)
    res.add(workload, "kernel CPU time, all processes", "s", False, eng.name, eng.size, box["kernel"])
    res.add(workload, "minor page faults, all processes", "k", False, eng.name, eng.size, box["minflt"] / 1e3)
    res.add(workload, "peak RSS per worker (max)", "MB", False, eng.name, eng.size, rss["worker_rss_max_mb"])
    res.add(
        workload, "peak private RSS per worker (max)", "MB", False, eng.name, eng.size, rss["worker_private_max_mb"]
    )
    res.add(workload, "peak RSS, all engine processes", "MB", False, eng.name, eng.size, rss["engine_rss_mb"])


def _rss_line(rss: Any) -> str:
    s = rss.peaks.summary()
    return (
        f"peak RSS/worker {s['worker_rss_max_mb']:.0f} MB (private {s['worker_private_max_mb']:.0f}), "
        f"engine {s['engine_rss_mb']:.0f} MB"
    )


def run_engine(name: str, size: int, workloads: tuple[str, ...], res: Results, p: Params, refs: dict[str, Any],
               probe: Probe, rep: int) -> None:  # fmt: skip
    """One round for one engine: start it, warm up and measure each workload once, shut it down."""
    from engines import ENGINES

    t0 = time.perf_counter()
    eng: Any = None
    saved_env = dict(os.environ)
    try:
        for w in workloads:
            if eng is None:  # first workload, or the engine failed in the last one: a fresh cluster
                t1 = time.perf_counter()
                eng = ENGINES[name](size)
                eng.__enter__()
                log(
                    f"{eng.label} up in {time.perf_counter() - t1:.1f} s (round {rep + 1}/{p.repeat}), worker pids "
                    f"{eng.worker_pids()}, load average {os.getloadavg()[0]:.1f}"
                )
                res.loads.append({"engine": name, "size": size, "round": rep, "loadavg_1min": os.getloadavg()[0]})
            try:
                if w == "noop":
                    run_noop(eng, res, p, probe, rep)
                elif w == "latency":
                    run_latency(eng, res, p, probe, rep)
                elif w == "shuffle":
                    run_shuffle(eng, res, p, probe, rep, refs["shuffle"])
                elif w == "dag":
                    run_dag(eng, res, p, probe, rep, refs["dag"])
                elif w == "wordcount":
                    run_wordcount(eng, res, p, probe, rep, refs["wordcount"])
            except Exception as exc:
                res.error(f"{eng.label} {w}", exc)
                eng.__exit__(None, None, None)
                eng = None
    finally:
        if eng is not None:
            eng.__exit__(None, None, None)
        # Every engine starts in the environment the run started with: Dask's LocalCluster sets
        # MALLOC_TRIM_THRESHOLD_=65536 (and the BLAS thread counts, PYTHONHASHSEED) in this process's environment and
        # leaves them there, so every engine started after it -- meshaios's nodes, Ray's raylet and workers -- ran
        # with glibc's trim threshold fixed at 64 KiB, which also fixes its mmap threshold: every buffer over
        # 128 KiB a fresh mapping (meshaios's shuffle at 3 nodes: 743 k minor faults instead of 170 k; section 26).
        os.environ.clear()
        os.environ.update(saved_env)
    log(f"{name}[{size}] done and shut down ({time.perf_counter() - t0:.1f} s)")


# ---- ratios, targets, table -------------------------------------------------------------------------------


def speedup(mesh: Figure, peer: Figure) -> float:
    """How many times better meshaios is than the peer (> 1: meshaios wins)."""
    a, b = mesh.median, peer.median
    if not (a > 0 and b > 0):
        return float("nan")
    return a / b if mesh.higher_is_better else b / a


# The node counts measured. The default plan fits a 2-core machine: meshaios at 1, 2 and 3 nodes, the peers at 1
# and 2 workers (meshaios's 3 nodes are compared with their 2). ``--sizes 1,4,8`` (scaling mode, for many-core
# machines) measures every engine at exactly those sizes.
SIZES: tuple[int, ...] = (1, 2, 3)
PEER_CAP = 2
ALL_WORKLOADS = ("noop", "latency", "shuffle", "dag")


def scaling_plan(sizes: tuple[int, ...]) -> list[tuple[str, int, tuple[str, ...]]]:
    """Every engine at every size, each with every workload it is measured on."""
    plan: list[tuple[str, int, tuple[str, ...]]] = []
    for size in sizes:
        plan += [
            ("meshaios", size, (*ALL_WORKLOADS, "wordcount")),
            ("dask", size, (*ALL_WORKLOADS, "wordcount")),
            ("dask-tuned", size, ("noop", "shuffle", "dag", "wordcount")),
            ("ray", size, ALL_WORKLOADS),  # no word count for Ray: the comparison asked for is Dask bag's
        ]
    return plan


def peer_size(size: int) -> int:
    return min(size, PEER_CAP)


def fmt(v: float | None, unit: str = "") -> str:
    if v is None or v != v:
        return "–"
    if unit in ("tasks/s", "MB/s", "MB") or abs(v) >= 100:
        s = f"{v:,.0f}"
    elif abs(v) >= 10:
        s = f"{v:.1f}"
    elif abs(v) >= 1:
        s = f"{v:.2f}"
    else:
        s = f"{v:.3f}"
    return s


def cell(f: Figure | None) -> str:
    if f is None:
        return "–"
    if len(f.samples) == 1:
        return fmt(f.median, f.unit)
    return f"{fmt(f.median, f.unit)} ({fmt(min(f.samples), f.unit)}–{fmt(max(f.samples), f.unit)})"


def ratio_cell(mesh: Figure | None, peer: Figure | None) -> str:
    v = speedup(mesh, peer) if mesh is not None and peer is not None else float("nan")
    return "–" if v != v else f"{v:.2f}×"


def engine_table(res: Results) -> list[str]:
    rows: dict[tuple[str, str], None] = {}
    for (w, m, _e, _s), _f in res.figures.items():
        if w != "raw":
            rows.setdefault((w, m))
    mesh_engines = [e for e in MESH if any(k[2] == e for k in res.figures)]
    peers = [e for e in PEERS if any(k[2] == e for k in res.figures)]
    head = ["workload", "metric", "n", *mesh_engines, *peers]
    head += [f"meshaios vs {e}" for e in peers]
    if "meshaios-plain" in mesh_engines:
        head += [f"plain vs {e}" for e in peers]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for w, m in rows:
        unit = next(f.unit for k, f in res.figures.items() if k[0] == w and k[1] == m)
        for size in SIZES:
            mfigs = {e: res.get(w, m, e, size) for e in mesh_engines}
            pfigs = {e: res.get(w, m, e, peer_size(size)) for e in peers}
            if not any(mfigs.values()) and not (size == peer_size(size) and any(pfigs.values())):
                continue
            n = f"{size} (peers {peer_size(size)})" if size != peer_size(size) else str(size)
            line = [w, f"{m} [{unit}]", n]
            line += [cell(mfigs[e]) for e in mesh_engines]
            line += [cell(pfigs[e]) for e in peers]
            line += [ratio_cell(mfigs.get("meshaios"), pfigs[e]) for e in peers]
            if "meshaios-plain" in mesh_engines:
                line += [ratio_cell(mfigs.get("meshaios-plain"), pfigs[e]) for e in peers]
            out.append("| " + " | ".join(line) + " |")
    return out


def raw_table(res: Results) -> list[str]:
    out = ["| raw limit | median (min–max) |", "|---|---|"]
    for (w, m, _e, _s), f in res.figures.items():
        if w == "raw":
            out.append(f"| {m} | {cell(f)} {f.unit} |")
    return out


@dataclass
class Target:
    text: str
    value: float  # the measured ratio, oriented so that >= goal passes
    goal: float
    detail: str

    @property
    def met(self) -> bool:
        return self.value == self.value and self.value >= self.goal


def targets(res: Results) -> list[Target]:
    """The targets of issue 7, each evaluated from this run's medians."""
    out: list[Target] = []

    def best_dask(w: str, m: str, size: int) -> Figure | None:
        figs = [f for e in ("dask", "dask-tuned") if (f := res.get(w, m, e, size)) is not None]
        if not figs:
            return None
        return max(figs, key=lambda f: f.median if f.higher_is_better else -f.median)

    def add(text: str, mesh: Figure | None, peer: Figure | None, goal: float, how: str) -> None:
        if mesh is None or peer is None:
            return
        out.append(Target(text, speedup(mesh, peer), goal, f"{how}: {cell(mesh)} vs {cell(peer)} {mesh.unit}"))

    noop_m = next((k[1] for k in res.figures if k[0] == "noop"), "")
    if SIZES != (1, 2, 3):
        return out + scaling_targets(res, best_dask)
    for size in (1, 2, 3):
        n = f"meshaios {size} node{'s' * (size > 1)} vs {peer_size(size)} worker{'s' * (peer_size(size) > 1)}"
        mesh = res.get("noop", noop_m, "meshaios", size)
        bd = best_dask("noop", noop_m, peer_size(size))
        add(f"no-op throughput ≥ 5× Dask (best config), {n}", mesh, bd, 5.0, f"{bd.engine if bd else ''}")
        add(f"no-op throughput ≥ 3× Ray, {n}", mesh, res.get("noop", noop_m, "ray", peer_size(size)), 3.0, "ray")
    raw_async = res.get("raw", "zmq round trip, asyncio+uvloop", "raw", 0)
    for size in (1, 2, 3):
        n = f"meshaios {size} node{'s' * (size > 1)}"
        mesh = res.get("latency", "median", "meshaios", size)
        add(f"latency ≤ 0.3× Ray's, {n}", mesh, res.get("latency", "median", "ray", peer_size(size)), 1 / 0.3, "ray")
        add(f"latency ≤ 0.2× Dask's, {n}", mesh, best_dask("latency", "median", peer_size(size)), 1 / 0.2, "dask")
        if mesh is not None and raw_async is not None:
            r = mesh.median / (raw_async.median / 1e3)
            out.append(
                Target(
                    f"latency within 3× of a raw pyzmq async round trip, {n}",
                    3.0 / r,
                    1.0,
                    f"{r:.1f}× the raw round trip ({mesh.median * 1e3:.0f} vs {raw_async.median:.0f} µs)",
                )
            )
    bulk = [f for m in ("8 MiB zero-copy multipart, blocking", "8 MiB zero-copy multipart, asyncio+uvloop")
            if (f := res.get("raw", m, "raw", 0)) is not None]  # fmt: skip
    for eng in MESH:
        for size in (2, 3):
            mesh = res.get("shuffle", "time", eng, size)
            if mesh is None:
                continue
            n = f"{eng} {size} nodes vs 2 workers"
            bd = best_dask("shuffle", "time", 2)
            add(f"shuffle ≥ 1.5× faster than Dask (best config), {n}", mesh, bd, 1.5, bd.engine if bd else "")
            add(f"shuffle faster than Ray, {n}", mesh, res.get("shuffle", "time", "ray", 2), 1.0, "ray")
            rss_m = "peak RSS per worker (max)"
            mr = res.get("shuffle", rss_m, eng, size)
            add(f"shuffle peak RSS per node below Dask's, {n}", mr, best_dask("shuffle", rss_m, 2), 1.0 + 1e-9, "rss")
            add(f"shuffle peak RSS per node below Ray's, {n}", mr, res.get("shuffle", rss_m, "ray", 2), 1.0 + 1e-9,
                "rss")  # fmt: skip
            tput = res.get("shuffle", "throughput", eng, size)
            if tput is not None and bulk:
                best_bulk = max(f.median for f in bulk) * 1e3  # MB/s
                frac = tput.median / best_bulk
                out.append(
                    Target(
                        f"shuffle ≥ 25% of raw zero-copy loopback bandwidth, {n}",
                        frac / 0.25,
                        1.0,
                        f"{frac:.1%} ({tput.median:.0f} of {best_bulk:.0f} MB/s)",
                    )
                )
    one = res.get("raw", "word count in one process, collections.Counter", "raw", 0)
    for eng in MESH:
        for size in (2, 3):
            mesh = res.get("wordcount", "time", eng, size)
            if mesh is None:
                continue
            n = f"{eng} {size} nodes vs 2 workers"
            bd = best_dask("wordcount", "time", 2)
            how = bd.engine if bd else ""
            add(f"word count faster than Dask bag frequencies (best config), {n}", mesh, bd, 1.0, how)
            add(f"word count faster than one plain Python process, {eng} {size} nodes", mesh, one, 1.0, "Counter")
    return out


def scaling_targets(res: Results, best_dask: Callable[[str, str, int], Figure | None]) -> list[Target]:
    """Scaling mode: the data workloads against Dask at every size, and meshaios never slower with more nodes."""
    out: list[Target] = []
    for w in ("dag", "shuffle"):
        prev: Figure | None = None
        for size in SIZES:
            mesh = res.get(w, "time", "meshaios", size)
            bd = best_dask(w, "time", size)
            if mesh is not None and bd is not None:
                out.append(Target(f"{w} ≤ Dask's (best config), {size} nodes", speedup(mesh, bd), 1.0,
                                  f"{bd.engine}: {cell(mesh)} vs {cell(bd)} s"))  # fmt: skip
            if mesh is not None and prev is not None:
                out.append(Target(f"{w}: {size} nodes no slower than {prev.size}", speedup(mesh, prev), 1.0,
                                  f"{cell(mesh)} vs {cell(prev)} s"))  # fmt: skip
            prev = mesh or prev
    return out


def target_table(ts: list[Target]) -> list[str]:
    out = ["| target | measured | met |", "|---|---|---|"]
    for t in ts:
        out.append(f"| {t.text} | {t.detail} | {'yes' if t.met else '**no**'} |")
    return out


# ---- environment ------------------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    out: dict[str, str] = {"python": platform.python_version()}
    for mod in ("numpy", "zmq", "msgpack", "uvloop", "dask", "distributed", "ray", "psutil", "meshaios"):
        try:
            m = __import__(mod)
            v = getattr(m, "__version__", None) or ".".join(map(str, getattr(m, "version", ())))
            out[mod] = str(v)
        except Exception as exc:
            out[mod] = f"unavailable ({type(exc).__name__})"
    with contextlib.suppress(Exception):
        import zmq

        out["libzmq"] = zmq.zmq_version()
    with contextlib.suppress(Exception):
        import meshaios

        out["meshaios_compiled"] = ", ".join(meshaios.compiled()) or "none (pure Python)"  # meshaios/native.py
    with contextlib.suppress(Exception):
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "meshaios"], cwd=ROOT, capture_output=True,
                               text=True)  # fmt: skip
        out["meshaios_commit"] = head.stdout.strip() + (" (meshaios/ modified)" if dirty.stdout.strip() else "")
    return out


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import psutil

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_avg_at_start": os.getloadavg(),
        "env": {k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS", "OMP_", "MKL_", "RAY_USAGE"))},
        "sandbox": os.environ.get("MESHAIOS_BENCH_SANDBOX", "none"),
    }


def loopback_up() -> None:
    """In a fresh network namespace loopback is down: bring it up (SIOCSIFFLAGS), no iproute2 needed."""
    import fcntl
    import socket
    import struct

    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = fcntl.ioctl(s, siocgifflags, struct.pack("16sh22x", b"lo", 0))
        flags = struct.unpack("16sh22x", ifr)[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sh22x", b"lo", flags | iff_up))


def child_env(sandbox: str) -> dict[str, str]:
    env = dict(os.environ)
    env[SANDBOX_ENV] = "1"
    env["MESHAIOS_BENCH_SANDBOX"] = sandbox
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH", "")) if p)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, "1")  # every engine's worker processes alike: one BLAS thread per process
    env["RAY_USAGE_STATS_ENABLED"] = "0"  # no telemetry
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def reexec(argv: list[str], no_sandbox: bool) -> int:
    """Run the benchmark in a child: in a private net + PID namespace when ``unshare`` allows it.

    The child gets its own TMPDIR (meshes' state, Dask scratch, Ray sessions), removed when it exits. SIGTERM and
    SIGHUP are passed on to it; if this process dies outright, the kernel kills the child (PR_SET_PDEATHSIG), and
    with it, as the init of its PID namespace, every process it started.
    """
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv]
    tmp = tempfile.mkdtemp(prefix="mb-")
    sandbox = "none"
    base: list[str] = []
    unshare = shutil.which("unshare")
    if not no_sandbox and unshare:
        base = [unshare, "--net", "--pid", "--fork", "--mount-proc", "--kill-child"]
        if os.geteuid() != 0:
            base.insert(1, "--map-root-user")
        probe = subprocess.run([*base, "true"], capture_output=True, text=True)
        if probe.returncode == 0:
            sandbox = "netns+pidns (loopback only)"
        else:
            log(f"unshare refused ({probe.stderr.strip()}); running without the loopback-only sandbox")
            base = []
    elif not no_sandbox:
        log("no unshare on this machine; running without the loopback-only sandbox")
    env = child_env(sandbox)
    env["TMPDIR"] = tmp
    proc = subprocess.Popen([*base, *cmd], env=env, preexec_fn=_die_with_parent)

    def forward(signum: int, _frame: Any) -> None:
        import psutil

        targets = [proc.pid]
        with contextlib.suppress(psutil.Error):
            targets += [c.pid for c in psutil.Process(proc.pid).children()]  # unshare's child: the benchmark
        for pid in targets:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGHUP, forward)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the child directly (same process group)
    try:
        return proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def kill_descendants() -> None:
    """Without the PID namespace: end whatever an engine left behind, by PID, children of this process only."""
    import psutil

    procs = psutil.Process().children(recursive=True)
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=5)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()


def watchdog(seconds: float) -> None:
    def fire() -> None:
        log(f"!! the benchmark ran past its {seconds:.0f} s deadline: stopping everything")
        with contextlib.suppress(Exception):
            kill_descendants()
        os._exit(3)

    t = threading.Timer(seconds, fire)
    t.daemon = True
    t.start()


# ---- main -------------------------------------------------------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, one repetition: a smoke run (< 3 min)")
    ap.add_argument("--repeat", type=int, help="repetitions per figure (default 3; 1 with --quick)")
    ap.add_argument("--json", type=Path, help="where to write the JSON (default bench-results/<UTC time>.json)")
    ap.add_argument("--only", default="", help=f"comma-separated workloads {WORKLOADS} and/or engines {ENGINE_NAMES}")
    ap.add_argument("--wordcount-mb", type=float, help="size of the word-count corpus in MB (default 100; 4 quick)")
    ap.add_argument("--profile", type=Path, help="py-spy the meshaios nodes and the client into this folder")
    ap.add_argument("--no-sandbox", action="store_true", help="do not run in a loopback-only network namespace")
    ap.add_argument("--sizes", help="scaling mode: every engine at these node/worker counts, e.g. 1,4,8 (many cores)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if os.environ.get(SANDBOX_ENV) != "1":
        return reexec(argv, args.no_sandbox)
    if os.environ.get("MESHAIOS_BENCH_SANDBOX", "none") != "none":
        loopback_up()
    for sig in (signal.SIGTERM, signal.SIGHUP):  # as the init of a PID namespace, no handler means no signal
        signal.signal(sig, signal.default_int_handler)

    only = {x.strip() for x in args.only.split(",") if x.strip()}
    unknown = only - set(WORKLOADS) - set(ENGINE_NAMES)
    if unknown:
        raise SystemExit(f"--only: unknown names {sorted(unknown)}; choose from {WORKLOADS} and {ENGINE_NAMES}")
    want_w = (only & set(WORKLOADS)) or set(WORKLOADS)
    want_e = (only & set(ENGINE_NAMES)) or set(ENGINE_NAMES)
    plan = PLAN
    if args.sizes:
        global SIZES, PEER_CAP
        try:
            SIZES = tuple(sorted({int(x) for x in args.sizes.split(",") if x.strip()}))
        except ValueError:
            raise SystemExit(f"--sizes: a comma-separated list of node counts, not {args.sizes!r}") from None
        if not SIZES or min(SIZES) < 1:
            raise SystemExit("--sizes: node counts are at least 1")
        PEER_CAP = max(SIZES)
        plan = scaling_plan(SIZES)
    p = QUICK if args.quick else FULL
    if args.repeat:
        p = Params(**{**asdict(p), "repeat": args.repeat})
    if args.wordcount_mb:
        p = Params(**{**asdict(p), "wordcount_bytes": int(args.wordcount_mb * 1e6)})
    watchdog(p.deadline)

    started = time.time()
    res = Results()
    probe = Probe(args.profile)
    meta = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([".bench-venv/bin/python", "tools/bench/run.py", *argv]),
        "params": asdict(p),
        "machine": machine(),
        "versions": versions(),
        "note": "shared, noisy 2-core machine: compare only figures from the same run, as ratios",
    }
    log(f"meshaios bench: {'quick' if args.quick else 'full'}, repeat {p.repeat}, sandbox {meta['machine']['sandbox']}")
    try:
        import benchtasks as bt

        refs: dict[str, Any] = {}
        if "shuffle" in want_w:
            refs["shuffle"] = bt.shuffle_reference(p.shuffle_part_bytes // 8)
        if "dag" in want_w:
            refs["dag"] = bt.dag_reference(p.dag_array_bytes // 8)
        if "wordcount" in want_w:
            secs, cpu, refs["wordcount"] = wordcount_one_process(p)
            res.add("raw", "word count in one process, collections.Counter", "s", False, "raw", 0, secs)
            res.add("raw", "word count in one process, CPU time", "s", False, "raw", 0, cpu)
            log(f"word count of {p.wordcount_bytes / 1e6:.0f} MB in one process (collections.Counter): {secs:.3f} s, "
                f"{cpu:.3f} CPU-s")  # fmt: skip
        gc.collect()
        # rounds: every engine once per round, so that load on a shared machine drifting over the run falls on
        # every engine alike instead of on whichever ran last
        for rep in range(p.repeat):
            if "raw" in want_w:
                try:
                    run_raw(res, p, rep)
                except Exception as exc:
                    res.error("raw", exc)
            for name, size, workloads in plan:
                ws = tuple(w for w in workloads if w in want_w)
                if name not in want_e or not ws:
                    continue
                try:
                    run_engine(name, size, ws, res, p, refs, probe, rep)
                except Exception as exc:
                    res.error(f"{name}[{size}] round {rep + 1}", exc)
                gc.collect()
    except KeyboardInterrupt:
        log("interrupted: writing what was measured")
    finally:
        if os.environ.get("MESHAIOS_BENCH_SANDBOX", "none") == "none":
            kill_descendants()

    ts = targets(res)
    lines = [
        f"meshaios benchmark, {meta['date']}, `{meta['command']}`, {time.time() - started:.0f} s",
        f"{meta['machine']['cpu']}, {meta['machine']['cores']} cores; "
        + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        "",
        *engine_table(res),
        "",
        *raw_table(res),
        "",
        *target_table(ts),
    ]
    if args.profile is not None:
        lines += ["", *probe.report, "", *profile_report(args.profile)]
    if res.errors:
        lines += ["", "errors:", *[f"- {e['where']}: {e['error']}" for e in res.errors]]
    print("\n".join(lines), flush=True)

    path = args.json or ROOT / "bench-results" / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(started))}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "meta": {**meta, "seconds": round(time.time() - started, 1)},
        "figures": [f.to_json() for f in res.figures.values()],
        "ratios": ratios_json(res),
        "targets": [{**asdict(t), "met": t.met} for t in ts],
        "checks": res.checks,
        "load_averages": res.loads,
        "profile": probe.report,
        "errors": res.errors,
    }
    path.write_text(json.dumps(doc, indent=1, default=str))
    log(f"JSON written to {path}")
    bad_checks = [c for c in res.checks if not c["ok"]]
    return 1 if res.errors or bad_checks else 0


def ratios_json(res: Results) -> list[dict[str, Any]]:
    out = []
    for (w, m, e, s), f in res.figures.items():
        if e not in MESH:
            continue
        for peer in PEERS:
            pf = res.get(w, m, peer, peer_size(s))
            if pf is not None and f.samples:
                out.append(
                    {
                        "workload": w,
                        "metric": m,
                        "engine": e,
                        "size": s,
                        "peer": peer,
                        "peer_size": peer_size(s),
                        "speedup": speedup(f, pf),
                    }
                )
    return out


def profile_report(folder: Path) -> list[str]:
    from sampling import summarise_profile

    out = [f"py-spy profiles in {folder} (--gil: fractions of the samples in which the process ran Python):"]
    for path in sorted(folder.glob("*/*.txt")):
        s = summarise_profile(path, top=10)
        total = int(s["samples"][0][1]) if s.get("samples") else 0
        out.append(f"- {path.parent.name}/{path.stem}: {total} samples holding the GIL")
        for kind in ("threads", "meshaios_inclusive", "self"):
            items = ", ".join(f"{k} {v:.0%}" for k, v in s.get(kind, []))
            out.append(f"    {kind}: {items}")
    return out


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    raise SystemExit(main())
