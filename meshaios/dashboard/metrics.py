"""The Prometheus text exposition (format 0.0.4) of a node's status dict. Pure: a dict in, text out.

Every family is derived from ``Node.status()``; a key the status does not have (an older node, a feature not
built yet) yields a zero or no sample, never an error. Names follow Prometheus conventions: ``_total`` for
counters, ``_bytes`` / ``_seconds`` units, one ``meshaios_node_info`` series carrying the node's identity.

>>> text = render_metrics({"node": {"id": "ab", "name": "n0", "queued": 3, "running": 2, "workers": 4}})
>>> "meshaios_executor_tasks{state=\\"running\\"} 2" in text
True
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_NAME_BAD = re.compile(r"[^a-zA-Z0-9_]")

# node counters that other families already expose, or that are bytes rather than events
_CONSUMED_COUNTERS = frozenset({"served_bytes", "fetched_bytes", "shm_sent_bytes", "shm_received_bytes"})


@dataclass
class _Family:
    name: str
    kind: str  # counter | gauge | histogram
    help: str
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)  # (name suffix, labels, value)


class MetricsBuilder:
    """Collects samples by family, so each family's HELP/TYPE comes once and its samples stay together."""

    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}

    def add(
        self,
        name: str,
        kind: str,
        help_: str,
        value: Any,
        labels: Mapping[str, Any] | None = None,
        suffix: str = "",
    ) -> None:
        """``suffix``: a histogram's sample (``_bucket``, ``_sum``, ``_count``) in family ``name``."""
        v = _number(value)
        if v is None:
            return
        fam = self._families.get(name)
        if fam is None:
            fam = self._families[name] = _Family(name, kind, help_)
        fam.samples.append((suffix, {k: str(x) for k, x in (labels or {}).items()}, v))

    def histogram(
        self, name: str, help_: str, bounds: list[float], counts: list[Any], total: Any, labels: Mapping[str, Any]
    ) -> None:
        """One histogram series from per-bucket counts (``len(bounds) + 1``: the last is over every bound)."""
        if len(counts) != len(bounds) + 1 or any(_number(c) is None for c in counts) or _number(total) is None:
            return
        cumulative = 0.0
        for bound, c in zip([*bounds, math.inf], counts, strict=True):
            cumulative += float(c)
            self.add(name, "histogram", help_, cumulative, {**labels, "le": _format(float(bound))}, "_bucket")
        self.add(name, "histogram", help_, total, labels, "_sum")
        self.add(name, "histogram", help_, cumulative, labels, "_count")

    def render(self) -> str:
        lines: list[str] = []
        for fam in self._families.values():
            lines.append(f"# HELP {fam.name} {_escape_help(fam.help)}")
            lines.append(f"# TYPE {fam.name} {fam.kind}")
            for suffix, labels, value in fam.samples:
                lines.append(f"{fam.name}{suffix}{_labels(labels)} {_format(value)}")
        return "\n".join(lines) + "\n"


def metric_name(text: str) -> str:
    """A free-form key (a counter name) as a metric-name or label-safe token."""
    name = _NAME_BAD.sub("_", text)
    return name if name and not name[0].isdigit() else f"_{name}"


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return None


