"""Review of the wire's fast paths (commit 9f6a00c): ``check_message``'s compiled quick yes, ``decode``'s one hook
for a frameless header's payloads (the header read in place, no copy) and ``encode``'s unchecked payload ExtTypes.

Each is compared with a reference model: the walk (``walk_reference``, ``check_message`` as it was before the quick
yes, calling the same tables) and the codec as it was before (``old_encode``, ``old_decode``, vendored from
9f6a00c^). A message the fast path accepts must be one the walk accepts; one it refuses must be refused with the
walk's words; encoded bytes must be the same, and a decoded message the same, aliasing nothing it did not before.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshaios.errors import LimitExceeded, WireError
from meshaios.wire import codec
from meshaios.wire import messages as M
from meshaios.wire.codec import (
    BLOB_IN_HEADER,
    DEFAULT_LIMITS,
    EXT_PAYLOAD,
    WireLimits,
    _buffer,
    check_shape,
    decode,
    encode,
)
from meshaios.wire.packers import packb
from meshaios.wire.payload import Payload
from tests.unit.test_codec import payload_of, valid_messages

# a message drawn large (a 257-character id in a list) makes a long repr: nothing to warn about here
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")

# ---- reference models: the code before 9f6a00c -------------------------------------------------------------------


def walk_reference(msg: Mapping[str, Any]) -> Any:
    """``check_message`` before 9f6a00c (now ``check_in_full``), verbatim but for the module prefix."""
    mtype = msg.get("t")
    schema = M.SCHEMAS.get(mtype) if isinstance(mtype, str) else None
    if schema is None:
        raise WireError(f"unknown message type {mtype!r}")
    assert isinstance(mtype, str)
    M.check_fields(msg, schema, mtype)
    if mtype == M.STEAL:
        M.check_steal(msg["m"])
    else:
        for key, ann in M._DEEP_CHECKS.get(mtype, ()):
            if not M.checker(ann)(msg[key]):
                raise WireError(f"{mtype}: field {key!r} is not {M._describe(ann)}")
    nested = M.NESTED.get(mtype)
    if nested is not None:
        key, item_schema = nested
        what = f"{mtype} {key[:-1]}"
        for item in msg[key]:
            if mtype == M.RUN:
                M.check_run_task(item)
            else:
                M.check_fields(item, item_schema, what)
        if mtype == M.SUBMIT and not all(isinstance(d, str) for x in msg[key] for d in x["deps"]):
            raise WireError("submit task: deps must be task ids")
    M._check_ids(mtype, msg)
    return msg


def _old_payload_ref(blob: bytes, start: int, count: int) -> bytes:
    if len(blob) < 256 and start < 0x80 and count < 0x80:
        return b"\x93\xc4" + bytes((len(blob),)) + blob + bytes((start, count))
    return packb([blob, start, count])


def old_encode(msg: Mapping[str, Any]) -> list[Any]:
    """``encode`` before 9f6a00c."""
    frames: list[Any] = [b""]

    def default(obj: Any) -> Any:
        if isinstance(obj, Payload):
            start = len(frames) - 1
            if len(obj.blob) > BLOB_IN_HEADER:
                frames.append(obj.blob)
                frames.extend(obj.buffers)
                return msgpack.ExtType(EXT_PAYLOAD, packb([None, start, len(obj.buffers) + 1]))
            frames.extend(obj.buffers)
            return msgpack.ExtType(EXT_PAYLOAD, _old_payload_ref(obj.blob, start, len(obj.buffers)))
        raise TypeError(f"cannot encode {type(obj).__name__} in a message header")

    msg = {"v": msg.get("v", M.PROTOCOL_VERSION), "t": msg.get("t"), **msg}
    frames[0] = packb(msg, default)
    return frames


def old_decode(frames: list[Any], limits: WireLimits = DEFAULT_LIMITS) -> Any:
    """``decode_message`` before 9f6a00c: the header copied out, one closure hook, the walk's check."""
    if not frames:
        raise WireError("empty message")
    if len(frames) > limits.max_frames:
        raise LimitExceeded(f"{len(frames)} frames exceed the limit of {limits.max_frames}")
    try:
        head = memoryview(_buffer(frames[0]))
    except TypeError as exc:
        raise WireError(f"header frame is not a buffer: {type(frames[0]).__name__}") from exc
    if head.nbytes > limits.max_header:
        raise LimitExceeded(f"header of {head.nbytes} bytes exceeds the limit of {limits.max_header}")
    check_shape(head, limits)
    header = head.tobytes()
    bufs = frames[1:]
    used = [0]

    def ext_hook(code: int, data: bytes) -> Any:
        if code != EXT_PAYLOAD:
            raise WireError(f"unknown header extension {code}")
        n = len(data) - 5
        if n >= 0 and data[:2] == b"\x93\xc4" and data[2] == n and data[-2] < 0x80 and data[-1] < 0x80:
            blob, start, count = data[3:-2], data[-2], data[-1]
        else:
            try:
                blob, start, count = msgpack.unpackb(data)
            except (ValueError, TypeError) as exc:
                raise WireError("malformed payload reference") from exc
        if (
            not (isinstance(blob, bytes) or (blob is None and type(count) is int and count >= 1))
            or type(start) is not int
            or type(count) is not int
            or start != used[0]
            or count < 0
            or start + count > len(bufs)
        ):
            raise WireError("payload references frames out of order or out of range")
        used[0] = start + count
        if blob is None:
            h = bufs[start]
            blob = h.bytes if hasattr(h, "bytes") else bytes(h)
            start += 1
            count -= 1
        return Payload(blob, tuple(_buffer(f) for f in bufs[start : start + count]) if count else ())

    try:
        msg = msgpack.unpackb(
            header,
            ext_hook=ext_hook,
            raw=False,
            strict_map_key=True,
            max_array_len=limits.max_items,
            max_map_len=min(limits.max_items, limits.max_map_items),
        )
    except WireError:
        raise
    except Exception as exc:
        raise WireError(f"malformed header: {type(exc).__name__}: {exc}") from exc
    if not isinstance(msg, dict):
        raise WireError("header is not a map")
    version = msg.get("v")
    if type(version) is not int or version != M.PROTOCOL_VERSION:
        raise WireError(f"protocol version {version!r} is not {M.PROTOCOL_VERSION}")
    if used[0] != len(bufs):
        raise WireError(f"{len(bufs) - used[0]} unreferenced extra frames")
    return walk_reference(msg)


