"""mDNS discovery of mesh nodes (python-zeroconf, asyncio API).

Discovery only *feeds* membership: it reports the peers it hears announced on the local network and never
decides whether one is alive. A node killed without a goodbye stays in mDNS caches for its record TTL; a
goodbye (``stop()``) or an expired record only removes the peer from :meth:`ZeroconfDiscovery.snapshot`,
silently. Liveness is the SWIM layer's business.

Each node registers one service of type :data:`SERVICE_TYPE` whose instance name carries its node id (so it is
unique and registration skips probing, ``cooperating_responders=True``) and whose TXT record carries::

    id=<node id>  mesh=<mesh id>  v=<protocol version>  port=<mesh port>  name=<human name>  dev=<devices>

The mesh id is derived from the token's public key; the token itself never goes on the wire. Announcements of
another mesh or protocol version, malformed ones and our own are ignored (logged at debug, rate-limited).

Browsing asks QM (multicast-response) questions: with several nodes sharing port 5353 on one host, a unicast
response reaches only one of their sockets, which made the first discovery wait for the ~1 s re-query.

``bind`` picks the interfaces, always IPv4 only: any ``127.x`` address (or ``localhost``) means loopback only
(``interfaces=["127.0.0.1"]``, nothing leaves the host); ``0.0.0.0`` (or ``*``) means every interface; any
other IPv4 address means that interface alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import ipaddress
import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from zeroconf import (
    DNSQuestionType,
    InterfaceChoice,
    IPVersion,
    ServiceInfo,
    ServiceStateChange,
    Zeroconf,
)
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from meshaios.errors import ConfigError, MeshUnavailable
from meshaios.ids import short
from meshaios.logs import RateLimitedLog

__all__ = [
    "SERVICE_TYPE",
    "Announcement",
    "DiscoveryStats",
    "ZeroconfDiscovery",
    "announcement_from_txt",
    "browse",
    "interfaces_for_bind",
    "txt_for",
]

log = logging.getLogger(__name__)

SERVICE_TYPE = "_meshaios._tcp.local."

#: TTL (s) of every record we publish. Shorter than zeroconf's 75 min default for PTR/TXT, so that a node
#: killed without a goodbye drops out of snapshots after ~2 minutes instead of 75.
DEFAULT_RECORD_TTL = 120
#: How long one resolution of a peer's SRV/TXT/A records may take (they usually come from cache at once).
DEFAULT_RESOLVE_TIMEOUT = 2.0
#: Bounds: peers remembered, resolutions in flight, and distinct keys the debug-log limiter remembers.
MAX_PEERS = 4096
MAX_RESOLVING = 256
_LOG_KEYS = 512
_LOG_INTERVAL = 60.0

# TXT limits: a "key=value" string is at most 255 bytes on the wire; keep ours well under.
_MAX_NAME_BYTES = 63
_MAX_DEV_BYTES = 200
_MAX_ID_BYTES = 128
_SAFE_LABEL = re.compile(r"[A-Za-z0-9_-]{1,54}")


@dataclass(frozen=True)
class Announcement:
    """What a node tells the local network about itself."""

    node_id: str
    mesh_id: str  # derived from the token's public key, never the token
    version: int  # protocol version
    host: str  # IPv4 address to connect to ("" or "0.0.0.0": announce every IPv4 address of this host)
    port: int
    name: str = ""  # human name of the node
    devices: str = ""  # short device summary like "cpu:8,gpu:1"

    @property
    def address(self) -> str:
        """ZeroMQ endpoint of the node, e.g. ``tcp://10.0.0.5:7400``."""
        return f"tcp://{self.host}:{self.port}"


@dataclass(frozen=True)
class DiscoveryStats:
    """How full discovery's bounded tables are, and what it has turned away (counts of announcements seen)."""

    peers: int  # peers currently known (at most MAX_PEERS)
    resolving: int  # resolutions in flight (at most MAX_RESOLVING)
    other_mesh: int  # announcements of another mesh, ignored
    other_version: int  # announcements of another protocol version, ignored
    malformed: int  # announcements with unusable TXT or no IPv4 address, ignored
    unresolved: int  # services whose records did not arrive within the resolve timeout


