"""The Prometheus exposition: checked by a strict parser of the text format, against a status dict of the shape
``Node.status()`` returns, an empty one, and a real mesh node's."""

from __future__ import annotations

import math
import re
from typing import Any

from meshaios.client import Client
from meshaios.dashboard import render_metrics
from meshaios.dashboard.metrics import metric_name
from meshaios.testing.localmesh import LocalMesh

SAMPLE_STATUS: dict[str, Any] = {
    "node": {
        "id": "1fccaac88ad070bbbb463f00",
        "name": "gpu-box",
        "addr": "tcp://10.0.0.5:5577",
        "state": "alive",
        "mesh": "2f69b08dd25765fb",
        "secure": True,
        "workers": 8,
        "queued": 11,
        "running": 8,
        "finished": 500,
        "failed": 3,
        "devices": "cpu:8 cuda:1",
        "uptime": 3600.5,
        "incarnation": 2,
        "owner": {
            "submitted": 130,
            "done": 120,
            "failed": 2,
            "replaced": 4,
            "duplicates": 1,
            "retried": 3,
            "recomputed": 0,
            "lost_inputs": 0,
        },
        "pending": 8,
        "counters": {
            "member_alive": 3,
            "member_suspect": 1,
            "member_dead": 1,
            "dispatched_remote": 60,
            "served_bytes": 1 << 20,
            "fetched_bytes": 2048,
            "bad_frames": 2,
        },
        "store": {
            "objects": 7,
            "bytes_in_memory": 4096,
            "bytes_spilled": 1 << 30,
            "spilled_objects": 2,
            "spill_events": 2,
            "unspill_events": 1,
            "spill_failures": 0,
            "peak_memory": 8192,
        },
        "memory_limit": 1 << 33,
        "fetch": {"pending": 1, "fetched_bytes": 2048},
        "transport": {"sent": 900, "received": 880, "dropped": 5, "auth_ok": 4, "auth_rejected": 1},
    },
    "members": [
        {
            "id": "255edf95",
            "name": "laptop",
            "addr": "tcp://10.0.0.6:5577",
            "state": "alive",
            "incarnation": 0,
            "workers": 4,
            "queued": 2,
            "devices": "cpu:4",
            "since": 120.0,
        },
        {
            "id": "22add990",
            "name": 'odd "name"\\',
            "addr": "tcp://10.0.0.7:5577",
            "state": "alive",
            "incarnation": 1,
            "workers": 2,
            "queued": 0,
            "devices": "cpu:2",
            "since": 30.0,
        },
        {
            "id": "9a9a9a9a",
            "name": "gone",
            "addr": "tcp://10.0.0.8:5577",
            "state": "dead",
            "incarnation": 0,
            "workers": 2,
            "queued": 5,
            "devices": "cpu:2",
            "since": 12.0,
        },
    ],
}

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
_SAMPLE = re.compile(rf"^({_NAME})(\{{(?:{_LABEL})(?:,{_LABEL})*\}})? (\S+)$")
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')


def _unescape(v: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), v)


def parse_exposition(text: str) -> dict[str, dict[str, Any]]:
    """A strict reader of the text format 0.0.4: HELP and TYPE once per family and before its samples, samples of a
    family contiguous, no (name, labels) twice, counters named ``*_total``, values that parse as floats; a
    histogram's samples are ``_bucket`` (with ``le``, cumulative, ending at ``+Inf``), ``_sum`` and ``_count`` (equal
    to its ``+Inf`` bucket), keyed with ``("__name__", sample name)`` first."""
    assert text.endswith("\n")
    families: dict[str, dict[str, Any]] = {}
    current = ""
    closed: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_ = line[7:].partition(" ")
            assert name not in families, f"family {name} twice"
            if current:
                closed.add(current)
            current = name
            families[name] = {"help": help_, "type": None, "samples": {}}
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert name == current
            assert families[name]["type"] is None
            assert not families[name]["samples"]
            assert kind in ("counter", "gauge", "histogram"), kind
            if kind == "counter":
                assert name.endswith("_total"), name
            families[name]["type"] = kind
        else:
            m = _SAMPLE.match(line)
            assert m, f"bad sample line {line!r}"
            name, labels, value = m.groups()
            key = tuple((k, _unescape(v)) for k, v in _LABEL_RE.findall(labels or ""))
            if current and families[current]["type"] == "histogram":
                suffix = name.removeprefix(current)
                assert suffix in ("_bucket", "_sum", "_count"), f"{name} in histogram {current}"
                assert (suffix == "_bucket") == any(k == "le" for k, _ in key), f"le on {name} only on buckets"
                key = (("__name__", name), *key)
                name = current
            assert key not in families[name]["samples"], f"duplicate sample {name}{labels}"
            v = float(value.replace("+Inf", "inf").replace("-Inf", "-inf"))
            assert not math.isnan(v) or value == "NaN"
            families[name]["samples"][key] = v
    for name, fam in families.items():
        if fam["type"] == "histogram":
            _check_histogram(name, fam["samples"])
    return families


