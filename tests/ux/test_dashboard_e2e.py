"""End to end in headless Chromium (Debian's ``chromium`` package): the dashboard of a running 3-node mesh.

The page is the node's own dashboard when the node serves one (its node file names the URL); otherwise
``serve_http`` runs in this process over a real node's status, asked through a client: the same mesh's data.

Set ``MESHAIOS_UPDATE_SCREENSHOTS=1`` to write the screenshot the guide shows (docs/images/dashboard.png).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from meshaios.client import Client
from meshaios.errors import TaskError
from meshaios.testing.localmesh import LocalMesh, wait_for
from tests.ux import funcs
from tests.ux.conftest import ServerThread, mesh_status_source

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not installed (Debian: apt-get install -y chromium)"
)
DOCS_IMAGE = Path(__file__).resolve().parents[2] / "docs" / "images" / "dashboard.png"
DOCS_PANELS = Path(__file__).resolve().parents[2] / "docs" / "images" / "dashboard_panels.png"


def chromium(url: str, profile: Path, *args: str, budget_ms: int = 3000) -> str:
    assert CHROMIUM is not None
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
        f"--user-data-dir={profile}", "--window-size=1280,800", f"--virtual-time-budget={budget_ms}", *args, url,
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "DBUS_SESSION_BUS_ADDRESS"}
    for attempt in (1, 2):  # a browser that hangs at start-up (a busy machine) gets one more chance
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
        )
        try:
            stdout, stderr = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: the renderer and zygote go too
            proc.communicate()
            if attempt == 2:
                raise
            continue
        assert proc.returncode == 0, stderr[-2000:]
        return stdout
    raise AssertionError("unreachable")


class Dom(HTMLParser):
    """What the tests read from a dumped page: elements by id, node rows and job rows with their data- attributes."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.by_id: dict[str, dict[str, Any]] = {}
        self.rows: list[dict[str, Any]] = []
        self.jobs: list[dict[str, Any]] = []
        self.functions: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.body: dict[str, str] = {}
        self.failures: list[str] = []
        self.lanes: list[dict[str, Any]] = []  # the task stream's node labels (one per node with recent tasks)
        self.runs: list[dict[str, str]] = []  # the task stream's rectangles, with the node each ran on
        self.gpus: list[dict[str, Any]] = []  # the GPUs table's rows
        self.tags: list[str] = []
        self._open: list[dict[str, Any]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append(tag)
        el: dict[str, Any] = {"tag": tag, "attrs": a, "text": ""}
        if tag == "body":
            self.body = a
        if "id" in a:
            self.by_id[a["id"]] = el
        if tag == "tr" and "node" in a.get("class", "").split():
            self.rows.append(el)
        if tag == "tr" and "job" in a.get("class", "").split():
            self.jobs.append(el)
        if tag == "tr" and "fn" in a.get("class", "").split():
            self.functions.append(el)
        if tag == "li" and "err" in a.get("class", "").split():
            self.errors.append(el)
        if tag == "li" and self._open and self._open[-1]["attrs"].get("id") == "failures":
            self.failures.append("")
        if tag == "div" and self._open and self._open[-1]["attrs"].get("id") == "stream-labels":
            self.lanes.append(el)
        if tag == "tr" and "gpu" in a.get("class", "").split():
            self.gpus.append(el)
        if tag == "rect" and "data-node" in a:
            self.runs.append(a)
        if tag not in ("br", "meta", "link", "img", "input", "line", "polygon", "polyline"):
            self._open.append(el)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i]["tag"] == tag:
                del self._open[i:]
                break

    def handle_data(self, data: str) -> None:
        for el in self._open:
            el["text"] += data
        if any(e["attrs"].get("id") == "failures" for e in self._open) and self.failures:
            self.failures[-1] += data

    def text(self, id_: str) -> str:
        return str(self.by_id[id_]["text"]).strip()

    def number(self, id_: str) -> int:
        return int(self.text(id_).replace(",", ""))


