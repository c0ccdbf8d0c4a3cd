"""The shuffle's task functions without a mesh: what a map task emits, how parts merge, what a reducer sees.

Every part goes through the wire codec between the map and the reduce, as it does between nodes, so a key type
that did not survive the trip (a tuple, a bool beside an int) would show here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from fractions import Fraction
from typing import Any

import numpy as np
import pytest

from meshaios.shuffle import ops
from meshaios.wire.values import dumps, loads

DOCS = ["the cat the hat", "the end", "a cat and a hat and the end the end"]


def wire(x: Any) -> Any:
    return loads(dumps(x, allow_pickle=False)[0], allow_pickle=False)


def run(mapper: Any, reducer: Any, inputs: list[Any], partitions: int, combiner: Any = None) -> list[Any]:
    """MapReduce in one process, exactly as the mesh composes the task functions."""
    maps = [wire(ops.map_partition(mapper, x, partitions, combiner)) for x in inputs]
    return [ops.reduce_partition(reducer, *[m[j] for m in maps]) for j in range(partitions)]


def merged(parts: list[dict[Any, Any]]) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for p in parts:
        assert not set(p) & set(out), "a key reached two reducers"
        out.update(p)
    return out


def pairs_list(doc: str) -> list[tuple[str, int]]:
    return [(w, 1) for w in doc.split()]


def pairs_gen(doc: str) -> Iterator[tuple[str, int]]:
    for w in doc.split():
        yield w, 1


def as_dict(doc: str) -> dict[str, int]:
    return dict(Counter(doc.split()))


def add(key: Any, values: list[int]) -> int:
    return sum(values)


@pytest.mark.parametrize("mapper", [pairs_list, pairs_gen, as_dict])
@pytest.mark.parametrize("combiner", [None, add])
@pytest.mark.parametrize("partitions", [1, 3])
def test_word_count_accumulates_every_value(mapper: Any, combiner: Any, partitions: int) -> None:
    parts = run(mapper, add, DOCS, partitions, combiner)
    assert merged(parts) == Counter(" ".join(DOCS).split())
    for p in parts:
        assert list(p) == sorted(p)


def test_repeated_keys_in_one_map_output_keep_every_value_in_emission_order() -> None:
    (part,) = ops.partition([("k", 3), ("j", 1), ("k", 1), ("k", 2)], 1)
    assert part == [ops.MANY, {"k": [3, 1, 2], "j": [1]}]
    # without a reducer the values of every map task, in map-task order, then emission order
    out = ops.reduce_partition(None, wire(part), {"k": [9]})
    assert out == {"j": [1], "k": [3, 1, 2, 9]}
    assert list(out) == ["j", "k"]


def test_the_reducer_gets_one_combined_value_per_map_task() -> None:
    seen: dict[str, list[int]] = {}

    def record(key: str, values: list[int]) -> int:
        seen[key] = list(values)
        return sum(values)

    run(pairs_list, record, DOCS, 2, combiner=add)
    assert seen["the"] == [2, 1, 2]  # one per document that has "the", each already summed map-side
    assert seen["and"] == [2]
    seen.clear()
    run(pairs_list, record, DOCS, 2)
    assert seen["the"] == [1, 1, 1, 1, 1]


def test_a_dict_map_output_travels_as_one_value_per_key() -> None:
    parts = ops.partition({"a": 1, "b": 2, "c": 3}, 2)
    assert [kind for kind, _ in parts] == [ops.ONE, ops.ONE]
    assert {k: v for _, d in parts for k, v in d.items()} == {"a": 1, "b": 2, "c": 3}
    one = wire(ops.partition({"a": 1, "b": 2}, 1)[0])
    many = wire(ops.partition([("a", 10), ("a", 20)], 1)[0])
    assert ops.reduce_partition(None, one, many) == {"a": [1, 10, 20], "b": [2]}
    assert ops.reduce_partition(None, many, one) == {"a": [10, 20, 1], "b": [2]}
    assert ops.reduce_partition(add, many, one) == {"a": 31, "b": 2}


def test_a_str_key_with_a_lone_surrogate_lands_where_stable_hash_says() -> None:
    odd = "bad\udc80"
    parts = ops.partition({odd: 1, "plain": 2}, 4)
    assert parts[ops.stable_partition(odd, 4)][1][odd] == 1
    assert parts[ops.stable_partition("plain", 4)][1]["plain"] == 2


def test_the_combiner_runs_once_per_key_per_map_task() -> None:
    calls: Counter[str] = Counter()

    def counting(key: str, values: list[int]) -> int:
        calls[key] += 1
        return sum(values)

    ops.partition(pairs_list(DOCS[2]), 4, combiner=counting)
    assert calls == Counter(set(DOCS[2].split()))


def test_keys_that_compare_equal_are_one_key_in_one_partition() -> None:
    equal = [1, True, 1.0, np.int64(1), np.float32(1.0), Fraction(1), Decimal(1), complex(1, 0), np.bool_(True)]
    assert len({ops.stable_partition(k, 64) for k in equal}) == 1
    assert ops.stable_partition((1, "a"), 64) == ops.stable_partition((True, "a"), 64)
    assert ops.stable_partition(frozenset({1, 2}), 64) == ops.stable_partition(frozenset({2.0, True}), 64)
    maps = [[(1, "int")], [(True, "bool")], [(1.0, "float"), (2, "two")]]
    parts = run(lambda m: m, None, maps, 8)
    out = merged(parts)
    assert out == {1: ["int", "bool", "float"], 2: ["two"]}
    assert type(next(iter(out))) is int  # the key object seen first is kept, as in a dict


def test_the_partition_of_a_key_is_the_same_in_every_process() -> None:
    keys = ["word", "ünïcode", b"raw", 7, -1, 2**100, 2.5, None, ("t", 1, (2.0, None)), float("inf")]
    here = [ops.stable_partition(k, 1000) for k in keys]
    code = (
        "from meshaios.shuffle import ops; inf = float('inf'); "
        f"print([ops.stable_partition(k, 1000) for k in {keys!r}])"
    )
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout.strip() == repr(here)


def test_consecutive_integers_spread_over_the_partitions() -> None:
    counts = Counter(ops.stable_partition(i * 8, 8) for i in range(8000))  # multiples of P too
    assert len(counts) == 8
    assert min(counts.values()) > 800


def test_nan_keys_have_a_partition() -> None:
    assert ops.stable_partition(float("nan"), 8) == ops.stable_partition(float("nan"), 8)


def test_keys_that_cannot_be_ordered_keep_first_seen_order() -> None:
    parts = ops.partition([("b", 1), (2, 1), ("a", 1), (None, 1), (1, 1)], 1)
    out = ops.reduce_partition(add, *parts)
    assert list(out) == ["b", 2, "a", None, 1]
    (same,) = ops.partition([(3, 1), (1.5, 1), (2, 1)], 1)
    assert list(ops.reduce_partition(add, same)) == [1.5, 2, 3]  # numbers of mixed types do order


def test_tuple_keys_survive_the_wire_and_sort() -> None:
    parts = run(lambda xs: [((x % 2, str(x)), x) for x in xs], add, [range(5), range(3)], 2)
    out = merged(parts)
    assert out == {(0, "0"): 0, (1, "1"): 2, (0, "2"): 4, (1, "3"): 3, (0, "4"): 4}
    for p in parts:
        assert list(p) == sorted(p)


def test_array_records_partition_without_python_loops_and_reduce_concatenated() -> None:
    rng = np.random.default_rng(0)
    chunks = [(rng.integers(0, 50, 1000), rng.integers(0, 9, 1000)) for _ in range(3)]

    def group_sum(keys: np.ndarray, values: np.ndarray) -> dict[int, int]:
        return {int(k): int(values[keys == k].sum()) for k in np.unique(keys)}

    parts = run(lambda c: c, group_sum, chunks, 4)
    keys = np.concatenate([k for k, _ in chunks])
    vals = np.concatenate([v for _, v in chunks])
    assert merged(parts) == group_sum(keys, vals)
    bare = run(lambda c: c[0], None, chunks, 4)
    assert sorted(np.concatenate(bare).tolist()) == sorted(keys.tolist())


def test_bad_records_get_a_clear_error() -> None:
    with pytest.raises(TypeError, match=r"\(key, value\) pair, not 'the'"):
        ops.partition(["the", "cat"], 2)
    with pytest.raises(TypeError, match="not NoneType"):
        ops.partition(None, 2)
    with pytest.raises(TypeError, match="not str"):
        ops.partition("the cat", 2)
    with pytest.raises(TypeError, match="unhashable"):
        ops.partition([(["list"], 1)], 2)
    with pytest.raises(TypeError, match="combiner applies to key-value records"):
        ops.partition((np.arange(3), np.arange(3)), 2, combiner=add)
    with pytest.raises(ValueError, match="at least 1"):
        ops.partition([("a", 1)], 0)


def test_an_error_inside_a_generator_mapper_is_not_disguised() -> None:
    def broken(doc: str) -> Iterator[tuple[str, int]]:
        yield "a", 1
        raise ValueError("the mapper's own error")

    with pytest.raises(ValueError, match="the mapper's own error"):
        ops.map_partition(broken, "x", 2)


def test_many_keys_per_map_output_group_in_one_pass() -> None:
    """Not a timing: the shape of the work. Every record is visited once; the combiner sees each key once."""
    rng = np.random.default_rng(1)
    words = [f"w{i}" for i in rng.integers(0, 20_000, 200_000)]
    parts = ops.partition(((w, 1) for w in words), 16, combiner=add)
    assert all(kind == ops.ONE for kind, _ in parts)  # one combined value per key: no list per key travels
    assert sum(len(d) for _, d in parts) == len(set(words))
    assert merged([ops.reduce_partition(add, p) for p in parts]) == Counter(words)
