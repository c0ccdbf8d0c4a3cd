"""The I/O edge for messages: what a node needs from a network, as a small interface with two implementations.

``ZmqTransport`` (here) is the real one: one ROUTER bound per node, one DEALER per peer, CurveZMQ with a ZAP
handler that admits only the mesh key (answered on a thread of its own, ``meshaios.io.zap``).
``InMemoryTransport`` (``meshaios.io.inmem``) carries the same frames between nodes in one process, with fault
injection, for the in-process mesh tests.

Sends never block: a node must not stall because one peer is slow or dead. Liveness is *not* inferred from
anything here (ZeroMQ reconnects silently and mDNS caches lie); SWIM decides who is alive.

A node also listens on a unix socket, ``ipc://<dir>/<host>-<port>.<netns>`` (``local_socket_path``), in a directory
of its user's alone (``security.private_runtime_dir``: 0700), for clients and nodes of that user on its host
(``local_endpoint``): the same ROUTER, CURVE and ZAP as over TCP, with less kernel work per message than loopback
TCP (docs/protocol.md section 1, docs/performance.md section 32).

Hostile input at this layer (docs/security.md): every connection must finish a ZMTP 3 handshake within
``handshake_ivl`` and pass the ZAP handler -- the mesh key on a token mesh; on an insecure node ZAP still runs
(admitting any NULL peer), because with ZAP on libzmq refuses ZMTP 1.0/2.0 peers, whose framing a web page's HTTP
POST can forge. A socket monitor counts every connection and handshake outcome (``TransportStats``). Outbound
DEALERs are capped in number (least recently used is closed) and, since nothing legitimate ever arrives on them,
accept at most ``dealer_max_inbound`` bytes per frame: a rogue address fed to us by mDNS cannot make us buffer a
gigabyte "handshake".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import socket
import stat
import struct
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import zmq
import zmq.asyncio
from zmq.utils import z85

from meshaios.io.lean import LeanReader, send_frames
from meshaios.io.zap import AuthThread
from meshaios.security import MeshKeys, private_runtime_dir
from meshaios.store.stream import MAX_FRAME_BYTES

log = logging.getLogger(__name__)

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_DOMAIN = "meshaios"

Incoming = tuple[bytes, list[Any]]  # (sender routing identity, frames)
_CONTROL = "control "  # key prefix of a peer's second DEALER: SWIM's own lane (``send_control``)


# Two events per connection and no more: libzmq drops monitor events that the reader is too slow to take (the
# reader is the ZAP thread, ``meshaios.io.zap``, which is also answering the storm's ZAP requests).
_MONITOR_EVENTS = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_ACCEPT_FAILED
_ACCEPTED = int(zmq.EVENT_ACCEPTED)
_DISCONNECTED = int(zmq.EVENT_DISCONNECTED)
_ACCEPT_FAILED = int(zmq.EVENT_ACCEPT_FAILED)
_WARN_EVERY = 10.0  # seconds between two warnings about the same connection budget
# a monitor event's first frame: event id (u16), value (i32, here a file descriptor). Parsed by hand: pyzmq's
# ``parse_monitor_message`` makes ``zmq.Event`` flags of both, and an unknown flag value (any descriptor) costs an
# enum composite each time -- most of what an event cost before
_EVENT_HEAD = struct.Struct("=Hi")


@dataclass
class TransportStats:
    sent: int = 0
    received: int = 0
    dropped: int = 0  # sends refused by a full or unreachable peer queue
    auth_ok: int = 0  # ZAP admitted a peer
    # connections that closed without delivering a single message: ZAP denials, the wrong mechanism (NULL, PLAIN),
    # the wrong keys, handshake timeouts, and bytes that are not ZMTP at all (which libzmq drops without an event)
    auth_rejected: int = 0
    bytes_sent: int = 0
    zap_denied: int = 0  # ZAP said no (a CURVE handshake with another key)
    accepted: int = 0  # TCP connections the ROUTER accepted
    disconnected: int = 0  # ... and that have closed since
    unproven_open: int = 0  # open connections that have not delivered a message yet (handshaking, or garbage)
    dealers_evicted: int = 0  # outbound sockets closed to stay under ``max_dealers``
    unproven_evicted: int = 0  # connections closed, oldest first, to stay under ``max_unproven``
    accept_failed: int = 0  # connections the ROUTER could not accept (the open-files limit, mostly)
    extra: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, int]:
        """Every counter, flat: what ``meshaios status`` shows under ``transport``."""
        out = {k: v for k, v in asdict(self).items() if k != "extra"}
        out.update(self.extra)
        return out


class Transport(Protocol):
    address: str
    stats: TransportStats

    async def start(self) -> str: ...

    def send(self, addr: str, frames: Sequence[Any]) -> bool: ...

    def reply(self, ident: bytes, frames: Sequence[Any]) -> bool: ...

    async def recv_batch(self, limit: int = 256) -> list[Incoming]: ...

    def forget(self, addr: str) -> None: ...

    async def close(self, linger: float = 0.0) -> None: ...


def _frame_bytes(frames: Sequence[Any]) -> int:
    n = 0
    for f in frames:
        n += len(f) if isinstance(f, bytes) else memoryview(f).nbytes
    return n


@dataclass(frozen=True)
class ZmqOptions:
    bind: str = "127.0.0.1"
    port: int = 0
    # ZMQ_MAXMSGSIZE of the ROUTER (and of clients): the largest frame accepted. Twice a stream chunk: anything
    # larger travels as a stream of 2 MiB chunks, so only an attacker sends more; libzmq drops such a sender from the
    # frame's length, and before authentication buffers up to this much per connection (docs/security.md, bug 3)
    max_frame_bytes: int = MAX_FRAME_BYTES
    hwm: int = 10_000  # messages queued per peer, each way, before sends are dropped (see docs/security.md)
    node_id: str = ""
    # libzmq applies MAXMSGSIZE to handshake commands too, so before authentication one connection can make us
    # buffer up to max_frame_bytes; this bounds how long it may try (libzmq's default is 30 s)
    handshake_ivl: float = 5.0
    max_dealers: int = 0  # outbound sockets kept at most (LRU); 0: derived from the open-files limit
    dealer_max_inbound: int = 1 << 20  # nodes never receive on their DEALERs: any larger frame is hostile
    # libzmq I/O threads: CURVE handshakes (a flood of them, even) and frame I/O run there, not in Python
    io_threads: int = 2
    # Connections that have not delivered a message yet (handshaking, idle, or garbage): beyond this many the oldest
    # is closed. Each may make libzmq buffer up to max_frame_bytes before authentication, and each holds a file
    # descriptor: without a cap, 2,000 idle connections ran a node out of descriptors. 0: from the open-files limit.
    max_unproven: int = 0
    # A second connection with a connected client's routing id takes its place (a client reconnecting over a
    # half-open TCP connection gets through at once). Only where identities are proven (a token mesh): on an
    # insecure node it would let any local process take over a client's id, its results and its connection.
    router_handover: bool = True
    # also listen on a unix socket in this user's private directory, for local clients (``local_endpoint``)
    local_ipc: bool = True


def default_max_unproven() -> int:
    """A quarter of the descriptors, at most 1,024: legitimate handshakes take milliseconds."""
    try:
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):  # pragma: no cover
        soft = 1024
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 16
    return max(16, min(1024, soft // 4))


def _peer_of(fd: int) -> Any:
    """The remote address of a socket descriptor (libzmq's), or None; through a duplicate, which we own."""
    try:
        with socket.socket(fileno=os.dup(fd)) as s:
            return s.getpeername()
    except OSError:
        return None


def _hang_up(fd: int, peer: Any) -> bool:
    """Shut down libzmq's connection on ``fd`` if it is still the one to ``peer`` (a descriptor can be reused):
    libzmq then sees the connection end and cleans up as for any peer that hung up."""
    try:
        with socket.socket(fileno=os.dup(fd)) as s:
            if s.getpeername() != peer:
                return False
            s.shutdown(socket.SHUT_RDWR)
            return True
    except OSError:
        return False


def default_max_dealers() -> int:
    """Each DEALER costs two file descriptors (TCP + mailbox); keep a margin for everything else."""
    try:
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):  # pragma: no cover - every POSIX system has it
        soft = 1024
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 16
    return max(16, min(4096, (soft - 128) // 2))


# unix sockets whose listener a client can check (``ipc_listening`` reads /proc/net/unix) and libzmq supports
LOCAL_IPC = sys.platform.startswith("linux") and zmq.has("ipc")
_SUN_PATH_MAX = 100  # sun_path holds 108 bytes, NUL included; a longer path gets no local socket
_SO_ACCEPTCON = 0x10000  # /proc/net/unix: a listening socket's flag


def _netns() -> str:
    """This process's network namespace (its inode): a unix socket is reachable through the file system from
    any namespace, but its listener is listed (``/proc/net/unix``) in its own only."""
    try:
        return str(os.stat("/proc/self/ns/net").st_ino)
    except OSError:
        return "0"


def local_socket_path(directory: Path, address: str) -> Path | None:
    """Where the node announcing ``tcp://host:port`` listens for local clients: ``<directory>/<host>-<port>.<netns>``,
    named by the address exactly as the node announces it (a client that dials another spelling of it uses TCP)
    and by its network namespace (two namespaces may have nodes with one address); None for any other address, or
    a path too long for a unix socket."""
    if not address.startswith("tcp://"):
        return None
    host, sep, port = address[len("tcp://") :].rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or "/" in host or "\0" in host or host in (".", ".."):
        return None
    path = directory / f"{host}-{port}.{_netns()}"
    return path if len(os.fsencode(path)) <= _SUN_PATH_MAX else None


def _listening_paths() -> set[str]:
    """The paths of the unix sockets listening in this network namespace now (``/proc/net/unix``)."""
    out: set[str] = set()
    try:
        with open("/proc/net/unix", "rb") as fh:
            for line in fh:
                # Num RefCount Protocol Flags Type St Inode Path; St 01: unconnected (a listener). The path is the
                # rest of the line, spaces included, in the file system's bytes (any other process's socket may
                # have a name that is not UTF-8: one such line must not hide every listener)
                parts = line.rstrip(b"\n").split(None, 7)
                if len(parts) == 8 and parts[5] == b"01" and int(parts[3], 16) & _SO_ACCEPTCON:
                    out.add(os.fsdecode(parts[7]))
    except (OSError, ValueError):
        return set()
    return out


def ipc_listening(path: Path) -> bool:
    """Is a unix socket listening at ``path`` now? A file left by a node that died has none: a client dialling it
    would wait for ever."""
    return os.fsdecode(path) in _listening_paths()


def _sweep(directory: Path) -> None:
    """Remove the socket files of this network namespace in ``directory`` that nobody listens on (left by nodes
    that were killed)."""
    live, ours = _listening_paths(), "." + _netns()
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        for e in entries:
            if e.name.endswith(ours) and e.path not in live and stat.S_ISSOCK(e.stat(follow_symlinks=False).st_mode):
                with contextlib.suppress(OSError):
                    os.unlink(e.path)


def local_endpoint(address: str) -> str | None:
    """The unix-socket endpoint a client of this user can reach the node at ``address`` by, or None (use TCP): the
    node's socket, in this user's private directory, owned by this user, with a listener now. The directory's
    rights keep other users out; CURVE and ZAP are the same as over TCP."""
    if not LOCAL_IPC:
        return None
    directory = private_runtime_dir()
    path = local_socket_path(directory, address) if directory is not None else None
    if path is None:
        return None
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.getuid() or not ipc_listening(path):
        return None
    return f"ipc://{path}"


class ZmqTransport:
    """One ROUTER for everything inbound (peers and clients); a DEALER per peer address for outbound."""

    def __init__(self, options: ZmqOptions, keys: MeshKeys | None) -> None:
        self.options = options
        self.keys = keys
        self.max_dealers = options.max_dealers or default_max_dealers()
        self.max_unproven = options.max_unproven or default_max_unproven()
        self._unproven: OrderedDict[int, Any] = OrderedDict()  # fd -> peer address, oldest first
        self._warned: dict[str, float] = {}
        self._mesh_key = z85.decode(keys.public) if keys is not None else b""
        self.ctx = zmq.asyncio.Context(io_threads=options.io_threads)
        # libzmq's default of 1023 sockets per context would otherwise be the real cap on peers
        self.ctx.set(zmq.MAX_SOCKETS, max(1023, self.max_dealers + 64))
        self._sync_ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.shadow(self.ctx.underlying)
        self.router: zmq.asyncio.Socket | None = None
        self._router_sync: zmq.Socket[bytes] | None = None
        self._dealers: OrderedDict[str, zmq.Socket[bytes]] = OrderedDict()  # least recently used first
        # fault injection (``meshaios chaos`` partitions on loopback; a node takes it only with --fault-injection):
        # messages to these addresses and from/to these routing ids are dropped, as a cut link would
        self.blocked_addrs: frozenset[str] = frozenset()
        self.blocked_idents: frozenset[bytes] = frozenset()
        # ZAP requests and monitor events are taken by a thread of their own (``meshaios.io.zap``), never the loop
        self._zap: zmq.Socket[bytes] | None = None
        self._monitor: zmq.Socket[bytes] | None = None
        self._auth: AuthThread | None = None
        self._lock = threading.Lock()  # the connection table: the auth thread counts, the loop proves
        # accepted connections by file descriptor, oldest first: has each delivered a message yet? A list, because
        # with two I/O threads a descriptor can be reused (and reported ACCEPTED) before its old DISCONNECTED
        self._conns: dict[int, list[bool]] = {}
        self._proven_early: set[int] = set()  # delivered before the monitor reported it accepted
        self._closed_early: dict[int, int] = {}  # DISCONNECTED reported before ACCEPTED (two I/O threads)
        self.address = ""
        self.local_address = ""  # ``ipc://...`` where local clients reach us too (``local_endpoint``); "": none
        self._local_file: tuple[Path, int] | None = None  # the socket file we bound, by inode: removed at close
        self.stats = TransportStats()

    async def start(self) -> str:
        o = self.options
        r = self.ctx.socket(zmq.ROUTER)
        r.setsockopt(zmq.LINGER, 0)
        r.setsockopt(zmq.RCVHWM, o.hwm)
        r.setsockopt(zmq.SNDHWM, o.hwm)
        r.setsockopt(zmq.MAXMSGSIZE, o.max_frame_bytes)
        r.setsockopt(zmq.HANDSHAKE_IVL, int(o.handshake_ivl * 1000))
        r.setsockopt(zmq.ROUTER_HANDOVER, int(o.router_handover))
        # ZAP on in both modes: besides checking keys, an enabled ZAP makes libzmq refuse ZMTP 1.0/2.0 peers.
        # Bound before the ROUTER listens, closed after it; enforced, so that no ZAP socket means no admission.
        self._zap = self._sync_ctx.socket(zmq.ROUTER)
        self._zap.setsockopt(zmq.LINGER, 0)
        self._zap.bind(ZAP_ENDPOINT)
        r.zap_domain = ZAP_DOMAIN.encode()
        r.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
        if self.keys is not None:
            r.curve_server = True
            r.curve_secretkey = self.keys.secret
            r.curve_publickey = self.keys.public
        mon_addr = f"inproc://meshaios.monitor.{os.getpid()}.{id(self):x}"
        r.monitor(mon_addr, _MONITOR_EVENTS)
        self._monitor = self._sync_ctx.socket(zmq.PAIR)
        self._monitor.setsockopt(zmq.LINGER, 0)
        self._monitor.connect(mon_addr)
        if o.port:
            r.bind(f"tcp://{o.bind}:{o.port}")
            port = o.port
        else:
            port = r.bind_to_random_port(f"tcp://{o.bind}")
        self.router = r
        self._router_sync = zmq.Socket.shadow(r.underlying)
        self._lean = LeanReader(self._router_sync)
        # the address peers are told to reply to: never 0.0.0.0, which would make every peer dial itself
        host = o.bind if o.bind not in ("0.0.0.0", "*") else primary_ip()
        self.address = f"tcp://{host}:{port}"
        if LOCAL_IPC:
            # files of killed nodes go even where this one does not listen locally: a node restarted at their
            # address without ``local_ipc`` would otherwise leave its clients dialling a socket with nobody behind it
            directory = private_runtime_dir(create=o.local_ipc)
            if directory is not None:
                _sweep(directory)
                if o.local_ipc:
                    self.local_address = self._bind_local(r, directory)
        return self.address

    def _bind_local(self, r: zmq.Socket[Any], directory: Path) -> str:
        """Listen on ``local_socket_path`` in ``directory`` too (the same ROUTER: CURVE, ZAP, limits and monitor
        alike); "" if the address has no such path or a live socket holds it."""
        path = local_socket_path(directory, self.address)
        if path is None:
            return ""
        if ipc_listening(path):
            log.warning("%s is held by another live socket: local clients use TCP", path)
            return ""
        endpoint = f"ipc://{path}"
        try:
            r.bind(endpoint)  # libzmq replaces a file left by a node that died
            self._local_file = (path, os.lstat(path).st_ino)
        except (zmq.ZMQError, OSError) as exc:
            log.warning("cannot listen on %s (%s): local clients use TCP", endpoint, exc)
            return ""
        return endpoint

    async def serve_zap(self) -> None:
        """The transport's background work, in the node's TaskGroup: runs the ZAP handler and the connection
        monitor on their own thread (``meshaios.io.zap``) until cancelled; raises what killed that thread."""
        assert self._zap is not None, "start() first"
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def finished(exc: BaseException | None) -> None:
            if not done.done():
                if exc is None:
                    done.set_result(None)
                else:
                    done.set_exception(exc)

        def on_exit(exc: BaseException | None) -> None:  # on the auth thread
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting any more
                loop.call_soon_threadsafe(finished, exc)

        auth = AuthThread(self._zap, self._zap_reply, self._monitor, self._count_event, on_exit)
        self._auth = auth
        auth.start()
        try:
            await done
        finally:
            # a blocking join of at most one poll interval (50 ms): only at shutdown
            auth.stop()

    def zap_decision(self, msg: list[bytes]) -> bool | None:
        """Pure: admit this ZAP request? ``None`` for a malformed one. A token mesh admits the mesh key over
        CURVE and nothing else; an insecure node admits NULL (it runs ZAP only to keep ZMTP 1.0/2.0 out)."""
        try:
            _ident, _empty, _version, _request_id, _domain, _address, _identity, mechanism, *creds = msg
        except ValueError:
            return None
        if self.keys is None:
            return mechanism == b"NULL" and not creds
        return mechanism == b"CURVE" and len(creds) == 1 and creds[0] == self._mesh_key

    def _zap_reply(self, msg: list[bytes]) -> list[bytes] | None:
        ok = self.zap_decision(msg)
        if ok is None:
            return None  # inproc, from libzmq itself: cannot happen, and there is nobody to answer
        ident, empty, version, request_id, _domain, address, _identity, mechanism = msg[:8]
        if ok:
            self.stats.auth_ok += 1
            return [ident, empty, version, request_id, b"200", b"OK", b"", b""]
        self.stats.zap_denied += 1
        if log.isEnabledFor(logging.DEBUG):  # a flood's worth of denials: not even the formatting unless asked
            log.debug("rejected %s connection from %s", mechanism.decode(errors="replace"), address.decode())
        return [ident, empty, version, request_id, b"400", b"not a member of this mesh", b"", b""]

    def _count_event(self, raw: list[bytes]) -> None:
        """Count connections and handshake outcomes (on the auth thread). libzmq drops monitor events it cannot
        queue, so under a connection storm these counters are a lower bound.

        A connection is *proven* once a message arrives from its file descriptor (``zmq.SRCFD``): only a completed
        handshake lets one through. One that closes unproven was refused, whatever the reason -- libzmq reports
        no event at all for bytes that are not ZMTP 3, so this is the one count that sees everything.
        """
        try:
            ev, value = _EVENT_HEAD.unpack(raw[0])
        except (IndexError, TypeError, struct.error):  # a malformed event from libzmq: nothing to count
            return
        with self._lock:
            self._count_locked(ev, value)

    def _warn(self, what: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._warned.get(what, -1e9) >= _WARN_EVERY:
            self._warned[what] = now
            log.warning(msg, *args)

    def _count_locked(self, ev: int, value: int) -> None:
        st = self.stats
        if ev == _ACCEPT_FAILED:
            st.accept_failed += 1
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            self._warn(
                "accept",
                "cannot accept connections (%s): open-files limit %s; %d open, %d not authenticated (cap %d); "
                "raise the limit (ulimit -n) or find who holds them",
                os.strerror(value) if value > 0 else "error", soft, st.accepted - st.disconnected,
                st.unproven_open, self.max_unproven,
            )  # fmt: skip
        elif ev == _ACCEPTED:
            st.accepted += 1
            proven = value in self._proven_early
            self._proven_early.discard(value)
            if self._closed_early.pop(value, 0):
                # it failed on an I/O thread before the listener reported it: already over
                st.auth_rejected += not proven
            else:
                self._conns.setdefault(value, []).append(proven)
                st.unproven_open += not proven
                if not proven:
                    self._admit_unproven(value)
        elif ev == _DISCONNECTED:
            st.disconnected += 1
            states = self._conns.get(value)
            if not states:
                if len(self._closed_early) > 4096:
                    self._closed_early.clear()
                self._closed_early[value] = 1
                return
            proven = states.pop(0)  # the older one: the newer got this descriptor only once it was free
            if not states:
                del self._conns[value]
            if not proven:
                st.unproven_open -= 1
                st.auth_rejected += 1
                self._unproven.pop(value, None)

    def _admit_unproven(self, fd: int) -> None:
        """Keep at most ``max_unproven`` connections that have not delivered a message: the oldest goes."""
        self._unproven[fd] = _peer_of(fd)
        self._unproven.move_to_end(fd)
        while len(self._unproven) > self.max_unproven:
            old_fd, peer = self._unproven.popitem(last=False)
            if peer is not None and _hang_up(old_fd, peer):
                self.stats.unproven_evicted += 1
        if self.stats.unproven_evicted:
            self._warn(
                "unproven",
                "%d connections not authenticated (cap %d): closed %d so far, oldest first (a connection flood?)",
                self.stats.unproven_open, self.max_unproven, self.stats.unproven_evicted,
            )  # fmt: skip

    def _prove(self, frames: list[Any]) -> None:
        """A message came in: the connection it came through has authenticated (called only while some are not)."""
        try:
            fd = int(frames[0].get(zmq.SRCFD))
        except (AttributeError, IndexError, zmq.ZMQError, TypeError, ValueError):
            return
        with self._lock:
            self._prove_locked(fd)

    def _prove_locked(self, fd: int) -> None:
        states = self._conns.get(fd)
        if states is None:
            if len(self._proven_early) > 4096:
                self._proven_early.clear()
            self._proven_early.add(fd)
        elif not states[-1]:  # the newest holder of the descriptor is the one that is open now
            states[-1] = True
            self.stats.unproven_open -= 1
            self._unproven.pop(fd, None)

    def _dealer(self, addr: str, control: bool = False) -> zmq.Socket[bytes]:
        key = _CONTROL + addr if control else addr
        d = self._dealers.get(key)
        if d is not None:
            self._dealers.move_to_end(key)
            return d
        while len(self._dealers) >= self.max_dealers:
            # mDNS hints and seeds are unbounded input: the oldest socket goes (the next send re-creates it)
            _old, victim = self._dealers.popitem(last=False)
            victim.close(linger=0)
            self.stats.dealers_evicted += 1
        o = self.options
        d = self._sync_ctx.socket(zmq.DEALER)
        d.setsockopt(zmq.LINGER, 0)
        d.setsockopt(zmq.SNDHWM, o.hwm)
        d.setsockopt(zmq.RCVHWM, 16)
        # node-to-node traffic is one-way: nothing legitimate arrives here, and this caps what a rogue "peer"
        # (an address from a forged mDNS answer) can make us buffer during the handshake
        d.setsockopt(zmq.MAXMSGSIZE, min(o.max_frame_bytes, o.dealer_max_inbound))
        d.setsockopt(zmq.HANDSHAKE_IVL, int(o.handshake_ivl * 1000))
        d.setsockopt(zmq.RECONNECT_IVL, 100)
        d.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        if o.node_id:  # the control lane has an identity of its own: one identity per connection (ROUTER_HANDOVER)
            d.setsockopt(zmq.ROUTING_ID, (b"s:" if control else b"n:") + o.node_id.encode())
        if self.keys is not None:
            apply_client_curve(d, self.keys)
        # a peer of this host and user on its unix socket, as a local client does (``local_endpoint``)
        d.connect((local_endpoint(addr) if o.local_ipc else None) or addr)
        self._dealers[key] = d
        return d

    def send_control(self, addr: str, frames: Sequence[Any]) -> bool:
        """Like ``send``, on a connection of its own: membership traffic never queues behind a data transfer."""
        return self.send(addr, frames, control=True)

    def block(self, idents: Iterable[bytes], addrs: Iterable[str]) -> None:
        """Fault injection: act as if the links to these peers and clients were cut (empty: heal)."""
        self.blocked_idents = frozenset(idents)
        self.blocked_addrs = frozenset(addrs)

    def send(self, addr: str, frames: Sequence[Any], control: bool = False) -> bool:
        if self.blocked_addrs and addr in self.blocked_addrs:
            self.stats.dropped += 1
            return False
        try:
            send_frames(self._dealer(addr, control), frames)
        except zmq.Again:
            self.stats.dropped += 1
            return False
        except zmq.ZMQError as exc:
            log.warning("send to %s failed: %s", addr, exc)
            self.stats.dropped += 1
            return False
        self.stats.sent += 1
        self.stats.bytes_sent += _nbytes(frames)
        return True

    def reply(self, ident: bytes, frames: Sequence[Any]) -> bool:
        assert self.router is not None
        if self.blocked_idents and ident in self.blocked_idents:
            self.stats.dropped += 1
            return False
        # A send processes the socket's pending commands and can consume the signal of a message that arrived
        # meanwhile: ``sent()`` then wakes the waiting reader (io/lean.py), or the recv would sleep until the next
        # signal (the lost wake-ups of docs/performance.md, section 1)
        assert self._router_sync is not None
        try:
            send_frames(self._router_sync, frames, ident)
        except zmq.ZMQError as exc:
            if not isinstance(exc, zmq.Again):
                log.warning("reply failed: %s", exc)
            self.stats.dropped += 1
            return False
        finally:
            self._lean.sent()
        self.stats.sent += 1
        self.stats.bytes_sent += _nbytes(frames)
        return True

    async def recv_batch(self, limit: int = 256) -> list[Incoming]:
        """Await one message, then drain what is already queued without awaiting (io/lean.py)."""
        assert self.router is not None
        return self._incoming(await self._lean.recv_batch(limit))

    def serve(self, handler: Callable[[list[Incoming]], None], limit: int = 256) -> None:
        """Instead of awaiting ``recv_batch``: each batch goes to ``handler`` from the loop's reader callback
        (``LeanReader.serve``) until ``unserve``."""
        assert self.router is not None
        self._lean.serve(lambda msgs: handler(self._incoming(msgs)), limit)

    def unserve(self) -> None:
        self._lean.unserve()

    def _incoming(self, msgs: list[list[Any]]) -> list[Incoming]:
        out: list[Incoming] = [(m[0].bytes, m[1:]) for m in msgs]
        self.stats.received += len(out)
        if self.blocked_idents:
            out = [m for m in out if m[0] not in self.blocked_idents]
        if self.stats.unproven_open > 0:  # almost never: only while some connection is still handshaking
            for _ident, frames in out:
                self._prove(frames)
        return out

    def forget(self, addr: str) -> None:
        for key in (addr, _CONTROL + addr):
            d = self._dealers.pop(key, None)
            if d is not None:
                d.close(linger=0)

    async def close(self, linger: float = 0.0) -> None:
        if linger > 0 and self._dealers:
            # give queued goodbyes a moment to leave; sockets then close with linger=0
            for d in self._dealers.values():
                d.setsockopt(zmq.LINGER, int(linger * 1000))
        for d in self._dealers.values():
            d.close()
        self._dealers.clear()
        if self._router_sync is not None:
            self._lean.close()
            self._router_sync = None
        if self.router is not None and self._monitor is not None:
            with contextlib.suppress(zmq.ZMQError):
                self.router.disable_monitor()
        if self._auth is not None:
            self._auth.stop()  # before its sockets close under it
            self._auth = None
        # the ROUTER before the ZAP socket: never a moment with a listener and no ZAP handler
        for s in (self.router, self._monitor, self._zap):
            if s is not None:
                s.close(linger=0)
        self.router = None
        self._zap = None
        self._monitor = None
        if self._local_file is not None:
            # libzmq leaves the file behind; ours only if nobody has bound the name since (a node started at this
            # address once we let go of it)
            path, ino = self._local_file
            self._local_file = None
            with contextlib.suppress(OSError):
                if os.lstat(path).st_ino == ino:
                    os.unlink(path)
        with contextlib.suppress(Exception):
            self.ctx.term()


def primary_ip() -> str:
    """The address other LAN hosts reach us at. A UDP connect() picks a route and sends nothing."""
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("224.0.0.251", 5353))
        ip: str = s.getsockname()[0]
        return ip
    except OSError:
        return "127.0.0.1"
    finally:
        s.close()


def apply_client_curve(sock: zmq.Socket[Any], keys: MeshKeys) -> None:
    """Clients and nodes present the mesh key itself: holding its secret is what proves membership."""
    sock.curve_serverkey = keys.public
    sock.curve_publickey = keys.public
    sock.curve_secretkey = keys.secret


def _nbytes(frames: Sequence[Any]) -> int:
    """Bytes in a multipart message: bytes, memoryviews of any format (numpy buffers) and zmq Frames alike."""
    return sum(len(f) if isinstance(f, bytes) else memoryview(f).nbytes for f in frames)
