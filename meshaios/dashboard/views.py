"""What the dashboard page draws, computed from a node's status (and its owner's tasks): pure functions.

- ``mesh_view``: every node of the mesh in one table, and the mesh's totals. A node knows its own figures and
  its members' gossiped ones (SWIM metadata: tasks run, failed, owned and unfinished, tasks/s, memory), so any
  node's page shows the same totals (up to a gossip round of lag) without asking anyone else.
- ``work_view``: one scan of the owner's tasks: jobs per client, progress per function, recent errors.
- ``mesh_work``: the same, and the task stream, over every node's ``peer_view`` (the dashboard's mesh-wide page).
- ``duration_histogram``: how long the tasks run here took, per function (where this node owns the task) or
  per device, in log-spaced buckets.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable, Mapping
from typing import Any, NotRequired, TypedDict

from meshaios.dashboard.jobs import JobRow, client_label
from meshaios.timeline import RUN_BUCKETS

_STATES = ("waiting", "ready", "dispatched", "done", "failed")
_UP = ("alive", "suspect")  # members whose figures count in the totals (the dead and departed keep their last)
BUCKETS = RUN_BUCKETS  # upper bounds of the duration buckets, seconds (the last bucket is "more")


class NodeRow(TypedDict):
    """One node in ``mesh_view``: from its own status (``self``) or a member's gossiped figures."""

    id: str
    name: str
    addr: str
    state: str
    self: bool
    devices: str
    workers: int
    running: int
    queued: int
    finished: int
    failed: int
    pending: int
    tasks_per_s: float
    memory: int  # bytes of results in memory
    since: float
    memory_limit: NotRequired[int]  # this node only
    spilled: NotRequired[int]


class Totals(TypedDict):
    """``mesh_view``'s sums over the nodes alive or suspect, and how many nodes there are."""

    finished: int
    failed: int
    pending: int
    running: int
    queued: int
    workers: int
    memory: int
    tasks_per_s: float
    alive: int
    nodes: int


class MeshView(TypedDict):
    nodes: list[NodeRow]
    totals: Totals


class Series(TypedDict):
    """One series of ``duration_histogram``."""

    name: str
    counts: list[int]  # one per bucket, plus one "more"
    n: int
    sum: float


class Histogram(TypedDict):
    buckets: list[float]
    series: list[Series]


class FunctionRow(TypedDict):
    """One function's tasks by state (``work_view``, summed over owners by ``mesh_work``)."""

    function: str
    total: int
    pending: int  # waiting + ready + dispatched
    waiting: int
    ready: int
    dispatched: int
    done: int
    failed: int


class FailureRow(TypedDict):
    """One failed task an owner still tracks (``work_view``'s ``errors``)."""

    task: str
    function: str
    client: str
    type: str
    msg: str
    tb: str  # its last 4,000 characters
    age: float  # seconds since it was submitted


class WorkView(TypedDict):
    """``work_view``: one scan of an owner's tasks."""

    jobs: list[JobRow]
    functions: list[FunctionRow]
    errors: list[FailureRow]
    task_functions: dict[str, str]  # task id -> function, for the ids asked
    partial: bool  # more tasks than the scan looked at


class MeshNode(TypedDict):
    id: str
    name: str
    workers: int


class MeshWork(TypedDict):
    """``mesh_work``: the whole mesh's work, from every node's ``peer_view`` (peers' parts are checked, not
    trusted: the rows copied from them keep their keys as sent)."""

    nodes: list[MeshNode]
    gpus: list[dict[str, str | int]]
    stream: list[dict[str, object]]
    functions: list[FunctionRow]
    jobs: list[dict[str, object]]
    errors: list[dict[str, object]]


def _function_row(name: str) -> FunctionRow:
    return {"function": name, "total": 0, "pending": 0, "waiting": 0, "ready": 0, "dispatched": 0, "done": 0,
            "failed": 0}  # fmt: skip


