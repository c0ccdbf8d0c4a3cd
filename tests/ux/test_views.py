"""The dashboard's pure views: the mesh merged from one node's status, work per function, the duration histogram."""

from __future__ import annotations

import doctest
import json
from dataclasses import dataclass, field
from typing import Any

from meshaios.dashboard import views
from meshaios.dashboard.views import BUCKETS, duration_histogram, fn_label, mesh_view, mesh_work, work_view
from meshaios.tasks.functions import encode_function
from meshaios.tasks.owner import fn_key
from meshaios.wire.values import dumps
from tests.ux import funcs

NODES = {
    "a": {"name": "a", "finished": 10, "failed": 1, "pending": 4, "running": 2, "queued": 3, "workers": 4,
          "tasks_per_s": 1.5, "mem": 1000},
    "b": {"name": "b", "finished": 20, "failed": 0, "pending": 0, "running": 4, "queued": 0, "workers": 4,
          "tasks_per_s": 2.5, "mem": 2000},
    "c": {"name": "c", "finished": 5, "failed": 2, "pending": 1, "running": 0, "queued": 9, "workers": 2,
          "tasks_per_s": 0.0, "mem": 0},
}  # fmt: skip


def status_seen_by(me: str, dead: str | None = None) -> dict[str, Any]:
    """What node ``me`` reports: its own figures, and the others' as gossiped (``Node.status`` field names)."""
    n = NODES[me]
    node = {k: v for k, v in n.items() if k != "mem"} | {"id": me, "store": {"bytes_in_memory": n["mem"]}}
    members = [
        {k: v for k, v in o.items() if k != "mem"}
        | {"id": other, "state": "dead" if other == dead else "alive", "store_bytes": o["mem"]}
        for other, o in NODES.items()
        if other != me
    ]
    return {"node": node, "members": members}


def test_every_node_shows_the_same_mesh_totals() -> None:
    views = [mesh_view(status_seen_by(me)) for me in NODES]
    totals = [v["totals"] for v in views]
    assert totals[0] == totals[1] == totals[2]
    t = totals[0]
    assert (t["finished"], t["failed"], t["pending"], t["running"], t["queued"], t["workers"]) == (35, 3, 5, 6, 12, 10)
    assert (t["memory"], t["tasks_per_s"], t["alive"], t["nodes"]) == (3000, 4.0, 3, 3)
    for me, v in zip(NODES, views, strict=True):
        assert v["nodes"][0]["id"] == me
        assert v["nodes"][0]["self"] is True
        assert {r["id"]: r["memory"] for r in v["nodes"]} == {k: n["mem"] for k, n in NODES.items()}
    # a dead member keeps its row but leaves the totals
    v = mesh_view(status_seen_by("a", dead="c"))
    assert [r["state"] for r in v["nodes"]].count("dead") == 1
    assert (v["totals"]["finished"], v["totals"]["alive"], v["totals"]["nodes"]) == (30, 2, 3)
    # junk in, zeros out: never an exception
    junk = mesh_view({"node": {"finished": "x", "store": 3}, "members": [None, {"finished": float("nan")}]})
    assert junk["totals"]["finished"] == 0
    assert mesh_view({})["totals"]["nodes"] == 1


def test_function_labels_are_read_without_importing_or_unpickling() -> None:
    assert fn_label(encode_function(funcs.square, allow_pickle=False)) == "tests.ux.funcs:square"
    assert fn_label(dumps({"kernel": "meshaios.matmul"}, allow_pickle=False)[0]) == "meshaios.matmul"
    pickled = encode_function(lambda x: x, allow_pickle=True)
    assert fn_label(pickled).startswith("pickled:")
    assert fn_label(pickled) == fn_label(pickled)
    assert fn_label(None).startswith("pickled:")


@dataclass
class FakeTask:
    """The fields of ``OwnedTask`` the views read."""

    id: str
    fn: Any
    state: str
    submitted_at: float
    client: bytes = b"c1"
    key: str = ""
    error: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.key = self.key or fn_key(self.fn)  # as the owner does on submit


def test_work_view_progress_per_function_and_recent_errors() -> None:
    sq = encode_function(funcs.square, allow_pickle=False)
    boom = encode_function(funcs.boom, allow_pickle=False)
    tasks: dict[str, FakeTask] = {}
    for i in range(10):
        tasks[f"s{i}"] = FakeTask(f"s{i}", sq, "done" if i < 7 else "ready", float(i), key="k-sq")
    for i in range(3):
        err = {"type": "ValueError", "msg": f"bad {i}", "tb": "Traceback...\nValueError: bad"}
        tasks[f"b{i}"] = FakeTask(f"b{i}", boom, "failed", 100.0 + i, client=b"c2", error=err)
    w = work_view(tasks, now=200.0, name_tasks=["s1", "b2", "unknown"], max_errors=2)
    assert [f["function"] for f in w["functions"]] == ["tests.ux.funcs:square", "tests.ux.funcs:boom"]
    sqf, bf = w["functions"]
    assert (sqf["total"], sqf["done"], sqf["ready"], sqf["pending"]) == (10, 7, 3, 3)
    assert (bf["total"], bf["failed"], bf["pending"]) == (3, 3, 0)
    assert [e["msg"] for e in w["errors"]] == ["bad 2", "bad 1"]  # the most recent first, at most max_errors
    assert w["errors"][0]["function"] == "tests.ux.funcs:boom"
    assert w["errors"][0]["age"] == 98.0
    assert w["task_functions"] == {"s1": "tests.ux.funcs:square", "b2": "tests.ux.funcs:boom"}
    assert sorted(j["total"] for j in w["jobs"]) == [3, 10]
    assert w["partial"] is False
    capped = work_view(tasks, now=200.0, max_scan=5)
    assert capped["partial"] is True
    assert sum(f["total"] for f in capped["functions"]) == 5
    assert all(j["partial"] for j in capped["jobs"])
    json.dumps(w)  # what the server sends


