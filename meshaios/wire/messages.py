"""Message types: the whole vocabulary nodes and clients speak, defined once.

Every message type is a ``TypedDict`` below, with ``t: Literal[...]`` naming its type; ``Message`` is the union of
them all, so ``if msg["t"] == RUN:`` narrows a decoded message in a handler and mypy checks each field read and
written. Nested shapes (a task inside RUN or SUBMIT, a result, the steal engine's messages, SWIM's, STATUS_REPLY's
node) are TypedDicts too, and the steal task header, which travels as a list, is the ``StealTask`` NamedTuple.

Messages stay plain dicts (msgpack maps) at run time: the hot path builds and reads tens of thousands per second,
and a dict costs nothing to encode. The runtime validation that ``decode`` applies to every message -- ``SCHEMAS``
and the nested tables -- is *derived from these definitions* (``typing.get_type_hints`` and a small mapping from
annotations to ``isinstance`` checks, ``_types_of``), so there is no second, hand-written layout to drift:

* a message's ``Required`` fields must be present with their types (``bool`` never passes for ``int``);
* its ``NotRequired`` fields are not checked on decode (their handlers read them defensively: ``retries`` that is
  not an int means 0), except in a RUN task, where every declared field present must have its type;
* the steal messages and the id lists of ABORT and MOVED are checked in depth (``checker``), including
  what an ``Annotated`` predicate adds (non-negative, non-empty).
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable, Mapping
from typing import (
    Annotated,
    Any,
    Final,
    Literal,
    NamedTuple,
    NotRequired,
    Required,
    TypeAlias,
    TypedDict,
    Union,
    get_args,
    get_origin,
    get_type_hints,
    is_typeddict,
)

from meshaios.errors import WireError
from meshaios.timeline import TaskRecord, TimelineSummary
from meshaios.wire.payload import Payload

PROTOCOL_VERSION: Final = 1

# node <-> node
SWIM: Final = "swim"  # membership traffic; {"m": swim message}
RUN: Final = "run"  # owner -> executor: {"owner": node id, "tasks": [task]}
DONE: Final = "done"  # executor -> owner: {"results": [result]}
ABORT: Final = "abort"  # owner -> executor (-> thief): {"src": sender, "owner": owner id, "ids": [[task id, attempt]]}
STEAL: Final = "steal"  # thief <-> victim, work stealing: {"src": node id, "m": steal message (``StealMsg``)}
MOVED: Final = "moved"  # victim -> owner: {"src": victim id, "moves": [[task id, attempt, thief id], ...]}
STARTED: Final = "started"  # executor -> owner: {"src", "ids": [[task id, attempt]]} -- tasks that asked for it began
FENCED: Final = "fenced"  # executor -> owner: {"src", "c": client, "ep": its newer epoch} -- your run came too late
PEEK: Final = "peek"  # node -> node, for a mesh-wide dashboard: {"src", "req", "ids"?: [task ids to name]}
PEEKED: Final = "peeked"  # the answer: {"src", "req", "view"?: the peer's stream and errors, "names"?: {id: fn}}
# client <-> node
HELLO: Final = "hello"  # {"client": id}
WELCOME: Final = "welcome"  # {"node", "name", "mesh", "pickle"}
SUBMIT: Final = "submit"  # {"req"?: its number, "tasks": [client task], "ep"?: the client's epoch (failovers so far)}
FAULT: Final = "fault"  # chaos runner -> node started with --fault-injection: {"nodes", "addrs", "clients"} to cut off
DETACH: Final = "detach"  # client -> its former entry node: {"ep": epoch} -- I moved on; drop my older work
RESULTS: Final = "results"  # {"results": [result]}
RUNNING: Final = "running"  # node -> client: {"ids": [task ids]} -- began running (only for tasks submitted with "rs")
RELEASE: Final = "release"  # {"ids": [...]}
CANCEL: Final = "cancel"  # {"ids": [task ids]}: the client cancels these tasks of its own
KEEP: Final = "keep"  # {"ids": [task ids]}: fire and forget -- these (and what they need) run even if the client leaves
STATUS: Final = "status"  # {} -> STATUS_REPLY
STATUS_REPLY: Final = "status_reply"
PING: Final = "ping"  # {"peers"?: true -> PONG lists the live members' addresses}
PONG: Final = "pong"  # {"peers"?: [address]}
ERROR: Final = "error"  # {"msg": str, "req"?: the request it refuses, read from the refused header's first bytes}
# data plane
FETCH: Final = "fetch"  # node -> holder: {"src", "req", "id", "shm"?: true -- same host, a /dev/shm file will do}
OBJ: Final = "obj"  # holder -> node: {"src", "req", "id", "ok", "val"? | "shm"?: {"name", "blob", "sizes"}}
STORE: Final = "store"  # node -> replica: {"src", "id", "val" | "shm" (same host, as in OBJ)}
STORED: Final = "stored"  # replica -> node: {"src", "id", "noshm"?: refused the file, send the copy itself}
FREE: Final = "free"  # owner -> holder: {"src", "ids"}
CLAIM: Final = "claim"  # owner -> holder: {"src", "ids"}: copies of puts this owner adopted (its client failed over)
GET: Final = "get"  # client -> node: {"req", "id", "shm"?: the client's host id (store/shm.py)}
GOT: Final = "got"  # node -> client: {"req", "id", "ok", "val"? | "shm"? (as in OBJ) | "err"?}
PUT: Final = "put"  # client -> node: {"req", "id", "val" | "shm" (a client of this machine, as in OBJ)}
PUT_ACK: Final = "put_ack"  # node -> client: {"req", "id", "ok", "loc"?: [holder ids] | "err"?, "noshm"?}
BYE: Final = "bye"  # client -> node when it closes: release everything I held here ({})
ADOPT: Final = "adopt"  # client -> node after a failover: its puts, {"puts": [[id, size, [holder ids]], ...]}
# streams (``store/stream.py``): any large message, between any two parties, as bounded chunks with flow control
XHEAD: Final = "xhead"  # {"x": stream id, "sizes": [bytes of each frame of the message]}
XCHUNK: Final = "xchunk"  # {"x", "o": offset in the stream, "d": the bytes (one raw frame)}
XACK: Final = "xack"  # receiver -> sender: {"x", "n": bytes received so far, "err"?: why the stream is refused}

MAX_ID = 256  # characters in a task or object id: ids name files, log lines and map keys on every node
MAX_STEAL_BATCH = 256  # tasks in one offer or commit (the engine sends at most 16)


# ---- predicates that an ``Annotated`` field adds to its type (checked in depth only: ``checker``) ------------


def _non_negative(x: Any) -> bool:
    return bool(x >= 0)  # False for NaN too


def _non_empty(x: Any) -> bool:
    return len(x) > 0


def _at_most_steal_batch(x: Any) -> bool:
    return len(x) <= MAX_STEAL_BATCH


# ---- shapes nested in messages --------------------------------------------------------------------------------

Device: TypeAlias = Literal["cpu", "gpu"]
TaskKey: TypeAlias = tuple[str, int]  # [task id, attempt]; a list on the wire


class FunctionSpec(TypedDict, total=False):
    """A task's function, the value inside ``fn`` (protocol.md section 3): one of these three."""

    ref: str  # "module:qualname", resolved through the node's fence
    kernel: str  # a registered kernel, by name
    pickle: bytes  # cloudpickle, only where pickle is allowed (with ``kernel``: a user's kernel)


