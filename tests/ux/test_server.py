"""The dashboard's HTTP server: routes, read-only, loopback and token rules, limits, and a real node's status."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from typing import Any

import pytest
import uvloop

from meshaios.dashboard import dashboard_token, jobs_view, serve_http, work_view
from meshaios.dashboard.server import HttpLimits, is_loopback_host
from meshaios.dashboard.views import FunctionRow, WorkView, mesh_view
from meshaios.errors import ConfigError
from meshaios.security import derive_keys, new_token
from meshaios.testing.inproc import InProcessMesh
from tests.ux import funcs
from tests.ux.test_metrics import SAMPLE_STATUS, parse_exposition


def run(fn: Callable[[], Awaitable[Any]]) -> Any:
    return uvloop.run(asyncio.wait_for(fn(), 60))


async def http(url: str, path: str = "/", *, method: str = "GET", headers: Mapping[str, str] | None = None,
               raw: bytes | None = None) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    """A plain HTTP/1.1 request on a fresh connection; the server closes it after the answer."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        if raw is None:
            lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}"]
            lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
            raw = ("\r\n".join(lines) + "\r\n\r\n").encode()
        writer.write(raw)
        await writer.drain()
        data = await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    hdrs = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return int(status_line.split()[1]), hdrs, body


@contextlib.asynccontextmanager
async def serving(get_status: Callable[[], Any], **kwargs: Any) -> AsyncIterator[str]:
    urls: list[str] = []
    ready = asyncio.Event()
    task = asyncio.create_task(serve_http(get_status, ready=ready, on_listen=urls.append, **kwargs))
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if task.done():
        task.result()  # raises what serve_http raised
    try:
        yield urls[0]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_status_metrics_and_page_routes() -> None:
    async def main() -> None:
        async with serving(lambda: SAMPLE_STATUS) as url:
            code, hdrs, body = await http(url, "/api/status")
            assert code == 200
            assert hdrs["content-type"] == "application/json"
            doc = json.loads(body)
            history = doc.pop("history")
            mesh = doc.pop("mesh")
            durations = doc.pop("durations")
            assert doc == SAMPLE_STATUS
            ((ago, finished, submitted, pending),) = history["samples"]  # sampled once as the server started
            assert ago <= 0
            assert (finished, submitted, pending) == (500, 508, 8)  # the mesh's totals: members gossip none here
            assert mesh["nodes"][0]["name"] == "gpu-box"
            assert mesh["totals"]["alive"] == 3
            assert durations["series"] == []
            assert "access-control-allow-origin" not in hdrs  # no page elsewhere may read it

            code, hdrs, body = await http(url, "/metrics")
            assert code == 200
            assert hdrs["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
            families = parse_exposition(body.decode())
            assert families["meshaios_owner_tasks_total"]["samples"][(("event", "done"),)] == 120

            code, hdrs, body = await http(url, "/")
            assert code == 200
            assert hdrs["content-type"].startswith("text/html")
            assert "script-src 'sha256-" in hdrs["content-security-policy"]
            assert b"api/status" in body
            assert b'<table id="nodes">' in body

            code, hdrs, body = await http(url, "/", method="HEAD")
            assert code == 200
            assert body == b""
            assert int(hdrs["content-length"]) > 1000

            assert (await http(url, "/nope"))[0] == 404
            code, hdrs, _ = await http(url, "/api/status", method="POST")
            assert code == 405
            assert hdrs["allow"] == "GET, HEAD"
            assert (await http(url, "/", method="DELETE"))[0] == 405

    run(main)


def test_loopback_server_refuses_foreign_host_names() -> None:
    """DNS rebinding: evil.example resolving to 127.0.0.1 must not let its page read the mesh's status."""

    async def main() -> None:
        async with serving(lambda: SAMPLE_STATUS) as url:
            _host, port = url.removeprefix("http://").rsplit(":", 1)
            for name, want in [("evil.example", 403), ("localhost", 200), ("127.0.0.1", 200), ("[::1]", 200)]:
                raw = f"GET /api/status HTTP/1.1\r\nHost: {name}:{port}\r\n\r\n".encode()
                assert (await http(url, raw=raw))[0] == want, name

    run(main)
    assert is_loopback_host("127.0.0.2")
    assert is_loopback_host("::1")
    assert is_loopback_host("LOCALHOST")
    assert not is_loopback_host("0.0.0.0")
    assert not is_loopback_host("10.0.0.1")
    assert not is_loopback_host("")


def test_token_required_off_loopback_and_compared_exactly() -> None:
    mesh_token = new_token()
    token = dashboard_token(mesh_token)
    assert token != mesh_token
    assert len(token) == 40
    assert dashboard_token(mesh_token) == token
    assert dashboard_token(derive_keys(mesh_token)) == token  # what a node computes from its keys
    assert dashboard_token(new_token()) != token

    async def main() -> None:
        with pytest.raises(ConfigError, match="without a token"):
            await serve_http(lambda: SAMPLE_STATUS, "0.0.0.0", 0, None)  # refused before anything is bound
        async with serving(lambda: SAMPLE_STATUS, token=token, require_token=True) as url:
            code, hdrs, body = await http(url, "/api/status")
            assert code == 401
            assert hdrs["www-authenticate"].startswith("Bearer")
            assert b"token" in body
            assert (await http(url, "/metrics", headers={"Authorization": "Bearer wrong"}))[0] == 401
            assert (await http(url, "/metrics", headers={"Authorization": f"Bearer {token}x"}))[0] == 401
            assert (await http(url, "/metrics", headers={"Authorization": f"Bearer {token}"}))[0] == 200
            assert (await http(url, f"/api/status?token={token}"))[0] == 200
            assert (await http(url, f"/?token={token}"))[0] == 200
            assert (await http(url, "/?token="))[0] == 401
            # token mode accepts any Host: the token, not the name, is what protects it
            raw = f"GET /api/status HTTP/1.1\r\nHost: mesh.lan\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
            assert (await http(url, raw=raw))[0] == 200

    run(main)


def test_status_source_errors_bad_requests_and_limits() -> None:
    broken = {"now": True}

    def flaky() -> Mapping[str, Any]:
        if broken["now"]:
            raise RuntimeError("node not ready")
        return SAMPLE_STATUS

    async def slow() -> Mapping[str, Any]:
        await asyncio.sleep(10)
        return SAMPLE_STATUS

    async def main() -> None:
        limits = HttpLimits(request_timeout=0.3, status_timeout=0.2, max_request_bytes=1024)
        async with serving(flaky, limits=limits) as url:
            code, _, body = await http(url, "/api/status")
            assert code == 503
            assert "node not ready" in json.loads(body)["error"]
            broken["now"] = False
            assert (await http(url, "/api/status"))[0] == 200
            assert (await http(url, raw=b"GARBAGE\r\n\r\n"))[0] == 400
            assert (await http(url, raw=b"GET / SPDY/3\r\n\r\n"))[0] == 400  # not an HTTP request line
            assert (await http(url, raw=b"GET / HTTP/2.0\r\nHost: localhost\r\n\r\n"))[0] == 505
            big = b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * 4000 + b"\r\n\r\n"
            assert (await http(url, raw=big))[0] == 431
            # a client that never finishes its request is cut off
            host, port = url.removeprefix("http://").rsplit(":", 1)
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"GET / HTTP/1.1\r\n")
            async with asyncio.timeout(3):
                assert await reader.read() == b""
            writer.close()
        async with serving(slow, limits=limits) as url:
            assert (await http(url, "/metrics"))[0] == 503

    run(main)


