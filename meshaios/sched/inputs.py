"""Where a task's inputs are, and what moving them costs: the one description every placement policy prices.

``task_inputs`` is the only code that turns a task's dependencies into what placement sees; the owner
(``Owner.inputs``, ``Owner.task_info``) calls it in a live node, and the simulator asks that same owner, so the
simulated locality is the live one. A task reads two kinds of bytes:

* **inline**: its arguments, and the small dependency results the owner holds itself; they travel with the
  RUN message from the owner;
* **held**: dependency results stored on nodes (``holders``); the executor fetches each from any holder, so a
  holder pays nothing for it and any other node pays ``latency + bytes / bandwidth(holder -> node)``;
* **on a device**: a held input a GPU task left on its GPU (the executor says so in its result, ``kdev``) is
  free only to a GPU task on that holder; a CPU task there, or any task elsewhere that has to read it from that
  holder, pays one device->host copy first, and a GPU task elsewhere one host->device copy after:
  ``bytes / DEVICE_COPY_BW`` each.

``Links`` is the bandwidth model: measured throughput per (source, destination) pair where a transfer has been
seen, else what the destination reports for its incoming link (``bw`` in its gossiped load summary), else an
assumed 1 Gb/s. ``transfer_seconds`` prices moving a task's inputs to a node; ``Locality`` (``placement.py``) and
``EftPolicy`` (``eft.py``) both use it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from meshaios.sched.placement import PlacementTask

__all__ = [
    "DEVICE_COPY_BW", "Held", "Links", "Produced", "TaskInputs", "parse_inputs", "placement_info", "task_inputs",
    "transfer_seconds",
]

# Bytes/s of one device->host copy (a PCIe 4.0 x16 link moves about 12 GB/s in practice): what reading a
# device-resident object costs anything but a GPU task on its holder.
DEVICE_COPY_BW = 12e9


@dataclass(frozen=True, slots=True)
class Held:
    """One input stored on nodes: any of ``holders`` can serve its ``nbytes``; ``device`` is the holder that
    keeps it on a GPU (reading it there costs a device->host copy but for a GPU task), "" if none."""

    holders: tuple[str, ...]
    nbytes: int
    device: str = ""


@dataclass(frozen=True, slots=True)
class TaskInputs:
    inline: int = 0  # bytes that travel with the task from its owner
    held: tuple[Held, ...] = ()

    @property
    def total(self) -> int:
        """All input bytes: the runtime model's size feature."""
        return self.inline + sum(h.nbytes for h in self.held)

    def holders(self) -> set[str]:
        return {n for h in self.held for n in h.holders}

    def info(self, fn_key: str, device: str) -> PlacementTask:
        """The task-dict keys placement policies read (``docs/scheduling.md`` section 5)."""
        return _info(fn_key, self.inline, self.held, device)


def _info(fn_key: str, inline: int, held: tuple[Held, ...], device: str) -> PlacementTask:
    return {
        "fn_key": fn_key,
        "nbytes": inline,
        "inputs": [(list(h.holders), h.nbytes, h.device) if h.device else (list(h.holders), h.nbytes) for h in held],
        "device": device,
    }


class Produced(Protocol):
    """What the owner knows of a dependency's result (``OwnedTask`` has these fields)."""

    id: str
    result: Any  # the value, when the owner holds it inline; None when it lives on nodes
    locations: list[str]
    size: int
    parts: int
    device_at: str  # the node that keeps it on a GPU (it said so in its result), "" if none


def task_inputs(args_bytes: int, deps: Iterable[str], lookup: Callable[[str], Produced | None]) -> TaskInputs:
    """A task's inline bytes (``args_bytes`` plus dependency values held inline by the owner) and the inputs held
    on nodes. ``deps`` are object ids: ``task`` for a whole result, ``task#j`` for part j of a shuffle map output
    (``size / parts`` bytes); a whole result some holder keeps on a GPU is marked with that holder (``device``).
    A dependency the owner no longer knows, or whose every copy is lost, is skipped: the
    task is not ready then, and placement must not price an input nobody can serve."""
    inline = max(0, args_bytes)
    held: list[Held] = []
    for d in deps:
        base = d.split("#", 1)[0]
        p = lookup(base)
        if p is None:
            continue
        if d == p.id and p.result is not None:
            nb = getattr(p.result, "nbytes", 0)
            inline += nb if isinstance(nb, int) else 0
            continue
        if not p.locations:
            continue
        size = p.size // p.parts if p.parts and d != p.id else p.size
        dev = p.device_at if d == p.id and p.device_at in p.locations else ""
        held.append(Held(tuple(p.locations), max(0, size), dev))
    return TaskInputs(inline, tuple(held))