class ErrorInfo(TypedDict):
    """Why a task failed: ``err`` of a result."""

    type: str  # qualified class name, bare for builtins
    msg: str
    tb: NotRequired[str]  # formatted remote traceback
    exc: NotRequired[Payload]  # the pickled exception, where pickle is allowed and it pickles
    node: NotRequired[str]  # the node that reported it
    obj: NotRequired[str]  # meshaios.ObjectLost: the object that is gone


class Location(TypedDict, total=False):
    """Where a value lives when it did not travel inline: a dependency in a RUN task, ``done`` in a SUBMIT task."""

    loc: list[str]  # holder node ids
    size: int
    parts: int  # a shuffle map output: its parts are ``id#j``


class InlineValue(TypedDict):
    """``done`` of a resubmitted SUBMIT task whose value is small: the value itself."""

    v: Payload


DepValue: TypeAlias = Payload | Location | None  # a dependency inside a RUN task


class RunTask(TypedDict):
    """One task inside RUN (owner -> executor), and the spec a steal commit hands to the thief."""

    id: str
    att: int  # attempt
    fn: Payload
    args: Payload  # [args, kwargs]
    deps: dict[str, DepValue]
    pure: bool
    resources: NotRequired[dict[str, int]]
    parts: NotRequired[int]
    device: NotRequired[Device]  # where its owner placed it (EFT's pick); a GPU task's kind without it: resources
    prio: NotRequired[int]
    urg: NotRequired[bool]  # hurried by its owner for its deadline
    rs: NotRequired[bool]  # report its start (STARTED)
    kd: NotRequired[bool]  # a kernel on a GPU keeps its result there however small (devices/resident.py)
    fr: NotRequired[list[str]]  # inputs it is the last user of: the executor drops them when it succeeds
    c: NotRequired[str]  # the client, and its epoch under the sending owner (tasks/epochs.py)
    ep: NotRequired[int]


class SubmitTask(TypedDict):
    """One task inside SUBMIT (client -> owner). Its optional fields are read defensively by the owner."""

    id: str
    fn: Payload
    args: Payload
    deps: list[str]
    pure: NotRequired[bool]  # only true counts
    retries: NotRequired[int]  # anything but an int >= 0 means 0
    resources: NotRequired[dict[str, int]]
    parts: NotRequired[int]
    timeout: NotRequired[float]
    priority: NotRequired[int]
    deadline: NotRequired[float]  # seconds from now
    rs: NotRequired[bool]  # tell the client when it starts (RUNNING)
    kd: NotRequired[bool]  # keep_on_device: a kernel's result stays on its GPU however small
    dev: NotRequired[str]  # submit(device=): "cpu" (never a GPU) or "any" (placement chooses)
    ff: NotRequired[bool]  # fire and forget
    cancel: NotRequired[bool]  # cancelled before it was sent
    rc: NotRequired[bool]  # reconcile: the client has waited long; a new attempt may run
    done: NotRequired[InlineValue | Location]  # after a failover: it finished under the former owner
    rel: NotRequired[bool]  # ... and the client has released it


class Result(TypedDict):
    """One result inside DONE (executor -> owner) and RESULTS (owner -> client)."""

    id: str
    ok: bool
    att: NotRequired[int]  # the attempt that produced it
    v: NotRequired[Payload]  # the value, when ok and small
    size: NotRequired[int]  # a large value stays on its producer (``node``)
    parts: NotRequired[int]
    err: NotRequired[ErrorInfo]
    fatal: NotRequired[bool]  # retrying cannot help
    dt: NotRequired[float]  # seconds in the call
    dev: NotRequired[str]  # the device kind it ran on
    kdev: NotRequired[str]  # the device that keeps the value on its producer (a GPU task's result left there)
    node: NotRequired[str]  # who ran it (RESULTS)
    lost: NotRequired[list[str]]  # the inputs that are gone (DONE)


