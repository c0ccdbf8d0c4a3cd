"""Every built-in kernel against an independent reference, on every device this machine can offer.

References are written differently from the kernels on purpose: plain Python loops over indices (and, where it
is installed, scipy as a second opinion), so that a shared misunderstanding cannot make both sides agree.

Devices: "cpu" and "fakegpu:0" through ``Kernel.run``, and "gpu:0" through ``Kernel.call`` with the numpy-backed
cupy stand-in, which exercises the host <-> device plumbing and cupy's sorting rules.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from meshaios.devices import Kernel, KernelRegistry
from meshaios.devices import kernels as K
from meshaios.devices.fakecupy import FakeCupy, FakeDeviceArray

DEVICES = ["cpu", "fakegpu:0", "gpu:0"]
Run = Callable[..., Any]


def _assert_host(obj: Any) -> None:
    if isinstance(obj, list | tuple):
        for o in obj:
            _assert_host(o)
    elif isinstance(obj, np.ndarray):
        assert type(obj) is np.ndarray, f"device array leaked out: {type(obj)}"
        assert not isinstance(obj, FakeDeviceArray)


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def run(device: str) -> Run:
    shim = FakeCupy()

    def go(k: Kernel, *args: Any, **kwargs: Any) -> Any:
        if device.startswith("gpu"):
            out = k.call(device, args, kwargs, cupy_module=shim)
        else:
            out = k.run(device, *args, **kwargs)
        _assert_host(out)
        return out

    return go


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def close(a: Any, b: Any, tol: float = 1e-9) -> None:
    np.testing.assert_allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), rtol=tol, atol=tol)


# ------------------------------------------------------------------------------------------------- registry


def test_builtins_are_namespaced_and_complete() -> None:
    names = {k.name for k in K.BUILTIN_KERNELS}
    expected = {
        f"meshaios.{n}"
        for n in [
            "matmul",
            "batched_matmul",
            "add",
            "multiply",
            "relu",
            "gelu",
            "exp",
            "sum",
            "mean",
            "max",
            "softmax",
            "layer_norm",
            "conv2d",
            "blur",
            "edge",
            "cosine_topk",
            "histogram",
            "hash_partition",
        ]
    }
    assert names == expected
    assert all(k.supports_gpu for k in K.BUILTIN_KERNELS)
    assert set(KernelRegistry.with_builtins().names()) == expected


# ----------------------------------------------------------------------------------------- linear algebra


def naive_matmul(a: np.ndarray, b: np.ndarray) -> list[list[float]]:
    return [
        [math.fsum(float(a[i, t]) * float(b[t, j]) for t in range(a.shape[1])) for j in range(b.shape[1])]
        for i in range(a.shape[0])
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul(run: Run, dtype: Any) -> None:
    a = rng(1).normal(size=(4, 3)).astype(dtype)
    b = rng(2).normal(size=(3, 5)).astype(dtype)
    out = run(K.matmul, a, b)
    assert out.dtype == dtype
    assert out.shape == (4, 5)
    close(out, naive_matmul(a, b), 1e-5 if dtype == np.float32 else 1e-12)
    v = rng(3).normal(size=3)
    close(run(K.matmul, a.astype(np.float64), v), [row[0] for row in naive_matmul(a, v[:, None])])


def test_matmul_rejects_stacks_and_handles_empty(run: Run) -> None:
    with pytest.raises(ValueError, match="batched_matmul"):
        run(K.matmul, np.ones((2, 2, 2)), np.ones((2, 2)))
    out = run(K.matmul, np.ones((0, 3)), np.ones((3, 4)))
    assert out.shape == (0, 4)
    assert run(K.matmul, np.ones((2, 0)), np.ones((0, 3))).tolist() == [[0.0] * 3] * 2


def test_batched_matmul(run: Run) -> None:
    a = rng(4).normal(size=(3, 2, 4))
    b = rng(5).normal(size=(3, 4, 2))
    out = run(K.batched_matmul, a, b)
    close(out, [naive_matmul(a[i], b[i]) for i in range(3)])
    shared = rng(6).normal(size=(4, 5))
    close(run(K.batched_matmul, a, shared), [naive_matmul(a[i], shared) for i in range(3)])
    with pytest.raises(ValueError, match="stacks"):
        run(K.batched_matmul, np.ones((2, 2)), np.ones((2, 2)))


# -------------------------------------------------------------------------------------------- elementwise


def test_add_and_multiply_broadcast(run: Run) -> None:
    a = rng(7).normal(size=(3, 4))
    b = rng(8).normal(size=(4,))
    got_add, got_mul = run(K.add, a, b), run(K.multiply, a, b)
    for i, j in itertools.product(range(3), range(4)):
        assert got_add[i, j] == a[i, j] + b[j]
        assert got_mul[i, j] == a[i, j] * b[j]


def test_python_scalars_do_not_promote(run: Run) -> None:
    x = np.arange(6, dtype=np.float32)
    assert run(K.add, x, 2.5).dtype == np.float32
    assert run(K.multiply, 3, x).dtype == np.float32
    close(run(K.multiply, x, 2.0), [2.0 * v for v in range(6)])
    assert run(K.add, [1, 2], [3, 4]).tolist() == [4, 6]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unary_ops(run: Run, dtype: Any) -> None:
    x = rng(9).normal(size=(5, 3)).astype(dtype) * 3
    flat = [float(v) for v in x.ravel()]
    tol = 1e-6 if dtype == np.float32 else 1e-12
    relu, exp, gelu = run(K.relu, x), run(K.exp, x), run(K.gelu, x)
    assert relu.dtype == exp.dtype == gelu.dtype == dtype
    close(relu.ravel(), [max(v, 0.0) for v in flat], tol)
    close(exp.ravel(), [math.exp(v) for v in flat], tol)
    c = math.sqrt(2 / math.pi)
    close(gelu.ravel(), [0.5 * v * (1 + math.tanh(c * (v + 0.044715 * v**3))) for v in flat], 1e-5)
    # The tanh form stays within a few 1e-4 of the exact erf definition.
    exact = [0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in flat]
    np.testing.assert_allclose(gelu.ravel(), exact, atol=2e-3)


def test_unary_ops_on_empty_and_ints(run: Run) -> None:
    e = np.zeros((0, 3), dtype=np.float32)
    for k in (K.relu, K.exp, K.gelu):
        out = run(k, e)
        assert out.shape == (0, 3)
        assert out.dtype == np.float32
    assert run(K.relu, np.array([-2, 0, 3])).tolist() == [0, 0, 3]
    assert run(K.relu, np.array([-2, 0, 3])).dtype == np.int64
    assert run(K.gelu, np.array([0, 1])).dtype == np.float64


# ------------------------------------------------------------------------------------------------ reductions


def ref_reduce(x: np.ndarray, axis: int | None, fn: Callable[[list[float]], float]) -> Any:
    if axis is None:
        return fn([float(v) for v in x.ravel()])
    moved = np.moveaxis(x, axis, -1)
    rows = moved.reshape(-1, moved.shape[-1])
    return np.array([fn([float(v) for v in row]) for row in rows]).reshape(moved.shape[:-1])


@pytest.mark.parametrize("axis", [None, 0, 1, -1])
def test_reductions(run: Run, axis: int | None) -> None:
    x = rng(10).normal(size=(4, 5, 3))
    close(run(K.reduce_sum, x, axis=axis), ref_reduce(x, axis, math.fsum))
    close(run(K.reduce_mean, x, axis=axis), ref_reduce(x, axis, lambda r: math.fsum(r) / len(r)))
    close(run(K.reduce_max, x, axis=axis), ref_reduce(x, axis, max))


def test_reductions_scalars_keepdims_and_wire_axes(run: Run) -> None:
    x = rng(11).normal(size=(3, 4)).astype(np.float32)
    total = run(K.reduce_sum, x)
    # A full reduction is a numpy scalar on every device (cupy would give a 0-d array; it is normalised).
    assert isinstance(total, np.float32)
    assert run(K.reduce_max, x, axis=1, keepdims=True).shape == (3, 1)
    # msgpack turns tuples into lists; a list of axes must still work.
    close(run(K.reduce_sum, x, axis=[0, 1]), math.fsum(float(v) for v in x.ravel()), 1e-5)


def test_reductions_on_empty(run: Run) -> None:
    assert run(K.reduce_sum, np.zeros((0,))) == 0.0
    assert run(K.reduce_sum, np.zeros((0, 3)), axis=0).tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="empty"):
        run(K.reduce_max, np.zeros((0, 3)))


# ---------------------------------------------------------------------------------------------- activations


def ref_softmax_row(row: list[float]) -> list[float]:
    m = max(row)
    e = [math.exp(v - m) for v in row]
    s = math.fsum(e)
    return [v / s for v in e]


@pytest.mark.parametrize("axis", [-1, 0])
def test_softmax(run: Run, axis: int) -> None:
    x = rng(12).normal(size=(4, 6)) * 5
    out = run(K.softmax, x, axis=axis)
    xt = x if axis == -1 else x.T
    ref = np.array([ref_softmax_row([float(v) for v in row]) for row in xt])
    close(out if axis == -1 else out.T, ref, 1e-12)


def test_softmax_is_stable_and_keeps_dtype(run: Run) -> None:
    x = np.array([[1000.0, 1001.0, 1002.0], [-1000.0, -1001.0, -1002.0]], dtype=np.float32)
    out = run(K.softmax, x)
    assert out.dtype == np.float32
    assert np.isfinite(out).all()
    close(out[0], ref_softmax_row([1000.0, 1001.0, 1002.0]), 1e-6)
    masked = np.array([[0.0, -np.inf, 1.0], [-np.inf, -np.inf, -np.inf]])
    out = run(K.softmax, masked)
    close(out[0], [1 / (1 + math.e), 0.0, math.e / (1 + math.e)], 1e-12)
    assert np.isnan(out[1]).all()
    assert run(K.softmax, np.zeros((3, 0))).shape == (3, 0)
    assert run(K.softmax, np.array([1, 2])).dtype == np.float64


def ref_layer_norm(x: np.ndarray, eps: float) -> np.ndarray:
    out = []
    for row in x.reshape(-1, x.shape[-1]):
        vals = [float(v) for v in row]
        mu = math.fsum(vals) / len(vals)
        var = math.fsum((v - mu) ** 2 for v in vals) / len(vals)
        out.append([(v - mu) / math.sqrt(var + eps) for v in vals])
    return np.array(out).reshape(x.shape)


def test_layer_norm(run: Run) -> None:
    x = rng(13).normal(loc=3.0, scale=2.0, size=(2, 3, 8))
    close(run(K.layer_norm, x), ref_layer_norm(x, 1e-5), 1e-10)
    gamma, beta = rng(14).normal(size=8), rng(15).normal(size=8)
    close(run(K.layer_norm, x, gamma, beta, eps=1e-3), ref_layer_norm(x, 1e-3) * gamma + beta, 1e-10)
    close(run(K.layer_norm, x, beta=beta), ref_layer_norm(x, 1e-5) + beta, 1e-10)


def test_layer_norm_dtype_empty_and_errors(run: Run) -> None:
    x = (rng(16).normal(size=(4, 16)) + 1e3).astype(np.float32)
    out = run(K.layer_norm, x, np.ones(16), np.zeros(16))
    assert out.dtype == np.float32
    close(out, ref_layer_norm(x.astype(np.float64), 1e-5), 1e-3)
    assert run(K.layer_norm, np.zeros((0, 4))).shape == (0, 4)
    constant = run(K.layer_norm, np.full((2, 3), 7.0))
    assert np.all(constant == 0)
    with pytest.raises(ValueError, match="eps"):
        run(K.layer_norm, x, eps=-1.0)


# --------------------------------------------------------------------------------------------------- images


def naive_conv2d(x: np.ndarray, w: np.ndarray, mode: str, boundary: str = "fill", fill: float = 0.0) -> np.ndarray:
    """scipy.signal.convolve2d's definition, by loops: full[i, j] = sum x[i-u, j-v] * w[u, v]."""
    h, wd = x.shape
    kh, kw = w.shape

    def val(a: int, b: int) -> float:
        if 0 <= a < h and 0 <= b < wd:
            return float(x[a, b])
        if boundary == "fill":
            return fill
        return float(x[min(max(a, 0), h - 1), min(max(b, 0), wd - 1)])

    if mode == "full":
        rows, cols, off = h + kh - 1, wd + kw - 1, (0, 0)
    elif mode == "same":
        rows, cols, off = h, wd, ((kh - 1) // 2, (kw - 1) // 2)
    else:
        rows, cols, off = max(h - kh + 1, 0), max(wd - kw + 1, 0), (kh - 1, kw - 1)
    out = np.zeros((rows, cols))
    for i in range(rows):
        for j in range(cols):
            fi, fj = i + off[0], j + off[1]
            out[i, j] = math.fsum(val(fi - u, fj - v) * float(w[u, v]) for u in range(kh) for v in range(kw))
    return out


@pytest.mark.parametrize("mode", ["same", "valid", "full"])
@pytest.mark.parametrize("kshape", [(3, 3), (2, 4), (1, 5), (4, 1)])
def test_conv2d_against_loops(run: Run, mode: str, kshape: tuple[int, int]) -> None:
    x = rng(17).normal(size=(7, 6))
    w = rng(18).normal(size=kshape)
    close(run(K.conv2d, x, w, mode), naive_conv2d(x, w, mode), 1e-10)
    # Correlation is convolution with the kernel flipped on both axes.
    close(run(K.conv2d, x, w, mode, correlate=True), naive_conv2d(x, w[::-1, ::-1], mode), 1e-10)


@pytest.mark.parametrize("kshape", [(3, 3), (2, 2), (5, 3)])
def test_conv2d_nearest_and_fill_value(run: Run, kshape: tuple[int, int]) -> None:
    x = rng(19).normal(size=(6, 5))
    w = rng(20).normal(size=kshape)
    close(run(K.conv2d, x, w, boundary="nearest"), naive_conv2d(x, w, "same", "nearest"), 1e-10)
    close(run(K.conv2d, x, w, "full", fill_value=2.5), naive_conv2d(x, w, "full", "fill", 2.5), 1e-10)


def test_conv2d_matches_scipy(run: Run) -> None:
    signal = pytest.importorskip("scipy.signal")
    x = rng(21).normal(size=(9, 8))
    for kshape in [(3, 3), (4, 2), (2, 5)]:
        w = rng(22).normal(size=kshape)
        for mode in ("same", "valid", "full"):
            close(run(K.conv2d, x, w, mode), signal.convolve2d(x, w, mode=mode), 1e-10)


def test_conv2d_batches_and_dtypes(run: Run) -> None:
    x = rng(23).normal(size=(2, 3, 6, 5)).astype(np.float32)
    w = rng(24).normal(size=(3, 3)).astype(np.float32)
    out = run(K.conv2d, x, w)
    assert out.shape == x.shape
    assert out.dtype == np.float32
    for a, b in itertools.product(range(2), range(3)):
        close(out[a, b], naive_conv2d(x[a, b], w, "same"), 1e-4)
    img = np.arange(12, dtype=np.uint8).reshape(3, 4)
    got = run(K.conv2d, img, np.ones((2, 2), dtype=np.uint8), "valid")
    # Integer images give float64: uint8 arithmetic would wrap silently.
    assert got.dtype == np.float64
    close(got, naive_conv2d(img, np.ones((2, 2)), "valid"))


def test_conv2d_edge_cases(run: Run) -> None:
    assert run(K.conv2d, np.zeros((0, 4, 4)), np.ones((3, 3))).shape == (0, 4, 4)
    assert run(K.conv2d, np.zeros((0, 0)), np.ones((3, 3)), boundary="nearest").shape == (0, 0)
    assert run(K.conv2d, np.ones((2, 2)), np.ones((3, 3)), "valid").shape == (0, 0)
    close(run(K.conv2d, np.ones((1, 1)), np.ones((3, 3)), boundary="nearest"), [[9.0]])
    with pytest.raises(ValueError, match="kernel"):
        run(K.conv2d, np.ones((3, 3)), np.ones((0, 3)))
    with pytest.raises(ValueError, match="mode"):
        run(K.conv2d, np.ones((3, 3)), np.ones((3, 3)), "circular")
    with pytest.raises(ValueError, match="boundary"):
        run(K.conv2d, np.ones((3, 3)), np.ones((3, 3)), boundary="wrap")
    with pytest.raises(ValueError, match="image"):
        run(K.conv2d, np.ones(3), np.ones((3, 3)))


def gaussian_2d(sigma: float, truncate: float = 4.0) -> np.ndarray:
    r = int(truncate * sigma + 0.5)
    g = [math.exp(-(t * t) / (2 * sigma * sigma)) for t in range(-r, r + 1)]
    s = math.fsum(g)
    g = [v / s for v in g]
    return np.array([[a * b for b in g] for a in g])


@pytest.mark.parametrize("sigma", [0.5, 1.0, 1.7])
@pytest.mark.parametrize("boundary", ["nearest", "fill"])
def test_blur(run: Run, sigma: float, boundary: str) -> None:
    x = rng(25).random(size=(9, 11))
    out = run(K.blur, x, sigma, boundary=boundary)
    close(out, naive_conv2d(x, gaussian_2d(sigma), "same", boundary), 1e-10)


def test_blur_matches_scipy_and_keeps_mass(run: Run) -> None:
    x = rng(26).random(size=(3, 12, 10)).astype(np.float32)
    out = run(K.blur, x, 1.3)
    assert out.dtype == np.float32
    assert out.shape == x.shape
    constant = run(K.blur, np.full((5, 5), 4.0), 2.0)
    close(constant, np.full((5, 5), 4.0), 1e-12)
    ndimage = pytest.importorskip("scipy.ndimage")
    for i in range(3):
        close(out[i], ndimage.gaussian_filter(x[i].astype(np.float64), 1.3, mode="nearest"), 1e-5)
    with pytest.raises(ValueError, match="sigma"):
        run(K.blur, x, 0.0)


def naive_sobel(x: np.ndarray) -> np.ndarray:
    h, w = x.shape

    def p(a: int, b: int) -> float:
        return float(x[min(max(a, 0), h - 1), min(max(b, 0), w - 1)])

    out = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            gx = (p(i - 1, j + 1) + 2 * p(i, j + 1) + p(i + 1, j + 1)) - (
                p(i - 1, j - 1) + 2 * p(i, j - 1) + p(i + 1, j - 1)
            )
            gy = (p(i + 1, j - 1) + 2 * p(i + 1, j) + p(i + 1, j + 1)) - (
                p(i - 1, j - 1) + 2 * p(i - 1, j) + p(i - 1, j + 1)
            )
            out[i, j] = math.hypot(gx, gy)
    return out


def test_edge(run: Run) -> None:
    x = rng(27).random(size=(8, 7))
    close(run(K.edge, x), naive_sobel(x), 1e-10)
    step = np.zeros((5, 6))
    step[:, 3:] = 1.0
    out = run(K.edge, step)
    assert np.all(out[:, [0, 1, 4, 5]] == 0)
    assert np.all(out[:, 2:4] == 4.0)
    batch = rng(28).random(size=(2, 6, 6)).astype(np.float32)
    got = run(K.edge, batch)
    assert got.dtype == np.float32
    close(got[1], naive_sobel(batch[1].astype(np.float64)), 1e-5)


# --------------------------------------------------------------------------------------------------- search


def ref_topk(q: np.ndarray, c: np.ndarray, k: int) -> tuple[list[list[int]], list[list[float]]]:
    idx_out, sc_out = [], []
    for qrow in q:
        qn = math.sqrt(math.fsum(float(v) ** 2 for v in qrow)) or 1.0
        scored = []
        for i, crow in enumerate(c):
            cn = math.sqrt(math.fsum(float(v) ** 2 for v in crow)) or 1.0
            dot = math.fsum(float(a) * float(b) for a, b in zip(qrow, crow, strict=True))
            scored.append((-dot / (qn * cn), i))
        scored.sort()
        top = scored[:k]
        idx_out.append([i for _, i in top])
        sc_out.append([-s for s, _ in top])
    return idx_out, sc_out


@pytest.mark.parametrize("k", [1, 3, 10, 25])
def test_cosine_topk(run: Run, k: int) -> None:
    q = rng(29).normal(size=(4, 8))
    c = rng(30).normal(size=(20, 8))
    idx, scores = run(K.cosine_topk, q, c, k)
    ref_idx, ref_scores = ref_topk(q, c, min(k, 20))
    assert idx.dtype == np.int64
    assert idx.shape == (4, min(k, 20))
    assert idx.tolist() == ref_idx
    close(scores, ref_scores, 1e-12)


def test_cosine_topk_single_query_ties_and_zero_vectors(run: Run) -> None:
    c = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, 0.0], [3.0, 0.0], [-1.0, 0.0]])
    idx, scores = run(K.cosine_topk, np.array([1.0, 0.0]), c, 4)
    assert idx.shape == (4,)
    # Rows 0, 2 and 4 all score exactly 1.0: equal scores come out in index order.
    assert idx.tolist() == [0, 2, 4, 1] or idx.tolist() == [0, 2, 4, 3]
    close(scores, [1.0, 1.0, 1.0, 0.0])
    idx, scores = run(K.cosine_topk, np.zeros((1, 2)), c, 2)
    close(scores, [[0.0, 0.0]])


