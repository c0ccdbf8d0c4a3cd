"""The composition root: one node = pure state machines (SWIM, owner) + transport + executors + discovery.

Everything the node does in the background is a task of one ``asyncio.TaskGroup`` in ``run()``; stopping the
node means leaving the mesh politely, then cancelling that group. The node turns socket reads, timer ticks and
executor completions into events for the pure core and carries out the actions it returns.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import json
import logging
import os
import random
import time
from collections import defaultdict, deque
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeAlias, TypedDict, cast

from meshaios.clock import Clock, Every, MonotonicClock
from meshaios.config import NodeConfig, state_dir
from meshaios.dashboard.jobs import JobRow, client_label
from meshaios.dashboard.views import FunctionRow, WorkView, fn_label, mappings, work_view
from meshaios.devices.resident import DEVICE_RESIDENT_FRACTION, DeviceTier
from meshaios.errors import ConfigError, LimitExceeded, WireError
from meshaios.ids import new_id, short
from meshaios.io.transport import Incoming, Transport, ZmqOptions, ZmqTransport, primary_ip
from meshaios.logs import RateLimitedLog
from meshaios.membership.swim import Member, MemberChanged, MemberState, Send, Swim
from meshaios.native import compiled
from meshaios.rate import RateMeter
from meshaios.sched.inputs import Links
from meshaios.sched.loadview import LoadView
from meshaios.sched.model import RuntimeModel
from meshaios.sched.placement import make_policy
from meshaios.security import MeshKeys, derive_keys, exposure_warning, insecure_mesh_id, new_mesh_name, read_token
from meshaios.store.copies import CopyBook, CopyInstruction, DeleteCopy, SayStored, SendDone
from meshaios.store.fetch import FetchAction, FetchPlanner, InputsLost, Runnable, SendFetch
from meshaios.store.heap import HeapTrim
from meshaios.store.leases import HolderLeases
from meshaios.store.objects import ObjectStore
from meshaios.store.puts import AckPut, PutAction, PutTracker, Replicate
from meshaios.store.shm import MIN_BYTES as SHM_MIN_BYTES
from meshaios.store.shm import ShmArea, ShmError, ShmRef, buffer_bytes, host_id, open_ref, parse_ref, write_file
from meshaios.store.stream import (
    Delivered,
    Emit,
    StreamAction,
    StreamDone,
    StreamFailed,
    StreamReceiver,
    StreamSender,
    assemble,
)
from meshaios.tasks.execcore import (
    INLINE_ABORT_S,
    AbortRuns,
    DropAfter,
    DropResult,
    Event,
    ExecCore,
    FetchInputs,
    Finished,
    InlineOverran,
    InputsMissing,
    InputsReady,
    Instruction,
    PeerDown,
    PeerUp,
    ProcessCancelled,
    Recalled,
    RecallFromWorkers,
    ReleaseInputs,
    RunTasks,
    SendAbort,
    SendFenced,
    SendMoved,
    SendResult,
    SendSteal,
    Settle,
    StartOnWorker,
    StealMessage,
    TerminateProcessPool,
    Tick,
)
from meshaios.tasks.execute import (
    LocalResult,
    ProcessResult,
    error_info,
    pack_for_process,
    run_in_process,
    run_task,
    unpack_from_process,
)
from meshaios.tasks.functions import FunctionResolver
from meshaios.tasks.guard import InlineOverrun, OverrunGuard
from meshaios.tasks.owner import (
    Abort,
    AddLocation,
    Cancel,
    CancelClient,
    ClientHeard,
    Completed,
    Deliver,
    Detach,
    Dispatch,
    Free,
    Keep,
    LoadHeard,
    NodeDown,
    NodeUp,
    OwnedTask,
    Owner,
    OwnerAction,
    OwnerEvent,
    OwnerTick,
    RegisterPut,
    Release,
    RunStarted,
    Started,
    SubmitTasks,
    TaskMoved,
    TaskState,
)
from meshaios.tasks.peers import USABLE, PeerFeed
from meshaios.tasks.workers import Pool, PoolFactory, WorkerPool
from meshaios.timeline import TaskRecord, Timeline
from meshaios.wire import messages as M
from meshaios.wire.codec import WireLimits, decode_message, encode, peek_req, peek_type
from meshaios.wire.guard import Throttle
from meshaios.wire.messages import RunTask
from meshaios.wire.payload import Payload

log = logging.getLogger(__name__)

TICK = 0.05  # seconds between timer ticks at most (sooner when SWIM has a deadline)
# periodic work, by elapsed time (``clock.Every``), not by counting ticks
META_EVERY = 0.1  # our SWIM meta and load summary refreshed; peers' loads read into placement and stealing
MODELS_EVERY = 2.0  # peers' runtime observations read into our model (to predict what we never ran)
SAVE_MODEL_EVERY = 60.0  # the learned model written to disk
MAX_PEEK_IDS = 4096  # task ids one ``peek`` asks to name
VIEW_REUSE = 1.0  # seconds one scan of the owner's tasks serves (the page and peers' peeks): any number may ask
PEEK_TIMEOUT = 0.5  # seconds the dashboard waits for members' views (``Node.mesh_views``); late answers are dropped
VIEW_STALE = 10.0  # seconds a member's last view stands in for one that did not come within PEEK_TIMEOUT
RECENT_ERRORS = 50  # task failures this node owns, remembered after their futures are gone (``Node.peer_view``)
STREAM_RECORDS = 300  # a node's most recent task attempts in its view (the mesh-wide task stream)
ASSEMBLE_INLINE = 8 << 20  # a streamed message up to this size is put together on the event loop (one copy)
# Tiny tasks that ExecCore marks ``inline`` run on the event loop, for at most this long per pass: the rest of a
# burst goes to the worker threads (execcore.INLINE_MAX_S says which tasks qualify)
INLINE_BUDGET_S = 0.002


def resolve_keys(config: NodeConfig) -> MeshKeys | None:
    token = config.token
    if token is None:
        token = read_token(_path(config.token_file))
    if token is None:
        if not config.insecure:
            raise ConfigError(
                "no mesh token: run `meshaios init` (or pass --token-file / set MESHAIOS_TOKEN); "
                "use --insecure only for a throwaway local mesh"
            )
        return None
    if config.insecure:
        return None
    return derive_keys(token)


def _path(p: str | None) -> Any:
    from pathlib import Path

    return Path(p) if p else None


class ClientGet(TypedDict):
    """A client's GET of an object held elsewhere, waiting in the ``FetchPlanner`` as a task would: answered (relayed)
    when the object arrives."""

    id: str  # "get:<req>"
    _get: tuple[bytes, int, str]  # (client, req, object id)


FetchFor: TypeAlias = RunTask | ClientGet  # what waits in this node's FetchPlanner for its inputs


class ErrorRecord(TypedDict):
    """A failure of a task this node owns, as ``peer_view`` shows it (``errors``) once the client let it go."""

    at: float  # wall-clock time
    task: str
    function: str
    client: str
    type: str
    msg: str
    tb: str
    node: str  # who ran it


class PeerView(TypedDict):
    """What a node tells a ``peek`` (``Node.peer_view``), and what the dashboard merges with ``mesh_work``."""

    node: str
    name: str
    workers: int
    timeline: list[TaskRecord]
    names: dict[str, str]  # task id -> function, for the tasks of ``timeline`` this node owns
    functions: list[FunctionRow]
    jobs: list[JobRow]
    errors: list[ErrorRecord]
    gpus: dict[str, dict[str, int]]


class Node:
    def __init__(
        self,
        config: NodeConfig,
        *,
        transport: Transport | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        keys: MeshKeys | bool | None = True,
        pools: PoolFactory = WorkerPool,
    ) -> None:
        self.config = config
        self._new_pool = pools  # task runners: worker threads, or the loop itself on a virtual clock
        self.keys: MeshKeys | None = resolve_keys(config) if keys is True else (keys or None)
        self.secure = self.keys is not None
        self.mesh_name = ""  # insecure meshes only: what other nodes pass as --mesh-name to join this one
        if self.keys is not None:
            if config.mesh_name:
                raise ConfigError("--mesh-name is for insecure meshes: a token mesh's id comes from its token")
            self.mesh_id = self.keys.mesh_id
        else:
            self.mesh_name = config.mesh_name or new_mesh_name()
            self.mesh_id = insecure_mesh_id(self.mesh_name)
        self.node_id = new_id(rng=rng)
        self.name = config.display_name
        self.clock = clock or MonotonicClock()
        self._every_meta, self._every_models = Every(META_EVERY), Every(MODELS_EVERY)
        self._every_save = Every(SAVE_MODEL_EVERY)
        self.rng = rng or random.Random()
        self.transport: Transport = transport or ZmqTransport(
            ZmqOptions(
                bind=config.bind_address,
                port=config.port,
                max_frame_bytes=config.max_frame_bytes,
                node_id=self.node_id,
                handshake_ivl=config.handshake_ivl,
                router_handover=self.keys is not None,  # no identity theft on an insecure node (ZmqOptions)
                max_unproven=config.max_unproven,
                local_ipc=config.local_ipc,
            ),
            self.keys,
        )
        self.model = _load_model(self._model_path())
        self.loadview = LoadView()
        self.links = Links()  # link bandwidths measured by this node's fetches (``sched/inputs.py``)
        self.timeline = Timeline(self.node_id)  # per-task times here, bounded (``meshaios/timeline.py``)
        inner = make_policy(
            config.placement, model=self.model, view=self.loadview, clock=self.clock, node_id=self.node_id,
            links=self.links,
        )
        owner_config = dataclasses.replace(
            config.owner, late_binding=config.late_binding, client_lease=config.client_lease
        )
        self._gpu_capable: dict[bytes, bool] = {}
        # every policy weighs where a task's inputs are (``sched.placement.Locality``, EFT): the owner tells it.
        # With --gpu-choice EFT may run a kernel that runs on a GPU too on either device (docs/devices.md)
        self.owner = Owner(self.node_id, owner_config, inner, random.Random(self.rng.random()), model=self.model,
                           gpu_capable=self._runs_on_gpu_too if config.gpu_choice else None)
        self._limits = WireLimits.from_config(config)
        self.resolver = FunctionResolver(
            allow_pickle=self.secure, allowed_modules=config.allowed_modules, allowed_functions=config.allowed_functions
        )
        self.workers = config.worker_count
        self.swim: Swim | None = None
        self.address = ""
        self.started_at = time.time()
        self._rate = RateMeter()
        self.ready = asyncio.Event()
        self.stopped = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._pool: Pool | None = None
        self._procs: concurrent.futures.ProcessPoolExecutor | None = None
        self._done_buffer: dict[str, list[M.Result]] = defaultdict(list)
        # inline starts (``_run_inline``): (owner, key, task, a user's function: run under ``_guard``)
        self._inline: deque[tuple[str, tuple[str, int], RunTask, bool]] = deque()
        self._guard = OverrunGuard(INLINE_ABORT_S)
        self._doing = 0  # depth of ``_do``: inline runs wait for the outermost one to finish
        self._flush_scheduled = False  # results wait in ``_done_buffer``
        self._flush_pending = False  # a ``_flush_later`` is scheduled
        self._badlog = RateLimitedLog(log)  # one warning per (peer, kind) per 10 s, 20 per 10 s in all
        self._throttle = Throttle()  # peers that keep sending what the codec refuses (wire/guard.py)
        self.counters: dict[str, int] = defaultdict(int)
        self.inventory = _detect(config)
        self.devices = self.inventory.summary()
        self._gpu_order = [g.device for g in self.inventory.gpus]
        self.gpu_slots = max(1, config.gpu_slots)  # per GPU: a task thread and a CUDA stream each
        self._gpu_pools: dict[str, Pool] = {}
        self.store = ObjectStore(
            config.memory_limit or int(self.inventory.memory * 0.5),
            Path(config.spill_dir) / self.node_id if config.spill_dir else state_dir(config) / "spill" / self.node_id,
            background=True,  # spilling never blocks the event loop
        )
        # large GPU results stay on their GPU, under the host store (devices/resident.py)
        self.gpu = _device_tier(self.inventory, config.inline_bytes, self.secure, self.store.put)
        self.store.device = self.gpu
        self._gpu_puts: set[str] = set()  # puts asked for a GPU, being replicated (to a GPU node)
        # clients that hold objects here: released on BYE, or after ``memory_lease`` seconds of silence
        self.holders = HolderLeases(config.memory_lease)
        self._heap_trim = HeapTrim()  # heap pages reused while tasks run, handed back once the node is idle
        self.fetcher: FetchPlanner[FetchFor] = FetchPlanner(config.fetch_bytes_in_flight)
        # large messages travel as bounded, flow-controlled chunks (store/stream.py); endpoints are ROUTER
        # identities: b"n:" + node id for a peer, the client's own for a client
        self.streams_out = StreamSender()
        self.streams_in = StreamReceiver()
        self.puts = PutTracker(self.node_id, rng=random.Random(self.rng.random()))
        # membership traffic has a connection of its own where the transport offers one: never behind a transfer
        self._send_control: Callable[[str, list[Any]], bool] = getattr(
            self.transport, "send_control", self.transport.send
        )
        self._get_waiters: list[tuple[bytes, int, str]] = []
        # the dashboard's mesh-wide view: failures of tasks this node owned (kept after the client let them go),
        # and PEEKs waiting for their answers (req -> asked node, its future)
        self._recent_errors: deque[ErrorRecord] = deque(maxlen=RECENT_ERRORS)
        self._last_views: dict[str, tuple[float, dict[str, object]]] = {}  # member -> (when, its last peer_view)
        self._peeks: dict[int, tuple[str, asyncio.Future[M.Peeked]]] = {}
        self._peek_req = 0
        # (when, recent task records, the owner's work view): pages and peers' peeks poll every second
        self._work_cache: tuple[float, list[TaskRecord], WorkView] | None = None
        # same-host transfers through /dev/shm (store/shm.py): our host id, published in SWIM meta once the
        # shared-memory directory is usable; fetches that asked for shared memory (req -> holder); holders whose
        # file we refused (asked over the socket from then on)
        self.shm = ShmArea(self.mesh_id, self.node_id)
        self.host_id = ""
        self._shm_asked: dict[int, str] = {}
        self._shm_off: set[str] = set()
        self._get_shm: set[tuple[bytes, int]] = set()  # GETs from clients of this machine: (client, req)
        self._shm_fault = config.shm_fault if config.fault_injection else ""
        # fetched copies of other nodes' objects: dropped when no task here needs them (``ReleaseInputs``)
        self._fetched: set[str] = set()
        # who frees each copy kept here for another node (put replicas, stored results) and the claims this node
        # sent as an owner (store/copies.py); the node carries out what it asks for (``_copy_actions``)
        self.copybook = CopyBook(
            self.node_id, reachable=self._reachable, stored=lambda obj: obj in self.store,
            fetched=lambda obj: obj in self._fetched, counters=self.counters,
        )  # fmt: skip
        self.steal_enabled = config.steal
        # load summaries (``ld``) are built and read when someone uses them: the thieves, or EFT's queue term
        self._share_load = config.steal or config.placement == "eft"
        # peers' load summaries (SWIM meta ``ld``, DONE ``ld``): where to steal from, and EFT's view of each peer's
        # devices and backlog from all owners (its own placement ledger only knows what this owner sent)
        self.steal_view = self.loadview
        # The executing node's task bookkeeping (tasks/execcore.py): fence, inputs, the work queue (tasks reach
        # the worker threads only as slots free, plus short ones prefetched, so that an idle peer can still take
        # the ones not started), work stealing, aborts. The node carries out what it asks for (``_do``).
        self.core = ExecCore(
            self.node_id, {"cpu": self.workers}, model=self.model, view=self.steal_view, timeline=self.timeline,
            counters=self.counters, steal=config.steal, gpus=self._gpu_order, gpu_slots=self.gpu_slots,
            gpu_affinity=self._gpu_affinity, inline=config.slowdown <= 1.0, speed=_speeds(self.inventory),
            inline_user=self._guard.usable(),
        )  # fmt: skip
        self.exec = self.core.stats  # queued, finished, failed
        self.fence = self.core.fence  # runs accepted here and not yet reported; epochs per client
        self.queue = self.core.queue
        self.steal = self.core.steal
        # a thief of this host takes a task's stored inputs through /dev/shm: the steal gate prices that, not the
        # network rate the thief reports for its ingress
        self.steal.link_bandwidth = self._link_to
        # the owner's placement weighs this node's load from every owner, as it does a peer's (from its DONEs)
        self.owner.self_load = lambda: self.exec.queued
        self._instr: dict[type, Callable[[Any], None]] = {
            StartOnWorker: self._i_start, SendResult: self._i_result, FetchInputs: self._i_fetch,
            ReleaseInputs: self._i_release, RecallFromWorkers: self._i_recall, SendSteal: self._i_steal,
            SendMoved: self._i_moved, SendFenced: self._i_fenced, SendAbort: self._i_abort, DropResult: self._i_drop,
            TerminateProcessPool: self._terminate_process_pool,
        }  # fmt: skip
        self.peers = PeerFeed(self.owner, self.steal_view, self.model, self._share_load)  # peers' meta, membership
        self._summary: M.LoadSummary | None = None
        self._steal_counts: dict[str, int] = defaultdict(int)
        self._loop_ref: asyncio.AbstractEventLoop | None = None  # set by run(): worker threads report starts to it
        # pure tasks in the process pool: key -> (owner, packed task), to resubmit the innocent ones when the pool
        # is terminated to stop an aborted one
        self._proc_tasks: dict[tuple[str, int], tuple[str, Any]] = {}
        self._discovery: Any = None
        self._node_file: Any = None
        self.http_url = ""
        self._http_token = _http_token(config, self.keys)

    # ---- lifecycle ------------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the node to leave the mesh and shut down; ``run()`` returns when it has."""
        self._stop_requested.set()

    async def run(self, on_ready: Callable[[Node], None] | None = None) -> None:
        self.address = await self.transport.start()
        if self.config.shm and self.shm.open():  # before SWIM starts: peers learn our host id with our first meta
            self.host_id = host_id()
            self.links.hosts[self.node_id] = self.host_id
            from meshaios.devices.detect import cpu_cores

            self.links.cores[self.host_id] = cpu_cores()  # shared by every node of this host (host-aware placement)
        now = self.clock.now()
        self.swim = Swim(self.node_id, self.address, self.config.swim, random.Random(self.rng.random()), now)
        self.swim.set_meta(self._meta())
        self.owner.handle(NodeUp(self.node_id, self.workers, self._meta()), self.clock.now())
        loop = self._loop_ref = asyncio.get_running_loop()
        self._pool = self._new_pool(self.workers, f"mesh-{short(self.node_id)}", loop, self._tasks_done)
        self._gpu_pools = {
            d: self._new_pool(self.gpu_slots, f"mesh-{d}", loop, self._tasks_done) for d in self._gpu_order
        }  # a thread (and its own CUDA stream, devices/resident.py) per GPU slot; ExecCore fills the slots
        native = compiled()  # meshaios/native.py
        log.info(
            "node %s (%s) listening on %s, mesh %s, %s, %d workers, %s",
            short(self.node_id),
            self.name,
            self.address,
            self.mesh_id,
            "CURVE" if self.secure else "INSECURE",
            self.workers,
            f"compiled cores {native}" if native else "pure Python",
        )
        if not self.secure:
            log.info("insecure mesh name %s: start other nodes with --mesh-name %s to join it", *[self.mesh_name] * 2)
            exposed = exposure_warning(self.config.bind_address)
            if exposed is not None:
                log.warning("%s", exposed)
        log.info("clients connect with Client(%r%s)", self.address, "" if self.secure else ", insecure=True")
        try:
            async with asyncio.TaskGroup() as tg:
                background = [
                    tg.create_task(self._recv_loop(), name="recv"),
                    tg.create_task(self._tick_loop(), name="tick"),
                ]
                serve_zap = getattr(self.transport, "serve_zap", None)
                if serve_zap is not None:
                    background.append(tg.create_task(serve_zap(), name="zap"))
                if self.config.discovery and isinstance(self.transport, ZmqTransport):
                    background.append(tg.create_task(self._discovery_task(), name="discovery"))
                if self.config.http and isinstance(self.transport, ZmqTransport):
                    http_ready = asyncio.Event()
                    background.append(tg.create_task(self._http_task(http_ready), name="http"))
                    await http_ready.wait()  # the node file names the dashboard's URL
                for seed in self.config.join:
                    self._swim_actions(self.swim.discovered(None, _tcp(seed), now))
                self._write_node_file()
                self.ready.set()
                if on_ready is not None:
                    on_ready(self)
                await self._stop_requested.wait()
                log.info("node %s leaving the mesh", short(self.node_id))
                self._swim_actions(self.swim.leave(self.clock.now()))
                await asyncio.sleep(0.05)  # let the goodbyes leave the socket before it closes
                for t in background:
                    t.cancel()
        finally:
            self._save_model()
            self._remove_node_file()
            if self._pool is not None:
                self._pool.shutdown()
            if self._procs is not None:
                self._procs.shutdown(wait=False, cancel_futures=True)
            for gp in self._gpu_pools.values():
                gp.shutdown()
            self.store.clear()
            self.shm.close()
            await self.transport.close(linger=0.2)
            self.stopped.set()

    async def _discovery_task(self) -> None:
        from meshaios.io.discovery import Announcement, ZeroconfDiscovery

        host, port = _host_port(self.address)
        me = Announcement(
            node_id=self.node_id,
            mesh_id=self.mesh_id,
            version=M.PROTOCOL_VERSION,
            host=host,
            port=port,
            name=self.name,
            devices=self.devices,
        )

        def on_peer(a: Announcement) -> None:
            if self.swim is not None and a.node_id != self.node_id:
                self._swim_actions(self.swim.discovered(a.node_id, a.address, self.clock.now()))

        disc = ZeroconfDiscovery(me, self.config.bind_address, on_peer)
        self._discovery = disc
        await disc.start()
        try:
            await asyncio.Event().wait()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(disc.stop())

    async def _http_task(self, ready: asyncio.Event) -> None:
        from meshaios.dashboard import serve_http

        def listening(url: str) -> None:
            self.http_url = url

        def work(task_ids: Collection[str]) -> WorkView:
            # the status's timeline is the newest part of the records the shared scan names (one scan, not two)
            return self._recent_work()[1]

        await serve_http(
            self.status,
            self.config.http_bind,
            self.config.http_port,
            self._http_token,
            ready=ready,
            on_listen=listening,
            get_work=work,
            get_mesh=self.mesh_views,
            get_counts=self.status_counts,
        )

    def _node_file_path(self) -> Any:
        return state_dir(self.config) / "nodes" / f"{self.node_id}.json"

    def _write_node_file(self) -> None:
        """Local clients and `meshaios status` find a node on this machine without multicast."""
        try:
            path = self._node_file_path()
            path.parent.mkdir(parents=True, exist_ok=True)
            info = {
                "pid": os.getpid(),
                "address": self.address,
                "node": self.node_id,
                "mesh": self.mesh_id,
                "http": self.http_url,
            }
            path.write_text(json.dumps(info))
            self._node_file = path
        except OSError as exc:
            log.debug("cannot write node file: %s", exc)

    def _remove_node_file(self) -> None:
        if self._node_file is not None:
            with contextlib.suppress(OSError):
                self._node_file.unlink()

    # ---- loops ----------------------------------------------------------------------------------------------
    async def _tick_loop(self) -> None:
        assert self.swim is not None
        while True:
            # wake at SWIM's next deadline when that comes before the regular tick: nacks race probe deadlines
            delay = min(TICK, max(0.001, self.swim.next_wakeup() - self.clock.now()))
            await asyncio.sleep(delay)
            try:
                self._tick()
            except Exception:
                log.exception("error in a timer tick")  # the node keeps running; the next tick tries again
                self.counters["tick_errors"] += 1

    def _tick(self) -> None:
        assert self.swim is not None
        now = self.clock.now()
        if self._every_models.due(now):  # peers' runtime observations, so we can predict what we never ran
            for m in self.swim.members():
                self.peers.models(m.node_id, m.meta)
        if self._every_save.due(now):
            self._save_model()
        if self._every_meta.due(now):
            if self._share_load:
                self._summary = self._load_summary(now)
            self.swim.set_meta(self._meta())
            for m in self.swim.members():
                if m.state in USABLE:
                    self.peers.heard(m.node_id, m.meta, m.last_heard, now)  # its load, for the owner and the thieves
                    hid = m.meta.get("hid") if isinstance(m.meta, dict) else None
                    if self.host_id and isinstance(hid, str) and m.node_id not in self._shm_off:
                        self.links.hosts[m.node_id] = hid  # same host id: placement prices /dev/shm, not the LAN
                    else:
                        self.links.hosts.pop(m.node_id, None)
        self._swim_actions(self.swim.tick(now))
        self._owner_actions(self.owner.handle(OwnerTick(), now))
        self._do(self.core.handle(Tick(), now))  # stuck prefetches, steal timers and requests
        self._data_tick()

    async def _recv_loop(self) -> None:
        serve, unserve = getattr(self.transport, "serve", None), getattr(self.transport, "unserve", None)
        if serve is None or unserve is None:  # a transport that can only be awaited (the in-process one)
            while True:
                self._on_batch(await self.transport.recv_batch())
        # each batch straight from the socket's reader callback: no task woken per message (io/lean.py ``serve``)
        serve(self._on_batch)
        try:
            await asyncio.get_running_loop().create_future()  # until the node stops
        finally:
            unserve()

    def _on_batch(self, batch: list[Incoming]) -> None:
        now = self.clock.now()
        for ident, frames in batch:
            if self._throttle.throttled and self._throttled(ident, frames, now):
                continue  # it kept sending what we refuse: its large messages dropped unread for a while
            try:
                self._handle(ident, frames)
            except WireError as exc:
                self._bad_input(ident, exc, frames)
            except Exception:
                # a bug in our handling of one message must not take the node down
                log.exception("error handling a message from %r", ident[:12])
                self.counters["handler_errors"] += 1

    def _bad_input(self, ident: bytes, exc: WireError, frames: list[Any] | None = None) -> None:
        self.counters["bad_frames"] += 1
        self._badlog.warning((ident, "wire"), "rejected a malformed message from %r: %s", ident[:12], exc)
        if isinstance(exc, LimitExceeded) and self._throttle.refused(ident, self.clock.now()):
            # visible in status ("throttle"); at debug level here: the warning above is this sender's one line
            log.debug("dropping messages from %r for %.0f s: oversized again", ident[:12], self._throttle.cooldown)
        self._refuse(ident, str(exc), frames)

    def _refuse(self, ident: bytes, why: str, frames: list[Any] | None) -> None:
        """Tell a client that its message was refused: an ERROR naming the message's ``req`` when its header's
        first bytes show one (``peek_req``), so that the client fails what it sent it for. Nodes get nothing."""
        if ident[:2] in _NODE_IDENTS:
            return
        error: M.Error = {"t": M.ERROR, "msg": why}
        req = peek_req(frames) if frames else None
        if req is not None:
            error["req"] = req
        self.transport.reply(ident, encode(error))

    def _throttled(self, ident: bytes, frames: list[Any], now: float) -> bool:
        """A message from a sender in its cooldown (``wire/guard.py``): one of more than ``small_header`` bytes is
        dropped unread (counted) and answered with an ERROR naming its ``req`` when it shows one; a smaller one is
        served as usual, so the sender's heartbeats, releases and small work carry on. A stream's own messages pass:
        the message they carry is checked when it is put together (``_handle_assembled``)."""
        if not self._throttle.cooling(ident, now):
            return False
        limit = self._limits.small_header
        nbytes = 0
        for f in frames:
            nbytes += len(f)
            if nbytes > limit:
                break
        else:
            return False
        if peek_type(frames) in _STREAM_TYPES:
            return False
        self._throttle.dropped += 1
        why = (
            f"dropped unread: messages over {limit} bytes from this client are refused for "
            f"{self._throttle.cooldown:.0f} s after {self._throttle.strikes} oversized ones"
        )
        self._refuse(ident, why, frames)
        return True

    # ---- message handling -----------------------------------------------------------------------------------
    def _handle(self, ident: bytes, frames: list[Any], streamed: bool = False) -> None:
        msg = decode_message(frames, self._limits)
        t = msg["t"]
        assert self.swim is not None
        if ident[:2] not in _NODE_IDENTS:  # a client spoke: its leases are renewed (tasks/epochs.py, store/leases.py)
            now = self.clock.now()
            self._owner_actions(self.owner.handle(ClientHeard(ident), now))
            self.holders.heard(ident, now)
        # a SUBMIT first (the message of every task): the branches are exclusive, their order only costs comparisons
        if msg["t"] == M.SUBMIT:  # (``msg["t"]``, not ``t``: it narrows the message type for mypy)
            ep = msg.get("ep", 0)
            ep = ep if type(ep) is int and ep >= 0 else 0
            adopted = self.owner.counters["adopted_done"]
            self._owner(SubmitTasks(ident, msg["tasks"], ep))
            if self.owner.counters["adopted_done"] != adopted:  # a failed-over client's finished tasks: ours now
                for spec in msg["tasks"]:
                    ot = self.owner.tasks.get(spec["id"]) if "done" in spec else None
                    if ot is not None and ot.client == ident and ot.state is TaskState.DONE and ot.result is None:
                        self._claim(ot)
        elif t in _STREAM_TYPES:
            if streamed:
                raise WireError("a stream cannot carry a stream message")
            self._on_stream_msg(ident, cast("M.XHead | M.XChunk | M.XAck", msg))
        elif msg["t"] == M.SWIM:
            self._swim_actions(self.swim.handle(msg["m"], self.clock.now()))
        # nested tasks and results were checked item by item by ``decode`` (messages.NESTED)
        elif msg["t"] == M.RUN:
            self._accept_run(msg["owner"], msg["tasks"])
        elif msg["t"] == M.DONE:
            src = msg["src"]
            q = msg.get("q")
            if isinstance(q, int) and not isinstance(q, bool):
                self._owner(LoadHeard(src, q))
            if self._share_load and "ld" in msg:
                self.steal_view.update(src, msg["ld"], self.clock.now())  # validated by parse_summary
            self._owner(Completed(src, msg["results"]))
        elif msg["t"] == M.STEAL:
            self._on_steal(msg)
        elif msg["t"] == M.MOVED:
            for tid, att, dst in msg["moves"]:  # shapes checked by decode
                self._owner(TaskMoved(tid, msg["src"], dst, att))
        elif msg["t"] == M.DETACH:  # the client failed over elsewhere and is at epoch ``ep`` there
            self.counters["detached"] += 1
            self._owner(Detach(ident, msg["ep"]))
        elif msg["t"] == M.STARTED:
            if ident == b"n:" + msg["src"].encode():  # from a node of the mesh, naming itself
                self._owner(RunStarted(msg["src"], msg["ids"]))
        elif msg["t"] == M.FENCED:  # an executor refused our run: the client is at a newer epoch under another owner
            self.counters["fenced_by_peers"] += 1
            self._owner(Detach(msg["c"].encode("latin-1"), msg["ep"]))
        elif msg["t"] == M.HELLO:
            self.transport.reply(
                ident,
                encode(
                    {
                        "t": M.WELCOME,
                        "node": self.node_id,
                        "name": self.name,
                        "mesh": self.mesh_id,
                        "pickle": self.resolver.allow_pickle,
                        "mh": self._limits.max_header,
                        **({"hid": self.host_id} if self.host_id else {}),
                    }
                ),
            )
        elif msg["t"] == M.RELEASE:
            self._owner(Release([i for i in msg["ids"] if isinstance(i, str)]))
        elif msg["t"] == M.CANCEL:
            self._owner(Cancel(ident, msg["ids"]))
        elif msg["t"] == M.KEEP:
            self._owner(Keep(ident, msg["ids"]))
        elif msg["t"] == M.ABORT:
            if ident == b"n:" + msg["src"].encode():  # from a node of the mesh, naming itself
                self._abort(msg["owner"], msg["ids"])
        elif msg["t"] == M.PEEK:
            if ident == b"n:" + msg["src"].encode():  # from a node of the mesh, naming itself
                self._on_peek(msg)
        elif msg["t"] == M.PEEKED:
            if ident == b"n:" + msg["src"].encode():
                self._on_peeked(msg)
        elif msg["t"] == M.FETCH:
            self._on_fetch(msg)
        elif msg["t"] == M.OBJ:
            self._on_obj(msg)
        elif msg["t"] == M.GET:
            self._on_get(ident, msg)
        elif msg["t"] == M.PUT:
            self._on_put(ident, msg)
        elif msg["t"] == M.STORE:
            self._on_store(ident, msg)
        elif msg["t"] == M.STORED and msg.get("noshm") is True:  # the replica refused our file: send the copy itself
            self._shm_off.add(msg["src"])
            self.shm.receiver_gone(_receiver(_peer(msg["src"])))
            self._put_actions([Replicate(msg["id"], msg["src"])])
        elif msg["t"] == M.STORED:
            self._owner(AddLocation(msg["id"], msg["src"]))
            self._put_actions(self.puts.stored(msg["id"], msg["src"], self._replica_candidates()))
        elif msg["t"] == M.ADOPT:
            self._on_adopt(ident, msg)
        elif msg["t"] == M.BYE:
            self.holders.bye(ident)
            self._release_client(ident, "closed")
        elif msg["t"] == M.FREE:
            if ident != _peer(msg["src"]):
                raise WireError("free: only a node of the mesh, naming itself, frees copies")
            ids = [obj for obj in msg["ids"] if isinstance(obj, str)]
            after = msg.get("after")
            if isinstance(after, str):  # their last reader runs here: dropped when it succeeds
                self._core(DropAfter(after, ids))
            else:
                self._free(msg["src"], ids, msg.get("hold") is True)
        elif msg["t"] == M.CLAIM:
            if ident != _peer(msg["src"]):
                raise WireError("claim: only a node of the mesh, naming itself, claims copies")
            self._claimed(msg["src"], msg["ids"])
        elif msg["t"] == M.PING:
            pong: M.Pong = {"t": M.PONG}
            if msg.get("peers") and self.swim is not None:
                # where the client can fail over to: live members as this node sees them (a few addresses)
                pong["peers"] = [m.addr for m in self.swim.members() if m.state in _REACHABLE and m.addr]
            self.transport.reply(ident, encode(pong))
        elif msg["t"] == M.FAULT:
            self._on_fault(ident, msg)
        elif msg["t"] == M.STATUS:
            # a large mesh's status is streamed (mypy cannot see that ** supplies StatusData's keys)
            self._send_to(ident, cast("M.StatusReply", {"t": M.STATUS_REPLY, **self.status()}))
        else:
            raise WireError(f"message type {t!r} is not accepted by a node")

    def _on_fault(self, ident: bytes, msg: M.Fault) -> None:
        """Fault injection for ``meshaios chaos`` (only with --fault-injection): cut the links to some peers and
        clients, as a network partition would; empty lists heal. Answered with PONG."""
        block = getattr(self.transport, "block", None)
        if not self.config.fault_injection or block is None:
            raise WireError("fault injection is off on this node (start it with --fault-injection)")
        nodes = [n for n in msg["nodes"] if isinstance(n, str)]
        clients = [c for c in msg["clients"] if isinstance(c, str)]
        idents = [p + n.encode() for n in nodes for p in _NODE_IDENTS] + [b"c:" + c.encode() for c in clients]
        block(idents, [a for a in msg["addrs"] if isinstance(a, str)])
        log.warning("fault injection: cut off %d nodes and %d clients", len(nodes), len(clients))
        self.transport.reply(ident, encode({"t": M.PONG}))

    def _swim_actions(self, actions: list[Any]) -> None:
        for a in actions:
            if isinstance(a, Send):
                if a.addr and a.addr != self.address:
                    self._send_control(a.addr, encode({"t": M.SWIM, "m": a.msg}))
            elif isinstance(a, MemberChanged):
                self._member_changed(a)

    def _member_changed(self, ev: MemberChanged) -> None:
        log.info("member %s (%s) %s -> %s", short(ev.node_id), ev.addr, ev.old.value if ev.old else "new", ev.new.value)
        self.counters[f"member_{ev.new.value}"] += 1
        before = (self.owner.counters["replaced"], self.owner.counters["recomputed"])
        # node_up when first usable, node_down when gone
        self._owner_actions(self.peers.member_changed(ev, self.clock.now()))
        if ev.new in (MemberState.DEAD, MemberState.LEFT):
            replaced = self.owner.counters["replaced"] - before[0]
            recomputed = self.owner.counters["recomputed"] - before[1]
            if replaced or recomputed:
                log.info(
                    "member %s %s: %d of the tasks this node owns re-placed, %d results recomputed from lineage",
                    short(ev.node_id), ev.new.value, replaced, recomputed,
                )  # fmt: skip
            self._core(PeerDown(ev.node_id))  # its reservations here are runnable again
            self._fetch_actions(self.fetcher.holder_dead(ev.node_id, self.clock.now()))
            peer = b"n:" + ev.node_id.encode()
            self._stream_actions(self.streams_out.dest_gone(peer, f"node {short(ev.node_id)} is {ev.new.value}"))
            self.streams_in.src_gone(peer)
            self._put_actions(self.puts.node_down(ev.node_id, self._replica_candidates()))
            self.copybook.member_down(ev.node_id, self.clock.now())
            self.shm.receiver_gone(_receiver(_peer(ev.node_id)))  # files written for it will never be claimed
            self.transport.forget(ev.addr)
        elif ev.old in (MemberState.DEAD, MemberState.LEFT):
            self._core(PeerUp(ev.node_id))  # back: what we sent it lately goes again (execcore.RESEND_WINDOW)
            self._copy_actions(self.copybook.member_up(ev.node_id))

    def _reachable(self, node_id: str) -> bool:
        return node_id == self.node_id or self._live_member(node_id) is not None

    def _live_member(self, node_id: str) -> Member | None:
        """``node_id``'s membership record while it is alive or suspect (messages to it may still arrive)."""
        member = self.swim.get(node_id) if self.swim else None
        return member if member is not None and member.state in _REACHABLE else None

    # ---- stored copies: the shell around their bookkeeping (store/copies.py) -------------------------------
    def _claimed(self, src: str, ids: Iterable[object]) -> None:
        """Owner ``src`` adopted these objects and counts this node's copies (``CopyBook.claimed``)."""
        self.copybook.claimed(src, ids, self.clock.now())

    def _free(self, src: str, ids: Iterable[str], hold: bool = False) -> None:
        """Owner ``src`` frees these objects here: those no other owner counts (``CopyBook.free``); ``hold``: kept
        ``FREE_HOLD`` for a claim (``src`` let its client's work go: it failed over)."""
        self._copy_actions(self.copybook.free(src, ids, self.clock.now(), hold))

    def _copy_actions(self, actions: list[CopyInstruction]) -> None:
        for a in actions:
            if isinstance(a, DeleteCopy):
                self.store.delete(a.obj)
            elif isinstance(a, SayStored):
                member = self._live_member(a.owner)
                if member is not None:
                    self.transport.send(member.addr, encode({"t": M.STORED, "src": self.node_id, "id": a.obj}))
            elif isinstance(a, SendDone):
                member = self._live_member(a.owner)
                if member is not None:
                    self._send_node(a.owner, member.addr, {"t": M.DONE, "src": self.node_id, "results": a.results})
            else:
                self._send_claim(a.holder, a.ids)

    def _owner(self, event: OwnerEvent) -> None:
        """One event for the owner, now; what it asks for is done at once."""
        self._owner_actions(self.owner.handle(event, self.clock.now()))

    def _owner_actions(self, actions: list[OwnerAction]) -> None:
        for a in actions:
            if isinstance(a, Dispatch):
                if a.node == self.node_id:
                    self._accept_run(self.node_id, a.tasks)
                    continue
                member = self.swim.get(a.node) if self.swim else None
                if member is None or member.state not in (MemberState.ALIVE, MemberState.SUSPECT):
                    self._owner(NodeDown(a.node))
                    continue
                self._send_to(_peer(a.node), {"t": M.RUN, "owner": self.node_id, "tasks": a.tasks})
                self.counters["dispatched_remote"] += len(a.tasks)
            elif isinstance(a, Deliver):
                self._note_failures(a.results)
                if a.client:
                    self._send_to(a.client, {"t": M.RESULTS, "results": a.results})
            elif isinstance(a, Abort):
                self._send_abort(a.node, self.node_id, a.keys)
            elif isinstance(a, Started) and a.client:
                self._send_to(a.client, {"t": M.RUNNING, "ids": a.ids})
            elif isinstance(a, Free):
                if a.node == self.node_id:
                    if a.after:
                        self._core(DropAfter(a.after, a.ids))
                        continue
                    self._free(self.node_id, a.ids, a.hold)
                    continue
                holder = self.swim.get(a.node) if self.swim else None
                if holder is not None:
                    free: M.Free = {"t": M.FREE, "src": self.node_id, "ids": a.ids}
                    if a.after:
                        free["after"] = a.after
                    if a.hold:
                        free["hold"] = True
                    self._send_node(a.node, holder.addr, free)

    # ---- execution: the shell around the executing node's core (tasks/execcore.py) --------------------------
    def _core(self, event: Event) -> None:
        """One event for the executing node's core; what it asks for is done at once, in order."""
        self._do(self.core.handle(event, self.clock.now()))

    def _do(self, instructions: list[Instruction]) -> None:
        run = self._instr
        self._doing += 1
        try:
            for ins in instructions:
                run[type(ins)](ins)
        except BaseException:
            self._doing -= 1
            if not self._doing and self._flush_scheduled:
                self._flush_soon()  # what this pass buffered still goes out
            raise
        self._doing -= 1
        if self._doing:
            return
        if self._inline:
            self._run_inline()
        if self._flush_scheduled:  # results of this pass (``_push_result``)
            if not self.exec.queued:
                self._flush_done()  # nothing else will finish here soon: a lone result goes now, not next iteration
            else:
                self._flush_soon()
        if self.core.owes:  # an inline run's bookkeeping, after its result has left (``Finished.settle_later``)
            self._core(_SETTLE)

    def _run_inline(self) -> None:
        """The starts ExecCore marked ``inline``: run here, on the loop, each reported ``Finished`` at once (which may
        start more), for at most INLINE_BUDGET_S; what remains goes to the worker threads."""
        end = time.perf_counter() + INLINE_BUDGET_S
        while self._inline:
            owner, key, task, user = self._inline.popleft()
            if time.perf_counter() > end or (user and not self._guard.usable()):
                assert self._pool is not None
                self._pool.submit((owner, key), self._run_one, task)
                continue
            outcome: BaseException | M.Result | None
            try:
                outcome = self._run_guarded(task) if user else self._run_one(task)
            except Exception as exc:  # as a worker thread would hand it over (``_outcome``)
                outcome = exc
            if outcome is None:  # interrupted: again on a worker, and that function never inline again here
                self.counters["inline_interrupted"] += 1
                self._core(InlineOverran(self.core.kernel(task["fn"])))
                assert self._pool is not None
                self._pool.submit((owner, key), self._run_one, task)
                continue
            self._core(Finished([(owner, key, self._outcome(key, outcome))], threads=False, settle_later=True))

    def _run_guarded(self, task: RunTask) -> M.Result | None:
        """A user's function inline, interrupted after INLINE_ABORT_S (tasks/guard.py): its result, or None when it
        was interrupted -- also when the function caught the interruption and returned anyway. It finds no running
        event loop, as on a worker thread (a function that calls ``asyncio.run`` must not meet the node's)."""
        guard = self._guard
        fired = guard.fired
        loop = asyncio.events._get_running_loop()
        asyncio.events._set_running_loop(None)  # as on a worker thread: no running loop (``asyncio.run`` works)
        try:
            result = guard.call(self._run_one, task)
        except InlineOverrun:
            guard.disarm()
            return None
        finally:
            asyncio.events._set_running_loop(loop)
        return result if guard.fired == fired else None

    def _accept_run(self, owner: str, tasks: list[RunTask]) -> None:
        # each task was checked against RunTask by the decoder (messages.RUN_TASK), or built by our own Owner
        self._core(RunTasks(owner, tasks))

    def _send_fenced(self, owner: str, client: str, ep: int) -> None:
        if owner == self.node_id:
            self._owner(Detach(client.encode("latin-1"), ep))
            return
        member = self.swim.get(owner) if self.swim else None
        if member is not None:
            msg = {"t": M.FENCED, "src": self.node_id, "c": client, "ep": ep}
            self.transport.send(member.addr, encode(msg))

    def _i_fenced(self, ins: SendFenced) -> None:
        self._send_fenced(ins.owner, ins.client, ins.ep)

    def _i_fetch(self, ins: FetchInputs) -> None:
        key, remote, now = ins.key, ins.remote, self.clock.now()
        have = {d for d in remote if d in self.store}
        self.timeline.inputs_requested(key[0], key[1], sum(remote[d][1] for d in remote if d not in have), now)
        if len(have) == len(remote):  # all here already: nothing to fetch, and the task may still be stolen
            self._core(InputsReady(key, local=True))
            return
        self._fetch_actions(self.fetcher.need(ins.spec, remote, have, now))

    def _fetch_actions(self, actions: list[FetchAction[FetchFor]]) -> None:
        for a in actions:
            if isinstance(a, SendFetch):
                if a.holder == self.node_id:
                    self._fetch_actions(self.fetcher.arrived(a.req, a.obj in self.store, self.clock.now()))
                    continue
                member = self.swim.get(a.holder) if self.swim else None
                if member is None or member.state not in (MemberState.ALIVE, MemberState.SUSPECT):
                    self._fetch_actions(self.fetcher.arrived(a.req, False, self.clock.now()))
                    continue
                self._send_fetch(member.node_id, member.addr, a.req, a.obj)
            elif isinstance(a, Runnable):
                if "_get" in a.task:  # RunTasks have no "_get"
                    ident, req, obj_id = cast("ClientGet", a.task)["_get"]
                    self._answer_get(ident, req, obj_id, relayed=True)
                else:
                    self._core(InputsReady((a.task["id"], a.task["att"])))
            elif isinstance(a, InputsLost):
                if "_get" in a.task:  # the owner recomputes; try again on a later tick
                    self._get_waiters.append(cast("ClientGet", a.task)["_get"])
                    continue
                self._core(InputsMissing((a.task["id"], a.task["att"]), a.lost))

    def _i_start(self, ins: StartOnWorker) -> None:
        task, owner, key = ins.spec, ins.owner, ins.key
        if task.get("pure"):  # the process pool gets values: spilled ones are read here (worker threads read their own)
            for d, v in list(task["deps"].items()):
                if not isinstance(v, Payload):
                    task["deps"][d] = self.store.get(d)
            if ins.device == "cpu" and None in task["deps"].values():  # one is gone: ``_run_one`` reports it lost
                assert self._pool is not None
                self._pool.submit((owner, key), self._run_one, task)
                return
        if ins.device != "cpu":  # a GPU slot: a thread of that GPU's pool, with its own stream
            on_gpu = (functools.partial(self._run_reporting, owner, device=ins.device) if task.get("rs")
                      else functools.partial(self._run_one, device=ins.device))  # fmt: skip
            self._gpu_pools[ins.device].submit((owner, key), on_gpu, task)
            return
        if task.get("pure"):
            packed = pack_for_process(task)
            self._proc_tasks[key] = (owner, packed)
            self._submit_to_processes(key, packed)
            return
        if ins.inline:
            self._inline.append((owner, key, task, ins.user))  # run when this pass of instructions is done (``_do``)
            return
        assert self._pool is not None
        run = functools.partial(self._run_reporting, owner) if task.get("rs") else self._run_one
        self._pool.submit((owner, key), run, task, key if ins.prefetch else None)

    def _i_recall(self, ins: RecallFromWorkers) -> None:
        back = self._pool.recall(ins.keys) if self._pool is not None else []
        self._core(Recalled(back, ins.stuck))

    def _run_reporting(self, owner: str, task: RunTask, device: str | None = None) -> M.Result:
        """``_run_one`` for a task whose client wants to know when it starts (``rs``): told first, from the loop."""
        loop = self._loop_ref
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to tell
                loop.call_soon_threadsafe(self._report_start, owner, [task["id"], task["att"]])
        return self._run_one(task, device)

    def _report_start(self, owner: str, key: list[Any]) -> None:
        if owner == self.node_id:
            self._owner(RunStarted(self.node_id, [key]))
            return
        member = self.swim.get(owner) if self.swim else None
        if member is not None:
            self.transport.send(member.addr, encode({"t": M.STARTED, "src": self.node_id, "ids": [key]}))

    def _tasks_done(self, batch: list[tuple[Any, Any]]) -> None:
        """Completions from worker threads, a burst at a time (see WorkerPool)."""
        self._core(Finished([(owner, key, self._outcome(key, out)) for (owner, key), out in batch]))

    def _outcome(self, key: tuple[str, int], outcome: BaseException | M.Result | ProcessResult) -> M.Result:
        """A worker's or a process's outcome as a result: an exception becomes an error result; a process's
        result is unpacked (and a large one kept here)."""
        if isinstance(outcome, BaseException):
            err = error_info(outcome, allow_pickle=False)
            if isinstance(outcome, concurrent.futures.process.BrokenProcessPool):
                self._procs = None  # the pool is dead: the next pure task gets a fresh one
                err["msg"] = "the worker process running this task died: " + err["msg"]
            return {"id": key[0], "att": key[1], "ok": False, "err": err}
        if "vparts" in outcome or isinstance(outcome.get("v"), tuple):
            return self._keep_large(unpack_from_process(cast("ProcessResult", outcome)))
        return cast("M.Result", outcome)  # from a worker thread: ``_run_one``'s

    def _i_release(self, ins: ReleaseInputs) -> None:
        for d in ins.ids:
            if d in self._fetched:
                self._fetched.discard(d)
                self.store.delete(d)

    def _i_drop(self, ins: DropResult) -> None:
        self._fetched.discard(ins.obj)
        self.store.delete(ins.obj)
        for j in range(ins.parts):
            self.store.delete(f"{ins.obj}#{j}")
        self.copybook.dropped([ins.obj, *(f"{ins.obj}#{j}" for j in range(ins.parts))])

    def _runs_on_gpu_too(self, fn: Payload) -> bool:
        """Whether ``fn`` names a kernel of this node's registry that runs on a GPU (remembered per payload)."""
        known = self._gpu_capable.get(fn.blob)
        if known is None:
            from meshaios.devices.registry import default_registry
            from meshaios.wire.values import loads

            try:
                spec = loads(fn, allow_pickle=False)
            except WireError:
                spec = None
            name = spec.get("kernel") if isinstance(spec, dict) else None
            registry = self.resolver.kernels if self.resolver.kernels is not None else default_registry()
            known = isinstance(name, str) and name in registry and registry.get(name).supports_gpu
            if len(self._gpu_capable) >= 4096:
                self._gpu_capable.clear()
            self._gpu_capable[fn.blob] = known
        return known

    def _gpu_affinity(self, task: RunTask) -> str | None:
        """The GPU that keeps one of ``task``'s inputs, if any (ExecCore starts it there when that GPU has a free
        slot: the input is read with no copy)."""
        for d, v in task["deps"].items():
            if not isinstance(v, Payload):
                where = self.gpu.where(d)
                if where is not None:
                    return where
        return None

    def _run_one(self, task: RunTask, device: str | None = None) -> M.Result:
        """In an executor thread: run (on the GPU ``device``: a thread of its pool), then keep a large result here
        (it is fetched peer to peer)."""
        aborted = self.core.aborted
        if aborted and (task["id"], task["att"]) in aborted:
            # prefetched into the workers' queue, then cancelled: never started (the loop drops the result)
            return {"id": task["id"], "att": task["att"], "ok": False, "err": cast("M.ErrorInfo", {})}
        # a GPU task reads its inputs through its device: those kept there are taken with no copy
        gpu = self.gpu.runner(device, self.store.get) if device is not None else None
        gone: list[str] = []
        for d, v in list(task["deps"].items()):
            if isinstance(v, Payload):
                continue
            if gpu is None:  # from the store, here: reading back a spilled input
                v = task["deps"][d] = self.store.get(d)  # blocks no event loop
                if v is None:
                    gone.append(d)
            elif d not in self.store:
                gone.append(d)
        if gone:
            # freed since the core found it here (its owner freed every part of a map output that another reader
            # reported lost, say): the owner recomputes it from lineage and runs this again, as for InputsMissing
            return {"id": task["id"], "att": task["att"], "ok": False, "lost": gone}
        result = run_task(task, self.resolver, allow_pickle=self.secure, gpu=gpu)
        if self.config.slowdown > 1.0 and isinstance(result.get("dt"), float):
            # a deliberately slow machine, for scheduler experiments: the task takes `slowdown` times as long
            extra = result["dt"] * (self.config.slowdown - 1.0)
            time.sleep(extra)
            result["dt"] += extra
        if device is not None:
            result["dev"] = "gpu"  # the runtime model learns GPU runtimes apart from CPU ones
        return self._keep_large(result)

    def _keep_large(self, result: LocalResult) -> M.Result:
        vparts = result.pop("vparts", None)
        if vparts is not None:
            for j, p in enumerate(vparts):
                self.store.put(f"{result['id']}#{j}", p)
            result["size"] = sum(p.nbytes for p in vparts)
            result["parts"] = len(vparts)
            return result
        v = result.get("v")
        if isinstance(v, Payload) and v.nbytes > self.config.inline_bytes:
            self.store.put(result["id"], v)
            del result["v"]
            result["size"] = v.nbytes
        return result

    def _process_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._procs is None:
            import multiprocessing

            self._procs = concurrent.futures.ProcessPoolExecutor(
                self.config.process_workers or self.workers, mp_context=multiprocessing.get_context("forkserver")
            )
        return self._procs

    def _submit_to_processes(self, key: tuple[str, int], packed: Any) -> None:
        cf = self._process_pool().submit(run_in_process, packed, self.secure, self.resolver.fence)
        loop = asyncio.get_running_loop()

        def done(f: concurrent.futures.Future[ProcessResult]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: the node is gone
                loop.call_soon_threadsafe(self._task_finished, key, f)

        cf.add_done_callback(done)

    def _task_finished(self, key: tuple[str, int], fut: concurrent.futures.Future[ProcessResult]) -> None:
        entry = self._proc_tasks.get(key)
        if entry is None:
            return
        owner, packed = entry
        exc = None if fut.cancelled() else fut.exception()
        if (
            isinstance(exc, concurrent.futures.process.BrokenProcessPool)
            and not self.core.was_aborted(key, owner)
            and getattr(fut, "_meshaios_innocent", False)
        ):
            # the pool was terminated to stop an aborted task, not by this one: run it again in a fresh pool
            self._submit_to_processes(key, packed)
            return
        del self._proc_tasks[key]
        if fut.cancelled():
            self._core(ProcessCancelled(key))
            return
        self._core(Finished([(owner, key, self._outcome(key, exc if exc is not None else fut.result()))], False))

    def _fence_refused(self, err: Any) -> None:
        """Count and log (rate-limited) a function the fence refused, with the reference that was refused."""
        if isinstance(err, dict) and err.get("type") == "meshaios.errors.FunctionRefused":
            self.counters["functions_refused"] += 1
            msg = str(err.get("msg"))[:300]
            self._badlog.warning((msg.encode(), "fence"), "refused to run a function: %s", msg)

    def _i_result(self, ins: SendResult) -> None:
        result = ins.result
        if not result["ok"]:
            self._fence_refused(result.get("err"))
        elif "size" in result:  # kept here: freed even if this DONE reaches no owner
            self.copybook.kept_result(ins.owner, result, ins.ep, self.clock.now())
        self._push_result(ins.owner, result)

    def _push_result(self, owner: str, result: M.Result) -> None:
        self._done_buffer[owner].append(result)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            if not self._doing:  # else the pass of instructions under way flushes or schedules it when done
                self._flush_soon()

    def _flush_soon(self) -> None:
        """The results buffered go out in the loop's next iteration (with whatever else finishes meanwhile)."""
        if not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush_later)

    def _flush_later(self) -> None:
        self._flush_pending = False
        if self._flush_scheduled:  # not flushed meanwhile
            self._flush_done()

    # ---- cancellation ---------------------------------------------------------------------------------------
    def _send_abort(self, node: str, owner: str, keys: list[M.TaskKey]) -> None:
        if node == self.node_id:
            self._abort(owner, keys)
            return
        member = self.swim.get(node) if self.swim else None
        if member is not None:  # a dead node runs nothing; its successor never heard of the task
            # a cancelled map aborts thousands at once: streamed when large, like every message that can grow
            self._send_node(node, member.addr, {"t": M.ABORT, "src": self.node_id, "owner": owner, "ids": keys})

    def _i_abort(self, ins: SendAbort) -> None:
        self._send_abort(ins.node, ins.owner, ins.keys)

    def _abort(self, owner: str, keys: list[M.TaskKey]) -> None:
        """``owner`` cancelled these attempts: ``ExecCore`` (``AbortRuns``) says what that means in each state."""
        self._core(AbortRuns(owner, keys))

    def _terminate_process_pool(self, _: TerminateProcessPool | None = None) -> None:
        """A process cannot be told to stop one task: stop them all. The tasks that were not aborted are marked
        innocent and resubmitted to a fresh pool when their futures fail (``_task_finished``)."""
        pool, self._procs = self._procs, None
        if pool is None:
            return
        self.counters["process_pool_terminations"] += 1
        for item in list(getattr(pool, "_pending_work_items", {}).values()):
            fut = getattr(item, "future", None)
            if fut is not None:
                fut._meshaios_innocent = True
        for p in list(getattr(pool, "_processes", {}).values()):
            with contextlib.suppress(Exception):
                p.terminate()
        pool.shutdown(wait=False, cancel_futures=False)

    # ---- work stealing --------------------------------------------------------------------------------------
    def _load_summary(self, now: float) -> M.LoadSummary:
        """What this node tells its peers about its queue (``sched/loadview.py``): the thieves' victim list."""
        return self.core.load_summary(now, bandwidth=self.links.ingress(self.node_id))

    def _on_steal(self, msg: M.Steal) -> None:
        src, m = msg["src"], msg["m"]  # shapes checked by decode (messages.check_steal)
        member = self.swim.get(src) if self.swim else None
        if member is None or src == self.node_id:
            self._steal_counts["unknown_peer"] += 1
            return
        if not self.steal_enabled:
            if m["k"] == "steal_req":  # say no at once: the thief cools down instead of waiting for a timeout
                self._steal_counts["refusals"] += 1
                self.transport.send(member.addr, encode(_steal_refusal(self.node_id, m["rid"])))
            return
        self._core(StealMessage(src, m))

    def _i_steal(self, ins: SendSteal) -> None:
        member = self.swim.get(ins.to) if self.swim else None
        if member is None or member.state not in (MemberState.ALIVE, MemberState.SUSPECT):
            return  # the engine's timeouts take care of it
        if ins.msg["k"] == "steal_offer" and not ins.msg["tasks"]:
            self._steal_counts["refusals"] += 1
        self._send_node(ins.to, member.addr, {"t": M.STEAL, "src": self.node_id, "m": ins.msg})

    def _i_moved(self, ins: SendMoved) -> None:
        """Tasks given to thieves for good: their owner must hear where they went."""
        for tid, _, dst in ins.moves:
            log.debug("task %s handed to %s", tid[:12], short(dst))
        if ins.owner == self.node_id:
            for tid, att, dst in ins.moves:
                self._owner(TaskMoved(tid, self.node_id, dst, att))
            return
        member = self.swim.get(ins.owner) if self.swim else None
        if member is None:
            return  # the owner is gone: nobody waits for these results any more
        moves = [(tid, att, dst) for tid, att, dst in ins.moves]
        self._send_node(ins.owner, member.addr, {"t": M.MOVED, "src": self.node_id, "moves": moves})

    def _steal_status(self) -> M.StatMap:
        c = self.steal.counters
        return {
            "enabled": self.steal_enabled,
            "stolen_in": c["stolen"],
            "stolen_out": c["given"],
            "steal_requests": c["requests"],
            "refused": c["refused"],  # our requests that victims said no to
            "refusals": self._steal_counts["refusals"],  # requests we said no to
            "lapsed": c["lapsed"],
            "late_accept": c["late_accept"],
            "dup_commit": c["dup_commit"],
            "retransmits": c["retransmits"],
            "unknown_peer": self._steal_counts["unknown_peer"],
            "queued": self.queue.n_queued(),
        }

    # ---- data plane -----------------------------------------------------------------------------------------
    def _on_fetch(self, msg: M.Fetch) -> None:
        member = self.swim.get(msg["src"]) if self.swim else None
        if member is None:
            return
        if self.shm.pending:
            self.shm.asked_again(_receiver(_peer(member.node_id)), msg["req"])
        if self._unspill(msg["id"], functools.partial(self._serve_fetch, member.node_id, msg)):
            return
        self._serve_fetch(member.node_id, msg, self.store.get(msg["id"]))

    def _serve_fetch(self, peer: str, msg: M.Fetch, obj: Payload | None) -> None:
        reply: M.Obj = {
            "t": M.OBJ,
            "src": self.node_id,
            "req": msg["req"],
            "id": msg["id"],
            "ok": obj is not None,
        }
        if obj is not None:
            if msg.get("shm") is True and self._same_host(peer) and buffer_bytes(obj) >= SHM_MIN_BYTES:
                self._serve_shm(_peer(peer), reply, obj)
                return
            reply["val"] = obj
            self.counters["served_bytes"] += obj.nbytes
        self._send_to(_peer(peer), reply)

    # ---- same-host transfers (store/shm.py) -------------------------------------------------------------------
    def _same_host(self, node_id: str) -> bool:
        """Both of us can use one /dev/shm: shared memory on at both ends, and the same host id."""
        if not self.host_id or node_id in self._shm_off:
            return False
        member = self.swim.get(node_id) if self.swim else None
        return member is not None and isinstance(member.meta, dict) and member.meta.get("hid") == self.host_id

    def _link_to(self, peer: str) -> float | None:
        """Bytes/s from here to ``peer`` where this node knows better than ``peer``'s own report: a node of this
        host (``Links.bandwidth``: /dev/shm's rate until measured); None otherwise."""
        return self.links.bandwidth(self.node_id, peer) if self._same_host(peer) else None

    def _send_fetch(self, holder: str, addr: str, req: int, obj: str) -> None:
        msg: M.Fetch = {"t": M.FETCH, "src": self.node_id, "req": req, "id": obj}
        if self._same_host(holder):
            msg["shm"] = True  # a holder on this machine may answer with a file in /dev/shm
            self._shm_asked[req] = holder
        self.transport.send(addr, encode(msg))

    def _serve_shm(self, dest: bytes, reply: M.Obj | M.Got | M.Store, obj: Payload, served: bool = True) -> None:
        """Write the object's buffers into a new file on a thread, then name it in the message: an ``obj`` to a
        peer, ``b"n:" + id``, or a ``got`` to a client of this machine (its identity), or a ``store`` to a replica
        (not counted as served bytes, as over the socket)."""
        path = self.shm.new_path()
        to_peer = served and dest.startswith(b"n:")
        mode = 0o644 if self._shm_fault == "mode" else 0o600
        fut = asyncio.get_running_loop().run_in_executor(None, write_file, path, obj, mode)

        def written(f: asyncio.Future[list[int]]) -> None:
            if f.cancelled():
                return
            exc = f.exception()
            if exc is not None:  # /dev/shm full, say: the socket still works
                self.counters["shm_write_failed"] += 1
                self._badlog.warning(("shm", "write"), "cannot write %s, sending over the socket: %s", path, exc)
                reply["val"] = obj
                self.counters["served_bytes"] += obj.nbytes if to_peer else 0
                self._send_to(dest, reply)
                return
            self.shm.track(path.name, _receiver(dest), cast(int, reply.get("req", -1)), self.clock.now())
            if self._shm_fault == "keep":
                return  # testing aid: the holder "dies" between writing the file and answering
            name = "v0-" + path.name if self._shm_fault == "name" else path.name  # testing aid: another version
            reply["shm"] = ShmRef(name, obj.blob, f.result()).to_wire()
            self.counters["shm_sent"] += 1
            self.counters["shm_sent_bytes"] += obj.nbytes
            self.counters["served_bytes"] += obj.nbytes if to_peer else 0
            self._send_to(dest, reply)

        fut.add_done_callback(written)

    def _on_store(self, ident: bytes, msg: M.Store) -> None:
        """Keep a replica of a put: its value in the message, or in a /dev/shm file of the sender's."""
        assert self.swim is not None
        member = self.swim.get(msg["src"])
        val = msg.get("val")
        if "shm" in msg:
            if not self.host_id or ident != _peer(msg["src"]):
                raise WireError("store: a shared-memory copy from someone other than its sender, or shm is off")
            try:
                val = self._map_shm(msg["shm"], msg["src"], short(msg["src"]))
            except ShmError:
                if member is not None:
                    nack = {"t": M.STORED, "src": self.node_id, "id": msg["id"], "noshm": True}
                    self.transport.send(member.addr, encode(nack))
                return
        if not isinstance(val, Payload):
            raise WireError("store: a value (val) or a shared-memory file (shm) is required")
        self.store.put(msg["id"], val)
        self.copybook.kept_copy(msg["id"], msg["src"], self.clock.now())
        if member is not None:
            stored = encode({"t": M.STORED, "src": self.node_id, "id": msg["id"]})
            answer = functools.partial(self.transport.send, member.addr, stored)
            if msg.get("dev") == "gpu":
                self._to_device(msg["id"], val, answer)  # answered once it is on the device
            else:
                answer()

    def _claim_shm(self, msg: M.Obj) -> Payload | None:
        """The payload of a shared-memory answer, mapped; None if it was refused (then asked again, by socket)."""
        holder = self._shm_asked.pop(msg["req"], None)
        if holder is None or holder != msg["src"]:
            raise WireError("obj: a shared-memory answer to a fetch that did not ask for one")
        try:
            return self._map_shm(msg["shm"], holder, short(holder))
        except ShmError:
            self._shm_off.add(holder)
            member = self.swim.get(holder) if self.swim else None
            if member is not None:
                self._send_fetch(holder, member.addr, msg["req"], msg["id"])
            return None

    def _map_shm(self, raw: Any, src: str, who: str) -> Payload:
        """Map the /dev/shm file that a message from ``src`` (a node or a client id) names, counted; ShmError,
        counted and logged, if it is refused: the caller then asks for the bytes over the socket."""
        try:
            try:
                ref = parse_ref(raw, self.shm.tag, src)
            except WireError as exc:  # a peer of another version names its files otherwise: not fatal, not lost
                raise ShmError(f"unusable reference: {exc}") from None
            val = open_ref(self.shm.dir, ref)
        except ShmError as exc:
            self.counters["shm_refused"] += 1
            log.warning("shared memory from %s refused, asking for the bytes over the socket instead: %s", who, exc)
            raise
        self.counters["shm_received"] += 1
        self.counters["shm_received_bytes"] += val.nbytes
        return val

    def _unspill(self, key: str, then: Callable[[Payload | None], None]) -> bool:
        """If ``key`` is spilled, read it back on a thread and call ``then`` with it on the loop; True if so."""
        if not self.store.on_disk(key):
            return False
        fut = asyncio.get_running_loop().run_in_executor(None, self.store.get, key)

        def done(f: asyncio.Future[Payload | None]) -> None:
            if f.cancelled():
                return
            exc = f.exception()
            try:
                then(None if exc is not None else f.result())
            except Exception:
                log.exception("error after reading %s back from disk", key)
                self.counters["handler_errors"] += 1

        fut.add_done_callback(done)
        return True

    def _release_client(self, client: bytes, why: str) -> None:
        # nobody can collect its results any more: its unfinished tasks are cancelled (and so never run, if queued)
        self._owner(CancelClient(client))
        n = self.owner.release_client(client)
        self.shm.receiver_gone(_receiver(client))
        self._get_shm = {g for g in self._get_shm if g[0] != client}
        self.counters["clients_released"] += 1
        if n:
            log.info("client %r %s: released %d objects and results it held", client[:14], why, n)

    def _on_obj(self, msg: M.Obj) -> None:
        if "shm" in msg and msg["ok"] is True:
            if self._shm_fault == "drop":
                return  # testing aid: a consumer that dies before it claims the file
            shm_val = self._claim_shm(msg)
            if shm_val is None:
                return  # asked again over the socket
            msg["val"] = shm_val
        else:
            self._shm_asked.pop(msg["req"], None)
        val = msg.get("val")
        ok = bool(msg["ok"]) and isinstance(val, Payload)
        sent = self.fetcher.request(msg["req"])
        if sent is None:
            # a late answer to a fetch given up on (timed out, asked again elsewhere): nobody waits for this copy,
            # and kept it would never be released
            self.counters["late_objects"] += 1
            return
        if isinstance(val, Payload) and ok:
            if msg["id"] not in self.store:
                self._fetched.add(msg["id"])
            self.store.put(msg["id"], val)
            self.counters["fetched_bytes"] += val.nbytes
            # a measurement of the link from that holder to here (placement prices moves by it)
            self.links.observe(sent[0], self.node_id, val.nbytes, self.clock.now() - sent[2])
        self._fetch_actions(self.fetcher.arrived(msg["req"], ok, self.clock.now()))

    def _on_get(self, ident: bytes, msg: M.Get) -> None:
        if self.host_id and msg.get("shm") == self.host_id:  # a client of this machine and user
            self._get_shm.add((ident, msg["req"]))
        elif self.shm.pending:  # a client asks over the socket after it refused a file: that file is not wanted
            self.shm.receiver_gone(_receiver(ident))
        self._answer_get(ident, msg["req"], msg["id"])

    def _answer_get(
        self, ident: bytes, req: int, obj_id: str, relayed: bool = False, loaded: Payload | None = None
    ) -> None:
        """A client wants a value: from our store, the owner's inline copy, or fetched from its holder."""
        then = functools.partial(self._answer_loaded, ident, req, obj_id, relayed)
        if loaded is None and self._unspill(obj_id, then):
            return  # answered once the spilled copy has been read back, on a thread
        reply: M.Got = {"t": M.GOT, "req": req, "id": obj_id, "ok": False}
        local = loaded if loaded is not None else self.store.get(obj_id)
        if local is not None:
            reply["ok"] = True
            if relayed and obj_id not in self.core.input_refs:
                # fetched only to hand on: no second copy stays here -- unless a task queued here shares that
                # fetch, in which case the copy is that task's input (released with it: ``ReleaseInputs`` from the core)
                self.store.delete(obj_id)
            if (ident, req) in self._get_shm:
                self._get_shm.discard((ident, req))
                if buffer_bytes(local) >= SHM_MIN_BYTES:
                    self._serve_shm(ident, reply, local)
                    return
            reply["val"] = local
            self._send_to(ident, reply)
            return
        t = self.owner.lookup(obj_id)
        if t is None:
            reply["err"] = f"object {obj_id} is not known to this node (released, or owned elsewhere)"
        elif t.state is TaskState.FAILED:
            err: Mapping[str, object] = t.error or {}
            reply["err"] = f"object {obj_id} failed: {err.get('msg', '')}"
            if err.get("type") == "meshaios.ObjectLost":
                reply["lost"] = str(err.get("obj", obj_id))
        elif t.state is TaskState.DONE and t.result is not None and obj_id == t.id:
            reply["ok"] = True
            reply["val"] = t.result
        elif t.available:
            size = t.size // t.parts if t.parts else t.size
            pseudo: ClientGet = {"id": f"get:{req}", "_get": (ident, req, obj_id)}
            self._fetch_actions(self.fetcher.need(pseudo, {obj_id: (list(t.locations), size)}, set(), self.clock.now()))
            return
        else:
            self._get_waiters.append((ident, req, obj_id))  # being (re)computed: answered on a later tick
            return
        self._get_shm.discard((ident, req))
        self._send_to(ident, reply)

    def _answer_loaded(self, ident: bytes, req: int, obj_id: str, relayed: bool, val: Payload | None) -> None:
        if val is not None or obj_id not in self.store:
            self._answer_get(ident, req, obj_id, relayed, val)
            return
        err = f"object {obj_id} could not be read back from this node's spill directory"
        self._get_shm.discard((ident, req))
        self.transport.reply(ident, encode({"t": M.GOT, "req": req, "id": obj_id, "ok": False, "err": err}))

    def _on_put(self, ident: bytes, msg: M.Put) -> None:
        val = msg.get("val")
        if "shm" in msg:  # a client of this machine wrote the value into a file of its own
            if not self.host_id or not ident.startswith(b"c:"):
                raise WireError("put: shared memory is off on this node")
            client = ident[2:].decode("latin-1")
            try:
                val = self._map_shm(msg["shm"], client, f"client {client[:9]}")
            except ShmError as exc:
                nack = {"t": M.PUT_ACK, "req": msg["req"], "id": msg["id"], "ok": False, "err": str(exc), "noshm": True}
                self.transport.reply(ident, encode(nack))
                return
        if not isinstance(val, Payload):
            raise WireError("put: a value (val) or a shared-memory file (shm) is required")
        self.store.put(msg["id"], val)
        self._owner(RegisterPut(ident, msg["id"], [self.node_id], val.nbytes))
        gpu = msg.get("dev") == "gpu"
        if gpu:  # wanted on a GPU: on ours now, and the second copy goes to a GPU node
            self._gpu_puts.add(msg["id"])
            self._to_device(msg["id"], val, lambda: None)
        # a second copy elsewhere before the client hears it is safe: put data has no lineage to recompute it from
        self._put_actions(self.puts.begin(ident, msg["req"], msg["id"], self._replica_candidates(gpu)))

    def _replica_candidates(self, gpu: bool = False) -> list[str]:
        """Live peers; with ``gpu``, those with a GPU if there are any (a put asked for a device copy)."""
        live = [m for m in (self.swim.members() if self.swim else []) if m.state is MemberState.ALIVE]
        if gpu:
            with_gpu = [m for m in live if isinstance(m.meta, dict) and _gpus(m.meta.get("res")) > 0]
            live = with_gpu or live
        return [m.node_id for m in live]

    def _to_device(self, obj: str, val: Payload, then: Callable[[], object]) -> None:
        """Copy a put onto this node's first GPU (on a thread), then call ``then``; at once without a GPU."""
        if not self._gpu_order:
            then()
            return
        fut = asyncio.get_running_loop().run_in_executor(None, self.gpu.cache_input, obj, self._gpu_order[0], val)
        fut.add_done_callback(lambda _: then())

    def _put_actions(self, actions: list[PutAction]) -> None:
        for a in actions:
            if isinstance(a, Replicate):
                if not self._unspill(a.obj, functools.partial(self._replicate, a)):
                    self._replicate(a, self.store.get(a.obj))
            elif isinstance(a, AckPut):
                self._gpu_puts.discard(a.obj)
                ack = {"t": M.PUT_ACK, "req": a.req, "id": a.obj, "ok": True, "loc": a.holders}
                self.transport.reply(a.client, encode(ack))

    def _replicate(self, a: Replicate, val: Payload | None) -> None:
        if val is None:  # released meanwhile: nothing left to copy
            self._put_actions(self.puts.failed(a.obj, a.node, []))
            return
        msg: M.Store = {"t": M.STORE, "src": self.node_id, "id": a.obj}
        gpu = a.obj in self._gpu_puts
        if gpu:
            msg["dev"] = "gpu"
        if self._same_host(a.node) and buffer_bytes(val) >= SHM_MIN_BYTES:
            self._serve_shm(_peer(a.node), msg, val, served=False)  # a replica on this machine: through /dev/shm
            return
        msg["val"] = val
        if not self._send_to(_peer(a.node), msg, tag=("store", a.obj, a.node)):
            self._put_actions(self.puts.failed(a.obj, a.node, self._replica_candidates(gpu)))

    def _on_adopt(self, ident: bytes, msg: M.Adopt) -> None:
        """A client failed over to us: its puts, with the nodes that held them (still-live ones are kept)."""
        for item in msg["puts"]:
            if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str)):
                raise WireError("adopt: each put must be [id, size, [holder ids]]")
            oid, size, locs = item
            if type(size) is not int or not isinstance(locs, list) or not all(isinstance(x, str) for x in locs):
                raise WireError("adopt: each put must be [id, size, [holder ids]]")
            self._owner(RegisterPut(ident, oid, locs, size))
            t = self.owner.lookup(oid)
            if t is not None and t.client == ident:
                self._claim(t)

    def _claim(self, t: OwnedTask) -> None:
        """``t``'s stored copies, which this owner adopted (its client failed over here), are ours to free now:
        each holder that this node counts is told (CLAIM), and so keeps its copy past the former owner's death,
        and against its free (it may be alive and release the client's objects after its memory lease). Sent
        once more ``RESTATE_AFTER`` s later (idempotent: ``CopyBook.claim_sent``): a CLAIM lost on its way would
        leave the copy to the former owner's free."""
        ids = [f"{t.id}#{j}" for j in range(t.parts)] or [t.id]
        for holder in t.locations:
            if holder == self.node_id:
                self._claimed(self.node_id, ids)
            elif self._send_claim(holder, ids):
                self.copybook.claim_sent(holder, ids, self.clock.now())

    def _send_claim(self, holder: str, ids: list[str]) -> bool:
        member = self._live_member(holder)
        if member is None:
            return False
        return self._send_node(holder, member.addr, {"t": M.CLAIM, "src": self.node_id, "ids": ids})

    # ---- streams ----------------------------------------------------------------------------------------
    def _send_to(self, dest: bytes, msg: M.Message, tag: Any = None) -> bool:
        """Send ``msg`` to a peer (``b"n:" + id``) or a client (its identity): streamed in chunks when large."""
        frames = encode(msg)
        if self.streams_out.should_stream(frames):
            if dest.startswith(b"n:") and self._peer_addr(dest) is None:
                return False
            self._stream_actions(self.streams_out.open(dest, frames, self.clock.now(), tag))
            return True
        return self._send_raw(dest, frames)

    def _send_node(self, node: str, addr: str, msg: M.Message) -> bool:
        """Send ``msg`` to peer ``node`` at ``addr`` whatever SWIM thinks of it (a node declared dead may be alive and
        still want its results), streamed when large: a steal offer or a batch of results may carry many megabytes,
        and no frame larger than ``MAX_FRAME_BYTES`` gets through a node's ROUTER."""
        frames = encode(msg)
        if self.streams_out.should_stream(frames):
            self._stream_actions(self.streams_out.open(_peer(node), frames, self.clock.now()))
            return True
        return self.transport.send(addr, frames)

    def _peer_addr(self, dest: bytes) -> str | None:
        member = self.swim.get(dest[2:].decode(errors="replace")) if self.swim else None
        if member is None or member.state not in (MemberState.ALIVE, MemberState.SUSPECT):
            return None
        return member.addr

    def _send_raw(self, dest: bytes, frames: list[Any]) -> bool:
        if dest.startswith(b"n:"):
            addr = self._peer_addr(dest)
            return addr is not None and self.transport.send(addr, frames)
        return self.transport.reply(dest, frames)

    def _on_stream_msg(self, ident: bytes, msg: M.XHead | M.XChunk | M.XAck) -> None:
        now = self.clock.now()
        if msg["t"] == M.XHEAD:
            self._stream_actions(self.streams_in.on_head(ident, msg["x"], msg["sizes"], now))
        elif msg["t"] == M.XCHUNK:
            d: Payload = msg["d"]
            if d.blob or len(d.buffers) != 1:
                raise WireError("xchunk: the data must be exactly one raw frame")
            self._stream_actions(self.streams_in.on_chunk(ident, msg["x"], msg["o"], d.buffers[0], now))
        else:
            err = msg.get("err")
            self._stream_actions(self.streams_out.on_ack(ident, msg["x"], msg["n"], str(err) if err else None, now))

    def _assembled(self, src: bytes, fut: asyncio.Future[list[Any]]) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        try:
            if exc is not None:
                raise exc
            self._handle_assembled(src, fut.result())
        except WireError as err:
            self._bad_input(src, err)
        except Exception:
            log.exception("error handling a streamed message from %r", src[:12])
            self.counters["handler_errors"] += 1

    def _handle_assembled(self, src: bytes, frames: list[Any]) -> None:
        """A message that came as a stream, put together: checked and refused like one that came whole."""
        if self._throttle.throttled and self._throttled(src, frames, self.clock.now()):
            return
        try:
            self._handle(src, frames, streamed=True)
        except WireError as err:
            self._bad_input(src, err, frames)

    def _stream_actions(self, actions: list[StreamAction]) -> None:
        for a in actions:
            if isinstance(a, Emit):
                self._send_raw(a.dest, encode(a.msg))  # type: ignore[arg-type]
            elif isinstance(a, Delivered):
                src: bytes = a.src  # type: ignore[assignment]
                if a.nbytes <= ASSEMBLE_INLINE:
                    self._handle_assembled(src, assemble(a.sizes, a.parts))
                    continue
                # one copy of a large message into place: on a thread, so the loop keeps serving SWIM and clients
                fut = asyncio.get_running_loop().run_in_executor(None, assemble, a.sizes, a.parts)
                fut.add_done_callback(functools.partial(self._assembled, src))
            elif isinstance(a, StreamFailed):
                self.counters["streams_failed"] += 1
                log.warning("transfer to %r failed: %s", a.dest, a.reason)
                if isinstance(a.tag, tuple) and a.tag[0] == "store":
                    gpu = a.tag[1] in self._gpu_puts
                    self._put_actions(self.puts.failed(a.tag[1], a.tag[2], self._replica_candidates(gpu)))
            elif isinstance(a, StreamDone):
                self.counters["streams_done"] += 1

    def _data_tick(self) -> None:
        now = self.clock.now()
        self._copy_actions(self.copybook.tick(now))
        self.shm.tick(now)
        if self._heap_trim.tick(now, self.exec.queued, self.exec.finished):  # idle again: heap pages to the OS
            self.store.trim_heap()
            self.counters["heap_trims"] = self._heap_trim.trims
        if self._shm_asked:  # fetches given up on (timed out, holder dead) are answered by nobody
            for req in [r for r in self._shm_asked if self.fetcher.request(r) is None]:
                del self._shm_asked[req]
        self._fetch_actions(self.fetcher.tick(now))
        self._stream_actions(self.streams_out.tick(now))
        self.streams_in.tick(now)
        for client in self.holders.expired(now):
            self._release_client(client, f"silent for {self.holders.lease:g} s")
        if self._get_waiters:
            waiters, self._get_waiters = self._get_waiters, []
            for ident, req, obj_id in waiters:
                self._answer_get(ident, req, obj_id)

    def _flush_done(self) -> None:
        """Once per loop iteration: every completion since the last flush goes out in one message per owner."""
        self._flush_scheduled = False
        buffers, self._done_buffer = self._done_buffer, defaultdict(list)
        for owner, results in buffers.items():
            if owner == self.node_id:
                self._owner(Completed(self.node_id, results))
                continue
            member = self.swim.get(owner) if self.swim else None
            if member is None:
                self.counters["orphan_results"] += len(results)
                continue
            # our queue length rides on every DONE: fresher than SWIM meta, which reaches a peer every ~N/4 s
            msg: M.Done = {"t": M.DONE, "src": self.node_id, "results": results, "q": self.exec.queued}
            if self._summary:
                msg["ld"] = self._summary
            self._send_node(owner, member.addr, msg)

    # ---- views ----------------------------------------------------------------------------------------------
    def _meta(self) -> M.NodeMeta:
        running = sum(p.busy for p in (self._pool, *self._gpu_pools.values()) if p is not None)
        return {
            "rm": self.model.summary(4),
            "name": self.name,
            "w": self.workers,
            "q": self.exec.queued,
            "r": running,
            "mem": self.store.stats.bytes_in_memory,
            "dev": self.devices,
            "res": self._res,
            "up": round(time.time() - self.started_at, 1),
            "fin": self.exec.finished,
            "fail": self.exec.failed,
            "pend": self.owner.pending,
            "tps": round(self._rate.rate(self.clock.now(), self.exec.finished), 1),
            **({"ld": self._summary} if self._summary else {}),
            **({"hid": self.host_id} if self.host_id else {}),
        }

    # ---- the mesh-wide view (the dashboard's task stream, errors and progress) -------------------------------
    def _note_failures(self, results: list[M.Result]) -> None:
        """Failures of tasks this node owns, as their clients hear of them: kept (``RECENT_ERRORS``) so that the
        dashboard still shows them once the futures are gone. Cancellations, and dependents failing because of
        a failure already kept, are left out."""
        for r in results:
            if r.get("ok") is not False:
                continue
            raw = r.get("err")
            err: Mapping[str, object] = raw if isinstance(raw, dict) else {}
            etype, msg = str(err.get("type", "Error")), str(err.get("msg", ""))
            if etype == "meshaios.Cancelled" or msg.startswith("dependency "):
                continue
            t = self.owner.tasks.get(r.get("id", ""))
            self._recent_errors.append(
                {
                    "at": time.time(),
                    "task": str(r.get("id", "")),
                    "function": fn_label(t.fn) if t is not None else "",
                    "client": client_label(t.client) if t is not None else "",
                    "type": etype[:200],
                    "msg": msg[:1000],
                    "tb": str(err.get("tb", ""))[-4000:],
                    "node": str(err.get("node") or r.get("node") or ""),
                }
            )

    def _recent_work(self) -> tuple[list[TaskRecord], WorkView]:
        """This node's last ``STREAM_RECORDS`` task attempts, and one scan of its owner's tasks (``work_view``) that
        names them: made at most every ``VIEW_REUSE`` s, for this node's own page and for its peers' peeks alike."""
        now = self.clock.now()
        if self._work_cache is None or now - self._work_cache[0] >= VIEW_REUSE:
            records = self.timeline.recent(STREAM_RECORDS, offset=time.time() - now)
            self._work_cache = (now, records, work_view(self.owner.tasks, now, name_tasks=[r["task"] for r in records]))
        return self._work_cache[1], self._work_cache[2]

    def peer_view(self) -> PeerView:
        """What this node tells a ``peek``: its most recent task attempts (with the functions of those it owns),
        the failures it owns, and the per-function progress and jobs of the tasks it owns."""
        records, work = self._recent_work()
        return {
            "node": self.node_id,
            "name": self.name,
            "workers": self.workers,
            "timeline": records,
            "names": work["task_functions"],
            "functions": work["functions"],
            "jobs": work["jobs"],
            "errors": list(self._recent_errors),
            "gpus": self._gpu_view(),
        }

    def _gpu_view(self) -> dict[str, dict[str, int]]:
        """Per GPU of this node: what the device tier keeps there (bytes, objects, against its share of the
        device), its copies each way and evictions, and how many of its task slots are busy."""
        out: dict[str, dict[str, int]] = {}
        for dev, st in self.gpu.status().items():
            pool = self._gpu_pools.get(dev)
            out[dev] = {**st, "busy": pool.busy if pool is not None else 0}
        return out

    def _names(self, ids: Collection[str]) -> dict[str, str]:
        """The functions of the tasks among ``ids`` that this node owns."""
        out: dict[str, str] = {}
        for tid in ids:
            t = self.owner.tasks.get(tid)
            if t is not None:
                out[tid] = fn_label(t.fn)
        return out

    def _on_peek(self, msg: M.Peek) -> None:
        member = self.swim.get(msg["src"]) if self.swim else None
        if member is None:
            return
        ids = msg.get("ids")
        reply: M.Peeked = {"t": M.PEEKED, "src": self.node_id, "req": msg["req"]}
        if isinstance(ids, list):
            reply["names"] = self._names([i for i in ids[:MAX_PEEK_IDS] if isinstance(i, str)])
        else:
            reply["view"] = dict(self.peer_view())
        self._send_to(_peer(member.node_id), reply)

    def _on_peeked(self, msg: M.Peeked) -> None:
        waiting = self._peeks.get(msg["req"])
        if waiting is not None and waiting[0] == msg["src"] and not waiting[1].done():
            waiting[1].set_result(msg)

    async def _peek_all(self, asks: dict[str, list[str] | None], timeout: float) -> dict[str, M.Peeked]:
        """Send a ``peek`` to each node of ``asks`` (with the ids to name, or None for its view); the answers that
        came within ``timeout`` seconds, by node."""
        loop = asyncio.get_running_loop()
        sent: dict[int, str] = {}
        for node_id, ids in asks.items():
            self._peek_req += 1
            req = self._peek_req
            fut: asyncio.Future[M.Peeked] = loop.create_future()
            self._peeks[req] = (node_id, fut)
            sent[req] = node_id
            peek: M.Peek = {"t": M.PEEK, "src": self.node_id, "req": req}
            if ids is not None:
                peek["ids"] = ids
            self._send_to(_peer(node_id), peek)
        try:
            futs = [self._peeks[r][1] for r in sent]
            if futs:
                await asyncio.wait(futs, timeout=timeout)
            return {sent[r]: self._peeks[r][1].result() for r in sent if self._peeks[r][1].done()}
        finally:
            for r in sent:
                self._peeks.pop(r, None)

    async def mesh_views(self, timeout: float = PEEK_TIMEOUT) -> list[dict[str, object]]:
        """Every live node's ``peer_view``, this one's first, with each task of their streams named by the node that
        owns it (a second round of ``peek``s, to the owners, for the tasks their executors could not name)."""
        assert self.swim is not None
        live = [m.node_id for m in self.swim.members() if m.state in _REACHABLE]
        answers = await self._peek_all(dict.fromkeys(live), timeout)
        views: list[dict[str, object]] = [dict(self.peer_view())]
        now = self.clock.now()
        for node_id in live:
            answer = answers.get(node_id)
            view = answer.get("view") if answer is not None else None
            if isinstance(view, dict):
                self._last_views[node_id] = (now, view)
            else:
                # a member busy for a moment: its last view, not a mesh whose totals drop by that member's share
                # (with ownership spread, every member owns part of a client's job)
                last = self._last_views.get(node_id)
                if last is None or now - last[0] > VIEW_STALE:
                    continue
                view = {**last[1], "stale": round(now - last[0], 1)}
            views.append(view)
        for node_id in [n for n in self._last_views if n not in live]:
            del self._last_views[node_id]
        unnamed: dict[str, list[str]] = defaultdict(list)
        for v in views:
            names = v.get("names")
            names = names if isinstance(names, dict) else {}
            for r in mappings(v.get("timeline")):
                if r.get("task") not in names:
                    unnamed[str(r.get("owner", ""))].append(str(r.get("task")))
        found: dict[str, str] = self._names(unnamed.pop(self.node_id, ()))
        asks = {o: ids[:MAX_PEEK_IDS] for o, ids in unnamed.items() if o in live}
        if asks:
            for a in (await self._peek_all(dict(asks), timeout)).values():
                got = a.get("names")
                if isinstance(got, dict):
                    found.update((str(k), str(v)) for k, v in got.items())
        if found:
            for v in views:
                own = v.get("names")
                v["names"] = {**found, **(own if isinstance(own, dict) else {})}
        return views

    def _model_path(self) -> Path:
        return state_dir(self.config) / f"runtime-model-{_safe(self.name)}.msgpack"

    def _save_model(self) -> None:
        """Write-then-rename: a crash mid-write never leaves a half model behind."""
        path = self._model_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(self.model.dumps())
            os.replace(tmp, path)
        except OSError as exc:
            log.debug("cannot save the runtime model: %s", exc)

    @functools.cached_property
    def _res(self) -> dict[str, int]:
        """What this node can give one task: the owner's hard resource constraints are checked against it."""
        inv = self.inventory
        return {"cpu": inv.cpu_cores, "memory": inv.memory, "gpu": inv.gpu_count, "gpu_memory": inv.max_gpu_memory}

    def status_counts(self) -> dict[str, Any]:
        """The task counters of ``status()`` that the dashboard's throughput history adds up (``mesh_view``'s
        totals), for this node and every member: sampled once a second on the loop, so none of the status's
        timeline, task records or store figures."""
        assert self.swim is not None
        me = {
            "id": self.node_id,
            "workers": self.workers,
            "queued": self.exec.queued,
            "running": sum(p.busy for p in (self._pool, *self._gpu_pools.values()) if p is not None),
            "finished": self.exec.finished,
            "failed": self.exec.failed,
            "pending": self.owner.pending,
        }
        members = []
        for m in self.swim.members():
            meta = m.meta or {}
            members.append({"id": m.node_id, "state": m.state.value, "workers": meta.get("w", 0),
                            "queued": meta.get("q", 0), "running": meta.get("r", 0), "finished": meta.get("fin", 0),
                            "failed": meta.get("fail", 0), "pending": meta.get("pend", 0)})  # fmt: skip
        return {"node": me, "members": members}

    def status(self) -> M.StatusData:
        assert self.swim is not None
        me: M.StatusNode = {
            "id": self.node_id,
            "name": self.name,
            "addr": self.address,
            "state": "alive",
            "mesh": self.mesh_id,
            "secure": self.secure,
            "workers": self.workers,
            "queued": self.exec.queued,
            "running": sum(p.busy for p in (self._pool, *self._gpu_pools.values()) if p is not None),
            "finished": self.exec.finished,
            "failed": self.exec.failed,
            "devices": self.devices,
            "uptime": time.time() - self.started_at,
            "tasks_per_s": self._rate.rate(self.clock.now(), self.exec.finished),
            "incarnation": self.swim.incarnation,
            "http": self.http_url,
            "owner": dict(self.owner.counters),
            "pending": self.owner.pending,
            "counters": dict(self.counters),
            "store": dataclasses.asdict(self.store.stats),
            "gpu": self.gpu.status(),  # per device: host<->device copies, objects kept there, evictions
            "model": self.model.stats(),
            "placement": self.config.placement,
            "steal": self._steal_status(),
            "memory_limit": self.store.memory_limit,
            "fetch": {"pending": self.fetcher.pending, "fetched_bytes": self.fetcher.fetched_bytes,
                      "links": self.links.snapshot()},
            "timeline_summary": self.timeline.summary(),
            "timeline": self.timeline.recent(200, offset=time.time() - self.clock.now()),
            "streams": {
                "out_open": self.streams_out.open_streams,
                "out_bytes": self.streams_out.bytes_sent,
                "out_failed": self.streams_out.failed,
                "in_open": self.streams_in.open_streams,
                "in_bytes": self.streams_in.bytes_received,
                "in_refused": self.streams_in.refused,
                "in_dropped": self.streams_in.dropped,
                "puts_pending": self.puts.pending,
                "replicas_replaced": self.puts.replaced,
            },
            "transport": self.transport.stats.as_dict(),
            "shm": {
                "enabled": bool(self.host_id),
                "host": self.host_id,
                "min_bytes": SHM_MIN_BYTES,
                "sent": self.counters["shm_sent"],
                "sent_bytes": self.counters["shm_sent_bytes"],
                "received": self.counters["shm_received"],
                "received_bytes": self.counters["shm_received_bytes"],
                "refused": self.counters["shm_refused"],
                "files_pending": len(self.shm.pending),
                "expired": self.shm.expired,
                "swept": self.shm.swept,
            },
            "fence": self.resolver.fence.describe(),
            "throttle": {"peers": self._throttle.throttled, "dropped": self._throttle.dropped},
        }
        members: list[M.StatusMember] = [
            {
                "id": m.node_id,
                "name": (m.meta or {}).get("name", ""),
                "addr": m.addr,
                "state": m.state.value,
                "incarnation": m.incarnation,
                "workers": (m.meta or {}).get("w", 0),
                "queued": (m.meta or {}).get("q", 0),
                "running": (m.meta or {}).get("r", 0),
                "store_bytes": (m.meta or {}).get("mem", 0),
                "devices": (m.meta or {}).get("dev", ""),
                "since": self.clock.now() - m.state_since,
                "uptime": (m.meta or {}).get("up"),
                "finished": (m.meta or {}).get("fin", 0),
                "failed": (m.meta or {}).get("fail", 0),
                "pending": (m.meta or {}).get("pend", 0),
                "tasks_per_s": (m.meta or {}).get("tps", 0.0),
            }
            for m in self.swim.members()
        ]
        return {"node": me, "members": members}