# ---- work stealing (``sched/stealing.py``): the five kinds travel inside STEAL's ``m`` ----------------------


class StealTask(NamedTuple):
    """A task as the steal engine moves it: a list on the wire, of these fields in this order -- 9 in an offer
    (``header()``), 10 (with ``spec``) in a commit (``list(task)``). The one definition of that layout:
    ``sched/stealing.py`` builds and reads it through this, and the validation is derived from it."""

    id: str
    att: int
    owner: str
    kernel: str
    device: Device
    devices: Annotated[list[Device], _non_empty]
    nbytes: Annotated[int, _non_negative]  # bytes that move with the task
    predicted: Annotated[float, _non_negative]  # runtime on the victim
    path: list[str]  # nodes it was stolen from, oldest first
    spec: RunTask | None = None  # in a commit only

    def header(self) -> list[object]:
        """The entry of an offer: every field but ``spec``."""
        return list(self[:STEAL_HEADER_LEN])


STEAL_HEADER_LEN: Final = len(StealTask._fields) - 1  # an offer's entries; a commit's carry the spec too


class StealReq(TypedDict):
    k: Literal["steal_req"]
    rid: int
    free: dict[Device, int]  # free slots per device kind
    speed: dict[Device, float]
    bw: NotRequired[float | None]  # bytes/s the thief sees


class StealOffer(TypedDict):
    k: Literal["steal_offer"]
    rid: int
    tasks: Annotated[list[StealTask], _at_most_steal_batch]  # 9 fields each; empty: a refusal


class StealAccept(TypedDict):
    k: Literal["steal_accept"]
    rid: int
    ids: Annotated[list[TaskKey], _at_most_steal_batch]


class StealCommit(TypedDict):
    k: Literal["steal_commit"]
    rid: int
    tasks: Annotated[list[StealTask], _at_most_steal_batch]  # 10 fields each: with the spec


class StealAck(TypedDict):
    k: Literal["steal_ack"]
    rid: int


StealMsg: TypeAlias = StealReq | StealOffer | StealAccept | StealCommit | StealAck


# ---- SWIM (``membership/swim.py``, which validates these in full itself: ``_parse``) ---------------------------


class ModelSummary(TypedDict):
    """``RuntimeModel.summary()``: ``rm`` in SWIM metadata, merged by peers (``merge_gossip``, which reads it
    defensively)."""

    v: int
    k: list[tuple[str, str, int, float, float, float]]  # [kernel, device, n, y_ref, slope, mean log bytes]


class LoadSummary(TypedDict, total=False):
    """``sched.loadview.make_summary``: ``ld`` in SWIM metadata and DONE (read by ``parse_summary``, which checks
    it)."""

    v: Required[int]
    d: Required[dict[str, list[float]]]  # device kind -> [slots, free, backlog seconds, speed]
    q: Required[int]  # queued
    st: Required[int]  # stealable
    bw: int  # bytes/s this node sees
    kf: dict[str, float]  # kernel factors


class NodeMeta(TypedDict, total=False):
    """A node's SWIM metadata: short keys, it rides on every membership message."""

    name: str
    w: int  # workers
    q: int  # tasks queued
    r: int  # running
    mem: int  # bytes in memory
    dev: str  # devices
    res: dict[str, int]  # what one task may have
    up: float  # uptime
    fin: int
    fail: int
    pend: int
    tps: float
    rm: ModelSummary  # runtime observations (sched/model.py)
    ld: LoadSummary  # load summary (sched/loadview.py)
    hid: str  # host id: same-host transfers through /dev/shm (store/shm.py)


SwimKind: TypeAlias = Literal["ping", "ack", "ping_req", "nack", "gossip", "sync", "leave"]
# [node_id, addr, state, incarnation, meta]; a list on the wire, extra trailing elements ignored
SwimUpdate: TypeAlias = list[Any]


# "from" is a Python keyword, hence the functional form
SwimMsg = TypedDict(
    "SwimMsg",
    {
        "k": SwimKind,
        "seq": int,
        "from": str,  # the sender's node id
        "addr": str,  # where answers go
        "inc": int,  # the sender's incarnation
        "meta": NodeMeta | None,
        "gossip": list[SwimUpdate],
        "to": NotRequired[str],  # ping
        "join": NotRequired[bool],  # ping
        "target": NotRequired[str],  # ack, ping_req, nack
        "target_addr": NotRequired[str],  # ping_req
        "members": NotRequired[list[SwimUpdate]],  # sync
        "reply": NotRequired[bool],  # sync
    },
)


# ---- STATUS_REPLY -----------------------------------------------------------------------------------------------


StatValue: TypeAlias = int | float | str | bool | None
StatMap: TypeAlias = dict[str, StatValue]  # a flat map of counters and settings in a status


class ModelStats(TypedDict):
    """``RuntimeModel.stats()``: ``node.model`` in a status."""

    observations: int
    mape: float
    mape_all: float
    kernels: int
    peer_kernels: int
    nodes: int
    per_kernel: list[tuple[str, int, float]]  # the kernels predicted most recently: [kernel@device, n, mape]


class FetchStatus(TypedDict):
    pending: int
    fetched_bytes: int
    links: dict[str, float]  # "src->dst": bytes/s measured


class FenceInfo(TypedDict):
    """``Fence.describe()`` (tasks/allowlist.py): ``node.fence`` in a status, what the node runs."""

    fenced: bool
    modules: list[str]
    functions: list[str]


