"""Earliest-finish-time placement (HEFT's EFT rule, applied online at the owner), with device choice.

For a ready task ``t`` and each candidate node ``n`` and device kind ``d`` the task may use::

    EFT(t, n, d) = max(avail(n, d), now + transfer(t, n)) + runtime(t, n, d)

    avail(n, d)       = now + max(work this owner has placed there and not seen finish,
                                  the node's gossiped backlog, aged)  / slots(n, d)
                        (a CPU slot of a node whose host's cores are shared with other candidates waits at
                        least ``placement.host_wait`` for one of them; while the host has no free core the
                        transfer is added to that wait instead of overlapping it)
    transfer(t, n)    = sum over inputs not on n of  bytes / bandwidth(src, n)  (+ a latency per source)
    runtime(t, n, d)  = exp(y_ref(t, d) - log speed(n, d) + delta(n, d) + var(t, d) / 2)   (see ``model.py``)

``var/2`` makes it the log-normal *mean* rather than the median: for a kernel the model is unsure about, a slow
node's penalty grows (a surprise there costs 1/speed times more), so uncertain work goes to fast nodes and the
well-known short tasks fill the slow ones -- which is what keeps a blind first batch from ending as stragglers.
``max`` rather than ``+`` for the transfer: a node fetches a task's inputs as soon as it accepts the task, so the
copy overlaps with the wait in its queue (the design's formula adds them; that is the no-overlap upper bound).
The task goes to the ``(n, d)`` with the smallest EFT. This is what lets the scheduler run a matmul on a GPU node
across the room rather than on the idle CPU beside its data -- or not, when moving 2 GB costs more than the GPU
saves.

Cost per decision does not grow with the mesh: below ``scan_below`` candidates every node is evaluated; above,
only ``sample`` random ones (power-of-d choices), plus the nodes that already hold the task's inputs, plus a few
GPU nodes when the task may use a GPU, plus the last few winners. The model's reference estimate is computed once
per device per decision; each candidate then costs a handful of dict lookups.

The owner talks to every policy through ``choose(task, candidates, rng)``. The task-dict keys this policy reads
(all optional: with only ``{"id": ...}`` it degrades to backlog balancing with the runtime prior):

======================  ==========================================================================================
``fn_key``              kernel or function id (``"meshaios.matmul"``); the runtime model's main feature
``nbytes``              bytes of inline arguments, held by the owner (travel with the RUN message)
``locations``           ``{node_id: bytes}`` of inputs already resident on nodes (results of dependencies)
``inputs``              alternatively ``[[holders], bytes]`` per input: replicated inputs cost nothing on any holder
``device``              ``"cpu"`` (default), ``"gpu"`` (hard requirement) or ``"any"`` (the scheduler picks)
``shape``               optional shape or list of shapes of the main inputs (a feature)
======================  ==========================================================================================

and the keys it writes back into the same dict: ``placed_device`` (``"cpu"``/``"gpu"``), ``predicted_s`` (predicted
runtime there) and ``eft`` (estimated finish time, on the policy's clock).
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from meshaios.clock import Clock, MonotonicClock
from meshaios.sched.inputs import Links, TaskInputs, parse_inputs, transfer_seconds
from meshaios.sched.loadview import DeviceLoad, LoadView, parse_summary
from meshaios.sched.model import RuntimeModel, device_kind, task_features
from meshaios.sched.placement import NodeLoad, PlacementPolicy, PlacementTask, host_tasks, host_wait

__all__ = ["EftConfig", "EftPolicy", "Estimate", "allowed_devices"]


@dataclass(frozen=True)
class EftConfig:
    sample: int = 4  # d of power-of-d: random candidates evaluated in a large mesh
    scan_below: int = 16  # evaluate every candidate when there are at most this many
    gpu_sample: int = 2  # extra random GPU nodes when the task may use a GPU
    keep_winners: int = 2  # recent winners re-evaluated (Sparrow-style memory of good nodes)
    bandwidth: float = 125e6  # bytes/s assumed for a link we know nothing about (1 Gb/s)
    latency: float = 0.0005  # seconds per remote input source
    max_ledger: int = 100_000  # placements remembered in all (bounded memory)
    risk: float = 1.0  # runtime used = exp(mu + risk * var / 2): 1 is the log-normal mean, 0 the median
    # late binding: wait for a busy node only if that finishes the task at least this fraction sooner than the best
    # node that could take it now (estimates are noisy; a task held back on a coin flip is a slot left idle)
    wait_margin: float = 0.5


@dataclass(frozen=True, slots=True)
class Estimate:
    node_id: str
    device: str
    start: float
    transfer: float
    runtime: float
    finish: float


def allowed_devices(task: PlacementTask) -> tuple[str, ...]:
    dev = task.get("device", "cpu")
    if dev == "any":
        return ("cpu", "gpu")
    return (device_kind(dev if isinstance(dev, str) else "cpu"),)


class EftPolicy(PlacementPolicy):
    """Learned earliest-finish-time placement. ``model`` and ``view`` are shared with the node (it trains the
    model and refreshes the view); ``clock`` gives ``now``; ``node_id`` is the owner itself (inline arguments
    need no transfer to it)."""

    name = "eft"
    # Offer me every node, full windows included, and keep the task waiting if I pick a full one (``Owner._pump``)
    late_binding = True
    ranks = True  # ``priority`` predicts runtimes: the owner takes the longest tasks first

    def __init__(
        self,
        model: RuntimeModel | None = None,
        view: LoadView | None = None,
        clock: Clock | None = None,
        node_id: str | None = None,
        config: EftConfig | None = None,
        bandwidth: Callable[[str, str], float | None] | None = None,
        links: Links | None = None,
    ) -> None:
        self.model = model if model is not None else RuntimeModel()
        # not ``view or``: an empty LoadView is falsy, and the node's (the simulator's) view is empty when the policy
        # is made -- EFT then read a private view nobody fed, blind to its peers' gossiped load and devices
        self.view = view if view is not None else LoadView()
        self.clock: Clock = clock or MonotonicClock()
        self.node_id = node_id
        self.config = config or EftConfig()
        self._bandwidth = bandwidth
        self.links = links  # measured link bandwidths (``sched/inputs.py``), before the gossiped ingress
        self.last: Estimate | None = None
        self.decisions = 0
        self.evaluated = 0
        self._ledger: dict[str, deque[tuple[str, float]]] = {}  # node -> (device, predicted s), oldest first
        self._work: dict[tuple[str, str], float] = {}  # (node, device) -> sum of predicted s in the ledger
        self._ledger_size = 0
        self._meta_cache: dict[str, tuple[Any, dict[str, DeviceLoad]]] = {}
        self._index_list: list[NodeLoad] | None = None  # held, so its id cannot be reused by another list
        self._index_len = -1
        self._index: dict[str, NodeLoad] = {}
        self._gpu_ids: list[str] = []
        self._winners: deque[str] = deque(maxlen=max(1, self.config.keep_winners))

    # ---- the policy interface -----------------------------------------------------------------------------

    def choose(self, task: PlacementTask, candidates: list[NodeLoad], rng: random.Random) -> NodeLoad:
        now = self.clock.now()
        devices = allowed_devices(task)
        pool = self._pool(task, candidates, devices, rng)
        inputs = _Inputs(task)
        refs = self._reference(task, devices, inputs)
        hosts = host_tasks(self.links, pool) if self.links is not None else {}
        best: Estimate | None = None
        best_nl: NodeLoad | None = None
        best_open: Estimate | None = None
        best_open_nl: NodeLoad | None = None
        for nl in pool:
            est = self._best_on(nl, inputs, devices, refs, now, hosts)
            self.evaluated += 1
            if est is None:
                continue
            if best is None or est.finish < best.finish:
                best, best_nl = est, nl
            if not nl.full and (best_open is None or est.finish < best_open.finish):
                best_open, best_open_nl = est, nl
        if (
            best is not None
            and best_nl is not None
            and best_nl.full
            and best_open is not None
            and (best_open.finish - now) * (1.0 - self.config.wait_margin) <= best.finish - now
        ):
            best, best_nl = best_open, best_open_nl  # waiting would not gain enough to be worth the risk
        if best is None or best_nl is None:
            # nobody offers a device this task may use: let the least-loaded node try (and fail it visibly)
            best_nl = min(candidates, key=lambda c: (c.load, c.node_id))
            best = Estimate(best_nl.node_id, devices[0], now, 0.0, 0.0, now)
        self._record(best_nl, best)
        task["placed_device"] = best.device
        task["predicted_s"] = best.runtime
        task["eft"] = best.finish
        self.last = best
        self.decisions += 1
        return best_nl

    def priority(self, task: PlacementTask) -> float:
        """Predicted seconds at reference speed on the best device the task may use (risk-adjusted, as placement
        sees it): the owner takes the longest tasks first, which is HEFT's upward rank for independent tasks."""
        devices = allowed_devices(task)
        refs = self._reference(task, devices, _Inputs(task))
        return math.exp(min(refs.values()))

    def prefer(self, task: PlacementTask, rng: random.Random) -> list[str]:
        """The last winners, offered again when the owner samples a large mesh (Sparrow-style memory)."""
        return list(self._winners)

    def rank_epoch(self) -> int:
        """Grows each time the model's observations grow by a quarter: ranks computed before are re-computed
        then (so O(log n) times in all, while its early, fast-changing opinions are followed closely)."""
        return int(math.log(self.model.n_seen + 1) / _LOG_RANK_STEP)

    def retract(self, node_id: str) -> None:
        """Forget the last placement on ``node_id``: the owner did not send it after all (late binding keeps a
        task waiting when its best node is full), so it must not count as queued work there."""
        led = self._ledger.get(node_id)
        if not led:
            return
        d, rt = led.pop()
        self._ledger_size -= 1
        key = (node_id, d)
        self._work[key] = max(0.0, self._work.get(key, 0.0) - rt)

    def estimate(self, task: PlacementTask, node: NodeLoad, now: float | None = None) -> Estimate | None:
        """The best (device, finish) for ``task`` on ``node``; None if it has no device the task may use."""
        devices = allowed_devices(task)
        inputs = _Inputs(task)
        return self._best_on(node, inputs, devices, self._reference(task, devices, inputs),
                             self.clock.now() if now is None else now)

    # ---- internals ----------------------------------------------------------------------------------------

    def _reference(self, task: PlacementTask, devices: tuple[str, ...], inputs: _Inputs) -> dict[str, float]:
        """Log runtime at reference speed (risk-adjusted), once per device: the part common to all nodes."""
        kernel = str(task.get("fn_key") or "?")
        out: dict[str, float] = {}
        for d in devices:
            x = task_features(kernel, inputs.total, d, shape=task.get("shape"))
            out[d] = self.model.reference_log(x) + self.config.risk * self.model.spread(x) / 2
        return out

    def _best_on(self, nl: NodeLoad, inputs: _Inputs, devices: tuple[str, ...], refs: dict[str, float],
                 now: float, hosts: dict[str, int] | None = None) -> Estimate | None:
        """O(1) per candidate: a few dict lookups, no model call (``refs`` holds the model's part). ``hosts``: the
        tasks on each host of which several candidates are nodes (``placement.host_tasks``): a CPU slot there also
        waits for one of the host's cores (``placement.host_wait``)."""
        nid = nl.node_id
        on_host = host_cores = 0  # tasks on this node's host and its cores, where they are shared with candidates
        if hosts and self.links is not None and (host := self.links.shared_host(nid)) in hosts:
            on_host, host_cores = hosts[host], self.links.cores[host]
        nv = self.view.get(nid, now)
        devs = nv.devices if nv is not None and nv.devices else self._static_devices(nl, now)
        ingress = nv.bandwidth if nv is not None else None
        xfer = self._transfer(inputs, nid, ingress)
        # a GPU task on the node that keeps an input on its GPU reads it with no copy; the CPU pays one
        xfer_gpu = self._transfer(inputs, nid, ingress, "gpu") if inputs.on_device and "gpu" in devices else xfer
        self._reconcile(nl)
        best_f = math.inf
        best: tuple[str, float, float] | None = None
        for d in devices:
            dl = devs.get(d)
            if dl is None or dl.slots <= 0:
                continue
            log_rt = refs[d] - math.log(dl.speed)
            off = self.model.node_offset(nid, d)
            if off is not None:
                log_rt += off
            elif nv is not None and nv.kernel_factors:
                kf = nv.kernel_factors.get(inputs.kernel if d == "cpu" else inputs.kernel + "@gpu")
                if kf:
                    log_rt -= math.log(kf)  # the node's own word about this kernel, until we see it run
            rt = math.exp(log_rt)
            wait = self._work.get((nid, d), 0.0) / dl.slots
            if nv is not None:
                wait = max(wait, nv.wait(d, now))
            move = xfer_gpu if d == "gpu" else xfer
            start = now + max(wait, move)
            if host_cores and d == "cpu":
                wait = max(wait, host_wait(on_host, host_cores, rt))
                # no free core on the host: the copy's CPU (a /dev/shm write, the reader's page faults) does not
                # overlap the wait, it takes a core from the tasks running there
                start = now + (wait + move if on_host >= host_cores else max(wait, move))
            if start + rt < best_f:
                best_f = start + rt
                best = (d, start, rt)
        if best is None:
            return None
        return Estimate(nid, best[0], best[1], xfer_gpu if best[0] == "gpu" else xfer, best[2], best_f)

    def _transfer(self, inputs: _Inputs, nid: str, ingress: float | None, device: str = "cpu") -> float:
        if not inputs.total:
            return 0.0
        return transfer_seconds(inputs.inputs, nid, self.node_id, lambda src, dst: self._bw(src, dst, ingress),
                                self.config.latency, device)

    def _bw(self, src: str, dst: str, ingress: float | None) -> float:
        if self._bandwidth is not None:
            b = self._bandwidth(src, dst)
            if b:
                return b
        if self.links is not None:
            # measured only: an unmeasured pair of one host is priced at the network's rate, not /dev/shm's, as it
            # was (at /dev/shm's 1 GB/s EFT moved two of three consumers off the holder of their 200 MB input on a
            # 2-core box with a free slot there: tests/system/test_locality_processes.py)
            m = self.links.measured(src, dst)
            if m:
                return m
        return ingress or self.config.bandwidth

    def _devices(self, nl: NodeLoad, now: float) -> dict[str, DeviceLoad]:
        """Slots and declared speeds: the fresh gossiped summary, else the static one from the node's meta at
        join time, else "``slots`` CPU workers at speed 1"."""
        nv = self.view.get(nl.node_id, now)
        if nv is not None and nv.devices:
            return nv.devices
        return self._static_devices(nl, now)

    def _static_devices(self, nl: NodeLoad, now: float) -> dict[str, DeviceLoad]:
        meta = nl.meta
        cached = self._meta_cache.get(nl.node_id)
        if cached is not None and cached[0] is meta:
            return cached[1]
        devs: dict[str, DeviceLoad] = {}
        if isinstance(meta, dict):
            parsed = parse_summary(nl.node_id, meta.get("ld"), now)
            if parsed is not None:
                devs = dict(parsed.devices)
        if not devs:
            devs = {"cpu": DeviceLoad(max(1, nl.slots))}
        self._meta_cache[nl.node_id] = (meta, devs)
        return devs

    def _reconcile(self, nl: NodeLoad) -> None:
        """Tasks complete roughly in the order they were placed, so when the owner reports fewer in flight than
        the ledger holds, the oldest entries are the finished ones: no completion callback is needed."""
        led = self._ledger.get(nl.node_id)
        if not led:
            return
        keep = max(0, nl.inflight)
        while len(led) > keep:
            d, rt = led.popleft()
            self._ledger_size -= 1
            key = (nl.node_id, d)
            left = self._work.get(key, 0.0) - rt
            self._work[key] = left if left > 1e-9 and led else 0.0

    def _record(self, nl: NodeLoad, est: Estimate) -> None:
        led = self._ledger.setdefault(nl.node_id, deque())
        led.append((est.device, est.runtime))
        key = (nl.node_id, est.device)
        self._work[key] = self._work.get(key, 0.0) + est.runtime
        self._ledger_size += 1
        if self._ledger_size > self.config.max_ledger:
            self._ledger.clear()
            self._work.clear()
            self._ledger_size = 0
        if not self._winners or self._winners[-1] != nl.node_id:
            self._winners.append(nl.node_id)

    def _pool(self, task: PlacementTask, candidates: list[NodeLoad], devices: tuple[str, ...],
              rng: random.Random) -> list[NodeLoad]:
        cfg = self.config
        if len(candidates) <= cfg.scan_below:
            return candidates
        index = self._index_of(candidates)
        sampled = rng.sample(candidates, min(cfg.sample, len(candidates)))
        picked: dict[str, NodeLoad] = {nl.node_id: nl for nl in sampled}
        extra: list[str] = []
        locs = task.get("locations")
        if isinstance(locs, dict):
            extra.extend(str(k) for k in locs)
        inputs = task.get("inputs")
        if isinstance(inputs, list):
            for item in inputs[:64]:
                if isinstance(item, list | tuple) and item and isinstance(item[0], list | tuple):
                    extra.extend(str(h) for h in item[0][:4])
        if self.node_id is not None:
            extra.append(self.node_id)
        extra.extend(self._winners)
        if "gpu" in devices and self._gpu_ids:
            extra.extend(rng.choice(self._gpu_ids) for _ in range(cfg.gpu_sample))
        for nid in extra:
            nl = index.get(nid)
            if nl is not None:
                picked[nid] = nl
        return list(picked.values())

    def _index_of(self, candidates: list[NodeLoad]) -> dict[str, NodeLoad]:
        """id -> NodeLoad for the owner's candidate list. The owner passes the same list object for every
        decision of one pass, so the O(n) rebuild is paid once per pass, not per decision."""
        if candidates is not self._index_list or len(candidates) != self._index_len:
            now = self.clock.now()
            self._index = {nl.node_id: nl for nl in candidates}
            self._gpu_ids = [nl.node_id for nl in candidates if self._devices(nl, now).get("gpu", _NO_GPU).slots > 0]
            self._index_list = candidates
            self._index_len = len(candidates)
        return self._index


_NO_GPU = DeviceLoad(0)
_LOG_RANK_STEP = math.log(1.25)


class _Inputs:
    """A task's inputs, parsed once per decision (``sched/inputs.py``), and its kernel."""

    __slots__ = ("inputs", "kernel", "on_device", "total")

    def __init__(self, task: PlacementTask) -> None:
        self.inputs: TaskInputs = parse_inputs(task)
        self.kernel = str(task.get("fn_key") or "?")
        self.total = self.inputs.total
        self.on_device = any(h.device for h in self.inputs.held)  # some input is kept on a GPU
