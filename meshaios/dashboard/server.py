"""A small read-only HTTP/1.1 server on ``asyncio.start_server``: the dashboard, ``/api/status``, ``/metrics``.

Three GET routes do not justify a web framework: h11 (sans-I/O HTTP/1.1) parses each request and writes its
answer; this module bounds the request in size and time, routes it, and closes the connection. Every connection
handler belongs to ``serve_http``: cancelling it (the node's TaskGroup does, on stop) closes the listening socket
and cancels them.

Security:
- bound to loopback (the default) the server needs no credential, but answers only requests whose ``Host`` is a
  loopback name: a web page elsewhere cannot read it through DNS rebinding, and no CORS header is ever sent;
- bound anywhere else it needs a token, as ``Authorization: Bearer <token>`` or ``?token=<token>`` (compared in
  constant time), and refuses to start without one. Plain HTTP carries that token in clear text, so nodes pass
  ``dashboard_token(mesh_token)``, a key derived one way from the mesh token: seeing it on the wire grants the
  read-only dashboard and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import inspect
import ipaddress
import json
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import h11

from meshaios.dashboard.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from meshaios.dashboard.metrics import render_metrics
from meshaios.dashboard.page import PAGE, csp_header
from meshaios.dashboard.views import WorkView, duration_histogram, mesh_view, mesh_work
from meshaios.errors import ConfigError
from meshaios.security import MeshKeys

log = logging.getLogger(__name__)

StatusSource = Callable[[], Mapping[str, Any] | Awaitable[Mapping[str, Any]]]
WorkSource = Callable[[Collection[str]], WorkView]
# ``Node.mesh_views``: every live node's ``peer_view``
MeshSource = Callable[[], Awaitable[Sequence[Mapping[str, object]]]]


@dataclass(frozen=True)
class HttpLimits:
    max_request_bytes: int = 16 << 10  # request line + headers
    request_timeout: float = 5.0  # to receive a whole request
    write_timeout: float = 10.0  # to hand a response to a slow reader
    linger: float = 1.0  # after the answer, how long to wait for the client to close (see ``_linger``)
    # Beyond this, a new connection takes the place of the oldest one still sending its request (a slow client
    # cannot hold a slot against a fresh one); 503 only when every connection is being answered.
    max_connections: int = 256
    status_timeout: float = 5.0  # get_status must answer within this
    history_interval: float = 1.0  # how often the throughput history samples the status (0: no history)
    history_samples: int = 300  # how many samples it keeps
    # the work view (a scan of up to 200,000 owned tasks) is reused for this long: ten open pages cost one scan
    work_reuse: float = 0.5


def dashboard_token(mesh: str | MeshKeys) -> str:
    """The dashboard's bearer token, derived one way from the mesh token (or the keys derived from it): whoever
    holds the mesh token can compute it; whoever sees it cannot compute the mesh token.

    >>> from meshaios.security import derive_keys, new_token
    >>> token = new_token()
    >>> dashboard_token(token) == dashboard_token(derive_keys(token)) != token
    True
    """
    from meshaios.security import derive_keys

    keys = derive_keys(mesh) if isinstance(mesh, str) else mesh
    return hmac.new(keys.secret, b"meshaios dashboard v1", hashlib.sha256).hexdigest()[:40]


def is_loopback_host(host: str) -> bool:
    h = host.strip().strip("[]").lower()
    if h == "localhost" or h.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def _host_of(header: str) -> str:
    """The host part of a ``Host`` header: ``127.0.0.1:8080`` -> ``127.0.0.1``, ``[::1]:80`` -> ``::1``."""
    header = header.strip()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


async def serve_http(
    get_status: StatusSource,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    *,
    ready: asyncio.Event | None = None,
    on_listen: Callable[[str], None] | None = None,
    require_token: bool = False,
    get_work: WorkSource | None = None,
    get_mesh: MeshSource | None = None,
    limits: HttpLimits = HttpLimits(),
    get_counts: StatusSource | None = None,
) -> None:
    """Serve until cancelled. ``get_status`` is ``Node.status`` (or any callable giving that dict, or an awaitable).

    ``on_listen`` gets the base URL (``http://127.0.0.1:40123``) once the socket is bound, before ``ready`` is set:
    with ``port=0`` that is how the caller learns the port. ``require_token`` asks for the token on loopback too.
    ``get_work`` (``work_view`` over the node's owner: jobs, per-function progress, recent errors) is called only
    for ``/api/status``, when someone looks: it may cost more than the status, which the throughput history also
    samples once a second; its answer is reused for ``limits.work_reuse`` seconds, however many pages are open. It
    is given the ids of the tasks in the status's timeline, to name their functions. ``get_mesh`` (``Node.mesh_views``)
    gives every live node's task stream, the failures its owner kept and its per-function progress, for
    ``/api/status`` only: the page then shows the whole mesh's (``mesh_work``), whichever node serves it.
    ``get_counts`` (``Node.status_counts``) is what the throughput history samples once a second, if given: a
    status dict with only the task counters that ``mesh_view``'s totals add up, much cheaper than the full status
    (whose timeline and task records a node builds on its event loop); ``get_status`` if not.
    """
    loopback = is_loopback_host(host) and not require_token
    if not loopback and not token:
        raise ConfigError(
            f"the dashboard would serve {host} without a token: bind it to 127.0.0.1, or run a mesh with a token"
        )
    handlers: set[asyncio.Task[Any]] = set()
    # handlers still receiving their request, oldest first, with their connection (closed to evict them: a
    # cancelled handler task would be reported as an error by asyncio's stream callback)
    reading: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}
    history = History(limits.history_samples)
    if get_work is not None and limits.work_reuse > 0:
        get_work = _Reused(get_work, limits.work_reuse)
    evicted = 0

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal evicted
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            if len(handlers) > limits.max_connections:
                oldest = next(iter(reading), None)
                if oldest is None:
                    writer.write(_TOO_MANY)  # before any request: h11 has nothing to answer yet
                    async with asyncio.timeout(limits.write_timeout):
                        await writer.drain()
                    return
                reading.pop(oldest).transport.abort()  # its read ends, and so does its handler
                evicted += 1
                if evicted in (1, 100) or evicted % 10_000 == 0:
                    log.warning(
                        "dashboard: %d connections open; closed %d slow to send a request",
                        limits.max_connections,
                        evicted,
                    )
            reading[task] = writer
            await _serve_one(
                reader, writer, get_status, token, loopback, limits, history, get_work, get_mesh,
                lambda: reading.pop(task, None),
            )
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass
        except Exception:
            log.exception("dashboard: error serving a request")
        finally:
            handlers.discard(task)
            reading.pop(task, None)
            if not task.cancelling():
                await _linger(reader, writer, limits)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    server = await asyncio.start_server(on_connection, host, port, limit=limits.max_request_bytes)
    try:
        sockname = server.sockets[0].getsockname()
        bound = sockname[0]
        url_host = f"[{bound}]" if ":" in bound else bound
        url = f"http://{url_host}:{sockname[1]}"
        log.info("dashboard on %s/ (%s)", url, "loopback only" if loopback else "token required")
        if on_listen is not None:
            on_listen(url)
        if ready is not None:
            ready.set()
        if limits.history_interval > 0:
            await history.record(get_counts or get_status, limits)  # until cancelled
        else:
            await asyncio.Event().wait()  # serve until cancelled
    finally:
        server.close()
        for t in list(handlers):
            t.cancel()
        if handlers:
            await asyncio.wait(list(handlers), timeout=2.0)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await server.wait_closed()


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limits: HttpLimits) -> None:
    """Close our side, then read (and drop) what the client still sends until it closes too, for at most
    ``limits.linger`` seconds and ``limits.max_request_bytes`` bytes: closing a socket with unread input resets
    the connection, and the client may lose the answer it was sent (a 400 or 431 sent before its request ended).
    h11's example server does the same."""
    if writer.is_closing():
        return
    with contextlib.suppress(OSError, RuntimeError, TimeoutError):
        if writer.can_write_eof():
            writer.write_eof()
        left = limits.max_request_bytes
        async with asyncio.timeout(limits.linger):
            while left > 0:
                data = await reader.read(min(_READ_CHUNK, left))
                if not data:
                    return
                left -= len(data)


async def _read_request(reader: asyncio.StreamReader, conn: h11.Connection, limits: HttpLimits) -> h11.Request:
    """Feed the connection's bytes to h11 until it has a whole request head, reading at most
    ``limits.max_request_bytes + 1`` bytes (h11 finds a head of any size if it arrives in one read: the bound is
    ours). Raises ``h11.RemoteProtocolError`` (with the status to answer) for what is not a request, and
    ``ConnectionError`` if the client leaves first."""
    received = 0
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Request):
            if received > limits.max_request_bytes:
                raise h11.RemoteProtocolError("request header too large", error_status_hint=431)
            return event
        if event is h11.NEED_DATA:
            if received > limits.max_request_bytes:
                raise h11.RemoteProtocolError("request header too large", error_status_hint=431)
            data = await reader.read(min(_READ_CHUNK, limits.max_request_bytes + 1 - received))
            if not data:
                raise ConnectionResetError("the client closed the connection before sending a request")
            received += len(data)
            conn.receive_data(data)
            continue
        # ConnectionClosed (an empty read was fed), or anything else before a request: nothing to answer
        raise ConnectionResetError(f"no request: {event!r}")


async def _serve_one(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    get_status: StatusSource,
    token: str | None,
    loopback: bool,
    limits: HttpLimits,
    history: History,
    get_work: WorkSource | None,
    get_mesh: MeshSource | None = None,
    request_read: Callable[[], Any] = lambda: None,
) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_request_bytes)
    out = _Responder(conn, writer, limits)
    try:
        async with asyncio.timeout(limits.request_timeout):
            request = await _read_request(reader, conn, limits)
        request_read()
    except h11.RemoteProtocolError as exc:
        code = exc.error_status_hint
        message = "request header too large" if code == 431 else f"bad request: {str(exc)[:200]}"
        await out.respond(code, _TEXT, message.encode() + b"\n")
        return
    if not request.http_version.startswith(b"1."):
        await out.respond(505, _TEXT, b"HTTP/1.x only\n")
        return
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in request.headers}  # names lowered
    method = request.method.decode("latin-1")
    head = method == "HEAD"
    if method not in ("GET", "HEAD"):
        await out.respond(405, _TEXT, b"read-only: GET only\n", extra={"Allow": "GET, HEAD"})
        return
    url = urlsplit(request.target.decode("latin-1"))
    if loopback:
        host = headers.get("host")
        if host is not None and not is_loopback_host(_host_of(host)):
            # DNS rebinding: a foreign name resolving to 127.0.0.1 must not make this readable to its page
            await out.respond(403, _TEXT, b"loopback names only\n", head=head)
            return
    elif token is not None and not _authorized(headers, url.query, token):
        await out.respond(
            401,
            _TEXT,
            b"this dashboard needs the mesh's dashboard token: Authorization: Bearer <token>, or ?token=<token>\n",
            head=head,
            extra={"WWW-Authenticate": 'Bearer realm="meshaios"'},
        )
        return
    path = url.path.rstrip("/") or "/"
    if path in ("/", "/index.html"):
        await out.respond(
            200, "text/html; charset=utf-8", PAGE, head=head, extra={"Content-Security-Policy": csp_header()}
        )
        return
    if path not in ("/api/status", "/metrics"):
        await out.respond(404, _TEXT, b"not found: /, /api/status, /metrics\n", head=head)
        return
    try:
        async with asyncio.timeout(limits.status_timeout):
            status = await _call(get_status)
    except Exception as exc:
        if isinstance(exc, asyncio.CancelledError):
            raise
        body = json.dumps({"error": f"status unavailable: {type(exc).__name__}: {exc}"}).encode()
        await out.respond(503, "application/json", body, head=head)
        return
    if path == "/metrics":
        await out.respond(200, METRICS_CONTENT_TYPE, render_metrics(status).encode(), head=head)
    else:
        views = None
        if get_mesh is not None:
            try:
                async with asyncio.timeout(limits.status_timeout):
                    views = await get_mesh()
            except Exception as exc:
                if isinstance(exc, asyncio.CancelledError):
                    raise
                log.debug("dashboard: no mesh view: %s", exc)
        doc = dashboard_doc(status, history, get_work, views)
        body = json.dumps(_jsonable(doc), separators=(",", ":")).encode()
        await out.respond(200, "application/json", body, head=head)


