"""Simulated clusters and workloads: the ground truth the schedulers do not see.

Why synthetic and not traces: the acceptance questions are about *structure* -- heterogeneous devices, nodes
slower than they claim, runtimes that differ by three orders of magnitude between kernels and are unknown
before the first run, data that must move between DAG stages. Each generator is seeded and produces the same
tasks for every policy, and HEFT (``heft.py``) gets to see the true runtimes that the online policies must learn.

The truth for task ``t`` of kernel ``k`` on node ``n``, device ``d``::

    runtime = work(t) / gpu_speedup(k) [if d is a GPU] / true_speed(n, d)
    work(t) = base(k) * (input MB) ** alpha(k) * LogNormal(0, sigma(k))     (drawn once per task)

Nodes declare a speed; "slow" nodes declare 1.0 and run at a fraction of it (the deliberately slowed machine of
acceptance test 2), so only learning finds them out.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass, field

__all__ = [
    "CATALOG",
    "KernelSpec",
    "NodeSpec",
    "SimTask",
    "Workload",
    "heterogeneous_cluster",
    "make_workload",
]

MB = 1 << 20


@dataclass(frozen=True)
class KernelSpec:
    name: str
    base: float  # seconds on a speed-1 CPU for a 1 MB input
    alpha: float  # runtime grows as (input MB) ** alpha
    sigma: float  # per-task log-normal spread, unknowable from the features
    gpu: float | None  # speed-up of a (speed-1) GPU over a speed-1 CPU; None: no GPU implementation
    out_ratio: float  # output bytes per input byte
    weight: float = 1.0  # how often it occurs in mixed workloads


# Runtimes spread over three orders of magnitude; GPU speed-ups from 20x to "slower than the CPU".
CATALOG: tuple[KernelSpec, ...] = (
    KernelSpec("meshaios.matmul", 0.05, 1.25, 0.15, 20.0, 0.5, 1.0),
    KernelSpec("meshaios.conv2d", 0.08, 1.0, 0.15, 12.0, 1.0, 1.0),
    KernelSpec("meshaios.softmax", 0.01, 1.0, 0.10, 3.0, 1.0, 1.5),
    KernelSpec("meshaios.reduce_sum", 0.004, 1.0, 0.10, 0.5, 0.01, 1.5),
    KernelSpec("app.parse", 0.03, 1.0, 0.30, None, 1.0, 1.5),
    KernelSpec("app.featurize", 0.12, 0.8, 0.25, None, 0.3, 1.0),
    KernelSpec("app.train_step", 0.3, 1.0, 0.20, 8.0, 0.1, 0.6),
    KernelSpec("app.simulate", 1.0, 0.3, 0.50, None, 0.01, 0.4),
)
_BY_NAME = {k.name: k for k in CATALOG}


@dataclass(frozen=True)
class NodeSpec:
    node_id: str
    kind: str  # "std", "fast", "slow", "gpu"
    cpu_slots: int
    cpu_speed: float  # true
    cpu_declared: float
    gpu_slots: int = 0
    gpu_speed: float = 1.0  # true, relative to a reference GPU
    gpu_declared: float = 1.0
    bandwidth: float = 125e6  # bytes/s into this node (1 Gb/s)
    host: str = ""  # nodes with the same host id share its ``host_cores`` and a same-host link ("": a host of its own)
    host_cores: int = 0

    def slots(self) -> dict[str, int]:
        return {"cpu": self.cpu_slots, "gpu": self.gpu_slots}

    def speed(self, device: str) -> float:
        return self.gpu_speed if device == "gpu" else self.cpu_speed

    def declared(self, device: str) -> float:
        return self.gpu_declared if device == "gpu" else self.cpu_declared


@dataclass
class SimTask:
    id: str
    kernel: str
    nbytes: int  # inline input bytes, held by the owner
    work: float  # seconds on a speed-1 CPU
    device: str  # "cpu" or "any"
    out_bytes: int
    deps: list[str] = field(default_factory=list)
    dep_bytes: dict[str, int] = field(default_factory=dict)  # bytes of each dependency's output it reads
    submit_at: float = 0.0
    job: int = 0
    parts: int = 0  # >0: its output is stored in this many parts (a shuffle map output)
    dep_part: dict[str, int] = field(default_factory=dict)  # dependency -> the part of it this task reads
    deadline: float = 0.0  # seconds after its submission it should have finished by; 0: none

    def dep_refs(self) -> list[str]:
        """The object ids it names as a live client would: ``task`` for a whole output, ``task#j`` for a part."""
        return [f"{d}#{self.dep_part[d]}" if d in self.dep_part else d for d in self.deps]

    def runtime(self, node: NodeSpec, device: str) -> float:
        """The true runtime on ``node``'s ``device`` (the simulator's secret)."""
        w = self.work
        if device == "gpu":
            k = _BY_NAME.get(self.kernel)
            w /= (k.gpu if k is not None and k.gpu else 1.0)
        return w / node.speed(device)

    def input_bytes(self) -> int:
        return self.nbytes + sum(self.dep_bytes.values())