@contextlib.contextmanager
def dashboard_of_node0(mesh: LocalMesh, client: Client) -> Iterator[str]:
    node = mesh.by_index(0)
    for f in (mesh.state / node.name / "nodes").glob("*.json"):
        with contextlib.suppress(OSError, ValueError):
            info = json.loads(f.read_text())
            if info.get("pid") == node.pid and info.get("http"):
                yield str(info["http"])  # the node serves its own dashboard
                return
    with ServerThread(mesh_status_source(client)) as server:
        yield server.url


def node_dashboards(mesh: LocalMesh, nodes: int = 3) -> list[str]:
    """Each node's own dashboard URL, from its node file."""
    urls = []
    for i in range(nodes):
        node = mesh.by_index(i)
        for f in (mesh.state / node.name / "nodes").glob("*.json"):
            with contextlib.suppress(OSError, ValueError):
                info = json.loads(f.read_text())
                if info.get("pid") == node.pid and info.get("http"):
                    urls.append(str(info["http"]))
    return urls


def api_status(url: str) -> dict[str, Any]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy
    with opener.open(url + "/api/status", timeout=10) as r:
        doc: dict[str, Any] = json.loads(r.read())
        return doc


def _gated_total(doc: dict[str, Any]) -> int:
    fns = doc.get("work", {}).get("functions") or []
    return sum(int(f.get("total", 0)) for f in fns if f.get("function") == "tests.ux.funcs:gated_square")


def test_dashboard_shows_three_nodes_and_a_mixed_job_advancing(
    ux_mesh: LocalMesh, client: Client, tmp_path: Path
) -> None:
    """A mixed job (a long map, results kept on the nodes, failures): the page shows every node with its memory,
    progress per function, the errors with their tracebacks and the task stream, and advances; the screenshot is
    the one the guide shows."""
    gate = tmp_path / "gate"
    shot = tmp_path / "dashboard.png"
    n = 600
    with dashboard_of_node0(ux_mesh, client) as url:
        bigs = client.map(funcs.big, [200_000] * 6)  # 1.6 MB each: kept on the node that made it
        booms = [client.submit(funcs.boom, f"bad input {i}") for i in range(2)]
        for f in booms:
            with pytest.raises(TaskError, match="ValueError: bad input"):
                f.result(timeout=60)
        client.gather(bigs, timeout=60)
        # up to 50 s on 6 workers, however slow the browser: the gate ends it as soon as the checks are done
        futs = client.map(funcs.gated_square, range(n), [0.5] * n, [str(gate)] * n)
        try:
            # the other nodes' memory reaches this page by gossip (a probe period or two): wait for it first
            wait_for(lambda: sum(r["memory"] for r in api_status(url)["mesh"]["nodes"]) >= 6 * 1_600_000, 15,
                     interval=0.1, what="the six results' memory gossiped to node 0")  # fmt: skip
            # the client spreads its tasks over the three owners: the page sums every owner's progress once each
            # has answered a peek (a member slower than PEEK_TIMEOUT is shown by its last view after that)
            wait_for(lambda: _gated_total(api_status(url)) == n, 15, interval=0.1, what="every owner's share")
            first = Dom(chromium(url + "/", tmp_path / "p1", "--dump-dom"))
            assert first.body.get("data-ready") == "1", first.text("error") if "error" in first.by_id else first.body
            assert [r["attrs"]["data-state"] for r in first.rows] == ["alive"] * 3
            assert sorted(r["attrs"]["data-name"] for r in first.rows) == ["node0", "node1", "node2"]
            assert sum(int(r["attrs"]["data-memory"]) for r in first.rows) >= 6 * 1_600_000  # every node's memory
            assert first.text("alive-count") == "3"
            assert "CURVE" in first.text("security")
            work = first.by_id["work"]["attrs"]
            assert int(work["data-pending"]) > 0
            assert int(work["data-total"]) >= int(work["data-pending"])
            assert "tasks finished" in first.text("work")
            fns = {f["attrs"]["data-name"]: f["attrs"] for f in first.functions}
            gated = fns["tests.ux.funcs:gated_square"]
            assert int(gated["data-total"]) == n
            assert int(gated["data-pending"]) > 0
            assert fns["tests.ux.funcs:boom"]["data-failed"] == "2"
            assert fns["tests.ux.funcs:big"]["data-done"] == "6"
            # the mesh's errors, newest first: other tests of the session may have left older ones
            bad_input = [e for e in first.errors if "ValueError: bad input" in e["text"]]
            assert len(bad_input) == 2
            assert all("Traceback" in e["text"] for e in bad_input)

            chromium(url + "/", tmp_path / "p3", f"--screenshot={shot}", "--window-size=1280,1380", budget_ms=2000)
            second = Dom(chromium(url + "/", tmp_path / "p2", "--dump-dom"))
            assert second.number("c-done") > first.number("c-done"), "the job's progress did not advance"
            assert int(second.by_id["work"]["attrs"]["data-finished"]) > int(work["data-finished"])
        finally:
            gate.touch()  # the rest of the job finishes at once, whatever happened above
        assert client.gather(futs, timeout=60) == [x * x for x in range(n)]

    # once the mesh is quiet, every node's page shows the same totals (members' figures arrive by gossip)
    urls = node_dashboards(ux_mesh)
    assert len(urls) == 3

    def same_totals() -> bool:
        totals = [api_status(u)["mesh"]["totals"] for u in urls]
        keys = ("finished", "failed", "pending", "workers", "alive")
        return all(t[k] == totals[0][k] for t in totals for k in keys) and totals[0]["pending"] == 0

    wait_for(same_totals, 30, interval=0.2, what="the same mesh totals on every node's page")

    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(png[16:20], "big") == 1280
    assert int.from_bytes(png[20:24], "big") == 1380
    if os.environ.get("MESHAIOS_UPDATE_SCREENSHOTS"):
        DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        DOCS_IMAGE.write_bytes(png)


