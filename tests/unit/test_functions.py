"""How functions travel (import refs, pickles) and how one task runs (``run_task``), without a pool or a loop."""

from __future__ import annotations

import json
import math
import operator
import os
import pickle
from typing import Any

import numpy as np
import pytest

from meshaios.errors import SerializationError, WireError
from meshaios.tasks import execute
from meshaios.tasks.allowlist import Fence
from meshaios.tasks.execute import pack_for_process, run_in_process, run_task, unpack_from_process
from meshaios.tasks.functions import FunctionResolver, encode_function, import_ref
from meshaios.wire.payload import Payload
from meshaios.wire.values import TaskRef, dumps, loads

HERE = __name__  # "tests.unit.test_functions" under pytest


def double(x: Any) -> Any:
    return x * 2


def add(a: int, b: int = 0) -> int:
    return a + b


class Custom(Exception):
    pass


def explode(msg: str) -> None:
    raise Custom(msg)


def returns_object() -> object:
    return object()


def exits() -> None:
    raise SystemExit(3)


class Box:
    def method(self) -> int:
        return 1

    @classmethod
    def make(cls) -> str:
        return "made"

    @staticmethod
    def static(x: int) -> int:
        return x + 1

    class Inner:
        @staticmethod
        def deep() -> str:
            return "deep"


not_a_function = 42


def insecure() -> FunctionResolver:
    """An insecure node's resolver whose operator allowed this test module."""
    return FunctionResolver(allow_pickle=False, allowed_modules=(HERE,))


def spec_payload(spec: Any) -> Payload:
    return dumps(spec, allow_pickle=False)[0]


def call_payload(*args: Any, **kwargs: Any) -> Payload:
    return dumps([list(args), kwargs], allow_pickle=True)[0]


def task(
    fn: Any, *args: Any, deps: dict[str, Payload | None] | None = None, allow_pickle: bool = False, **kwargs: Any
) -> dict[str, Any]:
    return {
        "id": "t1",
        "att": 2,
        "fn": fn if isinstance(fn, Payload) else encode_function(fn, allow_pickle=allow_pickle),
        "args": call_payload(*args, **kwargs),
        "deps": deps or {},
        "pure": False,
    }


# ---------------------------------------------------------------------------------------------- import_ref
@pytest.mark.parametrize(
    ("fn", "ref"),
    [
        (len, "builtins:len"),
        (math.sqrt, "math:sqrt"),
        (json.dumps, "json:dumps"),
        (operator.add, "_operator:add"),
        (os.path.join, f"{os.path.__name__}:join"),
        (np.add, "numpy:add"),
        (str.upper, "builtins:str.upper"),  # a method descriptor: no __module__ of its own
        (dict.fromkeys, "builtins:dict.fromkeys"),  # a builtin class method
        (double, f"{HERE}:double"),
        (Box.method, f"{HERE}:Box.method"),
        (Box.static, f"{HERE}:Box.static"),
        (Box.make, f"{HERE}:Box.make"),  # a fresh bound method on each access
        (Box.Inner.deep, f"{HERE}:Box.Inner.deep"),
        (Box, f"{HERE}:Box"),
    ],
)
def test_import_ref_names_importable_callables(fn: Any, ref: str) -> None:
    assert import_ref(fn) == ref
    # and a resolver finds that very object again (an unfenced one: tests/unit/test_allowlist.py has the fence)
    resolved = FunctionResolver(allow_pickle=True).resolve(spec_payload({"ref": ref}))
    assert resolved is fn or resolved == fn


def test_lambdas_locals_and_bound_methods_have_no_ref() -> None:
    def local() -> None:
        pass

    assert import_ref(lambda: 1) is None
    assert import_ref(local) is None
    assert import_ref(Box().method) is None  # bound to an instance nobody can import
    assert import_ref(object()) is None


def test_an_object_that_is_not_what_its_name_imports_has_no_ref() -> None:
    def impostor() -> None:
        pass

    impostor.__qualname__ = "double"
    impostor.__module__ = HERE
    assert import_ref(impostor) is None