def test_cosine_topk_edge_cases(run: Run) -> None:
    q32 = rng(31).normal(size=(3, 4)).astype(np.float32)
    c32 = rng(32).normal(size=(5, 4)).astype(np.float32)
    idx, scores = run(K.cosine_topk, q32, c32, 2)
    assert scores.dtype == np.float32
    assert idx.tolist() == ref_topk(q32, c32, 2)[0]
    idx, scores = run(K.cosine_topk, q32, c32, 0)
    assert idx.shape == (3, 0)
    assert scores.shape == (3, 0)
    idx, scores = run(K.cosine_topk, q32, np.zeros((0, 4), dtype=np.float32), 5)
    assert idx.shape == (3, 0)
    assert idx.dtype == np.int64
    idx, scores = run(K.cosine_topk, np.zeros((0, 4)), c32, 2)
    assert idx.shape == (0, 2)
    with pytest.raises(ValueError, match="same D"):
        run(K.cosine_topk, q32, np.ones((5, 3)), 2)
    with pytest.raises(ValueError, match="k must be"):
        run(K.cosine_topk, q32, c32, -1)
    with pytest.raises(TypeError, match="k must be an int"):
        run(K.cosine_topk, q32, c32, 2.5)


# ----------------------------------------------------------------------------------------------- statistics