class StatusNode(TypedDict, total=False):
    """``node`` of STATUS_REPLY: the answering node as it sees itself (``Node.status``)."""

    id: Required[str]
    name: str
    addr: str
    state: str
    mesh: str
    secure: bool
    workers: int
    queued: int
    running: int
    finished: int
    failed: int
    devices: str
    uptime: float
    tasks_per_s: float
    incarnation: int
    http: str | None
    owner: dict[str, int]  # owner counters
    pending: int
    counters: dict[str, int]  # node counters (bad_frames, ...)
    store: dict[str, int]  # store.objects.StoreStats
    gpu: dict[str, dict[str, int]]  # per device: devices.resident.TransferCounts + resident_bytes/objects, limit
    model: ModelStats
    placement: str
    steal: StatMap
    memory_limit: int
    fetch: FetchStatus
    timeline_summary: TimelineSummary
    timeline: list[TaskRecord]
    streams: dict[str, int]
    transport: dict[str, int]  # sent, received, dropped, auth_ok, auth_rejected
    shm: StatMap  # same-host transfers: enabled, host, counters
    fence: FenceInfo
    throttle: dict[str, int]


class StatusMember(TypedDict, total=False):
    """One entry of STATUS_REPLY's ``members``: a member as the answering node sees it."""

    id: Required[str]
    name: str
    addr: str
    state: str
    incarnation: int
    workers: int
    queued: int
    running: int
    store_bytes: int
    devices: str
    since: float  # seconds in that state
    uptime: float | None
    finished: int
    failed: int
    pending: int
    tasks_per_s: float


class StatusData(TypedDict, total=False):
    """What ``Node.status()`` returns and STATUS_REPLY carries: the dashboard, ``meshaios status`` and the chaos
    runner read it."""

    node: Required[StatusNode]
    members: Required[list[StatusMember]]


# ---- the messages -----------------------------------------------------------------------------------------------


class _Header(TypedDict, total=False):
    v: int  # PROTOCOL_VERSION: ``encode`` adds it, ``decode`` checks it


class SwimMessage(_Header, total=False):
    t: Required[Literal["swim"]]
    m: Required[SwimMsg]


class Run(_Header, total=False):
    t: Required[Literal["run"]]
    owner: Required[str]
    tasks: Required[list[RunTask]]


class Done(_Header, total=False):
    t: Required[Literal["done"]]
    src: Required[str]
    results: Required[list[Result]]
    q: int  # the executor's queue length, fresher than SWIM meta
    ld: LoadSummary  # its load summary (sched/loadview.py)


class Abort(_Header, total=False):
    t: Required[Literal["abort"]]
    src: Required[str]
    owner: Required[str]
    ids: Required[list[TaskKey]]


class Steal(_Header, total=False):
    t: Required[Literal["steal"]]
    src: Required[str]
    m: Required[StealMsg]


class Moved(_Header, total=False):
    t: Required[Literal["moved"]]
    src: Required[str]
    moves: Required[list[tuple[str, int, str]]]  # [task id, attempt, thief id]


class Started(_Header, total=False):
    t: Required[Literal["started"]]
    src: Required[str]
    ids: Required[list[Any]]  # [task id, attempt] each; the owner skips a malformed one


class Fenced(_Header, total=False):
    t: Required[Literal["fenced"]]
    src: Required[str]
    c: Required[str]
    ep: Required[int]


class Hello(_Header, total=False):
    t: Required[Literal["hello"]]
    client: Required[str]


class Welcome(_Header, total=False):
    t: Required[Literal["welcome"]]
    node: Required[str]
    name: Required[str]
    mesh: Required[str]
    pickle: Required[bool]
    hid: str  # the node's host id, when it takes /dev/shm files (store/shm.py): a client with the same may put that way
    mh: int  # the node's max_header_bytes: the client keeps its SUBMITs' headers to half of it (submit_batches)


class Submit(_Header, total=False):
    t: Required[Literal["submit"]]
    req: int  # the client's number for it, third in the header (after "v", "t"): an ERROR refusing it names it
    tasks: Required[list[SubmitTask]]
    ep: int  # 0 if absent or not an int >= 0


class Fault(_Header, total=False):
    t: Required[Literal["fault"]]
    nodes: Required[list[str]]
    addrs: Required[list[str]]
    clients: Required[list[str]]


class Detach(_Header, total=False):
    t: Required[Literal["detach"]]
    ep: Required[int]


class Results(_Header, total=False):
    t: Required[Literal["results"]]
    results: Required[list[Result]]  # checked item by item by the client, which fails one future on a bad one


class Running(_Header, total=False):
    t: Required[Literal["running"]]
    ids: Required[list[str]]


class Release(_Header, total=False):
    t: Required[Literal["release"]]
    ids: Required[list[str]]  # non-strings are skipped


class Cancel(_Header, total=False):
    t: Required[Literal["cancel"]]
    ids: Required[list[str]]


class Keep(_Header, total=False):
    t: Required[Literal["keep"]]
    ids: Required[list[str]]


class Status(_Header, total=False):
    t: Required[Literal["status"]]


class StatusReply(_Header, StatusData, total=False):
    t: Required[Literal["status_reply"]]


class Ping(_Header, total=False):
    t: Required[Literal["ping"]]
    peers: bool


class Pong(_Header, total=False):
    t: Required[Literal["pong"]]
    peers: list[str]


class Peek(_Header, total=False):
    t: Required[Literal["peek"]]
    src: Required[str]
    req: Required[int]
    ids: list[str]  # name these tasks (of the answering node's own) instead of sending its view


class Peeked(_Header, total=False):
    t: Required[Literal["peeked"]]
    src: Required[str]
    req: Required[int]
    view: dict[str, object]  # ``Node.peer_view``: its recent task stream, the failures it owns, per-function progress
    names: dict[str, str]  # task id -> function, for the ids asked


