"""Batch inference of a small MLP on the GPU node of a local mesh: weights put on the device once, batches
streamed through, every batch checked against numpy in this process.

The model is two layers written with the kernel library -- ``softmax(gelu(x @ W1) @ W2)`` -- and each layer is a
task pinned to a GPU node (``resources={"gpu": 1}``). The weights go to the GPU once, with
``client.put(w, device="gpu")``; a batch's hidden activations stay on the device between its two layers (they are
large), and so do its logits (small, but submitted with ``keep_on_device=True``); only the class probabilities
come back. The GPU node's copy counters (``meshaios status``) show it: one host->device copy
per weight and per batch, one device->host copy per batch. Node 1 has the GPU (the machine's real one if cupy
sees it, else a fake one); with ``--cpu`` the same tasks run on any node, on numpy.

    python examples/mlp_inference.py [--batches 16] [--batch 256] [--features 512] [--hidden 1024] [--cpu]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from rich.console import Console

from meshaios.devices import default_registry, detect_devices
from meshaios.testing.localmesh import LocalMesh, wait_for

K = default_registry()
CLASSES = 10


def model(rng: np.random.Generator, features: int, hidden: int) -> tuple[np.ndarray, np.ndarray]:
    w1 = (rng.standard_normal((features, hidden)) / np.sqrt(features)).astype(np.float32)
    w2 = (rng.standard_normal((hidden, CLASSES)) / np.sqrt(hidden)).astype(np.float32)
    return w1, w2


def reference(x: np.ndarray, w1: np.ndarray, w2: np.ndarray) -> np.ndarray:
    out: np.ndarray = K.get("meshaios.softmax").call("cpu", (K.get("meshaios.gelu").call("cpu", (x @ w1,)) @ w2,))
    return out


def run(batches: int, batch: int, features: int, hidden: int, cpu: bool) -> dict[str, Any]:
    """Runs the job; returns what it saw (agreement, the GPU node's copies during the job, seconds)."""
    rng = np.random.default_rng(11)
    w1, w2 = model(rng, features, hidden)
    xs = [rng.standard_normal((batch, features)).astype(np.float32) for _ in range(batches)]
    real_gpu = any(not g.fake for g in detect_devices().gpus)
    gpu_node = [] if real_gpu else ["--fake-gpu", "speed=8,memory=8GiB"]
    res = None if cpu else {"gpu": 1}
    with LocalMesh(3, per_node_args={0: ["--no-gpu"], 1: gpu_node, 2: ["--no-gpu"]}) as mesh, mesh.client(0) as c:
        wait_for(lambda: len(c.status()["members"]) == 2, timeout=15, what="discovery")
        with mesh.client(1) as c1:
            device = next(iter(c1.status()["node"]["gpu"]))

            def copies() -> tuple[int, int]:
                g = c1.status()["node"]["gpu"][device]
                return int(g["h2d"]), int(g["d2h"])

            before = copies()
            t0 = time.perf_counter()
            r1, r2 = (c.put(w, device=None if cpu else "gpu") for w in (w1, w2))
            outs = []
            for x in xs:  # a batch's two layers: the hidden activations stay on the device
                h = c.submit(K.get("meshaios.gelu"), c.submit(K.get("meshaios.matmul"), x, r1, resources=res),
                             resources=res)  # fmt: skip
                logits = c.submit(K.get("meshaios.matmul"), h, r2, resources=res, keep_on_device=not cpu)
                outs.append(c.submit(K.get("meshaios.softmax"), logits, resources=res))
            probs = c.gather(outs, timeout=600)
            seconds = time.perf_counter() - t0
            after = copies()
            nodes = {f.node for f in outs}
    ok = all(np.allclose(p, reference(x, w1, w2), rtol=1e-4, atol=1e-5) for p, x in zip(probs, xs, strict=True))
    return {
        "ok": ok,
        "h2d": after[0] - before[0],
        "d2h": after[1] - before[1],
        "seconds": seconds,
        "device": device,
        "on_gpu_node": nodes == {mesh.by_index(1).node_id},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=16)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--features", type=int, default=512)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--cpu", action="store_true", help="no GPU asked for: the layers run on any node, on numpy")
    args = ap.parse_args(argv)
    console = Console()
    r = run(args.batches, args.batch, args.features, args.hidden, args.cpu)
    n = args.batches * args.batch
    console.print(
        f"{n} samples in {args.batches} batches through a {args.features}->{args.hidden}->{CLASSES} MLP in "
        f"{r['seconds']:.2f} s ({n / r['seconds']:.0f} samples/s); "
        + ("on any node (--cpu)" if args.cpu else f"all on the GPU node: {r['on_gpu_node']}")
    )
    if not args.cpu:
        console.print(
            f"copies on the GPU node's {r['device']}: {r['h2d']} host->device, {r['d2h']} device->host "
            f"(weights 2 + batches {args.batches} in; {args.batches} results out)"
        )
    colour = "green" if r["ok"] else "red"
    console.print(f"[bold {colour}]probabilities {'match' if r['ok'] else 'DO NOT MATCH'} numpy[/bold {colour}]")
    return 0 if r["ok"] and (args.cpu or r["on_gpu_node"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
