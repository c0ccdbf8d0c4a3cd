"""The task functions a shuffle runs on the nodes. Importable by reference, so insecure meshes can run them.

A map task returns its output already split into ``P`` parts; the executing node stores part ``j`` under
``<task id>#j`` and a reducer's arguments reference exactly those ids, so it pulls only its own part of every map
output, straight from the node that holds it. Because a part's id names the map task, a map task re-run after a
node died replaces its parts instead of adding to them: nothing is counted twice.

Record shapes a mapper may emit (and ``Client.shuffle`` may be given):

- **key-value records**: any iterable of ``(key, value)`` pairs -- a list, a generator, a tuple -- or a ``dict``
  ``{key: value}`` (its items are the pairs). Keys are any hashable value that travels (str, bytes, int, float,
  bool, None, tuples of those, numpy scalars; anything picklable on a mesh with a token). A key may repeat: its
  values **accumulate**, nothing is overwritten. Keys that compare equal are one key, as in a Python dict:
  ``1``, ``True``, ``1.0`` and ``np.int64(1)`` land in the same partition and are reduced together (the key
  object seen first is the one kept).
- **arrays**: a pair of numpy arrays ``(keys, values)`` with 1-D integer keys and one row of ``values`` per key,
  or a bare 1-D integer array of keys; partitioned by the ``hash_partition`` kernel, without a Python loop.

The reducer's calling convention follows from the shape:

- key-value records: ``reducer(key, values)`` once per distinct key of the partition, where ``values`` is a list
  of every value emitted for that key by every map task (in map-task order, then emission order). A partition's
  result is a dict ``{key: reducer(key, values)}`` whose keys are **sorted** (``sorted()``'s order); when the keys
  of a partition cannot be ordered (``1`` and ``"a"``, say), they keep first-seen order instead. Without a reducer
  the result is ``{key: values}``.
- arrays: ``reducer(keys, values)`` (or ``reducer(keys)``) once per partition, on the rows of every map output
  concatenated; without a reducer, the concatenated ``(keys, values)``.

``combiner`` (key-value records only) runs map-side, on each map task's output before the shuffle, with the
reducer's signature: ``combiner(key, values) -> value``. The reducer then receives one *combined* value per map
task that emitted the key. It is for associative, commutative reductions (a sum, a max, a count) where it shrinks
what moves from ``len(records)`` values to one per distinct key; the reducer is usually the same function.

What travels between a map task and a reducer (internal; ``Future.part(j)`` references it): a key-value part is
``[MANY, {key: [values...]}]``, or ``[ONE, {key: value}]`` where every key has exactly one value (a dict map output,
or combined values) -- no list per key to build, send and decode; an array part is ``(keys, values)`` or ``keys``.

>>> parts = partition([("the", 1), ("cat", 1), ("the", 1)], 1)
>>> parts
[[0, {'the': [1, 1], 'cat': [1]}]]
>>> reduce_partition(lambda word, counts: sum(counts), *parts, partition({"cat": 2}, 1)[0])
{'cat': 3, 'the': 2}
"""

from __future__ import annotations

import numbers
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from meshaios.devices.kernels import hash_partition

MANY = 0  # part kinds: {key: [values...]}
ONE = 1  # {key: value}
_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def stable_hash(key: Any) -> int:
    """A 32-bit hash of ``key`` that every process computes alike (Python's ``hash`` of a str does not), equal for
    keys that compare equal: ``1``, ``True``, ``1.0``, ``np.int64(1)`` and ``Fraction(1)`` hash alike."""
    if isinstance(key, str):
        return zlib.crc32(key.encode("utf-8", "surrogatepass"))
    if isinstance(key, int | float | np.number | np.bool_ | numbers.Number):
        if key != key:  # NaN: never equal to anything, and its ``hash`` depends on the object
            return 0
        # CPython's numeric hash is defined arithmetically (mod 2**61 - 1 on 64-bit builds), the same in every
        # process, and equal for equal numbers of any type; the multiply spreads consecutive integers
        return ((hash(key) * _GOLDEN) & _MASK64) >> 32
    if isinstance(key, bytes):
        return zlib.crc32(key)
    if key is None:
        return 0x6E6F6E65
    if isinstance(key, tuple):
        h = 0x345678
        for item in key:
            h = zlib.crc32(stable_hash(item).to_bytes(4, "little"), h)
        return h
    if isinstance(key, frozenset):
        return sum(stable_hash(item) for item in key) & 0xFFFFFFFF  # order-free, as the set is
    return zlib.crc32(repr(key).encode("utf-8", "surrogatepass"))


def stable_partition(key: Any, partitions: int) -> int:
    """The partition of ``key``: the same in every process, and the same for keys that compare equal."""
    return stable_hash(key) % partitions


def _resolve(fn: Any) -> Callable[..., Any]:
    from meshaios.tasks.functions import resolve_argument  # through the fence of the node running this task

    return resolve_argument(fn)