def dashboard_doc(
    status: Mapping[str, Any],
    history: History,
    get_work: WorkSource | None,
    views: Sequence[Mapping[str, object]] | None = None,
) -> dict[str, object]:
    """``/api/status``: the node's status, plus what the page draws from it: the mesh merged from the members'
    gossiped figures (``mesh``), the server's throughput history, the owner's work (``node.jobs``,
    ``node.functions``, ``node.errors``) and the task-duration histogram of the tasks run here (``durations``).
    With ``views`` (``Node.mesh_views``), the whole mesh's: ``work`` (``mesh_work``: the task stream of every node,
    the failures every owner kept, per-function progress and jobs summed over the owners) and ``durations`` over
    every node's recent tasks."""
    doc: dict[str, object] = dict(status)
    if history.samples:
        doc["history"] = history.view()
    doc["mesh"] = mesh_view(status)
    me = doc.get("node")
    if not isinstance(me, Mapping):
        return doc
    timeline = me.get("timeline")
    records = [r for r in timeline if isinstance(r, Mapping)] if isinstance(timeline, list) else []
    names: Mapping[str, str] = {}
    node: dict[str, object] = dict(me)
    if get_work is not None:
        try:
            work = get_work([str(r.get("task")) for r in records])
            names = work["task_functions"]
            node.update(jobs=work["jobs"], functions=work["functions"], errors=work["errors"])
        except Exception as exc:
            log.debug("dashboard: no work view: %s", exc)
    doc["durations"] = duration_histogram(records, names)
    if names:  # the task stream colours each attempt by its function
        node["timeline"] = [{**r, "function": names.get(str(r.get("task")))} for r in records]
    doc["node"] = node
    if views:
        mesh = mesh_work(views, time.time())
        doc["work"] = mesh
        doc["durations"] = duration_histogram(mesh["stream"], {str(r["task"]): str(r["function"])
                                                               for r in mesh["stream"] if r.get("function")})
    return doc