def ref_histogram(values: list[float], edges: list[float]) -> list[int]:
    counts = [0] * (len(edges) - 1)
    for v in values:
        for b in range(len(counts)):
            last = b == len(counts) - 1
            if edges[b] <= v < edges[b + 1] or (last and v == edges[b + 1]):
                counts[b] += 1
                break
    return counts


def test_histogram(run: Run) -> None:
    x = rng(33).normal(size=(50, 4))
    counts, edges = run(K.histogram, x, 7)
    lo, hi = float(x.min()), float(x.max())
    close(edges, [lo + (hi - lo) * i / 7 for i in range(8)], 1e-12)
    assert counts.dtype == np.int64
    assert counts.tolist() == ref_histogram([float(v) for v in x.ravel()], [float(e) for e in edges])
    assert int(counts.sum()) == x.size
    counts, edges = run(K.histogram, x, 4, (-1.0, 1.0))
    close(edges, [-1.0, -0.5, 0.0, 0.5, 1.0])
    assert counts.tolist() == ref_histogram([float(v) for v in x.ravel()], [-1.0, -0.5, 0.0, 0.5, 1.0])
    counts, _ = run(K.histogram, np.array([0.0, 0.5, 1.0, 2.0, 3.0]), [0.0, 1.0, 3.0])
    assert counts.tolist() == [2, 3]


