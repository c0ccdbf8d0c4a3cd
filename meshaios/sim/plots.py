"""Plots for ``docs/scheduling.md`` from the simulator's JSON output (matplotlib, an optional dependency).

Usage::

    python -m meshaios.sim --workload burst --tasks 3000 --json --curve > burst.json
    python -m meshaios.sim --bench-placement 10,100,1000 --json > bench.json
    python -m meshaios.sim.plots --compare burst.json --mape burst.json --bench bench.json --out docs/images

Why a module and not a notebook: the figures in the docs must be reproducible from a command.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _plt() -> Any:
    try:
        mpl = importlib.import_module("matplotlib")
        mpl.use("Agg")
        return importlib.import_module("matplotlib.pyplot")
    except ImportError:
        raise SystemExit("plots need matplotlib (pip install matplotlib)") from None


def compare(docs: Sequence[dict[str, Any]], out: Path) -> Path:
    """Makespan relative to offline HEFT, per policy, one group of bars per JSON document (workload/seed)."""
    plt = _plt()
    policies = [d["policy"] for d in docs[0]["results"]]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    width = 0.8 / len(policies)
    for i, p in enumerate(policies):
        ys = [next(r["vs_heft"] for r in d["results"] if r["policy"] == p) for d in docs]
        ax.bar([j + i * width for j in range(len(docs))], ys, width, label=p)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.axhline(1.15, color="k", lw=0.8, ls="--")
    ax.set_xticks([j + width * (len(policies) - 1) / 2 for j in range(len(docs))])
    ax.set_xticklabels([f"{d['workload']}\n{d['tasks']} tasks\nseed {d['seed']}" for d in docs], fontsize=7)
    ax.set_ylabel("makespan / offline HEFT")
    ax.legend(fontsize=7, ncol=len(policies))
    fig.tight_layout()
    path = out / "sched_makespan.png"
    fig.savefig(path, dpi=120)
    return path


def mape(doc: dict[str, Any], out: Path) -> Path:
    plt = _plt()
    curve = next(r["mape_curve"] for r in doc["results"] if r["policy"] == "eft")
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot([c[0] for c in curve], [100 * c[1] for c in curve])
    ax.axhline(25, color="k", lw=0.8, ls="--")
    ax.set_yscale("log")
    ax.set_xlabel("executions learned")
    ax.set_ylabel("MAPE of last 200 predictions, %")
    fig.tight_layout()
    path = out / "sched_mape.png"
    fig.savefig(path, dpi=120)
    return path


def bench(doc: dict[str, Any], out: Path) -> Path:
    plt = _plt()
    rows = doc["bench_placement"]
    fig, ax = plt.subplots(figsize=(6, 3))
    for key in [k for k in rows[0] if k.endswith("_us")]:
        ax.plot([r["nodes"] for r in rows], [r[key] for r in rows], marker="o", label=key[:-3])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("nodes in the mesh")
    ax.set_ylabel("us per placement decision")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "sched_placement_cost.png"
    fig.savefig(path, dpi=120)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m meshaios.sim.plots")
    p.add_argument("--compare", nargs="*", default=[], help="JSON documents from `meshaios sim --json`")
    p.add_argument("--mape", help="a JSON document made with --curve")
    p.add_argument("--bench", help="a JSON document from --bench-placement")
    p.add_argument("--out", default="docs/images")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    made = []
    if args.compare:
        made.append(compare([json.loads(Path(f).read_text()) for f in args.compare], out))
    if args.mape:
        made.append(mape(json.loads(Path(args.mape).read_text()), out))
    if args.bench:
        made.append(bench(json.loads(Path(args.bench).read_text()), out))
    sys.stdout.write("".join(f"{m}\n" for m in made))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
