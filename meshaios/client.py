"""The public client: submit, map, gather, as_completed, DAGs by passing futures -- sync and async.

``AsyncClient`` does the work on an asyncio loop; ``Client`` runs one in a background thread (like Dask's
client), so plain scripts and notebooks need no ``async``. Arguments are serialised in the caller's thread, so a
busy client loop never serialises for everybody.

Exactly once, as the client sees it: a result is accepted only for a task the client is still waiting for; a
second arrival of the same task id (a re-run after a node died, a re-delivery) is dropped.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import datetime
import functools
import heapq
import json
import logging
import os
import threading
import time
import types
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeAlias, TypeVar

import zmq
import zmq.asyncio

from meshaios.clock import Clock, MonotonicClock
from meshaios.config import state_dir
from meshaios.errors import (
    AuthError,
    CancelledTaskError,
    InvalidAddress,
    MeshError,
    MeshTimeoutError,
    MeshUnavailable,
    ObjectLost,
    RequestRefused,
    SerializationError,
    TaskError,
    WireError,
)
from meshaios.ids import new_id
from meshaios.io.connection import ZmqConnection
from meshaios.security import MeshKeys, derive_keys, read_token
from meshaios.shards import FailOver, Instruction, Open, Release, Resolve, Shards, Submit
from meshaios.store import shm
from meshaios.store.stream import (
    Delivered,
    Emit,
    StreamAction,
    StreamFailed,
    StreamReceiver,
    StreamSender,
    assemble,
)
from meshaios.tasks.functions import encode_function
from meshaios.wire import messages as M
from meshaios.wire.codec import BLOB_IN_HEADER, decode_message, encode
from meshaios.wire.payload import Payload
from meshaios.wire.values import TaskRef, dumps, loads

log = logging.getLogger(__name__)

SUBMIT_BATCH = 2000
# A SUBMIT's header at most about this many bytes: arguments (and finished inputs) under BLOB_IN_HEADER ride in it,
# and a node refuses a header over max_header_bytes (64 MiB): 2,000 tasks of 40 KB arguments made one of 80 MB,
# refused (their futures waited for ever then; now they fail with RequestRefused, ``_on_error``).
SUBMIT_HEADER_BYTES = 16 << 20
RELEASE_BATCH = 256  # lazily released ids (small results) that go with the next flush; fewer wait for a heartbeat
PING_INTERVAL = 0.25  # the client's heartbeat to its entry node, which renews its lease there (tasks/epochs.py)
PEERS_EVERY = 8  # every 8th ping (2 s) asks for the live members: the failover candidates
WATCH_EVERY = 2  # pings between two checks for silence (0.5 s)
FAILOVER_CONNECT_S = 2.0  # at most this long to attach to one failover candidate
FAILOVER_ROUND_S = 0.5  # pause between two rounds over the candidates
RETIRED_CONNECTION_S = 60.0  # how long the connection to a former entry node stays open for its DETACH to land
REFUSED = "meshaios.RequestRefused"  # the error type of a task whose SUBMIT its node refused (``_on_error``)
DEFAULT_SPREAD = 4  # nodes owning one client's tasks (meshaios.shards); at most the nodes of the mesh
# a caller waiting for a task it sent itself reads the connection (``AsyncClient._read_own``) at most this long,
# waking at least this often to see whether it still may; then it waits for the loop's reader
READ_OWN_S = 0.5
READ_SLICE_S = 0.02


class _Remote:
    """A finished result that stays on the node that made it until someone asks for it."""

    __slots__ = ("parts", "size")

    def __init__(self, size: int, parts: int) -> None:
        self.size = size
        self.parts = parts


_NOTHING = object()
_PENDING, _RESULT, _ERROR = 0, 1, 2  # a Future's outcome while it has no ``concurrent.futures.Future``
# Guards the moment a Future's outcome moves into the ``concurrent.futures.Future`` made for it (``Future._cf``):
# held for a few attribute accesses, by the loop thread settling a future and by a thread that starts waiting.
_HANDOVER = threading.Lock()
_allocate_lock = threading.Lock


def _release(lock: Any) -> None:
    with contextlib.suppress(RuntimeError):  # released already
        lock.release()


class Future:
    """A task's eventual result. Thread-safe; awaitable; holding it keeps the result alive in the mesh.

    A large result is not shipped to the client when the task finishes: it stays in the producing node's object
    store, other tasks fetch it from there peer to peer, and ``result()`` fetches it only when asked.

    Light until someone waits: the outcome is kept in two attributes, and the ``concurrent.futures.Future`` that
    blocking waits, callbacks and cancellation use (its ``Condition``, its lock, its waiter lists) is made only
    when one of those is asked for (``_cf``); from then on it holds the outcome.
    """

    __slots__ = (
        "__weakref__", "_cf_", "_client", "_direct", "_on_start", "_outcome", "_started", "_state", "_value",
        "_waiter", "key", "node",
    )  # fmt: skip

    def __init__(self, key: str, client: AsyncClient) -> None:
        self.key = key
        self.node = ""  # id of the node that produced the result, once known
        self._cf_: concurrent.futures.Future[Any] | None = None
        self._state = _PENDING
        self._outcome: Any = None  # the value or the exception, while ``_cf_`` is None
        self._client = client
        self._value: Any = _NOTHING
        self._started = False  # reported started (only tasks submitted with report_start=True are)
        self._on_start: list[Callable[[Future], Any]] | None = None
        # a thread blocked in ``result()`` on this future alone: a held lock that settling releases (``_wait``)
        self._waiter: Any = None
        # sent from the caller's thread (``AsyncClient._submit_direct``): (connection, shard, nothing waited to be read
        # right after the send), until a waiting thread has read the connection for its answer
        # (``AsyncClient._read_own``) or someone looks at it another way
        self._direct: tuple[ZmqConnection, int, bool] | None = None

    @property
    def _cf(self) -> concurrent.futures.Future[Any]:
        """The ``concurrent.futures.Future`` behind this one, made (holding the outcome, if there is one yet) the
        first time a waiter, a callback or a cancellation needs it."""
        cf = self._cf_
        if cf is None:
            if self._direct is not None:
                self._client._give_back(self)  # callbacks and waits on many futures: the loop's reader reads for them
            with _HANDOVER:
                cf = self._cf_
                if cf is None:
                    cf = concurrent.futures.Future()
                    if self._state == _RESULT:
                        cf.set_result(self._outcome)
                    elif self._state == _ERROR:
                        cf.set_exception(self._outcome)
                    elif self._waiter is not None:  # a thread waits on the lock: the outcome now goes to ``cf``
                        waiter = self._waiter
                        cf.add_done_callback(lambda _cf: _release(waiter))
                    self._cf_ = cf
        return cf

    def _settle_with(self, state: int, outcome: Any) -> None:
        """The task's outcome (loop thread): kept here, or set on ``_cf`` if one was made (a cancelled one keeps
        its cancellation)."""
        with _HANDOVER:
            cf = self._cf_
            if cf is None:
                if self._state == _PENDING:
                    self._outcome = outcome
                    self._state = state
                    if self._waiter is not None:
                        _release(self._waiter)
                return
        with contextlib.suppress(concurrent.futures.InvalidStateError):  # cancelled by another thread meanwhile
            if state == _RESULT:
                cf.set_result(outcome)
            else:
                cf.set_exception(outcome)

    def _set_result(self, value: Any) -> None:
        self._settle_with(_RESULT, value)

    def _set_exception(self, exc: BaseException) -> None:
        self._settle_with(_ERROR, exc)

    @property
    def task_id(self) -> str:
        return self.key

    def result(self, timeout: float | None = None, *, cancel_on_interrupt: bool = True) -> Any:
        """The task's value; raises its error (``TaskError``), ``CancelledTaskError`` if it was cancelled, or
        ``MeshTimeoutError``. Ctrl-C (``KeyboardInterrupt``) while waiting cancels the task, unless
        ``cancel_on_interrupt=False``."""
        if self._value is not _NOTHING:
            return self._value
        try:
            return self._result(timeout)
        except KeyboardInterrupt:
            if cancel_on_interrupt:
                self.cancel()
            raise

    def _result(self, timeout: float | None) -> Any:
        t0 = time.monotonic()
        if self._direct is not None:
            self._client._read_own(self, timeout)  # this thread reads its answer while it waits, if it can
            if timeout is not None:
                timeout = max(0.0, timeout - (time.monotonic() - t0))
        state = self._state  # read before the outcome: it is written after it
        if state == _RESULT:
            value = self._outcome
        elif state == _ERROR:
            raise self._outcome
        else:
            try:
                value = self._wait(timeout)
            except concurrent.futures.TimeoutError:
                raise MeshTimeoutError(f"task {self.key} did not finish within {timeout} s") from None
            except concurrent.futures.CancelledError as exc:
                if isinstance(exc, CancelledTaskError):
                    raise
                raise CancelledTaskError(f"task {self.key} was cancelled") from None
        if isinstance(value, _Remote):
            remaining = None if timeout is None else max(0.1, timeout - (time.monotonic() - t0))
            value = self._client._fetch_blocking(self.key, remaining)
            self._value = value
        return value

    def _wait(self, timeout: float | None) -> Any:
        """Block until the outcome is in. A thread waiting alone on a future no one has asked a
        ``concurrent.futures.Future`` of waits on one lock that settling releases (``_waiter``): no ``Condition``,
        no ``RLock``, no waiter list, one wake-up (a sequential ``submit().result()``); otherwise on ``_cf``."""
        lock = None
        with _HANDOVER:
            if self._cf_ is None and self._state == _PENDING and self._waiter is None:
                lock = self._waiter = _allocate_lock()
                lock.acquire()
        if lock is not None:
            t0 = time.monotonic()
            try:
                got = lock.acquire(True, -1 if timeout is None else min(max(0.0, timeout), threading.TIMEOUT_MAX))
            finally:
                with _HANDOVER:
                    self._waiter = None
                    state, cf = self._state, self._cf_
            if state == _RESULT:
                return self._outcome
            if state == _ERROR:
                raise self._outcome
            if cf is None and not got:
                raise concurrent.futures.TimeoutError
            if timeout is not None:  # a ``concurrent.futures.Future`` was made meanwhile: wait on it for the rest
                timeout = max(0.0, timeout - (time.monotonic() - t0))
        return self._cf.result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if self._direct is not None:
            t0 = time.monotonic()
            self._client._read_own(self, timeout)
            if timeout is not None:
                timeout = max(0.0, timeout - (time.monotonic() - t0))
        state = self._state
        if state != _PENDING:
            return self._outcome if state == _ERROR else None
        try:
            return self._cf.exception(timeout)
        except concurrent.futures.TimeoutError:
            raise MeshTimeoutError(f"task {self.key} did not finish within {timeout} s") from None
        except concurrent.futures.CancelledError:
            raise CancelledTaskError(f"task {self.key} was cancelled") from None

    def done(self) -> bool:
        if self._state != _PENDING:
            return True
        cf = self._cf_
        if cf is None:
            if self._direct is not None:
                self._client._give_back(self)  # polled, not waited on: the loop's reader reads for it
            return False
        return cf.done()

    def _finished(self) -> bool:
        """``done`` for the client's own use: never gives the connection back to the loop's reader."""
        cf = self._cf_
        return self._state != _PENDING if cf is None else cf.done()

    def running(self) -> bool:
        """True from the node's start report until the task finishes; only tasks submitted with
        ``report_start=True`` (the executor's) are reported, others stay False until done."""
        return self._started and not self.done()

    def _add_start_callback(self, fn: Callable[[Future], Any]) -> None:
        """Loop thread only: ``fn(self)`` when the task is reported started (at once if it was)."""
        if self._started:
            fn(self)
        else:
            self._on_start = [*(self._on_start or []), fn]

    def _mark_started(self) -> None:
        """Loop thread only."""
        if self._started:
            return
        self._started = True
        callbacks, self._on_start = self._on_start or [], None
        for fn in callbacks:
            try:
                fn(self)
            except Exception:  # a caller's callback must not break the client's message handling
                log.exception("start callback of %s failed", self.key)

    def cancel(self) -> bool:
        """Cancel the task; False if it has finished already. Wherever it waits (in this client, at its owner, in
        a node's queue, in a steal on its way to another node) it will never start once the cancel reaches it (on a
        node: the owner's abort; a slot freed there before the abort arrives starts it, as a running one); if it is
        running on a thread, it finishes and its result is dropped; in a node's process pool (``pure=True``) its
        process is terminated. Tasks that depend on it fail with ``CancelledTaskError`` (a ``concurrent.futures``
        ``CancelledError``), as ``result()`` on this future does."""
        if self._state != _PENDING:
            return False  # finished (a cancelled future has a ``concurrent.futures.Future``)
        if self._cf.cancelled():
            return True  # as concurrent.futures answers
        if not self._cancel_local():
            return self._cf.cancelled()  # cancelled by another thread meanwhile: True, as above
        self._client._cancel_threadsafe([self.key])
        return True

    def _cancel_local(self) -> bool:
        """``cancel`` without telling the mesh yet: the caller sends one CANCEL for many (``Client.cancel``)."""
        cf = self._cf
        if cf.cancelled() or not cf.cancel():
            return False
        with contextlib.suppress(RuntimeError):  # RuntimeError: another thread's cancel got there first
            cf.set_running_or_notify_cancel()  # wakes ``meshaios.wait``/``as_completed`` (``cancel`` does not)
        return True

    @property
    def _condition(self) -> Any:
        # what ``concurrent.futures.wait``/``as_completed`` look for first: say what to use instead
        raise AttributeError(
            "a meshaios.Future is not a concurrent.futures.Future: use meshaios.wait / meshaios.as_completed (same "
            "signature, any mix of both kinds), or client.executor(), whose futures are concurrent.futures futures"
        )

    def cancelled(self) -> bool:
        cf = self._cf_
        return cf is not None and cf.cancelled()

    def add_done_callback(self, fn: Callable[[Future], Any]) -> None:
        self._cf.add_done_callback(lambda _cf: fn(self))

    def __await__(self) -> Any:
        return self._result_async().__await__()

    async def _result_async(self) -> Any:
        if self._value is not _NOTHING:
            return self._value
        state = self._state
        if state == _ERROR:
            raise self._outcome
        if state == _RESULT:
            value = self._outcome
        else:
            try:
                value = await asyncio.wrap_future(self._cf)
            except asyncio.CancelledError:
                if self.cancelled():  # this task was cancelled, not the coroutine awaiting it
                    raise CancelledTaskError(f"task {self.key} was cancelled") from None
                raise
        if isinstance(value, _Remote):
            value = await self._client._fetch(self.key)
            self._value = value
        return value

    def part(self, j: int) -> TaskRef:
        """Part ``j`` of a map task's partitioned output, as an argument for another task."""
        return TaskRef(f"{self.key}#{j}")

    def __repr__(self) -> str:
        state = "finished" if self.done() else "pending"
        return f"<meshaios.Future {self.key[:12]} {state}>"

    def __del__(self) -> None:
        client = getattr(self, "_client", None)
        if client is not None:
            # a small result that came back with its answer holds nothing large at its owner: that release can wait
            # for the client's next heartbeat instead of waking its loop now (``_release_threadsafe``)
            with contextlib.suppress(Exception):
                client._release_threadsafe(self.key, lazy=self._small())

    def _small(self) -> bool:
        """Finished, and not a large result kept at a node (``_Remote``)."""
        cf = self._cf_
        if cf is None:
            return self._state != _PENDING and not isinstance(self._outcome, _Remote)
        return cf.done() and not cf.cancelled() and (cf.exception() is not None or not isinstance(cf.result(), _Remote))


def find_local_node(timeout: float = 2.0, mesh_id: str | None = None) -> str:
    """Where a client with no address goes: $MESHAIOS_ADDRESS, a node running on this machine, or mDNS."""
    env = os.environ.get("MESHAIOS_ADDRESS")
    if env:
        return env if "://" in env else f"tcp://{env}"
    nodes_dir = state_dir() / "nodes"
    candidates: list[tuple[float, str]] = []
    others: list[tuple[str, str]] = []  # (address, mesh id) of live local nodes of another mesh
    with contextlib.suppress(OSError):
        for p in nodes_dir.glob("*.json"):
            try:
                info = json.loads(p.read_text())
                os.kill(int(info["pid"]), 0)
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if mesh_id and info.get("mesh") != mesh_id:
                others.append((str(info.get("address")), str(info.get("mesh"))))
                continue
            candidates.append((p.stat().st_mtime, str(info["address"])))
    if candidates:
        return max(candidates)[1]
    if mesh_id:
        from meshaios.io.discovery import browse
        from meshaios.wire.messages import PROTOCOL_VERSION

        found = asyncio.run(browse(mesh_id, PROTOCOL_VERSION, bind="127.0.0.1", timeout=timeout))
        if found:
            return found[0].address
    if others:
        addr, other = others[0]
        raise MeshUnavailable(
            f"a meshaios node runs on this machine ({addr}) but belongs to another mesh ({other}; your token is for "
            f"mesh {mesh_id}): use that mesh's token (--token-file / MESHAIOS_TOKEN), or start a node with yours"
        )
    raise MeshUnavailable(
        "no meshaios node found on this machine: start one with `meshaios node`, or pass an address "
        "(Client('tcp://host:port') or MESHAIOS_ADDRESS)"
    )


def _env_spread() -> int:
    raw = os.environ.get("MESHAIOS_SPREAD", "")
    try:
        return int(raw) if raw else DEFAULT_SPREAD
    except ValueError:
        raise ValueError(f"MESHAIOS_SPREAD must be a whole number of nodes, not {raw!r}") from None


def _header_bytes(spec: M.SubmitTask) -> int:
    """About what ``spec`` adds to a SUBMIT's header: its payloads small enough to ride in it, and some fields."""
    n = 256 + 40 * len(spec["deps"])
    done = spec.get("done")
    for p in (spec["fn"], spec["args"], done.get("v") if isinstance(done, dict) else None):
        if isinstance(p, Payload) and len(p.blob) <= BLOB_IN_HEADER:
            n += len(p.blob)
    return n


def submit_batches(specs: list[M.SubmitTask], max_bytes: int = SUBMIT_HEADER_BYTES) -> Iterator[list[M.SubmitTask]]:
    """``specs`` in SUBMITs of at most SUBMIT_BATCH tasks and about ``max_bytes`` of header each (a task over it goes
    alone)."""
    batch: list[M.SubmitTask] = []
    size = 0
    for spec in specs:
        n = _header_bytes(spec)
        if batch and (len(batch) >= SUBMIT_BATCH or size + n > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(spec)
        size += n
    if batch:
        yield batch


def node_endpoint(address: str) -> str:
    """``host:port`` or ``tcp://host:port`` (``ipc://`` and ``inproc://`` pass) -> the ZeroMQ endpoint to connect to;
    anything else raises ``InvalidAddress`` naming it, before ZeroMQ sees it."""
    addr = address.strip() if isinstance(address, str) else ""
    if "://" not in addr:
        addr = f"tcp://{addr}"
    scheme, rest = addr.split("://", 1)
    if scheme in ("ipc", "inproc") and rest:
        return addr
    if scheme != "tcp":
        raise InvalidAddress(f"{address!r} is not a node address: unknown scheme {scheme!r} (use host:port)")
    host, sep, port = rest.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if (
        not sep
        or not host
        or not port.isdigit()
        or not 0 < int(port) < 65536
        or any(c.isspace() or c in "/[]@" for c in host)
    ):
        raise InvalidAddress(
            f"{address!r} is not a node address: expected host:port, e.g. 192.168.1.5:5577, node1.lan:5577 or "
            "tcp://[::1]:5577 (or no address at all, to find a node of this machine)"
        )
    return addr


def _fn_arg(fn: Any) -> Any:
    """A function as a task argument: by import reference where it has one (works on insecure meshes)."""
    if fn is None:
        return None
    from meshaios.tasks.functions import import_ref

    return import_ref(fn) or fn


def _deadline_in(deadline: object) -> float:
    """A deadline as seconds from now: a number is that already; a ``datetime`` is a moment (naive: local time)."""
    if isinstance(deadline, datetime.datetime):
        return max(1e-3, deadline.timestamp() - time.time())
    if isinstance(deadline, bool) or not isinstance(deadline, int | float) or not deadline > 0:
        raise ValueError(f"deadline must be a positive number of seconds or a datetime, not {deadline!r}")
    return float(deadline)


def _check_priority(priority: object) -> int:
    if type(priority) is not int:
        raise TypeError(f"priority must be an int, not {type(priority).__name__}")
    if abs(priority) > 2**31 - 1:
        raise ValueError("priority must fit in 32 bits")
    return priority


class Connection(Protocol):
    """What the client needs of its connection to a node: ``io.connection.ZmqConnection``, or
    ``io.inmem.InMemoryConnection`` in an in-process mesh."""

    handshake_failed: int

    def send(self, frames: list[Any]) -> None: ...

    async def recv_batch(self, limit: int = 256) -> list[list[Any]]: ...

    async def close(self) -> None: ...

    def diagnose(self) -> Exception: ...

    def _poll_monitor(self) -> None: ...


T = TypeVar("T")

#: When a task should be done: seconds from now, or a moment (a naive ``datetime`` is local time); None: no deadline.
Deadline: TypeAlias = float | datetime.datetime | None

#: A task's hard constraints as a caller writes them: counts, and sizes as bytes or text (``"4GiB"``).
ResourceSpec: TypeAlias = Mapping[str, int | str]


def parse_resources(resources: ResourceSpec) -> dict[str, int]:
    from meshaios.devices.detect import parse_size

    out: dict[str, int] = {}
    for k, v in resources.items():
        if k not in ("cpu", "gpu", "gpu_memory", "memory"):
            raise ValueError(f"unknown resource {k!r} (cpu, gpu, gpu_memory, memory)")
        n = parse_size(v) if "memory" in k else int(v)
        if n < 0:
            raise ValueError(f"resource {k} must not be negative")
        if n:
            out[k] = n
    return out


def _client_keys(token: str | None, token_file: str | None, insecure: bool) -> MeshKeys | None:
    if insecure:
        return None
    tok = token if token is not None else read_token(Path(token_file) if token_file else None)
    return derive_keys(tok) if tok else None


class AsyncClient:
    """Async API. ``async with AsyncClient(addr) as c: r = await c.submit(f, x)``.

    ``spread``: how many nodes own this client's tasks (``meshaios.shards``): the client keeps a connection to each
    and shares its submissions among them; 1 is one owner, the entry node. Default ``$MESHAIOS_SPREAD``, else
    ``DEFAULT_SPREAD``; never more than the nodes of the mesh."""

    def __init__(
        self,
        address: str | None = None,
        *,
        token: str | None = None,
        token_file: str | None = None,
        insecure: bool = False,
        connect_timeout: float = 5.0,
        heartbeat_timeout: float = 5.0,
        failover_timeout: float = 30.0,
        connection_factory: Callable[[str, MeshKeys | None, str], Connection] | None = None,
        window: int = 10_000,
        reconcile_after: float = 60.0,
        spread: int | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.clock: Clock = clock or MonotonicClock()  # heartbeats, failover and reconcile deadlines
        self.keys = _client_keys(token, token_file, insecure)
        self._address = address
        self.window = max(1, window)  # unfinished tasks sent to the mesh at once: the rest wait here
        self._inflight = 0
        self._connection_factory = connection_factory or ZmqConnection
        self._zmq_ctx: Any = None  # shared by our ZmqConnections (one I/O thread), made on first use
        self.connect_timeout = connect_timeout
        self.heartbeat_timeout = heartbeat_timeout
        self.failover_timeout = failover_timeout
        # no result for this long while futures are pending and the entry node answers: reconcile with it (resubmit
        # what is pending; it redelivers what it has done, ignores what it runs, runs what it has lost); 0: never
        self.reconcile_after = reconcile_after
        self.client_id = new_id("c")
        self.spread = max(1, spread if spread is not None else _env_spread())
        # routing, lineage and failover decisions: a pure core (meshaios/shards.py); this class does the I/O
        self.core = Shards(self.client_id, self.spread, heartbeat_timeout, reconcile_after)
        self.allow_pickle = self.keys is not None
        self.node: M.Welcome | None = None  # the entry node's WELCOME
        self._conns: dict[int, Connection] = {}  # shard -> its connection
        self._readers: dict[int, asyncio.Task[None]] = {}
        self._welcomes: dict[int, asyncio.Future[M.Welcome]] = {}
        self._shard_nodes: dict[int, M.Welcome] = {}
        self._jobs: set[asyncio.Task[None]] = set()  # shards being opened or failed over
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: dict[str, Future] = {}
        self._outbox: collections.deque[M.SubmitTask] = collections.deque()
        self._kept: set[str] = set()  # fire_and_forget: not cancelled when we close
        self._urgent: list[tuple[int, int, M.SubmitTask]] = []  # priority > 0, waiting for the window: a heap
        self._cancels: list[str] = []  # ids to send in the next CANCEL
        self._seq = 0
        self._releases: dict[int, list[str]] = {}  # shard -> ids for its next RELEASE
        self._lazy_releases: collections.deque[str] = collections.deque()  # see ``_release_threadsafe``
        self._flush_scheduled = False
        self._watcher: asyncio.Task[None] | None = None
        self._retired: list[tuple[float, Connection, str, int]] = []  # (since, conn, address, shard): former owners
        self._replies: dict[str, asyncio.Future[M.Message]] = {}
        self._fn_cache: dict[Callable[..., Any], Payload] = {}
        self._closed = False
        self._broken: MeshError | None = None
        self._next_req = 0  # the last request number given out (``_new_req``)
        # The sync ``Client``'s caller thread may send a lone task's SUBMIT itself (``_submit_direct``): request
        # numbers are given out, and a PING's mark taken, under this lock, with the send they go with; the tasks so
        # sent wait in ``_handover`` until the loop's thread records them (``_adopt``)
        self._wire_lock = threading.Lock()
        self._handover: collections.deque[tuple[M.SubmitTask, Future, Connection, int, int, int]] = collections.deque()
        # ... and the caller reads the answer itself while it waits (``_read_own``): the ids of tasks so sent whose
        # answer has not come yet (none: the next lone task may go the same way), and notices of what the caller
        # read, for the loop's thread to take in as if it had read it (``_adopt``): (shard, connection, the messages
        # read, their decoding); the messages themselves wait in the connection (io/lean.py ``take_kept``)
        self._unanswered: set[str] = set()
        self._handback: collections.deque[
            tuple[int, Connection, list[list[Any]], list[M.Message | None]]
        ] = collections.deque()
        self.read_direct = 0  # answers read by the thread that waited for them (``_read_own``)
        self.handed_back = 0  # other messages that thread read, handed to the loop's thread
        self.sent_direct = 0  # SUBMITs sent from the caller's thread (``_submit_direct``)
        self._direct_turn = 0  # the shards take such SUBMITs in turn
        self._by_req: dict[int, asyncio.Future[M.Got | M.PutAck]] = {}
        self._req_shard: dict[int, int] = {}  # which shard each request went to
        self._gets: dict[int, M.Get] = {}  # GETs awaiting an answer: asked again after a failover
        # SUBMITs a node may still refuse with an ERROR naming their ``req`` (``_on_error``): shard -> {req: specs},
        # in sending order. A node answers a connection's messages in order, so once the PONG to a PING sent after
        # them arrives they were taken (``_acknowledged``). A streamed one may be put together after a later PING:
        # it is kept (req -> (shard, specs)) until none of its tasks is pending.
        self._refusable: dict[int, dict[int, list[M.SubmitTask]]] = {}
        self._ping_marks: dict[int, collections.deque[int]] = {}  # shard -> the last req before each PING in flight
        self._refusable_streamed: dict[int, tuple[int, list[M.SubmitTask]]] = {}
        # shard -> header bytes per SUBMIT: half its node's max_header_bytes (WELCOME ``mh``), at most
        # SUBMIT_HEADER_BYTES, so that many small tasks are never refused together for a limit none of them breaks
        self._batch_bytes: dict[int, int] = {}
        self._loop_thread = 0
        self.stats = {"results": 0, "duplicates": 0, "shm_received": 0, "shm_sent": 0, "shm_refused": 0}
        # large values to and from a node of this machine go through /dev/shm (store/shm.py): our host id, sent
        # with GET, compared with the node's (WELCOME) for PUT; our files' lock, made on the first such put
        self._shm_host = shm.host_id()
        self._shm_area: shm.ShmArea | None = None
        # large messages both ways as bounded chunks (store/stream.py), per shard: the node stays heard meanwhile
        self._streams_out = StreamSender()
        self._streams_in = StreamReceiver()

    @property
    def address(self) -> str:
        return self._address or ""

    # what the core keeps, under the names tests and tools read
    @property
    def failovers(self) -> int:
        return self.core.failovers

    @property
    def reconciles(self) -> int:
        return self.core.reconciles

    @property
    def resubmitted(self) -> int:
        return self.core.resubmitted

    @property
    def epoch(self) -> int:
        """The entry shard's epoch (tasks/epochs.py): bumped on each of its failovers."""
        entry = self.core.shards.get(0)
        return entry.epoch if entry is not None else 0

    @property
    def _specs(self) -> dict[str, M.SubmitTask]:
        return self.core.specs

    @property
    def _puts(self) -> dict[str, tuple[int, list[str]]]:
        """Live put futures: size and holders, for failover."""
        return self.core.puts

    @property
    def _known_nodes(self) -> list[str]:
        """The failover candidates: our entry node first, then the members last reported live."""
        return [self.address, *(a for a in self.core.peers if a != self.address)]

    @property
    def _conn(self) -> Connection | None:
        """The entry node's connection (shard 0)."""
        return self._conns.get(0)

    def owners(self) -> dict[str, int]:
        """Node id -> how many of our unfinished tasks it owns (held ones are counted under their target)."""
        out: dict[str, int] = {}
        for s in self.core.shards.values():
            out[s.node] = out.get(s.node, 0) + len(s.tasks)
        return out

    async def __aenter__(self) -> AsyncClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        if self._address is None:
            mesh_id = self.keys.mesh_id if self.keys else None
            self._address = await asyncio.to_thread(find_local_node, 2.0, mesh_id)
        elif self._connection_factory is ZmqConnection:
            self._address = node_endpoint(self._address)
        sid = self.core.new_shard(self._address)
        try:
            node = await self._attach(sid, self._address)
        except BaseException:
            await self.close()
            raise
        self._do(self.core.attached(sid, self._address, node["node"], self.clock.now()))
        self.allow_pickle = self.node is not None and self.node["pickle"] and self.keys is not None
        self._watcher = asyncio.create_task(self._watch(), name="meshaios-client-watch")
        if self.spread > 1:
            # the other owners at once: the first submissions are spread too (more join as members appear)
            with contextlib.suppress(MeshError):
                await self._request({"t": M.PING, "peers": True}, M.PONG, min(2.0, self.connect_timeout))
            opening = list(self._jobs)
            if opening:
                await asyncio.wait(opening, timeout=self.connect_timeout)
        log.debug("connected to node %s at %s (%d owners)", self._node_id, self._address, len(self.core.shards))

    async def _attach(self, sid: int, address: str) -> M.Welcome:
        """Connect shard ``sid`` to one node and wait for its WELCOME; on failure the most specific error we can
        name."""
        assert self._loop is not None
        try:
            if self._connection_factory is ZmqConnection:
                if self._zmq_ctx is None:
                    self._zmq_ctx = zmq.asyncio.Context()
                conn: Connection = ZmqConnection(address, self.keys, self.core.ident(sid), ctx=self._zmq_ctx)
            else:
                conn = self._connection_factory(address, self.keys, self.core.ident(sid))
        except zmq.ZMQError as exc:
            raise InvalidAddress(f"cannot connect to {address!r}: {exc}") from exc
        self._conns[sid] = conn
        self._refusable[sid] = {}  # a new connection: nothing sent on it yet
        self._ping_marks[sid] = collections.deque()
        self._stream_actions(self._streams_out.dest_gone(sid, f"left node {address}"))
        self._streams_in.src_gone(sid)
        welcome = self._welcomes[sid] = self._loop.create_future()
        old = self._readers.pop(sid, None)
        if old is not None:
            old.cancel()
        self._readers[sid] = asyncio.create_task(self._read_loop(sid, conn), name=f"meshaios-client-reader-{sid}")
        deadline = self.clock.now() + self.connect_timeout
        conn.send(encode({"t": M.HELLO, "client": self.core.ident(sid)}))
        while True:
            remaining = deadline - self.clock.now()
            if remaining <= 0:
                raise conn.diagnose()
            try:
                async with asyncio.timeout(min(0.25, remaining)):
                    node: M.Welcome = await asyncio.shield(welcome)
                break
            except TimeoutError:
                conn._poll_monitor()
                if conn.handshake_failed:
                    raise conn.diagnose() from None
        if self.keys is not None and node["mesh"] != self.keys.mesh_id:
            raise AuthError(f"node {address} belongs to mesh {node['mesh']}, not ours")
        self._shard_nodes[sid] = node
        mh = node.get("mh")
        half = mh // 2 if isinstance(mh, int) and not isinstance(mh, bool) and mh > 0 else SUBMIT_HEADER_BYTES
        self._batch_bytes[sid] = min(SUBMIT_HEADER_BYTES, half)
        if sid == 0:
            self.node = node
            self._address = address
        return node

    @property
    def _node_id(self) -> str | None:
        """The entry node's id, once it has welcomed us."""
        return self.node["node"] if self.node is not None else None

    def _do(self, instructions: list[Instruction]) -> None:
        """Carry out what the core decided."""
        for ins in instructions:
            if isinstance(ins, Submit):
                self._submit_to(ins.sid, ins.specs, ins.puts, fresh=not ins.resubmit)
            elif isinstance(ins, Release):
                self._releases.setdefault(ins.sid, []).extend(ins.ids)
                self._schedule_flush()
            elif isinstance(ins, Resolve):
                self._on_result(ins.result, None)
            elif isinstance(ins, Open):
                self._job(self._open(ins.sid, ins.address), f"meshaios-client-open-{ins.sid}")
            elif isinstance(ins, FailOver):
                self._job(self._failover(ins.sid, ins.candidates, ins.silent), f"meshaios-client-failover-{ins.sid}")

    def _job(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        if self._closed:
            coro.close()
            return
        task = asyncio.create_task(coro, name=name)
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    def _submit_to(
        self, sid: int, specs: list[M.SubmitTask], puts: list[list[Any]] | None = None, fresh: bool = True
    ) -> None:
        """``fresh``: the first SUBMIT of these tasks, which the node cannot hold yet, so if it refuses the SUBMIT
        their futures fail (``_on_error``); a failover's or reconcile's resubmission is never failed that way."""
        shard = self.core.shards.get(sid)
        if shard is None or sid not in self._conns or shard.failing:
            # failing over: the connection may be one still waiting for a candidate's WELCOME, at the old epoch,
            # and the node would take these before the failover's resubmission of what they read (failing them
            # with UnknownDependency: fault seed 438, --gray --shuffle); they go with that resubmission instead
            return
        if puts:
            # the node never saw these puts: it takes them with their holders, or fails them as lost at once
            adopt: M.Adopt = {"t": M.ADOPT, "puts": puts}
            self._send(adopt, sid=sid)
        refusable = self._refusable.get(sid) if fresh else None
        for batch in submit_batches(specs, self._batch_bytes.get(sid, SUBMIT_HEADER_BYTES)):
            req = self._new_req()  # third in the header, where a node that refuses the SUBMIT reads it (peek_req)
            streamed = self._send({"t": M.SUBMIT, "req": req, "tasks": batch, "ep": shard.epoch}, sid=sid)
            if refusable is None:
                continue
            if streamed:
                self._refusable_streamed[req] = (sid, batch)
            else:
                refusable[req] = batch

    async def _open(self, sid: int, address: str) -> None:
        """One more owner: shard ``sid`` on the node at ``address``."""
        try:
            node = await self._attach(sid, address)
        except MeshError as exc:
            log.debug("no shard on %s: %s", address, exc)
            await self._discard_failed(sid)
            self._conns.pop(sid, None)
            self.core.open_failed(sid, address, self.clock.now())
            return
        self._do(self.core.attached(sid, address, node["node"], self.clock.now()))
        if self._outbox or self._urgent:
            self._schedule_flush()

    async def _watch(self) -> None:
        """Heartbeats, the list of other nodes to fail over to, and failover when an owner goes silent."""
        tick = 0
        while not self._closed:
            await asyncio.sleep(PING_INTERVAL)
            tick += 1
            self._adopt()
            self._take_lazy_releases()  # at least once per heartbeat (``_release_threadsafe``)
            for sid, conn in list(self._conns.items()):
                if sid in self.core.shards and not self.core.shards[sid].failing:
                    # busy or not: the owner holds our work back when we fall silent (its client lease, 1 s); every
                    # 2 s the PONG also lists the live members: where to fail over to is never more than 2 s stale
                    ping: M.Ping = {"t": M.PING, "peers": True} if tick % PEERS_EVERY == 1 else {"t": M.PING}
                    self._send_ping(sid, conn, ping)
            if tick % WATCH_EVERY:
                continue  # the rest every 0.5 s
            now = self.clock.now()
            if self._retired and now - self._retired[0][0] > RETIRED_CONNECTION_S:
                await self._close_retired()
            self._stream_actions(self._streams_out.tick(now))
            self._streams_in.tick(now)
            self._do(self.core.tick(now))

    async def _failover(self, sid: int, candidates: list[str], silent: float) -> None:
        """Shard ``sid``'s node is gone: attach the shard to another node and resubmit what it owned (ids make it
        idempotent). Candidates are tried in rounds until ``failover_timeout``: right after a crash the survivors
        may be busy re-placing work, and a restarted node may need a moment before it answers."""
        shard = self.core.shards[sid]
        dead, dead_node = shard.address, shard.node
        log.warning("node %s silent for %.1f s; failing over (%d candidates)", dead, silent, len(candidates))
        old = self._conns.get(sid)
        errors: dict[str, str] = {}
        deadline = self.clock.now() + self.failover_timeout
        timeout = min(self.connect_timeout, FAILOVER_CONNECT_S)
        saved, self.connect_timeout = self.connect_timeout, timeout
        try:
            while self.clock.now() < deadline and not self._closed:
                for addr in [*candidates, dead]:
                    await self._close_retired(addr, sid)  # one connection per node and shard: a second is refused
                    try:
                        node = await self._attach(sid, addr)
                    except MeshError as exc:
                        errors[addr] = str(exc)
                        await self._discard_failed(sid)
                        continue
                    # a new epoch: this shard's work belongs to this node now; its former node is told to let go
                    todo = self.core.attached(sid, addr, node["node"], self.clock.now())
                    if old is not None and old is not self._conns.get(sid):
                        await self._retire(sid, old, dead, dead_node)
                    self._resume(sid)
                    self._do(todo)
                    return
                await asyncio.sleep(FAILOVER_ROUND_S)
        finally:
            self.connect_timeout = saved
        if self._closed:
            return
        detail = "; ".join(f"{a}: {e}" for a, e in errors.items())
        err = MeshUnavailable(
            f"node {dead} has not answered for {silent:.1f} s and no other node of the mesh answers ({detail})"
        )
        self._broken = err
        for f in list(self._pending.values()):
            if not f._cf.done():
                f._cf.set_exception(err)
        self._pending.clear()

    def _resume(self, sid: int) -> None:
        """After shard ``sid`` failed over: its reads are asked again of the new node; its puts in flight fail."""
        for req, fut in list(self._by_req.items()):
            if self._req_shard.get(req) != sid:
                continue
            get = self._gets.get(req)
            if get is not None:
                self._send(get, tag=req, sid=sid)
            elif not fut.done():  # a put in flight: the client still has the value, the caller may put again
                fut.set_exception(MeshUnavailable("the entry node was lost while this put was in flight: put again"))
        if self._outbox or self._urgent:
            self._schedule_flush()

    async def _retire(self, sid: int, conn: Connection, address: str, node_id: str | None) -> None:
        """The connection to a former owner: DETACH goes out on it, and it stays open a while, so that a node that
        was only paused or cut off reads it when it comes back (then it stops running our old work)."""
        if node_id and node_id == self.core.shards[sid].node:
            with contextlib.suppress(Exception):
                await conn.close()  # we are back on the same node: the newer SUBMIT is all it needs
            return
        with contextlib.suppress(Exception):
            conn.send(encode({"t": M.DETACH, "ep": self.core.shards[sid].epoch}))
        self._retired.append((self.clock.now(), conn, address, sid))

    async def _close_retired(self, address: str | None = None, sid: int | None = None) -> None:
        """Close retired connections: shard ``sid``'s to ``address``, else those retired long enough ago."""
        keep = []
        for since, conn, addr, s in self._retired:
            if (addr == address and s == sid) or (address is None and self.clock.now() - since > RETIRED_CONNECTION_S):
                with contextlib.suppress(Exception):
                    await conn.close()
            else:
                keep.append((since, conn, addr, s))
        self._retired = keep

    async def _discard_failed(self, sid: int) -> None:
        conn = self._conns.get(sid)
        reader = self._readers.pop(sid, None)
        if reader is not None:
            reader.cancel()
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._wire_lock:
            pass  # a SUBMIT the caller's thread is sending is in ``_handover`` now; later ones find us closed
        self._adopt()
        jobs = list(self._jobs)
        for job in jobs:
            job.cancel()
        if jobs:
            await asyncio.gather(*jobs, return_exceptions=True)  # shards being opened or failed over: abandoned
        live = {sid: c for sid, c in self._conns.items() if sid in self.core.shards}
        if live and self._pending and self._broken is None:
            # fire-and-forget work still waiting for room in our window goes out now, whatever the window
            unsent = [sp for sp in [*self._outbox, *(sp for _, _, sp in self._urgent)] if sp["id"] in self._kept]
            self._outbox.clear()
            self._urgent.clear()
            for sp in unsent:
                sub = self.core.route(sp)
                if isinstance(sub, Submit):
                    self._submit_to(sub.sid, sub.specs, sub.puts)
            # nobody can collect these results any more: cancel them now rather than when our lease runs out; the
            # answer to a ping says the node has read the cancel (one socket, in order) before we hang up
            doomed = [k for k in self._pending if k not in self._kept]
            for sid, ids in self.core.by_shard(doomed).items():
                live[sid].send(encode({"t": M.CANCEL, "ids": ids}))
            with contextlib.suppress(MeshError, AssertionError):
                await self._request({"t": M.PING}, M.PONG, 1.0)
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watcher
        for reader in list(self._readers.values()):
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        for f in list(self._pending.values()):
            if not f.done():
                f._cf.set_exception(MeshUnavailable("client closed before the task finished"))
        self._pending.clear()
        for _, conn, _, _ in self._retired:
            with contextlib.suppress(Exception):
                await conn.close()
        self._retired.clear()
        if self._shm_area is not None:
            self._shm_area.close()  # our lock, and any file of a put cut short
        for conn in self._conns.values():
            # what we held is freed at once (a client that cannot say so is freed after the node's memory lease)
            with contextlib.suppress(Exception):
                conn.send(encode({"t": M.BYE}))
            if isinstance(conn, ZmqConnection):
                await conn.close(linger=0.5)  # the goodbye leaves before the socket closes
            else:
                await conn.close()
        if self._zmq_ctx is not None:
            with contextlib.suppress(Exception):
                self._zmq_ctx.destroy(linger=500)  # any socket left closes too; the goodbyes have 0.5 s to leave

    def _fire_and_forget(self, keys: list[str]) -> None:
        """Loop thread only. The owner keeps these tasks (and their dependencies) running if we leave; a resubmit
        after failover carries the mark (``ff`` in the spec)."""
        if self._handover or self._handback:
            self._adopt()
        todo = list(keys)
        while todo:  # what they depend on is kept too (not cancelled at close): they cannot run without it
            k = todo.pop()
            spec = self._specs.get(k)
            if spec is not None and k in self._pending and k not in self._kept:
                spec["ff"] = True
                self._kept.add(k)
                todo.extend(d.split("#", 1)[0] for d in spec["deps"])
        for sid, ids in self.core.by_shard(keys).items():
            self._send({"t": M.KEEP, "ids": ids}, sid=sid)

    def _check_open(self) -> None:
        """Every API call after ``close()`` (or after failover gave up) raises this, before it does anything."""
        if self._closed or self._broken is not None:
            raise self._broken or MeshUnavailable("client is closed")

    # ---- submission (any thread: encoding; loop thread: enqueue) --------------------------------------
    def _fn_payload(self, fn: Callable[..., Any]) -> Payload:
        if isinstance(fn, types.MethodType):  # ``inspect.ismethod``
            # a bound method is made afresh at each attribute access, so a cache keyed by it never hits; kept, it
            # would keep its object alive (concurrent.futures' "no stale references")
            return encode_function(fn, allow_pickle=self.allow_pickle)
        try:
            cached = self._fn_cache.get(fn)
        except TypeError:
            cached = None
        if cached is not None:
            return cached
        payload = encode_function(fn, allow_pickle=self.allow_pickle)
        with contextlib.suppress(TypeError):
            if len(self._fn_cache) > 256:
                self._fn_cache.clear()
            self._fn_cache[fn] = payload
        return payload

    def _prepare(
        self,
        fn: Callable[..., Any],
        args: Sequence[Any],
        kwargs: Mapping[str, object],
        *,
        pure: bool = False,
        retries: int = 0,
        key: str | None = None,
        fn_payload: Payload | None = None,
        resources: ResourceSpec | None = None,
        parts: int = 0,
        task_timeout: float | None = None,
        priority: int = 0,
        deadline: Deadline = None,
        report_start: bool = False,
        keep_on_device: bool = False,
        device: str | None = None,
    ) -> tuple[M.SubmitTask, Future]:
        self._check_open()
        args_payload, refs = dumps([list(args), kwargs], allow_pickle=self.allow_pickle, ref_types=(Future,))
        tid = key or new_id("t")
        spec: M.SubmitTask = {
            "id": tid,
            "fn": fn_payload or self._fn_payload(fn),
            "args": args_payload,
            "deps": list(refs),  # one entry per reference: the owner counts them that way
            "pure": pure,
            "retries": retries,
        }
        res = parse_resources(resources) if resources else {}
        if device is not None:
            from meshaios.devices.choice import submit_device

            dev, res = submit_device(device, fn, res)
            if dev:
                spec["dev"] = dev  # "cpu" or "any": placement may choose (docs/devices.md)
        if res:
            spec["resources"] = res
        if parts:
            spec["parts"] = parts
        if task_timeout:
            spec["timeout"] = float(task_timeout)
        if priority:
            spec["priority"] = _check_priority(priority)
        if deadline is not None:
            spec["deadline"] = _deadline_in(deadline)
        if report_start:
            spec["rs"] = True  # the node that runs it tells us when it starts (Future.running)
        if keep_on_device:
            spec["kd"] = True  # a kernel's result stays on its GPU however small (docs/devices.md)
        return spec, Future(tid, self)

    def _enqueue(self, items: list[tuple[M.SubmitTask, Future]]) -> None:
        """Loop thread only."""
        if self._handover or self._handback:
            self._adopt()  # tasks the caller's thread sent come first, as they were submitted first
        idle = not self._pending
        if idle:
            for s in self.core.shards.values():
                s.progress = self.clock.now()
        for spec, fut in items:
            self._pending[spec["id"]] = fut
            self.core.add(spec)
            if spec.get("priority", 0) > 0:
                # ahead of ordinary work still waiting for room in the window (the owner orders the rest)
                self._seq += 1
                heapq.heappush(self._urgent, (-spec["priority"], self._seq, spec))
            else:
                self._outbox.append(spec)
        if idle and not self._flush_scheduled:
            self._flush()  # nothing else in flight: no reason to wait for the next loop iteration
        else:
            self._schedule_flush()  # more may come in this iteration: one SUBMIT for all of them

    def _submit_direct(self, item: tuple[M.SubmitTask, Future]) -> bool:
        """The sync ``Client``'s caller thread: send a lone task's SUBMIT from here, sparing the round trip a hand-off
        to the loop's thread (docs/performance.md, sections 16 and 20). Only when nothing else of ours is unfinished
        or waiting and the task has no inputs and no priority: no window, no order to keep, and no owner to choose
        but the next live shard in turn, as ``Shards._pick`` takes them when all own nothing. True: sent; the loop's
        thread records it as ``_flush`` would have (``_adopt``) the next time it reads a message, submits, flushes,
        cancels or beats -- before it reads any answer, and off the round trip's way.
        False: nothing was sent, the ordinary path takes it."""
        spec, fut = item
        if (self._pending or self._outbox or self._urgent or self._unanswered or spec["deps"] or "priority" in spec
                or self._loop is None or threading.get_ident() == self._loop_thread):  # fmt: skip
            return False
        # loop-thread state, read once: the checks below stand or fall on it
        live = [item for item in list(self.core.shards.items()) if not item[1].failing]
        if not live:
            return False
        self._direct_turn += 1
        sid, shard = live[self._direct_turn % len(live)]
        conn = self._conns.get(sid)
        send = getattr(conn, "send_threadsafe", None)
        if conn is None or send is None or shard.failing:
            return False
        if _header_bytes(spec) > self._batch_bytes.get(sid, SUBMIT_HEADER_BYTES):
            return False
        ep = shard.epoch
        with self._wire_lock:
            if self._closed or self._broken is not None:
                return False
            req = self._next_req + 1
            frames = encode({"t": M.SUBMIT, "req": req, "tasks": [spec], "ep": ep})
            if self._streams_out.should_stream(frames):
                return False
            self._handover.append((spec, fut, conn, sid, ep, req))  # before the send: its answer finds it there
            if isinstance(conn, ZmqConnection):
                fut._direct = (conn, sid, False)  # its caller may read the answer itself (``_read_own``)
            try:
                sent = send(frames)
            except BaseException as exc:  # a Ctrl-C: if the SUBMIT began, it went whole (io/lean.py ``send_frames``)
                sent = bool(getattr(exc, "sent_whole", False))
                if sent:
                    with contextlib.suppress(RuntimeError):
                        self._loop.call_soon_threadsafe(self._adopt)
                raise
            finally:  # the task is recorded as sent (the ``_handover`` entry kept) exactly when its SUBMIT went
                if sent is False:
                    self._handover.pop()
                    fut._direct = None
                else:
                    if sent is None and fut._direct is not None:  # nothing waited: its reader may poll first
                        fut._direct = (fut._direct[0], sid, True)
                    self._unanswered.add(spec["id"])
                    self._next_req = req
                    self.sent_direct += 1
            if sent is False:
                return False
        if sent:  # a message is waiting that the loop may not have been told of: it reads it (after ``_adopt``)
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: ``close`` adopted what was sent
                self._loop.call_soon_threadsafe(self._adopt)
        return True

    def _adopt(self) -> None:
        """Loop thread: record the tasks the caller's thread sent (``_submit_direct``) as sent, as ``_flush`` and
        ``_submit_to`` would have; one sent on a connection that a failover replaced meanwhile, or at an older
        epoch, goes the ordinary way (resubmitted, as a failover resubmits what its shard had)."""
        q = self._handover
        if not q and not self._handback:
            return
        with self._wire_lock:  # a send under way finishes first
            items = list(q)
            q.clear()
            back = list(self._handback)
            self._handback.clear()
            self._unanswered.clear()  # those not answered yet are pending now: the loop's reader reads for them
            # what the caller's thread read, taken from each connection once, whole and in order (io/lean.py
            # ``take_kept``), here: under the lock, so that every answer taken is to a task in ``items`` (its
            # entry goes in before its SUBMIT, under this lock) -- one taken after would be read before its task is
            # recorded, counted a duplicate, and its task left pending
            taken: list[tuple[int, Connection, list[list[Any]]]] = []
            for sid, conn, _batch, _msgs in back:
                if all(c is not conn for _s, c, _k in taken):
                    take = getattr(conn, "take_kept", None)
                    taken.append((sid, conn, take() if take is not None else []))
        rechecked: list[Connection] = []
        for spec, fut, conn, sid, ep, req in items:
            rc = getattr(conn, "recheck", None)
            if rc is not None and conn not in rechecked:
                rechecked.append(conn)
                rc()  # the send may have consumed the signal of a message that arrived meanwhile (io/lean.py)
            shard = self.core.shards.get(sid)
            if shard is None or shard.failing or shard.epoch != ep or self._conns.get(sid) is not conn:
                self._enqueue([(spec, fut)])
                continue
            if not self._pending:
                now = self.clock.now()
                for s in self.core.shards.values():
                    s.progress = now
            tid = spec["id"]
            self._pending[tid] = fut
            self.core.add(spec)
            self.core.sent(tid, sid)
            self._inflight += 1
            refusable = self._refusable.get(sid)
            if refusable is not None:
                refusable[req] = [spec]
        if back:
            # decoded with what the caller's thread decoded, where it did
            now = self.clock.now()
            for sid, conn, kept in taken:
                if not kept or self._conns.get(sid) is not conn:
                    continue  # a failover replaced it: not read, as ``_on_batch`` would not have
                seen: dict[int, M.Message | None] = {}
                for _sid, c, batch, msgs in back:
                    if c is conn:
                        seen.update(zip(map(id, batch), msgs, strict=True))
                self.core.heard(sid, now)
                for frames in kept:
                    k = id(frames)
                    msg = seen[k] if k in seen else _decoded_one(frames)
                    if msg is not None:
                        self._on_message(msg, sid)  # the caller's own answer: its accounts (it settled the future)
        if len(self._lazy_releases) >= RELEASE_BATCH:
            self._schedule_flush()  # the releases go with the next flush, as they would have with this one

    def _read_own(self, fut: Future, timeout: float | None) -> None:
        """The sync ``Client``'s caller, waiting for a task it sent itself (``_submit_direct``): this thread reads the
        connection while it waits, sparing the answer two thread hand-offs, libzmq's I/O thread -> the loop's thread
        -> this one (docs/performance.md section 20). Its own answer (a RESULTS of this task alone, with the value
        in it) it settles here; the loop's thread takes in what was read later, as if it had read it (``_adopt``:
        the next time it reads, submits, flushes, cancels, releases or beats). Anything else read (other tasks'
        results, a PONG, a refusal, a result kept at its node, a stream's chunks) goes to the loop at once, in the
        order read, and this thread stops reading; so it does after READ_OWN_S, at its timeout, when a failover
        replaces the connection or the client closes. Then it waits the ordinary way, and the loop's reader reads
        again (io/lean.py ``end_read``)."""
        direct = fut._direct
        loop = self._loop
        me = threading.get_ident()
        if direct is None or loop is None or me == self._loop_thread:
            return
        conn, sid, quiet = direct
        give_back = True
        key = fut.key
        told = False  # the loop has a notice of every batch this thread read (``_handback``)
        try:
            # in the ``try``: a Ctrl-C just after it began still ends this thread's read (``finally``)
            if not conn.begin_read():  # another thread reads now: the loop reads once it stops (or closed)
                return
            t0 = time.monotonic()
            limit = READ_OWN_S if timeout is None else min(READ_OWN_S, timeout)
            while fut._state == _PENDING and fut._cf_ is None and self._conns.get(sid) is conn and not self._closed:
                told = False  # before the read: a Ctrl-C from here to the notice leaves the loop untold
                try:
                    # what this returns stays the loop's to take in (io/lean.py ``_take``): a Ctrl-C from here on
                    # neither loses it nor hands it over twice, whatever the instant
                    batch = conn.read(min(READ_SLICE_S, max(0.0, limit - (time.monotonic() - t0))), not quiet)
                    quiet = False
                except zmq.ZMQError:
                    break  # the socket went away under us: the loop's reader has the last word
                if batch is None:
                    break  # closed
                if batch:
                    answer: M.Result | None = None
                    msgs = [_decoded_one(frames) for frames in batch]
                    for msg in msgs:
                        if msg is not None and msg["t"] == M.RESULTS and answer is None and len(msg["results"]) == 1:
                            r = msg["results"][0]
                            if isinstance(r, dict) and r.get("id") == key and (not r.get("ok") or "v" in r):
                                answer = r
                    if self._conns.get(sid) is not conn:
                        answer = None  # a failover replaced it meanwhile: the new owner's answer counts
                    with self._wire_lock:
                        # a notice for the loop (``_adopt`` takes the messages from ``conn``), with their decoding
                        self._handback.append((sid, conn, batch, msgs))
                        told = True
                        # already pending at the loop (adopted meanwhile): the next lone task waits for its accounts
                        adopted = answer is not None and key not in self._unanswered
                        if answer is not None:
                            self._unanswered.discard(key)
                    if answer is not None:
                        fut.node = str(answer.get("node", ""))
                        self._settle(fut, answer)
                        self.read_direct += 1
                    others = len(msgs) - (answer is not None)
                    if others or adopted:
                        self.handed_back += others
                        with contextlib.suppress(RuntimeError):  # closed meanwhile: ``close`` took them in
                            loop.call_soon_threadsafe(self._adopt)  # what is not ours, now
                        break
                    if answer is not None:
                        # the loop's reader may stay parked (io/lean.py) while it expects nothing: no task of its
                        # own, request or heartbeat in flight (a reply to what it sent makes it read again)
                        give_back = bool(self._pending or self._by_req or self._replies or self._ping_marks.get(sid))
                        break
                if time.monotonic() - t0 >= limit:
                    break
        finally:
            # stopped by an exception (a Ctrl-C) or not, what was read is the loop's in ``conn`` (io/lean.py
            # ``_take``); ``end_read`` asks for the loop's reader if it must read it (``give_back``)
            fut._direct = None
            again = True
            try:
                again = conn.end_read(give_back, me, told)
            except BaseException:  # a second Ctrl-C inside: the read ends all the same, the loop reads again
                while True:  # however many Ctrl-Cs land here: a read left begun refuses every other reader
                    try:
                        conn.end_read(True, me)  # a no-op once the read has ended: safe to say again
                        break
                    except KeyboardInterrupt:
                        continue
                raise
            finally:
                if again:
                    with contextlib.suppress(RuntimeError):
                        loop.call_soon_threadsafe(conn.recheck)

    def _give_back(self, fut: Future) -> None:
        """A future sent from the caller's thread is looked at otherwise than by waiting for it (``done``, a callback,
        a wait on many): the loop's reader, perhaps parked while a caller read (io/lean.py), reads for it again."""
        direct, fut._direct = fut._direct, None
        if direct is None:
            return
        conn = direct[0]
        if threading.get_ident() == self._loop_thread:
            conn.recheck()
            return
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(conn.recheck)

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._handover or self._handback:
            self._adopt()
        if not self.core.shards:
            return
        if len(self._lazy_releases) >= RELEASE_BATCH:
            self._take_lazy_releases()
        room = self.window - self._inflight  # backpressure: the rest waits for results
        out: list[M.SubmitTask] = []
        # tasks of priority > 0 may also use a reserve of a tenth of the window: a full window of ordinary work
        # must not hold them here until some of it has finished
        while self._urgent and len(out) < room + self.window // 10:
            out.append(heapq.heappop(self._urgent)[2])
        out.extend(self._outbox.popleft() for _ in range(max(0, min(len(self._outbox), room - len(out)))))
        self._inflight += len(out)
        by_shard: dict[int, list[M.SubmitTask]] = {}
        route = self.core.route
        for spec in out:
            sub = route(spec)  # None: held until inputs owned by other shards have finished
            if sub is None:
                continue
            if isinstance(sub, Resolve):  # an input failed already
                self._do([sub])
                continue
            if sub.puts:
                self._submit_to(sub.sid, [], sub.puts)
            by_shard.setdefault(sub.sid, []).extend(sub.specs)
        for sid, specs in by_shard.items():
            self._submit_to(sid, specs)
        self._do(self.core.routed_releases())  # inputs released meanwhile: after the SUBMITs that name them
        if self._cancels:
            ids, self._cancels = self._cancels, []
            for tid in ids:
                settled = self.core.cancel_held(tid)
                if settled is not None:
                    self._do([settled])
            for sid, sent in self.core.by_shard(ids).items():
                self._send({"t": M.CANCEL, "ids": sent}, sid=sid)
        if self._releases:
            todo, self._releases = self._releases, {}
            for sid, rel in todo.items():
                conn = self._conns.get(sid)
                if conn is not None:
                    release: M.Release = {"t": M.RELEASE, "ids": rel}
                    conn.send(encode(release))

    def _cancel_threadsafe(self, keys: list[str]) -> None:
        loop = self._loop
        if loop is None or self._closed or loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            self._cancel(keys)
        else:
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                loop.call_soon_threadsafe(self._cancel, keys)

    def _cancel(self, keys: list[str]) -> None:
        """Loop thread. A spec not sent yet goes marked (its owner registers it as cancelled, and so does a new owner
        after a failover); one sent already is named in a CANCEL to its owner, which follows the SUBMITs in order;
        one held here for inputs of other owners is settled at once. The future stays pending until then, so the
        window's count stays right."""
        if self._handover or self._handback:
            self._adopt()
        for key in keys:
            spec = self._specs.get(key)
            if spec is not None and key in self._pending:
                spec["cancel"] = True
                self._cancels.append(key)
        if self._cancels:
            self._schedule_flush()

    def cancel(self, futures: Iterable[Future]) -> int:
        """Cancel these futures (``Future.cancel``), in one message; how many were still unfinished."""
        return _cancel_all(self, futures)

    def _release_threadsafe(self, key: str, lazy: bool = False) -> None:
        """A future was dropped: its owner may forget the task. ``lazy``: no hurry (a small result, already here):
        queued for the next flush of at least RELEASE_BATCH ids or the next heartbeat, whichever comes first,
        rather than waking the loop and sending one RELEASE per future (a tight loop of ``submit().result()``
        did both per task)."""
        loop = self._loop
        if loop is None or self._closed or loop.is_closed():
            return
        if lazy:
            self._lazy_releases.append(key)  # a deque: appends from any thread are safe
            return
        loop.call_soon_threadsafe(self._add_release, key)

    def _take_lazy_releases(self) -> None:
        """Loop thread: the lazily released ids join the next RELEASE."""
        q = self._lazy_releases
        while q:
            self._add_release(q.popleft())

    def _add_release(self, key: str) -> None:
        if self._handover or self._handback:
            self._adopt()  # a task sent, and perhaps answered, from the caller's thread: known before it is released
        instructions = self.core.release(key)
        if not self._closed:
            self._do(instructions)

    def submit(
        self,
        fn: Callable[..., Any],
        /,
        *args: Any,
        pure: bool = False,
        retries: int = 0,
        resources: ResourceSpec | None = None,
        task_timeout: float | None = None,
        priority: int = 0,
        deadline: Deadline = None,
        keep_on_device: bool = False,
        device: str | None = None,
        **kwargs: Any,
    ) -> Future:
        """Run ``fn(*args, **kwargs)`` somewhere in the mesh. Futures among the args become dependencies.

        ``resources`` are hard constraints, e.g. ``{"gpu": 1, "gpu_memory": "4GiB", "memory": "2GiB"}``: the task
        runs only on a node that has them, fails at once if no node of the mesh has them, and waits while they
        are busy.

        ``priority`` (an int, default 0): among tasks waiting for a slot, higher ones start first -- at the owner,
        in the executing node's queue, and on their way out of this client when its window is full; work stealing
        gives away the lowest first. Tasks of equal priority from different clients take turns. ``deadline``:
        seconds from now (a number) or a ``datetime``; ready tasks with deadlines are hurried (earliest deadline
        first, docs/scheduling.md 10.3) and the owner counts deadlines met and missed (``meshaios status``,
        ``/metrics``). ``keep_on_device``: a kernel run on a GPU keeps its result there even when it is small
        (large ones always stay), for the next kernel on that GPU; this client still receives numpy. ``device``:
        ``"gpu"`` (as ``resources={"gpu": 1}``), ``"cpu"`` (never on a GPU), ``"any"`` (a kernel that runs on
        both: EFT placement picks the device with the earliest predicted finish), or None (the node's policy,
        ``--gpu-choice``); a ``ValueError`` for any other value or one that contradicts ``resources``
        (docs/devices.md). These keywords are meshaios's: they never reach ``fn``.
        """
        item = self._prepare(
            fn, args, kwargs, pure=pure, retries=retries, resources=resources, task_timeout=task_timeout,
            priority=priority, deadline=deadline, keep_on_device=keep_on_device, device=device,
        )
        self._enqueue([item])
        return item[1]

    # ---- data plane -----------------------------------------------------------------------------------
    async def put(self, value: Any, timeout: float = 60.0, device: str | None = None) -> Future:
        """Scatter ``value`` into the mesh (kept by the entry node and replicated to a second one). With
        ``device="gpu"`` the copy goes to a GPU node, which keeps it on its device too (docs/devices.md)."""
        self._check_open()
        if device not in (None, "cpu", "gpu"):
            raise ValueError(f"device must be None, 'cpu' or 'gpu', not {device!r}")
        gpu = device == "gpu"
        payload, _ = dumps(value, allow_pickle=self.allow_pickle)
        oid = new_id("p")
        fut = Future(oid, self)
        reply = await self._put_shm(oid, payload, timeout, gpu)
        if reply is None or (reply["t"] == M.PUT_ACK and reply.get("noshm") is True):
            put: M.Put = {"t": M.PUT, "req": 0, "id": oid, "val": payload}
            if gpu:
                put["dev"] = "gpu"
            reply = await self._request_req(put, timeout)
        if reply["t"] != M.PUT_ACK or not reply["ok"]:
            raise MeshError(f"put failed: {reply.get('err', '')}")
        locs = reply.get("loc")
        holders = [x for x in locs if isinstance(x, str)] if isinstance(locs, list) else []
        self.core.put_done(oid, payload.nbytes, holders or [self._node_id or ""], 0)
        fut._cf.set_result(_Remote(payload.nbytes, 0))
        return fut

    async def _fetch(self, obj_id: str, timeout: float | None = None) -> Any:
        get: M.Get = {"t": M.GET, "req": 0, "id": obj_id}
        if self._shm_host:
            get["shm"] = self._shm_host  # a node of this machine and user may answer with a file in /dev/shm
        sid = self.core.sid_of(obj_id)  # its owner knows where it lives
        sid = sid if sid is not None and sid in self._conns else 0
        reply = await self._request_req(get, timeout or 300.0, sid)
        if reply["t"] != M.GOT:
            raise MeshError(f"cannot get {obj_id}: the node answered {reply['t']}")
        lost = reply.get("lost")
        if isinstance(lost, str):
            raise ObjectLost(lost, task_id=obj_id)
        val = reply.get("val")
        if reply["ok"] is True and "shm" in reply:
            try:
                val = self._claim_shm(reply, sid)
            except (shm.ShmError, WireError) as exc:
                self.stats["shm_refused"] += 1
                self._shm_host = ""  # from now on over the socket
                log.warning("shared memory from node refused, getting %s over the socket instead: %s", obj_id, exc)
                return await self._fetch(obj_id, timeout)
        if not reply["ok"] or not isinstance(val, Payload):
            raise MeshError(f"cannot get {obj_id}: {reply.get('err', 'no value')}")
        try:
            return loads(val, allow_pickle=self.allow_pickle)
        except WireError as exc:
            raise SerializationError(f"value of {obj_id} could not be decoded: {exc}") from exc

    async def _put_shm(self, oid: str, payload: Payload, timeout: float, gpu: bool) -> M.Got | M.PutAck | None:
        """A put to a node of this machine: the buffers go into a file of ours that the node maps (None: not
        possible here, send the value itself). The file is gone once the node has it, or when we give up."""
        node = self.node
        if not self._shm_host or node is None or node.get("hid") != self._shm_host:
            return None
        if shm.buffer_bytes(payload) < shm.MIN_BYTES:
            return None
        if self._shm_area is None:
            area = shm.ShmArea(node["mesh"], self.client_id)
            self._shm_area = area if area.open() else None  # our lock: nodes sweep our files if we die
            if self._shm_area is None:
                self._shm_host = ""
                return None
        assert self._loop is not None
        path = self._shm_area.new_path()
        try:
            sizes = await self._loop.run_in_executor(None, shm.write_file, path, payload)
        except OSError as exc:
            log.warning("cannot write %s, putting over the socket instead: %s", path, exc)
            return None
        put: M.Put = {"t": M.PUT, "req": 0, "id": oid, "shm": shm.ShmRef(path.name, payload.blob, sizes).to_wire()}
        if gpu:
            put["dev"] = "gpu"
        try:
            reply = await self._request_req(put, timeout)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # the node unlinked it when it mapped it; if it never did, nobody will
        if reply["t"] == M.PUT_ACK and reply.get("noshm") is True:
            self.stats["shm_refused"] += 1
            self._shm_host = ""
            log.warning("the node refused the put's shared memory, putting over the socket: %s", reply.get("err"))
        else:
            self.stats["shm_sent"] += 1
        return reply

    def _claim_shm(self, reply: M.Got, sid: int = 0) -> Payload:
        """Map the file the node named (checked: this mesh's, made by the node we asked, ours, 0600), as in
        node-to-node fetches; the arrays are read-only views of the mapping."""
        node = self._shard_nodes.get(sid)
        if node is None:
            raise shm.ShmError("no node to take a file from")
        ref = shm.parse_ref(reply.get("shm"), shm.mesh_tag(node["mesh"]), node["node"])
        val = shm.open_ref(shm.user_dir(), ref)
        self.stats["shm_received"] += 1
        return val

    def _fetch_blocking(self, obj_id: str, timeout: float | None) -> Any:
        loop = self._loop
        if loop is None:
            raise MeshUnavailable("client is not connected")
        self._check_open()
        if threading.get_ident() == self._loop_thread:
            raise RuntimeError("Future.result() would block the client's event loop: use `await future` there")
        try:
            return asyncio.run_coroutine_threadsafe(self._fetch(obj_id, timeout), loop).result(timeout)
        except concurrent.futures.TimeoutError:
            raise MeshTimeoutError(f"fetching {obj_id} took longer than {timeout} s") from None

    async def _request_req(self, msg: M.Get | M.Put, timeout: float, sid: int = 0) -> M.Got | M.PutAck:
        """A request to shard ``sid``'s node answered by a reply carrying the same ``req`` number (set here:
        ``msg["req"]`` is replaced)."""
        self._check_open()
        assert self._loop is not None
        req = self._new_req()
        fut: asyncio.Future[M.Got | M.PutAck] = self._loop.create_future()
        self._by_req[req] = fut
        self._req_shard[req] = sid
        msg["req"] = req
        if msg["t"] == M.GET:
            self._gets[req] = msg
        self._send(msg, tag=req, sid=sid)
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            where = self.core.shards[sid].address if sid in self.core.shards else self._address
            raise MeshTimeoutError(f"no answer to {msg['t']} from {where} within {timeout} s") from None
        finally:
            self._by_req.pop(req, None)
            self._req_shard.pop(req, None)
            self._gets.pop(req, None)

    def _shuffle_tasks(
        self,
        fn: Callable[..., Any],
        inputs: Sequence[Any],
        partitions: int,
        reducer: Any,
        mapper: Any,
        combiner: Any = None,
    ) -> list[Future]:
        from meshaios.shuffle import ops

        if partitions < 1:
            raise ValueError("partitions must be at least 1")
        extra = (combiner,) if combiner is not None else ()
        items = []
        for x in inputs:
            args = (mapper, x, partitions, *extra) if mapper is not None else (x, partitions, *extra)
            items.append(self._prepare(fn, args, {}, parts=partitions))
        maps = [f for _, f in items]
        for j in range(partitions):
            refs = [m.part(j) for m in maps]
            items.append(self._prepare(ops.reduce_partition, (reducer, *refs), {}))
        self._enqueue_any(items)
        return [f for _, f in items[len(maps) :]]

    def _enqueue_any(self, items: list[tuple[M.SubmitTask, Future]]) -> None:
        self._enqueue(items)

    def mapreduce(
        self,
        mapper: Callable[..., Any],
        reducer: Callable[..., Any] | None,
        inputs: Iterable[Any],
        partitions: int = 8,
        *,
        combiner: Callable[..., Any] | None = None,
    ) -> list[Future]:
        """MapReduce: one map task per input, ``partitions`` reduce tasks; one future per partition.

        ``mapper(input)`` emits records: ``(key, value)`` pairs (a list, a generator, any iterable), a dict
        ``{key: value}``, or ``(keys, values)`` numpy arrays. Each map output is hash-partitioned by key into
        ``partitions`` parts (keys that compare equal, like ``1`` and ``1.0``, in the same part); reducer ``j``
        pulls part ``j`` of every map output peer to peer. The values of a key accumulate: for key-value records
        reducer ``j`` is called as ``reducer(key, [values...])`` once per key and its future's result is
        ``{key: reduced}`` with the keys sorted; for arrays it is called once as ``reducer(keys, values)``.
        ``combiner(key, [values...]) -> value`` (optional, for associative reducers such as a sum) runs map-side
        before the shuffle; the reducer then gets one combined value per map task. Details and the exact shapes:
        ``meshaios.shuffle.ops`` and docs/dataplane.md.

        For example (``words`` and ``add`` importable on the nodes, or any function on a mesh with a token)::

            def words(doc): return [(w, 1) for w in doc.split()]
            def add(word, counts): return sum(counts)

            parts = c.gather(c.mapreduce(words, add, ["the cat the hat", "the end"], partitions=2, combiner=add))
            counts = {w: n for part in parts for w, n in part.items()}      # {"the": 3, "cat": 1, ...}
        """
        from meshaios.shuffle import ops

        return self._shuffle_tasks(
            ops.map_partition, list(inputs), partitions, _fn_arg(reducer), _fn_arg(mapper), _fn_arg(combiner)
        )

    def shuffle(
        self, data: Iterable[Any], partitions: int = 8, reducer: Callable[..., Any] | None = None
    ) -> list[Future]:
        """Hash-partition computed data (futures or values) into ``partitions`` parts, one future per part:
        the combined part, or ``reducer`` applied to it."""
        from meshaios.shuffle import ops

        return self._shuffle_tasks(ops.identity_partition, list(data), partitions, _fn_arg(reducer), None)

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        pure: bool = False,
        retries: int = 0,
        progress: bool = False,
        priority: int = 0,
        deadline: Deadline = None,
    ) -> list[Future]:
        """One task per call; ``priority`` as in ``submit``."""
        fp = self._fn_payload(fn)
        items = [
            self._prepare(fn, a, {}, pure=pure, retries=retries, fn_payload=fp, priority=priority, deadline=deadline)
            for a in zip(*iterables, strict=False)
        ]
        self._enqueue(items)
        futures = [f for _, f in items]
        if progress:
            _progress(futures, _name(fn))
        return futures

    async def gather(self, futures: Iterable[Future], progress: bool = True, errors: str = "raise") -> list[Any]:
        """Every result, in order. ``progress``: a bar in a terminal or notebook while it waits. ``errors``: as
        in Dask, ``"raise"`` the first failed task's error, or ``"skip"`` failed (and cancelled) tasks, leaving
        their results out of the list."""
        skip = _errors_mode(errors)
        futures = list(futures)
        out = []
        with _progress(futures, "gather") if progress else contextlib.nullcontext():
            for f in futures:
                try:
                    out.append(await f)
                except TASK_FAILURES:
                    if not skip:
                        raise
                except asyncio.CancelledError:
                    # a cancelled meshaios future reaches us as asyncio's CancelledError: skip it only when it is
                    # that future's, never when this coroutine itself is being cancelled
                    me = asyncio.current_task()
                    if not (skip and f._cf.cancelled() and (me is None or not me.cancelling())):
                        raise
        return out

    async def as_completed(self, futures: Iterable[Future]) -> AsyncIterator[Future]:
        by_cf = {asyncio.wrap_future(f._cf): f for f in futures}
        pending = set(by_cf)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for d in done:
                yield by_cf[d]

    async def status(self, timeout: float = 5.0) -> M.StatusReply:
        reply = await self._request({"t": M.STATUS}, M.STATUS_REPLY, timeout)
        assert reply["t"] == M.STATUS_REPLY  # replies are matched by their type
        return reply

    async def ping(self, timeout: float = 5.0) -> float:
        t0 = time.perf_counter()
        await self._request({"t": M.PING}, M.PONG, timeout)
        return time.perf_counter() - t0

    async def _request(self, msg: M.Message, reply_type: str, timeout: float) -> M.Message:
        self._check_open()
        assert self._conn is not None
        assert self._loop is not None
        fut = self._replies.get(reply_type)
        if fut is None or fut.done():
            fut = self._loop.create_future()
            self._replies[reply_type] = fut
        if msg["t"] == M.PING:
            self._send_ping(0, self._conn, msg)
        else:
            self._conn.send(encode(msg))
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(fut)
        except TimeoutError:
            raise MeshTimeoutError(f"no {reply_type} from {self._address} within {timeout} s") from None

    def _send(self, msg: M.Message, tag: object = None, sid: int = 0) -> bool:
        """To shard ``sid``'s node: as one message, or streamed in flow-controlled chunks when large (True)."""
        conn = self._conns[sid]
        frames = encode(msg)
        if self._streams_out.should_stream(frames):
            self._stream_actions(self._streams_out.open(sid, frames, self.clock.now(), tag))
            return True
        conn.send(frames)
        return False

    def _assembled(self, sid: int, fut: asyncio.Future[list[Any]]) -> None:
        if fut.cancelled():
            return
        try:
            msg = decode_message(fut.result())
        except WireError as exc:
            log.warning("malformed message from node: %s", exc)
            return
        if msg["t"] not in (M.XHEAD, M.XCHUNK, M.XACK):
            self._on_message(msg, sid)

    def _stream_actions(self, actions: list[StreamAction]) -> None:
        for a in actions:
            if isinstance(a, Emit):
                conn = self._conns.get(a.dest) if type(a.dest) is int else None
                if conn is not None:
                    conn.send(encode(a.msg))
            elif isinstance(a, Delivered) and type(a.src) is int:
                assert self._loop is not None
                # one copy into place, on a thread: the loop keeps hearing the node (heartbeats) meanwhile
                done = self._loop.run_in_executor(None, assemble, a.sizes, a.parts)
                done.add_done_callback(functools.partial(self._assembled, a.src))
            elif isinstance(a, StreamFailed) and type(a.tag) is int:
                fut = self._by_req.get(a.tag)
                if fut is not None and not fut.done():
                    fut.set_exception(MeshUnavailable(f"sending to {self._address} failed: {a.reason}"))

    # ---- receiving ------------------------------------------------------------------------------------
    async def _read_loop(self, sid: int, conn: Connection) -> None:
        serve, unserve = getattr(conn, "serve", None), getattr(conn, "unserve", None)
        if serve is None or unserve is None:  # a connection that can only be awaited (the in-process one)
            while self._on_batch(sid, conn, await conn.recv_batch()):
                pass
            return
        # each batch straight from the socket's reader callback: no task woken per message (io/lean.py ``serve``)
        assert self._loop is not None
        replaced = self._loop.create_future()

        def handler(batch: list[list[Any]]) -> None:
            if not self._on_batch(sid, conn, batch) and not replaced.done():
                replaced.set_result(None)

        serve(handler)
        try:
            await replaced
        finally:
            unserve()

    def _on_batch(self, sid: int, conn: Connection, batch: list[list[Any]]) -> bool:
        """Messages from shard ``sid``'s connection; False once a failover has replaced it (nothing read then)."""
        if self._conns.get(sid) is not conn:
            return False
        if self._handover or self._handback:
            self._adopt()  # before any answer to what the caller's thread sent, and what the caller read first
        self.core.heard(sid, self.clock.now())
        for msg in _decoded(batch):
            self._on_message(msg, sid)
        return True

    def _on_message(self, msg: M.Message, sid: int = 0) -> None:
        t = msg["t"]
        if msg["t"] == M.XCHUNK:
            d = msg["d"]
            if not d.blob and len(d.buffers) == 1:
                now = self.clock.now()
                self._stream_actions(self._streams_in.on_chunk(sid, msg["x"], msg["o"], d.buffers[0], now))
        elif msg["t"] == M.XHEAD:
            self._stream_actions(self._streams_in.on_head(sid, msg["x"], msg["sizes"], self.clock.now()))
        elif msg["t"] == M.XACK:
            err = msg.get("err")
            now = self.clock.now()
            self._stream_actions(self._streams_out.on_ack(sid, msg["x"], msg["n"], str(err) if err else None, now))
        elif msg["t"] == M.RESULTS:
            for r in msg["results"]:
                self._on_result(r, sid)
        elif msg["t"] == M.RUNNING:
            for tid in msg["ids"]:
                started = self._pending.get(tid) if isinstance(tid, str) else None
                if started is not None:
                    started._mark_started()
        elif msg["t"] == M.WELCOME:
            welcome = self._welcomes.get(sid)
            if welcome is not None and not welcome.done():
                welcome.set_result(msg)
        elif msg["t"] == M.GOT or msg["t"] == M.PUT_ACK:
            fut = self._by_req.get(msg["req"])
            if fut is not None and not fut.done():
                fut.set_result(msg)
        elif msg["t"] == M.ERROR:
            self._on_error(msg, sid)
        else:
            if msg["t"] == M.PONG:
                self._acknowledged(sid)
                if isinstance(peers := msg.get("peers"), list):
                    self._learn_peers([a for a in peers if isinstance(a, str)])
            elif msg["t"] == M.STATUS_REPLY:
                live = [m for m in msg["members"] if isinstance(m, dict) and m.get("state") in ("alive", "suspect")]
                self._learn_peers([m["addr"] for m in live if isinstance(m.get("addr"), str)])
            waiting = self._replies.pop(t, None) if sid == 0 else None  # requests go to the entry node
            if waiting is not None and not waiting.done():
                waiting.set_result(msg)

    def _send_ping(self, sid: int, conn: Connection, msg: M.Message) -> None:
        """A PING to shard ``sid``'s node, marked with the last request number sent before it (``_acknowledged``):
        under ``_wire_lock``, so that no SUBMIT of the caller's thread numbered before it goes out after it."""
        frames = encode(msg)
        with self._wire_lock:
            conn.send(frames)
            marks = self._ping_marks.get(sid)
            if marks is not None:
                marks.append(self._next_req)

    def _new_req(self) -> int:
        with self._wire_lock:
            self._next_req += 1
            return self._next_req

    def _acknowledged(self, sid: int) -> None:
        """A PONG from shard ``sid``'s node: the SUBMITs sent before the PING it answers were taken (an ERROR refusing
        one would have come first), so none of their tasks can be refused any more."""
        marks = self._ping_marks.get(sid)
        refusable = self._refusable.get(sid)
        if not marks or refusable is None:
            return
        mark = marks.popleft()
        while refusable:
            req = next(iter(refusable))  # in sending order: reqs only grow
            if req > mark:
                break
            del refusable[req]
        if self._refusable_streamed:
            for req, (_, batch) in list(self._refusable_streamed.items()):
                if not any(spec["id"] in self._pending for spec in batch):
                    del self._refusable_streamed[req]

    def _on_error(self, msg: M.Error, sid: int) -> None:
        """An ERROR: a node refused a message of ours. One that names its ``req`` fails what that message was sent
        for: a GET's or PUT's caller, or each task of a SUBMIT that was their first (the node never took them), with
        ``RequestRefused``; the client carries on. One that names nothing fails nothing: it may concern a SUBMIT the
        node took (every message of ours that can be refused shows its ``req``, so such an ERROR answers something
        else on this connection)."""
        reason = msg["msg"]
        shard = self._shard_nodes.get(sid)
        node = shard["node"] if shard is not None else ""
        req = msg.get("req")
        log.error("node %s refused a message of ours%s: %s", node or "?", f" (req {req})" if req else "", reason)
        if type(req) is not int:
            return
        fut = self._by_req.get(req)
        if fut is not None:
            if self._req_shard.get(req) == sid and not fut.done():
                fut.set_exception(RequestRefused(reason, node=node))
            return
        batch = self._refusable.get(sid, {}).pop(req, None)
        if batch is None:
            streamed = self._refusable_streamed.get(req)
            if streamed is None or streamed[0] != sid:
                return
            batch = self._refusable_streamed.pop(req)[1]
        err: M.ErrorInfo = {"type": REFUSED, "msg": reason, "node": node}
        for spec in batch:
            tid = spec["id"]
            if "done" not in spec and tid in self._pending and self.core.shard_of.get(tid) == sid:
                self._on_result({"id": tid, "ok": False, "err": err, "node": node}, sid)

    def _learn_peers(self, alive: list[str]) -> None:
        """The failover candidates, and where more shards may go: the members a node last reported live."""
        self._do(self.core.learn_peers(alive, self.clock.now()))

    def _on_result(self, r: M.Result, sid: int | None) -> None:
        """One item of RESULTS (from shard ``sid``; None: made here): not checked by ``decode`` (a bad one fails
        its own future, not the batch), so read defensively."""
        if not isinstance(r, dict) or not isinstance(r.get("id"), str):
            return
        fut = self._pending.pop(r["id"], None)
        if fut is None:
            self.stats["duplicates"] += 1
            return
        self.stats["results"] += 1
        if sid is not None:
            self.core.progress(sid, self.clock.now())
        self._inflight -= 1
        if (self._outbox or self._urgent) and not self._flush_scheduled:
            self._schedule_flush()
        fut.node = str(r.get("node", ""))
        done: M.InlineValue | M.Location | None = None
        ok = r.get("ok") is True
        if ok:
            v, size = r.get("v"), r.get("size")
            if isinstance(v, Payload):
                done = {"v": v}
            elif type(size) is int and fut.node:
                done = {"loc": [fut.node], "size": size, "parts": r.get("parts") or 0}
        raw_err = r.get("err")
        self._do(self.core.finish(r["id"], ok, done, raw_err if isinstance(raw_err, dict) else None))
        if fut._finished():  # cancelled here, or read by its caller: the owner's answer only settles the accounts
            return
        self._settle(fut, r)  # a cancel by another thread since the check above stands (``_settle_with``)
        direct = fut._direct
        if direct is not None:
            direct[0].poke()  # a caller reading for this answer (``_read_own``) stops reading now

    def _settle(self, fut: Future, r: M.Result) -> None:
        """A task's result, ``r``, into its future: a value, a remote reference, or the error it names."""
        size = r.get("size")
        if r.get("ok") and r.get("v") is None and type(size) is int:
            parts = r.get("parts")
            fut._set_result(_Remote(size, parts if type(parts) is int else 0))
        elif r.get("ok"):
            try:
                value = loads(r.get("v") or Payload(b"\xc0"), allow_pickle=self.allow_pickle)
            except WireError as exc:
                fut._set_exception(SerializationError(f"result of task {r['id']} could not be decoded: {exc}"))
                return
            fut._set_result(value)
        else:
            raw_err = r.get("err")
            err: Mapping[str, object] = raw_err if isinstance(raw_err, dict) else {}
            obj = err.get("obj")
            if err.get("type") == "meshaios.ObjectLost" and isinstance(obj, str):
                fut._set_exception(ObjectLost(obj, task_id=r["id"]))
                return
            if err.get("type") == "meshaios.Cancelled":  # it, or a task it depends on, was cancelled
                fut._set_exception(CancelledTaskError(str(err.get("msg", ""))))
                return
            if err.get("type") == REFUSED:  # its SUBMIT was refused (or that of a task it depends on): it never ran
                fut._set_exception(RequestRefused(str(err.get("msg", "")), r["id"], str(r.get("node", ""))))
                return
            cause = None
            pickled = err.get("exc")
            if self.allow_pickle and isinstance(pickled, Payload):
                with contextlib.suppress(Exception):
                    cause = loads(pickled, allow_pickle=True)
            fut._set_exception(
                TaskError(
                    r["id"],
                    str(err.get("type", "Exception")),
                    str(err.get("msg", "")),
                    str(err.get("tb", "")),
                    node=str(r.get("node", "")),
                    cause=cause if isinstance(cause, BaseException) else None,
                )
            )


class Client:
    """Synchronous client: an ``AsyncClient`` on a private event loop thread.

    >>> with Client() as c:                                  # doctest: +SKIP
    ...     print(sum(c.gather(c.map(pow, range(1000), [2] * 1000))))
    332833500
    """

    def __init__(self, address: str | None = None, **kwargs: Any) -> None:
        self._loop = _new_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="meshaios-client", daemon=True)
        self._thread.start()
        try:  # a bad address or option raises here: the loop thread must not outlive the failed constructor
            self._async = AsyncClient(address, **kwargs)
            self._call(self._async.connect())
        except BaseException:
            self._stop_loop()
            raise

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if self._loop.is_closed() or self._async._closed:
            coro.close()  # never scheduled: close it, or Python warns that it was never awaited
            raise MeshUnavailable("client is closed")
        # a margin over the coroutine's own timeout, which raises the clearer error (with what timed out)
        cf = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return cf.result(None if timeout is None else timeout + 5.0)
        except concurrent.futures.TimeoutError:
            cf.cancel()
            raise MeshTimeoutError(f"the client got no answer from {self.address} within {timeout} s") from None

    @property
    def address(self) -> str:
        return self._async.address

    @property
    def node(self) -> M.Welcome:
        """The entry node's WELCOME: ``node`` (id), ``name``, ``mesh``, ``pickle``."""
        assert self._async.node is not None  # attached in __init__
        return self._async.node

    @property
    def stats(self) -> dict[str, int]:
        """Results received, and duplicates dropped (a re-run attempt's late copy): what this client saw."""
        return self._async.stats

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        with contextlib.suppress(Exception):
            self._call(self._async.close(), timeout=10)
        self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._loop.is_running():
            self._loop.close()

    def submit(
        self,
        fn: Callable[..., Any],
        /,
        *args: Any,
        pure: bool = False,
        retries: int = 0,
        resources: ResourceSpec | None = None,
        task_timeout: float | None = None,
        priority: int = 0,
        deadline: Deadline = None,
        keep_on_device: bool = False,
        device: str | None = None,
        **kwargs: Any,
    ) -> Future:
        """See ``AsyncClient.submit``."""
        return self._submit_call(
            fn, args, kwargs, pure=pure, retries=retries, resources=resources, task_timeout=task_timeout,
            priority=priority, deadline=deadline, keep_on_device=keep_on_device, device=device,
        )

    def _submit_call(self, fn: Callable[..., Any], args: Any, kwargs: Mapping[str, object], **options: Any) -> Future:
        """``fn(*args, **kwargs)`` with meshaios's ``options`` kept apart: every keyword in ``kwargs`` reaches
        ``fn`` (the executor submits this way)."""
        item = self._async._prepare(fn, args, kwargs, **options)
        if not self._async._submit_direct(item):
            self._loop.call_soon_threadsafe(self._async._enqueue, [item])
        return item[1]

    def put(self, value: Any, timeout: float = 60.0, device: str | None = None) -> Future:
        """Scatter ``value`` into the mesh; pass the returned future to tasks instead of the value.
        ``device="gpu"``: a GPU node holds a copy on its device, ready for kernel tasks there."""
        fut: Future = self._call(self._async.put(value, timeout, device), timeout)
        return fut

    def fire_and_forget(self, futures: Any) -> None:
        """Dask's ``fire_and_forget``: these tasks, and the tasks they depend on, run to the end even if this
        client closes or dies (its other unfinished tasks are cancelled then). Their results are not kept."""
        fs = [futures] if isinstance(futures, Future) else list(futures)
        self._async._check_open()
        self._loop.call_soon_threadsafe(self._async._fire_and_forget, [f.key for f in fs])

    def scatter(self, data: Any, timeout: float = 60.0) -> Any:
        """Dask's ``client.scatter``: each value ``put`` into the mesh. A list or tuple gives a list of futures, a
        dict a dict of futures under the same keys, anything else one future (an array is one value, not its
        rows). Pass the futures to tasks instead of the values."""
        if isinstance(data, dict):
            return {k: self.put(v, timeout) for k, v in data.items()}
        if isinstance(data, list | tuple):
            return [self.put(v, timeout) for v in data]
        return self.put(data, timeout)

    @property
    def dashboard_link(self) -> str:
        """The entry node's dashboard (``http://host:port/``), as Dask's ``client.dashboard_link``; "" when that
        node serves none (``--no-http``)."""
        return str(self.status()["node"].get("http") or "")

    def wait(self, futures: Any, timeout: float | None = None, return_when: str = "ALL_COMPLETED") -> Any:
        """``meshaios.wait`` (Dask's ``distributed.wait``, ``concurrent.futures.wait``): ``(done, not_done)``."""
        from meshaios.compat.futures import wait

        return wait([futures] if isinstance(futures, Future) else futures, timeout, return_when)

    asynchronous = False  # for Dask: ``dask.compute(x, scheduler=client)`` takes a synchronous client's ``get``

    def get(self, futures: Any, timeout: Any = None, **kwargs: Any) -> Any:
        """Results of futures; called by Dask as ``get(graph, keys)`` (``dask.compute(x, scheduler=client.get)``),
        runs the graph on the mesh (see ``meshaios.compat.dask``)."""
        from meshaios.compat.dask import is_dask_graph

        if is_dask_graph(futures):
            from meshaios.compat.dask import get as dask_get

            return dask_get(futures, timeout, client=self, **kwargs)
        if isinstance(futures, Future):
            return futures.result(timeout)
        return self.gather(futures, timeout)

    def executor(
        self,
        *,
        pure: bool = False,
        retries: int = 0,
        priority: int = 0,
        resources: ResourceSpec | None = None,
        task_timeout: float | None = None,
    ) -> Any:
        """A ``concurrent.futures.Executor`` that runs on the mesh (``meshaios.compat.executor.MeshExecutor``).
        These options apply to every call it submits; ``executor.submit(f, x, retries=3)`` passes ``retries`` to
        ``f``, as any executor would."""
        from meshaios.compat.executor import MeshExecutor

        return MeshExecutor(
            self, pure=pure, retries=retries, priority=priority, resources=resources, task_timeout=task_timeout
        )

    def mapreduce(
        self,
        mapper: Callable[..., Any],
        reducer: Callable[..., Any] | None,
        inputs: Iterable[Any],
        partitions: int = 8,
        progress: bool = False,
        *,
        combiner: Callable[..., Any] | None = None,
    ) -> list[Future]:
        """See ``AsyncClient.mapreduce``. ``progress``: a bar over the reducers while they run."""
        inputs = list(inputs)  # a generator is consumed here, in the caller's thread
        futures = self._on_loop(lambda: self._async.mapreduce(mapper, reducer, inputs, partitions, combiner=combiner))
        if progress:
            _progress(futures, f"mapreduce {_name(mapper)}")
        return futures

    def shuffle(
        self, data: Iterable[Any], partitions: int = 8, reducer: Callable[..., Any] | None = None
    ) -> list[Future]:
        """See ``AsyncClient.shuffle``."""
        return self._on_loop(self._async.shuffle, data, partitions, reducer)

    def _on_loop(self, fn: Callable[..., list[Future]], *args: Any) -> list[Future]:
        async def call() -> list[Future]:
            return fn(*args)

        result: list[Future] = self._call(call())
        return result

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        pure: bool = False,
        retries: int = 0,
        progress: bool = False,
        priority: int = 0,
        deadline: Deadline = None,
    ) -> list[Future]:
        """``progress``: a bar in a terminal or notebook that runs until every task has finished. ``priority``: as
        in ``AsyncClient.submit``."""
        fp = self._async._fn_payload(fn)
        items = [
            self._async._prepare(
                fn, a, {}, pure=pure, retries=retries, fn_payload=fp, priority=priority, deadline=deadline
            )
            for a in zip(*iterables, strict=False)
        ]
        for i in range(0, len(items), SUBMIT_BATCH):
            self._loop.call_soon_threadsafe(self._async._enqueue, items[i : i + SUBMIT_BATCH])
        futures = [f for _, f in items]
        if progress:
            _progress(futures, _name(fn))
        return futures

    def gather(
        self,
        futures: Iterable[Future],
        timeout: float | None = None,
        progress: bool = True,
        errors: str = "raise",
        *,
        cancel_on_interrupt: bool = True,
    ) -> list[Any]:
        """Every result, in order. ``progress``: a bar in a terminal or notebook while it waits (none for work done
        within half a second; ``MESHAIOS_PROGRESS=0`` turns bars off everywhere). ``errors``: as in Dask,
        ``"raise"`` the first failed task's error (``TaskError``), or ``"skip"`` failed and cancelled tasks, leaving
        their results out of the list (a timeout, or the mesh becoming unreachable, still raises). Ctrl-C
        (``KeyboardInterrupt``) while it waits cancels every one of these tasks that has not finished, unless
        ``cancel_on_interrupt=False`` (then they run on, and their futures stay valid)."""
        skip = _errors_mode(errors)
        futures = list(futures)
        deadline = None if timeout is None else time.monotonic() + timeout
        out = []
        try:
            with _progress(futures, "gather") if progress else contextlib.nullcontext():
                for f in futures:
                    remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                    try:
                        out.append(f.result(remaining, cancel_on_interrupt=False))
                    except TASK_FAILURES:
                        if not skip:
                            raise
        except KeyboardInterrupt:
            if cancel_on_interrupt:
                self.cancel(futures)
            raise
        return out

    def cancel(self, futures: Iterable[Future]) -> int:
        """Cancel these futures (see ``Future.cancel``), in one message; returns how many had not finished. Returns
        once the entry node has read the message (a ping's answer follows it): from then on, none of these tasks
        is dispatched any more, and the aborts for those already on nodes are on their way."""
        n = _cancel_all(self._async, futures)
        if n:
            with contextlib.suppress(MeshError):
                self.ping()
        return n

    def as_completed(self, futures: Iterable[Future], timeout: float | None = None) -> Iterator[Future]:
        """``meshaios.as_completed``: each future as it finishes; ``MeshTimeoutError`` after ``timeout`` s."""
        from meshaios.compat.futures import as_completed

        return as_completed(futures, timeout)

    def status(self, timeout: float = 5.0) -> M.StatusReply:
        result: M.StatusReply = self._call(self._async.status(timeout))
        return result

    def ping(self, timeout: float = 5.0) -> float:
        result: float = self._call(self._async.ping(timeout))
        return result


#: What ``gather(errors="skip")`` leaves out: the task failed or was cancelled (not a timeout, not a lost mesh).
TASK_FAILURES: tuple[type[BaseException], ...] = (TaskError, CancelledTaskError, concurrent.futures.CancelledError)


def _errors_mode(errors: str) -> bool:
    if errors not in ("raise", "skip"):
        raise ValueError(f"errors must be 'raise' or 'skip', not {errors!r}")
    return errors == "skip"


def _cancel_all(client: AsyncClient, futures: Iterable[Future]) -> int:
    keys = [f.key for f in futures if f._cancel_local()]
    if keys:
        client._cancel_threadsafe(keys)
    return len(keys)


def _progress(futures: list[Future], desc: str) -> Any:
    """A progress bar where a person is looking (``meshaios.progress``); nothing, at no cost, elsewhere."""
    from meshaios.progress import progress

    return progress(futures, desc=desc, delay=0.5)


def _decoded(batch: list[list[Any]]) -> list[M.Message]:
    """A batch of messages from a node, decoded; a malformed one is logged and left out."""
    out = []
    for frames in batch:
        try:
            out.append(decode_message(frames))
        except WireError as exc:
            log.warning("malformed message from node: %s", exc)
    return out


def _decoded_one(frames: list[Any]) -> M.Message | None:
    """One message from a node, decoded; None (logged) if malformed."""
    try:
        return decode_message(frames)
    except WireError as exc:
        log.warning("malformed message from node: %s", exc)
        return None


def _name(fn: Any) -> str:
    return str(getattr(fn, "__name__", None) or type(fn).__name__)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is a dependency, but not on every platform
        loop = asyncio.new_event_loop()
    return loop