def test_histogram_edge_cases(run: Run) -> None:
    counts, edges = run(K.histogram, np.zeros((0,)), 4)
    assert counts.tolist() == [0, 0, 0, 0]
    close(edges, [0.0, 0.25, 0.5, 0.75, 1.0])
    counts, edges = run(K.histogram, np.full(5, 3.0), 2)
    assert counts.tolist() == [0, 5]
    close(edges, [2.5, 3.0, 3.5])
    counts, _ = run(K.histogram, np.array([1, 2, 2, 9]), 4, [0, 8])  # a list range, as msgpack delivers it
    assert counts.tolist() == [1, 2, 0, 0]
    with pytest.raises(ValueError, match="not finite"):
        run(K.histogram, np.array([1.0, np.nan]), 3)
    with pytest.raises(ValueError, match="bins"):
        run(K.histogram, np.ones(3), 0)
    with pytest.raises(ValueError, match="range"):
        run(K.histogram, np.ones(3), 2, (2.0, 1.0))


# -------------------------------------------------------------------------------------------------- shuffle


def ref_partition(key: int, p: int) -> int:
    h = ((key % 2**64) * 0x9E3779B97F4A7C15) % 2**64
    if p & (p - 1) == 0:
        return h >> (64 - (p.bit_length() - 1)) if p > 1 else 0
    return (h >> 32) % p