def _check_histogram(name: str, samples: dict[tuple[tuple[str, str], ...], float]) -> None:
    """Each series (labels but ``le``): buckets cumulative in ``le`` order, ``+Inf`` last and equal to ``_count``."""
    series: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
    for key, v in samples.items():
        if key[0][1] == name + "_bucket":
            labels = tuple(kv for kv in key[1:] if kv[0] != "le")
            le = float(dict(key[1:])["le"].replace("+Inf", "inf"))
            series.setdefault(labels, []).append((le, v))
    for labels, buckets in series.items():
        counts = [c for _, c in buckets]
        assert [le for le, _ in buckets] == sorted(le for le, _ in buckets), "buckets out of order"
        assert counts == sorted(counts), f"{name}{labels}: buckets not cumulative"
        assert buckets[-1][0] == math.inf
        assert samples[(("__name__", name + "_count"), *labels)] == counts[-1]
        assert (("__name__", name + "_sum"), *labels) in samples


def test_every_family_from_a_full_status() -> None:
    fams = parse_exposition(render_metrics(SAMPLE_STATUS))
    s = {name: f["samples"] for name, f in fams.items()}
    info = s["meshaios_node_info"]
    ((labels, value),) = info.items()
    assert value == 1
    assert dict(labels) == {
        "node": "1fccaac88ad070bbbb463f00",
        "name": "gpu-box",
        "mesh": "2f69b08dd25765fb",
        "address": "tcp://10.0.0.5:5577",
        "secure": "true",
    }
    assert s["meshaios_uptime_seconds"][()] == 3600.5
    # tasks by state
    assert s["meshaios_executor_tasks"] == {(("state", "running"),): 8, (("state", "waiting"),): 3}
    assert s["meshaios_executor_finished_total"] == {(("result", "ok"),): 497, (("result", "error"),): 3}
    assert s["meshaios_owner_pending_tasks"][()] == 8
    assert s["meshaios_owner_tasks_total"][(("event", "replaced"),)] == 4
    assert len(s["meshaios_owner_tasks_total"]) == 8
    # queue lengths: itself and the live members, with names escaped as the format wants
    q = s["meshaios_queue_length"]
    assert q[(("member", "1fccaac88ad070bbbb463f00"), ("name", "gpu-box"))] == 11
    assert q[(("member", "22add990"), ("name", 'odd "name"\\'))] == 0
    assert len(q) == 3  # the dead member's stale queue is not reported
    # membership
    assert s["meshaios_members"] == {
        (("state", "alive"),): 3,
        (("state", "suspect"),): 0,
        (("state", "dead"),): 1,
        (("state", "left"),): 0,
    }
    assert s["meshaios_membership_events_total"][(("state", "dead"),)] == 1
    assert s["meshaios_membership_events_total"][(("state", "left"),)] == 0
    # bytes moved, steals (none reported yet: zero, present), transport, store
    assert s["meshaios_data_bytes_total"] == {(("direction", "served"),): 1 << 20, (("direction", "fetched"),): 2048}
    assert s["meshaios_steals_total"][()] == 0
    assert s["meshaios_transport_messages_total"][(("kind", "dropped"),)] == 5
    assert s["meshaios_transport_auth_total"][(("result", "rejected"),)] == 1
    assert s["meshaios_store_bytes"] == {(("where", "memory"),): 4096, (("where", "disk"),): 1 << 30}
    assert s["meshaios_store_memory_limit_bytes"][()] == 1 << 33
    assert s["meshaios_fetch_pending"][()] == 1
    # the remaining node counters, once each, not the ones exposed above
    ev = s["meshaios_node_events_total"]
    assert ev == {(("event", "bad_frames"),): 2, (("event", "dispatched_remote"),): 60}
    assert fams["meshaios_owner_tasks_total"]["type"] == "counter"
    assert fams["meshaios_queue_length"]["type"] == "gauge"


