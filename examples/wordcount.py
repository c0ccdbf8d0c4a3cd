"""Word count with MapReduce over a generated corpus: mappers count words per document, the counts are
hash-partitioned by word and shuffled peer to peer, reducers add them up. Checked against collections.Counter.

    python examples/wordcount.py [--docs 400] [--words-per-doc 5000] [--partitions 8]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np
from rich.console import Console

from meshaios.testing.localmesh import LocalMesh, wait_for

VOCAB = [f"w{i:04d}" for i in range(5000)]


def make_doc(seed: int, words: int) -> str:
    rng = np.random.default_rng(seed)
    zipf = np.minimum(rng.zipf(1.3, words), len(VOCAB)) - 1  # word frequencies like a real text's
    return " ".join(VOCAB[i] for i in zipf)


def count_words(spec: tuple[int, int]) -> dict[str, int]:
    return dict(Counter(make_doc(*spec).split()))


def add_counts(word: str, counts: list[int]) -> int:
    return sum(counts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--docs", type=int, default=400)
    ap.add_argument("--words-per-doc", type=int, default=5000)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--nodes", type=int, default=3)
    args = ap.parse_args()
    console = Console()
    specs = [(s, args.words_per_doc) for s in range(args.docs)]
    with LocalMesh(args.nodes) as mesh, mesh.client(0) as c:
        wait_for(lambda: len(c.status()["members"]) >= args.nodes - 1, timeout=15, what="discovery")
        t0 = time.perf_counter()
        outs = c.mapreduce(count_words, add_counts, specs, partitions=args.partitions)
        counts: dict[str, int] = {}
        for part in c.gather(outs, timeout=600):
            counts.update(part)
        elapsed = time.perf_counter() - t0
        expected: Counter[str] = Counter()
        for s in specs:
            expected.update(make_doc(*s).split())
        ok = counts == dict(expected)
        top = sorted(counts.items(), key=lambda kv: -kv[1])[:5]
        console.print(
            f"{args.docs * args.words_per_doc:,} words in {args.docs} documents, {len(counts):,} distinct, "
            f"counted in {elapsed:.2f} s; top: " + ", ".join(f"{w}={n}" for w, n in top)
        )
        colour = "green" if ok else "red"
        console.print(f"[bold {colour}]counts {'equal' if ok else 'DIFFER FROM'} collections.Counter[/bold {colour}]")
        return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