def test_partition_of_matches_definition() -> None:
    keys = [0, 1, 2, 3, -1, -(2**63), 2**63 - 1, 123456789, 2**40 + 17]
    for p in (1, 2, 3, 4, 6, 7, 16, 1000, 1024, 2**32):
        for key in keys:
            assert K.partition_of(key, p) == ref_partition(key, p)
    # Top 4 bits for 16 partitions, as the shuffle baseline defines it.
    assert K.partition_of(1, 16) == 0x9E3779B97F4A7C15 >> 60
    with pytest.raises(TypeError):
        K.partition_of(1.0, 4)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        K.partition_of(True, 4)
    with pytest.raises(ValueError, match="partitions"):
        K.partition_of(1, 0)
    with pytest.raises(ValueError, match="partitions"):
        K.partition_of(1, 2**32 + 1)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint64, np.uint16])
def test_partition_ids_vectorised_equals_scalar(dtype: Any) -> None:
    info = np.iinfo(dtype)
    keys = rng(34).integers(info.min, info.max, size=200, dtype=dtype, endpoint=True)
    for p in (1, 2, 5, 8, 12, 64):
        got = K.partition_ids(np, keys, p)
        assert got.dtype == np.int64
        assert got.tolist() == [ref_partition(int(k), p) for k in keys]


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint64, np.uint8])
def test_hash_partition_sorts_narrow_ids_and_leaves_the_keys_alone(dtype: Any) -> None:
    """The ids ``hash_partition`` sorts are the narrowest unsigned type that holds them (a radix sort; one byte per
    key for up to 256 partitions), equal to ``partition_ids``; 64-bit keys are reinterpreted, never changed."""
    info = np.iinfo(dtype)
    keys = rng(37).integers(info.min, info.max, size=500, dtype=dtype, endpoint=True)
    before = keys.copy()
    for p, narrow in ((1, np.uint8), (16, np.uint8), (256, np.uint8), (257, np.uint16), (65_536, np.uint16),
                      (65_537, np.uint32), (3_000_000_000, np.uint32)):
        ids = K._narrow_partition_ids(np, keys, p)
        assert ids.dtype == narrow, p
        assert ids.tolist() == K.partition_ids(np, keys, p).tolist() == [ref_partition(int(k), p) for k in keys]
    assert np.array_equal(keys, before)