def test_any_nodes_page_shows_the_whole_mesh_and_errors_that_outlive_their_futures(
    ux_mesh: LocalMesh, client: Client, tmp_path: Path
) -> None:
    """Node 2's page, while node 0 owns a job whose tasks run on all three nodes: the task stream has a band of
    lanes per node with every node's runs named by function, the per-function progress counts node 0's tasks,
    and node 0's failures are listed with their tracebacks -- still, after their client has closed."""
    urls = node_dashboards(ux_mesh)
    assert len(urls) == 3
    n = 60
    with ux_mesh.client(0, spread=1) as c:  # a client of its own: node 0 owns its tasks
        booms = [c.submit(funcs.boom, f"kept error {i}") for i in range(2)]
        for f in booms:
            with pytest.raises(TaskError, match="ValueError: kept error"):
                f.result(timeout=60)
        futs = c.map(funcs.gated_square, range(n), [0.05] * n, [str(tmp_path / "never")] * n)
        assert c.gather(futs, timeout=120) == [x * x for x in range(n)]
        ran_on = {f.node for f in futs}
        assert len(ran_on) >= 2, "the job did not spread over the mesh"

        def streamed() -> Any:
            work = api_status(urls[2]).get("work") or {}
            named = {r["node"] for r in work.get("stream", []) if r.get("function") == "tests.ux.funcs:gated_square"}
            return work if named >= ran_on else None

        work = wait_for(streamed, 30, interval=0.2, what="every node's runs of the job in node 2's stream")
        assert next(v["name"] for v in work["nodes"]) == "node2"  # the serving node first
        assert {v["name"] for v in work["nodes"]} == {"node0", "node1", "node2"}
        fn = {f["function"]: f for f in work["functions"]}["tests.ux.funcs:gated_square"]
        assert fn["total"] >= n
        page = Dom(chromium(urls[2] + "/", tmp_path / "p", "--dump-dom"))
        assert page.body.get("data-ready") == "1"
        names = {lane["text"].strip() for lane in page.lanes}
        assert {ux_mesh.by_index(i).name for i in range(3) if ux_mesh.by_index(i).node_id in ran_on} <= names
        assert {r["data-node"] for r in page.runs} >= ran_on
    # the client is gone and its owner has forgotten its tasks: the failures are still on every node's page
    for url in urls:
        kept = [e for e in api_status(url)["work"]["errors"] if e["msg"].startswith("kept error")]
        assert sorted(e["msg"] for e in kept) == ["kept error 0", "kept error 1"], url
        assert all(e["function"] == "tests.ux.funcs:boom" and "Traceback" in e["tb"] for e in kept)
        assert {e["owner"] for e in kept} == {"node0"}
    page = Dom(chromium(urls[1] + "/", tmp_path / "q", "--dump-dom"))
    assert sum("ValueError: kept error" in e["text"] for e in page.errors) == 2