class _Reused:
    """A work source whose answer is reused for ``seconds`` (on the loop's clock)."""

    def __init__(self, source: WorkSource, seconds: float) -> None:
        self.source = source
        self.seconds = seconds
        self.at = -math.inf
        self.value: WorkView | None = None

    def __call__(self, task_ids: Collection[str]) -> WorkView:
        now = asyncio.get_running_loop().time()
        if self.value is None or now - self.at >= self.seconds:
            self.value = self.source(task_ids)
            self.at = now
        return self.value


class History:
    """The mesh's task counters once a second (``mesh_view`` totals: the same whichever node keeps them), so
    that a page opened now shows the last minutes of throughput and when the current work began. Kept by the
    server (bounded), not by the node."""

    def __init__(self, maxlen: int) -> None:
        self.samples: deque[tuple[float, int, int, int]] = deque(maxlen=maxlen)  # (time, finished, submitted, pending)

    def add(self, now: float, status: Mapping[str, Any]) -> None:
        t = mesh_view(status)["totals"]
        # "submitted" as far as the mesh can tell: what has finished plus what its owners still wait for
        self.samples.append((now, t["finished"], t["finished"] + t["pending"], t["pending"]))

    def view(self) -> dict[str, list[list[float]]]:
        """Samples as ``[seconds ago (<= 0), finished, submitted, pending]``, oldest first."""
        now = asyncio.get_running_loop().time()
        return {"samples": [[round(t - now, 3), f, s, p] for t, f, s, p in self.samples]}

    async def record(self, get_status: StatusSource, limits: HttpLimits) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                async with asyncio.timeout(limits.status_timeout):
                    status = await _call(get_status)
                self.add(loop.time(), status)
            except Exception as exc:  # the node is not ready, or busy: the next sample tries again
                log.debug("dashboard: no history sample: %s", exc)
            await asyncio.sleep(limits.history_interval)