def _format(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v.is_integer() and abs(v) < 2**63:
        return str(int(v))
    return repr(v)


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{metric_name(k)}="{_escape_label(v)}"' for k, v in labels.items()) + "}"


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> Iterable[Any]:
    return value if isinstance(value, list) else ()


def render_metrics(status: Mapping[str, Any]) -> str:
    """``status`` is ``Node.status()``: ``{"node": {...}, "members": [...]}``."""
    me = _dict(status.get("node"))
    members = [m for m in _list(status.get("members")) if isinstance(m, Mapping)]
    b = MetricsBuilder()

    b.add(
        "meshaios_node_info",
        "gauge",
        "This node's identity (value is always 1).",
        1,
        {
            "node": me.get("id", ""),
            "name": me.get("name", ""),
            "mesh": me.get("mesh", ""),
            "address": me.get("addr", ""),
            "secure": "true" if me.get("secure") else "false",
        },
    )
    b.add("meshaios_uptime_seconds", "gauge", "Seconds since this node started.", me.get("uptime", 0))
    b.add("meshaios_workers", "gauge", "Task threads of this node.", me.get("workers", 0))
    b.add("meshaios_incarnation", "gauge", "This node's SWIM incarnation number.", me.get("incarnation", 0))

    # ---- tasks by state -----------------------------------------------------------------------------------
    queued = _number(me.get("queued")) or 0.0
    running = _number(me.get("running")) or 0.0
    help_exec = "Tasks accepted by this node's executors, by state (waiting includes waiting for inputs)."
    b.add("meshaios_executor_tasks", "gauge", help_exec, running, {"state": "running"})
    b.add("meshaios_executor_tasks", "gauge", help_exec, max(0.0, queued - running), {"state": "waiting"})
    finished = _number(me.get("finished")) or 0.0
    failed = _number(me.get("failed")) or 0.0
    help_fin = "Task attempts this node's executors finished, by result."
    b.add("meshaios_executor_finished_total", "counter", help_fin, max(0.0, finished - failed), {"result": "ok"})
    b.add("meshaios_executor_finished_total", "counter", help_fin, failed, {"result": "error"})
    b.add(
        "meshaios_owner_pending_tasks",
        "gauge",
        "Tasks this node owns that are not finished (waiting, ready or dispatched).",
        me.get("pending", 0),
    )
    for event, n in sorted(_dict(me.get("owner")).items()):
        b.add(
            "meshaios_owner_tasks_total",
            "counter",
            "Owner events for the tasks clients submitted to this node (submitted, done, failed, retried, ...).",
            n,
            {"event": event},
        )
    jobs = [j for j in _list(me.get("jobs")) if isinstance(j, Mapping)]
    if "jobs" in me:
        b.add("meshaios_jobs", "gauge", "Clients with tasks held by this node's owner.", len(jobs))

    # ---- queue lengths ------------------------------------------------------------------------------------
    help_q = "Queue length of each mesh member as this node last heard it (itself included)."
    b.add("meshaios_queue_length", "gauge", help_q, queued, {"member": me.get("id", ""), "name": me.get("name", "")})
    for m in members:
        if m.get("state") in ("alive", "suspect"):
            b.add(
                "meshaios_queue_length",
                "gauge",
                help_q,
                m.get("queued", 0),
                {"member": m.get("id", ""), "name": m.get("name", "")},
            )
    fetch = _dict(me.get("fetch"))
    b.add("meshaios_fetch_pending", "gauge", "Peer-to-peer object fetches in flight.", fetch.get("pending", 0))

    # ---- membership ---------------------------------------------------------------------------------------
    by_state = {"alive": 1, "suspect": 0, "dead": 0, "left": 0}  # this node counts itself alive
    for m in members:
        st = str(m.get("state", ""))
        by_state[st] = by_state.get(st, 0) + 1
    for st, n in by_state.items():
        b.add(
            "meshaios_members",
            "gauge",
            "Mesh members by state as this node sees them (itself included).",
            n,
            {"state": st},
        )
    counters = _dict(me.get("counters"))
    help_mem = "Membership changes this node observed, by the state a member moved to."
    for st in ("alive", "suspect", "dead", "left"):
        b.add("meshaios_membership_events_total", "counter", help_mem, counters.get(f"member_{st}", 0), {"state": st})

    # ---- data moved ---------------------------------------------------------------------------------------
    help_b = "Object bytes moved peer to peer: served to other nodes, fetched from them."
    b.add("meshaios_data_bytes_total", "counter", help_b, counters.get("served_bytes", 0), {"direction": "served"})
    b.add("meshaios_data_bytes_total", "counter", help_b, counters.get("fetched_bytes", 0), {"direction": "fetched"})
    help_shm = "Of those, object bytes handed to or taken from nodes of this machine through /dev/shm."
    for direction in ("sent", "received"):
        n = counters.get(f"shm_{direction}_bytes", 0)
        b.add("meshaios_shm_bytes_total", "counter", help_shm, n, {"direction": direction})

    # ---- GPUs: copies between host and device, objects kept on each device (devices/resident.py) -----------
    for device, g in sorted(_dict(me.get("gpu")).items()):
        g = _dict(g)
        for direction in ("h2d", "d2h"):
            labels = {"device": device, "direction": direction}
            help_c = "Copies between host and device memory (h2d: host to device), by device."
            b.add("meshaios_gpu_copies_total", "counter", help_c, g.get(direction, 0), labels)
            help_cb = "Bytes copied between host and device memory, by device."
            b.add("meshaios_gpu_copied_bytes_total", "counter", help_cb, g.get(f"{direction}_bytes", 0), labels)
        help_r = "Bytes of task results kept on the device between tasks."
        b.add("meshaios_gpu_resident_bytes", "gauge", help_r, g.get("resident_bytes", 0), {"device": device})
        help_l = "Bytes of device memory that results kept between tasks may use."
        b.add("meshaios_gpu_resident_limit_bytes", "gauge", help_l, g.get("limit", 0), {"device": device})
        help_e = "Objects moved from the device to host memory under device memory pressure."
        b.add("meshaios_gpu_evictions_total", "counter", help_e, g.get("evictions", 0), {"device": device})
        help_o = "Kernels that ran out of device memory: retried after evicting, and failed after the retry."
        for outcome, key in (("retried", "oom_retries"), ("failed", "oom_failures")):
            b.add("meshaios_gpu_oom_total", "counter", help_o, g.get(key, 0), {"device": device, "outcome": outcome})

    # ---- work stealing (0 until the node reports it) ------------------------------------------------------
    steal = _dict(me.get("steal"))
    b.add("meshaios_steals_total", "counter", "Tasks this node stole from peers.", steal.get("stolen", 0))
    for event, n in sorted(steal.items()):
        if event != "stolen":
            b.add("meshaios_steal_events_total", "counter", "Work-stealing protocol events.", n, {"event": event})

    # ---- transport ----------------------------------------------------------------------------------------
    tr = _dict(me.get("transport"))
    help_t = "Messages through this node's transport."
    for kind in ("sent", "received", "dropped"):
        b.add("meshaios_transport_messages_total", "counter", help_t, tr.get(kind, 0), {"kind": kind})
    help_a = "CURVE handshakes checked by this node's ZAP handler."
    b.add("meshaios_transport_auth_total", "counter", help_a, tr.get("auth_ok", 0), {"result": "ok"})
    b.add("meshaios_transport_auth_total", "counter", help_a, tr.get("auth_rejected", 0), {"result": "rejected"})
    if "bytes_sent" in tr:
        b.add("meshaios_transport_sent_bytes_total", "counter", "Bytes this node's transport sent.", tr["bytes_sent"])
    known = {"sent", "received", "dropped", "auth_ok", "auth_rejected", "bytes_sent", "extra"}
    others = {k: v for k, v in tr.items() if k not in known}
    others.update(_dict(tr.get("extra")))
    for kind, n in sorted(others.items()):
        b.add("meshaios_transport_events_total", "counter", "Other transport events.", n, {"kind": kind})

    # ---- object store -------------------------------------------------------------------------------------
    store = _dict(me.get("store"))
    b.add("meshaios_store_objects", "gauge", "Objects in this node's store (memory and disk).", store.get("objects", 0))
    help_sb = "Bytes held by this node's object store, by where they are."
    b.add("meshaios_store_bytes", "gauge", help_sb, store.get("bytes_in_memory", 0), {"where": "memory"})
    b.add("meshaios_store_bytes", "gauge", help_sb, store.get("bytes_spilled", 0), {"where": "disk"})
    b.add("meshaios_store_spilled_objects", "gauge", "Objects spilled to disk now.", store.get("spilled_objects", 0))
    help_se = "Object store spill traffic."
    b.add("meshaios_store_spill_events_total", "counter", help_se, store.get("spill_events", 0), {"kind": "spill"})
    b.add("meshaios_store_spill_events_total", "counter", help_se, store.get("unspill_events", 0), {"kind": "unspill"})
    b.add("meshaios_store_spill_events_total", "counter", help_se, store.get("spill_failures", 0), {"kind": "failure"})
    b.add(
        "meshaios_store_peak_memory_bytes", "gauge", "Most bytes the store held in memory.", store.get("peak_memory", 0)
    )
    b.add(
        "meshaios_store_memory_limit_bytes",
        "gauge",
        "Store memory before spilling to disk.",
        me.get("memory_limit", 0),
    )

    # ---- task run times (the node's timeline: every attempt that ran here, ok or failed) --------------------
    run_hist = _dict(_dict(me.get("timeline_summary")).get("run_hist"))
    bounds = [float(x) for x in _list(run_hist.get("buckets")) if _number(x) is not None]
    for device, h in sorted(_dict(run_hist.get("devices")).items()):
        h = _dict(h)
        b.histogram(
            "meshaios_task_duration_seconds",
            "Run time of the task attempts this node ran (ok or failed), by device.",
            bounds,
            list(_list(h.get("counts"))),
            h.get("sum", 0),
            {"device": device},
        )

    # ---- scheduler model (when the node reports one) ------------------------------------------------------
    for stat, v in sorted(_dict(me.get("model")).items()):
        b.add("meshaios_model", "gauge", "Scheduler cost-model statistics (e.g. prediction error).", v, {"stat": stat})

    # ---- everything else the node counts ------------------------------------------------------------------
    for event, n in sorted(counters.items()):
        if event.startswith("member_") or event in _CONSUMED_COUNTERS:
            continue
        b.add("meshaios_node_events_total", "counter", "Other events this node counted.", n, {"event": event})

    return b.render()