def test_main_module_functions_have_no_ref() -> None:
    def f() -> None:
        pass

    f.__module__ = "__main__"
    f.__qualname__ = "f"
    assert import_ref(f) is None


# ---------------------------------------------------------------------------------------------- encode_function
def test_importable_function_travels_as_a_ref() -> None:
    p = encode_function(double, allow_pickle=False)
    assert loads(p, allow_pickle=False) == {"ref": f"{HERE}:double"}
    assert encode_function(double, allow_pickle=True) == p  # a ref even where pickle is allowed


def test_lambda_is_refused_without_pickle_with_a_clear_message() -> None:
    with pytest.raises(SerializationError, match=r"no import path.*insecure.*token"):
        encode_function(lambda x: x, allow_pickle=False)


def test_lambda_is_pickled_with_pickle() -> None:
    p = encode_function(lambda x: x + 10, allow_pickle=True)
    spec = loads(p, allow_pickle=False)  # the spec itself is plain data
    assert set(spec) == {"pickle"}
    fn = FunctionResolver(allow_pickle=True).resolve(p)
    assert fn(1) == 11


def test_non_callables_are_refused() -> None:
    with pytest.raises(SerializationError):
        encode_function(42, allow_pickle=True)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- FunctionResolver
def test_resolver_caches_by_payload() -> None:
    r = FunctionResolver(allow_pickle=True)
    p = encode_function(lambda: "x", allow_pickle=True)
    first = r.resolve(p)
    assert r.resolve(Payload(p.blob)) is first  # not unpickled twice


def test_resolver_cache_is_bounded() -> None:
    r = FunctionResolver(allow_pickle=False, allowed_modules=("builtins",), cache_size=2)
    for fn in (len, abs, min, max):
        r.resolve(encode_function(fn, allow_pickle=False))
    assert len(r._cache) == 2


def test_resolver_rejects_a_pickled_function_without_pickle() -> None:
    p = encode_function(lambda: 1, allow_pickle=True)
    with pytest.raises(WireError, match="pickle"):
        insecure().resolve(p)


@pytest.mark.parametrize(
    ("allowed", "ok"),
    [
        (("math",), True),
        (("json",), False),
        (("mat",), False),  # a prefix of the name is not the module
        (("xml",), False),
    ],
)
def test_resolver_respects_allowed_modules(allowed: tuple[str, ...], ok: bool) -> None:
    r = FunctionResolver(allow_pickle=False, allowed_modules=allowed)
    p = spec_payload({"ref": "math:sqrt"})
    if ok:
        assert r.resolve(p) is math.sqrt
    else:
        with pytest.raises(WireError, match="not allowed"):
            r.resolve(p)


def test_allowed_modules_include_submodules_only_when_asked() -> None:
    ref = spec_payload({"ref": "xml.sax.saxutils:escape"})
    with pytest.raises(WireError, match="not allowed"):
        FunctionResolver(allow_pickle=False, allowed_modules=("xml",)).resolve(ref)
    for allowed in ("xml.*", "xml.sax.saxutils", "xml.sax.*"):
        assert FunctionResolver(allow_pickle=False, allowed_modules=(allowed,)).resolve(ref)("<") == "&lt;"


def test_allowed_modules_cannot_be_escaped_through_attributes() -> None:
    r = FunctionResolver(allow_pickle=True, allowed_modules=("json",))
    for ref in ("json:codecs.open", "json:dumps.__globals__", "json:JSONEncoder.__subclasses__"):
        with pytest.raises(WireError):
            r.resolve(spec_payload({"ref": ref}))


@pytest.mark.parametrize(
    "ref", ["builtins:eval", "builtins:exec", "builtins:__import__", "os:system", "posix:system", "os:popen",
            "pickle:loads", "subprocess:run", "marshal:loads", "importlib:import_module", "builtins:open"]
)  # fmt: skip
def test_code_running_functions_are_refused_on_an_insecure_mesh(ref: str) -> None:
    with pytest.raises(WireError, match="refused"):
        FunctionResolver(allow_pickle=False).resolve(spec_payload({"ref": ref}))


