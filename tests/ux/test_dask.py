"""Dask collections computed on the mesh through the scheduler entry point equal Dask's local results."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from meshaios.client import Client
from meshaios.compat.dask import _toposort, get, is_dask_graph, scheduler

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
db = pytest.importorskip("dask.bag")


@pytest.fixture(scope="module")
def on_mesh(client: Client) -> Callable[..., Any]:
    # ``client.get`` once the client understands Dask graphs; the module's entry point until then
    getter = client.get
    try:
        getter({"x": 1}, "x")
        return getter
    except Exception:
        return scheduler(client)


def both(on_mesh: Callable[..., Any], *collections: Any) -> tuple[Any, Any]:
    return dask.compute(*collections, scheduler=on_mesh), dask.compute(*collections, scheduler="sync")


def test_array_reductions_over_chunks(on_mesh: Callable[..., Any]) -> None:
    rng = da.random.default_rng(42)
    x = rng.standard_normal((600, 400), chunks=(150, 100))  # 16 chunks
    y = (x + 1) ** 2
    exprs = [
        x.sum(),
        x.mean(axis=0),
        y.std(),
        (x @ x.T)[:5, :5],
        x[::7, 3].cumsum(axis=0),
        da.concatenate([x, y])[590:610],
    ]
    mesh, local = both(on_mesh, *exprs)
    for a, b in zip(mesh, local, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    assert mesh[1].shape == (400,)


def test_bag_map_filter_frequencies_fold(on_mesh: Callable[..., Any]) -> None:
    words = ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "the", "end"] * 50
    b = db.from_sequence(words, npartitions=7)
    lengths = b.map(len)
    exprs = [
        b.frequencies(sort=True),
        lengths.filter(lambda n: n > 3).sum(),
        b.map(str.upper).distinct(),
        b.foldby(len, lambda acc, w: acc + 1, 0, operator.add, 0),
        lengths.mean(),
    ]
    mesh, local = both(on_mesh, *exprs)
    assert mesh[0] == local[0]
    assert dict(mesh[0])["the"] == 150
    assert mesh[1] == local[1]
    assert sorted(mesh[2]) == sorted(local[2])
    assert sorted(mesh[3]) == sorted(local[3])
    assert mesh[4] == pytest.approx(local[4])


def test_delayed_chains_and_diamonds(on_mesh: Callable[..., Any]) -> None:
    from dask import delayed

    @delayed
    def inc(x: int) -> int:
        return x + 1

    @delayed
    def combine(*xs: int) -> int:
        return sum(x * (i + 1) for i, x in enumerate(xs))

    chain = inc(0)
    for _ in range(30):
        chain = inc(chain)
    base = inc(10)
    diamond = combine(inc(base), delayed(operator.mul)(base, 3), base)
    nested = delayed(dict)(a=chain, b=[diamond, {"k": base}])
    mesh, local = both(on_mesh, chain, diamond, nested)
    assert mesh == local
    assert mesh[0] == 31


def test_persist_and_errors(on_mesh: Callable[..., Any]) -> None:
    from dask import delayed

    x = da.arange(100, chunks=10)
    (p,) = dask.persist(x * 3, scheduler=on_mesh)
    assert int(p.sum().compute(scheduler="sync")) == 3 * 4950

    def fail(v: int) -> int:
        raise KeyError(f"missing {v}")

    with pytest.raises(KeyError, match="missing 5"):  # the task's own exception, as Dask's local schedulers raise it
        dask.compute(delayed(fail)(5), scheduler=on_mesh)


def test_graph_helpers_without_a_mesh() -> None:
    deps = {"a": (), "b": ("a",), "c": ("a", "b"), "d": ("c",), "unused": ("a",)}
    order = _toposort(["d"], deps)
    assert order == ["a", "b", "c", "d"]  # culled to what "d" needs, dependencies first
    with pytest.raises(ValueError, match="cycle"):
        _toposort(["x"], {"x": ("y",), "y": ("x",)})
    with pytest.raises(KeyError, match="no task"):
        _toposort(["x"], {"x": ("nowhere",)})
    deep = {f"k{i}": (f"k{i - 1}",) if i else () for i in range(20_000)}
    assert len(_toposort(["k19999"], deep)) == 20_000  # iterative: no recursion limit
    assert is_dask_graph({"x": 1})
    assert not is_dask_graph([1])


def test_raw_graph_with_nested_keys(client: Client) -> None:
    dsk = {"a": 1, "b": (operator.add, "a", 10), "c": (sum, ["a", "b"]), "alias": "c"}
    assert get(dsk, "c", client=client) == 12
    assert get(dsk, ["alias", ["a", "b"]], client=client) == (12, (1, 11))