# --------------------------------------------------------------------------------------------------------
# Pure helpers (no I/O): bind -> interfaces, Announcement <-> TXT.
# --------------------------------------------------------------------------------------------------------


def _parse_bind(bind: str) -> ipaddress.IPv4Address:
    if bind in ("*", ""):
        return ipaddress.IPv4Address("0.0.0.0")
    if bind == "localhost":
        return ipaddress.IPv4Address("127.0.0.1")
    try:
        return ipaddress.IPv4Address(bind)
    except ValueError as e:
        raise ConfigError(f"discovery needs an IPv4 bind address, got {bind!r}") from e


def interfaces_for_bind(bind: str) -> list[str] | InterfaceChoice:
    """The zeroconf ``interfaces`` argument for a node bound to ``bind``.

    >>> interfaces_for_bind("127.0.0.5")
    ['127.0.0.1']
    >>> interfaces_for_bind("0.0.0.0")
    <InterfaceChoice.All: 2>
    >>> interfaces_for_bind("10.77.0.1")
    ['10.77.0.1']
    """
    ip = _parse_bind(bind)
    if ip.is_loopback:
        return ["127.0.0.1"]
    if ip.is_unspecified:
        return InterfaceChoice.All
    return [str(ip)]


def _clip(text: str, limit: int) -> str:
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", errors="ignore")


def txt_for(me: Announcement) -> dict[str, str]:
    """The TXT properties announcing ``me`` (``name`` and ``dev`` are clipped to fit a TXT string).

    >>> txt_for(Announcement("n1", "m1", 3, "127.0.0.1", 7400, "box", "cpu:8"))
    {'id': 'n1', 'mesh': 'm1', 'v': '3', 'port': '7400', 'name': 'box', 'dev': 'cpu:8'}
    """
    return {
        "id": me.node_id,
        "mesh": me.mesh_id,
        "v": str(me.version),
        "port": str(me.port),
        "name": _clip(me.name, _MAX_NAME_BYTES),
        "dev": _clip(me.devices, _MAX_DEV_BYTES),
    }


def _text(props: Mapping[bytes, bytes | None], key: bytes, *, required: bool = True) -> str:
    value = props.get(key)
    if value is None:
        if required:
            raise ValueError(f"TXT key {key.decode()!r} missing")
        return ""
    return value.decode("utf-8")  # UnicodeDecodeError is a ValueError


def _int(text: str, what: str, lo: int, hi: int) -> int:
    if not text.isascii() or not text.isdigit():
        raise ValueError(f"TXT {what} is not a decimal integer: {text[:20]!r}")
    value = int(text)
    if not lo <= value <= hi:
        raise ValueError(f"TXT {what} out of range: {value}")
    return value


def announcement_from_txt(props: Mapping[bytes, bytes | None], host: str) -> Announcement:
    """Decode an announcement from raw TXT properties; raises ``ValueError`` if malformed.

    >>> announcement_from_txt({b"id": b"n1", b"mesh": b"m1", b"v": b"3", b"port": b"7400"}, "127.0.0.1")
    Announcement(node_id='n1', mesh_id='m1', version=3, host='127.0.0.1', port=7400, name='', devices='')
    """
    node_id = _text(props, b"id")
    mesh_id = _text(props, b"mesh")
    if not node_id or not mesh_id:
        raise ValueError("empty node or mesh id")
    if len(node_id) > _MAX_ID_BYTES or len(mesh_id) > _MAX_ID_BYTES:
        raise ValueError("node or mesh id too long")
    version = _int(_text(props, b"v"), "v", 0, 2**31 - 1)
    port = _int(_text(props, b"port"), "port", 1, 65535)
    ipaddress.IPv4Address(host)  # ValueError if not a v4 address
    return Announcement(
        node_id=node_id,
        mesh_id=mesh_id,
        version=version,
        host=host,
        port=port,
        name=_text(props, b"name", required=False),
        devices=_text(props, b"dev", required=False),
    )