def _authorized(headers: Mapping[str, str], query: str, token: str) -> bool:
    scheme, _, value = headers.get("authorization", "").partition(" ")
    offered = value.strip() if scheme.lower() == "bearer" else (parse_qs(query).get("token") or [""])[0]
    return hmac.compare_digest(offered.encode(), token.encode())


async def _call(get_status: StatusSource) -> Mapping[str, Any]:
    result = get_status()
    if inspect.isawaitable(result):
        result = await result
    if not isinstance(result, Mapping):
        raise TypeError(f"get_status returned {type(result).__name__}, not a dict")
    return result


def _jsonable(value: Any) -> Any:
    """JSON the browser can parse: no NaN/Infinity, bytes as text, anything else as its str()."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


_TEXT = "text/plain; charset=utf-8"
_TOO_MANY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 21\r\n"
    b"Cache-Control: no-store\r\nConnection: close\r\n\r\ntoo many connections\n"
)
_READ_CHUNK = 64 << 10


class _Responder:
    """One response on a connection, written by h11 (``Connection: close``: one request per connection)."""

    def __init__(self, conn: h11.Connection, writer: asyncio.StreamWriter, limits: HttpLimits) -> None:
        self.conn = conn
        self.writer = writer
        self.limits = limits

    async def respond(
        self,
        code: int,
        content_type: str,
        body: bytes,
        *,
        head: bool = False,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        """``head``: the headers of ``body`` (its length) without it; h11 knows a HEAD request's answer has none."""
        headers = [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
            ("Connection", "close"),
            *(extra or {}).items(),
        ]
        reason = HTTPStatus(code).phrase.encode() if code in HTTPStatus._value2member_map_ else b"Error"
        data = self.conn.send(h11.Response(status_code=code, headers=headers, reason=reason)) or b""
        if body and not head and self.conn.our_state is h11.SEND_BODY:
            data += self.conn.send(h11.Data(data=body)) or b""
        data += self.conn.send(h11.EndOfMessage()) or b""
        self.writer.write(data)
        async with asyncio.timeout(self.limits.write_timeout):
            await self.writer.drain()
