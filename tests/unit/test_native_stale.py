"""The stale-extension check on this install's real build (meshaios/native.py): a copy of the installed package
runs compiled as built, and as Python once a compiled module's source is edited -- and says so in ``compiled()``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import meshaios
from meshaios import native

PKG = Path(meshaios.__file__).resolve().parent


def _built() -> bool:
    names = native._names()
    return all(native._has_extension(n) for n in names) and not native._stale(names)


pytestmark = pytest.mark.skipif(not _built(), reason="this install runs meshaios as Python (nothing compiled)")

PROBE = ("import meshaios, meshaios.tasks.owner as o, meshaios.tasks.execcore as e; "
         "print(meshaios.__file__.startswith({root!r}), meshaios.compiled(), o.__file__.endswith('.py'), "
         "e.__file__.endswith('.py'))")  # fmt: skip


def _probe(root: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != native.PURE_ENV} | {"PYTHONPATH": str(root)}
    return subprocess.run([sys.executable, "-c", PROBE.format(root=str(root))], env=env, cwd=root,
                          capture_output=True, text=True, check=True, timeout=60).stdout.strip()  # fmt: skip


@pytest.mark.parametrize("module", native.MODULES)
def test_an_edited_source_runs_every_compiled_module_as_python(tmp_path: Path, module: str) -> None:
    shutil.copytree(PKG, tmp_path / "meshaios", ignore=shutil.ignore_patterns("__pycache__"))
    names = native.module_names()
    assert _probe(tmp_path) == f"True {names} False False"  # the copy of the build runs compiled
    with open(tmp_path / module, "a", encoding="utf-8") as f:
        f.write("# edited after the build\n")  # a comment: the extension no longer matches its source
    assert _probe(tmp_path) == "True [] True True"
    (tmp_path / "meshaios" / native.BUILD_FILE).unlink()  # no record (a build that failed half way): Python too
    with open(tmp_path / module, "rb+") as f:
        f.truncate(os.path.getsize(tmp_path / module) - len("# edited after the build\n"))
    assert _probe(tmp_path) == "True [] True True"
