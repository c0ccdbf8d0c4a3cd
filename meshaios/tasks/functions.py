"""How a function travels: by import reference when it has one, pickled (cloudpickle) otherwise.

A reference (``{"ref": "module:qualname"}``) is safe to accept from anyone allowed to submit, costs a few bytes,
and is how an insecure mesh runs work at all. A pickle is code; it is sent and accepted only on an authenticated
mesh, where every sender holds the token.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from meshaios.errors import SerializationError, WireError
from meshaios.wire.payload import Payload
from meshaios.wire.values import dumps, loads


def import_ref(fn: Any) -> str | None:
    """``module:qualname`` if importing that gives back this very object, else None."""
    mod = getattr(fn, "__module__", None)
    qual = getattr(fn, "__qualname__", None)
    if not isinstance(mod, str) or not isinstance(qual, str) or mod == "__main__" or "<" in qual:
        return None
    try:
        obj: Any = importlib.import_module(mod)
        for part in qual.split("."):
            obj = getattr(obj, part)
    except Exception:
        return None
    return f"{mod}:{qual}" if obj is fn else None


def encode_function(fn: Callable[..., Any], *, allow_pickle: bool) -> Payload:
    if not callable(fn):
        raise SerializationError(f"{fn!r} is not callable")
    ref = import_ref(fn)
    if ref is not None:
        return dumps({"ref": ref}, allow_pickle=False)[0]
    if not allow_pickle:
        raise SerializationError(
            f"{getattr(fn, '__qualname__', fn)!r} has no import path, and this mesh is insecure, so functions are "
            "not pickled: define it in an importable module, or use a mesh token"
        )
    import cloudpickle

    try:
        blob = cloudpickle.dumps(fn, protocol=5)
    except Exception as exc:
        raise SerializationError(f"cannot pickle function {fn!r}: {exc}") from exc
    return dumps({"pickle": blob}, allow_pickle=False)[0]


class FunctionResolver:
    """Decodes function payloads on an executing node, with a cache: a map sends one function 10,000 times."""

    def __init__(self, *, allow_pickle: bool, allowed_modules: tuple[str, ...] = (), cache_size: int = 1024) -> None:
        self.allow_pickle = allow_pickle
        self.allowed_modules = allowed_modules
        self.cache_size = cache_size
        self._cache: dict[bytes, Callable[..., Any]] = {}

    def resolve(self, payload: Payload) -> Callable[..., Any]:
        fn = self._cache.get(payload.blob)
        if fn is not None:
            return fn
        spec = loads(payload, allow_pickle=False)
        if not isinstance(spec, dict):
            raise WireError("function spec is not a map")
        if "ref" in spec and isinstance(spec["ref"], str):
            fn = self._import(spec["ref"])
        elif "pickle" in spec and isinstance(spec["pickle"], bytes):
            if not self.allow_pickle:
                raise WireError("pickled function refused: this mesh is not authenticated")
            import cloudpickle

            fn = cloudpickle.loads(spec["pickle"])
        else:
            raise WireError("function spec has neither a reference nor a pickle")
        if not callable(fn):
            raise WireError("function spec does not name a callable")
        if len(self._cache) >= self.cache_size:
            self._cache.pop(next(iter(self._cache)))
        self._cache[payload.blob] = fn
        return fn

    def _import(self, ref: str) -> Callable[..., Any]:
        mod, _, qual = ref.partition(":")
        if not mod or not qual:
            raise WireError(f"bad function reference {ref!r}")
        if self.allowed_modules and not any(mod == m or mod.startswith(m + ".") for m in self.allowed_modules):
            raise WireError(f"module {mod!r} is not allowed on this node")
        try:
            obj: Any = importlib.import_module(mod)
            for part in qual.split("."):
                obj = getattr(obj, part)
        except Exception as exc:
            raise WireError(f"cannot import {ref!r}: {type(exc).__name__}: {exc}") from exc
        result: Callable[..., Any] = obj
        return result
