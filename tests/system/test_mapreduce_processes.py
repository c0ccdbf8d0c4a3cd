"""MapReduce written as the textbook writes it, on real node processes: word count equals collections.Counter."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from meshaios.client import Client
from meshaios.testing.localmesh import LocalMesh, wait_for
from tests.integration import funcs

pytestmark = pytest.mark.system

SEEDS = range(24)


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with LocalMesh(3, discovery=False, startup_timeout=60) as mesh, mesh.client(0) as c:
        wait_for(lambda: len(c.status()["members"]) == 2, timeout=15, what="three nodes")
        yield c


def merged(parts: list[dict[Any, Any]]) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for p in parts:
        assert not set(p) & set(out), "a key reached two reducers"
        out.update(p)
    return out


@pytest.mark.parametrize("mapper", [funcs.doc_pairs, funcs.doc_pairs_gen, funcs.doc_counts])
@pytest.mark.parametrize("combiner", [None, funcs.sum_values], ids=["no-combiner", "combiner"])
def test_word_count_equals_counter(client: Client, mapper: Any, combiner: Any) -> None:
    expected: Counter[str] = Counter()
    for s in SEEDS:
        expected.update(funcs.make_doc(s).split())
    assert expected.most_common(1)[0][1] > 100 * len(SEEDS) / 4  # words repeat within every document
    outs = client.mapreduce(mapper, funcs.sum_values, SEEDS, partitions=5, combiner=combiner)
    parts = client.gather(outs, timeout=60)
    assert merged(parts) == expected
    for p in parts:
        assert list(p) == sorted(p), "keys are sorted within each partition"
    assert sum(1 for p in parts if p) >= 3  # the words really were spread over the partitions


def test_keys_that_compare_equal_meet_at_one_reducer(client: Client) -> None:
    parts = client.gather(client.mapreduce(funcs.equal_key, None, range(4), partitions=7), timeout=60)
    out = merged(parts)
    assert out == {1: [0, 1, 2], 2: [3]}  # 1, True and 1.0 are one key; values in map-task order
    assert type(next(iter(out))) is int


def test_a_bad_map_output_fails_with_a_clear_error(client: Client) -> None:
    from meshaios import TaskError

    outs = client.mapreduce(funcs.make_doc, funcs.sum_values, [1], partitions=2)  # emits a str, not pairs
    with pytest.raises(TaskError, match=r"map output must be \(key, value\) pairs"):
        client.gather(outs, timeout=60)
