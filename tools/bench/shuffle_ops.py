"""The map and reduce sides of a MapReduce word count in one process: where a shuffle's per-key time goes.

    python tools/bench/shuffle_ops.py [--mb 4] [--ops-file OLD_OPS.py]

Times, over the ``benchtasks`` corpus split into 16 partitions: the mapper (``count_words``), ``ops.partition``
into 16 parts, encoding the parts for the wire, decoding them, and ``ops.reduce_partition`` (summing reducer),
plus the textbook mapper (``word_pairs``) partitioned with a combiner. ``--ops-file`` loads another version of
``meshaios/shuffle/ops.py`` (``git show REV:meshaios/shuffle/ops.py > old.py``) to compare. Best of 3, seconds.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchtasks as bt

from meshaios.wire.values import dumps, loads


def best(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=4.0, help="corpus size in MB (default 4)")
    ap.add_argument("--ops-file", type=Path, help="another version of meshaios/shuffle/ops.py to time")
    args = ap.parse_args()
    if args.ops_file:
        spec = importlib.util.spec_from_file_location("ops_under_test", args.ops_file)
        if spec is None or spec.loader is None:
            raise SystemExit(f"cannot load {args.ops_file}")
        ops: Any = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(ops)
    else:
        from meshaios.shuffle import ops
    n = bt.NPARTS
    parts = [bt.make_docs(i, int(args.mb * 1e6) // n) for i in range(n)]
    t_map, counts = best(lambda: [bt.count_words(p) for p in parts])
    t_part, maps = best(lambda: [ops.partition(c, n) for c in counts])
    t_enc, enc = best(lambda: [[dumps(x, allow_pickle=False)[0] for x in m] for m in maps])
    t_dec, dec = best(lambda: [[loads(x, allow_pickle=False) for x in m] for m in enc])
    t_red, red = best(lambda: [ops.reduce_partition(bt.add_counts, *[d[j] for d in dec]) for j in range(n)])
    t_pairs, _ = best(lambda: [ops.partition(bt.word_pairs(p), n, bt.add_counts) for p in parts], repeat=1)
    merged = {k: v for r in red for k, v in r.items()}
    if merged != bt.wordcount_local(parts):
        raise SystemExit("the word count is wrong")
    keys = sum(len(c) for c in counts)
    words = sum(sum(c.values()) for c in counts)
    print(
        f"{bt.corpus_bytes(parts) / 1e6:.1f} MB, {words:,} words, {keys:,} distinct words summed over {n} map outputs"
    )
    for name, secs in [
        ("map: count_words (Counter)", t_map),
        ("map side: ops.partition", t_part),
        ("parts encoded (dumps)", t_enc),
        ("parts decoded (loads)", t_dec),
        ("reduce side: ops.reduce_partition", t_red),
        ("textbook map: word_pairs + partition with combiner", t_pairs),
    ]:
        print(f"  {name:52s} {secs:7.3f} s  {secs / keys * 1e9:7.0f} ns per distinct key per map output")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