_STREAM_TYPES = frozenset((M.XHEAD, M.XCHUNK, M.XACK))
_REACHABLE = frozenset((MemberState.ALIVE, MemberState.SUSPECT))
# a peer's identity: "n:" on its data connection, "s:" on its control lane (SWIM, ``ZmqTransport.send_control``)
_NODE_IDENTS = (b"n:", b"s:")
_SETTLE = Settle()


def _peer(node_id: str) -> bytes:
    """A peer's endpoint for ``Node._send_to``: the identity its messages arrive with."""
    return b"n:" + node_id.encode()


def _receiver(dest: bytes) -> str:
    """Who a shared-memory file was written for (``ShmArea.track``): a peer's or a client's identity."""
    return dest.decode("latin-1")


def _steal_refusal(src: str, rid: int) -> M.Steal:
    """An empty offer: the answer to a steal request when stealing is off here."""
    return {"t": M.STEAL, "src": src, "m": {"k": "steal_offer", "rid": rid, "tasks": []}}


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "node"


def _load_model(path: Path) -> RuntimeModel:
    """The model survives restarts (a node restarted with the same name picks up what it learned)."""
    try:
        return RuntimeModel.loads(path.read_bytes())
    except (OSError, ValueError):
        return RuntimeModel()


def _detect(config: NodeConfig) -> Any:
    from meshaios.devices.detect import FakeGpuSpec, detect_devices

    try:
        fakes = [FakeGpuSpec.parse(spec) for spec in config.fake_gpus]
    except ValueError as exc:
        raise ConfigError(f"bad --fake-gpu: {exc}") from exc
    if config.no_gpu:
        return detect_devices(fakes, cupy_module=None)
    return detect_devices(fakes)