def _label(node_id: str) -> str:
    """A DNS-safe label derived from (and unique to) the node id."""
    if _SAFE_LABEL.fullmatch(node_id):
        return node_id
    return "h" + hashlib.sha256(node_id.encode("utf-8")).hexdigest()[:40]


def _instance_name(node_id: str) -> str:
    return f"meshaios-{_label(node_id)}.{SERVICE_TYPE}"


def _local_ipv4_addresses() -> list[str]:
    import ifaddr  # zeroconf's own dependency

    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if ip.is_IPv4 and isinstance(ip.ip, str) and ip.ip not in found:
                found.append(ip.ip)
    # Routable addresses first: a peer on another host cannot use our loopback.
    found.sort(key=lambda a: ipaddress.IPv4Address(a).is_loopback)
    return found


def _announced_addresses(me: Announcement, bind: str) -> list[str]:
    host = me.host.strip()
    if host and not ipaddress.IPv4Address(host).is_unspecified:
        return [host]
    ip = _parse_bind(bind)
    if not ip.is_unspecified:
        return [str(ip)]
    return _local_ipv4_addresses() or ["127.0.0.1"]


def _check_host(me: Announcement) -> None:
    """``host`` must be an IPv4 address, or empty / ``0.0.0.0`` for "every address of this host"."""
    if me.host.strip():
        try:
            ipaddress.IPv4Address(me.host.strip())
        except ValueError as e:
            raise ConfigError(f"announced host must be an IPv4 address, got {me.host!r}") from e


def _pick_host(addresses: list[str], loopback_bound: bool) -> str | None:
    """Of the peer's IPv4 addresses, the one to connect to: loopback iff we are loopback-bound."""
    preferred = [a for a in addresses if ipaddress.IPv4Address(a).is_loopback == loopback_bound]
    candidates = preferred or addresses
    return candidates[0] if candidates else None


# --------------------------------------------------------------------------------------------------------
# The browsing half, shared by ZeroconfDiscovery and browse().
# --------------------------------------------------------------------------------------------------------