def test_cancelling_the_server_closes_its_port_and_its_connections() -> None:
    async def main() -> None:
        async with serving(lambda: SAMPLE_STATUS) as url:
            host, port = url.removeprefix("http://").rsplit(":", 1)
            reader, writer = await asyncio.open_connection(host, int(port))  # idle, mid-request
            writer.write(b"GET / HTTP/1.1\r\n")
            await writer.drain()
        async with asyncio.timeout(3):
            assert await reader.read() == b""  # its handler was cancelled with the server
        writer.close()
        with pytest.raises(OSError):
            await asyncio.open_connection(host, int(port))

    run(main)


def test_served_by_a_running_in_process_mesh_node() -> None:
    """``serve_http(node.status)`` in the node's own loop, as the node runs it; plus the work view of its owner."""

    async def main() -> None:
        async with InProcessMesh(3) as mesh:
            await mesh.wait_converged()
            node = mesh.nodes[0]
            c = await mesh.client(0, spread=1)  # node 0 owns the tasks: its work view shows them
            futs = c.map(funcs.square, range(40))
            assert await c.gather(futs) == [x * x for x in range(40)]
            bad = c.submit(funcs.boom, "kaput")  # held: a future dropped is released, and its owner forgets it
            with pytest.raises(Exception, match="kaput"):
                await bad

            jobs = jobs_view(node.owner.tasks.values(), node.clock.now())
            assert len(jobs) == 1
            job = jobs[0]
            assert (job["total"], job["done"], job["failed"], job["pending"]) == (41, 40, 1, 0)
            assert job["client"].startswith("c:")
            assert job["age"] >= 0
            capped = jobs_view(node.owner.tasks.values(), node.clock.now(), max_scan=10)
            assert capped[0]["total"] == 10
            assert capped[0]["partial"] is True

            def work(task_ids: Collection[str]) -> dict[str, Any]:
                return work_view(node.owner.tasks, node.clock.now(), name_tasks=task_ids)

            async with serving(node.status, get_work=work) as url:
                code, _, body = await http(url, "/api/status")
                st = json.loads(body)
                assert code == 200
                assert st["node"]["id"] == node.node_id
                assert sorted(m["state"] for m in st["members"]) == ["alive", "alive"]
                assert st["node"]["jobs"][0]["done"] == 40
                fns = {f["function"]: f for f in st["node"]["functions"]}
                assert set(fns) == {"tests.ux.funcs:square", "tests.ux.funcs:boom"}
                assert (fns["tests.ux.funcs:square"]["done"], fns["tests.ux.funcs:square"]["total"]) == (40, 40)
                assert (fns["tests.ux.funcs:boom"]["failed"], fns["tests.ux.funcs:boom"]["pending"]) == (1, 0)
                (err,) = st["node"]["errors"]
                assert (err["function"], err["type"], err["msg"]) == ("tests.ux.funcs:boom", "ValueError", "kaput")
                assert "raise ValueError(msg)" in err["tb"]
                assert st["mesh"]["nodes"][0]["id"] == node.node_id
                assert st["mesh"]["totals"]["nodes"] == 3
                # the tasks node 0 ran are in its histogram, named by function: it owns them all
                ran_here = [r for r in st["node"]["timeline"] if r["outcome"] in ("ok", "error")]
                series = st["durations"]["series"]
                assert sum(s["n"] for s in series) == len(ran_here)
                assert {s["name"] for s in series} <= set(fns)
                for s in series:
                    assert sum(s["counts"]) == s["n"]

                _, _, body = await http(url, "/metrics")
                fams = parse_exposition(body.decode())
                assert fams["meshaios_members"]["samples"][(("state", "alive"),)] == 3
                owner = fams["meshaios_owner_tasks_total"]["samples"]
                assert owner[(("event", "submitted"),)] == 41
                assert owner[(("event", "done"),)] == 40
                assert owner[(("event", "failed"),)] == 1
                assert len(fams["meshaios_queue_length"]["samples"]) == 3
                assert "meshaios_jobs" not in fams  # jobs are looked at only for a page, not per scrape
                info = fams["meshaios_node_info"]["samples"]
                ((labels, one),) = info.items()
                assert dict(labels)["node"] == node.node_id
                assert one == 1
            assert bad.done()  # (and held until here)

    run(main)