@pytest.mark.parametrize("partitions", [1, 2, 3, 4, 6, 7, 8, 16])
def test_hash_partition(run: Run, partitions: int) -> None:
    keys = rng(35).integers(-(10**9), 10**9, size=300)
    values = rng(36).normal(size=(300, 2)).astype(np.float32)
    parts = run(K.hash_partition, keys, values, partitions)
    assert isinstance(parts, list)
    assert len(parts) == partitions
    expected: list[tuple[list[int], list[list[float]]]] = [([], []) for _ in range(partitions)]
    for key, row in zip(keys.tolist(), values.tolist(), strict=True):
        ks, vs = expected[ref_partition(key, partitions)]
        ks.append(key)
        vs.append(row)
    for (pk, pv), (ek, ev) in zip(parts, expected, strict=True):
        assert pk.dtype == keys.dtype
        assert pv.dtype == np.float32
        assert pk.tolist() == ek  # same keys, in input order (stable)
        assert pv.tolist() == ev
    assert sum(len(k) for k, _ in parts) == 300


@pytest.mark.parametrize(("dtype", "partitions"), [(np.int64, 16), (np.int64, 3), (np.int32, 7), (np.uint64, 1)])
def test_hash_partition_in_blocks_gives_the_buckets_of_one_stable_sort(dtype: Any, partitions: int) -> None:
    """Inputs longer than a block are partitioned block by block on the CPU: the same buckets, rows in input order,
    as one stable sort of the whole input by ``partition_ids``."""
    n = 2 * K.BLOCK_ROWS + 12_345
    info = np.iinfo(dtype)
    keys = rng(38).integers(info.min, info.max, size=n, dtype=dtype, endpoint=True)
    values = rng(39).normal(size=(n, 2))
    before = keys.copy()
    order = np.argsort(K.partition_ids(np, keys, partitions), kind="stable")
    ids = K.partition_ids(np, keys, partitions)[order]
    for vals in (values, None):
        parts = K.hash_partition.run("cpu", keys, vals, partitions)
        assert len(parts) == partitions
        assert [len(pk) for pk, _ in parts] == np.bincount(ids, minlength=partitions).tolist()
        assert np.array_equal(np.concatenate([pk for pk, _ in parts]), keys[order])
        if vals is None:
            assert all(pv is None for _, pv in parts)
        else:
            assert np.array_equal(np.concatenate([pv for _, pv in parts]), values[order])
    assert np.array_equal(keys, before)


