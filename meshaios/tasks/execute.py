"""Running one task: decode arguments, call, encode the result or the error. No I/O, no event loop.

This is what executor threads and worker processes run. Everything that can go wrong inside a task -- a bad
function spec, an argument that will not decode, the function raising, a result that cannot be serialised --
becomes an error *result* for the owner, never an exception that could take the node down.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Required, TypeAlias, TypedDict, cast

from meshaios.devices.registry import Kernel
from meshaios.errors import FunctionRefused, WireError
from meshaios.tasks.allowlist import Fence
from meshaios.tasks.functions import FunctionResolver, running_under
from meshaios.wire import messages as M
from meshaios.wire.payload import Payload
from meshaios.wire.values import dumps, loads

if TYPE_CHECKING:
    from meshaios.devices.resident import DeviceRunner


class LocalResult(M.Result, total=False):
    """A result as the executor makes it: a shuffle map task's parts travel no further than this node (it stores
    part *j* as ``task#j`` and reports their sizes)."""

    vparts: list[Payload]


Bytes: TypeAlias = tuple[bytes, list[bytes]]  # a Payload across the process boundary: blob, buffers


class ProcessError(TypedDict, total=False):
    """``err`` of a ``ProcessResult``: an ``ErrorInfo`` with its pickled exception as plain bytes."""

    type: Required[str]
    msg: Required[str]
    tb: str
    exc: Bytes


class ProcessResult(TypedDict, total=False):
    """A ``LocalResult`` as it leaves a pool process (``run_in_process``): its value and pickled exception as plain
    bytes, turned back into Payloads by ``unpack_from_process``."""

    id: Required[str]
    att: int
    ok: Required[bool]
    v: Bytes
    vparts: list[Payload]
    dt: float
    err: ProcessError
    fatal: bool


class ProcessTask(TypedDict):
    """A RunTask as it crosses into a pool process (``pack_for_process``): plain bytes only."""

    id: str
    att: int
    fn: Bytes
    args: Bytes
    deps: dict[str, Bytes | None]


def error_info(exc: BaseException, *, allow_pickle: bool, tb: str | None = None) -> M.ErrorInfo:
    cls = type(exc)
    mod = cls.__module__
    err: M.ErrorInfo = {
        "type": cls.__qualname__ if mod == "builtins" else f"{mod}.{cls.__qualname__}",
        "msg": str(exc),
        "tb": tb if tb is not None else "".join(traceback.format_exception(exc)),
    }
    if allow_pickle:
        try:
            err["exc"] = dumps(exc, allow_pickle=True)[0]
        except Exception:  # an exception that cannot be pickled still reaches the client by type and text
            pass
    return err


def run_task(
    task: M.RunTask, resolver: FunctionResolver, *, allow_pickle: bool, gpu: DeviceRunner | None = None
) -> LocalResult:
    """Returns a DONE result; ``fatal`` marks errors that retrying cannot fix.

    ``gpu``: the task runs on that GPU (``devices/resident.py``). Inputs not sent with the task come from it --
    a kernel's as device arrays where they are kept on that device -- and a kernel's large result stays there
    (the result then carries only its ``size``, as a large result kept in the host store does).
    """
    return _run(task, resolver, allow_pickle, gpu)


