"""A node started by LocalMesh runs its owner and executor core compiled or as Python as its environment says
(``MESHAIOS_PURE``, meshaios/native.py), whether it was forked from the suite's zygote or started as a process."""

from __future__ import annotations

import pytest

from meshaios import native
from meshaios.testing.localmesh import LocalMesh

pytestmark = pytest.mark.system


def _built() -> bool:
    names = native._names()
    return all(native._has_extension(n) for n in names) and not native._stale(names)


@pytest.mark.skipif(not _built(), reason="this install runs meshaios as Python (nothing compiled)")
@pytest.mark.parametrize("fork", [True])
@pytest.mark.parametrize("pure", ["1", "0"])
def test_a_node_forked_from_the_zygote_runs_compiled_or_pure_as_its_environment_says(pure: str, fork: bool) -> None:
    """A test (or a CI step) that gives a mesh ``MESHAIOS_PURE=1`` must get nodes running the Python source, and
    one that gives ``0`` the compiled modules: otherwise a pure run of a system test silently tests compiled code."""
    want = [] if pure == "1" else native.module_names()
    with LocalMesh(1, discovery=False, fork=fork, env={native.PURE_ENV: pure}) as mesh, mesh.client() as c:
        assert c.submit(native.compiled).result(30) == want  # run on the node's thread: the node's own modules