# ---- helpers --------------------------------------------------------------------------------------------------


class Name(str):
    """A str subclass: msgpack never makes one; a dict built in process may hold one."""


class Count(int):
    """An int subclass (as ``IntEnum`` members are)."""


def verdict(fn: Any, *args: Any) -> str:
    """'ok', or the exception's type and words (any exception: the walk and the fast path must fail alike)."""
    try:
        fn(*args)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "ok"


def plain(x: Any) -> Any:
    """A decoded message as comparable data: payloads as their bytes, with their types named."""
    if isinstance(x, Payload):
        return ("Payload", type(x.blob).__name__, bytes(x.blob), tuple(bytes(memoryview(b)) for b in x.buffers))
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [type(x).__name__, *(plain(v) for v in x)]
    if isinstance(x, float) and x != x:
        return ("nan",)
    return (type(x).__name__, x)


def as_bytes(frames: list[Any]) -> list[bytes]:
    return [bytes(memoryview(f)) for f in frames]


# ---- strategies: messages of every type, from the schema tables, then mutated anywhere ------------------------

ids = st.one_of(
    st.text(min_size=1, max_size=4),
    st.sampled_from(["a", "t1", "", "x" * M.MAX_ID, "x" * (M.MAX_ID + 1), "a\x00b", "\x00", "é" * 3]),
)
packable_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(1 << 63), (1 << 64) - 1),
    st.sampled_from([0, 1, -1, (1 << 63) - 1, 1 << 63, (1 << 64) - 1, -(1 << 63)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([float("nan"), float("inf"), -0.0, 1.0, 0.0]),
    ids,
    st.binary(max_size=8),
)
payloads = st.builds(
    Payload,
    st.one_of(st.binary(max_size=300), st.sampled_from([b"", b"\xc0", b"\x93\xc4\x00\x00\x00"])),
    st.lists(st.binary(max_size=16), max_size=2).map(tuple),
)
packable = st.recursive(
    st.one_of(packable_scalars, payloads),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(ids, st.sampled_from(["id", "ok", "fn", "args", "deps", "v"])), inner, max_size=3),
    ),
    max_leaves=8,
)
# in process only (never off the wire): subclasses and tuples, which the fast path must leave to the walk
unpackable_odd = st.sampled_from(
    [Name("a"), Name(""), Name("a\x00"), Count(1), Count(0), ("a",), (), ["a", Name("b\x00")], {"id": Name("a")}]
)


def value_of(types: tuple[type, ...]) -> st.SearchStrategy[Any]:
    """A value of one of ``types`` (a schema table's entry)."""
    choices: list[st.SearchStrategy[Any]] = []
    for t in types:
        if t is str:
            choices.append(ids)
        elif t is bool:
            choices.append(st.booleans())
        elif t is int:
            choices.append(st.integers(-(1 << 63), (1 << 64) - 1))
        elif t is float:
            choices.append(st.floats(allow_nan=True))
        elif t is list:
            choices.append(st.lists(ids, max_size=3))
        elif t is dict:
            choices.append(st.dictionaries(ids, packable_scalars, max_size=3))
        elif t is Payload:
            choices.append(payloads)
        elif t is type(None):
            choices.append(st.none())
        elif t is bytes:
            choices.append(st.binary(max_size=8))
        else:
            choices.append(packable)
    return st.one_of(*choices)


def record(schema: Mapping[str, tuple[type, ...]]) -> st.SearchStrategy[dict[str, Any]]:
    """A dict with every field of ``schema``, each of one of its types (then perhaps a field off or odd)."""
    return st.fixed_dictionaries({k: value_of(v) for k, v in schema.items()})


def submit_task() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"id": ids, "fn": payloads, "args": payloads, "deps": st.lists(ids, max_size=3)},
        optional={"pure": st.booleans(), "retries": packable_scalars, "ep": packable_scalars},
    )


def result() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"id": ids, "ok": st.booleans()},
        optional={"v": payloads, "size": packable_scalars, "att": packable_scalars, "err": packable},
    )


locations = st.fixed_dictionaries(
    {},
    optional={
        "loc": st.one_of(st.lists(ids, max_size=2), packable_scalars),
        "size": packable_scalars,
        "parts": packable,
    },
)
dep_values = st.one_of(st.none(), payloads, locations, packable_scalars)


def run_task() -> st.SearchStrategy[dict[str, Any]]:
    """A RUN task from its tables: required fields, any of the optional ones, resources and dependency tables."""
    optional = {k: value_of(v) for k, v in M.RUN_TASK_OPTIONAL.items()}
    optional["resources"] = st.one_of(
        st.dictionaries(
            st.one_of(ids, st.sampled_from(["cpu", "gpu"])), st.one_of(st.integers(-1, 4), packable_scalars)
        )
    )
    required = {k: value_of(v) for k, v in M.RUN_TASK.items()}
    required["deps"] = st.dictionaries(ids, dep_values, max_size=3)
    return st.fixed_dictionaries(required, optional=optional)


@st.composite
def message(draw: st.DrawFn, mtype: str) -> dict[str, Any]:
    """A message of ``mtype`` built from its table, nested items from theirs, ids near their limits."""
    msg = draw(record(M.SCHEMAS[mtype]))
    if mtype == M.SUBMIT:
        msg["tasks"] = draw(st.lists(submit_task(), max_size=3))
    elif mtype in (M.DONE, M.RESULTS):
        msg["results"] = draw(st.lists(result(), max_size=3))
    elif mtype in (M.ABORT, M.STARTED):
        msg["ids"] = draw(st.lists(st.lists(st.one_of(ids, st.integers(-2, 3)), max_size=3), max_size=3))
    elif mtype == M.MOVED:
        msg["moves"] = draw(st.lists(st.tuples(ids, st.integers(-1, 3), ids).map(list), max_size=2))
    elif mtype == M.RUN:
        msg["tasks"] = draw(st.lists(run_task(), max_size=3))
    msg["t"] = mtype
    return msg