class _Watcher:
    """Browse for :data:`SERVICE_TYPE`, resolve each service, keep those of our mesh and version."""

    def __init__(
        self,
        zc: Zeroconf,
        mesh_id: str,
        version: int,
        own_id: str | None,
        loopback_bound: bool,
        on_peer: Callable[[Announcement], None],
        resolve_timeout: float,
        tag: str,
    ) -> None:
        self._zc = zc
        self._mesh_id = mesh_id
        self._version = version
        self._own_id = own_id
        self._loopback_bound = loopback_bound
        self._on_peer = on_peer
        self._resolve_timeout_ms = resolve_timeout * 1000.0  # zeroconf takes milliseconds here
        self._tag = tag
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._browser: AsyncServiceBrowser | None = None
        self._resolving: dict[str, asyncio.Task[None]] = {}
        self._peers: dict[str, Announcement] = {}  # service name -> announcement
        # each (reason, source) at most once a minute, in bounded memory
        self._limited = RateLimitedLog(log, interval=_LOG_INTERVAL, budget=None, max_keys=_LOG_KEYS)
        self._closed = False
        self._other_mesh = 0
        self._other_version = 0
        self._malformed = 0
        self._unresolved = 0

    def start(self) -> None:
        self._browser = AsyncServiceBrowser(
            self._zc, [SERVICE_TYPE], handlers=[self._on_change], question_type=DNSQuestionType.QM
        )

    def snapshot(self) -> list[Announcement]:
        return list(self._peers.values())

    def statistics(self) -> DiscoveryStats:
        return DiscoveryStats(
            peers=len(self._peers),
            resolving=len(self._resolving),
            other_mesh=self._other_mesh,
            other_version=self._other_version,
            malformed=self._malformed,
            unresolved=self._unresolved,
        )

    async def close(self) -> None:
        self._closed = True
        browser, self._browser = self._browser, None
        if browser is not None:
            with contextlib.suppress(Exception):
                await browser.async_cancel()
        tasks = list(self._resolving.values())
        self._resolving.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- zeroconf callbacks ------------------------------------------------------------------------------

    def _on_change(self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        # With the asyncio API zeroconf runs on our loop and calls this from it; marshal if it ever doesn't.
        if threading.get_ident() == self._loop_thread:
            self._handle(name, state_change)
        else:
            self._loop.call_soon_threadsafe(self._handle, name, state_change)

    def _handle(self, name: str, state_change: ServiceStateChange) -> None:
        if self._closed:
            return
        if state_change is ServiceStateChange.Removed:
            self._cancel_resolve(name)
            gone = self._peers.pop(name, None)
            if gone is not None:
                log.debug("[%s] mDNS: %s withdrew %s", self._tag, short(gone.node_id), name)
            return
        # Added or Updated: (re)resolve; the newest event wins.
        self._cancel_resolve(name)
        if len(self._resolving) >= MAX_RESOLVING:
            self._limited.debug(("busy", ""), "[%s] mDNS: too many resolutions, skip %s", self._tag, name)
            return
        task = asyncio.ensure_future(self._resolve(name))
        self._resolving[name] = task
        task.add_done_callback(functools.partial(self._resolve_done, name))

    def _cancel_resolve(self, name: str) -> None:
        task = self._resolving.pop(name, None)
        if task is not None:
            task.cancel()

    def _resolve_done(self, name: str, task: asyncio.Task[None]) -> None:
        if self._resolving.get(name) is task:
            del self._resolving[name]
        if not task.cancelled() and task.exception() is not None:
            log.warning("[%s] mDNS: resolving %s failed", self._tag, name, exc_info=task.exception())

    async def _resolve(self, name: str) -> None:
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        ok = await info.async_request(self._zc, self._resolve_timeout_ms, question_type=DNSQuestionType.QM)
        if not ok:
            self._unresolved += 1
            self._limited.debug(("unresolved", name), "[%s] mDNS: could not resolve %s", self._tag, name)
            return
        host = _pick_host(info.parsed_addresses(IPVersion.V4Only), self._loopback_bound)
        try:
            if host is None:
                raise ValueError("no IPv4 address")
            ann = announcement_from_txt(info.properties, host)
        except ValueError as e:
            self._malformed += 1
            self._forget(name)
            self._limited.debug(("malformed", name), "[%s] mDNS: ignoring %s: %s", self._tag, name, e)
            return
        self._accept(name, ann)

    def _forget(self, name: str) -> None:
        """A known peer now announces something we cannot use: it is no longer one of ours."""
        gone = self._peers.pop(name, None)
        if gone is not None:
            log.debug("[%s] mDNS: %s no longer announces a usable peer", self._tag, short(gone.node_id))

    def _accept(self, name: str, ann: Announcement) -> None:
        if ann.node_id == self._own_id:
            return  # we hear our own announcements; nothing to log
        if ann.mesh_id != self._mesh_id:
            self._other_mesh += 1
            self._forget(name)
            self._limited.debug(("mesh", name), "[%s] mDNS: ignoring %s of another mesh", self._tag, short(ann.node_id))
            return
        if ann.version != self._version:
            self._other_version += 1
            self._forget(name)
            self._limited.debug(
                ("version", name),
                "[%s] mDNS: ignoring %s speaking protocol v%d (we speak v%d)",
                self._tag,
                short(ann.node_id),
                ann.version,
                self._version,
            )
            return
        if self._peers.get(name) == ann:
            return
        if name not in self._peers and len(self._peers) >= MAX_PEERS:
            self._limited.debug(("full", ""), "[%s] mDNS: %d peers known, ignoring more", self._tag, MAX_PEERS)
            return
        self._peers[name] = ann
        log.debug("[%s] mDNS: peer %s at %s", self._tag, short(ann.node_id), ann.address)
        try:
            self._on_peer(ann)
        except Exception:
            log.exception("[%s] discovery on_peer callback failed for %s", self._tag, short(ann.node_id))


def _open_zeroconf(bind: str) -> AsyncZeroconf:
    interfaces = interfaces_for_bind(bind)
    try:
        return AsyncZeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)
    except OSError as e:
        raise MeshUnavailable(f"cannot start mDNS on {bind}: {e}") from e