class Error(_Header, total=False):
    t: Required[Literal["error"]]
    msg: Required[str]
    req: int  # the refused message's own ``req`` (a submit, get or put), when its first bytes show one


class _Request(_Header, total=False):
    """The data plane's requests and answers: ``req`` pairs an answer with its request, ``id`` names the object."""

    req: Required[int]
    id: Required[str]


class Fetch(_Request, total=False):
    t: Required[Literal["fetch"]]
    src: Required[str]
    shm: bool  # same host: a /dev/shm file will do


class ShmWire(TypedDict):
    """``shm`` of an ``obj`` answer instead of ``val``: the object in a /dev/shm file (checked by
    ``store.shm.parse_ref``)."""

    name: str
    blob: bytes
    sizes: list[int]


class Obj(_Request, total=False):
    t: Required[Literal["obj"]]
    src: Required[str]
    ok: Required[bool]
    val: Payload  # the object, when ok
    shm: ShmWire  # ... or where it lies on this host


class Store(_Header, total=False):
    t: Required[Literal["store"]]
    src: Required[str]
    id: Required[str]
    val: Payload  # the copy (one of val and shm is required: ``Node._on_store``)
    shm: ShmWire  # ... or where it lies on this host (store/shm.py)
    dev: Literal["gpu"]  # a put asked for a GPU: copy it onto this node's device before answering STORED


class Stored(_Header, total=False):
    t: Required[Literal["stored"]]
    src: Required[str]
    id: Required[str]
    noshm: bool  # not stored: the store's /dev/shm file was refused, send the copy itself


class Free(_Header, total=False):
    t: Required[Literal["free"]]
    src: Required[str]
    ids: Required[list[str]]
    after: str  # a task of the sender's running here that is their last reader: drop them when it succeeds
    hold: bool  # the sender let their client's work go (it failed over): kept a while for the new owner's CLAIM


class Claim(_Header, total=False):
    t: Required[Literal["claim"]]
    src: Required[str]
    ids: Required[list[str]]


class Get(_Request, total=False):
    t: Required[Literal["get"]]
    shm: str  # the client's host id: a node with the same one may answer through /dev/shm


class Got(_Request, total=False):
    t: Required[Literal["got"]]
    ok: Required[bool]
    val: Payload
    shm: ShmWire  # ... or where it lies on this host (a client of this machine)
    err: str
    lost: str  # the object is gone: its id


class Put(_Request, total=False):
    t: Required[Literal["put"]]
    val: Payload  # the value (one of val and shm is required: ``Node._on_put``)
    shm: ShmWire  # ... or where it lies on this host: a client of the node's machine wrote it (store/shm.py)
    dev: Literal["gpu"]  # keep a copy on a GPU node's device too (devices/resident.py)


class PutAck(_Request, total=False):
    t: Required[Literal["put_ack"]]
    ok: Required[bool]
    loc: list[str]  # holder ids
    err: str
    noshm: bool  # the put's /dev/shm file was refused: send the value itself


class Adopt(_Header, total=False):
    t: Required[Literal["adopt"]]
    puts: Required[list[list[Any]]]  # [id, size, [holder ids]]; a malformed item is skipped by the node


class Bye(_Header, total=False):
    t: Required[Literal["bye"]]


class XHead(_Header, total=False):
    t: Required[Literal["xhead"]]
    x: Required[int]
    sizes: Required[list[int]]


class XChunk(_Header, total=False):
    t: Required[Literal["xchunk"]]
    x: Required[int]
    o: Required[int]
    d: Required[Payload]


class XAck(_Header, total=False):
    t: Required[Literal["xack"]]
    x: Required[int]
    n: Required[int]
    err: str


Message: TypeAlias = (
    SwimMessage | Run | Done | Abort | Steal | Moved | Started | Fenced | Peek | Peeked | Hello | Welcome | Submit
    | Fault | Detach
    | Results | Running | Release | Cancel | Keep | Status | StatusReply | Ping | Pong | Error | Fetch | Obj | Store
    | Stored | Free | Claim | Get | Got | Put | PutAck | Adopt | Bye | XHead | XChunk | XAck
)


# ---- validation, derived from the definitions above -----------------------------------------------------------

Schema: TypeAlias = dict[str, tuple[type, ...]]


def _hints(td: Any) -> dict[str, object]:
    return get_type_hints(td, include_extras=True)


def _fields(td: Any) -> tuple[dict[str, object], dict[str, object]]:
    """(required, optional) fields of a TypedDict, each name -> its annotation (``Required``/``NotRequired`` and
    ``Annotated`` unwrapped). Read from the annotations, not ``__required_keys__``: under ``from __future__ import
    annotations`` Python 3.11 takes every ``NotRequired`` field for a required one."""
    required: dict[str, object] = {}
    optional: dict[str, object] = {}
    # one ``__total__`` for all keys, inherited ones too (3.11 keeps no per-base totality): a definition that
    # inherits is total=False, as its bases are, and marks its required fields ``Required``
    for name, ann in _hints(td).items():
        origin = get_origin(ann)
        is_required = td.__total__
        if origin is Required or origin is NotRequired:
            is_required = origin is Required
            (ann,) = get_args(ann)
        (required if is_required else optional)[name] = ann
    return required, optional


