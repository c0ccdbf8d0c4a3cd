"""GPU check: every built-in kernel on GPU and CPU, results compared, speed-ups tabled -- directly and through a
local mesh.

Run on any machine with an NVIDIA GPU and cupy (``pip install -e '.[gpu]'``)::

    python tools/gpu_check.py            # full check; exit status 1 if any kernel disagrees
    python tools/gpu_check.py --small    # quick sizes
    python tools/gpu_check.py --chain-only --chain 4096,2048   # only the chain (issue 18), at these sizes
    python tools/gpu_check.py --overlap-only                   # only the streams and pinned-buffer check

On a machine without a GPU it runs the CPU half and the mesh half on a *fake* GPU (a node started with
``--fake-gpu``), so the script itself is exercised everywhere; the GPU columns then say "n/a".

The chain (issue 18): 4 x (matmul NxN float32 + gelu) + layer_norm + a row sum, four ways -- cupy with the data
resident on the GPU; ``Kernel.call`` on the GPU with host copies around each kernel; chained tasks on a 2-node
local mesh pinned to the GPU node (inputs ``put(..., device="gpu")`` once: copied to its device once, kept there);
numpy on the CPU -- with the host<->device copies each way made per run. Without a GPU (or with ``--fake``) the
GPU rows run on the numpy-backed FakeCupy: their times are numpy's, and the copy counts are the evidence.

The overlap check (issue 18): K tasks, each copying two NxN float32 inputs to the GPU, multiplying them and
keeping the product on the device, which is then read back as a fetch would read it (through a pinned host
buffer) -- run through the node's own device tier (``devices/resident.py``) on one task slot, then on two (a
thread and a CUDA stream each, as ``--gpu-slots 2`` runs them). It checks the products against numpy, that each
slot made a stream of its own and that every product left through a pinned buffer, and prints both times: with
two streams the copies of one task may overlap the other's multiply.
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


# ---- the chain (issue 18) ------------------------------------------------------------------------------------

CHAIN = "4 x (matmul NxN float32 + gelu) + layer_norm + row sum"
CHAIN_ROWS = (
    ("resident", "cupy, data resident on the GPU"),
    ("kernel_call", "Kernel.call on the GPU, host copies around each kernel"),
    ("mesh", "chained tasks on a 2-node mesh, pinned to the GPU node"),
    ("cpu", "numpy on the CPU"),
)


def chain_inputs(n: int, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, n), dtype=np.float32)
    ws = [rng.standard_normal((n, n), dtype=np.float32) / np.float32(np.sqrt(n)) for _ in range(4)]
    return x, ws


def _chain_on(xp: Any, x: Any, ws: list[Any]) -> Any:
    """The chain composed from the library's kernels on one array module: nothing moves."""
    reg = default_registry()
    matmul, gelu, layer_norm, total = (reg.get(f"meshaios.{k}") for k in ("matmul", "gelu", "layer_norm", "sum"))
    h = x
    for w in ws:
        h = gelu(xp, matmul(xp, h, w))
    return total(xp, layer_norm(xp, h), axis=1)


def _copies(counts: Any, before: tuple[int, int]) -> tuple[int, int]:
    return counts.h2d - before[0], counts.d2h - before[1]


