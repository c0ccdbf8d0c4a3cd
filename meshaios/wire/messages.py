"""Message types and their schemas: the whole vocabulary nodes and clients speak.

Messages are plain dicts (msgpack maps) rather than dataclasses: the hot path builds and reads tens of
thousands per second, and a dict costs nothing to encode. What a dataclass would give -- a checked shape -- is
given instead by ``SCHEMAS``, applied to every message decoded from the wire before anything acts on it.
"""

from __future__ import annotations

from typing import Any

from meshaios.errors import WireError
from meshaios.wire.payload import Payload

PROTOCOL_VERSION = 1

# node <-> node
SWIM = "swim"  # membership traffic; {"m": swim message}
RUN = "run"  # owner -> executor: {"owner": node id, "tasks": [task]}
DONE = "done"  # executor -> owner: {"results": [result]}
ABORT = "abort"  # owner -> executor (-> thief): {"src": sender, "owner": owner id, "ids": [[task id, attempt]]}
STEAL = "steal"  # thief <-> victim, work stealing: {"src": node id, "m": steal message (see ``check_steal``)}
MOVED = "moved"  # victim -> owner: {"src": victim id, "moves": [[task id, attempt, thief id], ...]}
STARTED = "started"  # executor -> owner: {"src", "ids": [[task id, attempt]]} -- tasks that asked for it began
FENCED = "fenced"  # executor -> owner: {"src", "c": client, "ep": its newer epoch} -- your run came too late
# client <-> node
HELLO = "hello"  # {"client": id}
WELCOME = "welcome"  # {"node", "name", "mesh", "pickle"}
SUBMIT = "submit"  # {"tasks": [client task], "ep"?: the client's epoch (failovers so far)}
FAULT = "fault"  # chaos runner -> node started with --fault-injection: {"nodes", "addrs", "clients"} to cut off
DETACH = "detach"  # client -> its former entry node: {"ep": epoch} -- I moved on; drop my older work
RESULTS = "results"  # {"results": [result]}
RUNNING = "running"  # node -> client: {"ids": [task ids]} -- began running (only for tasks submitted with "rs")
RELEASE = "release"  # {"ids": [...]}
CANCEL = "cancel"  # {"ids": [task ids]}: the client cancels these tasks of its own
KEEP = "keep"  # {"ids": [task ids]}: fire and forget -- these (and what they need) run even if the client leaves
STATUS = "status"  # {} -> STATUS_REPLY
STATUS_REPLY = "status_reply"
PING = "ping"  # {"peers"?: true -> PONG lists the live members' addresses}
PONG = "pong"  # {"peers"?: [address]}
ERROR = "error"  # {"msg": str, "ref": optional id}
# data plane
FETCH = "fetch"  # node -> holder: {"src", "req", "id", "shm"?: true -- same host, a /dev/shm file will do}
OBJ = "obj"  # holder -> node: {"src", "req", "id", "ok", "val"? | "shm"?: {"name", "blob", "sizes"} (store/shm.py)}
STORE = "store"  # node -> replica: {"src", "id", "val"}
STORED = "stored"  # replica -> node: {"src", "id"}
FREE = "free"  # owner -> holder: {"src", "ids"}
GET = "get"  # client -> node: {"req", "id"}
GOT = "got"  # node -> client: {"req", "id", "ok", "val"? | "err"?}
PUT = "put"  # client -> node: {"req", "id", "val"}
PUT_ACK = "put_ack"  # node -> client: {"req", "id", "ok", "loc"?: [holder ids] | "err"?}
BYE = "bye"  # client -> node when it closes: release everything I held here ({})
ADOPT = "adopt"  # client -> node after a failover: its puts, {"puts": [[id, size, [holder ids]], ...]}
# streams (``store/stream.py``): any large message, between any two parties, as bounded chunks with flow control
XHEAD = "xhead"  # {"x": stream id, "sizes": [bytes of each frame of the message]}
XCHUNK = "xchunk"  # {"x", "o": offset in the stream, "d": the bytes (one raw frame)}
XACK = "xack"  # receiver -> sender: {"x", "n": bytes received so far, "err"?: why the stream is refused}

_STR = (str,)
_INT = (int,)
_LIST = (list,)
_DICT = (dict,)
_BOOL = (bool,)
_PAYLOAD = (Payload,)

