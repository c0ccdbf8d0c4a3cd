"""The task functions a shuffle runs on the nodes. Importable by reference, so insecure meshes can run them.

A map task returns its output already split into ``P`` parts; the executing node stores part ``j`` under
``<task id>#j`` and a reducer's arguments reference exactly those ids, so it pulls only its own part of every map
output, straight from the node that holds it. Because a part's id names the map task, a map task re-run after a
node died replaces its parts instead of adding to them: nothing is counted twice.

Three record shapes are understood:
- a ``dict`` ``{key: value}`` (or an iterable of ``(key, value)`` pairs): keys of any hashable msgpack-able type;
  the reducer is called as ``reducer(key, [values...])`` and a partition's result is ``{key: reduced}``;
- a pair of numpy arrays ``(keys, values)`` with integer keys: partitioned by the ``hash_partition`` kernel;
  the reducer is called once per partition as ``reducer(keys, values)`` on the concatenated rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from meshaios.devices.kernels import hash_partition


def stable_partition(key: Any, partitions: int) -> int:
    """Python's ``hash`` differs between processes; this must not, or a key would land in two partitions."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        raw = int(key).to_bytes(16, "little", signed=True)
    elif isinstance(key, str):
        raw = key.encode()
    elif isinstance(key, bytes):
        raw = key
    else:
        raw = repr(key).encode()
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "little") % partitions


def _resolve(fn: Any) -> Callable[..., Any]:
    if isinstance(fn, str):
        from meshaios.tasks.functions import FunctionResolver
        from meshaios.wire.values import dumps

        resolver = FunctionResolver(allow_pickle=False)
        return resolver.resolve(dumps({"ref": fn}, allow_pickle=False)[0])
    if not callable(fn):
        raise TypeError(f"{fn!r} is not callable")
    return fn  # type: ignore[no-any-return]


def partition(records: Any, partitions: int) -> list[Any]:
    """Split one map output into ``partitions`` parts of the same shape."""
    if isinstance(records, tuple) and len(records) == 2 and isinstance(records[0], np.ndarray):
        keys, values = records
        return [
            (np.ascontiguousarray(k), np.ascontiguousarray(v)) for k, v in hash_partition(np, keys, values, partitions)
        ]
    if isinstance(records, np.ndarray):
        return [k for k, _ in hash_partition(np, records, None, partitions)]
    items: Iterable[tuple[Any, Any]] = records.items() if isinstance(records, dict) else records
    parts: list[dict[Any, Any]] = [{} for _ in range(partitions)]
    for k, v in items:
        parts[stable_partition(k, partitions)][k] = v
    return parts


def map_partition(mapper: Any, chunk: Any, partitions: int) -> list[Any]:
    return partition(_resolve(mapper)(chunk), partitions)


def identity_partition(data: Any, partitions: int) -> list[Any]:
    return partition(data, partitions)


def reduce_partition(reducer: Any, *parts: Any) -> Any:
    """Combine one partition's parts from every map task, then reduce."""
    fn = _resolve(reducer) if reducer is not None else None
    if parts and isinstance(parts[0], tuple):
        keys = np.concatenate([p[0] for p in parts])
        values = np.concatenate([p[1] for p in parts])
        return fn(keys, values) if fn is not None else (keys, values)
    if parts and isinstance(parts[0], np.ndarray):
        keys = np.concatenate(list(parts))
        return fn(keys) if fn is not None else keys
    grouped: dict[Any, list[Any]] = {}
    for p in parts:
        for k, v in p.items():
            grouped.setdefault(k, []).append(v)
    if fn is None:
        return grouped
    return {k: fn(k, vs) for k, vs in grouped.items()}