def placement_info(args_bytes: int, deps: Collection[str], lookup: Callable[[str], Produced | None], fn_key: str,
                   device: str) -> PlacementTask:
    """``task_inputs(args_bytes, deps, lookup).info(fn_key, device)``; for a task with no dependencies (every tiny
    task) without making its ``TaskInputs`` on the way."""
    if deps:
        return task_inputs(args_bytes, deps, lookup).info(fn_key, device)
    return _info(fn_key, max(0, args_bytes), (), device)


def parse_inputs(task: PlacementTask) -> TaskInputs:
    """The inputs described by a policy's task dict (``nbytes``; ``inputs`` as ``[[holders], bytes]`` or
    ``[[holders], bytes, device holder]``, or the
    older ``locations`` as ``{node: bytes}``); malformed entries are ignored, at most 10,000 are read."""
    raw: object = task.get("nbytes", 0)
    inline = int(raw) if isinstance(raw, int | float) and raw > 0 else 0
    held: list[Held] = []
    locs: object = task.get("locations")
    if isinstance(locs, dict):
        for src, nbytes in list(locs.items())[:10_000]:
            if isinstance(nbytes, int | float) and nbytes > 0:
                held.append(Held((str(src),), int(nbytes)))
    items: object = task.get("inputs")  # (object: as a peer sent it; a compiled build checks declared types)
    if isinstance(items, list):
        for item in items[:10_000]:
            if (isinstance(item, list | tuple) and 2 <= len(item) <= 3 and isinstance(item[0], list | tuple)
                    and item[0] and isinstance(item[1], int | float) and item[1] > 0):
                dev = item[2] if len(item) == 3 and isinstance(item[2], str) else ""
                held.append(Held(tuple(str(h) for h in item[0]), int(item[1]), dev))
    return TaskInputs(inline, tuple(held))