async def _close_zeroconf(azc: AsyncZeroconf, tag: str) -> None:
    """Unregister everything (sends goodbyes, ~250 ms) and close; never raises except on cancellation."""
    try:
        await azc.async_close()
    except Exception:
        log.debug("[%s] mDNS: error while closing zeroconf", tag, exc_info=True)
        with contextlib.suppress(Exception):
            await azc.zeroconf._async_close()


# --------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------


class ZeroconfDiscovery:
    """Announce this node over mDNS and report the peers of the same mesh and version.

    ``on_peer`` is called on the event loop for each new peer and whenever a peer's announcement changes
    (never twice in a row for the same announcement; again if a peer withdrew and comes back). It must not
    block. Use it from one event loop: ``start``, ``update``, ``stop`` and the callbacks all run on it.
    """

    def __init__(
        self,
        me: Announcement,
        bind: str,
        on_peer: Callable[[Announcement], None],
        *,
        record_ttl: int = DEFAULT_RECORD_TTL,
        resolve_timeout: float = DEFAULT_RESOLVE_TIMEOUT,
    ) -> None:
        interfaces_for_bind(bind)  # validate early: ConfigError on a bad bind
        _check_host(me)
        self._me = me
        self._bind = bind
        self._on_peer = on_peer
        self._record_ttl = record_ttl
        self._resolve_timeout = resolve_timeout
        self._tag = short(me.node_id)
        self._azc: AsyncZeroconf | None = None
        self._watcher: _Watcher | None = None
        self._info: ServiceInfo | None = None
        self._broadcasts: set[asyncio.Future[Any]] = set()
        self._started = False
        self._registered = False
        self._stopping = False
        self._closer: asyncio.Future[None] | None = None

    @property
    def me(self) -> Announcement:
        return self._me

    @property
    def running(self) -> bool:
        return self._started and not self._stopping

    def _service_info(self, me: Announcement) -> ServiceInfo:
        label = _label(me.node_id)
        return AsyncServiceInfo(
            SERVICE_TYPE,
            _instance_name(me.node_id),
            port=me.port,
            properties=txt_for(me),
            server=f"meshaios-{label}.local.",
            host_ttl=self._record_ttl,
            other_ttl=self._record_ttl,
            parsed_addresses=_announced_addresses(me, self._bind),
        )

    def _track(self, fut: Any) -> None:
        """Keep zeroconf's broadcast task (announcements are repeated over ~0.5 s) so stop() can cancel it."""
        if isinstance(fut, asyncio.Future):
            if self._stopping:
                fut.cancel()
                return
            self._broadcasts.add(fut)
            fut.add_done_callback(self._broadcasts.discard)

    async def start(self) -> None:
        """Register our service and start browsing.

        Raises ``MeshUnavailable`` if mDNS cannot start (e.g. ``bind`` is not an address of this host), and
        ``RuntimeError`` if called twice or after ``stop()``. A concurrent ``stop()`` makes it return quietly.
        """
        if self._started or self._stopping:
            raise RuntimeError("ZeroconfDiscovery can be started only once")
        self._started = True
        azc = self._azc = _open_zeroconf(self._bind)
        try:
            self._watcher = _Watcher(
                azc.zeroconf,
                self._me.mesh_id,
                self._me.version,
                self._me.node_id,
                _parse_bind(self._bind).is_loopback,
                self._on_peer,
                self._resolve_timeout,
                self._tag,
            )
            self._watcher.start()
            announced = self._me
            self._info = self._service_info(announced)
            # Unique name (it carries the node id), so no probing: returns in ~1 ms instead of ~1.2 s.
            self._track(await azc.async_register_service(self._info, cooperating_responders=True))
            self._registered = True
            if self._me != announced:  # update() was called while we registered
                await self._reannounce()
        except Exception:
            if self._stopping:  # a concurrent stop() closed zeroconf under us: not an error
                log.debug("[%s] mDNS: start() interrupted by stop()", self._tag, exc_info=True)
                await self.stop()
                return
            await self.stop()
            raise
        except BaseException:  # cancelled: clean up, then let the cancellation through
            await self.stop()
            raise
        log.debug("[%s] mDNS: announcing %s on %s", self._tag, self._me.address, self._bind)

    async def update(self, me: Announcement) -> None:
        """Re-announce a changed announcement (e.g. devices). Same node id; a no-op once stopped.

        Before ``start()`` (or while it runs) the new announcement is simply the one ``start()`` publishes.
        """
        if me.node_id != self._me.node_id:
            raise ValueError("update() cannot change the node id")
        _check_host(me)
        if me == self._me:
            return
        self._me = me
        if self._registered and not self._stopping:
            await self._reannounce()

    async def _reannounce(self) -> None:
        azc = self._azc
        if azc is None:
            return
        info = self._service_info(self._me)
        try:
            fut = await azc.async_update_service(info)
        except Exception:
            if self._stopping:
                log.debug("[%s] mDNS: update lost to stop()", self._tag, exc_info=True)
                return
            raise
        self._info = info
        self._track(fut)

    async def stop(self) -> None:
        """Unregister (sends goodbyes, ~250 ms) and close. Idempotent; concurrent callers wait for the first.

        The shutdown runs in its own task that this call awaits through ``asyncio.shield``: a caller that is
        itself being cancelled (``finally: await disc.stop()``) still gets the sockets closed, and zeroconf,
        which checks ``current_task().cancelling()``, does not mistake the caller's cancellation for its own.
        Never raises, except ``CancelledError`` when the caller is cancelled while waiting.
        """
        if self._closer is None:
            self._stopping = True
            self._closer = asyncio.ensure_future(self._close())
        await asyncio.shield(self._closer)

    async def _close(self) -> None:
        try:
            if self._watcher is not None:
                await self._watcher.close()
            for fut in list(self._broadcasts):
                fut.cancel()
            if self._broadcasts:
                await asyncio.gather(*self._broadcasts, return_exceptions=True)
        finally:
            azc, self._azc = self._azc, None
            if azc is not None:
                await _close_zeroconf(azc, self._tag)
            log.debug("[%s] mDNS: stopped", self._tag)

    def snapshot(self) -> list[Announcement]:
        """Peers of our mesh and version currently announced (the last announcement of each)."""
        return self._watcher.snapshot() if self._watcher is not None else []

    def statistics(self) -> DiscoveryStats:
        """Table sizes and counts of ignored announcements (all zero before ``start()``)."""
        if self._watcher is None:
            return DiscoveryStats(0, 0, 0, 0, 0, 0)
        return self._watcher.statistics()


