"""The load view: what this node believes about every peer's backlog, free slots, devices and links.

Why gossip and not queries: an owner placing thousands of tasks cannot ask every candidate how busy it is (a round
trip per decision, and O(n) of them); a thief looking for work cannot poll the whole mesh. Each node instead
publishes a compact summary of itself, which rides on membership traffic it sends anyway (SWIM messages carry the
sender's ``meta``), so spreading load costs no extra message and O(1) work per node per probe period.

Why "predicted seconds" and not "number of tasks": ten queued 10 ms tasks and ten queued 10 s tasks are not the
same backlog. Each node converts its queue into predicted seconds per device with its runtime model, which is the
``avail(n)`` term of the EFT rule (see ``eft.py``).

A summary is built with ``make_summary`` and stays under ``MAX_SUMMARY_BYTES`` in msgpack (it is cut, most
expendable parts first, to fit). Receivers record *when they heard it* (their own clock: peers' clocks are not
comparable), age the backlog by the time since (work drains at the rate of the busy slots), and forget an entry
after ``max_age`` seconds without news.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack

from meshaios.wire import messages as M

__all__ = ["MAX_SUMMARY_BYTES", "DeviceLoad", "LoadView", "NodeView", "make_summary", "summary_size"]

MAX_SUMMARY_BYTES = 1024
SUMMARY_VERSION = 1
_DEVICES = ("cpu", "gpu")


@dataclass(frozen=True, slots=True)
class DeviceLoad:
    """One device kind of one node: ``slots`` (workers or GPUs), ``free`` slots now, ``backlog`` = predicted
    seconds of queued work plus what remains of the running tasks, and the declared ``speed``."""

    slots: int
    free: int = 0
    backlog: float = 0.0
    speed: float = 1.0


@dataclass(slots=True)
class NodeView:
    """A parsed summary plus when we heard it."""

    node_id: str
    devices: dict[str, DeviceLoad]
    queued: int
    stealable: int
    kernel_factors: dict[str, float]
    bandwidth: float | None
    heard: float
    extra: dict[str, Any] = field(default_factory=dict)

    def wait(self, device: str, now: float) -> float:
        """Predicted seconds until a slot of ``device`` frees, aged by the time since the report: the backlog
        drains at one second per second per busy slot."""
        dl = self.devices.get(device)
        if dl is None or dl.slots <= 0:
            return float("inf")
        elapsed = max(0.0, now - self.heard)
        busy = max(1, dl.slots - dl.free)
        left = max(0.0, dl.backlog - elapsed * busy)
        return left / dl.slots


def make_summary(
    devices: Mapping[str, DeviceLoad],
    *,
    queued: int = 0,
    stealable: int = 0,
    kernel_factors: Mapping[str, float] | None = None,
    bandwidth: float | None = None,
    max_bytes: int = MAX_SUMMARY_BYTES,
) -> M.LoadSummary:
    """Build the dict a node puts in its SWIM meta (under ``"ld"``). Short keys and rounded numbers: it is sent
    on every membership message. Kernel factors (the most expendable part) are dropped until it fits."""
    s: M.LoadSummary = {
        "v": SUMMARY_VERSION,
        "d": {
            k: [int(d.slots), int(d.free), round(float(d.backlog), 3), round(float(d.speed), 3)]
            for k, d in devices.items()
            if k in _DEVICES
        },
        "q": int(queued),
        "st": int(stealable),
    }
    if bandwidth is not None:
        s["bw"] = round(float(bandwidth))
    if kernel_factors:
        s["kf"] = {k[:64]: round(float(v), 3) for k, v in list(kernel_factors.items())[:16]}
    while summary_size(s) > max_bytes and (kf := s.get("kf")):
        s["kf"] = dict(list(kf.items())[: len(kf) // 2])
    if not s.get("kf"):
        s.pop("kf", None)
    return s


def summary_size(summary: Mapping[str, Any]) -> int:
    return len(msgpack.packb(dict(summary), use_bin_type=True))


def _num(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and x == x and abs(x) < 1e12


def parse_summary(node_id: str, summary: object, heard: float) -> NodeView | None:
    """Validate a peer's summary completely (it came off the wire); None if it is not one."""
    if not isinstance(summary, dict) or summary.get("v") != SUMMARY_VERSION:
        return None
    raw = summary.get("d")
    if not isinstance(raw, dict):
        return None
    devices: dict[str, DeviceLoad] = {}
    for k, row in raw.items():
        if k not in _DEVICES or not isinstance(row, list | tuple) or len(row) < 4 or not all(_num(v) for v in row[:4]):
            return None
        slots, free, backlog, speed = int(row[0]), int(row[1]), float(row[2]), float(row[3])
        if slots < 0 or slots > 100_000 or backlog < 0 or speed <= 0:
            return None
        devices[k] = DeviceLoad(slots, max(0, min(free, slots)), backlog, speed)
    q, st, bw = summary.get("q", 0), summary.get("st", 0), summary.get("bw")
    if not _num(q) or not _num(st) or not (bw is None or (_num(bw) and bw > 0)):
        return None
    kf: dict[str, float] = {}
    raw_kf = summary.get("kf", {})
    if isinstance(raw_kf, dict):
        for k, v in list(raw_kf.items())[:32]:
            if isinstance(k, str) and _num(v) and v > 0:
                kf[k] = float(v)
    return NodeView(node_id, devices, int(q), int(st), kf, None if bw is None else float(bw), heard)


