"""How a function travels: by import reference when it has one, pickled (cloudpickle) otherwise.

A reference (``{"ref": "module:qualname"}``) is safe to accept from anyone allowed to submit, costs a few bytes,
and is how an insecure mesh runs work at all. A pickle is code; it is sent and accepted only on an authenticated
mesh, where every sender holds the token.
"""

from __future__ import annotations

import contextvars
import importlib
import types
from collections.abc import Callable
from typing import Any, cast

from meshaios.errors import FunctionRefused, SerializationError, WireError
from meshaios.tasks.allowlist import Fence
from meshaios.wire.messages import FunctionSpec
from meshaios.wire.payload import Payload
from meshaios.wire.values import dumps, loads


def _owner_module(fn: Any) -> str | None:
    """The module a callable lives in; method descriptors (``str.upper``) and builtin class methods
    (``dict.fromkeys``) carry no ``__module__`` of their own, their class does."""
    mod = getattr(fn, "__module__", None)
    if isinstance(mod, str):
        return mod
    owner = getattr(fn, "__objclass__", None)
    if owner is None:
        self_ = getattr(fn, "__self__", None)
        owner = self_ if isinstance(self_, type) else None
    mod = getattr(owner, "__module__", None)
    return mod if isinstance(mod, str) else None


def import_ref(fn: Any) -> str | None:
    """``module:qualname`` if importing that gives back this very object, else None."""
    mod = _owner_module(fn)
    qual = getattr(fn, "__qualname__", None)
    if not isinstance(mod, str) or not isinstance(qual, str) or mod == "__main__" or "<" in qual:
        return None
    try:
        obj: Any = importlib.import_module(mod)
        for part in qual.split("."):
            obj = getattr(obj, part)
    except Exception:
        return None
    if obj is fn:
        return f"{mod}:{qual}"
    # a class method is a fresh bound method on each access: equal, not identical
    if isinstance(fn, (types.MethodType, types.BuiltinMethodType)) and isinstance(fn.__self__, type) and obj == fn:
        return f"{mod}:{qual}"
    return None


def encode_function(fn: Callable[..., Any], *, allow_pickle: bool) -> Payload:
    if not callable(fn):
        raise SerializationError(f"{fn!r} is not callable")
    from meshaios.devices.registry import Kernel

    if isinstance(fn, Kernel):
        # by name: the executing node runs its own registry's kernel on the device it picks
        spec: FunctionSpec = {"kernel": fn.name}
        if allow_pickle and not fn.name.startswith("meshaios."):
            import cloudpickle

            spec["pickle"] = cloudpickle.dumps(fn, protocol=5)  # a user's kernel the node may not have imported
        return dumps(spec, allow_pickle=False)[0]
    ref = import_ref(fn)
    if ref is not None:
        by_ref: FunctionSpec = {"ref": ref}
        return dumps(by_ref, allow_pickle=False)[0]
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


def library_kernel(payload: Payload) -> bool:
    """Whether a function payload names one of meshaios's own kernels (``{"kernel": "meshaios...."}``, nothing
    pickled): code we wrote, which computes and returns -- it never waits on a file, a lock or the network. Only
    those may run inline on a node's event loop (``ExecCore``'s inline runs); a user's function that was fast eight
    times may block the ninth, and on the loop that would stop the whole node."""
    try:
        spec = loads(payload, allow_pickle=False)
    except Exception:
        return False
    if not isinstance(spec, dict) or "pickle" in spec:
        return False
    name = spec.get("kernel")
    return isinstance(name, str) and name.startswith("meshaios.")