def test_code_running_functions_are_allowed_on_an_authenticated_mesh() -> None:
    assert FunctionResolver(allow_pickle=True).resolve(spec_payload({"ref": "pickle:loads"})) is pickle.loads


@pytest.mark.parametrize(
    "spec",
    [
        "builtins:len",  # not a map
        [1, 2],
        {},
        {"ref": 5},
        {"pickle": "text"},
        {"ref": "nocolon"},
        {"ref": ":len"},
        {"ref": "builtins:"},
        {"ref": "no_such_module_xyz:f"},
        {"ref": "math:no_such_function"},
        {"ref": f"{HERE}:not_a_function"},
        {"ref": "math:sqrt..x"},
    ],
)
def test_resolver_rejects_garbage_specs_with_wire_error(spec: Any) -> None:
    with pytest.raises(WireError):
        FunctionResolver(allow_pickle=True).resolve(spec_payload(spec))


def test_resolver_rejects_garbage_pickles_and_blobs_with_wire_error() -> None:
    with pytest.raises(WireError):
        FunctionResolver(allow_pickle=True).resolve(spec_payload({"pickle": b"not a pickle"}))
    with pytest.raises(WireError):
        FunctionResolver(allow_pickle=True).resolve(Payload(b"\xc1"))


# ---------------------------------------------------------------------------------------------- run_task
def test_run_task_success() -> None:
    r = run_task(task(add, 2, b=5), insecure(), allow_pickle=False)
    assert r["ok"] is True
    assert r["id"] == "t1"
    assert r["att"] == 2
    assert r["dt"] >= 0
    assert loads(r["v"], allow_pickle=False) == 7


def test_run_task_with_arrays_and_refs_resolved_from_deps() -> None:
    dep = dumps(np.arange(4), allow_pickle=False)[0]
    args, refs = dumps([[TaskRef("d")], {}], allow_pickle=False)
    assert refs == ["d"]
    t = {**task(double), "args": args, "deps": {"d": dep}}
    r = run_task(t, insecure(), allow_pickle=False)
    assert r["ok"] is True
    np.testing.assert_array_equal(loads(r["v"], allow_pickle=False), [0, 2, 4, 6])


def test_run_task_exception_gives_type_message_and_traceback() -> None:
    r = run_task(task(explode, "kaboom"), insecure(), allow_pickle=False)
    assert r["ok"] is False
    assert not r.get("fatal")  # retrying may help
    assert r["err"]["type"] == f"{HERE}.Custom"
    assert r["err"]["msg"] == "kaboom"
    assert "explode" in r["err"]["tb"]
    assert "raise Custom(msg)" in r["err"]["tb"]
    assert "exc" not in r["err"]  # never pickled on an insecure mesh


def test_run_task_builtin_exception_type_is_unqualified_and_pickled_when_allowed() -> None:
    r = run_task(task(operator.truediv, 1, 0), FunctionResolver(allow_pickle=True), allow_pickle=True)
    assert r["err"]["type"] == "ZeroDivisionError"
    exc = loads(r["err"]["exc"], allow_pickle=True)
    assert isinstance(exc, ZeroDivisionError)


def test_run_task_wrong_arity_is_an_ordinary_error() -> None:
    r = run_task(task(add), insecure(), allow_pickle=False)
    assert r["ok"] is False
    assert r["err"]["type"] == "TypeError"


@pytest.mark.parametrize(
    "args",
    [
        dumps("not a list", allow_pickle=False)[0],
        dumps([[1]], allow_pickle=False)[0],
        dumps([(1,), {}], allow_pickle=False)[0],
        dumps([[1], []], allow_pickle=False)[0],
        dumps([[1], {1: 2}], allow_pickle=False)[0],  # keywords must be strings
        Payload(b"\xc1"),
    ],
)
def test_run_task_bad_args_are_fatal(args: Payload) -> None:
    r = run_task({**task(double), "args": args}, insecure(), allow_pickle=False)
    assert r["ok"] is False
    assert r["fatal"] is True
    assert r["err"]["type"] == "meshaios.errors.WireError"