@dataclass
class Workload:
    name: str
    tasks: list[SimTask]

    def jobs(self) -> dict[int, list[SimTask]]:
        out: dict[int, list[SimTask]] = {}
        for t in self.tasks:
            out.setdefault(t.job, []).append(t)
        return out


# ---------------------------------------------------------------------------------------------------- clusters


def heterogeneous_cluster(n: int, seed: int = 0, liars: float = 0.0) -> list[NodeSpec]:
    """A mixed mesh: ~20% GPU nodes, ~10% fast CPU nodes, ~20% slow nodes, the rest standard.

    Nodes declare the speed a start-up calibration would measure: the truth within +-15%, so the model still has
    node factors to learn. A fraction ``liars`` of the slow nodes declare 1.0 instead (a machine slowed after
    start, or mis-configured): only learning finds them out, after they have started tasks. Deterministic for
    ``(n, seed, liars)``; every kind appears once ``n >= 5``."""
    rng = random.Random(f"cluster/{n}/{seed}")
    kinds = ["gpu", "fast", "slow", "std", "std"]
    while len(kinds) < n:
        kinds.append(rng.choices(["gpu", "fast", "slow", "std"], weights=[0.2, 0.1, 0.2, 0.5])[0])
    kinds = kinds[:n]
    rng.shuffle(kinds)
    nodes: list[NodeSpec] = []

    def calibrated(true: float) -> float:
        return round(true * rng.uniform(0.85, 1.15), 3)

    for i, kind in enumerate(kinds):
        nid = f"n{i:03d}" if n <= 1000 else f"n{i:05d}"
        if kind == "gpu":
            g = rng.choice([1.0, 1.0, 2.0])
            nodes.append(NodeSpec(nid, kind, 4, 1.0, calibrated(1.0), gpu_slots=1, gpu_speed=g,
                                  gpu_declared=calibrated(g)))
        elif kind == "fast":
            nodes.append(NodeSpec(nid, kind, 8, 1.5, calibrated(1.5), bandwidth=1.25e9))
        elif kind == "slow":
            true = rng.choice([0.3, 0.4, 0.5])
            declared = 1.0 if rng.random() < liars else calibrated(true)
            nodes.append(NodeSpec(nid, kind, 4, true, declared))
        else:
            nodes.append(NodeSpec(nid, kind, 4, 1.0, calibrated(1.0)))
    return nodes


def uniform_cluster(n: int, slots: int = 1) -> list[NodeSpec]:
    """``n`` standard CPU nodes of ``slots`` workers each, declaring their true speed: ``LocalMesh(n, workers=1)``
    as the benchmark of ``tools/bench`` starts it."""
    return [NodeSpec(f"n{i:03d}", "std", slots, 1.0, 1.0) for i in range(n)]


def on_hosts(nodes: list[NodeSpec], per_host: int, cores: int) -> list[NodeSpec]:
    """The same nodes, ``per_host`` of them (in order) to a host of ``cores`` cores: several node processes on one
    machine. ``per_host`` <= 1 leaves every node on a host of its own (no host ids: the simulator as before)."""
    if per_host <= 1:
        return list(nodes)
    return [dataclasses.replace(n, host=f"h{i // per_host}", host_cores=cores) for i, n in enumerate(nodes)]


# --------------------------------------------------------------------------------------------------- workloads


def _kernel(rng: random.Random, names: list[str] | None = None) -> KernelSpec:
    pool = [k for k in CATALOG if names is None or k.name in names]
    return rng.choices(pool, weights=[k.weight for k in pool])[0]