def test_optional_sections_appear_when_the_node_reports_them() -> None:
    status = {
        "node": {
            **SAMPLE_STATUS["node"],
            "steal": {"stolen": 17, "offered": 20, "refused": 3},
            "model": {"mae_seconds": 0.012, "samples": 4000},
            "jobs": [{"client": "c:1", "total": 3}],
            "gpu": {
                "fakegpu:0": {"h2d": 5, "h2d_bytes": 5 << 18, "d2h": 1, "d2h_bytes": 1024, "evictions": 2,
                              "evicted_bytes": 2 << 20, "oom_retries": 1, "oom_failures": 0,
                              "resident_bytes": 3 << 20, "resident_objects": 3, "limit": 4 << 20},
            },
            "transport": {
                **SAMPLE_STATUS["node"]["transport"],
                "bytes_sent": 123456,
                "zap_denied": 3,
                "extra": {"hwm_drops": 2},
            },
        },
        "members": [],
    }
    s = {n: f["samples"] for n, f in parse_exposition(render_metrics(status)).items()}
    assert s["meshaios_steals_total"][()] == 17
    assert s["meshaios_steal_events_total"] == {(("event", "offered"),): 20, (("event", "refused"),): 3}
    assert s["meshaios_model"][(("stat", "mae_seconds"),)] == 0.012
    assert s["meshaios_jobs"][()] == 1
    assert s["meshaios_transport_sent_bytes_total"][()] == 123456
    dev = ("device", "fakegpu:0")
    assert s["meshaios_gpu_copies_total"] == {(dev, ("direction", "h2d")): 5, (dev, ("direction", "d2h")): 1}
    assert s["meshaios_gpu_copied_bytes_total"][(dev, ("direction", "h2d"))] == 5 << 18
    assert s["meshaios_gpu_resident_bytes"][(dev,)] == 3 << 20
    assert s["meshaios_gpu_resident_limit_bytes"][(dev,)] == 4 << 20
    assert s["meshaios_gpu_evictions_total"][(dev,)] == 2
    assert s["meshaios_gpu_oom_total"] == {(dev, ("outcome", "retried")): 1, (dev, ("outcome", "failed")): 0}
    assert s["meshaios_transport_events_total"] == {(("kind", "hwm_drops"),): 2, (("kind", "zap_denied"),): 3}