def test_history_samples_the_mesh_counters_over_time() -> None:
    counter = {"done": 0}
    full: list[asyncio.Event] = []  # made in the test's loop

    def rising() -> Mapping[str, Any]:
        counter["done"] += 5
        if counter["done"] >= 5 * 12 and full:  # sampled 12 times: the 10-sample history is full
            full[0].set()
        member = {"id": "b", "state": "alive", "finished": 1000, "pending": 3}
        return {"node": {"finished": counter["done"], "pending": 4}, "members": [member]}

    async def main() -> None:
        limits = HttpLimits(history_interval=0.02, history_samples=10)
        full.append(asyncio.Event())
        async with serving(rising, limits=limits) as url:
            async with asyncio.timeout(20):  # however loaded the machine
                await full[0].wait()
            _, _, body = await http(url, "/api/status")
            samples = json.loads(body)["history"]["samples"]
            assert len(samples) == 10  # bounded
            agos = [s[0] for s in samples]
            assert agos == sorted(agos)
            assert agos[-1] <= 0
            finished = [s[1] for s in samples]
            assert finished == sorted(finished)
            assert finished[-1] > finished[0]
            assert {s[3] for s in samples} == {7}  # 4 owned here + 3 by the member
            assert {s[2] - s[1] for s in samples} == {7}
            assert finished[0] > 1000  # the member's 1000 finished count too
        async with serving(rising, limits=HttpLimits(history_interval=0)) as url:
            _, _, body = await http(url, "/api/status")
            assert "history" not in json.loads(body)

    run(main)


