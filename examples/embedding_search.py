"""Embedding search over a corpus split across the mesh: top-k cosine similarity, shard by shard, merged.

The corpus is scattered into the mesh with ``client.put`` (each shard kept by one node and replicated to a
second), every query batch runs the ``meshaios.cosine_topk`` kernel against every shard where the shard lives
(GPU if a node has one, numpy otherwise), and the per-shard top-k lists are merged. The answer is checked
against brute force in one process.

    python examples/embedding_search.py [--docs 200000] [--dim 128] [--shards 6] [--queries 64] [--k 10]
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
from rich.console import Console

from meshaios.devices.kernels import cosine_topk
from meshaios.testing.localmesh import LocalMesh, wait_for


def shard_topk(queries: np.ndarray, shard: np.ndarray, offset: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    idx, scores = cosine_topk.call("cpu", (queries, shard), {"k": k})
    return idx + offset, scores


def merge(results: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.concatenate([r[0] for r in results], axis=1)
    scores = np.concatenate([r[1] for r in results], axis=1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(idx, order, 1), np.take_along_axis(scores, order, 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--docs", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--shards", type=int, default=6)
    ap.add_argument("--queries", type=int, default=64)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--nodes", type=int, default=3)
    args = ap.parse_args()
    console = Console()
    rng = np.random.default_rng(7)
    corpus = rng.standard_normal((args.docs, args.dim)).astype(np.float32)
    queries = rng.standard_normal((args.queries, args.dim)).astype(np.float32)
    bounds = np.linspace(0, args.docs, args.shards + 1).astype(int)
    with LocalMesh(args.nodes) as mesh, mesh.client(0) as c:
        wait_for(lambda: len(c.status()["members"]) >= args.nodes - 1, timeout=15, what="discovery")
        t0 = time.perf_counter()
        shards = [c.put(corpus[a:b]) for a, b in itertools.pairwise(bounds)]
        t_put = time.perf_counter() - t0
        t1 = time.perf_counter()
        parts = [c.submit(shard_topk, queries, s, int(a), args.k) for s, a in zip(shards, bounds[:-1], strict=True)]
        idx, scores = merge(c.gather(parts, timeout=300), args.k)
        t_search = time.perf_counter() - t1
        ref_idx, ref_scores = cosine_topk.call("cpu", (queries, corpus), {"k": args.k})
        ok = bool(np.allclose(scores, ref_scores, atol=1e-5) and (idx == ref_idx).mean() > 0.999)
        where = sorted({f.node[:8] for f in parts})
        console.print(
            f"{args.docs:,} x {args.dim} corpus in {args.shards} shards (put in {t_put:.2f} s), "
            f"{args.queries} queries, top-{args.k} in {t_search:.2f} s on nodes {', '.join(where)}"
        )
        colour = "green" if ok else "red"
        console.print(f"[bold {colour}]top-{args.k} {'matches' if ok else 'DIFFERS FROM'} brute force[/bold {colour}]")
        return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
