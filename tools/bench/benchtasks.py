"""The task functions every engine runs, and the local references their results are checked against.

This module is imported by meshaios nodes, Dask workers and Ray workers alike (``run.py`` puts this folder on
``PYTHONPATH`` before any of them start), so every engine ships the functions by import reference and runs exactly
the same code. It imports numpy and meshaios's CPU partitioner (``meshaios.devices.kernels``, numpy only; the bench
environment has meshaios installed), which every engine's shuffle map runs.
"""

from __future__ import annotations

from collections import Counter
from functools import cache
from typing import Any

import numpy as np

from meshaios.devices.kernels import hash_partition

NPARTS = 16  # shuffle: input partitions, map outputs per partition, reducers
GOLDEN = np.uint64(0x9E3779B97F4A7C15)
DAG_ARRAYS = 4
DAG_COLS = 64
VOCAB = 50_000  # word count: distinct words in the generated corpus (at most)
DOC_WORDS = 100  # words per document (line)


def noop(x: Any) -> Any:
    return x


# ---- shuffle --------------------------------------------------------------------------------------------


def make_partition(i: int, length: int) -> np.ndarray[Any, Any]:
    """Input partition ``i``: ``length`` random int64 over the whole range, reproducible from ``i``."""
    rng = np.random.default_rng(1_000_003 + i)
    return rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, size=length, dtype=np.int64)