async def browse(
    mesh_id: str,
    version: int,
    bind: str = "127.0.0.1",
    timeout: float = 1.5,
    want: int = 1,
) -> list[Announcement]:
    """Find nodes of a mesh without announcing anything (for clients and ``meshaios status``).

    Returns as soon as ``want`` matching peers are found, or whatever was found after ``timeout`` seconds
    (possibly nothing: running out of time is not an error here).
    """
    enough = asyncio.Event()
    found: dict[str, Announcement] = {}

    def on_peer(ann: Announcement) -> None:
        found[ann.node_id] = ann
        if len(found) >= want:
            enough.set()

    azc = _open_zeroconf(bind)
    watcher: _Watcher | None = None
    try:
        watcher = _Watcher(
            azc.zeroconf,
            mesh_id,
            version,
            None,
            _parse_bind(bind).is_loopback,
            on_peer,
            min(DEFAULT_RESOLVE_TIMEOUT, max(timeout, 0.1)),
            "browse",
        )
        watcher.start()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await enough.wait()
        return list(found.values())
    finally:
        # In its own task, like ZeroconfDiscovery.stop(): a cancelled caller still closes the sockets.
        await asyncio.shield(asyncio.ensure_future(_close_browse(watcher, azc)))


async def _close_browse(watcher: _Watcher | None, azc: AsyncZeroconf) -> None:
    try:
        if watcher is not None:
            await watcher.close()
    finally:
        await _close_zeroconf(azc, "browse")
