"""What ``import meshaios`` costs a client: the learned runtime model (river, and scipy under it: ~2.5 s to import)
loads in nodes only. An owner module that imported it for a type annotation once put it on every client's path --
and numpy.testing with it, which the fence test (test_allowlist.py) then found imported before any check."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_client_does_not_import_the_learned_model() -> None:
    code = (
        "import sys\n"
        "import meshaios\n"
        "from meshaios import Client, AsyncClient, LocalMesh\n"
        "print(sorted(m for m in ('river', 'scipy', 'numpy.testing', 'meshaios.sched.model') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout
