"""Every import reference an attacker could name from the installed environment: run as a script, in a process of
its own (importing every module runs its code; the test process and the node under test must not do it).

``python -m tests.security.envwalk OUT.json [PER_MODULE PER_CLASS]``: every importable top-level module
(``pkgutil.iter_modules`` and the built-in ones), its public attributes that are callable (``mod:name``), one
level of public attributes of its classes (``mod:Class.attr``) and of its public submodule attributes
(``mod:sub.name``, which must not resolve either), bounded per module so that the whole walk stays a few seconds.
Modules whose import has effects on the machine (a browser, a window, a printout) are skipped; their names still
go in as ``mod:main``.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import pkgutil
import sys
import types

SIDE_EFFECTS = frozenset({"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "tests", "__main__",
                          "__hello__", "__phello__", "_pyrepl", "pytest", "_pytest"})  # fmt: skip
PER_MODULE = 120  # attributes of one module
PER_CLASS = 12  # attributes of one class
BUDGET = 30_000  # references in all


def _public(obj: object) -> list[str]:
    try:
        names = dir(obj)
    except Exception:
        return []
    return [n for n in sorted(names) if not n.startswith("_")]


def walk(per_module: int = PER_MODULE, per_class: int = PER_CLASS) -> tuple[list[str], list[str]]:
    """(references, the top-level module names walked)."""
    names = sorted({m.name for m in pkgutil.iter_modules()} | set(sys.builtin_module_names))
    refs: list[str] = []
    for name in names:
        if len(refs) >= BUDGET:
            break
        refs.append(f"{name}:main")
        if name in SIDE_EFFECTS:
            continue
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                mod = importlib.import_module(name)
        except BaseException:  # an unimportable module is simply not walked
            continue
        for attr in _public(mod)[:per_module]:
            try:
                obj = getattr(mod, attr)
            except Exception:
                continue
            if isinstance(obj, types.ModuleType):
                refs.append(f"{name}:{attr}.{next(iter(_public(obj)), 'x')}")  # through a module attribute
                continue
            if not callable(obj):
                continue
            refs.append(f"{name}:{attr}")
            if isinstance(obj, type):
                refs.extend(f"{name}:{attr}.{a}" for a in _public(obj)[:per_class])
    return refs[:BUDGET], names


if __name__ == "__main__":
    sizes = [int(a) for a in sys.argv[2:4]]  # optional: attributes per module, per class
    found, walked = walk(*sizes)
    with open(sys.argv[1], "w") as fh:
        json.dump({"refs": found, "modules": walked}, fh)