def _device_tier(inventory: Any, inline_bytes: int, allow_pickle: bool, host_put: Any) -> DeviceTier:
    """The node's GPU results kept on their GPUs; a fake GPU gets a ``FakeCupy`` of its declared memory."""
    from meshaios.devices.fakecupy import FakeCupy

    limits = {g.device: int(g.total_memory * DEVICE_RESIDENT_FRACTION) for g in inventory.gpus}
    fakes = {g.device: FakeCupy(device_count=g.index + 1, memory=g.total_memory) for g in inventory.gpus if g.fake}
    return DeviceTier(
        limits, inline_bytes=inline_bytes, allow_pickle=allow_pickle, host_put=host_put, cupy_modules=fakes
    )


def _speeds(inventory: Any) -> dict[str, float]:
    """Declared speed per device kind, as the node's load summary tells EFT and thieves: the CPU 1.0, its GPUs the
    slowest one's declared speed (1.0 for a real GPU: the scheduler learns; a fake one's ``speed=``)."""
    gpus = [float(g.speed) for g in inventory.gpus]
    return {"cpu": 1.0, "gpu": min(gpus)} if gpus else {"cpu": 1.0}


def _gpus(res: Any) -> int:
    """GPUs in a peer's gossiped ``res`` (anything odd counts as none)."""
    n = res.get("gpu", 0) if isinstance(res, dict) else 0
    return n if type(n) is int else 0


def _http_token(config: NodeConfig, keys: MeshKeys | None) -> str | None:
    """The dashboard's bearer token, derived from the mesh keys; refuses an open dashboard off loopback."""
    from meshaios.dashboard.server import dashboard_token, is_loopback_host

    http_token = dashboard_token(keys) if keys is not None else None
    if config.http and http_token is None and not is_loopback_host(config.http_bind):
        raise ConfigError(
            f"--http-bind {config.http_bind} needs a mesh token: a dashboard without one is served on loopback only"
        )
    return http_token


def _tcp(seed: str) -> str:
    return seed if "://" in seed else f"tcp://{seed}"


def _host_port(address: str) -> tuple[str, int]:
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if host in ("0.0.0.0", "*", ""):
        host = primary_ip()
    return host, int(port)