def test_a_node_without_a_gpu_shows_the_gpus_of_the_mesh(tmp_path: Path) -> None:
    """Node 1 has a (fake) GPU and runs a chain of GPU kernel tasks that keeps its intermediates on the device;
    node 0's page, which has no GPU, lists node 1's: what is kept there and the copies each way."""
    from meshaios.devices import default_registry

    k = default_registry()
    gpu = {"gpu": 1}
    with LocalMesh(2, per_node_args={1: ["--fake-gpu", "speed=4,memory=1GiB"]}) as mesh, mesh.client(0) as c:
        wait_for(lambda: len(c.status()["members"]) == 1, 15, what="two nodes")
        x = np.ones((256, 256), np.float32)
        h = c.submit(k.get("meshaios.matmul"), x, x, resources=gpu)
        kept = c.submit(k.get("meshaios.gelu"), h, resources=gpu)  # held: it stays on the device
        assert kept.exception(timeout=120) is None
        url = node_dashboards(mesh, 2)[0]
        rows = wait_for(lambda: api_status(url).get("work", {}).get("gpus"), 15, what="node 1's GPU on node 0's page")
        assert [(r["node"], r["device"]) for r in rows] == [("node1", "fakegpu:0")]
        assert rows[0]["resident_bytes"] >= 256 * 256 * 4
        assert rows[0]["h2d"] >= 1
        page = Dom(chromium(url + "/", tmp_path / "p", "--dump-dom"))
        assert [(g["attrs"]["data-node"], g["attrs"]["data-device"]) for g in page.gpus] == [("node1", "fakegpu:0")]
        assert int(page.gpus[0]["attrs"]["data-resident"]) >= 256 * 256 * 4
        assert "kept on the device" in page.text("sec-gpus")
        del h, kept


