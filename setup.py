"""Builds meshaios with the pure cores of the node's per-task path compiled by mypyc (meshaios/native.py's MODULES).

Only with MESHAIOS_COMPILE=1 (the default build is pure Python: the compiled cores took 0-7 of the node loop's ~195
CPU-us per tiny task, within run-to-run noise, for a minute of compiling per install; docs/performance.md section
31). Optional speedups: where mypyc cannot be imported, or generating or compiling the C fails (no C compiler, a
mypyc that refuses the code), the install goes on and meshaios runs as Python, with a warning. MESHAIOS_NO_COMPILE=1
skips the compile even then. Everything else about the package is in pyproject.toml.
"""

from __future__ import annotations

import ast
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


def _native_constants() -> dict[str, Any]:
    """MODULES and BUILD_FILE from meshaios/native.py, read without importing meshaios (its dependencies are not
    installed while it builds)."""
    tree = ast.parse((ROOT / "meshaios" / "native.py").read_text(encoding="utf-8"))
    out: dict[str, Any] = {}
    for node in tree.body:
        if not isinstance(node, ast.Assign):
            continue
        target = node.targets[0]
        if isinstance(target, ast.Name) and target.id in ("MODULES", "BUILD_FILE"):
            out[target.id] = ast.literal_eval(node.value)
    return out


NATIVE = _native_constants()
MODULES: list[str] = list(NATIVE["MODULES"])


def _warn(msg: str) -> None:
    warnings.warn(f"meshaios: {msg}; meshaios will run as pure Python", stacklevel=2)
    sys.stderr.write(f"WARNING meshaios: {msg}; meshaios will run as pure Python\n")  # (pip shows it on failure)


def _remove_in_tree() -> None:
    """A pure build: the extensions an earlier compiled editable install left beside the sources (they would keep
    running while their sources are unchanged) go."""
    for m in MODULES:
        stem = ROOT / m.removesuffix(".py")
        for p in [*stem.parent.glob(stem.name + ".*.so"), *stem.parent.glob(stem.name + ".*.pyd")]:
            p.unlink()
    for p in [*ROOT.glob("meshaios/_native__mypyc*"), ROOT / "meshaios" / NATIVE["BUILD_FILE"]]:
        p.unlink(missing_ok=True)


def _ext_modules() -> list[Any]:
    wanted = os.environ.get("MESHAIOS_COMPILE", "") not in ("", "0")
    if not wanted or os.environ.get("MESHAIOS_NO_COMPILE", "") not in ("", "0"):
        _remove_in_tree()
        return []
    try:
        from mypyc.build import mypycify
    except ImportError as e:
        _warn(f"mypyc is not available ({e})")
        return []
    # mypyc type-checks the modules it compiles against their imports' sources; following those (all of meshaios,
    # numpy, ...) takes minutes, so the modules it does not compile are seen as Any (as in docs/performance.md
    # section 28's measurement), and the strict checks that only matter to `mypy` itself are off here.
    args = ["--follow-imports=skip", "--no-warn-return-any", "--no-warn-redundant-casts", "--no-warn-unused-ignores"]
    # group_name: the modules' shared library is meshaios/_native__mypyc.*.so, inside the package (a top-level
    # module would make an editable install put the repository's root on sys.path)
    try:  # (setuptools runs this with the repository's root as the working directory)
        return list(mypycify(args + MODULES, opt_level="3", group_name="meshaios._native", target_dir="build/mypyc"))
    except (Exception, SystemExit) as e:  # mypy reports errors by SystemExit
        _warn(f"mypyc could not generate the C code ({type(e).__name__}: {e})")
        return []


class OptionalBuildExt(build_ext):
    """build_ext that leaves meshaios pure Python (no extension of it installed) where compiling fails."""

    def run(self) -> None:
        if self.inplace or getattr(self, "editable_mode", False):
            self._remove_others()
        try:
            super().run()
        except Exception as e:  # CCompilerError, DistutilsExecError, DistutilsPlatformError, OSError, ...
            self._remove_outputs()
            _warn(f"compiling the C extensions failed ({type(e).__name__}: {e})")
            return
        if self.extensions:
            self._write_build_file()

    def _outputs(self) -> list[Path]:
        out = []
        for ext in self.extensions:
            built = Path(self.get_ext_fullpath(ext.name))
            out.append(built)
            if self.inplace or getattr(self, "editable_mode", False):
                out.append(ROOT / self.get_ext_filename(ext.name))
        return out

    def _remove_others(self) -> None:
        """Extensions in the source tree of modules no longer compiled (an editable install built before with
        another MODULES) would be imported before their sources."""
        keep = set(self._outputs())
        for p in [*ROOT.glob("meshaios/**/*.so"), *ROOT.glob("meshaios/**/*.pyd"), *ROOT.glob("meshaios__mypyc*")]:
            if p not in keep:
                p.unlink()

    def _remove_outputs(self) -> None:
        """A half-built set (the modules' stubs without their shared library) must not be imported."""
        for p in self._outputs():
            p.unlink(missing_ok=True)

    def _write_build_file(self) -> None:
        """meshaios/native.py's BUILD_FILE: each compiled module's source hash, for the check of stale builds."""
        from hashlib import sha256

        record = {
            m.removesuffix(".py").replace("/", "."): sha256((ROOT / m).read_bytes()).hexdigest() for m in MODULES
        }
        dirs = {Path(self.build_lib) / "meshaios"}
        if self.inplace or getattr(self, "editable_mode", False):
            dirs.add(ROOT / "meshaios")
        for d in dirs:
            d.mkdir(parents=True, exist_ok=True)
            (d / NATIVE["BUILD_FILE"]).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")


setup(ext_modules=_ext_modules(), cmdclass={"build_ext": OptionalBuildExt})