def test_hash_partition_is_balanced_for_structured_keys() -> None:
    # Plain `h % p` would put all even keys into even partitions when p is even.
    for keys in (np.arange(60_000), np.arange(60_000) * 2, np.arange(60_000) * 1024):
        for p in (3, 6, 10, 16):
            sizes = [len(k) for k, _ in K.hash_partition.run("cpu", keys, None, p)]
            assert max(sizes) < 1.05 * len(keys) / p, (p, sizes)


def test_hash_partition_edge_cases(run: Run) -> None:
    parts = run(K.hash_partition, np.zeros(0, dtype=np.int32), np.zeros((0, 3)), 4)
    assert len(parts) == 4
    assert all(k.shape == (0,) and k.dtype == np.int32 and v.shape == (0, 3) for k, v in parts)
    parts = run(K.hash_partition, np.array([5, 6, 5], dtype=np.uint64), None, 3)
    assert all(v is None for _, v in parts)
    assert sorted(x for k, _ in parts for x in k.tolist()) == [5, 5, 6]
    with pytest.raises(TypeError, match="integers"):
        run(K.hash_partition, np.array([1.0, 2.0]), None, 2)
    with pytest.raises(ValueError, match="one row per key"):
        run(K.hash_partition, np.arange(3), np.arange(4), 2)
    with pytest.raises(ValueError, match="1-D"):
        run(K.hash_partition, np.ones((2, 2), dtype=np.int64), None, 2)
    with pytest.raises(ValueError, match="partitions"):
        run(K.hash_partition, np.arange(3), None, 0)


def test_hash_partition_with_many_partitions(run: Run) -> None:
    keys = rng(37).integers(0, 2**40, size=50)
    parts = run(K.hash_partition, keys, None, 70_001)  # beyond the 16-bit fast path
    assert len(parts) == 70_001
    for key in keys.tolist():
        assert key in parts[ref_partition(key, 70_001)][0].tolist()
