"""A small read-only HTTP/1.1 server on ``asyncio.start_server``: the dashboard, ``/api/status``, ``/metrics``.

Three GET routes do not justify a web framework (and a new dependency in every node): requests are parsed by hand,
bounded in size and time, answered, and the connection is closed. Every connection handler belongs to
``serve_http``: cancelling it (the node's TaskGroup does, on stop) closes the listening socket and cancels them.

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
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from meshaios.dashboard.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from meshaios.dashboard.metrics import render_metrics
from meshaios.dashboard.page import PAGE, csp_header
from meshaios.errors import ConfigError
from meshaios.security import MeshKeys

log = logging.getLogger(__name__)

StatusSource = Callable[[], Mapping[str, Any] | Awaitable[Mapping[str, Any]]]


@dataclass(frozen=True)
class HttpLimits:
    max_request_bytes: int = 16 << 10  # request line + headers
    request_timeout: float = 5.0  # to receive a whole request
    write_timeout: float = 10.0  # to hand a response to a slow reader
    # Beyond this, a new connection takes the place of the oldest one still sending its request (a slow client
    # cannot hold a slot against a fresh one); 503 only when every connection is being answered.
    max_connections: int = 256
    status_timeout: float = 5.0  # get_status must answer within this
    history_interval: float = 1.0  # how often the throughput history samples the status (0: no history)
    history_samples: int = 300  # how many samples it keeps


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
    get_jobs: Callable[[], list[dict[str, Any]]] | None = None,
    limits: HttpLimits = HttpLimits(),
) -> None:
    """Serve until cancelled. ``get_status`` is ``Node.status`` (or any callable giving that dict, or an awaitable).

    ``on_listen`` gets the base URL (``http://127.0.0.1:40123``) once the socket is bound, before ``ready`` is set:
    with ``port=0`` that is how the caller learns the port. ``require_token`` asks for the token on loopback too.
    ``get_jobs`` (e.g. ``jobs_view`` over the node's owner) is called only for ``/api/status``, when someone looks:
    it may cost more than the status, which the throughput history also samples once a second.
    """
    loopback = is_loopback_host(host) and not require_token
    if not loopback and not token:
        raise ConfigError(
            f"the dashboard would serve {host} without a token: bind it to 127.0.0.1, or run a mesh with a token"
        )
    handlers: set[asyncio.Task[Any]] = set()
    reading: dict[asyncio.Task[Any], None] = {}  # handlers still receiving their request, oldest first
    history = History(limits.history_samples)
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
                    await _respond(
                        writer, 503, "text/plain; charset=utf-8", b"too many connections\n", limits, head=False
                    )
                    return
                reading.pop(oldest)
                oldest.cancel()  # its ``finally`` closes its connection
                evicted += 1
                if evicted in (1, 100) or evicted % 10_000 == 0:
                    log.warning(
                        "dashboard: %d connections open; closed %d slow to send a request",
                        limits.max_connections,
                        evicted,
                    )
            reading[task] = None
            await _serve_one(
                reader, writer, get_status, token, loopback, limits, history, get_jobs, lambda: reading.pop(task, None)
            )
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass
        except Exception:
            log.exception("dashboard: error serving a request")
        finally:
            handlers.discard(task)
            reading.pop(task, None)
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
            await history.record(get_status, limits)  # until cancelled
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


async def _serve_one(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    get_status: StatusSource,
    token: str | None,
    loopback: bool,
    limits: HttpLimits,
    history: History,
    get_jobs: Callable[[], list[dict[str, Any]]] | None,
    request_read: Callable[[], Any] = lambda: None,
) -> None:
    try:
        async with asyncio.timeout(limits.request_timeout):
            raw = await reader.readuntil(b"\r\n\r\n")
        request_read()
    except asyncio.LimitOverrunError:
        await _respond(writer, 431, "text/plain; charset=utf-8", b"request header too large\n", limits, head=False)
        return
    try:
        request_line, *header_lines = raw.decode("latin-1").split("\r\n")
        method, target, version = request_line.split(" ")
    except ValueError:
        await _respond(writer, 400, "text/plain; charset=utf-8", b"bad request\n", limits, head=False)
        return
    if not version.startswith("HTTP/1."):
        await _respond(writer, 505, "text/plain; charset=utf-8", b"HTTP/1.x only\n", limits, head=False)
        return
    headers: dict[str, str] = {}
    for line in header_lines:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    head = method == "HEAD"
    if method not in ("GET", "HEAD"):
        await _respond(
            writer, 405, "text/plain; charset=utf-8", b"read-only: GET only\n", limits, extra={"Allow": "GET, HEAD"}
        )
        return
    url = urlsplit(target)
    if loopback:
        host = headers.get("host")
        if host is not None and not is_loopback_host(_host_of(host)):
            # DNS rebinding: a foreign name resolving to 127.0.0.1 must not make this readable to its page
            await _respond(writer, 403, "text/plain; charset=utf-8", b"loopback names only\n", limits, head=head)
            return
    elif token is not None and not _authorized(headers, url.query, token):
        await _respond(
            writer,
            401,
            "text/plain; charset=utf-8",
            b"this dashboard needs the mesh's dashboard token: Authorization: Bearer <token>, or ?token=<token>\n",
            limits,
            head=head,
            extra={"WWW-Authenticate": 'Bearer realm="meshaios"'},
        )
        return
    path = url.path.rstrip("/") or "/"
    if path in ("/", "/index.html"):
        await _respond(
            writer,
            200,
            "text/html; charset=utf-8",
            PAGE,
            limits,
            head=head,
            extra={"Content-Security-Policy": csp_header()},
        )
        return
    if path not in ("/api/status", "/metrics"):
        await _respond(
            writer, 404, "text/plain; charset=utf-8", b"not found: /, /api/status, /metrics\n", limits, head=head
        )
        return
    try:
        async with asyncio.timeout(limits.status_timeout):
            status = await _call(get_status)
    except Exception as exc:
        if isinstance(exc, asyncio.CancelledError):
            raise
        body = json.dumps({"error": f"status unavailable: {type(exc).__name__}: {exc}"}).encode()
        await _respond(writer, 503, "application/json", body, limits, head=head)
        return
    if path == "/metrics":
        await _respond(writer, 200, METRICS_CONTENT_TYPE, render_metrics(status).encode(), limits, head=head)
    else:
        doc = dict(status)
        if history.samples:
            doc["history"] = history.view()
        if get_jobs is not None and isinstance(doc.get("node"), Mapping):
            try:
                doc["node"] = {**doc["node"], "jobs": get_jobs()}
            except Exception as exc:
                log.debug("dashboard: no jobs view: %s", exc)
        body = json.dumps(_jsonable(doc), separators=(",", ":")).encode()
        await _respond(writer, 200, "application/json", body, limits, head=head)


class History:
    """The owner's counters once a second, so that a page opened now shows the last minutes of throughput and
    when the current work began. Kept by the server (bounded), not by the node."""

    def __init__(self, maxlen: int) -> None:
        self.samples: deque[tuple[float, int, int, int]] = deque(maxlen=maxlen)  # (time, finished, submitted, pending)

    def add(self, now: float, status: Mapping[str, Any]) -> None:
        me = status.get("node")
        me = me if isinstance(me, Mapping) else {}
        owner = me.get("owner")
        owner = owner if isinstance(owner, Mapping) else {}
        self.samples.append((now, _int(owner.get("done")) + _int(owner.get("failed")), _int(owner.get("submitted")),
                             _int(me.get("pending"))))  # fmt: skip

    def view(self) -> dict[str, Any]:
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


def _int(x: Any) -> int:
    return x if type(x) is int else 0


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


_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


async def _respond(
    writer: asyncio.StreamWriter,
    code: int,
    content_type: str,
    body: bytes,
    limits: HttpLimits,
    *,
    head: bool = False,
    extra: Mapping[str, str] | None = None,
) -> None:
    lines = [
        f"HTTP/1.1 {code} {_REASONS.get(code, 'Error')}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-store",
        "X-Content-Type-Options: nosniff",
        "Referrer-Policy: no-referrer",
        "Connection: close",
    ]
    lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    if not head:
        writer.write(body)
    async with asyncio.timeout(limits.write_timeout):
        await writer.drain()