def bucket_of(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Top 4 bits of ``x * 0x9E3779B97F4A7C15`` (uint64, wrapping): which of the 16 reducers gets ``x``."""
    return ((x.view(np.uint64) * GOLDEN) >> np.uint64(60)).astype(np.uint8)


def bucket(x: np.ndarray[Any, Any]) -> list[np.ndarray[Any, Any]]:
    """The map step: split one partition into 16 slices by ``bucket_of`` (contiguous views of one reordered copy,
    each slice in input order). It is meshaios's own partitioner, the one ``Client.shuffle`` runs on a node, so that
    Dask and Ray run the same map kernel as meshaios: it sorts a block of rows at a time, which takes half the CPU
    of one whole-input ``argsort`` and page-faults a third as much (docs/performance.md section 26)."""
    return [keys for keys, _ in hash_partition(np, x, None, NPARTS)]


def reduce_slices(*slices: np.ndarray[Any, Any]) -> tuple[int, int]:
    """The reduce step: (count, wrapping int64 sum) of this reducer's slice of every map output."""
    sums = np.array([s.sum(dtype=np.int64) for s in slices], dtype=np.int64)
    return sum(len(s) for s in slices), int(np.add.reduce(sums, dtype=np.int64))


def reduce_array(x: np.ndarray[Any, Any]) -> tuple[int, int]:
    """``reduce_slices`` for an engine that hands the reducer its slices already concatenated (meshaios)."""
    return len(x), int(x.sum(dtype=np.int64))


def shuffle_local(parts: list[np.ndarray[Any, Any]]) -> list[tuple[int, int]]:
    """The whole shuffle in one process with numpy, no distribution: the floor for any engine."""
    outs = [bucket(x) for x in parts]
    return [reduce_slices(*[o[j] for o in outs]) for j in range(NPARTS)]


def shuffle_reference(length: int) -> list[tuple[int, int]]:
    """What the 16 reducers must return, computed in one process, one partition at a time."""
    counts = np.zeros(NPARTS, dtype=np.int64)
    sums = np.zeros(NPARTS, dtype=np.int64)
    for i in range(NPARTS):
        x = make_partition(i, length)
        b = bucket_of(x)
        counts += np.bincount(b, minlength=NPARTS)
        sums += np.array([x[b == j].sum(dtype=np.int64) for j in range(NPARTS)], dtype=np.int64)  # wraps
    return [(int(c), int(s)) for c, s in zip(counts, sums, strict=True)]


# ---- DAG of numpy kernels -------------------------------------------------------------------------------
#
#   x_k (materialised)  ->  y_k = scale(x_k)  ->  z_k = mix(y_k, x_{k+1})  ->  g_k = project(z_k)
#   h_0 = add(g_0, g_1), h_1 = add(g_2, g_3)  ->  summary(h_0, h_1)  (two floats back to the client)
#
# Every step reads and writes arrays of the input's size, and ``mix``/``add`` take two arrays made by different
# tasks, so data has to move between workers.


def make_array(k: int, length: int) -> np.ndarray[Any, Any]:
    return np.random.default_rng(2_000_003 + k).standard_normal(length)


def scale(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return np.sin(x) * 2.0 + 1.0


def mix(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return a * 0.5 + b


def project(z: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    w = np.random.default_rng(7).standard_normal((DAG_COLS, DAG_COLS)) / DAG_COLS
    return (z.reshape(-1, DAG_COLS) @ w).reshape(-1)


def add(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return a + b


def summary(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> tuple[float, float]:
    s = a + b
    return float(s.sum()), float(np.abs(s).max())


def dag_reference(length: int) -> tuple[float, float]:
    xs = [make_array(k, length) for k in range(DAG_ARRAYS)]
    gs = [project(mix(scale(xs[k]), xs[(k + 1) % DAG_ARRAYS])) for k in range(DAG_ARRAYS)]
    return summary(add(gs[0], gs[1]), add(gs[2], gs[3]))


def dag_matches(got: Any, want: tuple[float, float]) -> bool:
    return (
        isinstance(got, tuple | list)
        and len(got) == 2
        and all(abs(float(g) - w) <= 1e-9 * max(1.0, abs(w)) for g, w in zip(got, want, strict=True))
    )


# ---- word count ---------------------------------------------------------------------------------------------
#
# A generated text corpus: NPARTS partitions, each a list of documents (lines) of DOC_WORDS words drawn from a
# VOCAB-word vocabulary with Zipf-distributed frequencies (the most common word is ~9% of the text, as "the" is in
# English prose), so every word repeats many times within a partition.


@cache
def vocabulary() -> np.ndarray[Any, Any]:
    rng = np.random.default_rng(12345)
    raw = rng.integers(ord("a"), ord("z") + 1, (VOCAB, 10), dtype=np.uint8)
    lengths = rng.integers(2, 11, VOCAB)
    return np.array([raw[k, : lengths[k]].tobytes().decode() for k in range(VOCAB)], dtype=object)


def make_docs(i: int, nbytes: int) -> list[str]:
    """Partition ``i`` of the corpus: about ``nbytes`` of text as a list of lines, reproducible from ``i``."""
    rng = np.random.default_rng(3_000_003 + i)
    n = max(DOC_WORDS, nbytes // 7)  # 6 letters and a space per word on average
    words = vocabulary()[(rng.zipf(1.1, n) - 1) % VOCAB]
    return [" ".join(words[j : j + DOC_WORDS]) for j in range(0, n, DOC_WORDS)]


def count_words(docs: list[str]) -> dict[str, int]:
    """The map step, as a Python programmer writes it: ``collections.Counter`` over each line's words."""
    counts: Counter[str] = Counter()
    for line in docs:
        counts.update(line.split())
    return dict(counts)


def word_pairs(docs: list[str]) -> list[tuple[str, int]]:
    """The map step as the MapReduce textbook writes it: one ``(word, 1)`` pair per word occurrence."""
    return [(w, 1) for line in docs for w in line.split()]


def add_counts(word: str, counts: list[int]) -> int:
    """The reducer (and the combiner) of the word count."""
    return sum(counts)


def wordcount_local(parts: list[list[str]]) -> dict[str, int]:
    """The whole word count in one plain Python process: one ``Counter`` over every line, no engine."""
    counts: Counter[str] = Counter()
    for docs in parts:
        for line in docs:
            counts.update(line.split())
    return dict(counts)


def corpus_bytes(parts: list[list[str]]) -> int:
    return sum(len(line) + 1 for docs in parts for line in docs)