def test_dashboard_renders_jobs_failures_and_hostile_names(tmp_path: Path) -> None:
    """A crafted status: every panel the node may feed, and names and messages that are markup (they stay text)."""
    from meshaios.dashboard.jobs import JobRow
    from meshaios.dashboard.views import WorkView, work_view
    from meshaios.tasks.functions import encode_function
    from tests.ux.test_metrics import SAMPLE_STATUS
    from tests.ux.test_views import FakeTask

    hostile = '<img src=x onerror="document.body.dataset.pwned=1">'
    status = json.loads(json.dumps(SAMPLE_STATUS))
    status["members"][0]["name"] = hostile
    status["members"][0]["store_bytes"] = 3 << 20
    sq = encode_function(funcs.square, allow_pickle=False)
    boom = encode_function(funcs.boom, allow_pickle=False)
    tasks = {f"s{i}": FakeTask(f"s{i}", sq, "done" if i < 30 else "dispatched", float(i)) for i in range(40)}
    err = {"type": "ValueError", "msg": hostile, "tb": "Traceback (most recent call last):\n" + hostile}
    tasks["b0"] = FakeTask("b0", boom, "failed", 50.0, error=err)
    status["node"]["timeline"] = [
        {"task": f"s{i}", "attempt": 0, "queued": 100.0 + i * 0.1, "started": 100.05 + i * 0.1,
         "finished": 100.05 + i * 0.1 + 0.02 * (1 + i % 5), "run_s": 0.02 * (1 + i % 5), "device": "cpu",
         "outcome": "ok", "owner": "x", "node": "y", "bytes_in": 0, "fetch_s": 0.0, "wait_s": 0.05}
        for i in range(30)
    ]  # fmt: skip

    def work(ids: Any) -> WorkView:  # the crafted jobs below stand for the owner's
        return {**work_view(tasks, 60.0, name_tasks=ids), "jobs": jobs}

    jobs: list[JobRow] = [
        {
            "client": "c:7f3a9b2c11d0",
            "total": 40,
            "waiting": 0,
            "ready": 10,
            "dispatched": 6,
            "done": 22,
            "failed": 2,
            "pending": 16,
            "age": 12.5,
        },
        {
            "client": "c:0011aa22bb33",
            "total": 5,
            "waiting": 0,
            "ready": 0,
            "dispatched": 0,
            "done": 5,
            "failed": 0,
            "pending": 0,
            "age": 60.0,
        },
    ]
    with ServerThread(lambda: status, get_work=work) as server:
        dom = Dom(chromium(server.url + "/", tmp_path / "p", "--dump-dom"))
        if os.environ.get("MESHAIOS_UPDATE_SCREENSHOTS"):
            chromium(server.url + "/", tmp_path / "p2", f"--screenshot={DOCS_PANELS}", "--window-size=1280,1380")
    assert "data-pwned" not in str(dom.body)
    assert "img" not in dom.tags
    fns = {f["attrs"]["data-name"]: f["attrs"] for f in dom.functions}
    assert set(fns) == {"tests.ux.funcs:square", "tests.ux.funcs:boom"}
    sq_row = fns["tests.ux.funcs:square"]
    assert (sq_row["data-done"], sq_row["data-pending"], sq_row["data-total"]) == ("30", "10", "40")
    assert fns["tests.ux.funcs:boom"]["data-failed"] == "1"
    (error,) = dom.errors
    assert "ValueError" in error["text"]
    assert hostile in error["text"]  # shown as text, traceback included
    assert "Traceback (most recent call last)" in error["text"]
    assert dom.by_id["hist"]["attrs"]["data-tasks"] == "30"
    assert "square" in dom.text("hist-legend")
    memory = {r["attrs"]["data-name"]: int(r["attrs"]["data-memory"]) for r in dom.rows}
    assert memory[hostile] == 3 << 20
    assert memory["gpu-box"] == 4096
    names = [r["attrs"]["data-name"] for r in dom.rows]
    assert hostile in names
    assert len(names) == 4
    assert [r["attrs"]["data-state"] for r in dom.rows].count("dead") == 1
    assert [(j["attrs"]["data-done"], j["attrs"]["data-total"]) for j in dom.jobs] == [("24", "40"), ("5", "5")]
    failures = " | ".join(dom.failures)
    assert "tasks failed" in failures
    assert "members declared dead" in failures
    assert "wrong token" in failures
    # the cards show the mesh's totals: this node's 500 finished (3 failed); the members gossiped none
    assert dom.text("c-failed") == "3"
    assert dom.text("c-done") == "497"


def test_dashboard_with_a_token(tmp_path: Path) -> None:
    from meshaios.dashboard import dashboard_token
    from meshaios.security import new_token
    from tests.ux.test_metrics import SAMPLE_STATUS

    token = dashboard_token(new_token())
    with ServerThread(lambda: SAMPLE_STATUS, token=token, require_token=True) as server:
        refused = chromium(server.url + "/", tmp_path / "p1", "--dump-dom")
        assert "dashboard token" in refused
        assert "nodes" not in refused
        dom = Dom(chromium(f"{server.url}/?token={token}", tmp_path / "p2", "--dump-dom"))
    # the page passed the token on to its own requests
    assert dom.body.get("data-ready") == "1"
    assert len(dom.rows) == 4
    links = [el["attrs"].get("href", "") for el in dom.by_id.values() if el["tag"] == "a"]
    assert all(token in href for href in links)