class FunctionResolver:
    """Decodes function payloads on an executing node, with a cache: a map sends one function 10,000 times.

    What resolves is decided by the node's :class:`~meshaios.tasks.allowlist.Fence`: on an insecure node, or one with
    ``allowed_modules`` / ``allowed_functions``, only registered kernels, meshaios's own task functions and what the
    operator allowed; pickled functions never. The check reads the reference's text before anything is imported.
    """

    def __init__(
        self,
        *,
        allow_pickle: bool,
        allowed_modules: tuple[str, ...] = (),
        allowed_functions: tuple[str, ...] = (),
        cache_size: int = 1024,
        kernels: Any = None,
        fence: Fence | None = None,
    ) -> None:
        self.kernels = kernels  # a KernelRegistry; None: the built-ins and @kernel-decorated ones
        self.fence = fence or Fence.of(modules=allowed_modules, functions=allowed_functions, insecure=not allow_pickle)
        # a pickle is code that names no module we could check, so a fenced node refuses pickles entirely
        self.allow_pickle = allow_pickle and not self.fence.fenced
        self.allowed_modules = self.fence.modules
        if not allow_pickle:
            self._no_pickle = "this mesh is not authenticated"
        else:
            self._no_pickle = "this node runs only the functions its operator allowed (--allow-module/--allow-function)"
        self.cache_size = cache_size
        self._cache: dict[bytes, Callable[..., Any]] = {}

    def resolve(self, payload: Payload) -> Callable[..., Any]:
        fn = self._cache.get(payload.blob)
        if fn is not None:
            return fn
        raw = loads(payload, allow_pickle=False)
        if not isinstance(raw, dict):
            raise WireError("function spec is not a map")
        spec = cast(FunctionSpec, raw)  # each field's type is checked below before it is used
        if "kernel" in spec and isinstance(spec["kernel"], str):
            fn = self._kernel(spec)
        elif "ref" in spec and isinstance(spec["ref"], str):
            fn = self.resolve_ref(spec["ref"])
        elif "pickle" in spec and isinstance(spec["pickle"], bytes):
            if not self.allow_pickle:
                raise FunctionRefused("<pickled function>", self._no_pickle)
            import cloudpickle

            try:
                fn = cloudpickle.loads(spec["pickle"])
            except Exception as exc:
                raise WireError(f"cannot unpickle function: {type(exc).__name__}: {exc}") from exc
        else:
            raise WireError("function spec has neither a reference nor a pickle")
        if not callable(fn):
            raise WireError("function spec does not name a callable")
        if len(self._cache) >= self.cache_size:
            self._cache.pop(next(iter(self._cache)))
        self._cache[payload.blob] = fn
        return fn

    def _kernel(self, spec: FunctionSpec) -> Callable[..., Any]:
        from meshaios.devices.registry import default_registry

        registry = self.kernels if self.kernels is not None else default_registry()
        name = spec["kernel"]
        if name in registry:
            k: Callable[..., Any] = registry.get(name)
            return k
        if "pickle" in spec and isinstance(spec["pickle"], bytes) and not self.allow_pickle:
            why = f"not registered on this node, and its pickle is refused: {self._no_pickle}"
            raise FunctionRefused(f"<kernel {name}>", why)
        if "pickle" in spec and isinstance(spec["pickle"], bytes):
            import cloudpickle

            try:
                k = cloudpickle.loads(spec["pickle"])
            except Exception as exc:
                raise WireError(f"cannot unpickle kernel {name!r}: {type(exc).__name__}: {exc}") from exc
            return k
        raise WireError(f"unknown kernel {name!r} on this node")

    def resolve_ref(self, ref: str) -> Callable[..., Any]:
        """``module:qualname`` to the object, if the fence allows it: checked before the module is imported."""
        allowed = self.fence.check(ref)
        try:
            obj: Any = importlib.import_module(allowed.module)
            for part in allowed.parts:
                obj = getattr(obj, part)
                if isinstance(obj, types.ModuleType):
                    # ``json:codecs.sys...``: a qualified name never passes through a module
                    raise FunctionRefused(ref, f"it goes through module {obj.__name__!r}")
        except WireError:
            raise
        except Exception as exc:
            raise WireError(f"cannot import {ref!r}: {type(exc).__name__}: {exc}") from exc
        self.fence.check_found(allowed, _owner_module(obj))
        if not callable(obj):
            raise WireError(f"function reference {ref!r} does not name a callable")
        result: Callable[..., Any] = obj
        return result


# The resolver of the task running in this thread (or process): functions that take other functions as arguments
# by reference (a shuffle's mapper and reducer, an executor's chunked map) resolve them through the same fence.
_current: contextvars.ContextVar[FunctionResolver | None] = contextvars.ContextVar("meshaios_resolver", default=None)


class running_under:
    """While a task runs: :func:`resolve_argument` uses ``resolver``. A class rather than a generator under
    ``contextlib.contextmanager``: 0.5 against 2.2 µs, once per task run."""

    __slots__ = ("_resolver", "_token")

    def __init__(self, resolver: FunctionResolver) -> None:
        self._resolver = resolver

    def __enter__(self) -> None:
        self._token = _current.set(self._resolver)

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._token)


def resolve_argument(fn: Any) -> Callable[..., Any]:
    """A function passed to a task as an argument: a reference is resolved through the fence of the node running
    the task; outside a task, through a fence that allows only what meshaios exposes (never no fence at all)."""
    if isinstance(fn, str):
        resolver = _current.get() or FunctionResolver(allow_pickle=False)
        return resolver.resolve_ref(fn)
    if not callable(fn):
        raise TypeError(f"{fn!r} is not callable")
    return fn  # type: ignore[no-any-return]