async def raw_exchange(url: str, parts: list[bytes]) -> bytes:
    """Send ``parts`` one write at a time (each drained), then read the answer until the server closes."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        for part in parts:
            writer.write(part)
            await writer.drain()
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def test_history_samples_the_counts_source_not_the_full_status() -> None:
    """With ``get_counts`` the history samples only it (a node's ``status_counts``): the full status, which builds
    the timeline's task records on the node's loop, is built only for a page that asks."""
    calls = {"status": 0, "counts": 0}
    sampled = asyncio.Event()

    def status() -> Mapping[str, Any]:
        calls["status"] += 1
        return {"node": {"finished": 0, "pending": 0}, "members": []}

    def counts() -> Mapping[str, Any]:
        calls["counts"] += 1
        if calls["counts"] >= 3:
            sampled.set()
        return {"node": {"finished": 10 * calls["counts"], "pending": 2}, "members": []}

    async def main() -> None:
        async with serving(status, get_counts=counts, limits=HttpLimits(history_interval=0.01)) as url:
            async with asyncio.timeout(20):
                await sampled.wait()
            assert calls["status"] == 0
            _, _, body = await http(url, "/api/status")
            assert calls["status"] == 1  # the page's own
            samples = json.loads(body)["history"]["samples"]
            assert samples[0][1] >= 10
            assert {s[3] for s in samples} == {2}

    run(main)


def test_a_nodes_status_counts_add_up_as_its_full_status() -> None:
    """``Node.status_counts`` (what the history samples) gives the same task totals as ``Node.status``, members
    included, on a real in-process mesh after some work."""

    async def main() -> None:
        async with InProcessMesh(2) as mesh:
            await mesh.wait_converged()
            c = await mesh.client(0)
            assert await c.gather(c.map(funcs.square, range(30))) == [x * x for x in range(30)]
            with pytest.raises(Exception, match="kaput"):
                await c.submit(funcs.boom, "kaput")
            for node in mesh.nodes:
                light, full = mesh_view(node.status_counts()), mesh_view(node.status())
                keys = ("finished", "failed", "pending", "running", "queued", "workers", "alive", "nodes")
                assert {k: light["totals"][k] for k in keys} == {k: full["totals"][k] for k in keys}
                assert [r["id"] for r in light["nodes"]] == [r["id"] for r in full["nodes"]]
            assert sum(n.exec.finished for n in mesh.nodes) >= 31

    run(main)


def test_malformed_and_oversized_requests_are_refused_by_h11() -> None:
    """Every request is parsed by h11 on a real socket: what is not HTTP/1.x gets a 4xx/5xx and the connection is
    closed; a head over ``max_request_bytes`` gets 431 however it arrives (one write, or dribbled)."""

    async def main() -> None:
        limits = HttpLimits(max_request_bytes=2048, request_timeout=30.0)  # 2,000 one-byte writes on a busy box
        async with serving(lambda: SAMPLE_STATUS, limits=limits) as url:
            bad = [
                b"GET / HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
                b"GET / HTTP/1.1\r\nHost: localhost\r\nHost: localhost\r\n\r\n",  # two Hosts
                b"GET / HTTP/1.1\r\nHost: localhost\r\nno colon here\r\n\r\n",  # not a header line
                b"GET / HTTP/1.1\r\nHost: localhost\r\nBad Name: x\r\n\r\n",  # space in a header name
                b"GET /\x00 HTTP/1.1\r\nHost: localhost\r\n\r\n",  # a control byte in the target
                b"GET  HTTP/1.1\r\nHost: localhost\r\n\r\n",  # no target
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # a TLS hello on the plain port
            ]
            for raw in bad:
                answer = await raw_exchange(url, [raw])
                assert status_of(answer) == 400, (raw, answer[:200])
                assert b"Connection: close" in answer
                assert answer.endswith(b"\n")  # a whole answer, body included
            # the head over the limit, in one write and dribbled in 100-byte pieces: 431 either way
            big = b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Pad: " + b"a" * 3000 + b"\r\n\r\n"
            assert status_of(await raw_exchange(url, [big])) == 431
            assert status_of(await raw_exchange(url, [big[i : i + 100] for i in range(0, len(big), 100)])) == 431
            many = b"GET / HTTP/1.1\r\nHost: localhost\r\n" + b"X-A: b\r\n" * 400 + b"\r\n"  # many small headers
            assert status_of(await raw_exchange(url, [many])) == 431
            # just under the limit, sent a byte at a time: answered
            ok = b"GET /api/status HTTP/1.1\r\nHost: localhost\r\nX-Pad: " + b"a" * 1900 + b"\r\n\r\n"
            assert len(ok) < 2048
            answer = await raw_exchange(url, [ok[i : i + 1] for i in range(len(ok))])
            assert status_of(answer) == 200
            assert json.loads(answer.partition(b"\r\n\r\n")[2])["node"]["name"] == "gpu-box"
            # HTTP/1.0 needs no Host; a GET with a body is answered; a pipelined second request is not
            assert status_of(await raw_exchange(url, [b"GET / HTTP/1.0\r\n\r\n"])) == 200
            with_body = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello"
            assert status_of(await raw_exchange(url, [with_body])) == 200
            two = b"GET /nope HTTP/1.1\r\nHost: localhost\r\n\r\nGET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
            answer = await raw_exchange(url, [two])
            assert status_of(answer) == 404
            assert answer.count(b"HTTP/1.1 ") == 1

    async def half_close() -> None:
        async with serving(lambda: SAMPLE_STATUS) as url:
            host, port = url.removeprefix("http://").rsplit(":", 1)
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"GET / HTTP/1.1\r\nHo")
            writer.write_eof()  # the client gives up mid-request: the server closes without an answer
            async with asyncio.timeout(5):
                assert await reader.read() == b""
            writer.close()
            assert (await http(url, "/api/status"))[0] == 200

    run(main)
    run(half_close)


def test_connection_limit_evicts_slow_clients_then_refuses() -> None:
    """Past ``max_connections``, a new connection takes the place of the oldest one still sending its request;
    when every connection is being answered, the newcomer gets 503."""
    arrived: asyncio.Queue[None] | None = None
    release: asyncio.Event | None = None

    async def held() -> Mapping[str, Any]:
        assert arrived is not None
        assert release is not None
        arrived.put_nowait(None)
        await release.wait()
        return SAMPLE_STATUS

    async def main() -> None:
        nonlocal arrived, release
        arrived, release = asyncio.Queue(), asyncio.Event()
        limits = HttpLimits(max_connections=2, history_interval=0, status_timeout=30)
        async with serving(held, limits=limits) as url:
            host, port = url.removeprefix("http://").rsplit(":", 1)
            slow = []
            for _ in range(2):  # two clients that never finish their request
                r, w = await asyncio.open_connection(host, int(port))
                w.write(b"GET / HTTP/1.1\r\n")
                await w.drain()
                slow.append((r, w))
            # a third one is answered: the oldest slow client is closed to make room
            assert (await http(url, "/"))[0] == 200
            async with asyncio.timeout(5):
                assert await slow[0][0].read() == b""
            # two requests being answered (their status is held), and the last slow client still reading
            answering = [asyncio.create_task(http(url, "/api/status")) for _ in range(2)]
            for _ in range(2):
                async with asyncio.timeout(5):
                    await arrived.get()
            async with asyncio.timeout(5):
                assert await slow[1][0].read() == b""  # evicted for the second of them
            answer = await raw_exchange(url, [])  # answered at once, before any request
            assert status_of(answer) == 503
            assert answer.endswith(b"too many connections\n")
            release.set()
            assert [(await t)[0] for t in answering] == [200, 200]
            for _, w in slow:
                w.close()

    run(main)


def test_the_work_view_is_reused_for_a_moment_across_requests() -> None:
    calls: list[int] = []

    def work(task_ids: Collection[str]) -> WorkView:
        calls.append(len(task_ids))
        row: FunctionRow = {"function": "m:f", "total": len(calls), "pending": 0, "waiting": 0, "ready": 0,
                            "dispatched": 0, "done": len(calls), "failed": 0}  # fmt: skip
        return {"jobs": [], "functions": [row], "errors": [], "task_functions": {}, "partial": False}

    async def main() -> None:
        async with serving(lambda: SAMPLE_STATUS, get_work=work, limits=HttpLimits(work_reuse=3600)) as url:
            docs = [json.loads((await http(url, "/api/status"))[2]) for _ in range(3)]
            assert calls == [0]  # one scan for three pages
            assert {d["node"]["functions"][0]["total"] for d in docs} == {1}
            assert (await http(url, "/metrics"))[0] == 200
            assert calls == [0]  # a scrape never asks for it
        calls.clear()
        async with serving(lambda: SAMPLE_STATUS, get_work=work, limits=HttpLimits(work_reuse=0)) as url:
            for _ in range(3):
                await http(url, "/api/status")
            assert calls == [0, 0, 0]

    run(main)
