"""The built-in kernel library: the numeric building blocks of AI pipelines, on numpy and cupy alike.

Every kernel is one function written against ``xp`` and only uses operations that numpy and cupy share with the
same semantics, so the GPU path is the CPU path with another module. Where the two libraries differ (cupy sorts
are always stable and take no ``kind``; cupy has no ``sliding_window_view`` in older releases) the code keeps to
the common subset, which is why some choices below look more conservative than plain numpy would need.

Conventions that keep results identical across devices and predictable for the scheduler:

* inputs may be arrays or nested lists (``xp.asarray``); Python scalars stay Python scalars, so that a float32
  array times ``2.0`` stays float32 (NEP 50 "weak" scalars) instead of being promoted by a 0-d float64 array;
* floating dtypes are preserved; integer inputs to kernels that need fractions (softmax, blur, ...) give float64;
* ``axis`` may arrive as a list (msgpack has no tuples) and is turned back into a tuple.

The wire names are ``"meshaios.<name>"`` and are part of the protocol: never rename one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Final

import numpy as np

from meshaios.devices.registry import Kernel

__all__ = [
    "BUILTIN_KERNELS",
    "GOLDEN_GAMMA",
    "add",
    "batched_matmul",
    "blur",
    "conv2d",
    "cosine_topk",
    "edge",
    "exp",
    "gelu",
    "hash_partition",
    "histogram",
    "layer_norm",
    "matmul",
    "multiply",
    "partition_ids",
    "partition_of",
    "reduce_max",
    "reduce_mean",
    "reduce_sum",
    "relu",
    "softmax",
]

#: The multiplier of Fibonacci hashing (2**64 / golden ratio, odd): multiplying by it mixes low key bits into
#: the high bits of the 64-bit product, which is why partitions are taken from the *top* bits.
GOLDEN_GAMMA: Final = 0x9E3779B97F4A7C15
_U64: Final = (1 << 64) - 1
_MAX_PARTITIONS: Final = 1 << 32

_builtins: list[Kernel] = []


def _builtin(short: str) -> Callable[[Callable[..., Any]], Kernel]:
    def register(func: Callable[..., Any]) -> Kernel:
        k = Kernel(func, name=f"meshaios.{short}", gpu=True)
        _builtins.append(k)
        return k

    return register


# --------------------------------------------------------------------------------------------------- helpers


def _arr(xp: Any, x: Any) -> Any:
    """Arrays and lists become ``xp`` arrays; Python scalars are left alone so they stay weakly typed."""
    if isinstance(x, bool | int | float | complex):
        return x
    return xp.asarray(x)


def _floating(xp: Any, x: Any) -> Any:
    x = xp.asarray(x)
    return x if x.dtype.kind in "fc" else x.astype(xp.float64)


def _axis(axis: Any) -> Any:
    if isinstance(axis, list):
        return tuple(axis)
    return axis


def _stable_argsort(xp: Any, a: Any, axis: int = -1) -> Any:
    # cupy's sorts are always stable and older releases reject the ``kind`` keyword altogether.
    if xp is np:
        return np.argsort(a, axis=axis, kind="stable")
    return xp.argsort(a, axis=axis)


def _stable_sort(xp: Any, a: Any, axis: int = -1) -> Any:
    if xp is np:
        return np.sort(a, axis=axis, kind="stable")
    return xp.sort(a, axis=axis)


def _check_int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    v = int(value)
    if v < lo or (hi is not None and v > hi):
        bound = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be {bound}, not {v}")
    return v


# ---------------------------------------------------------------------------------------------- linear algebra


@_builtin("matmul")
def matmul(xp: Any, a: Any, b: Any) -> Any:
    """Matrix (or matrix-vector) product of 1-D/2-D operands; stacks go to ``batched_matmul``.

    Kept separate from the batched form so that the scheduler learns their runtimes separately: their cost
    models differ (one GEMM versus a batch of small ones).
    """
    a, b = xp.asarray(a), xp.asarray(b)
    if not (1 <= a.ndim <= 2 and 1 <= b.ndim <= 2):
        raise ValueError(
            f"matmul takes 1-D or 2-D operands, got shapes {a.shape} and {b.shape} (use meshaios.batched_matmul)"
        )
    return xp.matmul(a, b)


@_builtin("batched_matmul")
def batched_matmul(xp: Any, a: Any, b: Any) -> Any:
    """``a @ b`` over leading batch dimensions, broadcasting them (e.g. (B, M, K) @ (K, N))."""
    a, b = xp.asarray(a), xp.asarray(b)
    if min(a.ndim, b.ndim) < 2 or max(a.ndim, b.ndim) < 3:
        raise ValueError(
            f"batched_matmul needs stacks of matrices (ndim >= 3 on one side, >= 2 on both), "
            f"got shapes {a.shape} and {b.shape}"
        )
    return xp.matmul(a, b)


# -------------------------------------------------------------------------------------------------- elementwise


@_builtin("add")
def add(xp: Any, a: Any, b: Any) -> Any:
    return xp.add(_arr(xp, a), _arr(xp, b))


@_builtin("multiply")
def multiply(xp: Any, a: Any, b: Any) -> Any:
    return xp.multiply(_arr(xp, a), _arr(xp, b))


@_builtin("relu")
def relu(xp: Any, x: Any) -> Any:
    return xp.maximum(xp.asarray(x), 0)


_GELU_C: Final = math.sqrt(2.0 / math.pi)


@_builtin("gelu")
def gelu(xp: Any, x: Any) -> Any:
    """GELU in its tanh form (as in GPT-2/BERT): numpy has no ``erf``, and the two agree to about 1e-3."""
    x = _floating(xp, x)
    return 0.5 * x * (1.0 + xp.tanh(_GELU_C * (x + 0.044715 * (x * x * x))))


@_builtin("exp")
def exp(xp: Any, x: Any) -> Any:
    return xp.exp(xp.asarray(x))


# --------------------------------------------------------------------------------------------------- reductions


@_builtin("sum")
def reduce_sum(xp: Any, x: Any, axis: Any = None, keepdims: bool = False) -> Any:
    return xp.sum(xp.asarray(x), axis=_axis(axis), keepdims=keepdims)


@_builtin("mean")
def reduce_mean(xp: Any, x: Any, axis: Any = None, keepdims: bool = False) -> Any:
    return xp.mean(xp.asarray(x), axis=_axis(axis), keepdims=keepdims)


@_builtin("max")
def reduce_max(xp: Any, x: Any, axis: Any = None, keepdims: bool = False) -> Any:
    x = xp.asarray(x)
    if x.size == 0:
        # numpy and cupy both refuse, but with different messages; give one that names the kernel.
        raise ValueError(f"meshaios.max of an empty array (shape {x.shape}) has no value")
    return xp.max(x, axis=_axis(axis), keepdims=keepdims)


# ------------------------------------------------------------------------------------------------- activations


@_builtin("softmax")
def softmax(xp: Any, x: Any, axis: Any = -1) -> Any:
    """Softmax that cannot overflow: the row maximum is subtracted before ``exp``.

    A row of all ``-inf`` (a fully masked attention row) has no finite maximum; it is left at 0 so the row
    yields NaN like in PyTorch, instead of poisoning the shift for nothing.
    """
    x = _floating(xp, x)
    axis = _axis(axis)
    if x.size == 0:
        return x.copy()
    m = xp.max(x, axis=axis, keepdims=True)
    m[~xp.isfinite(m)] = 0
    e = xp.exp(x - m)
    with np.errstate(invalid="ignore"):  # 0/0 in fully masked rows is the NaN we mean; no warning per task
        return e / xp.sum(e, axis=axis, keepdims=True)


@_builtin("layer_norm")
def layer_norm(xp: Any, x: Any, gamma: Any = None, beta: Any = None, eps: float = 1e-5, axis: Any = -1) -> Any:
    """Normalise over ``axis`` (default the last, the feature axis), then scale by ``gamma`` and shift by ``beta``.

    The variance is the biased one, ``mean((x - mean)**2)``, as in PyTorch's ``LayerNorm``, computed from the
    centred values rather than ``E[x^2] - E[x]^2`` which cancels catastrophically in float32.
    """
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not (eps >= 0 and math.isfinite(eps)):
        raise ValueError(f"eps must be a finite number >= 0, not {eps!r}")
    x = _floating(xp, x)
    axis = _axis(axis)
    if x.size == 0:
        return x.copy()
    centred = x - xp.mean(x, axis=axis, keepdims=True)
    var = xp.mean(centred * centred, axis=axis, keepdims=True)
    y = centred / xp.sqrt(var + float(eps))
    if gamma is not None:
        y = y * xp.asarray(gamma, dtype=y.dtype)
    if beta is not None:
        y = y + xp.asarray(beta, dtype=y.dtype)
    return y


# ------------------------------------------------------------------------------------------------------ images

_BOUNDARY_MODES: Final = {"fill": "constant", "nearest": "edge"}


@_builtin("conv2d")
def conv2d(
    xp: Any,
    image: Any,
    kernel: Any,
    mode: str = "same",
    *,
    correlate: bool = False,
    boundary: str = "fill",
    fill_value: float = 0.0,
) -> Any:
    """2-D convolution (or, with ``correlate=True``, correlation) of an image or a batch ``(..., H, W)``.

    Modes follow ``scipy.signal.convolve2d``: ``"valid"`` keeps positions where the kernel fits entirely,
    ``"full"`` every overlap, ``"same"`` the centre of ``"full"`` with the input's shape. Correlation is defined
    as convolution with the kernel flipped on both axes, so both share one alignment rule. ``boundary`` is
    ``"fill"`` (pad with ``fill_value``) or ``"nearest"`` (repeat the edge pixel, what image filters want).

    It is computed as a sum of shifted, scaled copies of the padded input, one per non-zero kernel tap. Unlike
    im2col (or ``sliding_window_view`` + ``tensordot``) this never materialises a ``kh*kw`` times larger patch
    matrix, so a batch of large images fits in the memory of a GPU, and it uses only slicing and axpy, which
    numpy and cupy implement identically. Integer or boolean inputs give a float64 result.
    """
    img, w = xp.asarray(image), xp.asarray(kernel)
    if w.ndim != 2 or w.size == 0:
        raise ValueError(f"conv2d kernel must be a non-empty 2-D array, got shape {w.shape}")
    if img.ndim < 2:
        raise ValueError(f"conv2d image must have shape (H, W) or (..., H, W), got {img.shape}")
    if mode not in ("same", "valid", "full"):
        raise ValueError(f"conv2d mode must be 'same', 'valid' or 'full', not {mode!r}")
    if boundary not in _BOUNDARY_MODES:
        raise ValueError(f"conv2d boundary must be 'fill' or 'nearest', not {boundary!r}")
    dtype = xp.result_type(img.dtype, w.dtype)
    if dtype.kind not in "fc":
        dtype = np.dtype(np.float64)
    img = img.astype(dtype, copy=False)
    if not correlate:
        w = w[::-1, ::-1]
    kh, kw = w.shape
    *lead, h, wd = img.shape
    if mode == "valid":
        pads = ((0, 0), (0, 0))
    elif mode == "same":
        pads = ((kh // 2, (kh - 1) // 2), (kw // 2, (kw - 1) // 2))
    else:
        pads = ((kh - 1, kh - 1), (kw - 1, kw - 1))
    out_h = h + pads[0][0] + pads[0][1] - kh + 1
    out_w = wd + pads[1][0] + pads[1][1] - kw + 1
    out_shape = (*lead, max(out_h, 0), max(out_w, 0))
    out = xp.zeros(out_shape, dtype=dtype)
    if out.size == 0 or img.size == 0:
        return out
    if pads != ((0, 0), (0, 0)):
        pad_width = [(0, 0)] * len(lead) + list(pads)
        if boundary == "fill":
            img = xp.pad(img, pad_width, mode="constant", constant_values=fill_value)
        else:
            img = xp.pad(img, pad_width, mode="edge")
    # One device -> host copy of the (small) kernel so that the loop below never syncs per tap.
    taps = w.tolist()
    scratch = xp.empty_like(out)  # reused for every tap instead of allocating a temporary per tap
    for u in range(kh):
        for v in range(kw):
            tap = taps[u][v]
            if tap == 0:
                continue
            xp.multiply(img[..., u : u + out_h, v : v + out_w], tap, out=scratch)
            out += scratch
    return out


def _gaussian_1d(sigma: float, truncate: float) -> np.ndarray[Any, np.dtype[np.float64]]:
    radius = max(int(truncate * sigma + 0.5), 0)
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-0.5 * (t / sigma) ** 2)
    return np.asarray(g / g.sum(), dtype=np.float64)


@_builtin("blur")
def blur(xp: Any, image: Any, sigma: float = 1.0, *, truncate: float = 4.0, boundary: str = "nearest") -> Any:
    """Gaussian blur of an image or batch ``(..., H, W)``, as two 1-D passes of ``conv2d``.

    The kernel is cut at ``truncate`` standard deviations like ``scipy.ndimage.gaussian_filter``; separability
    turns ``(2r+1)**2`` taps into ``2(2r+1)``, and with ``"nearest"``/``"fill"`` borders the two passes equal
    one 2-D convolution exactly.
    """
    if isinstance(sigma, bool) or not isinstance(sigma, int | float) or not (sigma > 0 and math.isfinite(sigma)):
        raise ValueError(f"blur sigma must be a finite number > 0, not {sigma!r}")
    if isinstance(truncate, bool) or not isinstance(truncate, int | float) or not truncate >= 0:
        raise ValueError(f"blur truncate must be a number >= 0, not {truncate!r}")
    img = _floating(xp, image)
    g = xp.asarray(_gaussian_1d(float(sigma), float(truncate)), dtype=img.dtype)
    rows = conv2d(xp, img, g[None, :], "same", boundary=boundary)
    return conv2d(xp, rows, g[:, None], "same", boundary=boundary)


_SOBEL_X: Final = ((1.0, 0.0, -1.0), (2.0, 0.0, -2.0), (1.0, 0.0, -1.0))


@_builtin("edge")
def edge(xp: Any, image: Any, *, boundary: str = "nearest") -> Any:
    """Sobel gradient magnitude ``sqrt(gx**2 + gy**2)`` of an image or batch ``(..., H, W)``."""
    img = _floating(xp, image)
    kx = xp.asarray(_SOBEL_X, dtype=img.dtype)
    gx = conv2d(xp, img, kx, "same", correlate=True, boundary=boundary)
    gy = conv2d(xp, img, kx.T, "same", correlate=True, boundary=boundary)
    return xp.sqrt(gx * gx + gy * gy)


# ------------------------------------------------------------------------------------------------------ search


@_builtin("cosine_topk")
def cosine_topk(xp: Any, queries: Any, corpus: Any, k: int = 10) -> tuple[Any, Any]:
    """For each query the ``k`` most cosine-similar corpus rows: ``(indices, scores)``, best first.

    ``queries`` is ``(Q, D)`` or one ``(D,)`` vector (then the results are 1-D); ``corpus`` is ``(N, D)``.
    ``k > N`` returns all ``N``. Zero vectors score 0 against everything. Within the result, equal scores are
    ordered by corpus index; which of several rows tied exactly at the k-th score make the cut is unspecified.

    ``argpartition`` selects in O(N) per query and only the k winners are sorted, which matters when each node
    holds a large shard of the corpus and the client merges the per-shard top-k lists.
    """
    kk = _check_int("k", k, 0)
    q, c = _floating(xp, queries), _floating(xp, corpus)
    single = q.ndim == 1
    if single:
        q = q[None, :]
    if q.ndim != 2 or c.ndim != 2 or q.shape[1] != c.shape[1]:
        raise ValueError(
            f"cosine_topk needs queries (Q, D) or (D,) and corpus (N, D) with the same D, "
            f"got {xp.asarray(queries).shape} and {c.shape}"
        )
    dtype = xp.result_type(q.dtype, c.dtype)
    q, c = q.astype(dtype, copy=False), c.astype(dtype, copy=False)
    n_q, n = q.shape[0], c.shape[0]
    kk = min(kk, n)
    if kk == 0 or n_q == 0:
        idx = xp.zeros((n_q, kk), dtype=xp.int64)
        scores = xp.zeros((n_q, kk), dtype=dtype)
    else:
        qn = xp.sqrt(xp.sum(q * q, axis=1, keepdims=True))
        cn = xp.sqrt(xp.sum(c * c, axis=1, keepdims=True))
        qn[qn == 0] = 1
        cn[cn == 0] = 1
        sim = xp.matmul(q / qn, (c / cn).T)
        if kk < n:
            cand = xp.argpartition(-sim, kk - 1, axis=1)[:, :kk]
            # Sorting the candidates by index first makes the stable sort below break ties by index.
            cand = _stable_sort(xp, cand, axis=1)
        else:
            cand = xp.broadcast_to(xp.arange(n, dtype=xp.int64), (n_q, n)).copy()
        cand_scores = xp.take_along_axis(sim, cand, axis=1)
        order = _stable_argsort(xp, -cand_scores, axis=1)
        idx = xp.take_along_axis(cand, order, axis=1).astype(xp.int64)
        scores = xp.take_along_axis(cand_scores, order, axis=1)
    if single:
        return idx[0], scores[0]
    return idx, scores


# -------------------------------------------------------------------------------------------------- statistics


@_builtin("histogram")
def histogram(xp: Any, x: Any, bins: Any = 10, range: Any = None) -> tuple[Any, Any]:
    """``(counts, edges)`` of the flattened ``x``, with numpy's rules (last bin closed, values outside dropped).

    The range is resolved here rather than inside ``xp.histogram`` so that numpy and cupy agree on the corner
    cases: an empty input spans [0, 1], a constant one [v - 0.5, v + 0.5], and NaN or inf without an explicit
    range is an error rather than a silent difference between devices.
    """
    a = xp.asarray(x).ravel()
    if isinstance(bins, bool):
        raise TypeError("bins must be an int or a sequence of bin edges, not a bool")
    if isinstance(bins, int | np.integer):
        bins = _check_int("bins", bins, 1)
    else:
        bins = xp.asarray(bins)
        if bins.ndim != 1 or bins.size < 2:
            raise ValueError(f"bin edges must be a 1-D sequence of at least 2 values, got shape {bins.shape}")
    if range is None and isinstance(bins, int):
        if a.size == 0:
            range = (0.0, 1.0)
        else:
            lo, hi = float(a.min()), float(a.max())
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise ValueError(f"histogram range [{lo}, {hi}] is not finite; pass range=(lo, hi)")
            if lo == hi:
                lo, hi = lo - 0.5, hi + 0.5
            range = (lo, hi)
    if range is not None:
        if len(range) != 2 or not float(range[0]) <= float(range[1]):
            raise ValueError(f"histogram range must be (lo, hi) with lo <= hi, not {range!r}")
        range = (float(range[0]), float(range[1]))
    counts, edges = xp.histogram(a, bins=bins, range=range)
    return counts.astype(xp.int64, copy=False), edges


# ----------------------------------------------------------------------------------------------------- shuffle


def _check_partitions(partitions: Any) -> int:
    return _check_int("partitions", partitions, 1, _MAX_PARTITIONS)


def partition_ids(xp: Any, keys: Any, partitions: int) -> Any:
    """Partition number (int64) of each integer key; the shuffle's single source of truth for placement.

    ``h = key * GOLDEN_GAMMA`` in wrapping uint64 arithmetic (signed keys are taken as their two's complement).
    For ``partitions = 2**b`` the partition is the top ``b`` bits of ``h``. For other counts it is
    ``(h >> 32) % partitions``: the high half, because the low bits of a multiplicative hash are the key's own
    low bits (``h`` is odd exactly when the key is), so ``h % 6`` would send even keys to even partitions only.
    ``partition_of`` is the same function for one Python int.
    """
    return _narrow_partition_ids(xp, keys, partitions).astype(xp.int64)


def _narrow_partition_ids(xp: Any, keys: Any, partitions: int) -> Any:
    """``partition_ids`` in the narrowest unsigned dtype that holds them (uint8 for up to 256 partitions), made with
    one temporary of 8 bytes per key: 64-bit keys are reinterpreted rather than copied, and the shift (and modulo)
    work in place. (With a temporary per step, and ``int64`` ids, a shuffle's map task spent as long here as in its
    sort: four 8-byte-per-key arrays, each a fresh allocation that page-faults.)"""
    p = _check_partitions(partitions)
    k = xp.asarray(keys)
    if k.dtype.kind not in "iu":
        raise TypeError(f"partition keys must be integers, not {k.dtype}")
    narrow = xp.uint8 if p <= 1 << 8 else xp.uint16 if p <= 1 << 16 else xp.uint32
    if p == 1:
        return xp.zeros(k.shape, dtype=narrow)
    if k.dtype.itemsize == 8:
        h = k.view(xp.uint64) * xp.uint64(GOLDEN_GAMMA)  # int64 -> uint64 is the two's complement, bit for bit
    else:
        h = k.astype(xp.uint64)
        h *= xp.uint64(GOLDEN_GAMMA)
    if p & (p - 1) == 0:
        h >>= xp.uint64(64 - (p.bit_length() - 1))
    else:
        h >>= xp.uint64(32)
        h %= xp.uint64(p)
    return h.astype(narrow)


def partition_of(key: int, partitions: int) -> int:
    """``partition_ids`` for one key, in pure Python, for code that routes single keys without arrays."""
    p = _check_partitions(partitions)
    if isinstance(key, bool) or not isinstance(key, int | np.integer):
        raise TypeError(f"partition key must be an int, not {type(key).__name__}")
    h = ((int(key) & _U64) * GOLDEN_GAMMA) & _U64
    if p == 1:
        return 0
    if p & (p - 1) == 0:
        return h >> (64 - (p.bit_length() - 1))
    return (h >> 32) % p


@_builtin("hash_partition")
def hash_partition(xp: Any, keys: Any, values: Any, partitions: int) -> list[tuple[Any, Any]]:
    """Split ``keys`` (1-D integers) and the matching rows of ``values`` into ``partitions`` buckets.

    Returns one ``(keys, values)`` pair per partition, in partition order, each keeping the input order of its
    rows (a stable sort), so that numpy and cupy give identical buckets. ``values`` may be ``None``; then each
    pair holds ``None`` in its place. The buckets are slices of one reordered copy of the input.
    """
    p = _check_partitions(partitions)
    k = xp.asarray(keys)
    if k.ndim != 1:
        raise ValueError(f"hash_partition keys must be 1-D, got shape {k.shape}")
    v = None if values is None else xp.asarray(values)
    if v is not None and (v.ndim == 0 or v.shape[0] != k.shape[0]):
        raise ValueError(f"hash_partition values must have one row per key: keys {k.shape}, values {v.shape}")
    if xp is np and k.shape[0] > _block_rows(p):
        ks, vs, counts = _hash_partition_blocks(k, v, p)
    else:
        pid = _narrow_partition_ids(xp, k, p)
        if k.size == 0:
            return [(k.copy(), None if v is None else v.copy()) for _ in range(p)]
        # Narrow ids sort far faster (numpy switches to a radix sort for 8- and 16-bit keys: ~10x on millions of
        # rows).
        order = _stable_argsort(xp, pid)
        ks = k[order]
        vs = None if v is None else v[order]
        counts = xp.bincount(pid, minlength=p).tolist()  # one device -> host copy of p integers
    out: list[tuple[Any, Any]] = []
    start = 0
    for n in counts:
        out.append((ks[start : start + n], None if vs is None else vs[start : start + n]))
        start += n
    return out


BLOCK_ROWS: Final = 1 << 16  # rows the CPU partitioner sorts at a time (with at least 4,096 per partition)


def _block_rows(partitions: int) -> int:
    """Rows per block of ``_hash_partition_blocks``: each block costs one slice copy per partition."""
    return max(BLOCK_ROWS, partitions << 12)


def _hash_partition_blocks(k: Any, v: Any, p: int) -> tuple[Any, Any, list[int]]:
    """``hash_partition``'s reordered keys, values and bucket sizes on the CPU, one block of rows at a time: the
    same buckets, in the same order.

    Each block's ids are sorted (stable) and its rows gathered while they are in cache, then each bucket's run is
    copied to where that bucket's rows of earlier blocks end. Besides the output and one byte of id per row, no
    temporary outgrows a block: the whole-input argsort, its 8-byte-per-row order and the 8-byte-per-row cast
    that ``bincount`` makes of the ids were each a fresh buffer of the input's size that page-faulted on every
    map task, and the gather through a whole-input order ran out of cache (25 MiB of int64 keys into 16 parts:
    24 ms of CPU against 47-68, docs/performance.md section 26)."""
    n = k.shape[0]
    block = _block_rows(p)
    starts = range(0, n, block)
    pid = np.empty(n, dtype=np.uint8 if p <= 1 << 8 else np.uint16 if p <= 1 << 16 else np.uint32)
    per_block = np.empty((len(starts), p), dtype=np.int64)
    for b, s in enumerate(starts):
        ids = _narrow_partition_ids(np, k[s : s + block], p)
        pid[s : s + ids.shape[0]] = ids
        per_block[b] = np.bincount(ids, minlength=p)
    counts = per_block.sum(axis=0)
    at = (np.cumsum(counts) - counts).tolist()  # where each bucket's next rows go
    ks = np.empty(k.shape, dtype=k.dtype)
    vs = None if v is None else np.empty(v.shape, dtype=v.dtype)
    k_block = np.empty(block, dtype=k.dtype)
    v_block = None if v is None else np.empty((block, *v.shape[1:]), dtype=v.dtype)
    for b, s in enumerate(starts):
        order = np.argsort(pid[s : s + block], kind="stable")
        m = order.shape[0]
        kb = np.take(k[s : s + m], order, axis=0, out=k_block[:m])
        vb = None if v is None or v_block is None else np.take(v[s : s + m], order, axis=0, out=v_block[:m])
        a = 0
        for j, c in enumerate(per_block[b].tolist()):
            if c:
                ks[at[j] : at[j] + c] = kb[a : a + c]
                if vs is not None and vb is not None:
                    vs[at[j] : at[j] + c] = vb[a : a + c]
                at[j] += c
                a += c
    return ks, vs, counts.tolist()


#: Every ``meshaios.*`` kernel, in definition order; ``KernelRegistry.with_builtins()`` registers these.
BUILTIN_KERNELS: Final[tuple[Kernel, ...]] = tuple(_builtins)