def containers(x: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The path of every dict and list in ``x`` (a message tree), ``x`` itself first."""
    out = [path] if isinstance(x, dict | list) else []
    items = x.items() if isinstance(x, dict) else enumerate(x) if isinstance(x, list) else ()
    for k, v in items:
        out += containers(v, (*path, k))
    return out


def deep_copy(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: deep_copy(v) for k, v in x.items()}
    if isinstance(x, list):
        return [deep_copy(v) for v in x]
    return x


PLAIN_KEYS = st.sampled_from(["id", "t", "x", "v"])


@st.composite
def mutated(
    draw: st.DrawFn,
    base: st.SearchStrategy[dict[str, Any]],
    odd: st.SearchStrategy[Any],
    new_keys: st.SearchStrategy[Any] = PLAIN_KEYS,
) -> dict[str, Any]:
    """``base`` with up to three changes, each at any place in its tree (every entry of every dict and list as
    likely): a value replaced by ``odd``, removed, made a tuple (a list), its key renamed to one of ``new_keys``, or
    an entry added."""
    msg = deep_copy(draw(base))
    for _ in range(draw(st.integers(0, 3))):
        slots = [(path, k) for path in containers(msg) for k in [*_keys(msg, path), None]]
        path, key = draw(st.sampled_from(slots))
        node: Any = msg
        for k in path:
            node = node[k]
        op = draw(st.sampled_from(["set", "set", "drop", "rename", "tuple"]))
        if key is None:  # a new entry
            if isinstance(node, dict):
                node[draw(new_keys)] = deep_copy(draw(odd))
            else:
                node.append(deep_copy(draw(odd)))
        elif op == "set":
            node[key] = deep_copy(draw(odd))
        elif op == "drop":
            del node[key]
        elif op == "rename" and isinstance(node, dict):
            node[draw(new_keys)] = node.pop(key)
        elif op == "tuple" and isinstance(node[key], list):
            node[key] = tuple(node[key])
    return msg


def _keys(msg: Any, path: tuple[Any, ...]) -> list[Any]:
    node = msg
    for k in path:
        node = node[k]
    return list(node) if isinstance(node, dict) else list(range(len(node)))


every_type = st.sampled_from(sorted(M.SCHEMAS))
any_message = every_type.flatmap(message)
examples = st.sampled_from(valid_messages()).map(lambda m: {"v": M.PROTOCOL_VERSION, **m})
wire_messages = mutated(st.one_of(any_message, examples), st.one_of(packable, packable_scalars))
process_messages = mutated(st.one_of(any_message, examples), st.one_of(packable, unpackable_odd))

FAST = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---- check_message: the quick yes never says yes where the walk says no, and fails in the walk's words -----------


@FAST
@given(process_messages)
def test_check_message_gives_the_walks_verdict_on_any_message_of_any_type(msg: dict[str, Any]) -> None:
    before = plain(msg)
    got = verdict(M.check_message, msg)
    assert got == verdict(walk_reference, msg)
    assert got == verdict(M.check_in_full, msg)
    if got == "ok":
        assert M.check_message(msg) is msg
    assert plain(msg) == before  # checking changes nothing


@settings(max_examples=300, deadline=None)
@given(every_type.flatmap(message))
def test_a_message_built_from_its_own_table_gives_the_walks_verdict(msg: dict[str, Any]) -> None:
    assert verdict(M.check_message, msg) == verdict(walk_reference, msg)


# valid messages of the types whose quick check reads nested tasks, results, dependency tables or ids, then one to
# three things wrong in them (a bad id where a good one was, a value of another type, a field gone or added)
good_ids = st.one_of(
    st.text(st.characters(blacklist_characters="\x00"), min_size=1, max_size=5), st.just("x" * M.MAX_ID)
)
bad_ids = st.sampled_from(["", "x" * (M.MAX_ID + 1), "a\x00b", "\x00", Name("a"), Name("\x00"), 5, True, None, b"a"])
good_payloads = st.one_of(st.just(Payload(b"\x01")), payloads)
good_locations = st.fixed_dictionaries({}, optional={"loc": st.lists(good_ids, max_size=2), "size": st.integers(0, 9)})
good_ints = st.integers(-(1 << 63), (1 << 64) - 1)
good_run_task = st.fixed_dictionaries(
    {
        "id": good_ids,
        "att": good_ints,
        "fn": good_payloads,
        "args": good_payloads,
        "deps": st.dictionaries(good_ids, st.one_of(st.none(), good_payloads, good_locations), max_size=3),
        "pure": st.booleans(),
    },
    optional={
        "resources": st.dictionaries(good_ids, good_ints, max_size=2),
        "parts": good_ints,
        "device": st.sampled_from(["cpu", "gpu", "tpu"]),
        "prio": good_ints,
        "urg": st.booleans(),
        "fr": st.lists(good_ids, max_size=2),
        "c": good_ids,
        "ep": good_ints,
        "extra": packable,
    },
)
good_submit_task = st.fixed_dictionaries(
    {"id": good_ids, "fn": good_payloads, "args": good_payloads, "deps": st.lists(good_ids, max_size=3)},
    optional={"pure": packable_scalars, "retries": packable_scalars, "done": packable},
)
good_result = st.fixed_dictionaries(
    {"id": good_ids, "ok": st.booleans()}, optional={"v": good_payloads, "size": packable_scalars, "err": packable}
)
good_nested = st.one_of(
    st.builds(lambda o, t: {"t": M.RUN, "owner": o, "tasks": t}, good_ids, st.lists(good_run_task, max_size=3)),
    st.builds(lambda t: {"t": M.SUBMIT, "tasks": t}, st.lists(good_submit_task, max_size=3)),
    st.builds(lambda s, r: {"t": M.DONE, "src": s, "results": r}, good_ids, st.lists(good_result, max_size=3)),
    st.builds(lambda r: {"t": M.RESULTS, "results": r}, st.lists(good_result, max_size=3)),
    st.builds(
        lambda t, s, i: {"t": t, "src": s, "ids": i},
        st.sampled_from([M.FREE, M.CLAIM]),
        good_ids,
        st.lists(st.one_of(good_ids, good_ints, st.none()), max_size=3),
    ),
    st.builds(lambda i: {"t": M.RELEASE, "ids": i}, st.lists(st.one_of(good_ids, good_ints), max_size=3)),
    st.builds(lambda r, i: {"t": M.GET, "req": r, "id": i}, good_ints, good_ids),
    st.builds(lambda r, i, v: {"t": M.PUT, "req": r, "id": i, "val": v}, good_ints, good_ids, good_payloads),
)


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        good_nested,
        mutated(good_nested, st.one_of(bad_ids, unpackable_odd, packable_scalars, good_locations), bad_ids),
    )
)
def test_the_quick_checks_of_tasks_results_and_ids_give_the_walks_verdict(msg: dict[str, Any]) -> None:
    """The types whose quick check reads nested tasks, results, dependency tables or ids: valid ones and ones with
    one to three things wrong anywhere in them."""
    got = verdict(M.check_message, msg)
    assert got == verdict(walk_reference, msg)
    assert got == verdict(M.check_in_full, msg)


def rich_examples() -> list[dict[str, Any]]:
    """Every valid example, and messages with every optional part filled in (each passes the walk)."""
    p = Payload(b"\x01")
    run_task = {
        "id": "a", "att": 1, "fn": p, "args": p, "pure": False,
        "deps": {"d": None, "e": p, "f": {"loc": ["n1", "n2"], "size": 3, "parts": 2}, "g": {}},
        "resources": {"cpu": 1, "gpu": 0}, "parts": 2, "device": "gpu", "prio": 3, "urg": True, "rs": False,
        "kd": True, "fr": ["d"], "c": "c:1", "ep": 2,
    }  # fmt: skip
    submit_task = {"id": "b", "fn": p, "args": p, "deps": ["a", "c"], "pure": True, "retries": 2, "timeout": 1.5,
                   "done": {"v": p}}  # fmt: skip
    result = {"id": "a", "ok": False, "att": 0, "v": p, "size": 4, "err": {"type": "E", "msg": "m"}, "dt": 0.5}
    rich = [
        {"t": M.RUN, "owner": "n1", "tasks": [run_task, {**run_task, "id": "b", "deps": {}}]},
        {"t": M.SUBMIT, "req": 3, "ep": 1, "tasks": [submit_task, {**submit_task, "id": "c", "deps": []}]},
        {"t": M.DONE, "src": "n2", "q": 1, "results": [result, {"id": "b", "ok": True}]},
        {"t": M.RESULTS, "results": [result, {"id": "b", "ok": True, "node": "n1"}]},
        {"t": M.RELEASE, "ids": ["a", 5, None]},
        {"t": M.FREE, "src": "n1", "ids": ["a", "b"], "after": "c", "hold": True},
    ]
    out = [{"v": M.PROTOCOL_VERSION, **m} for m in valid_messages() + rich]
    assert all(verdict(walk_reference, m) == "ok" for m in out)
    return out


ODD = [None, True, 0, 2.5, float("nan"), 1 << 64, "", "x" * (M.MAX_ID + 1), "a\x00", Name("a"), Name("a\x00"),
       Count(1), b"a", [], ("a",), {}, Payload(b"")]  # fmt: skip
BAD_KEYS = ["", "x" * (M.MAX_ID + 1), "a\x00", Name("a"), 5, None, b"a"]


def one_change_each(msg: dict[str, Any]) -> list[dict[str, Any]]:
    """``msg`` with one change, every way: at every entry of every dict and list in its tree, each odd value set,
    the entry removed, its key renamed to each bad key, a list made a tuple; and each odd value added."""
    out = []
    for path in containers(msg):
        for key in [*_keys(msg, path), None]:
            edits: list[Any] = [("set", v) for v in ODD]
            if key is not None:
                edits += [("drop", None), ("tuple", None)] + [("rename", k) for k in BAD_KEYS]
            for op, arg in edits:
                m = deep_copy(msg)
                node: Any = m
                for k in path:
                    node = node[k]
                if key is None:
                    if isinstance(node, dict):
                        node["zz"] = arg
                    else:
                        node.append(arg)
                elif op == "set":
                    node[key] = arg
                elif op == "drop":
                    del node[key]
                elif op == "rename" and isinstance(node, dict):
                    node[arg] = node.pop(key)
                elif op == "tuple" and isinstance(node[key], list):
                    node[key] = tuple(node[key])
                else:
                    continue
                out.append(m)
    return out


@pytest.mark.parametrize("msg", rich_examples(), ids=lambda m: m["t"])
def test_every_single_change_anywhere_in_a_valid_message_gets_the_walks_verdict(msg: dict[str, Any]) -> None:
    """Exhaustive where the property tests sample: one change, at every depth (a dependency's key or location, a
    resource's count, a result's field, an id in a list), each odd value."""
    for m in one_change_each(msg):
        assert verdict(M.check_message, m) == verdict(walk_reference, m), m


@pytest.mark.parametrize(
    ("mtype", "field", "value"),
    [
        (M.DETACH, "ep", True),  # bool where int
        (M.DETACH, "ep", Count(2)),  # int subclass: the walk takes it (isinstance), so must the whole check
        (M.DETACH, "ep", 2.0),  # float where int
        (M.DETACH, "ep", float("nan")),
        (M.DETACH, "ep", 1 << 70),  # no msgpack int, but a dict built here
        (M.DETACH, "ep", "2"),
        (M.WELCOME, "pickle", 0),  # int where bool
        (M.WELCOME, "pickle", None),
        (M.HELLO, "client", b"c1"),  # bytes where str
        (M.HELLO, "client", Name("c1")),
        (M.FAULT, "nodes", ("n1",)),  # tuple where list (a dict built here)
        (M.XCHUNK, "d", b"raw"),  # bytes where Payload
        (M.XCHUNK, "d", None),
        (M.GET, "id", ""),
        (M.GET, "id", "x" * (M.MAX_ID + 1)),
        (M.GET, "id", "a\x00"),
        (M.GET, "id", Name("a\x00")),
        (M.GET, "req", True),
        (M.RELEASE, "ids", [Name("a\x00")]),
        (M.RELEASE, "ids", [1, None, "ok"]),  # non-strings are skipped by the handler: both accept
        (M.RELEASE, "ids", ["", "a"]),
        (M.SWIM, "m", []),
        (M.STATUS_REPLY, "members", {}),
    ],
)
def test_each_odd_field_value_gets_the_same_verdict_both_ways(mtype: str, field: str, value: Any) -> None:
    base = {"v": 1, **next(m for m in valid_messages() if m["t"] == mtype)}
    msg = {**base, field: value}
    assert verdict(M.check_message, msg) == verdict(walk_reference, msg)
    missing = {k: v for k, v in base.items() if k != field}
    assert verdict(M.check_message, missing) == verdict(walk_reference, missing)
    assert verdict(walk_reference, missing) != "ok"


@pytest.mark.parametrize(
    "task_change",
    [
        {"id": 5},
        {"id": ""},
        {"id": "a\x00"},
        {"id": Name("a")},
        {"deps": ("a",)},
        {"deps": ["a", 5]},
        {"deps": ["a", ""]},
        {"deps": ["a", "x" * (M.MAX_ID + 1)]},
        {"deps": [Name("b\x00")]},
        {"fn": b"\x90"},
        {"args": None},
        {"pure": "yes", "retries": -1.5, "done": 7},  # optional fields: not checked on decode, either way
    ],
)
def test_a_submit_tasks_odd_field_gets_the_same_verdict_both_ways(task_change: dict[str, Any]) -> None:
    base = next(m for m in valid_messages() if m["t"] == M.SUBMIT)
    good = dict(base["tasks"][0])
    for tasks in ([{**good, **task_change}], [good, {**good, **task_change}], [{**good, **task_change}, good]):
        msg = {"v": 1, **base, "tasks": tasks}
        assert verdict(M.check_message, msg) == verdict(walk_reference, msg)


@pytest.mark.parametrize(
    "results",
    [
        [{"id": "a", "ok": 1}],
        [{"id": "a"}],
        [{"ok": True}],
        ["a"],
        [{"id": 5, "ok": True}],
        [None],
        ({"id": "a", "ok": True},),
    ],
)
def test_a_done_with_odd_results_gets_the_same_verdict_both_ways(results: Any) -> None:
    for mtype in (M.DONE, M.RESULTS):
        base = next(m for m in valid_messages() if m["t"] == mtype)
        msg = {"v": 1, **base, "results": results}
        assert verdict(M.check_message, msg) == verdict(walk_reference, msg)


def test_the_quick_check_says_yes_only_where_the_walk_does_and_takes_the_common_messages() -> None:
    for msg in valid_messages():
        fast = M._FAST.get(msg["t"])
        if fast is not None:
            assert fast(msg), msg["t"]  # the compiled check does take every valid example of its type
    tasks = [{"id": f"t{i}", "fn": payload_of(1), "args": payload_of([[i], {}]), "deps": [f"t{i - 1}"] if i else []}
             for i in range(50)]  # fmt: skip
    assert M._FAST[M.SUBMIT]({"t": M.SUBMIT, "tasks": tasks})


# ---- decode: the same message as before, from the same frames, aliasing nothing new ----------------------------


@FAST
@given(wire_messages)
def test_encode_is_byte_for_byte_what_it_was_and_decode_reads_the_same_message(msg: dict[str, Any]) -> None:
    refused = verdict(old_encode, msg)
    assert verdict(encode, msg) == refused
    if refused != "ok":
        return
    new = encode(msg)
    assert as_bytes(new) == as_bytes(old_encode(msg))
    frames = as_bytes(new)
    got, want = verdict(decode, frames), verdict(old_decode, frames)
    assert got == want
    if got == "ok":
        assert plain(decode(frames)) == plain(old_decode(frames))


blob_sizes = st.sampled_from([0, 1, 2, 200, 254, 255, 256, 257, 1000, BLOB_IN_HEADER, BLOB_IN_HEADER + 1])


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(blob_sizes, st.lists(st.integers(0, 300), max_size=3)), min_size=1, max_size=6),
    st.one_of(st.sampled_from([0, 1, 126, 127, 128, 129]), st.integers(0, 140)),
    st.sampled_from([bytes, bytearray, memoryview]),
)
def test_payloads_of_every_size_round_trip_with_the_old_bytes(
    shapes: list[tuple[int, list[int]]], padding: int, blob_type: type
) -> None:
    """Blobs on both sides of 256 bytes and of BLOB_IN_HEADER, 0 to 3 buffers each, after ``padding`` frames of other
    payloads (so references start on both sides of 0x80): the frames are the old encoder's, and each payload comes
    back whole, its buffers from the right frames."""
    pad = [Payload(b"p", tuple(bytes([i % 256]) for i in range(padding)))]  # its buffers: ``padding`` frames
    sent = [
        Payload(blob_type(bytes([j % 251]) * n), tuple(bytes([j, k % 256]) * size for k, size in enumerate(sizes)))
        for j, (n, sizes) in enumerate(shapes)
    ]
    msg = {"t": M.SUBMIT, "tasks": [{"id": f"t{i}", "fn": p, "args": Payload(b"a"), "deps": []}
                                    for i, p in enumerate(pad + sent)]}  # fmt: skip
    new, old = encode(msg), old_encode(msg)
    assert as_bytes(new) == as_bytes(old)
    assert all(a is b for a, b in zip(new[1:], old[1:], strict=True))  # buffers handed on, not copied
    out = decode(as_bytes(new))
    got = [t["fn"] for t in out["tasks"]][1:]
    for p, q in zip(sent, got, strict=True):
        assert type(q.blob) is bytes
        assert q.blob == bytes(p.blob)
        assert [bytes(memoryview(b)) for b in q.buffers] == [bytes(b) for b in p.buffers]
    assert plain(out) == plain(old_decode(as_bytes(new)))


def _ref_data() -> st.SearchStrategy[bytes]:
    """The bytes inside a payload ExtType: the short form and every near miss of it, packed forms, garbage."""
    tail = st.tuples(st.sampled_from([0, 1, 2, 0x7F, 0x80, 0xC0, 0xFF]), st.sampled_from([0, 1, 2, 0x7F, 0x80, 0xFF]))
    short = st.builds(
        lambda blob, delta, t: b"\x93\xc4" + bytes(((len(blob) + delta) % 256,)) + blob + bytes(t),
        st.binary(max_size=20),
        st.sampled_from([0, 0, 0, 1, -1, 2]),
        tail,
    )
    packed = st.builds(
        lambda items: packb(items),
        st.lists(st.one_of(packable_scalars, st.binary(max_size=300)), min_size=0, max_size=4),
    )
    return st.one_of(
        short,
        packed,
        st.binary(max_size=8),
        st.sampled_from(
            [b"", b"\x00\x00", b"\x93\xc4", b"\x93\xc4\x00\x00", b"\x93\xc4\x00\x00\x00", b"\x93\xc4\x01\x00\x00"]
        ),
        short.map(lambda d: d + b"\x00"),
        short.map(lambda d: d[:-1]),
    )


@settings(max_examples=600, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([EXT_PAYLOAD, EXT_PAYLOAD, EXT_PAYLOAD, 0, 41, 43, 126, 127]), _ref_data()),
        min_size=1,
        max_size=3,
    ),
    st.lists(st.binary(max_size=6), max_size=3),
    st.sampled_from([M.PUT, M.XCHUNK, M.SUBMIT, M.GOT]),
)
def test_hand_made_payload_references_get_the_same_verdict_and_payloads(
    refs: list[tuple[int, bytes]], extra: list[bytes], mtype: str
) -> None:
    """Headers with hand-made ExtTypes (any code, any bytes), with and without extra frames: the frameless hook reads
    exactly what the old one did, and refuses exactly what it refused, in the same words."""
    exts = [msgpack.ExtType(code, data) for code, data in refs]
    if mtype == M.SUBMIT:
        header: dict[str, Any] = {
            "v": 1,
            "t": mtype,
            "tasks": [{"id": "a", "fn": exts[0], "args": exts[-1], "deps": []}],
        }
        if len(exts) > 2:
            header["tasks"].append({"id": "b", "fn": exts[1], "args": exts[1], "deps": []})
    elif mtype == M.XCHUNK:
        header = {"v": 1, "t": mtype, "x": 1, "o": 0, "d": exts[0], "more": exts[1:]}
    else:
        header = {"v": 1, "t": mtype, "req": 1, "id": "p", "ok": True, "val": exts[0], "more": exts[1:]}
    frames = [msgpack.packb(header, use_bin_type=True), *extra]
    got, want = verdict(decode, frames), verdict(old_decode, frames)
    assert got == want
    if got == "ok":
        assert plain(decode(frames)) == plain(old_decode(frames))


@pytest.mark.parametrize(
    "data",
    [
        b"\x93\xc4\x00\x00\x00",  # the empty blob, frameless: a payload
        b"\x93\xc4\x01X\x00\x00",
        b"\x93\xc4\x02X\x00\x00",  # its length byte says 2: not the short form, nor any other
        b"\x93\xc4\x00\x01\x00",  # start 1 with no frames
        b"\x93\xc4\x00\x00\x01",  # a frame that is not there
        b"\x93\xc5\x00\x01X\x00\x00",  # bin 16: the packed form, read by msgpack
        b"\x93\xc0\x00\x01",  # nil blob, no frame
        b"\x93\xa1X\x00\x00",  # a str blob
        b"\x93\xc4\x01X\xc2\x00",  # false for start
        b"\x00\x00",
        b"",
    ],
)
@pytest.mark.parametrize("code", [EXT_PAYLOAD, 7])
def test_each_near_miss_of_the_short_form_gets_the_old_verdict(data: bytes, code: int) -> None:
    frames = [msgpack.packb({"v": 1, "t": M.PUT, "req": 1, "id": "p", "val": msgpack.ExtType(code, data)})]
    assert verdict(decode, frames) == verdict(old_decode, frames)
    if code != EXT_PAYLOAD:
        with pytest.raises(WireError, match=f"unknown header extension {code}"):
            decode(frames)


def test_a_decoded_message_shares_no_memory_with_its_header_frame() -> None:
    """The header is read in place now (no copy): nothing decoded may be a view of it. A header frame reused or
    overwritten after decode (a zmq frame's memory goes back to libzmq) must leave the message as it was."""
    big = b"\x07" * 300
    tasks = [
        {"id": "task-a", "fn": payload_of(1), "args": Payload(big), "deps": ["d"]},
        {"id": "task-b", "fn": Payload(b""), "args": Payload(b"xy"), "deps": []},
    ]
    msg = {"t": M.SUBMIT, "req": 7, "tasks": tasks}
    for head in (bytearray(encode(msg)[0]), memoryview(bytearray(encode(msg)[0]))):
        out = decode([head])
        want = plain(out)
        blobs = [p.blob for t in out["tasks"] for p in (t["fn"], t["args"])]
        assert all(type(b) is bytes for b in blobs)
        raw = head.obj if isinstance(head, memoryview) else head
        raw[:] = b"\xff" * len(raw)  # scribble over the frame
        assert plain(out) == want
        if isinstance(raw, bytearray) and not isinstance(head, memoryview):
            raw.extend(b"!")  # and the frame is not held (a held export would refuse a resize)


def test_payload_buffers_are_their_own_frames_in_order_zero_copy_as_before() -> None:
    """Extra frames are handed on zero-copy (as before 9f6a00c): each payload's buffers are views of exactly its own
    frames, in order; a large blob's own frame is copied out."""
    a = Payload(b"A" * 10, (b"a0", b"a1"))
    b = Payload(b"B" * (BLOB_IN_HEADER + 1), (b"b0",))
    c = Payload(b"C", ())
    d = Payload(b"D", (b"d0",))
    frames = [bytearray(f) for f in as_bytes(encode({"t": M.XCHUNK, "x": 1, "o": 0, "d": a, "e": [b, c, d]}))]
    assert len(frames) == 1 + 2 + 2 + 1
    out = decode(list(frames))
    pa, (pb, pc, pd) = out["d"], out["e"]
    assert [bytes(x) for x in pa.buffers] == [b"a0", b"a1"]
    assert pb.blob == b.blob
    assert type(pb.blob) is bytes
    assert [bytes(x) for x in pb.buffers] == [b"b0"]
    assert pc == Payload(b"C")
    assert [bytes(x) for x in pd.buffers] == [b"d0"]
    frames[1][:] = b"zz"  # a buffer is a view of its frame (zero-copy, by design, as before)
    assert bytes(pa.buffers[0]) == b"zz"
    frames[3][:1] = b"X"  # the large blob's frame: copied out
    assert pb.blob == b.blob
    assert plain(decode(as_bytes(encode({"t": M.XCHUNK, "x": 1, "o": 0, "d": a})))) == plain(
        old_decode(as_bytes(old_encode({"t": M.XCHUNK, "x": 1, "o": 0, "d": a})))
    )


def test_the_unchecked_ext_type_is_an_ext_type_like_any_other() -> None:
    """``encode``'s ExtType made without its checks: equal to the checked one, packed to the same bytes."""
    for ref in (b"", b"\x93\xc4\x03abc\x00\x00", packb([None, 0, 1])):
        fast, checked = codec._ext(ref), msgpack.ExtType(EXT_PAYLOAD, ref)
        assert type(fast) is msgpack.ExtType
        assert fast == checked
        assert fast.data is ref
        assert packb(fast) == packb(checked) == msgpack.packb(checked)


def test_frames_from_a_real_socket_decode_as_before_and_outlive_the_frames() -> None:
    """Frames as a node's socket hands them over (``copy=False``: zmq.Frame, the header read in libzmq's memory): the
    same message as the old decoder's; once the frames are dropped, the header's values are intact and each payload's
    buffers still read their own frame's bytes (a view keeps its frame alive)."""
    import gc

    import zmq

    big = Payload(b"B" * (BLOB_IN_HEADER + 1), (b"b0" * 1000,))
    msg = {"t": M.SUBMIT, "req": 9, "tasks": [
        {"id": "a", "fn": Payload(b"\x01"), "args": Payload(b"xyz", (b"a0" * 5000, b"a1")), "deps": []},
        {"id": "b", "fn": Payload(b"\x02" * 300), "args": big, "deps": ["a"]},
        {"id": "c", "fn": Payload(b""), "args": Payload(b"\x03"), "deps": []},
    ]}  # fmt: skip
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
        a.bind("inproc://rev19w-frames")
        b.connect("inproc://rev19w-frames")
        for sent in (encode(msg), encode({"t": M.XCHUNK, "x": 1, "o": 0, "d": Payload(b"tiny")})):
            a.send_multipart(sent, copy=False)
            frames = b.recv_multipart(copy=False)
            assert all(isinstance(f, zmq.Frame) for f in frames)
            want = plain(old_decode(frames))
            out = decode(frames)
            assert plain(out) == want
            del frames
            gc.collect()
            assert plain(out) == want
    finally:
        ctx.destroy(linger=0)