def _types_of(ann: Any) -> tuple[type, ...]:
    """The ``isinstance`` check one annotation stands for at the top level: ``list[...]`` is a list, a TypedDict or
    ``dict[...]`` a dict, ``float`` an int or a float, a ``Literal`` the types of its values, a union the union."""
    origin = get_origin(ann)
    if origin is Annotated:
        return _types_of(get_args(ann)[0])
    if origin is Literal:
        return tuple(dict.fromkeys(type(a) for a in get_args(ann)))
    if origin is Union or origin is types.UnionType:
        return tuple(dict.fromkeys(t for a in get_args(ann) for t in _types_of(a)))
    if origin in (list, tuple) or (isinstance(ann, type) and issubclass(ann, tuple)):
        return (list,)  # msgpack has arrays only: a tuple or a NamedTuple arrives as a list
    if origin is dict or is_typeddict(ann):
        return (dict,)
    if ann is float:
        return (int, float)
    if ann is None or ann is type(None):
        return (type(None),)
    if ann is Any or ann is object:
        return (object, bool)
    if isinstance(ann, type):
        return (ann,)
    raise TypeError(f"no runtime check for the annotation {ann!r}")


def schema_of(td: Any, optional: bool = False) -> Schema:
    """The ``check_fields`` table of a TypedDict: its required fields, or its optional ones (``t`` and ``v`` are
    the codec's: the type is how the table was found, the version is checked before)."""
    fields = _fields(td)[1 if optional else 0]
    return {name: _types_of(ann) for name, ann in fields.items() if name not in ("t", "v")}


def _message_type(td: Any) -> str:
    (mtype,) = get_args(_fields(td)[0]["t"])
    return str(mtype)


# message type -> its definition, and the required fields that ``decode`` checks on every message of that type
DEFINITIONS: dict[str, type] = {_message_type(td): td for td in get_args(Message)}
SCHEMAS: dict[str, Schema] = {mtype: schema_of(td) for mtype, td in DEFINITIONS.items()}

RUN_TASK: Schema = schema_of(RunTask)
# Optional fields of a run task that the executor reads: when present they must have these types (a stray float
# for ``resources`` once left a task half-accepted on its executor, counted as queued for ever).
RUN_TASK_OPTIONAL: Schema = schema_of(RunTask, optional=True)
SUBMIT_TASK: Schema = schema_of(SubmitTask)
RESULT: Schema = schema_of(Result)

# Lists of maps inside a message, checked item by item: the whole vocabulary is checked here, on decode, so that
# the node's handlers never meet a task or result of the wrong shape. (``results`` in RESULTS is the client's to
# check: it fails one future on a bad item rather than dropping the whole batch.)
NESTED: dict[str, tuple[str, Schema]] = {
    RUN: ("tasks", RUN_TASK),
    SUBMIT: ("tasks", SUBMIT_TASK),
    DONE: ("results", RESULT),
}


def check_fields(obj: Any, schema: Schema, what: str) -> Any:
    """Reject a dict that lacks a field or carries one of the wrong type. ``bool`` is not an ``int`` here."""
    if not isinstance(obj, dict):
        raise WireError(f"{what}: expected a map, got {type(obj).__name__}")
    for key, want in schema.items():
        if key not in obj:
            raise WireError(f"{what}: missing field {key!r}")
        val = obj[key]
        if not isinstance(val, want) or (isinstance(val, bool) and bool not in want):
            raise WireError(f"{what}: field {key!r} has type {type(val).__name__}")
    return obj


def check_run_task(task: Any) -> RunTask:
    check_fields(task, RUN_TASK, "run task")
    for key, want in RUN_TASK_OPTIONAL.items():
        if key in task:
            check_fields(task, {key: want}, "run task")
    res = task.get("resources", {})
    if not all(isinstance(k, str) and type(v) is int for k, v in res.items()):
        raise WireError("run task: resources must map names to integers")
    for dep, val in task["deps"].items():
        if not isinstance(dep, str) or not (val is None or isinstance(val, Payload) or _is_location(val)):
            raise WireError("run task: a dependency must be a value, a location or nil")
    if not all(isinstance(x, str) for x in task.get("fr", ())):  # (rev19m: a non-str id reached ExecCore)
        raise WireError("run task: fr must list task ids")
    return task  # type: ignore[no-any-return]


def _is_location(val: Any) -> bool:
    """Where a dependency's value lives when it did not travel inline: ``{"loc": [node ids], "size": bytes}``."""
    if not isinstance(val, dict):
        return False
    loc = val.get("loc", [])
    return isinstance(loc, list) and all(isinstance(x, str) for x in loc) and type(val.get("size", 0)) is int


Check: TypeAlias = Callable[[Any], bool]


