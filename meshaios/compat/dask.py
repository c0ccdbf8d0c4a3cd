"""A Dask scheduler on the mesh: ``dask.compute(x, scheduler=...)`` runs Dask collections as meshaios tasks.

>>> import dask.array as da                                       # doctest: +SKIP
>>> from meshaios.compat.dask import scheduler
>>> with Client() as c:
...     print(da.arange(1_000_000, chunks=100_000).sum().compute(scheduler=scheduler(c)))
499999500000

Every task of the (culled) graph becomes one mesh task, submitted in a depth-first topological order; a task's
dependencies are the meshaios futures of the tasks it reads, so intermediate results move between nodes peer to
peer and never through the client. Once the whole graph is submitted the client drops its futures for everything
but the requested keys: the mesh releases each intermediate result as soon as its last reader has run.

Graphs are taken in both of Dask's shapes: ``Task``/``DataNode``/``Alias`` objects (``dask._task_spec``, Dask >=
2024.12; legacy tuples are converted with ``convert_legacy_graph``) and, for older Dask, ``(func, *args)`` tuples run
with ``dask.core``. Graph nodes carry code, so they travel pickled: a mesh with a token is needed. Dask is not a
dependency of meshaios; this module imports it when called.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any

from meshaios.errors import SerializationError, TaskError


def scheduler(client: Any) -> Callable[..., Any]:
    """``dask.compute(x, scheduler=scheduler(client))``."""

    def get_on_mesh(dsk: Any, keys: Any, **kwargs: Any) -> Any:
        return get(dsk, keys, client=client, **kwargs)

    return get_on_mesh


def is_dask_graph(obj: Any) -> bool:
    """What Dask hands a scheduler: a graph mapping, or an object with ``__dask_graph__`` (an expression)."""
    return isinstance(obj, Mapping) or hasattr(obj, "__dask_graph__")


def run_node(node: Any, keys: list[Any], *values: Any) -> Any:
    """On a node: run one Dask graph node with its dependencies' values."""
    return node(dict(zip(keys, values, strict=True)))


def run_legacy(task: Any, keys: list[Any], *values: Any) -> Any:
    """On a node: run one legacy ``(func, *args)`` task (Dask before ``_task_spec``)."""
    core: Any = importlib.import_module("dask.core")
    return core._execute_task(task, dict(zip(keys, values, strict=True)))


def get(dsk: Any, keys: Any, *, client: Any, **kwargs: Any) -> Any:
    """Dask's scheduler interface: compute ``keys`` (a key, or nested lists of keys) of graph ``dsk``.

    Returns what ``dask.threaded.get`` returns: the value of a key, a tuple for a list of keys (recursively).
    Scheduler options Dask passes along (``num_workers``, ``pool``, ...) are accepted and ignored. A task that
    raised re-raises its original exception where the mesh could send it back, else ``meshaios.TaskError``.
    """
    if not isinstance(dsk, Mapping):
        dsk = dsk.__dask_graph__()
    graph, deps_of, alias_of, legacy = _convert(dsk)
    wanted = list(_flatten(keys))
    order = _toposort(wanted, deps_of)

    futures: dict[Hashable, Any] = {}
    try:
        for key in order:
            target = alias_of.get(key)
            if target is not None:
                futures[key] = futures[target]
                continue
            deps = list(deps_of[key])
            fn = run_legacy if legacy else run_node
            futures[key] = client.submit(fn, graph[key], deps, *[futures[d] for d in deps])
    except SerializationError as exc:
        raise SerializationError(
            f"cannot send Dask task {key!r} to the mesh: {exc} (Dask graphs carry code: they need a mesh with a token)"
        ) from exc
    results_f = {k: futures[k] for k in wanted}
    futures.clear()  # dropped here: the mesh releases each intermediate once its readers are done
    try:
        values = {k: f.result() for k, f in results_f.items()}
    except TaskError as exc:
        if exc.cause is not None:
            raise exc.cause from exc
        raise
    return _pack(keys, values)


def _convert(dsk: Mapping[Any, Any]) -> tuple[dict[Any, Any], dict[Any, tuple[Any, ...]], dict[Any, Any], bool]:
    """(graph, dependencies of each key, alias -> target, legacy?)."""
    # imported as untyped modules: meshaios type-checks with or without Dask installed
    spec: Any
    try:
        spec = importlib.import_module("dask._task_spec")
    except ImportError:  # Dask before 2024.12: tuples all the way
        core: Any = importlib.import_module("dask.core")
        plain = dict(dsk)
        deps_of = {k: tuple(sorted(core.get_dependencies(plain, k), key=str)) for k in plain}
        return plain, deps_of, {}, True
    graph: dict[Any, Any] = spec.convert_legacy_graph(dict(dsk))
    deps_of = {}
    alias_of: dict[Any, Any] = {}
    for k, node in graph.items():
        deps_of[k] = tuple(sorted(node.dependencies, key=str))
        if isinstance(node, spec.Alias) and node.target in graph:
            alias_of[k] = node.target
    return graph, deps_of, alias_of, False


def _flatten(keys: Any) -> Iterable[Hashable]:
    stack = [keys]
    while stack:
        k = stack.pop()
        if isinstance(k, list):
            stack.extend(reversed(k))
        else:
            yield k


def _toposort(wanted: list[Hashable], deps_of: Mapping[Hashable, tuple[Hashable, ...]]) -> list[Hashable]:
    """Every key ``wanted`` needs, dependencies first, depth first (Dask's own order favours the same locality).
    Iterative: a deep chain cannot overflow the stack."""
    order: list[Hashable] = []
    state: dict[Hashable, int] = {}  # 1: on the stack, 2: emitted
    for root in wanted:
        if state.get(root) == 2:
            continue
        stack: list[tuple[Hashable, int]] = [(root, 0)]
        while stack:
            key, i = stack.pop()
            if i == 0:
                if state.get(key) == 2:
                    continue
                if key not in deps_of:
                    raise KeyError(f"Dask graph has no task {key!r}")
                state[key] = 1
            deps = deps_of[key]
            if i < len(deps):
                stack.append((key, i + 1))
                d = deps[i]
                s = state.get(d)
                if s == 1:
                    raise ValueError(f"Dask graph has a cycle through {d!r}")
                if s is None:
                    stack.append((d, 0))
            else:
                state[key] = 2
                order.append(key)
    return order


def _pack(keys: Any, values: Mapping[Hashable, Any]) -> Any:
    if isinstance(keys, list):
        return tuple(_pack(k, values) for k in keys)
    return values[keys]
