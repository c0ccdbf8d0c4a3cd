"""meshaios.native: which modules run compiled, MESHAIOS_PURE, and stale extensions never run (setup.py builds them)."""

from __future__ import annotations

import importlib.machinery
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import meshaios
from meshaios import native


def _in_child(code: str, **env: str) -> str:
    full = {k: v for k, v in os.environ.items() if k != native.PURE_ENV} | env
    return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True, check=True,
                          timeout=60).stdout.strip()


def test_the_switch_runs_every_compiled_module_as_python() -> None:
    code = ("import meshaios, meshaios.tasks.owner as o, meshaios.tasks.execcore as e; "
            "print(meshaios.compiled(), o.__file__.endswith('.py'), e.__file__.endswith('.py'))")
    assert _in_child(code, MESHAIOS_PURE="1") == "[] True True"


def test_an_install_runs_all_of_its_modules_compiled_or_none() -> None:
    """Compiled wherever this install built them (all, fresh), else none: never a mix."""
    names = native._names()
    built = all(native._has_extension(n) for n in names) and not native._stale(names)
    assert meshaios.compiled() == (names if built and os.environ.get(native.PURE_ENV, "") in ("", "0") else [])
    assert _in_child("import meshaios; print(meshaios.compiled())") == str(names if built else [])


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A package laid out as an install: meshaios/tasks/owner.py with an extension beside it."""
    pkg = tmp_path / "meshaios"
    (pkg / "tasks").mkdir(parents=True)
    (pkg / "tasks" / "owner.py").write_text("X = 1\n")
    (pkg / "tasks" / f"owner{importlib.machinery.EXTENSION_SUFFIXES[0]}").write_bytes(b"")
    monkeypatch.setattr(native, "_HERE", str(pkg))
    return pkg


def _record(pkg: Path, **hashes: str) -> None:
    (pkg / native.BUILD_FILE).write_text(json.dumps({k.replace("_", "."): v for k, v in hashes.items()}))


def test_an_extension_is_stale_unless_its_source_is_the_one_compiled(tree: Path) -> None:
    name = "meshaios.tasks.owner"
    assert native._stale([name]) == {name}  # no record of the build (one that failed half way)
    _record(tree, meshaios_tasks_owner=native.source_hash(str(tree / "tasks" / "owner.py")))
    assert native._stale([name]) == set()
    (tree / "tasks" / "owner.py").write_text("X = 2\n")  # edited since
    assert native._stale([name]) == {name}
    assert native._stale(["meshaios.tasks.execcore"]) == set()  # no extension: nothing to be stale


def test_the_finder_loads_the_source_of_the_modules_it_names_only(tree: Path) -> None:
    finder = native._SourceFinder({"meshaios.tasks.owner"})
    spec = finder.find_spec("meshaios.tasks.owner", None)
    assert spec is not None
    assert spec.origin == str(tree / "tasks" / "owner.py")
    assert finder.find_spec("meshaios.tasks.execcore", None) is None
