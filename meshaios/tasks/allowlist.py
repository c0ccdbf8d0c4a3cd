"""The fence: which function references a node agrees to resolve. An allow-list, decided on the reference's text
before anything is imported.

A node is *fenced* when it is insecure (no token: anyone who reaches the port may submit) or when its operator
named modules or functions to allow (``--allow-module``, ``--allow-function``), with or without a token. A fenced
node runs only:

1. kernels registered by name (``{"kernel": name}``: the node's own registry; a pickled kernel is refused);
2. the functions meshaios exposes on purpose as tasks (:data:`EXPOSED_FUNCTIONS`, and the top-level functions of
   :data:`EXPOSED_MODULES`);
3. functions the operator names exactly, ``module:qualname`` (``--allow-function``): the only way to allow a
   private name or a name reached through an attribute chain (``mod:Class.method``);
4. top-level public names of modules the operator names (``--allow-module``): ``numpy`` is the module ``numpy``
   itself and nothing below it; ``numpy.linalg`` is that submodule only; ``numpy.*`` is ``numpy`` and every
   submodule. Under a module allowance a qualname is *one* public name (``numpy:sum``, ``numpy:ndarray``), never a
   chain (``numpy:ndarray.dump`` is refused: a chain reaches methods, class attributes and other modules), and the
   object found must live in an allowed module or in the named module's own package (``mymod:system``, where
   ``mymod`` did ``from os import system``, is refused).

Everything else is refused with :class:`FunctionRefused` naming the reference and the rule, before its module is
imported: importing a module runs its code. A token node with neither option set is not fenced: it trusts its
token holders, who may send pickled code anyway.

On top of the allow-list, a module allowance keeps refusing the primitives known to run strings, spawn processes,
touch files or stop the node (the deny-list below): allowing ``numpy`` for its arithmetic does not allow
``numpy:save``. Name such a function with ``--allow-function`` to run it anyway. The deny-list is defence in
depth, never the fence: the fence is the allow-list above.

>>> fence = Fence.of(modules=("math", "numpy.*"), functions=("json:JSONEncoder.encode",))
>>> fence.check("math:sqrt").rule
'module'
>>> fence.check("json:JSONEncoder.encode").rule
'function'
>>> fence.check("json:dumps")
Traceback (most recent call last):
...
meshaios.errors.FunctionRefused: function 'json:dumps' refused: module 'json' is not allowed on this node
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from meshaios.errors import ConfigError, FunctionRefused

if TYPE_CHECKING:
    from meshaios.wire.messages import FenceInfo

# Task functions meshaios itself submits by reference; each is harmless whatever its arguments (they resolve any
# function they are given through this same fence). Kept as text: checking them imports nothing.
EXPOSED_MODULES: tuple[str, ...] = ("meshaios.shuffle.ops",)
EXPOSED_FUNCTIONS: frozenset[str] = frozenset(
    {
        "meshaios.compat.executor:run_chunk",
        "meshaios.compat.dask:run_node",
        "meshaios.compat.dask:run_legacy",
    }
)
MAX_REF_CHARS = 512

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_MODULE_RE = re.compile(rf"{_NAME}(?:\.{_NAME})*")
_QUAL_RE = _MODULE_RE
_MODULE_RULE_RE = re.compile(rf"{_NAME}(?:\.{_NAME})*(?:\.\*)?")

Rule = Literal["function", "module", "meshaios"]

# Defence in depth under a *module* allowance (see the module docstring): names that run strings or shell commands,
# stop the node, reach into the interpreter, open files or sockets. Found by trying (tests/security).
_CODE_MODULES = frozenset(
    {"pickle", "_pickle", "cloudpickle", "dill", "marshal", "shelve", "copyreg", "runpy", "code", "codeop", "pdb",
     "ctypes", "_ctypes", "subprocess", "_posixsubprocess", "pty", "importlib", "multiprocessing", "concurrent",
     "timeit", "cProfile", "profile", "trace", "doctest", "pydoc", "distutils", "imp", "zipimport", "pkgutil",
     "sysconfig", "webbrowser", "ensurepip", "venv", "bdb", "idlelib", "tkinter", "turtle",
     "signal", "_signal", "_thread", "threading", "sys", "gc", "atexit", "faulthandler", "resource", "shutil",
     "asyncio", "linecache", "glob", "fileinput", "tempfile", "os", "posix", "nt",
     "socket", "_socket", "ssl", "urllib", "http", "ftplib", "smtplib", "poplib", "imaplib", "nntplib", "telnetlib",
     "xmlrpc", "socketserver", "sqlite3", "_sqlite3", "tarfile", "zipfile", "mmap", "setuptools", "pip"}
)  # fmt: skip
_CODE_BUILTINS = frozenset(
    {"eval", "exec", "compile", "__import__", "open", "breakpoint", "input", "help", "exit", "quit",
     "getattr", "setattr", "delattr", "globals", "locals", "vars"}
)  # fmt: skip
_FILE_NAMES = frozenset(
    {"save", "savez", "savez_compressed", "savetxt", "load", "loadtxt", "genfromtxt", "fromfile", "memmap",
     "fromregex", "recfromtxt", "recfromcsv", "tofile", "DataSource", "open_memmap", "dump", "dumps_to", "open",
     "runstring", "system", "popen", "spawn", "call_subprocess", "edit", "unsafe_load", "import_required",
     "FileHandler", "RotatingFileHandler", "TimedRotatingFileHandler", "WatchedFileHandler"}
)  # fmt: skip


@dataclass(frozen=True)
class Allowed:
    """A reference the fence lets through, split for import: ``module`` and the attribute ``parts``."""

    ref: str
    module: str
    parts: tuple[str, ...]
    rule: Rule


def parse_ref(ref: str) -> tuple[str, tuple[str, ...]]:
    """``module:qualname`` split, or :class:`FunctionRefused` for anything that is not one, by syntax alone."""
    if len(ref) > MAX_REF_CHARS:
        raise FunctionRefused(ref[:80] + "...", f"longer than {MAX_REF_CHARS} characters")
    mod, sep, qual = ref.partition(":")
    if not sep or not _MODULE_RE.fullmatch(mod) or not _QUAL_RE.fullmatch(qual):
        raise FunctionRefused(ref, "not a reference of the form module:qualname")
    parts = tuple(qual.split("."))
    if any(p.startswith("__") for p in parts):
        # ``f.__globals__``, ``C.__subclasses__``, ``__builtins__``... lead from any object to anything
        raise FunctionRefused(ref, "dunder names are never resolved")
    return mod, parts


def _module_matches(mod: str, rules: tuple[str, ...]) -> bool:
    for rule in rules:
        if rule.endswith(".*"):
            base = rule[:-2]
            if mod == base or mod.startswith(base + "."):
                return True
        elif mod == rule:
            return True
    return False


@dataclass(frozen=True)
class Fence:
    """The allow-list of one node. ``fenced=False`` (a token node with no allow-list): everything resolves."""

    fenced: bool = True
    modules: tuple[str, ...] = ()
    functions: frozenset[str] = frozenset()

    @classmethod
    def of(cls, *, modules: tuple[str, ...] = (), functions: tuple[str, ...] = (), insecure: bool = True) -> Fence:
        """Checked settings: a malformed module or function name is a :class:`ConfigError` at start-up, not a
        fence that silently allows nothing (or, worse, something else)."""
        for m in modules:
            if not _MODULE_RULE_RE.fullmatch(m):
                raise ConfigError(f"--allow-module {m!r}: want a module name (a.b), or a.b.* for it and its submodules")
        for f in functions:
            try:
                parse_ref(f)
            except FunctionRefused:
                raise ConfigError(f"--allow-function {f!r}: want module:qualname, e.g. mypkg.tasks:train") from None
        return cls(fenced=insecure or bool(modules) or bool(functions), modules=tuple(modules),
                   functions=frozenset(functions))  # fmt: skip

    def check(self, ref: str) -> Allowed:
        """Which rule lets ``ref`` through, or :class:`FunctionRefused`. Pure: imports nothing."""
        mod, parts = parse_ref(ref)
        if not self.fenced:
            return Allowed(ref, mod, parts, "module")
        if ref in self.functions:
            return Allowed(ref, mod, parts, "function")
        if ref in EXPOSED_FUNCTIONS:
            return Allowed(ref, mod, parts, "meshaios")
        exposed = _module_matches(mod, EXPOSED_MODULES)
        if not exposed and not _module_matches(mod, self.modules):
            raise FunctionRefused(ref, f"module {mod!r} is not allowed on this node{self._hint()}")
        if len(parts) != 1:
            raise FunctionRefused(
                ref, "a module allowance covers its top-level names only; name an attribute chain with --allow-function"
            )
        if parts[0].startswith("_"):
            raise FunctionRefused(ref, "private names run only when named with --allow-function")
        if exposed:
            return Allowed(ref, mod, parts, "meshaios")
        _refuse_known_primitive(mod, parts[0], ref)
        return Allowed(ref, mod, parts, "module")

    def check_found(self, allowed: Allowed, real_module: str | None) -> None:
        """After import: the object a module allowance found must live in an allowed module, or in the named
        module's own package (``numpy:sum`` is defined in ``numpy``'s package), not re-exported from elsewhere."""
        if not self.fenced or allowed.rule != "module" or real_module is None or real_module == allowed.module:
            return
        top = allowed.module.partition(".")[0]
        real_top = real_module.partition(".")[0]
        if real_top == top or real_top == "_" + top or _module_matches(real_module, self.modules):
            _refuse_known_primitive(real_module, allowed.parts[-1], allowed.ref)
            return
        name = f"{real_module}.{allowed.parts[-1]}"
        raise FunctionRefused(allowed.ref, f"it is {name}, re-exported, and module {real_module!r} is not allowed")

    def _hint(self) -> str:
        if not self.modules and not self.functions:
            return " (it runs registered kernels only: start it with --allow-module or --allow-function)"
        return ""

    def describe(self) -> FenceInfo:
        """For status pages: what this node runs."""
        return {"fenced": self.fenced, "modules": list(self.modules), "functions": sorted(self.functions)}


def _refuse_known_primitive(mod: str, name: str, ref: str) -> None:
    top = mod.partition(".")[0]
    if (
        top in _CODE_MODULES
        or mod in ("logging.config", "unittest.mock")
        or (mod == "builtins" and name in _CODE_BUILTINS)
        or name in _FILE_NAMES
    ):
        raise FunctionRefused(
            ref, "it is a known way to run code or touch files; name it with --allow-function to run it anyway"
        )