@functools.cache
def checker(ann: Any) -> Check:
    """A function telling whether a value has the type ``ann`` stands for, in depth: list items, map keys and
    values, tuples (lists on the wire) of the right length, NamedTuples field by field, TypedDicts (their required
    fields), ``Literal`` values and ``Annotated`` predicates. ``bool`` is never an int or a float. Built once per
    annotation, so a long list of ids costs one closure call per item."""
    origin = get_origin(ann)
    if origin is Annotated:
        base, *preds = get_args(ann)
        check_base = checker(base)
        return lambda v: check_base(v) and all(p(v) for p in preds)
    if origin is Literal:
        allowed = get_args(ann)
        return lambda v: any(v == a and type(v) is type(a) for a in allowed)
    if origin is Union or origin is types.UnionType:
        alternatives = [checker(a) for a in get_args(ann)]
        return lambda v: any(c(v) for c in alternatives)
    if origin is list:
        check_item = checker(get_args(ann)[0])
        return lambda v: isinstance(v, list) and all(map(check_item, v))
    if origin is tuple:
        items = [checker(a) for a in get_args(ann)]
        return lambda v: isinstance(v, list) and len(v) == len(items) and all(c(x) for c, x in zip(items, v))  # noqa: B905
    if origin is dict:
        check_key, check_value = (checker(a) for a in get_args(ann))
        return lambda v: isinstance(v, dict) and all(check_key(k) and check_value(x) for k, x in v.items())
    if ann is RunTask:
        return _run_task_conforms
    if is_typeddict(ann):
        fields = [(k, checker(a)) for k, a in _fields(ann)[0].items()]
        return lambda v: isinstance(v, dict) and all(k in v and c(v[k]) for k, c in fields)
    if isinstance(ann, type) and issubclass(ann, tuple) and hasattr(ann, "_fields"):  # a NamedTuple
        hints = _hints(ann)
        cols = [checker(hints[f]) for f in ann._fields]
        shortest = len(cols) - len(getattr(ann, "_field_defaults", ()))
        return lambda v: (
            isinstance(v, list) and shortest <= len(v) <= len(cols) and all(c(x) for c, x in zip(cols, v))  # noqa: B905
        )
    if ann is float:
        return lambda v: isinstance(v, int | float) and not isinstance(v, bool)
    if ann is int:
        return lambda v: type(v) is int
    if ann is None or ann is type(None):
        return lambda v: v is None
    if ann is Any or ann is object:
        return lambda v: True
    if isinstance(ann, type):
        return lambda v: isinstance(v, ann) and not (isinstance(v, bool) and ann is not bool)
    raise TypeError(f"no runtime check for the annotation {ann!r}")


def _run_task_conforms(v: Any) -> bool:
    check_run_task(v)  # a stolen task's spec is checked exactly like a task inside RUN (and says why not)
    return True


STEAL_KINDS: tuple[str, ...] = tuple(str(get_args(_fields(td)[0]["k"])[0]) for td in get_args(StealMsg))
_STEAL_DEFS: dict[str, type] = dict(zip(STEAL_KINDS, get_args(StealMsg), strict=True))
_STEAL_FIELDS = {
    k: tuple([(f, a) for f, a in fields.items() if f not in ("k", "rid")] for fields in _fields(td))
    for k, td in _STEAL_DEFS.items()
}


def check_steal(m: Any) -> StealMsg:
    """The inner message of STEAL, by kind, in depth (extra keys are tolerated, as everywhere). An offer's tasks are
    headers (``StealTask`` without ``spec``), a commit's carry the spec."""
    k, rid = m.get("k"), m.get("rid")
    td = _STEAL_DEFS.get(k) if isinstance(k, str) else None
    if td is None:
        raise WireError(f"steal: unknown kind {k!r}")
    if type(rid) is not int:
        raise WireError("steal: rid must be an integer")
    required, optional = _STEAL_FIELDS[k]
    for key, ann in required:
        if not checker(ann)(m.get(key)):
            raise WireError(f"{k}: field {key!r} is not {_describe(ann)}")
    for key, ann in optional:
        if m.get(key) is not None and not checker(ann)(m[key]):
            raise WireError(f"{k}: field {key!r} is not {_describe(ann)}")
    if k in ("steal_offer", "steal_commit"):
        length = STEAL_HEADER_LEN + (k == "steal_commit")
        if any(len(h) != length or (length > STEAL_HEADER_LEN and h[-1] is None) for h in m["tasks"]):
            raise WireError(f"{k}: a task entry must be a list of {length} items")
    return m  # type: ignore[no-any-return]


def _describe(ann: Any) -> str:
    return str(ann).replace("typing.", "").replace("meshaios.wire.messages.", "")


# In-depth checks of some top-level fields, beyond their isinstance (the annotations say what)
_DEEP: dict[str, tuple[str, ...]] = {ABORT: ("ids",), MOVED: ("moves",)}
_DEEP_CHECKS: dict[str, list[tuple[str, Any]]] = {
    mtype: [(f, _fields(DEFINITIONS[mtype])[0][f]) for f in fs] for mtype, fs in _DEEP.items()
}


def check_id(x: Any, what: str) -> None:
    """A task or object id: a non-empty string of at most ``MAX_ID`` characters, without NUL."""
    if not isinstance(x, str) or not 0 < len(x) <= MAX_ID or "\x00" in x:
        shown = repr(x)[:60]
        raise WireError(f"{what}: an id must be 1 to {MAX_ID} characters without NUL bytes, got {shown}")


# where a message carries ids that name objects or tasks: one id, a list of them, or those of its nested tasks
_ID_FIELDS = {FETCH, OBJ, STORE, STORED, GET, GOT, PUT, PUT_ACK}
_ID_LISTS = {FREE, CLAIM, RELEASE}


def _check_ids(mtype: str, msg: Mapping[str, Any]) -> None:
    if mtype in _ID_FIELDS:
        check_id(msg["id"], mtype)
    elif mtype in _ID_LISTS:
        for x in msg["ids"]:
            if isinstance(x, str):  # handlers skip non-strings
                check_id(x, mtype)
    elif mtype in (SUBMIT, RUN):
        for task in msg["tasks"]:
            check_id(task["id"], f"{mtype} task")
            for d in task["deps"]:
                check_id(d, f"{mtype} task dependency")
    elif mtype == ADOPT:
        for item in msg["puts"]:
            if isinstance(item, list) and item:
                check_id(item[0], mtype)


# ---- the same checks, compiled: a quick yes for the common message ------------------------------------------
#
# Every decoded message is checked (``check_message``); the walk above reads its tables field by field, ~1.8 us
# for a one-task SUBMIT. The checks below are built from the same tables at import: each answers only "valid"
# (True) or "let the walk decide" (False), and is never looser than the walk -- a field's type must be exactly
# one of its table's (msgpack makes no subclasses; a subclass in a dict built here is left to the walk) -- so a
# message either passes both or is refused by the walk, with its reason. Types whose checks go deeper than their
# fields, ids and tasks (STEAL, ABORT's and MOVED's lists, ADOPT) always take the walk.