SCHEMAS: dict[str, dict[str, tuple[type, ...]]] = {
    SWIM: {"m": _DICT},
    RUN: {"owner": _STR, "tasks": _LIST},
    DONE: {"src": _STR, "results": _LIST},
    ABORT: {"src": _STR, "owner": _STR, "ids": _LIST},
    STEAL: {"src": _STR, "m": _DICT},
    MOVED: {"src": _STR, "moves": _LIST},
    FENCED: {"src": _STR, "c": _STR, "ep": _INT},
    STARTED: {"src": _STR, "ids": _LIST},
    RUNNING: {"ids": _LIST},
    DETACH: {"ep": _INT},
    FAULT: {"nodes": _LIST, "addrs": _LIST, "clients": _LIST},
    HELLO: {"client": _STR},
    WELCOME: {"node": _STR, "name": _STR, "mesh": _STR, "pickle": _BOOL},
    SUBMIT: {"tasks": _LIST},
    RESULTS: {"results": _LIST},
    RELEASE: {"ids": _LIST},
    CANCEL: {"ids": _LIST},
    KEEP: {"ids": _LIST},
    STATUS: {},
    STATUS_REPLY: {"node": _DICT, "members": _LIST},
    PING: {},
    PONG: {},
    ERROR: {"msg": _STR},
    FETCH: {"src": _STR, "req": _INT, "id": _STR},
    OBJ: {"src": _STR, "req": _INT, "id": _STR, "ok": _BOOL},
    STORE: {"src": _STR, "id": _STR, "val": _PAYLOAD},
    STORED: {"src": _STR, "id": _STR},
    FREE: {"src": _STR, "ids": _LIST},
    GET: {"req": _INT, "id": _STR},
    GOT: {"req": _INT, "id": _STR, "ok": _BOOL},
    PUT: {"req": _INT, "id": _STR, "val": _PAYLOAD},
    PUT_ACK: {"req": _INT, "id": _STR, "ok": _BOOL},
    ADOPT: {"puts": _LIST},
    BYE: {},
    XHEAD: {"x": _INT, "sizes": _LIST},
    XCHUNK: {"x": _INT, "o": _INT, "d": _PAYLOAD},
    XACK: {"x": _INT, "n": _INT},
}

# The shape of one task inside RUN (owner -> executor).
RUN_TASK: dict[str, tuple[type, ...]] = {
    "id": _STR,
    "att": _INT,
    "fn": _PAYLOAD,
    "args": _PAYLOAD,
    "deps": _DICT,
    "pure": _BOOL,
}
# One task inside SUBMIT (client -> owner).
SUBMIT_TASK: dict[str, tuple[type, ...]] = {
    "id": _STR,
    "fn": _PAYLOAD,
    "args": _PAYLOAD,
    "deps": _LIST,
}
# One result inside DONE / RESULTS.
RESULT: dict[str, tuple[type, ...]] = {"id": _STR, "ok": _BOOL}


def check_fields(obj: Any, schema: dict[str, tuple[type, ...]], what: str) -> dict[str, Any]:
    """Reject a dict that lacks a field or carries one of the wrong type. ``bool`` is not an ``int`` here."""
    if not isinstance(obj, dict):
        raise WireError(f"{what}: expected a map, got {type(obj).__name__}")
    for key, types in schema.items():
        if key not in obj:
            raise WireError(f"{what}: missing field {key!r}")
        val = obj[key]
        if not isinstance(val, types) or (isinstance(val, bool) and bool not in types):
            raise WireError(f"{what}: field {key!r} has type {type(val).__name__}")
    return obj


# Optional fields of a run task that the executor reads: when present they must have these types (a stray float
# for ``resources`` once left a task half-accepted on its executor, counted as queued for ever).
RUN_TASK_OPTIONAL: dict[str, tuple[type, ...]] = {
    "resources": _DICT,
    "parts": _INT,
    "device": _STR,
    "prio": _INT,
    "urg": _BOOL,  # hurried by its owner for its deadline
    "c": _STR,  # the client, and its epoch under the sending owner (tasks/epochs.py)
    "ep": _INT,
}


def check_run_task(task: Any) -> dict[str, Any]:
    check_fields(task, RUN_TASK, "run task")
    for key, types in RUN_TASK_OPTIONAL.items():
        if key in task:
            check_fields(task, {key: types}, "run task")
    res = task.get("resources", {})
    if not all(isinstance(k, str) and type(v) is int for k, v in res.items()):
        raise WireError("run task: resources must map names to integers")
    for dep, val in task["deps"].items():
        if not isinstance(dep, str) or not (val is None or isinstance(val, Payload) or _is_location(val)):
            raise WireError("run task: a dependency must be a value, a location or nil")
    return task  # type: ignore[no-any-return]


def _is_location(val: Any) -> bool:
    """Where a dependency's value lives when it did not travel inline: ``{"loc": [node ids], "size": bytes}``."""
    if not isinstance(val, dict):
        return False
    loc = val.get("loc", [])
    return isinstance(loc, list) and all(isinstance(x, str) for x in loc) and type(val.get("size", 0)) is int


# Lists of maps inside a message, checked item by item: the whole vocabulary is checked here, on decode, so that
# the node's handlers never meet a task or result of the wrong shape. (``results`` in RESULTS is the client's to
# check: it fails one future on a bad item rather than dropping the whole batch.)
NESTED: dict[str, tuple[str, dict[str, tuple[type, ...]]]] = {
    RUN: ("tasks", RUN_TASK),
    SUBMIT: ("tasks", SUBMIT_TASK),
    DONE: ("results", RESULT),
}


# Work stealing (``sched/stealing.py``): the engine's five message kinds travel inside STEAL's ``m``. Checked in
# full here, as every other message is, so that the engine and the node only ever see well-formed ones; a stolen
# task's spec is checked exactly like a task inside RUN, since the thief runs it as one.
STEAL_KINDS = ("steal_req", "steal_offer", "steal_accept", "steal_commit", "steal_ack")
MAX_STEAL_BATCH = 256  # tasks in one offer or commit (the engine sends at most 16)
_STEAL_DEVICES = ("cpu", "gpu")