def test_duration_histogram_per_function_then_device() -> None:
    recs = [
        {"task": "t1", "run_s": 0.0005, "device": "cpu", "outcome": "ok"},
        {"task": "t2", "run_s": 0.02, "device": "cpu", "outcome": "ok"},
        {"task": "t3", "run_s": 2.0, "device": "cuda:0", "outcome": "error"},
        {"task": "t4", "run_s": 500.0, "device": "cpu", "outcome": "ok"},
        {"task": "t5", "run_s": 0.0, "device": "cpu", "outcome": "moved"},  # ran elsewhere: not counted
        {"task": "t6", "run_s": 0.0, "device": "cpu", "outcome": "cancelled"},
    ]
    h = duration_histogram(recs, {"t1": "m:f", "t2": "m:f"})
    assert h["buckets"] == list(BUCKETS)
    by = {s["name"]: s for s in h["series"]}
    assert set(by) == {"m:f", "other@cuda:0", "other@cpu"}
    assert by["m:f"]["counts"][0] == 1
    assert by["m:f"]["counts"][BUCKETS.index(0.03)] == 1
    assert by["other@cuda:0"]["counts"][BUCKETS.index(3.0)] == 1
    assert by["other@cpu"]["counts"][-1] == 1  # over the last bound
    assert by["m:f"]["n"] == 2
    assert round(by["m:f"]["sum"], 4) == 0.0205
    many = [{"task": str(i), "run_s": 0.1, "device": "cpu", "outcome": "ok"} for i in range(30)]
    h = duration_histogram(many, {str(i): f"f{i % 10}" for i in range(30)}, limit=4)
    assert len(h["series"]) == 4
    assert h["series"][-1]["name"] == "(others)"
    assert sum(s["n"] for s in h["series"]) == 30


def _view(node: str, tasks: list[tuple[str, float, str]], functions: list[dict[str, Any]],
          errors: list[dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
    """A ``Node.peer_view``: (task id, queued at, owner) records, the functions its owner names."""
    return {
        "node": node, "name": "node-" + node, "workers": 2,
        "timeline": [{"task": t, "queued": q, "owner": o, "node": node} for t, q, o in tasks],
        "names": {t: "m:f" for t, _, o in tasks if o == node}, "functions": functions, "jobs": [], "errors": errors,
    }  # fmt: skip


def test_mesh_work_merges_every_nodes_stream_progress_and_errors() -> None:
    a = _view("a", [("t1", 5.0, "a"), ("t2", 1.0, "a")], [{"function": "m:f", "total": 3, "done": 2, "pending": 1}],
              [{"at": 90.0, "task": "t9", "msg": "old"}, {"at": 99.0, "task": "t8", "msg": "new"}])  # fmt: skip
    b = _view("b", [("t3", 3.0, "a")], [{"function": "m:f", "total": 2, "done": 2}, {"function": "m:g", "total": 1}],
              [{"at": 95.0, "task": "t7", "msg": "middle"}])  # fmt: skip
    w = mesh_work([a, b, "not a view", {"timeline": [{"task": "x"}]}], now=100.0)  # type: ignore[list-item]
    assert [r["task"] for r in w["stream"]] == ["t2", "t3", "t1"]  # oldest first, over every node
    assert [r["node_name"] for r in w["stream"]] == ["node-a", "node-b", "node-a"]
    assert w["stream"][1]["function"] is None  # t3 is a's: b could not name it (Node.mesh_views asks a)
    fns = {f["function"]: f for f in w["functions"]}
    assert (fns["m:f"]["total"], fns["m:f"]["done"], fns["m:f"]["pending"]) == (5, 4, 1)
    assert [f["function"] for f in w["functions"]] == ["m:f", "m:g"]  # unfinished first
    assert [e["msg"] for e in w["errors"]] == ["new", "middle", "old"]
    assert [e["age"] for e in w["errors"]] == [1.0, 5.0, 10.0]
    assert [e["owner"] for e in w["errors"]] == ["node-a", "node-b", "node-a"]
    assert [n["name"] for n in w["nodes"]] == ["node-a", "node-b", ""]
    assert w["gpus"] == []
    b["gpus"] = {"gpu0": {"resident_bytes": 5, "limit": 10, "h2d": 2, "busy": 1}, "junk": "x"}
    (g,) = mesh_work([a, b], now=100.0)["gpus"]
    assert (g["node"], g["device"], g["resident_bytes"], g["limit"], g["h2d"], g["d2h"], g["busy"]) == (
        "node-b", "gpu0", 5, 10, 2, 0, 1)
    assert len(mesh_work([a] * 50, now=100.0, stream_limit=7, max_errors=3)["errors"]) == 3
    assert len(mesh_work([a] * 50, now=100.0, stream_limit=7)["stream"]) == 7


def test_the_views_examples_hold() -> None:
    assert doctest.testmod(views).failed == 0
