"""Which of meshaios's modules run compiled, and the switch to run them as Python.

An install built with ``MESHAIOS_COMPILE=1`` (opt-in; the default build is pure Python) compiles the pure cores of
the node's per-task path (``MODULES``) with mypyc into C extensions that sit beside their ``.py`` sources (setup.py;
docs/performance.md, section 31). Python imports an extension before a
source of the same name, so nothing else changes: the same classes and functions, run by compiled code.
Each build writes ``BUILD_FILE`` beside this module: the SHA-256 of each module's source as compiled.

``install()`` (run by ``meshaios/__init__.py`` before anything else imports these modules) puts a finder in front
of ``sys.meta_path`` that loads a module's ``.py`` source instead of its extension when

- ``MESHAIOS_PURE=1`` is set (every module of ``MODULES``: tests run the same code as Python), or
- any module's source is not the one that was compiled (edited, or another branch checked out, in an editable
  install; or no ``BUILD_FILE``: a build that failed half way): then every module of ``MODULES`` runs as Python,
  since the compiled ones call each other's compiled code directly. A stale extension is never run.

``compiled()`` says which modules run compiled in this process.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

# The modules setup.py compiles (paths relative to the repository's root, for mypyc).
MODULES = (
    "meshaios/tasks/owner.py",
    "meshaios/tasks/execcore.py",
    "meshaios/tasks/epochs.py",
    "meshaios/sched/inputs.py",
    "meshaios/sched/sampling.py",
    "meshaios/timeline.py",
)
PURE_ENV = "MESHAIOS_PURE"  # "1": run MODULES as Python even where compiled
BUILD_FILE = "native_build.json"  # {module name: sha256 of the source compiled}, written by setup.py

_HERE = os.path.dirname(os.path.abspath(__file__))


def module_names() -> list[str]:
    return [p.removesuffix(".py").replace("/", ".") for p in MODULES]


def source_hash(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _source_path(name: str) -> str:
    return os.path.join(os.path.dirname(_HERE), *name.split(".")) + ".py"


def _has_extension(name: str) -> bool:
    base = os.path.join(os.path.dirname(_HERE), *name.split("."))
    return any(os.path.exists(base + suffix) for suffix in importlib.machinery.EXTENSION_SUFFIXES)


class _SourceFinder(importlib.abc.MetaPathFinder):
    """A meta-path finder for the modules named: their ``.py`` source, never their compiled extension."""

    def __init__(self, names: set[str]) -> None:
        self.names = names

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
                  ) -> ModuleSpec | None:
        if fullname not in self.names:
            return None
        src = _source_path(fullname)
        if not os.path.exists(src):
            return None
        return importlib.util.spec_from_file_location(fullname, src)


def _record() -> dict[str, str]:
    """``BUILD_FILE``: what the last build compiled ({} where none did, or it failed half way)."""
    try:
        with open(os.path.join(_HERE, BUILD_FILE), encoding="utf-8") as f:
            built = json.load(f)
    except (OSError, ValueError):
        return {}
    return built if isinstance(built, dict) else {}


def _names() -> list[str]:
    """``MODULES``, and any module the last build compiled beyond them (an editable install built on another
    branch): those are checked and switched alike."""
    names = module_names()
    return names + [n for n in _record() if n not in names and os.path.exists(_source_path(n))]


def _stale(names: list[str]) -> set[str]:
    """The modules with an extension whose source is not the one compiled (or no record of what was)."""
    built = _record()
    out = set()
    for name in names:
        if not _has_extension(name):
            continue
        try:
            ok = built.get(name) == source_hash(_source_path(name))
        except OSError:  # no source beside it (an install without .py files): the extension is all there is
            ok = True
        if not ok:
            out.add(name)
    return out


def install() -> None:
    """Put the source finder in front where a module must run as Python (module docstring); else nothing."""
    names = _names()
    # all or none: the compiled modules call each other's compiled code directly, so one run as Python beside the
    # others compiled would still run its stale compiled code through them (and their classes would not match)
    pure = os.environ.get(PURE_ENV, "") not in ("", "0") or _stale(names)
    if pure and not any(isinstance(f, _SourceFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceFinder(set(names)))


def compiled() -> list[str]:
    """The modules of meshaios that run compiled in this process (imports them)."""
    out = []
    for name in _names():
        mod = importlib.import_module(name)
        if isinstance(getattr(mod, "__loader__", None), importlib.machinery.ExtensionFileLoader):
            out.append(name)
    return out