def test_task_duration_histogram_from_the_timeline() -> None:
    from meshaios.timeline import RUN_BUCKETS, Timeline

    tl = Timeline("n")
    runs = [(0.0005, "cpu"), (0.002, "cpu"), (0.003, "cpu"), (0.5, "cpu"), (250.0, "cpu"), (0.04, "cuda:0")]
    for i, (run, dev) in enumerate(runs):
        tl.queued(f"t{i}", 0, "o", now=0.0)
        tl.finished(f"t{i}", 0, ok=i != 3, now=300.0, run_s=run, device=dev)
    tl.queued("moved", 0, "o", now=0.0)
    tl.moved("moved", 0, now=1.0)  # did not run here: not counted
    status = {"node": {"timeline_summary": tl.summary()}}
    fams = parse_exposition(render_metrics(status))
    fam = fams["meshaios_task_duration_seconds"]
    assert fam["type"] == "histogram"
    s = fam["samples"]

    def bucket(le: str, dev: str = "cpu") -> float:
        return s[(("__name__", "meshaios_task_duration_seconds_bucket"), ("device", dev), ("le", le))]

    assert bucket("0.001") == 1
    assert bucket("0.003") == 3  # le: 0.003 itself counts in the 0.003 bucket
    assert bucket("1") == 4
    assert bucket("100") == 4
    assert bucket("+Inf") == 5
    assert bucket("0.03", "cuda:0") == 0
    assert bucket("0.1", "cuda:0") == 1
    assert s[(("__name__", "meshaios_task_duration_seconds_count"), ("device", "cpu"))] == 5
    assert round(s[(("__name__", "meshaios_task_duration_seconds_sum"), ("device", "cpu"))], 4) == 250.5055
    assert len(RUN_BUCKETS) + 1 == len([k for k in s if k[0][1].endswith("_bucket") and k[1] == ("device", "cpu")])
    assert "meshaios_task_duration_seconds" not in parse_exposition(render_metrics({"node": {}}))


def test_an_empty_or_odd_status_still_renders() -> None:
    for status in ({}, {"node": None, "members": None}, {"node": {"uptime": float("nan"), "queued": "x"}}):
        fams = parse_exposition(render_metrics(status))
        assert fams["meshaios_members"]["samples"][(("state", "alive"),)] == 1
    text = render_metrics({"node": {"uptime": float("inf")}})
    assert "meshaios_uptime_seconds +Inf" in text
    assert metric_name("a-b.c") == "a_b_c"
    assert metric_name("9x") == "_9x"


def test_metrics_of_a_real_mesh_node(ux_mesh: LocalMesh, client: Client) -> None:
    """The node's owner counts its own tasks: a client owned by its entry node alone (``spread=1``; with ownership
    spread, how many of the 30 its entry node owns depends on when the other owners' connections came up)."""
    from tests.ux import funcs

    with ux_mesh.client(0, spread=1) as one:
        one.gather(one.map(funcs.square, range(30)))
    fams = parse_exposition(render_metrics(client.status()))
    s = {n: f["samples"] for n, f in fams.items()}
    assert s["meshaios_members"][(("state", "alive"),)] == 3
    assert s["meshaios_owner_tasks_total"][(("event", "done"),)] >= 30
    assert s["meshaios_transport_auth_total"][(("result", "ok"),)] >= 1  # CURVE handshakes were checked
    assert s["meshaios_membership_events_total"][(("state", "alive"),)] >= 2
    assert len(s["meshaios_queue_length"]) == 3
    # the attempts this node ran (none, if placement sent all 30 elsewhere), never more than its timeline saw
    runs = fams.get("meshaios_task_duration_seconds", {"samples": {}})["samples"]
    ran = sum(v for k, v in runs.items() if k[0][1] == "meshaios_task_duration_seconds_count")
    assert ran <= client.status()["node"]["timeline_summary"]["tasks"]


def test_byte_counters_count_what_they_name(client: Client) -> None:
    """A 4 MB value read back goes out through the transport, or (a client of the node's machine) through
    /dev/shm: the two sent-bytes counters together grow by at least that much, and the one it went by alone."""
    import numpy as np

    def sent_bytes() -> tuple[float, float]:
        s = parse_exposition(render_metrics(client.status()))
        shm_sent = s["meshaios_shm_bytes_total"]["samples"][(("direction", "sent"),)]
        return s["meshaios_transport_sent_bytes_total"]["samples"][()], shm_sent

    before = sent_bytes()
    arr = np.arange(1 << 19, dtype=np.float64)  # 4 MiB
    f = client.put(arr)
    assert float(np.asarray(client.gather([f])[0]).sum()) == float(arr.sum())
    after = sent_bytes()
    by_socket, by_shm = after[0] - before[0], after[1] - before[1]
    assert by_socket + by_shm >= arr.nbytes, (before, after)  # the value went back to the client, at least
    if client.stats["shm_received"]:
        assert by_shm >= arr.nbytes
    else:
        assert by_socket >= arr.nbytes