class Links:
    """Link bandwidth between nodes, bytes/s: measured where seen, else same-host, else reported, else assumed.

    ``observe(src, dst, nbytes, seconds)`` folds one finished transfer into an exponentially weighted estimate
    for that pair (transfers under ``min_bytes`` are ignored: their time is latency, not bandwidth). Bounded:
    at most ``max_pairs`` pairs are kept (the oldest observed are dropped first). ``hosts`` maps node ids to the
    host ids they gossip: two nodes of one host hand objects over through /dev/shm (``store/shm.py``), so an
    unmeasured pair of them is priced at ``local`` bytes/s, not at the network's ``default``. (Without it an idle
    node that never fetched had no measured ingress, was priced at the network's rate, and so never got the
    consumers that would have measured it: 13 of a DAG's 15 tasks piled on one of two nodes.) ``cores`` maps a
    host id to the cores its nodes share (a node knows its own host's: ``node.py``), for host-aware placement
    (``placement.Locality``): nodes of one host are not extra compute beyond those cores."""

    def __init__(self, default: float = 125e6, latency: float = 0.0005, alpha: float = 0.3,
                 min_bytes: int = 1 << 20, max_pairs: int = 4096, local: float = 1e9) -> None:
        if default <= 0 or local <= 0:
            raise ValueError("bandwidths must be positive")
        self.default = default
        self.local = local
        self.hosts: dict[str, str] = {}
        self.cores: dict[str, int] = {}
        self.latency = latency
        self.alpha = alpha
        self.min_bytes = min_bytes
        self.max_pairs = max_pairs
        self._measured: dict[tuple[str, str], float] = {}

    def observe(self, src: str, dst: str, nbytes: int, seconds: float) -> None:
        if nbytes < self.min_bytes or not seconds > 0 or src == dst:
            return
        rate = nbytes / seconds
        key = (src, dst)
        old = self._measured.pop(key, None)
        self._measured[key] = rate if old is None else old + self.alpha * (rate - old)
        while len(self._measured) > self.max_pairs:
            del self._measured[next(iter(self._measured))]

    def measured(self, src: str, dst: str) -> float | None:
        return self._measured.get((src, dst))

    def bandwidth(self, src: str, dst: str, reported: float | None = None) -> float:
        """Measured for this pair, else for two nodes of one host the pair measured the other way (a /dev/shm
        hand-over costs a writer's copy and a reader's mapping whichever way it goes; a node measures only what
        it fetches, so without this the owner priced a copy out to a peer at ``local`` and one in at what it had
        measured, 2x apart in the DAG benchmark) or ``local``, else ``reported`` (the destination's gossiped
        ingress), else the default."""
        m = self._measured.get((src, dst))
        if m:
            return m
        host = self.hosts.get(src)
        if host and host == self.hosts.get(dst):
            return self._measured.get((dst, src)) or self.local
        return reported if reported and reported > 0 else self.default

    def shared_host(self, node_id: str) -> str | None:
        """The host id of ``node_id`` when the cores of that host are known (its nodes share them), else None."""
        host = self.hosts.get(node_id)
        return host if host and self.cores.get(host, 0) > 0 else None

    def ingress(self, dst: str) -> float | None:
        """What ``dst`` receives at, as measured from all its sources (their mean); None before any measurement.
        A node gossips this for itself (``bw`` in its load summary)."""
        rates = [v for (_s, d), v in self._measured.items() if d == dst]
        return sum(rates) / len(rates) if rates else None

    def snapshot(self) -> dict[str, float]:
        """``"src->dst": bytes/s`` for what has been measured (status output)."""
        return {f"{s}->{d}": round(v) for (s, d), v in self._measured.items()}


def transfer_seconds(inputs: TaskInputs, node: str, owner: str | None,
                     bandwidth: Callable[[str, str], float], latency: float, device: str = "cpu") -> float:
    """Seconds to bring ``inputs`` to a task on ``node`` running on ``device`` (``cpu``/``gpu``): inline bytes
    from ``owner`` (free on the owner), each held input from its first holder (free on any holder), from a host
    copy rather than a device-resident one when there is one. Transfers from different sources are summed: they
    share the destination's link (the conservative online estimate; the offline HEFT lets them overlap).

    An input some holder keeps on a GPU (``Held.device``) costs ``bytes / DEVICE_COPY_BW`` per copy it needs on
    the way: none for a GPU task on that holder; one device->host for a CPU task there, or when it is fetched
    from there; one host->device for a GPU task anywhere else. (An input kept on no device is charged no
    host->device copy: that copy is made inside the timed call, so the runtime model's GPU times include it,
    and it is the same on every GPU node.)"""
    total = 0.0
    if inputs.inline and owner is not None and node != owner:
        total += latency + inputs.inline / bandwidth(owner, node)
    per_source: dict[str, int] = {}  # one bandwidth look-up per source, not per input (a reducer has thousands)
    for h in inputs.held:
        if h.device:
            copies = int(node != h.device if device == "gpu" else node == h.device)
            if node not in h.holders:
                src = next((s for s in h.holders if s != h.device), h.device)  # a host copy, if any
                copies += int(src == h.device)
                per_source[src] = per_source.get(src, 0) + h.nbytes
                total += latency
            total += copies * h.nbytes / DEVICE_COPY_BW
        elif node not in h.holders:
            src = h.holders[0]
            per_source[src] = per_source.get(src, 0) + h.nbytes
            total += latency
    for src, nbytes in per_source.items():
        total += nbytes / bandwidth(src, node)
    return total


def holders_in(inputs: TaskInputs, candidates: Sequence[Any]) -> list[Any]:
    """The candidates (objects with ``node_id``) that hold at least one of the inputs, in candidate order."""
    hs = inputs.holders()
    return [c for c in candidates if c.node_id in hs] if hs else []
