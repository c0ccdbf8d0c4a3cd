"""GPU check: every built-in kernel on GPU and CPU, results compared, speed-ups tabled -- directly and through a
local mesh.

Run on any machine with an NVIDIA GPU and cupy (``pip install -e '.[gpu]'``)::

    python tools/gpu_check.py            # full check; exit status 1 if any kernel disagrees
    python tools/gpu_check.py --small    # quick sizes

On a machine without a GPU it runs the CPU half and the mesh half on a *fake* GPU (a node started with
``--fake-gpu``), so the script itself is exercised everywhere; the GPU columns then say "n/a".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from meshaios.devices import default_registry, detect_devices


def cases(small: bool) -> dict[str, tuple[tuple[Any, ...], dict[str, Any]]]:
    rng = np.random.default_rng(0)
    n = 256 if small else 2048
    img = rng.random((4, 256, 256) if small else (16, 1024, 1024)).astype(np.float32)
    x = rng.standard_normal((n, n)).astype(np.float32)
    y = rng.standard_normal((n, n)).astype(np.float32)
    corpus = rng.standard_normal((20_000 if small else 500_000, 128)).astype(np.float32)
    queries = rng.standard_normal((16, 128)).astype(np.float32)
    keys = rng.integers(0, 2**40, 1_000_000 if small else 20_000_000, dtype=np.int64)
    return {
        "meshaios.matmul": ((x, y), {}),
        "meshaios.batched_matmul": ((x[:64].reshape(4, 16, -1), y[:n].reshape(n, -1)[:, :64]), {}),
        "meshaios.add": ((x, y), {}),
        "meshaios.multiply": ((x, y), {}),
        "meshaios.relu": ((x,), {}),
        "meshaios.gelu": ((x,), {}),
        "meshaios.exp": ((x,), {}),
        "meshaios.sum": ((x,), {"axis": 1}),
        "meshaios.mean": ((x,), {"axis": 0}),
        "meshaios.max": ((x,), {"axis": 1}),
        "meshaios.softmax": ((x,), {"axis": -1}),
        "meshaios.layer_norm": ((x,), {}),
        "meshaios.conv2d": ((img, rng.random((5, 5)).astype(np.float32)), {"mode": "same"}),
        "meshaios.blur": ((img,), {"sigma": 2.0}),
        "meshaios.edge": ((img,), {}),
        "meshaios.cosine_topk": ((queries, corpus), {"k": 10}),
        "meshaios.histogram": ((x.ravel(),), {"bins": 64, "range": (-4.0, 4.0)}),
        "meshaios.hash_partition": ((keys, None, 16), {}),
    }


def agree(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(agree(x, y) for x, y in zip(a, b, strict=True))
    if a is None or b is None:
        return a is b
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    if a.dtype.kind in "iub":
        return bool(np.array_equal(a, b))
    return bool(np.allclose(a, b, rtol=2e-3, atol=2e-3))


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    out = fn()  # warm-up (compilation, memory pools)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def direct(small: bool, gpu: str | None, repeat: int) -> list[dict[str, Any]]:
    reg = default_registry()
    rows = []
    for name, (args, kwargs) in cases(small).items():
        k = reg.get(name)
        t_cpu, out_cpu = timed(lambda k=k, a=args, kw=kwargs: k.call("cpu", a, kw), repeat)
        row: dict[str, Any] = {"kernel": name, "cpu_s": t_cpu, "gpu_s": None, "speedup": None, "agree": None}
        if gpu is not None and k.supports_gpu:
            t_gpu, out_gpu = timed(lambda k=k, a=args, kw=kwargs: k.call(gpu, a, kw), repeat)
            row.update(gpu_s=t_gpu, speedup=t_cpu / t_gpu if t_gpu else None, agree=agree(out_cpu, out_gpu))
        rows.append(row)
    return rows


def through_mesh(small: bool, have_gpu: bool) -> list[dict[str, Any]]:
    """Each kernel submitted twice to a 2-node mesh: pinned to the GPU node (resources gpu=1), and to any node."""
    from meshaios.testing.localmesh import LocalMesh, wait_for

    gpu_args = [] if have_gpu else ["--fake-gpu", "speed=8,memory=16GiB"]
    rows = []
    # node 0 is told to ignore the GPU so that "pinned to the GPU node" has one right answer on a one-GPU machine
    with LocalMesh(2, per_node_args={0: ["--no-gpu"], 1: gpu_args}) as mesh, mesh.client(0) as c:
        wait_for(lambda: len(c.status()["members"]) == 1, timeout=15, what="discovery")
        reg = default_registry()
        for name, (args, kwargs) in cases(True).items():  # small inputs: this half checks routing and results
            k = reg.get(name)
            t0 = time.perf_counter()
            on_gpu = c.submit(k, *args, resources={"gpu": 1}, **kwargs)
            anywhere = c.submit(k, *args, **kwargs)
            ok = agree(on_gpu.result(timeout=300), anywhere.result(timeout=300))
            rows.append(
                {
                    "kernel": name,
                    "gpu_node": on_gpu.node == mesh.by_index(1).node_id,
                    "agree": ok,
                    "round_trip_s": time.perf_counter() - t0,
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="small inputs (a quick run)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-mesh", action="store_true", help="skip the local-mesh half")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)

    inv = detect_devices()
    real = [g for g in inv.gpus if not g.fake]
    gpu = real[0].device if real else None
    print(f"devices: {inv.summary()}" + (f" ({real[0].name}, cc {real[0].compute_capability})" if real else ""))
    rows = direct(args.small, gpu, args.repeat)
    print(f"\n{'kernel':28} {'cpu s':>10} {'gpu s':>10} {'speed-up':>9} {'agree':>6}")
    for r in rows:
        g = "n/a" if r["gpu_s"] is None else f"{r['gpu_s']:.5f}"
        sp = "n/a" if r["speedup"] is None else f"{r['speedup']:.1f}x"
        ag = "n/a" if r["agree"] is None else ("yes" if r["agree"] else "NO")
        print(f"{r['kernel']:28} {r['cpu_s']:10.5f} {g:>10} {sp:>9} {ag:>6}")
    mesh_rows: list[dict[str, Any]] = []
    if not args.no_mesh:
        mesh_rows = through_mesh(args.small, bool(real))
        print(f"\nthrough a 2-node mesh ({'real' if real else 'fake'} GPU on node 1):")
        print(f"{'kernel':28} {'ran on GPU node':>16} {'agree':>6} {'round trip s':>13}")
        for r in mesh_rows:
            ag = "yes" if r["agree"] else "NO"
            print(f"{r['kernel']:28} {r['gpu_node']!s:>16} {ag:>6} {r['round_trip_s']:13.3f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"devices": inv.summary(), "direct": rows, "mesh": mesh_rows}, fh, indent=2)
    bad = [r["kernel"] for r in rows if r["agree"] is False] + [
        r["kernel"] for r in mesh_rows if not (r["agree"] and r["gpu_node"])
    ]
    if bad:
        print(f"\nFAILED: {', '.join(bad)}")
        return 1
    print("\nall kernels agree" + ("" if real else " (CPU half only: no GPU here)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