_MISSING: Final = object()  # a field not present: its type is in no table


def compile_fields(schema: Schema, optional: bool = False) -> Callable[[Any], bool]:
    """True when ``obj`` is a dict with every field of ``schema``, each of exactly one of its types (``bool`` only
    where listed, as in ``check_fields``); False: ``check_fields`` decides. ``optional``: the fields may be absent,
    and those present must have their types (as ``check_run_task`` checks a run task's optional fields). Generated
    once per table, as ``fastinit`` generates an ``__init__``."""
    names: dict[str, Any] = {"_M": _MISSING}
    body = ["def ok(o):", "    if type(o) is not dict: return False"]
    for i, (key, want) in enumerate(schema.items()):
        if object in want:  # ``Any``: present is enough
            if not optional:
                body.append(f"    if {key!r} not in o: return False")
            continue
        names[f"_t{i}"] = want[0] if len(want) == 1 else frozenset(want)
        test = "is not" if len(want) == 1 else "not in"
        if optional:
            body.append(f"    v = o.get({key!r}, _M)")
            body.append(f"    if v is not _M and type(v) {test} _t{i}: return False")
        else:
            body.append(f"    if type(o.get({key!r}, _M)) {test} _t{i}: return False")
    body.append("    return True")
    exec("\n".join(body), names)  # source made here, from our own tables' names and types
    fn: Callable[[Any], bool] = names["ok"]
    return fn


def _id_ok(x: Any) -> bool:
    """``check_id``'s verdict, as a bool (an exact ``str``)."""
    return type(x) is str and 0 < len(x) <= MAX_ID and "\x00" not in x


_SUBMIT_TASK_OK = compile_fields(SUBMIT_TASK)
_RESULT_OK = compile_fields(RESULT)
_RUN_TASK_OK = compile_fields(RUN_TASK)
_RUN_TASK_OPTIONAL_OK = compile_fields(RUN_TASK_OPTIONAL, optional=True)


def _run_task_ok(task: Any) -> bool:
    """``check_run_task``'s and ``_check_ids``' verdict on a run task, as a bool (exact types)."""
    if not (_RUN_TASK_OK(task) and _RUN_TASK_OPTIONAL_OK(task) and _id_ok(task["id"])):
        return False
    res = task.get("resources")
    if res is not None and not all(type(k) is str and type(v) is int for k, v in res.items()):
        return False
    for dep, val in task["deps"].items():
        if not (_id_ok(dep) and (val is None or type(val) is Payload or _is_location(val))):
            return False
    return all(type(x) is str for x in task.get("fr", ()))


def _fast_check(mtype: str) -> Callable[[Any], bool] | None:
    """The compiled check of a message type, or None where only the walk checks it."""
    fields = compile_fields(SCHEMAS[mtype])
    if mtype == SUBMIT:

        def submit_ok(msg: Any) -> bool:
            if not fields(msg):
                return False
            for task in msg["tasks"]:
                if not (_SUBMIT_TASK_OK(task) and _id_ok(task["id"])):
                    return False
                for d in task["deps"]:
                    if not _id_ok(d):
                        return False
            return True

        return submit_ok
    if mtype == DONE:
        return lambda msg: fields(msg) and all(map(_RESULT_OK, msg["results"]))
    if mtype == RUN:
        return lambda msg: fields(msg) and all(map(_run_task_ok, msg["tasks"]))
    if mtype in _ID_FIELDS:
        return lambda msg: fields(msg) and _id_ok(msg["id"])
    if mtype in _ID_LISTS:
        return lambda msg: fields(msg) and all(_id_ok(x) or not isinstance(x, str) for x in msg["ids"])
    if mtype in (STEAL, ADOPT) or mtype in _DEEP or mtype in NESTED:
        return None
    return fields


_FAST: dict[str, Callable[[Any], bool]] = {m: fast for m in SCHEMAS if (fast := _fast_check(m)) is not None}


def check_message(msg: Mapping[str, Any]) -> Message:
    """``msg`` as the message its ``t`` names, checked (``WireError`` if it is not one)."""
    mtype = msg.get("t")
    fast = _FAST.get(mtype) if type(mtype) is str else None
    if fast is not None and fast(msg):
        return msg  # type: ignore[return-value]
    return check_in_full(msg)


def check_in_full(msg: Mapping[str, Any]) -> Message:
    """``check_message``'s walk: the verdict on any message, and the reason it is refused."""
    mtype = msg.get("t")
    schema = SCHEMAS.get(mtype) if isinstance(mtype, str) else None
    if schema is None:
        raise WireError(f"unknown message type {mtype!r}")
    assert isinstance(mtype, str)
    check_fields(msg, schema, mtype)
    if mtype == STEAL:
        check_steal(msg["m"])
    else:
        for key, ann in _DEEP_CHECKS.get(mtype, ()):
            if not checker(ann)(msg[key]):
                raise WireError(f"{mtype}: field {key!r} is not {_describe(ann)}")
    nested = NESTED.get(mtype)
    if nested is not None:
        key, item_schema = nested
        what = f"{mtype} {key[:-1]}"
        for item in msg[key]:
            if mtype == RUN:
                check_run_task(item)
            else:
                check_fields(item, item_schema, what)
        if mtype == SUBMIT and not all(isinstance(d, str) for x in msg[key] for d in x["deps"]):
            raise WireError("submit task: deps must be task ids")
    _check_ids(mtype, msg)
    return msg  # type: ignore[return-value]