def _is_num(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _check_steal_header(h: Any, length: int) -> None:
    """``[id, att, owner, kernel, device, devices, nbytes, predicted, path]`` (+ the spec in a commit)."""
    if not isinstance(h, list) or len(h) != length:
        raise WireError(f"steal: a task entry must be a list of {length} items")
    tid, att, owner, kernel, device, devices, nbytes, predicted, path = h[:9]
    if not (isinstance(tid, str) and type(att) is int and isinstance(owner, str) and isinstance(kernel, str)):
        raise WireError("steal: task id, attempt, owner and kernel must be str, int, str, str")
    if device not in _STEAL_DEVICES or not (
        isinstance(devices, list) and devices and all(d in _STEAL_DEVICES for d in devices)
    ):
        raise WireError("steal: devices must be cpu or gpu")
    if type(nbytes) is not int or nbytes < 0 or not _is_num(predicted) or not predicted >= 0:
        raise WireError("steal: nbytes and predicted must be non-negative numbers")
    if not (isinstance(path, list) and all(isinstance(p, str) for p in path)):
        raise WireError("steal: path must be a list of node ids")


def check_steal(m: dict[str, Any]) -> dict[str, Any]:
    """The inner message of STEAL, by kind (extra keys are tolerated, as everywhere)."""
    k, rid = m.get("k"), m.get("rid")
    if k not in STEAL_KINDS:
        raise WireError(f"steal: unknown kind {k!r}")
    if type(rid) is not int:
        raise WireError("steal: rid must be an integer")
    if k == "steal_req":
        free, speed, bw = m.get("free"), m.get("speed"), m.get("bw")
        if not isinstance(free, dict) or not all(d in _STEAL_DEVICES and type(n) is int for d, n in free.items()):
            raise WireError("steal_req: free must map cpu/gpu to integers")
        if not isinstance(speed, dict) or not all(d in _STEAL_DEVICES and _is_num(s) for d, s in speed.items()):
            raise WireError("steal_req: speed must map cpu/gpu to numbers")
        if bw is not None and not _is_num(bw):
            raise WireError("steal_req: bw must be a number")
    elif k in ("steal_offer", "steal_commit"):
        tasks = m.get("tasks")
        if not isinstance(tasks, list) or len(tasks) > MAX_STEAL_BATCH:
            raise WireError(f"{k}: tasks must be a list of at most {MAX_STEAL_BATCH}")
        for h in tasks:
            _check_steal_header(h, 9 if k == "steal_offer" else 10)
            if k == "steal_commit":
                check_run_task(h[9])
    elif k == "steal_accept":
        ids = m.get("ids")
        if (
            not isinstance(ids, list)
            or len(ids) > MAX_STEAL_BATCH
            or not all(isinstance(i, list) and len(i) == 2 and isinstance(i[0], str) and type(i[1]) is int for i in ids)
        ):
            raise WireError("steal_accept: ids must be a list of [task id, attempt]")
    return m


def check_moves(moves: list[Any]) -> None:
    if not all(
        isinstance(x, list) and len(x) == 3 and isinstance(x[0], str) and type(x[1]) is int and isinstance(x[2], str)
        for x in moves
    ):
        raise WireError("moved: each move must be [task id, attempt, node id]")


MAX_ID = 256  # characters in a task or object id: ids name files, log lines and map keys on every node


def check_id(x: Any, what: str) -> None:
    """A task or object id: a non-empty string of at most ``MAX_ID`` characters, without NUL."""
    if not isinstance(x, str) or not 0 < len(x) <= MAX_ID or "\x00" in x:
        shown = repr(x)[:60]
        raise WireError(f"{what}: an id must be 1 to {MAX_ID} characters without NUL bytes, got {shown}")


# where a message carries ids that name objects or tasks: one id, a list of them, or those of its nested tasks
_ID_FIELDS = {FETCH, OBJ, STORE, STORED, GET, GOT, PUT, PUT_ACK}
_ID_LISTS = {FREE, RELEASE}


def _check_ids(mtype: str, msg: dict[str, Any]) -> None:
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


def check_message(msg: dict[str, Any]) -> dict[str, Any]:
    mtype = msg.get("t")
    schema = SCHEMAS.get(mtype) if isinstance(mtype, str) else None
    if schema is None:
        raise WireError(f"unknown message type {mtype!r}")
    check_fields(msg, schema, mtype)  # type: ignore[arg-type]
    if mtype == STEAL:
        check_steal(msg["m"])
    elif mtype == ABORT:
        if not all(isinstance(k, list) and len(k) == 2 and isinstance(k[0], str) and type(k[1]) is int
                   for k in msg["ids"]):
            raise WireError("abort: each id must be [task id, attempt]")
    elif mtype == MOVED:
        check_moves(msg["moves"])
    nested = NESTED.get(mtype)  # type: ignore[arg-type]
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
    _check_ids(mtype, msg)  # type: ignore[arg-type]
    return msg
