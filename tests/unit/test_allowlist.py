"""The fence (``tasks/allowlist.py``): which references a fenced node resolves, decided before any import."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from meshaios.errors import ConfigError, FunctionRefused, WireError
from meshaios.shuffle import ops
from meshaios.tasks.allowlist import EXPOSED_FUNCTIONS, Fence
from meshaios.tasks.functions import FunctionResolver, resolve_argument, running_under

FIXTURE = "tests.unit.fence_fixture"

# every one of these ran a shell command, wrote a file or imported a module on an insecure node (issue 14)
REGRESSIONS = [
    "numpy.testing:runstring",
    "yaml:unsafe_load",
    "setuptools._distutils.spawn:spawn",
    "pip._internal.utils.subprocess:call_subprocess",
    "click:edit",
    "numpy:ndarray.dump",
    "numpy.lib.format:open_memmap",
    "logging:FileHandler",
    "sqlite3:connect",
    "tarfile:open",
    "dask.utils:import_required",
]


def insecure(modules: tuple[str, ...] = (), functions: tuple[str, ...] = ()) -> FunctionResolver:
    return FunctionResolver(allow_pickle=False, allowed_modules=modules, allowed_functions=functions)


@pytest.mark.parametrize("ref", REGRESSIONS)
@pytest.mark.parametrize(
    "modules", [(), ("numpy",), ("numpy.*",), ("numpy", "logging", "sqlite3", "tarfile", "yaml", "click")]
)
def test_regression_references_are_refused(ref: str, modules: tuple[str, ...]) -> None:
    with pytest.raises(FunctionRefused) as info:
        insecure(modules).resolve_ref(ref)
    assert info.value.ref == ref
    assert ref in str(info.value)


def test_nothing_is_imported_before_the_check() -> None:
    """In a fresh interpreter: a refused reference leaves its module unimported."""
    refs = ["wave:open", "yaml:unsafe_load", "tarfile:open", "sqlite3:connect", "click:edit", "numpy.testing:runstring"]
    code = (
        "import sys\n"
        "from meshaios.tasks.functions import FunctionResolver\n"
        "from meshaios.errors import FunctionRefused\n"
        "r = FunctionResolver(allow_pickle=False)\n"
        f"for ref in {refs!r}:\n"
        "    try:\n"
        "        r.resolve_ref(ref)\n"
        "    except FunctionRefused:\n"
        "        pass\n"
        "    else:\n"
        "        raise SystemExit('resolved ' + ref)\n"
        "print(sorted(set(sys.modules) & {'wave', 'yaml', 'tarfile', 'sqlite3', 'click', 'numpy.testing'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout


def test_insecure_default_runs_only_what_meshaios_exposes() -> None:
    r = insecure()
    assert r.resolve_ref("meshaios.shuffle.ops:map_partition") is ops.map_partition
    for ref in sorted(EXPOSED_FUNCTIONS):
        assert callable(r.resolve_ref(ref))
    for ref in ("math:sqrt", "builtins:len", "meshaios.security:write_token", "meshaios.shuffle.ops:_resolve",
                "meshaios.shuffle.ops:np.save", "meshaios.testing.localmesh:LocalMesh"):  # fmt: skip
        with pytest.raises(FunctionRefused):
            r.resolve_ref(ref)


def test_a_module_allowance_is_exact() -> None:
    r = insecure(("numpy",))
    import numpy as np

    assert r.resolve_ref("numpy:sum") is np.sum
    assert r.resolve_ref("numpy:ndarray") is np.ndarray
    for ref in ("numpy.linalg:norm", "numpy:ndarray.dump", "numpy:linalg.norm", "numpy:save", "numpy:fromfile",
                "numpy:_NoValue", "numpyx:sum", "numpy:testing"):  # fmt: skip
        with pytest.raises(FunctionRefused):
            r.resolve_ref(ref)
    assert insecure(("numpy.linalg",)).resolve_ref("numpy.linalg:norm") is np.linalg.norm
    assert insecure(("numpy.*",)).resolve_ref("numpy.linalg:norm") is np.linalg.norm
    with pytest.raises(FunctionRefused):
        insecure(("numpy.linalg",)).resolve_ref("numpy:sum")  # a submodule does not allow its parent


def test_functions_named_exactly_may_be_chains_or_private() -> None:
    import numpy as np

    r = insecure(functions=("numpy:ndarray.sum", "json:_default_decoder.decode"))
    assert r.resolve_ref("numpy:ndarray.sum") is np.ndarray.sum
    assert r.resolve_ref("json:_default_decoder.decode")("[1]") == [1]
    for ref in ("numpy:ndarray.dump", "numpy:sum", "json:dumps"):
        with pytest.raises(FunctionRefused):
            r.resolve_ref(ref)


def test_a_reexport_from_a_module_not_allowed_is_refused() -> None:
    r = insecure((FIXTURE,))
    assert r.resolve_ref(f"{FIXTURE}:mine")(1) == 2
    for name in ("getcwd", "join"):
        with pytest.raises(FunctionRefused, match="re-exported"):
            r.resolve_ref(f"{FIXTURE}:{name}")


def test_c_accelerated_twins_count_as_the_module() -> None:
    import operator

    assert insecure(("operator",)).resolve_ref("operator:add") is operator.add  # operator.add is _operator.add


@pytest.mark.parametrize(
    "ref",
    ["nocolon", "a:", ":b", "a b:c", "a:b:c", "a:b..c", "a.:b", "a:__class__", "builtins:__import__",
     "math:sqrt.__globals__", "x" * 600 + ":f", "math:sqrt\n"],
)  # fmt: skip
def test_malformed_references_are_refused_by_syntax(ref: str) -> None:
    with pytest.raises(FunctionRefused):
        insecure(("math", "builtins")).resolve_ref(ref)


def test_settings_are_checked_at_start() -> None:
    for bad in ({"modules": ("numpy:sum",)}, {"modules": ("a..b",)}, {"modules": ("*",)}, {"functions": ("numpy",)},
                {"functions": ("numpy:__dict__",)}):  # fmt: skip
        with pytest.raises(ConfigError):
            Fence.of(**bad)  # type: ignore[arg-type]


def test_a_token_node_is_fenced_only_when_asked() -> None:
    open_node = FunctionResolver(allow_pickle=True)
    assert not open_node.fence.fenced
    assert open_node.allow_pickle
    assert callable(open_node.resolve_ref("subprocess:run"))
    fenced = FunctionResolver(allow_pickle=True, allowed_modules=("math",))
    assert fenced.fence.fenced
    assert not fenced.allow_pickle
    with pytest.raises(FunctionRefused):
        fenced.resolve_ref("subprocess:run")


def test_function_arguments_meet_the_running_tasks_fence() -> None:
    """A shuffle's reducer (and an executor's chunked function) is resolved through the node's fence."""
    with running_under(insecure((FIXTURE,))):
        assert ops.reduce_partition(f"{FIXTURE}:total", {"k": [1.5]}, {"k": [2.0]}) == {"k": 3.5}
        with pytest.raises(FunctionRefused):
            ops.reduce_partition("os:system", {"k": ["true"]})
    with pytest.raises(FunctionRefused):  # outside a task: only what meshaios exposes
        resolve_argument(f"{FIXTURE}:total")


def test_refusals_are_wire_errors_and_pickle_by_value() -> None:
    import pickle

    exc = FunctionRefused("a:b", "because")
    assert isinstance(exc, WireError)
    back: Any = pickle.loads(pickle.dumps(exc))
    assert (back.ref, back.reason, str(back)) == ("a:b", "because", str(exc))