def _is_arrays(records: Any) -> bool:
    return isinstance(records, np.ndarray) or (
        isinstance(records, tuple) and len(records) == 2 and isinstance(records[0], np.ndarray)
    )


def group(records: Any) -> dict[Any, list[Any]]:
    """Key-value records -> ``{key: [values...]}`` in one pass, keys in first-seen order."""
    if isinstance(records, dict):
        return {k: [v] for k, v in records.items()}
    if isinstance(records, str | bytes) or not isinstance(records, Iterable):
        raise TypeError(
            f"a map output must be (key, value) pairs, a dict or (keys, values) arrays, not {type(records).__name__}"
        )
    grouped: defaultdict[Any, list[Any]] = defaultdict(list)
    for rec in records:
        try:
            k, v = rec
        except (TypeError, ValueError):
            raise TypeError(f"a map output record must be a (key, value) pair, not {_short(rec)}") from None
        grouped[k].append(v)
    return dict(grouped)


def _short(x: Any) -> str:
    r = repr(x)
    return r if len(r) <= 80 else r[:77] + "..."


def partition(records: Any, partitions: int, combiner: Any = None) -> list[Any]:
    """Split one map output into ``partitions`` parts.

    Key-value records become ``partitions`` parts ``[MANY, {key: [values...]}]``, or ``[ONE, {key: value}]`` for
    a dict or with a ``combiner``; arrays become ``partitions`` ``(keys, values)`` pairs (or key arrays).
    """
    if partitions < 1:
        raise ValueError("partitions must be at least 1")
    if _is_arrays(records):
        if combiner is not None:
            raise TypeError("a combiner applies to key-value records; reduce (keys, values) arrays in the mapper")
        if isinstance(records, np.ndarray):
            return [k for k, _ in hash_partition(np, records, None, partitions)]
        keys, values = records
        return [
            (np.ascontiguousarray(k), np.ascontiguousarray(v)) for k, v in hash_partition(np, keys, values, partitions)
        ]
    if combiner is not None:
        fn = _resolve(combiner)
        return _split({k: fn(k, vs) for k, vs in group(records).items()}, partitions, ONE)
    if isinstance(records, dict):
        return _split(records, partitions, ONE)
    return _split(group(records), partitions, MANY)


def _split(d: dict[Any, Any], partitions: int, kind: int) -> list[Any]:
    """One pass over the distinct keys: each to the part its stable hash names."""
    if partitions == 1:
        return [[kind, d]]
    parts: list[dict[Any, Any]] = [{} for _ in range(partitions)]
    crc = zlib.crc32
    for k, v in d.items():
        if type(k) is str:  # the common case inlined: stable_hash's answer for a str, without the call
            try:
                h = crc(k.encode())
            except UnicodeEncodeError:  # a lone surrogate
                h = stable_hash(k)
        else:
            h = stable_hash(k)
        parts[h % partitions][k] = v
    return [[kind, p] for p in parts]


def map_partition(mapper: Any, chunk: Any, partitions: int, combiner: Any = None) -> list[Any]:
    """A map task: ``mapper(chunk)``, combined (when a combiner is given) and partitioned."""
    return partition(_resolve(mapper)(chunk), partitions, combiner)


def identity_partition(data: Any, partitions: int, combiner: Any = None) -> list[Any]:
    return partition(data, partitions, combiner)


def _sorted_keys(grouped: dict[Any, Any]) -> list[Any]:
    try:
        return sorted(grouped)
    except TypeError:  # keys of types that do not compare (1 and "a"): first-seen order
        return list(grouped)


def reduce_partition(reducer: Any, *parts: Any) -> Any:
    """Merge one partition's parts from every map task, then reduce (see the module docstring for the shapes)."""
    fn = _resolve(reducer) if reducer is not None else None
    if parts and isinstance(parts[0], tuple):
        keys = np.concatenate([p[0] for p in parts])
        values = np.concatenate([p[1] for p in parts])
        return fn(keys, values) if fn is not None else (keys, values)
    if parts and isinstance(parts[0], np.ndarray):
        keys = np.concatenate(list(parts))
        return fn(keys) if fn is not None else keys
    grouped: dict[Any, list[Any]] = {}
    for part in parts:
        kind, d = (MANY, part) if isinstance(part, dict) else part
        if kind == ONE:
            for k, v in d.items():
                have = grouped.get(k)
                if have is None:
                    grouped[k] = [v]
                else:
                    have.append(v)
        else:
            for k, vs in d.items():
                have = grouped.get(k)
                if have is None:
                    grouped[k] = list(vs)
                else:
                    have.extend(vs)
    keys_in_order = _sorted_keys(grouped)
    if fn is None:
        return {k: grouped[k] for k in keys_in_order}
    return {k: fn(k, grouped[k]) for k in keys_in_order}