class LoadView:
    """Per-peer summaries with ageing. O(1) update and lookup; ``expire`` is amortised O(1) per entry because
    entries are kept in the order they were last heard."""

    def __init__(self, max_age: float = 10.0, max_nodes: int = 100_000) -> None:
        self.max_age = max_age
        self.max_nodes = max_nodes
        self._nodes: dict[str, NodeView] = {}  # ordered by ``heard`` (re-inserted on update)

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._nodes

    def __iter__(self) -> Iterator[NodeView]:
        return iter(list(self._nodes.values()))

    def update(self, node_id: str, summary: object, now: float) -> bool:
        """Record ``summary`` as heard from ``node_id`` at ``now`` (our clock). An older report than the one we
        hold is ignored (gossip can arrive out of order). False if it was malformed or stale."""
        nv = parse_summary(node_id, summary, now)
        if nv is None:
            return False
        old = self._nodes.get(node_id)
        if old is not None:
            if old.heard > now:
                return False
            del self._nodes[node_id]
        elif len(self._nodes) >= self.max_nodes:
            del self._nodes[next(iter(self._nodes))]
        if old is not None or not self._nodes or next(reversed(self._nodes.values())).heard <= now:
            self._nodes[node_id] = nv
        else:
            # out of order: keep the dict sorted by ``heard`` so that ``expire`` can stop at the first fresh one
            items = [*self._nodes.items(), (node_id, nv)]
            items.sort(key=lambda kv: kv[1].heard)
            self._nodes = dict(items)
        return True

    def get(self, node_id: str, now: float) -> NodeView | None:
        """The node's view if it is fresh enough to trust, else None (and callers fall back to static info)."""
        nv = self._nodes.get(node_id)
        if nv is None or now - nv.heard > self.max_age:
            return None
        return nv

    def remove(self, node_id: str) -> None:
        self._nodes.pop(node_id, None)

    def expire(self, now: float) -> list[str]:
        """Forget entries older than ``max_age``; returns who was forgotten."""
        gone: list[str] = []
        while self._nodes:
            node_id, nv = next(iter(self._nodes.items()))
            if now - nv.heard <= self.max_age:
                break
            del self._nodes[node_id]
            gone.append(node_id)
        return gone

    def busiest(self, now: float, exclude: Mapping[str, Any] | set[str] | frozenset[str] = frozenset(), limit: int = 3,
                devices: Collection[str] | None = None) -> list[tuple[float, str]]:
        """Peers with stealable work, largest *reported* wait per slot first: the thief's victims. Not aged like
        ``wait``: a report a few seconds old still says who had a queue, new work may have arrived since, and
        asking costs one round trip (a victim with nothing left says so, and is left alone for a cooldown).
        ``devices``: only the backlog on these device kinds counts (those the thief has idle: a node whose GPU
        idles beside busy CPUs does not ask a victim whose queue is all CPU work, nor a CPU-only one a GPU queue).
        O(n) in the view; a thief calls it only when it has run dry, at most once per request timeout."""
        out: list[tuple[float, str]] = []
        for nv in self._nodes.values():
            if nv.node_id in exclude or now - nv.heard > self.max_age or nv.stealable <= 0:
                continue
            w = max((d.backlog / d.slots for k, d in nv.devices.items()
                     if d.slots > 0 and (devices is None or k in devices)), default=0.0)  # fmt: skip
            if w > 0:
                out.append((w, nv.node_id))
        out.sort(reverse=True)
        return out[:limit]
