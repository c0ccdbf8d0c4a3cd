"""How a function travels: by import reference when it has one, pickled (cloudpickle) otherwise.

A reference (``{"ref": "module:qualname"}``) is safe to accept from anyone allowed to submit, costs a few bytes,
and is how an insecure mesh runs work at all. A pickle is code; it is sent and accepted only on an authenticated
mesh, where every sender holds the token.
"""

from __future__ import annotations

import importlib
import types
from collections.abc import Callable
from typing import Any

from meshaios.errors import SerializationError, WireError
from meshaios.wire.payload import Payload
from meshaios.wire.values import dumps, loads

# On an insecure mesh a function reference is all that stands between a peer and arbitrary code, so the
# primitives that turn data into code (eval, unpickling, spawning processes, exec'ing a string as a "benchmark" or a
# "profile") or that end the node are refused there even when importable, and so is every private name.
# A deny-list cannot be complete -- ordinary library functions still read and write files -- so an insecure node
# is for one user on one host; ``allowed_modules`` is the real fence (docs/security.md).
_CODE_MODULES = frozenset(
    {"pickle", "_pickle", "cloudpickle", "dill", "marshal", "shelve", "copyreg", "runpy", "code", "codeop", "pdb",
     "ctypes", "_ctypes", "subprocess", "_posixsubprocess", "pty", "importlib", "multiprocessing", "concurrent",
     # found by trying (tests/security/test_pickle_policy.py): each runs a string or a shell command
     "timeit", "cProfile", "profile", "trace", "doctest", "pydoc", "distutils", "imp", "zipimport", "pkgutil",
     "sysconfig", "webbrowser", "ensurepip", "venv", "bdb", "idlelib", "tkinter", "turtle",
     # ...or stop the node, or reach into the interpreter
     "signal", "_signal", "_thread", "threading", "sys", "gc", "atexit", "faulthandler", "resource", "shutil",
     "asyncio", "linecache", "glob", "fileinput", "tempfile",
     # ...or reach other machines from this one
     "socket", "_socket", "ssl", "urllib", "http", "ftplib", "smtplib", "poplib", "imaplib", "nntplib", "telnetlib",
     "xmlrpc", "socketserver"}
)  # fmt: skip
_CODE_SUBMODULES = frozenset({"logging.config", "unittest.mock"})
_OPENERS = frozenset({("io", "open"), ("_io", "open"), ("codecs", "open"), ("tokenize", "open")})
_CODE_BUILTINS = frozenset(
    {"eval", "exec", "compile", "__import__", "open", "breakpoint", "input", "help", "exit", "quit",
     "getattr", "setattr", "delattr", "globals", "locals", "vars"}
)  # fmt: skip
_OS_MODULES = frozenset({"os", "posix", "nt"})
# the few os functions that only read harmless facts; everything else in os changes or leaks the machine's state
_OS_READ_ONLY = frozenset(
    {"getpid", "getppid", "cpu_count", "getloadavg", "uname", "urandom", "sched_getaffinity", "strerror", "times"}
)
# numpy's file I/O: writes anywhere, or reads any file back as an array
_NUMPY_FILE_IO = frozenset(
    {"save", "savez", "savez_compressed", "savetxt", "load", "loadtxt", "genfromtxt", "fromfile", "memmap",
     "fromregex", "recfromtxt", "recfromcsv", "tofile", "DataSource"}
)  # fmt: skip


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
        spec: dict[str, Any] = {"kernel": fn.name}
        if allow_pickle and not fn.name.startswith("meshaios."):
            import cloudpickle

            spec["pickle"] = cloudpickle.dumps(fn, protocol=5)  # a user's kernel the node may not have imported
        return dumps(spec, allow_pickle=False)[0]
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

    def __init__(
        self,
        *,
        allow_pickle: bool,
        allowed_modules: tuple[str, ...] = (),
        cache_size: int = 1024,
        kernels: Any = None,
    ) -> None:
        self.kernels = kernels  # a KernelRegistry; None: the built-ins and @kernel-decorated ones
        # a pickle is code that names no module we could check, so a module allow-list rules pickles out entirely
        self.allow_pickle = allow_pickle and not allowed_modules
        self.allowed_modules = allowed_modules
        self.code_checks = not allow_pickle  # the insecure-mesh deny-list (a token mesh trusts its token holders)
        if not allow_pickle:
            self._no_pickle = "this mesh is not authenticated"
        else:
            self._no_pickle = f"this node runs only functions from {', '.join(allowed_modules)} (allowed_modules)"
        self.cache_size = cache_size
        self._cache: dict[bytes, Callable[..., Any]] = {}

    def resolve(self, payload: Payload) -> Callable[..., Any]:
        fn = self._cache.get(payload.blob)
        if fn is not None:
            return fn
        spec = loads(payload, allow_pickle=False)
        if not isinstance(spec, dict):
            raise WireError("function spec is not a map")
        if "kernel" in spec and isinstance(spec["kernel"], str):
            fn = self._kernel(spec)
        elif "ref" in spec and isinstance(spec["ref"], str):
            fn = self._import(spec["ref"])
        elif "pickle" in spec and isinstance(spec["pickle"], bytes):
            if not self.allow_pickle:
                raise WireError(f"pickled function refused: {self._no_pickle}")
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

    def _kernel(self, spec: dict[str, Any]) -> Callable[..., Any]:
        from meshaios.devices.registry import default_registry

        registry = self.kernels if self.kernels is not None else default_registry()
        name = spec["kernel"]
        if name in registry:
            k: Callable[..., Any] = registry.get(name)
            return k
        if "pickle" in spec and isinstance(spec["pickle"], bytes) and not self.allow_pickle:
            raise WireError(f"unknown kernel {name!r} on this node, and its pickle is refused: {self._no_pickle}")
        if "pickle" in spec and isinstance(spec["pickle"], bytes):
            import cloudpickle

            try:
                k = cloudpickle.loads(spec["pickle"])
            except Exception as exc:
                raise WireError(f"cannot unpickle kernel {name!r}: {type(exc).__name__}: {exc}") from exc
            return k
        raise WireError(f"unknown kernel {name!r} on this node")

    def _import(self, ref: str) -> Callable[..., Any]:
        mod, _, qual = ref.partition(":")
        if not mod or not qual:
            raise WireError(f"bad function reference {ref!r}")
        parts = qual.split(".")
        if any(not p or p.startswith("__") for p in parts):
            # no dunders: ``f.__globals__``, ``C.__subclasses__``... lead from an allowed object to anything
            raise WireError(f"bad function reference {ref!r}")
        self._check_module(mod, ref)
        if self.code_checks:
            _refuse_code_primitive(mod, parts, ref)
        try:
            obj: Any = importlib.import_module(mod)
            for part in parts:
                obj = getattr(obj, part)
                if isinstance(obj, types.ModuleType):
                    # ``json:codecs.sys...``: a qualified name never passes through a module; this would get
                    # around ``allowed_modules``
                    raise WireError(f"function reference {ref!r} goes through module {obj.__name__!r}")
        except WireError:
            raise
        except Exception as exc:
            raise WireError(f"cannot import {ref!r}: {type(exc).__name__}: {exc}") from exc
        real = _owner_module(obj)
        if self.code_checks and real is not None and real != mod:
            _refuse_code_primitive(real, parts, ref)  # re-exported: ``os:system`` is ``posix.system``
        result: Callable[..., Any] = obj
        return result

    def _check_module(self, mod: str, ref: str) -> None:
        if self.allowed_modules and not any(mod == m or mod.startswith(m + ".") for m in self.allowed_modules):
            raise WireError(f"module {mod!r} is not allowed on this node (function {ref!r})")


def _refuse_code_primitive(mod: str, parts: list[str], ref: str) -> None:
    """A private *module* is no sign of danger (``operator.add`` lives in ``_operator``); a private *name* is."""
    top = mod.partition(".")[0]
    name = parts[-1]
    if (
        top in _CODE_MODULES
        or any(mod == m or mod.startswith(m + ".") for m in _CODE_SUBMODULES)
        or any(p.startswith("_") for p in parts)  # private helpers: uuid._get_command_stdout
        or (mod, name) in _OPENERS
        or (mod == "builtins" and name in _CODE_BUILTINS)
        or (top in _OS_MODULES and not (len(parts) == 1 and name in _OS_READ_ONLY))
        or (top == "numpy" and name in _NUMPY_FILE_IO)
    ):
        raise WireError(f"{ref!r} runs arbitrary code or touches the machine, and this mesh is insecure: refused")