def chain_direct(n: int, cp: Any, device: str, repeat: int) -> dict[str, dict[str, Any]]:
    """The resident, Kernel.call and CPU rows: one process, no mesh. ``cp`` is cupy or a FakeCupy."""
    import threading

    from meshaios.devices.resident import TransferCounts, _Meter

    reg = default_registry()
    x, ws = chain_inputs(n)
    rows: dict[str, dict[str, Any]] = {}
    t, out = timed(lambda: _chain_on(np, x, ws), repeat)
    rows["cpu"] = {"s": t, "h2d": 0, "d2h": 0, "out": out}

    counts = TransferCounts()
    meter = _Meter(counts, threading.Lock())
    with cp.cuda.Device(int(device.split(":")[1])):
        dx, dws = cp.asarray(x), [cp.asarray(w) for w in ws]  # put on the device once, before the clock
        start = (counts.h2d, counts.d2h)

        def resident() -> Any:
            s = _chain_on(cp, dx, dws)
            meter.d2h(int(s.nbytes))
            return cp.asnumpy(s)  # the row sums come back: this also waits for the GPU

        t, out = timed(resident, repeat)
    h2d, d2h = _copies(counts, start)
    rows["resident"] = {"s": t, "h2d": 0, "d2h": d2h // (repeat + 1), "setup_h2d": len(ws) + 1, "out": out}

    def call(name: str, *args: Any, **kw: Any) -> Any:
        return reg.get(name).call(device, args, kw, cupy_module=cp, meter=meter)

    def with_copies() -> Any:
        h = x
        for w in ws:
            h = call("meshaios.gelu", call("meshaios.matmul", h, w))
        return call("meshaios.sum", call("meshaios.layer_norm", h), axis=1)

    start = (counts.h2d, counts.d2h)
    t, out = timed(with_copies, repeat)
    h2d, d2h = _copies(counts, start)
    rows["kernel_call"] = {"s": t, "h2d": h2d // (repeat + 1), "d2h": d2h // (repeat + 1), "out": out}
    return rows


def chain_mesh(n: int, fake: bool, repeat: int) -> dict[str, Any]:
    """The chain as mesh tasks pinned to node 1, the GPU node (node 0 ignores any GPU); inputs put once."""
    from meshaios.testing.localmesh import LocalMesh, wait_for

    gpu_args = ["--no-gpu", "--fake-gpu", "speed=8,memory=64GiB"] if fake else []
    reg = default_registry()
    gpu = {"gpu": 1}
    x, ws = chain_inputs(n)
    with LocalMesh(2, per_node_args={0: ["--no-gpu"], 1: gpu_args}) as mesh, mesh.client(0) as c:
        wait_for(lambda: len(c.status()["members"]) == 1, timeout=15, what="discovery")
        with mesh.client(1) as c1:
            device = next(iter(c1.status()["node"]["gpu"]))

            def counts() -> tuple[int, int]:
                g = c1.status()["node"]["gpu"][device]
                return int(g["h2d"]), int(g["d2h"])

            first = counts()
            refs = [c.put(a, device="gpu") for a in (x, *ws)]  # onto the GPU node's device, once

            def run() -> Any:
                h = refs[0]
                for w in refs[1:]:
                    h = c.submit(reg.get("meshaios.gelu"), c.submit(reg.get("meshaios.matmul"), h, w, resources=gpu),
                                 resources=gpu)  # fmt: skip
                h = c.submit(reg.get("meshaios.layer_norm"), h, resources=gpu)
                f = c.submit(reg.get("meshaios.sum"), h, axis=1, resources=gpu)
                out = f.result(timeout=600)
                if f.node != mesh.by_index(1).node_id:
                    raise RuntimeError(f"the chain's last task ran on {f.node}, not on the GPU node")
                return out

            out = run()  # warm-up
            after_first = counts()
            best = float("inf")
            for _ in range(repeat):
                t0 = time.perf_counter()
                out = run()
                best = min(best, time.perf_counter() - t0)
            last = counts()
    return {
        "s": best,
        "h2d": (last[0] - after_first[0]) // repeat,
        "d2h": (last[1] - after_first[1]) // repeat,
        "setup_h2d": after_first[0] - first[0],
        "out": out,
        "device": device,
    }


def gpu_module(fake: bool) -> tuple[Any, str]:
    """The array module of the GPU rows and its device: a FakeCupy, or cupy and the first GPU."""
    if fake:
        from meshaios.devices.fakecupy import FakeCupy

        return FakeCupy(memory=64 * 2**30), "fakegpu:0"
    import cupy

    return cupy, "gpu:0"


def overlap(n: int, tasks: int, repeat: int, fake: bool) -> list[dict[str, Any]]:
    """The overlap check (module docstring): one row per slot count (1, then 2), with its checks."""
    import threading

    from meshaios.devices.resident import PINNED_MIN_BYTES, DeviceTier
    from meshaios.wire.values import loads

    cp, device = gpu_module(fake)
    matmul = default_registry().get("meshaios.matmul")
    rng = np.random.default_rng(1)
    pairs = [(rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32))
             for _ in range(min(tasks, 2))]  # fmt: skip
    expected = [a @ b for a, b in pairs]
    rows = []
    for slots in (1, 2):
        host: dict[str, Any] = {}
        tier = DeviceTier({device: 2**62}, inline_bytes=64 << 10, allow_pickle=False, host_put=host.__setitem__,
                          cupy_modules={device: cp} if fake else None)  # fmt: skip

        def task(i: int, tier: DeviceTier = tier, host: dict[str, Any] = host) -> Any:
            key = f"t{i}"
            r = tier.runner(device, host.get)
            a, b = pairs[i % len(pairs)]
            size, value = r.finish(key, r.call(matmul, (a, b), {}))  # inputs in, product kept on the device
            out = loads(tier.payload(key), allow_pickle=False) if size else value  # type: ignore[arg-type]
            tier.delete(key)  # read back as a fetch reads it: through a pinned buffer
            return out

        def batch(slots: int = slots) -> list[Any]:
            outs: list[Any] = [None] * tasks

            def slot(j: int) -> None:  # a thread per slot, as the node's GPU pool: a stream each
                for i in range(j, tasks, slots):
                    outs[i] = task(i)

            threads = [threading.Thread(target=slot, args=(j,)) for j in range(slots)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            return outs

        t, outs = timed(batch, repeat)
        c = tier.counts[device]
        big = n * n * 4 >= PINNED_MIN_BYTES
        runs = (repeat + 1) * tasks
        rows.append({
            "n": n, "tasks": tasks, "slots": slots, "s": t, "streams": c.streams, "d2h_pinned": c.d2h_pinned,
            "agree": all(agree(o, expected[i % len(expected)]) for i, o in enumerate(outs)),
            "streams_ok": c.streams == slots * (repeat + 1),  # each batch's slot threads: a stream each
            "pinned_ok": c.d2h_pinned == (runs if big else 0), "fake": fake,
        })  # fmt: skip
    if len(rows) == 2 and rows[1]["s"]:
        rows[1]["vs_one_slot"] = rows[0]["s"] / rows[1]["s"]
    return rows


def print_overlap(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    fake = rows[0]["fake"]
    print(f"\noverlap: {rows[0]['tasks']} x (two NxN float32 in, matmul, product out through a pinned buffer), best "
          "of the runs" + (" -- FAKE GPU: times are numpy's; the streams and pinned copies count" if fake else ""))
    print(f"{'N':>6} {'slots':>5} {'time s':>9} {'vs 1 slot':>10} {'streams':>8} {'pinned d2h':>11} {'agree':>6}")
    for r in rows:
        vs = f"{r['vs_one_slot']:.2f}x" if "vs_one_slot" in r else ""
        print(f"{r['n']:>6} {r['slots']:>5} {r['s']:9.4f} {vs:>10} {r['streams']:>8} {r['d2h_pinned']:>11} "
              f"{'yes' if r['agree'] and r['streams_ok'] and r['pinned_ok'] else 'NO':>6}")  # fmt: skip


def overlap_failures(rows: list[dict[str, Any]]) -> list[str]:
    return [f"overlap {k} slots={r['slots']} N={r['n']}" for r in rows
            for k in ("agree", "streams_ok", "pinned_ok") if not r[k]]  # fmt: skip


def chain(n: int, repeat: int, fake: bool, mesh: bool) -> list[dict[str, Any]]:
    cp, device = gpu_module(fake)
    rows = chain_direct(n, cp, device, repeat)
    if mesh:
        rows["mesh"] = chain_mesh(n, fake, repeat)
    ref = rows["cpu"]["out"]
    resident = rows["resident"]["s"]
    out = []
    for key, label in CHAIN_ROWS:
        if key not in rows:
            continue
        r = rows[key]
        out.append({"n": n, "row": key, "how": label, "s": r["s"], "vs_resident": r["s"] / resident,
                    "h2d": r["h2d"], "d2h": r["d2h"], "setup_h2d": r.get("setup_h2d", 0),
                    "agree": agree(r["out"], ref), "fake": fake})  # fmt: skip
    return out


def print_chain(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    fake = rows[0]["fake"]
    print(f"\nchain: {CHAIN}, best of the runs" + (" -- FAKE GPU: times are numpy's; the copies count" if fake else ""))
    print(f"{'N':>6} {'how it ran':56} {'time s':>9} {'vs resident':>12} {'h2d/run':>8} {'d2h/run':>8} "
          f"{'once':>5} {'agree':>6}")  # fmt: skip
    for r in rows:
        print(f"{r['n']:>6} {r['how']:56} {r['s']:9.4f} {r['vs_resident']:11.1f}x {r['h2d']:>8} {r['d2h']:>8} "
              f"{r['setup_h2d']:>5} {'yes' if r['agree'] else 'NO':>6}")  # fmt: skip
    print("(h2d/d2h per run: host->device / device->host copies of one run; once: inputs copied to the device once")
    print(" before the timed runs. Mesh row: counters of the GPU node, from meshaios status)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="small inputs (a quick run)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-mesh", action="store_true", help="skip the local-mesh half")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--chain", default=None, help="sizes N of the chain, comma-separated (default 4096; 512 with "
                    "--small; 0 skips it)")  # fmt: skip
    ap.add_argument("--chain-only", action="store_true", help="only the chain")
    ap.add_argument("--fake", action="store_true", help="run the GPU rows of the chain on a fake GPU even here")
    ap.add_argument("--overlap", default=None, help="N,K of the overlap check: K tasks on NxN matrices (default "
                    "4096,8; 512,8 with --small; 0 skips it)")  # fmt: skip
    ap.add_argument("--overlap-only", action="store_true", help="only the overlap check")
    args = ap.parse_args(argv)

    inv = detect_devices()
    real = [g for g in inv.gpus if not g.fake]
    gpu = real[0].device if real else None
    print(f"devices: {inv.summary()}" + (f" ({real[0].name}, cc {real[0].compute_capability})" if real else ""))
    ov = [int(v) for v in (args.overlap or ("512,8" if args.small else "4096,8")).split(",")]
    run_overlap = ov[0] > 0 and not args.chain_only
    overlap_rows = overlap(ov[0], ov[1] if len(ov) > 1 else 8, args.repeat, args.fake or not real) if run_overlap \
        else []
    print_overlap(overlap_rows)
    bad_overlap = overlap_failures(overlap_rows)
    if args.overlap_only:
        if args.json:
            with open(args.json, "w") as fh:
                json.dump({"devices": inv.summary(), "overlap": overlap_rows}, fh, indent=2)
        if bad_overlap:
            print(f"\nFAILED: {', '.join(bad_overlap)}")
        return 1 if bad_overlap else 0
    sizes = [int(v) for v in (args.chain or ("512" if args.small else "4096")).split(",") if int(v) > 0]
    chain_rows = [r for n in sizes for r in chain(n, args.repeat, args.fake or not real, not args.no_mesh)]
    print_chain(chain_rows)
    bad_chain = bad_overlap + [f"chain {r['row']} N={r['n']}" for r in chain_rows if not r["agree"]]
    if args.chain_only:
        if args.json:
            with open(args.json, "w") as fh:
                json.dump({"devices": inv.summary(), "chain": chain_rows, "overlap": overlap_rows}, fh, indent=2)
        if bad_chain:
            print(f"\nFAILED: {', '.join(bad_chain)}")
        return 1 if bad_chain else 0
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
            json.dump({"devices": inv.summary(), "direct": rows, "mesh": mesh_rows, "chain": chain_rows,
                       "overlap": overlap_rows}, fh, indent=2)  # fmt: skip
    bad = bad_chain + [r["kernel"] for r in rows if r["agree"] is False] + [
        r["kernel"] for r in mesh_rows if not (r["agree"] and r["gpu_node"])
    ]
    if bad:
        print(f"\nFAILED: {', '.join(bad)}")
        return 1
    print("\nall kernels agree" + ("" if real else " (CPU half only: no GPU here)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
