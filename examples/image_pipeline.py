"""An image pipeline over many synthetic images: blur -> edge detection -> features, batch by batch on the mesh.

Each task takes a batch of images, runs the ``meshaios.blur``, ``meshaios.edge`` and ``meshaios.histogram``
kernels (numpy here; cupy on a node with a GPU: submit with ``--gpu`` to pin batches to GPU nodes) and returns a
small feature vector per image (edge-energy histogram + mean intensity). The features are checked against the
same pipeline run in one process.

    python examples/image_pipeline.py [--images 512] [--size 256] [--batch 32] [--gpu]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from rich.console import Console

from meshaios.devices.kernels import blur, edge, histogram
from meshaios.testing.localmesh import LocalMesh, wait_for


def synthetic_images(seed: int, count: int, size: int) -> np.ndarray:
    """Random rectangles and discs on noise: images with real edges to find."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    out = rng.random((count, size, size), dtype=np.float32) * 0.1
    for i in range(count):
        for _ in range(4):
            cx, cy = rng.integers(0, size, 2).tolist()
            r = int(rng.integers(size // 16, size // 4))
            if rng.random() < 0.5:
                out[i][(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] += 0.8
            else:
                out[i][max(0, cy - r) : cy + r, max(0, cx - r) : cx + r] += 0.6
    return out


def features(images: np.ndarray, device: str = "cpu") -> np.ndarray:
    smooth = blur.call(device, (images,), {"sigma": 1.5})
    edges = edge.call(device, (smooth,), {})
    feats = []
    for e, img in zip(edges, images, strict=True):
        counts, _ = histogram.call(device, (e.ravel(),), {"bins": 16, "range": (0.0, 4.0)})
        feats.append(np.concatenate([counts / e.size, [img.mean()]]))
    return np.asarray(feats, dtype=np.float64)


def batch_features(seed: int, count: int, size: int) -> np.ndarray:
    return features(synthetic_images(seed, count, size))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--gpu", action="store_true", help="run batches only on nodes with a GPU")
    args = ap.parse_args()
    console = Console()
    batches = args.images // args.batch
    with LocalMesh(args.nodes) as mesh, mesh.client(0) as c:
        wait_for(lambda: len(c.status()["members"]) >= args.nodes - 1, timeout=15, what="discovery")
        t0 = time.perf_counter()
        res = {"gpu": 1} if args.gpu else None
        futs = [c.submit(batch_features, b, args.batch, args.size, resources=res) for b in range(batches)]
        feats = np.concatenate(c.gather(futs, timeout=600))
        elapsed = time.perf_counter() - t0
        check = [0, batches // 2, batches - 1]
        ok = all(
            np.allclose(feats[b * args.batch : (b + 1) * args.batch], batch_features(b, args.batch, args.size))
            for b in check
        )
        per_node: dict[str, int] = {}
        for f in futs:
            per_node[f.node[:8]] = per_node.get(f.node[:8], 0) + args.batch
        console.print(
            f"{batches * args.batch} images of {args.size}x{args.size} -> {feats.shape[1]} features each in "
            f"{elapsed:.2f} s ({batches * args.batch / elapsed:.0f} images/s); images per node: {per_node}"
        )
        colour = "green" if ok else "red"
        console.print(
            f"[bold {colour}]features {'match' if ok else 'DO NOT MATCH'} the single-process pipeline[/bold {colour}]"
        )
        return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