def _size(rng: random.Random, lo: float = 0.25, hi: float = 16.0) -> int:
    return int(MB * math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _task(rng: random.Random, tid: str, k: KernelSpec, in_bytes: int, inline: int, job: int, at: float,
          max_out: int = 32 * MB) -> SimTask:
    work = k.base * (in_bytes / MB) ** k.alpha * math.exp(rng.gauss(0.0, k.sigma))
    return SimTask(
        id=tid, kernel=k.name, nbytes=inline, work=work, device="any" if k.gpu else "cpu",
        out_bytes=max(64, min(max_out, int(in_bytes * k.out_ratio))), submit_at=at, job=job,
    )


def independent(n: int, seed: int, waves: int = 1, gap: float = 0.0, prefix: str = "t") -> Workload:
    """``n`` independent tasks of mixed kernels with skewed sizes, in ``waves`` bursts ``gap`` seconds apart;
    each wave is one job."""
    rng = random.Random(f"independent/{seed}")
    tasks = []
    for i in range(n):
        wave = i * waves // max(1, n)
        k = _kernel(rng)
        size = _size(rng)
        tasks.append(_task(rng, f"{prefix}{i:05d}", k, size, size, wave, wave * gap))
    return Workload("burst" if waves > 1 else "independent", tasks)


def layered_dag(n: int, seed: int, width: int | None = None, job: int = 0, at: float = 0.0,
                prefix: str = "d") -> Workload:
    """A layered DAG: each task of layer l reads the whole outputs of 1-3 tasks of layer l-1 (which stay on the
    nodes that computed them, so placement must weigh locality against speed). Outputs are capped at 8 MB, so
    inputs stay under 24 MB and sizes do not snowball with depth."""
    rng = random.Random(f"dag/{seed}/{job}")
    width = width or max(2, int(math.sqrt(n) * 1.5))
    tasks: list[SimTask] = []
    prev: list[SimTask] = []
    i = 0
    while i < n:
        layer: list[SimTask] = []
        for _ in range(min(width, n - i)):
            k = _kernel(rng)
            if not prev:
                size = _size(rng, 1.0, 32.0)
                t = _task(rng, f"{prefix}{job}-{i:05d}", k, size, size, job, at, max_out=8 * MB)
            else:
                deps = rng.sample(prev, min(len(prev), rng.randint(1, 3)))
                dep_bytes = {d.id: d.out_bytes for d in deps}
                size = sum(dep_bytes.values())
                t = _task(rng, f"{prefix}{job}-{i:05d}", k, size, 4096, job, at, max_out=8 * MB)
                t.deps = [d.id for d in deps]
                t.dep_bytes = dep_bytes
            layer.append(t)
            i += 1
        tasks.extend(layer)
        prev = layer
    return Workload("dag", tasks)


def mapreduce(n: int, seed: int, job: int = 0, at: float = 0.0, prefix: str = "m") -> Workload:
    """Map-reduce: ~85% mappers over skewed input splits, each storing its output in one part per reducer;
    reducer r reads part r of every mapper's output (an all-to-all shuffle)."""
    rng = random.Random(f"mapreduce/{seed}/{job}")
    n_red = max(1, n // 8)
    n_map = max(1, n - n_red)
    parse = _BY_NAME["app.featurize"]
    maps = []
    for i in range(n_map):
        size = _size(rng, 1.0, 48.0)
        m = _task(rng, f"{prefix}{job}-map{i:05d}", parse, size, size, job, at)
        m.parts = n_red
        maps.append(m)
    reduce_k = _BY_NAME["meshaios.reduce_sum"]
    tasks = list(maps)
    for r in range(n_red):
        dep_bytes = {m.id: max(1, m.out_bytes // n_red) for m in maps}
        size = sum(dep_bytes.values())
        t = _task(rng, f"{prefix}{job}-red{r:04d}", reduce_k, size, 1024, job, at)
        t.work *= 20  # merging sorted runs is heavier than a plain sum
        t.deps = [m.id for m in maps]
        t.dep_bytes = dep_bytes
        t.dep_part = {m.id: r for m in maps}
        tasks.append(t)
    return Workload("mapreduce", tasks)


def mixed(n: int, seed: int) -> Workload:
    """Jobs of all three shapes arriving over time: what a shared mesh sees."""
    rng = random.Random(f"mixed/{seed}")
    tasks: list[SimTask] = []
    job = 0
    at = 0.0
    while len(tasks) < n:
        left = n - len(tasks)
        size = min(left, rng.randint(40, 160))
        shape = rng.choice(["independent", "dag", "mapreduce"])
        if shape == "independent":
            w = independent(size, seed * 1000 + job, prefix=f"i{job}-")
            for t in w.tasks:
                t.job, t.submit_at = job, at
        elif shape == "dag":
            w = layered_dag(size, seed, job=job, at=at)
        else:
            w = mapreduce(size, seed, job=job, at=at)
        tasks.extend(w.tasks)
        job += 1
        at += rng.expovariate(1.0 / 3.0)
    return Workload("mixed", tasks)


def deadlines(n: int, seed: int) -> Workload:
    """Interactive requests with deadlines among batch work, in bursts that overload the mesh for a while.

    A batch of long tasks (no deadline, 40% of ``n``) is submitted at t = 0; then every 0.5 s a burst of short
    requests arrives, each with a deadline of 2-6x its own run time on a speed-1 CPU plus 0.5-2 s. Some kernels
    run 10x longer than others, so "earliest deadline" and "least slack" disagree, and in the bursts not every
    deadline can be met."""
    rng = random.Random(seed)
    tasks: list[SimTask] = []
    n_batch = int(0.4 * n)
    for i in range(n_batch):
        tasks.append(SimTask(f"b{i}", "batch", 1024, 1.5 * rng.uniform(0.5, 1.5), "cpu", 1024))
    waves = max(1, (n - n_batch) // 50)
    per = (n - n_batch) // waves
    for w in range(waves):
        for j in range(per):
            kernel, mean = ("req_slow", 0.2) if rng.random() < 0.3 else ("req_fast", 0.02)
            work = mean * rng.uniform(0.5, 1.5)
            slack = work * rng.uniform(2.0, 6.0) + rng.uniform(0.5, 2.0)
            tasks.append(SimTask(f"r{w}.{j}", kernel, 1024, work, "cpu", 1024, submit_at=0.5 * w, job=1 + w,
                                 deadline=slack))
    return Workload("deadlines", tasks)


# ``tools/bench``'s DAG (``engines._dag``): seconds of each kernel on one core of a 2-core box over 100 MiB
# (rough: the DAG's 15 tasks sum to ~1.5 core-seconds; the benchmark measures ~2.0 s of CPU with its moves at 2 nodes)
BENCH_DAG_WORK = {"make_array": 0.25, "scale": 0.15, "mix": 0.06, "project": 0.12, "add": 0.06, "summary": 0.08}


def bench_dag(n: int, seed: int = 0, gap: float = 5.0, nbytes: int = 100 * MB) -> Workload:
    """``tools/bench``'s DAG, ``n // 19`` times, one copy every ``gap`` seconds (each a job): four arrays made by
    their own tasks, then for each k ``project(mix(scale(x[k]), x[k+1 mod 4]))``, two pairwise adds and a
    summary. Every array and intermediate is ``nbytes``; the summary's result is a pair of floats. ``seed`` is
    unused (the shape is fixed), kept for the common signature."""
    tasks: list[SimTask] = []

    def task(job: int, name: str, deps: list[SimTask], k: int = 0) -> SimTask:
        out = 64 if name == "summary" else nbytes
        t = SimTask(f"b{job}-{name}{k}", f"bench.{name}", 64, BENCH_DAG_WORK[name], "cpu", out,
                    deps=[d.id for d in deps], dep_bytes={d.id: d.out_bytes for d in deps}, submit_at=job * gap,
                    job=job)
        tasks.append(t)
        return t

    for job in range(max(1, n // 19)):
        xs = [task(job, "make_array", [], k) for k in range(4)]
        ps = [task(job, "project", [task(job, "mix", [task(job, "scale", [xs[k]], k), xs[(k + 1) % 4]], k)], k)
              for k in range(4)]
        task(job, "summary", [task(job, "add", ps[:2], 0), task(job, "add", ps[2:], 1)])
    return Workload("benchdag", tasks)


WORKLOADS = ("independent", "burst", "dag", "mapreduce", "mixed", "deadlines", "benchdag")


def make_workload(name: str, n: int, seed: int = 0) -> Workload:
    if name == "independent":
        return independent(n, seed)
    if name == "burst":
        return independent(n, seed, waves=5, gap=2.0)
    if name == "dag":
        return layered_dag(n, seed)
    if name == "mapreduce":
        return mapreduce(n, seed)
    if name == "mixed":
        return mixed(n, seed)
    if name == "deadlines":
        return deadlines(n, seed)
    if name == "benchdag":
        return bench_dag(n, seed)
    raise ValueError(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}")
