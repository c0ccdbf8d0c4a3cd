"""The README's first screen, as a new user runs it: each command in a fresh copy of the repository and a fresh
virtual environment, then ``meshaios`` from that environment (issue 20: "a test runs the README's commands in a
fresh venv and then calls ``meshaios --version``").

Slow (a fresh venv installs numpy, scipy, river and the rest from the package index: one to three minutes) and
needs the index: ``pytest -m slow tests/ux/test_readme_commands.py``."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from meshaios import __version__

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    """The bash blocks of the README's first screen (before the first horizontal rule), in order."""
    first_screen = (ROOT / "README.md").read_text().split("\n---\n", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", first_screen, re.S)]


def fresh_copy(dest: Path) -> Path:
    """What a clone holds: the files git tracks (and new ones it does not ignore), nothing built."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.split(b"\0")  # fmt: skip
    for name in filter(None, files):
        src = ROOT / name.decode()
        if src.is_file():
            (dest / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name.decode())
    return dest


def test_the_readme_has_two_commands_on_its_first_screen() -> None:
    run, tests = readme_commands()
    assert "examples/demo.py" in run
    assert "pytest" in tests


def test_the_main_command_runs_in_a_fresh_venv_and_leaves_meshaios_on_its_path(tmp_path: Path) -> None:
    repo = fresh_copy(tmp_path / "meshaios")
    run = readme_commands()[0]
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not p.startswith(sys.prefix))
    # the README's command, then what its next sentence promises: ``meshaios`` on the PATH of that shell
    script = f"set -e\n{run}\nmeshaios --version\n"
    proc = subprocess.run(["bash", "-c", script], cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "matches the local computation" in proc.stdout  # the demo checks its result
    assert proc.stdout.strip().splitlines()[-1].endswith(__version__)
    # and from a new shell, as the README says: ``.venv/bin/meshaios``
    out = subprocess.run([str(repo / ".venv/bin/meshaios"), "--version"], capture_output=True, text=True, env=env,
                         timeout=60, check=True).stdout  # fmt: skip
    assert __version__ in out