def _num(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and x == x else 0.0


def mappings(x: object) -> list[Mapping[str, object]]:
    """The mappings among a peer's list (anything else it sent is left out)."""
    return [r for r in x if isinstance(r, Mapping)] if isinstance(x, (list, tuple)) else []


def _int(x: Any) -> int:
    return x if type(x) is int else int(x) if type(x) is float and x == x and abs(x) < 2**62 else 0


def _row(m: Mapping[str, Any], state: str, me: bool, memory: int, since: float) -> NodeRow:
    """One node's row, from its own status (``me``) or a member's gossiped figures: the keys both share."""
    return {
        "id": str(m.get("id", "")),
        "name": str(m.get("name", "")),
        "addr": str(m.get("addr", "")),
        "state": state,
        "self": me,
        "devices": str(m.get("devices", "")),
        "workers": _int(m.get("workers")),
        "running": _int(m.get("running")),
        "queued": _int(m.get("queued")),
        "finished": _int(m.get("finished")),
        "failed": _int(m.get("failed")),
        "pending": _int(m.get("pending")),
        "tasks_per_s": _num(m.get("tasks_per_s")),
        "memory": memory,
        "since": since,
    }


def mesh_view(status: Mapping[str, Any]) -> MeshView:
    """``{"nodes": [...], "totals": {...}}`` from a status dict (``Node.status()``).

    Each node row: ``id, name, addr, state, self, devices, workers, running, queued, finished, failed, pending,
    tasks_per_s, memory`` (bytes of results in memory) and, for this node only, ``memory_limit`` and ``spilled``.
    Totals add up the nodes alive or suspect: ``finished`` (task attempts run, failed ones included), ``failed``,
    ``pending`` (tasks owned and unfinished), ``running``, ``queued``, ``workers``, ``memory``, ``tasks_per_s``,
    and count ``alive`` and ``nodes``.

    >>> v = mesh_view({"node": {"id": "a", "finished": 5, "pending": 2},
    ...                "members": [{"id": "b", "state": "alive", "finished": 3, "pending": 1},
    ...                            {"id": "c", "state": "dead", "finished": 9}]})
    >>> (v["totals"]["finished"], v["totals"]["pending"], v["totals"]["alive"], v["totals"]["nodes"])
    (8, 3, 2, 3)
    """
    me = status.get("node")
    me = me if isinstance(me, Mapping) else {}
    store = me.get("store")
    store = store if isinstance(store, Mapping) else {}
    mine = _row(me, "alive", True, memory=_int(store.get("bytes_in_memory")), since=_num(me.get("uptime")))
    mine["memory_limit"] = _int(me.get("memory_limit"))
    mine["spilled"] = _int(store.get("bytes_spilled"))
    rows = [mine]
    members = status.get("members")
    for m in members if isinstance(members, list) else []:
        if isinstance(m, Mapping):
            rows.append(_row(m, str(m.get("state", "")), False, _int(m.get("store_bytes")), _num(m.get("since"))))
    up = [r for r in rows if r["state"] in _UP]
    totals: Totals = {
        "finished": sum(r["finished"] for r in up),
        "failed": sum(r["failed"] for r in up),
        "pending": sum(r["pending"] for r in up),
        "running": sum(r["running"] for r in up),
        "queued": sum(r["queued"] for r in up),
        "workers": sum(r["workers"] for r in up),
        "memory": sum(r["memory"] for r in up),
        "tasks_per_s": round(sum(r["tasks_per_s"] for r in up), 3),
        "alive": sum(r["state"] == "alive" for r in rows),
        "nodes": len(rows),
    }
    return {"nodes": rows, "totals": totals}


def fn_label(fn: Any) -> str:
    """A person's name for a task's function payload, read without importing or unpickling anything:
    ``module:qualname`` for a function sent by reference, the kernel's name for a kernel, else ``pickled:<hash>``.

    >>> from meshaios.tasks.functions import encode_function
    >>> import json
    >>> fn_label(encode_function(json.dumps, allow_pickle=False))
    'json:dumps'
    """
    from meshaios.wire.values import loads

    try:
        spec = loads(fn, allow_pickle=False)
    except Exception:
        spec = None
    if isinstance(spec, Mapping):
        for key in ("ref", "kernel"):
            if isinstance(spec.get(key), str):
                return str(spec[key])[:120]
    blob = getattr(fn, "blob", b"")
    digest = hashlib.blake2b(bytes(blob) if isinstance(blob, (bytes, bytearray, memoryview)) else b"", digest_size=4)
    return "pickled:" + digest.hexdigest()


def work_view(
    tasks: Mapping[str, Any],
    now: float,
    *,
    name_tasks: Iterable[str] = (),
    limit: int = 20,
    max_scan: int = 200_000,
    max_errors: int = 20,
) -> WorkView:
    """One bounded scan of ``Owner.tasks`` (id -> task with ``client``, ``state``, ``submitted_at``, ``fn``,
    ``key``, ``error``): ``{"jobs", "functions", "errors", "task_functions"}``.

    ``jobs``: as ``jobs_view``. ``functions``: per function, the counts by state, ``total`` and ``pending``, the
    unfinished first, then by most tasks (up to ``limit``). ``errors``: the ``max_errors`` failed tasks submitted
    most recently, with their function, exception type, message and traceback (the traceback's last 4,000
    characters). ``task_functions``: the function of each id in ``name_tasks`` that this owner holds (the page
    labels its task stream and duration histogram with them). At most ``max_scan`` tasks are looked at; past
    that, ``partial`` is true.
    """
    from meshaios.dashboard.jobs import jobs_from, scan, state_name

    sc = scan(tasks.values(), max_scan)
    labels = {key: fn_label(getattr(t, "fn", None)) for key, t in sc.by_key.items()}  # one decode per function
    funcs: dict[str, FunctionRow] = {}
    for (_client, key, state), n in sc.counts.items():
        name = labels[key]
        f = funcs.get(name)
        if f is None:
            f = funcs[name] = _function_row(name)
        st = state_name(state)
        if st in _STATES:
            f[st] += n  # type: ignore[literal-required]  # one of FunctionRow's state counts
        f["total"] += n
    out = list(funcs.values())
    for f in out:
        f["pending"] = f["waiting"] + f["ready"] + f["dispatched"]
    out.sort(key=lambda f: (f["pending"] == 0, -f["total"], f["function"]))
    failed_states = {state for (_c, _k, state) in sc.counts if state_name(state) == "failed"}
    failed = [t for t in sc.tasks if t.state in failed_states and t.error is not None] if failed_states else []
    failed.sort(key=lambda t: t.submitted_at, reverse=True)

    def label(t: Any) -> str:
        return labels.get(t.key) or fn_label(getattr(t, "fn", None))

    errors: list[FailureRow] = []
    for t in failed[:max_errors]:
        err = t.error if isinstance(t.error, Mapping) else {}
        errors.append(
            {
                "task": str(t.id),
                "function": label(t),
                "client": client_label(t.client),
                "type": str(err.get("type", "Error"))[:200],
                "msg": str(err.get("msg", ""))[:1000],
                "tb": str(err.get("tb", ""))[-4000:],
                "age": max(0.0, now - t.submitted_at),
            }
        )
    named: dict[str, str] = {}
    for tid in name_tasks:
        t = tasks.get(tid)
        if t is not None:
            named[tid] = label(t)
    return {
        "jobs": jobs_from(sc, now, limit),
        "functions": out[:limit],
        "errors": errors,
        "task_functions": named,
        "partial": sc.partial,
    }


def duration_histogram(records: Iterable[Mapping[str, Any]], names: Mapping[str, str] | None = None,
                       limit: int = 8) -> Histogram:  # fmt: skip
    """Run times of finished task records (``node.timeline``: ``task``, ``run_s``, ``device``, ``outcome``),
    counted in ``BUCKETS`` per series: the task's function when ``names`` has it, else ``other@<device>``.

    ``{"buckets": [upper bounds...], "series": [{"name", "counts": [...one per bucket, plus one "more"], "n",
    "sum"}]}``, the ``limit`` series with most tasks (the rest are added into ``"(others)"``). Moved and
    cancelled attempts did not run here and are left out.

    >>> h = duration_histogram([{"task": "t", "run_s": 0.02, "device": "cpu", "outcome": "ok"}], {"t": "m:f"})
    >>> h["series"][0]["name"], h["series"][0]["counts"][BUCKETS.index(0.03)]
    ('m:f', 1)
    """
    names = names or {}
    series: dict[str, Series] = {}
    for r in records:
        if r.get("outcome") not in ("ok", "error"):
            continue
        run = _num(r.get("run_s"))
        name = names.get(str(r.get("task"))) or "other@" + str(r.get("device") or "cpu")
        s = series.get(name)
        if s is None:
            s = series[name] = {"name": name, "counts": [0] * (len(BUCKETS) + 1), "n": 0, "sum": 0.0}
        i = bisect.bisect_left(BUCKETS, run)  # the first bound >= run (Prometheus's "le")
        s["counts"][i] += 1
        s["n"] += 1
        s["sum"] += run
    ordered = sorted(series.values(), key=lambda s: (-s["n"], s["name"]))
    if len(ordered) > limit:
        rest: Series = {"name": "(others)", "counts": [0] * (len(BUCKETS) + 1), "n": 0, "sum": 0.0}
        for s in ordered[limit - 1 :]:
            rest["counts"] = [a + b for a, b in zip(rest["counts"], s["counts"], strict=True)]
            rest["n"] += s["n"]
            rest["sum"] += s["sum"]
        ordered = [*ordered[: limit - 1], rest]
    for s in ordered:
        s["sum"] = round(s["sum"], 6)
    return {"buckets": list(BUCKETS), "series": ordered}


_COUNTS = ("total", "pending", *_STATES)
_GPU_FIELDS = ("busy", "resident_bytes", "resident_objects", "limit", "h2d", "h2d_bytes", "d2h", "d2h_bytes",
               "evictions", "oom_failures")  # fmt: skip


def mesh_work(views: Iterable[Mapping[str, object]], now: float, *, stream_limit: int = 3000,
              max_errors: int = 20, limit: int = 20) -> MeshWork:  # fmt: skip
    """The whole mesh's work from every node's ``Node.peer_view`` (``now``: wall-clock seconds).

    ``stream``: every node's recent task attempts (times in wall-clock seconds), each with ``node_name`` and its
    ``function`` where its owner could name it, oldest first, at most ``stream_limit``. ``nodes``: ``id, name,
    workers`` of the nodes that answered, in that order. ``gpus``: one row per GPU of those nodes (``node``,
    ``device``, its busy task thread, the bytes and objects kept there against their ``limit``, copies each way,
    evictions, out-of-memory failures). ``functions``: per-function counts summed over the owners,
    the unfinished first. ``jobs``: every owner's, with its ``owner`` name. ``errors``: the ``max_errors`` most
    recent failures any owner kept, newest first, with their ``age`` in seconds.

    >>> w = mesh_work([{"node": "a", "name": "n0", "timeline": [{"task": "t", "queued": 1.0, "owner": "a"}],
    ...                 "names": {"t": "m:f"}, "functions": [{"function": "m:f", "total": 1, "done": 1}],
    ...                 "errors": [{"at": 9.0, "task": "t", "type": "ValueError"}]}], now=10.0)
    >>> w["stream"][0]["function"], w["functions"][0]["done"], w["errors"][0]["age"]
    ('m:f', 1, 1.0)
    """
    nodes: list[MeshNode] = []
    devices: list[dict[str, str | int]] = []
    stream: list[dict[str, object]] = []
    funcs: dict[str, FunctionRow] = {}
    jobs: list[dict[str, object]] = []
    errors: list[dict[str, object]] = []
    for v in views:
        if not isinstance(v, Mapping):
            continue
        name = str(v.get("name", ""))
        nodes.append({"id": str(v.get("node", "")), "name": name, "workers": _int(v.get("workers"))})
        gpus = v.get("gpus")
        if isinstance(gpus, Mapping):
            for dev, g in list(gpus.items())[:64]:
                if isinstance(g, Mapping):
                    devices.append({"node": name, "device": str(dev),
                                    **{k: _int(g.get(k)) for k in _GPU_FIELDS}})  # fmt: skip
        raw = v.get("names")
        names: Mapping[str, object] = raw if isinstance(raw, Mapping) else {}
        for r in mappings(v.get("timeline")):
            if isinstance(r.get("queued"), (int, float)):
                stream.append({**r, "node_name": name, "function": names.get(str(r.get("task"))) or None})
        for f in mappings(v.get("functions")):
            key = str(f.get("function", ""))
            acc = funcs.setdefault(key, _function_row(key))
            for k in _COUNTS:
                acc[k] += _int(f.get(k))  # type: ignore[literal-required]  # one of FunctionRow's counts
        jobs.extend({**j, "owner": name} for j in mappings(v.get("jobs")))
        errors.extend({**e, "owner": name, "age": max(0.0, now - _num(e.get("at")))} for e in mappings(v.get("errors")))
    stream.sort(key=lambda r: _num(r.get("queued")))
    out = list(funcs.values())
    out.sort(key=lambda f: (f["pending"] == 0, -f["total"], f["function"]))
    errors.sort(key=lambda e: _num(e["age"]))
    return {
        "nodes": nodes,
        "gpus": devices,
        "stream": stream[-stream_limit:],
        "functions": out[:limit],
        "jobs": jobs[: limit * 4],
        "errors": errors[:max_errors],
    }