def _run(task: M.RunTask, resolver: FunctionResolver, allow_pickle: bool, gpu: DeviceRunner | None) -> LocalResult:
    # a node restricted to some modules refuses pickled functions, and so pickled arguments too: a pickle can
    # call anything while it loads
    allow_pickle = allow_pickle and resolver.allow_pickle
    tid = task["id"]
    start = time.perf_counter()
    try:
        fn = resolver.resolve(task["fn"])
        deps = task["deps"]
        cache: dict[str, object] = {}
        on_device = gpu is not None and isinstance(fn, Kernel)

        def resolve_ref(dep_id: str) -> object:
            if dep_id not in cache:
                p: object = deps.get(dep_id)
                if gpu is not None and not isinstance(p, Payload):  # a GPU task reads them through its device
                    found, p = gpu.dep(dep_id, on_device)
                    if found:  # a device array kept on this GPU: taken as it is
                        cache[dep_id] = p
                        return p
                if not isinstance(p, Payload):  # the node put every value in place before the call
                    raise WireError(f"dependency {dep_id} was not sent with the task")
                cache[dep_id] = loads(p, allow_pickle=allow_pickle)
            return cache[dep_id]

        call = loads(task["args"], allow_pickle=allow_pickle, resolve_ref=resolve_ref)
        if not (
            isinstance(call, list)
            and len(call) == 2
            and isinstance(call[0], list)
            and isinstance(call[1], dict)
            and (not call[1] or all(isinstance(k, str) for k in call[1]))  # no generator made for no keywords
        ):
            raise WireError("task arguments must be [args, kwargs] with string keywords")
    except Exception as exc:  # a bad spec or argument: retrying cannot fix it
        return _failed(task, exc, time.perf_counter() - start, fatal=True)
    size = 0
    try:
        with running_under(resolver):  # a function argument (a shuffle's reducer) meets the same fence
            if gpu is not None and isinstance(fn, Kernel):
                value = gpu.call(fn, tuple(call[0]), call[1])
                if task.get("parts"):
                    value = gpu.to_host(value)
                else:
                    size, value = gpu.finish(tid, value, keep=task.get("kd") is True)
            elif isinstance(fn, Kernel):
                value = fn.call("cpu", tuple(call[0]), call[1])  # not on a GPU: the CPU, whatever was placed
            else:
                value = fn(*call[0], **call[1])
    except FunctionRefused as exc:  # retrying cannot change the fence's answer
        return _failed(task, exc, time.perf_counter() - start, fatal=True)
    except Exception as exc:
        tb = traceback.format_exc()
        return _failed(task, exc, time.perf_counter() - start, allow_pickle=allow_pickle, tb=tb)
    dt = time.perf_counter() - start
    if size:  # kept on the device
        return {"id": tid, "att": task["att"], "ok": True, "size": size, "dt": dt, "kdev": gpu.device if gpu else ""}
    parts = task.get("parts")
    try:
        if parts:
            # a shuffle map output: one payload per partition, so a reducer fetches only its own part
            if not isinstance(value, (list, tuple)) or len(value) != parts:
                raise TypeError(f"a map task with {parts} partitions must return a list of {parts} parts")
            vparts = [dumps(v, allow_pickle=allow_pickle)[0] for v in value]
            return {"id": tid, "att": task["att"], "ok": True, "vparts": vparts, "dt": dt}
        payload, _ = dumps(value, allow_pickle=allow_pickle)
    except Exception as exc:  # a result that will not serialise: running again makes the same one
        return _failed(task, exc, dt, fatal=True)
    return {"id": tid, "att": task["att"], "ok": True, "v": payload, "dt": dt}


def _failed(
    task: M.RunTask, exc: BaseException, dt: float, *, fatal: bool = False, allow_pickle: bool = False,
    tb: str | None = None,
) -> LocalResult:
    """The DONE result of a task that failed; ``fatal`` when retrying cannot help."""
    err = error_info(exc, allow_pickle=allow_pickle, tb=tb)
    out: LocalResult = {"id": task["id"], "att": task["att"], "ok": False, "err": err, "dt": dt}
    if fatal:
        out["fatal"] = True
    return out


# ---- process pool: everything crossing the process boundary is plain bytes ---------------------------------


def _to_bytes(p: Payload) -> Bytes:
    return p.blob, [bytes(memoryview(b)) for b in p.buffers]


def _from_bytes(t: Bytes) -> Payload:
    return Payload(t[0], tuple(t[1]))


def pack_for_process(task: Mapping[str, Any]) -> ProcessTask:
    return {
        "id": task["id"],
        "att": task["att"],
        "fn": _to_bytes(task["fn"]),
        "args": _to_bytes(task["args"]),
        "deps": {k: _to_bytes(v) if isinstance(v, Payload) else None for k, v in task["deps"].items()},
    }


# One resolver per (allow_pickle, fence) in each pool process, so the function cache survives between tasks.
# Keyed by the settings: a single cached resolver would keep the settings of whichever call came first -- a process
# that had once served an authenticated node would then accept pickles for an insecure one.
_process_resolvers: dict[tuple[bool, Fence], FunctionResolver] = {}


def run_in_process(packed: ProcessTask, allow_pickle: bool, fence: Fence) -> ProcessResult:
    """Entry point in a pool process."""
    settings = (bool(allow_pickle), fence)
    resolver = _process_resolvers.get(settings)
    if resolver is None:
        resolver = FunctionResolver(allow_pickle=settings[0], fence=fence)
        _process_resolvers[settings] = resolver
    task: M.RunTask = {
        "id": packed["id"],
        "att": packed["att"],
        "fn": _from_bytes(packed["fn"]),
        "args": _from_bytes(packed["args"]),
        "deps": {k: _from_bytes(v) if v is not None else None for k, v in packed["deps"].items()},
        "pure": True,
    }
    result = run_task(task, resolver, allow_pickle=allow_pickle)
    out = cast(ProcessResult, result)  # the same map, changed in place: its Payloads become bytes
    v = result.get("v")
    if isinstance(v, Payload):
        out["v"] = _to_bytes(v)
    err = result.get("err")
    if isinstance(err, dict) and isinstance(err.get("exc"), Payload):
        out["err"]["exc"] = _to_bytes(err["exc"])
    return out


def unpack_from_process(result: ProcessResult) -> LocalResult:
    out = cast(LocalResult, result)  # the same map, changed in place: its bytes become Payloads again
    v = result.get("v")
    if v is not None and not isinstance(v, Payload):
        out["v"] = _from_bytes(v)
    err = result.get("err")
    if isinstance(err, dict) and err.get("exc") is not None and not isinstance(err["exc"], Payload):
        out["err"]["exc"] = _from_bytes(err["exc"])
    return out