def test_run_task_bad_function_is_fatal() -> None:
    t = {**task(double), "fn": spec_payload({"ref": "math:nope"})}
    r = run_task(t, insecure(), allow_pickle=False)
    assert r["fatal"] is True
    assert "math:nope" in r["err"]["msg"]


def test_run_task_missing_dependency_is_fatal() -> None:
    args, _ = dumps([[TaskRef("gone")], {}], allow_pickle=False)
    r = run_task({**task(double), "args": args, "deps": {"gone": None}}, insecure(), allow_pickle=False)
    assert r["fatal"] is True
    assert "gone" in r["err"]["msg"]


def test_run_task_unserialisable_result_on_insecure_mesh_is_fatal() -> None:
    r = run_task(task(returns_object), insecure(), allow_pickle=False)
    assert r["ok"] is False
    assert r["fatal"] is True
    assert r["err"]["type"] == "meshaios.errors.SerializationError"
    assert "dt" in r


def test_run_task_arbitrary_result_travels_pickled_on_a_secure_mesh() -> None:
    r = run_task(task(Box), FunctionResolver(allow_pickle=True), allow_pickle=True)
    assert r["ok"] is True
    assert isinstance(loads(r["v"], allow_pickle=True), Box)


# ---------------------------------------------------------------------------------------------- process pool
def through_a_pipe(obj: Any) -> Any:
    """What crossing into a pool process does to the packed task and the result."""
    return pickle.loads(pickle.dumps(obj))


def test_process_pack_and_unpack_round_trip_a_result_with_arrays() -> None:
    dep = dumps(np.arange(3.0), allow_pickle=False)[0]
    args, _ = dumps([[TaskRef("d")], {}], allow_pickle=False)
    t = {**task(double), "args": args, "deps": {"d": dep, "unused": None}, "pure": True}
    packed = through_a_pipe(pack_for_process(t))
    result = unpack_from_process(through_a_pipe(run_in_process(packed, False, Fence.of(modules=(HERE,)))))
    assert result["ok"] is True
    assert result["id"] == "t1"
    assert result["att"] == 2
    assert isinstance(result["v"], Payload)
    np.testing.assert_array_equal(loads(result["v"], allow_pickle=False), [0.0, 2.0, 4.0])


def test_process_error_with_pickled_exception_round_trips() -> None:
    packed = through_a_pipe(pack_for_process(task(explode, "in a process", allow_pickle=True)))
    result = unpack_from_process(through_a_pipe(run_in_process(packed, True, Fence(fenced=False))))
    assert result["ok"] is False
    assert result["err"]["msg"] == "in a process"
    assert isinstance(result["err"]["exc"], Payload)
    assert isinstance(loads(result["err"]["exc"], allow_pickle=True), Custom)


def test_process_settings_are_not_sticky_between_calls() -> None:
    """Regression: the per-process resolver kept the settings of the first call ever made."""
    execute._process_resolvers.clear()
    packed = pack_for_process(task(lambda: "pickled", allow_pickle=True))
    assert unpack_from_process(run_in_process(packed, True, Fence(fenced=False)))["ok"] is True
    refused = run_in_process(packed, False, Fence.of(modules=(HERE,)))
    assert refused["ok"] is False
    assert "pickle" in refused["err"]["msg"]
    limited = run_in_process(pack_for_process(task(double, 1)), False, Fence.of(modules=("math",)))
    assert limited["ok"] is False
    assert "not allowed" in limited["err"]["msg"]


def test_unpack_leaves_payloads_alone() -> None:
    p = Payload(b"\x01")
    assert unpack_from_process({"id": "a", "ok": True, "v": p})["v"] is p
    assert unpack_from_process({"id": "a", "ok": False, "err": {"type": "X"}})["err"] == {"type": "X"}
