"""The runtime model: how long will task ``t`` take on device ``d`` of node ``n``?

Why it exists: every placement rule better than "least loaded" needs a runtime estimate, and the systems we are
measured against have none before a task's first run (Dask assumes 500 ms for anything unknown,
distributed#5564), forget everything on restart (#3516) and cannot tell a fast node from a slow one. This model
learns online from every execution, predicts before a kernel's first run on this node (from peers' gossip, from
the same kernel on the other device, or from a size-aware global regression), survives restarts through a
msgpack-safe ``to_state()``, and costs tens of microseconds per observation, so the node can call it from its
event loop after each task.

It predicts **log seconds**. Runtimes are skewed (milliseconds to minutes), errors are multiplicative, and a
node that is twice as slow adds a constant in log space, which is what makes the decomposition below linear::

    log t(k, b, d, n) = y_ref(k, b, d) - log speed(n, d) + delta(n, d) + noise

* ``y_ref``: the kernel's log runtime at reference speed for input size ``b`` (log bytes) on device kind ``d``;
* ``speed(n, d)``: what node ``n`` *declares* (a fake GPU's ``speed=8``, a configured CPU factor), 1 by default;
* ``delta(n, d)``: what the model has *learned* about node ``n`` beyond its declaration (a machine that is
  slower than it says). Learned at the owner from the completions it sees, so one slow node does not poison
  the kernel statistics of the others.

``y_ref`` is a blend of two learners, weighted by their running squared errors per kernel (a two-expert
mixture), because each is good at a different time:

1. per (kernel, device) exponentially-weighted statistics with an online size slope (``y = m + s * (lb - m_lb)``):
   right after one observation, and tracking drift;
2. a river ``LinearRegression`` over one-hot kernel and kernel-on-GPU indicators plus shared size, shape and
   concurrency terms: shares what it learns across kernels, so an unseen kernel gets a size-aware estimate from
   similar work rather than a constant.

Example::

    >>> m = RuntimeModel()
    >>> x = task_features("meshaios.matmul", nbytes=8_000_000, device="cpu")
    >>> round(m.predict_one(x), 2)           # the prior: nothing has been seen yet
    0.5
    >>> for _ in range(20):
    ...     m.learn_one(x, 2.0)
    >>> round(m.predict_one(x), 1)
    2.0
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, NotRequired, Protocol, TypedDict

import msgpack

from meshaios.sched.river_import import linear_model, optim, utils
from meshaios.wire.messages import ModelStats, ModelSummary

__all__ = ["Features", "Learner", "ModelConfig", "RuntimeModel", "device_kind", "task_features"]

STATE_VERSION = 1
_LB_CENTER = 14.0  # log bytes of ~1.2 MB: the regression sees (lb - 14) / 4, about -1.5..+1.5 for 4 KB..1 GB,
_LB_SCALE = 0.25  # so that a slope of 1 (runtime proportional to bytes) is a weight of 4, quick for SGD to reach
_MIN_SECONDS = 1e-6


class Features(TypedDict):
    """What the model consumes for one task (river style: a plain dict); built by ``task_features``."""

    kernel: str  # function or kernel id
    lb: float  # log1p of the input bytes
    device: str  # kind: cpu or gpu
    le: float  # log1p of the array elements
    nd: int  # largest ndim
    conc: int  # tasks running at once on that device when it started
    speed: float  # the node's declared speed for that device
    node: NotRequired[str]  # who ran it: lets the model learn that node's own factor


class RegState(TypedDict):
    """The river regression in a ``ModelState``."""

    w: dict[str, float]  # weights
    b: float  # intercept
    it: int  # optimizer iterations


class ModelState(TypedDict):
    """``RuntimeModel.to_state()``: what the node persists (msgpack), read back by ``from_state``."""

    v: int
    config: dict[str, float]  # ModelConfig's fields
    n: int
    stats: list[list[str | float]]  # [kernel, device, *_KStat.row()]
    peers: list[list[str | float]]  # [kernel, device, source, n, my, slope, mx]
    nodes: list[list[str | float]]  # [node, device, n, delta]
    shift: dict[str, list[float]]
    reg: RegState
    ape: list[float]


class Learner(Protocol):
    """What the owner asks of its runtime model (given at construction: ``Owner(..., model=...)``): learn from
    each finished task. ``RuntimeModel`` is one."""

    def learn_one(self, x: Features, seconds: float) -> None: ...


def device_kind(device: str | None) -> str:
    """``"gpu:0"``, ``"fakegpu:1"``, ``"gpu"`` -> ``"gpu"``; anything else -> ``"cpu"``. The model learns per kind:
    individual cards differ by their declared speed and learned node factor, not by a separate kernel table."""
    if device and (device.startswith("gpu") or device.startswith("fakegpu")):
        return "gpu"
    return "cpu"


def task_features(
    kernel: str,
    nbytes: int | float = 0,
    device: str = "cpu",
    *,
    shape: Any = None,
    concurrency: int = 1,
    speed: float = 1.0,
    node: str | None = None,
) -> Features:
    """The feature dict the model consumes (river style: a plain dict).

    ``kernel`` is the function or kernel id (``"meshaios.matmul"``, ``"mymod.f"``); ``nbytes`` the task's input
    size; ``shape`` one array shape or a list of them (summarised as log element count and max ndim);
    ``concurrency`` how many tasks ran at once on that node's device when it started (contention);
    ``speed`` the executing node's *declared* speed for that device; ``node`` who ran it (lets the model learn
    that node's own factor; leave None for "a typical node").
    """
    elements, ndim = _shape_summary(shape)
    x: Features = {
        "kernel": kernel,
        "lb": math.log1p(max(0.0, float(nbytes))),
        "device": device_kind(device),
        "le": math.log1p(elements),
        "nd": ndim,
        "conc": max(1, int(concurrency)),
        "speed": speed if speed > 0 else 1.0,
    }
    if node is not None:
        x["node"] = node
    return x


def _shape_summary(shape: Any) -> tuple[float, int]:
    if not shape:
        return 0.0, 0
    shapes = shape if isinstance(shape[0], list | tuple) else [shape]
    elements = 0.0
    ndim = 0
    for s in shapes[:16]:
        n = 1.0
        for d in s[:8]:
            n *= max(0, int(d))
        elements += n
        ndim = max(ndim, len(s))
    return elements, ndim


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters (river style: all in ``__init__``, nothing learned here)."""

    prior_seconds: float = 0.5  # Dask's default guess, used only until *anything* has been observed
    prior_weight: float = 3.0  # pseudo-observations the prior is worth against the global regression
    halflife: float = 20.0  # observations: per-kernel statistics forget with this half-life (drift)
    node_halflife: float = 30.0  # observations: learned node factors forget with this half-life
    lr: float = 0.03  # SGD step of the river regression (features are scaled to ~[0, 1.5])
    peer_cap: float = 10.0  # gossip from peers counts as at most this many local observations
    unseen_var: float = 1.5  # variance of log runtime for a kernel never seen (a factor of ~3.4 either way)
    max_kernels: int = 2048  # (kernel, device) entries kept, least recently used evicted
    max_nodes: int = 4096  # learned node factors kept
    max_peers: int = 8  # peer summaries kept per (kernel, device)
    mape_window: int = 200  # recent predictions the running MAPE is computed over


@dataclass(slots=True)
class _KStat:
    """Exponentially weighted moments of (lb, y) for one (kernel, device): mean, slope of y on size."""

    n: int = 0
    my: float = 0.0
    mx: float = 0.0
    cxy: float = 0.0
    cxx: float = 0.0
    e_stat: float = 1.0  # running squared log error of the statistics' prediction
    e_reg: float = 4.0  # ... and of the regression's (starts pessimistic: it has not learned this kernel)

    def slope(self) -> float:
        if self.n < 3 or self.cxx < 0.05:
            return 0.0
        return min(2.0, max(0.0, self.cxy / self.cxx))

    def predict(self, lb: float) -> float:
        return self.my + self.slope() * (lb - self.mx)

    def update(self, lb: float, y: float, alpha: float) -> None:
        self.n += 1
        a = max(alpha, 1.0 / self.n)
        dx = lb - self.mx
        dy = y - self.my
        self.mx += a * dx
        self.my += a * dy
        # exponentially weighted co-moments (Finch 2009): with a = 1/n this is the plain sample covariance
        self.cxx = (1 - a) * (self.cxx + a * dx * dx)
        self.cxy = (1 - a) * (self.cxy + a * dx * dy)

    def row(self) -> list[float]:
        return [self.n, self.my, self.mx, self.cxy, self.cxx, self.e_stat, self.e_reg]

    @classmethod
    def from_row(cls, r: Sequence[float | str]) -> _KStat:
        return cls(int(r[0]), float(r[1]), float(r[2]), float(r[3]), float(r[4]), float(r[5]), float(r[6]))


class RuntimeModel:
    """Online runtime predictor (river contract: ``learn_one`` / ``predict_one`` on feature dicts, ``clone``)."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        self.config = config or ModelConfig()
        c = self.config
        self._alpha = 1.0 - 2.0 ** (-1.0 / c.halflife)
        self._node_alpha = 1.0 - 2.0 ** (-1.0 / c.node_halflife)
        # typed as Any: river ships partial annotations, and this is the one river object we touch
        self._reg: Any = linear_model.LinearRegression(
            optimizer=optim.SGD(c.lr), intercept_lr=c.lr, clip_gradient=5.0, intercept_init=math.log(c.prior_seconds)
        )
        self._stats: dict[tuple[str, str], _KStat] = {}  # insertion order = LRU order
        self._peers: dict[tuple[str, str], dict[str, list[float]]] = {}  # (k, d) -> source -> [n, my, slope, mx]
        self._nodes: dict[tuple[str, str], list[float]] = {}  # (node, d) -> [n, delta]
        self._shift: dict[str, list[float]] = {}  # d -> [n, mean(y(k,d) - y(k,other d))]
        self.n_seen = 0
        self._ape: deque[float] = deque(maxlen=c.mape_window)
        self._ape_sum = 0.0
        self._ape_all = 0.0
        self._kernel_ape: dict[tuple[str, str], list[float]] = {}  # (kernel, device) -> [n, running MAPE]

    # ---- river contract -----------------------------------------------------------------------------------

    def clone(self) -> RuntimeModel:
        """A fresh, untrained model with the same hyper-parameters."""
        return RuntimeModel(self.config)

    def predict_one(self, x: Features) -> float:
        """Predicted seconds (the median of a log-normal: errors are symmetric in log space)."""
        return math.exp(self.predict_log(x))

    def predict_log(self, x: Features) -> float:
        """Predicted log seconds for the node and declared speed in ``x``."""
        return self._predict_ref(x) - math.log(x.get("speed", 1.0) or 1.0) + self._node_delta(x)

    def learn_one(self, x: Features, seconds: float) -> None:
        """Learn one execution. Cost: a few dict updates plus one river SGD step (~15-30 us in all)."""
        seconds = max(_MIN_SECONDS, float(seconds))
        k, d, lb = x["kernel"], x["device"], x["lb"]
        y_obs = math.log(seconds) + math.log(x.get("speed", 1.0) or 1.0)  # at reference speed, node not removed
        # prequential error: predict before learning, exactly as the scheduler would have
        ref = self._predict_ref(x)
        self._record_ape(math.exp(ref + self._node_delta(x) - y_obs), (k, x["device"]))
        key = (k, d)
        st = self._stats.pop(key, None)
        # learn the node's factor first, from the residual against the kernel's reference estimate -- but only
        # once that estimate is informed: a residual against the prior says nothing about the node
        node = x.get("node")
        if node is not None and ((st is not None and st.n >= 2) or (k, d) in self._peers):
            self._learn_node(node, d, y_obs - ref)
        y = y_obs - self._node_delta(x)
        if st is None:
            st = _KStat()
            other = self._stats.get((k, _other(d)))
            if other is not None and other.n:
                self._learn_shift(d, y - other.predict(lb))
        if len(self._stats) >= self.config.max_kernels:
            self._evict()
        self._stats[key] = st  # most recently used last
        xr = self._reg_features(x)
        if st.n:
            e_s = (y - st.predict(lb)) ** 2
            e_r = (y - float(self._reg.predict_one(xr))) ** 2
            a = max(self._alpha, 1.0 / (st.n + 1))
            st.e_stat += a * (e_s - st.e_stat)
            st.e_reg += a * (e_r - st.e_reg)
        st.update(lb, y, self._alpha)
        self._reg.learn_one(xr, y)
        self.n_seen += 1

    # ---- queries ------------------------------------------------------------------------------------------

    def known(self, kernel: str, device: str | None = None) -> int:
        """Local observations of ``kernel`` (on ``device`` kind, or on any)."""
        if device is not None:
            st = self._stats.get((kernel, device_kind(device)))
            return st.n if st else 0
        return sum(st.n for (k, _), st in self._stats.items() if k == kernel)

    def reference_log(self, x: Features) -> float:
        """Log seconds at reference speed on a typical node (``speed`` and ``node`` in ``x`` are ignored): the part
        of a prediction that is the same for every candidate node, so placement computes it once per decision."""
        return self._predict_ref(x)

    def spread(self, x: Features) -> float:
        """Variance of this task's log runtime around ``reference_log``: the kernel's running squared error once
        it has been seen (it includes the per-task scatter that no feature explains), larger for what is only
        known second-hand, ``unseen_var`` for a kernel nobody has reported. Placement uses it to prefer fast,
        known nodes for the tasks it is unsure about: a surprise costs more on a slow node."""
        k, d = x["kernel"], x["device"]
        prior = self.config.unseen_var
        st = self._stats.get((k, d))
        if st is not None and st.n:
            e = min(st.e_stat, st.e_reg) if st.n >= 2 else prior
            return (st.n * e + prior) / (st.n + 1)
        if (k, d) in self._peers:
            return prior / 3
        if (k, _other(d)) in self._stats or (k, _other(d)) in self._peers:
            return prior / 2
        return prior

    def node_delta(self, node: str, device: str = "cpu") -> float:
        """Learned log-runtime offset of ``node`` beyond its declared speed (0: as declared; +0.69: twice slower)."""
        e = self._nodes.get((node, device_kind(device)))
        return 0.0 if e is None else e[1] * e[0] / (e[0] + 2.0)

    def knows_node(self, node: str, device: str = "cpu") -> bool:
        return (node, device_kind(device)) in self._nodes

    def node_offset(self, node: str, kind: str) -> float | None:
        """``node_delta`` for a device *kind* (``"cpu"``/``"gpu"``), or None if the node was never observed: the
        placement hot path's version (no parsing, one dict lookup)."""
        e = self._nodes.get((node, kind))
        return None if e is None else e[1] * e[0] / (e[0] + 2.0)

    def node_factor(self, node: str, device: str = "cpu") -> float:
        """How much faster than declared ``node`` has proved on ``device``, relative to the model's reference (the
        average of the nodes it learned from): 1.0 is typical, 0.5 half as fast. Only ratios between nodes are
        pinned down by the data; placement compares nodes, so that is all it needs."""
        return math.exp(-self.node_delta(node, device))

    @property
    def mape(self) -> float:
        """Mean absolute percentage error over the last ``mape_window`` predictions (0.25 = 25%)."""
        return self._ape_sum / len(self._ape) if self._ape else 0.0

    def stats(self) -> ModelStats:
        return {
            "observations": self.n_seen,
            "mape": self.mape,
            "mape_all": self._ape_all / self.n_seen if self.n_seen else 0.0,
            "kernels": len(self._stats),
            "peer_kernels": len(self._peers),
            "nodes": len(self._nodes),
            # the kernels predicted most recently, with their own running MAPE: [kernel@device, n, mape]
            "per_kernel": [
                (f"{k}@{d}", int(n), round(m, 4)) for (k, d), (n, m) in list(reversed(self._kernel_ape.items()))[:8]
            ],
        }

    # ---- gossip -------------------------------------------------------------------------------------------

    def summary(self, limit: int = 8) -> ModelSummary:
        """What this node has measured itself, most recently used kernels first, for piggybacking on gossip.

        Rows ``[kernel, device, n, y_ref, slope, mean log bytes]`` (about 60 bytes each in msgpack): only local
        observations, never what peers told us, so that nothing is counted twice as it spreads."""
        rows: list[tuple[str, str, int, float, float, float]] = []
        for (k, d), st in reversed(self._stats.items()):
            if len(rows) >= limit:
                break
            rows.append((k, d, st.n, round(st.my, 3), round(st.slope(), 3), round(st.mx, 2)))
        return {"v": STATE_VERSION, "k": rows}

    def kernel_factors(self, limit: int = 8, min_obs: int = 3) -> dict[str, float]:
        """How much faster this node runs each kernel than its peers report (``exp(peers' y_ref - ours)``; 2.0:
        twice as fast), for kernels with enough of both. Keyed ``kernel`` for the CPU and ``kernel@gpu`` for the
        GPU; a node publishes these in its load summary so that an owner that has never seen it run a kernel can
        still tell a node with a strong GPU from one with a weak one."""
        out: dict[str, float] = {}
        for (k, d), st in reversed(self._stats.items()):
            if len(out) >= limit:
                break
            if st.n < min_obs:
                continue
            peer = self._peer_estimate(k, d, st.mx)
            if peer is None:
                continue
            out[k if d == "cpu" else k + "@gpu"] = round(math.exp(max(-5.0, min(5.0, peer[1] - st.my))), 3)
        return out

    def merge_gossip(self, summary: object, source: str) -> int:
        """Take a peer's ``summary()``; returns how many rows were used. Malformed input is ignored (it comes
        off the wire), and a peer's word never outweighs ``peer_cap`` local observations."""
        if not isinstance(summary, dict) or not isinstance(summary.get("k"), list):
            return 0
        used = 0
        for r in summary["k"][:64]:
            if not (isinstance(r, list | tuple) and len(r) >= 6 and isinstance(r[0], str) and len(r[0]) <= 200):
                continue
            if r[1] not in ("cpu", "gpu") or not all(isinstance(v, int | float) for v in r[2:6]):
                continue
            n, my, slope, mx = float(r[2]), float(r[3]), float(r[4]), float(r[5])
            if n < 1 or not all(math.isfinite(v) for v in (my, slope, mx)) or abs(my) > 50:
                continue
            peers = self._peers.setdefault((r[0], r[1]), {})
            peers[source] = [n, my, min(2.0, max(0.0, slope)), mx]
            if len(peers) > self.config.max_peers:
                weakest = min(peers, key=lambda s: peers[s][0])
                del peers[weakest]
            used += 1
        if len(self._peers) > 4 * self.config.max_kernels:
            for key in list(self._peers)[: len(self._peers) // 4]:
                del self._peers[key]
        return used

    # ---- persistence --------------------------------------------------------------------------------------

    def to_state(self) -> ModelState:
        """Plain dicts, lists, strings and floats: msgpack- and JSON-safe, never pickle (a state file is data
        that a later version must be able to read, and must not be able to run code)."""
        return {
            "v": STATE_VERSION,
            "config": asdict(self.config),
            "n": self.n_seen,
            "stats": [[k, d, *st.row()] for (k, d), st in self._stats.items()],
            "peers": [[k, d, src, *row] for (k, d), p in self._peers.items() for src, row in p.items()],
            "nodes": [[nd, d, *e] for (nd, d), e in self._nodes.items()],
            "shift": {d: list(v) for d, v in self._shift.items()},
            "reg": {
                "w": dict(self._reg.weights),
                "b": float(self._reg.intercept),
                "it": int(self._reg.optimizer.n_iterations),
            },
            "ape": [self._ape_all],
        }

    def dumps(self) -> bytes:
        """``to_state()`` as msgpack bytes: what the node writes to its state directory (atomically, on a timer
        and at shutdown) and reads back at start-up."""
        return bytes(msgpack.packb(self.to_state(), use_bin_type=True))

    @classmethod
    def loads(cls, raw: bytes) -> RuntimeModel:
        """The inverse of ``dumps``; ``ValueError`` for anything that is not a state this version can read."""
        try:
            state = msgpack.unpackb(raw, raw=False, strict_map_key=False)
        except Exception as exc:  # msgpack raises several unrelated types for corrupt input
            raise ValueError(f"runtime model state: not msgpack ({exc})") from None
        return cls.from_state(state)

    @classmethod
    def from_state(cls, state: object) -> RuntimeModel:
        """Rebuild from ``to_state()``. Unknown config keys (a newer writer) are dropped; another state version
        or a corrupt state raises ``ValueError`` so the caller can start afresh rather than mis-read."""
        if not isinstance(state, dict) or state.get("v") != STATE_VERSION:
            raise ValueError("runtime model state: unknown version")
        try:
            return cls._from_state(state)  # type: ignore[arg-type]  # checked as it is read
        except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
            raise ValueError(f"runtime model state: corrupt ({exc})") from None

    @classmethod
    def _from_state(cls, state: ModelState) -> RuntimeModel:
        default = ModelConfig()  # each known setting read with its default's type: a newer writer's extras dropped
        known = set(ModelConfig.__dataclass_fields__)
        cfg = ModelConfig(**{
            k: type(getattr(default, k))(v) for k, v in dict(state.get("config", {})).items() if k in known
        })
        m = cls(cfg)
        m.n_seen = int(state.get("n", 0))
        for r in state.get("stats", []):
            m._stats[(str(r[0]), str(r[1]))] = _KStat.from_row(list(r[2:]))
        for r in state.get("peers", []):
            m._peers.setdefault((str(r[0]), str(r[1])), {})[str(r[2])] = [float(v) for v in r[3:7]]
        for r in state.get("nodes", []):
            m._nodes[(str(r[0]), str(r[1]))] = [float(r[2]), float(r[3])]
        m._shift = {str(d): [float(v[0]), float(v[1])] for d, v in dict(state.get("shift", {})).items()}
        reg = state.get("reg", {})
        m._reg._weights = utils.VectorDict({str(k): float(v) for k, v in dict(reg.get("w", {})).items()})
        m._reg.intercept = float(reg.get("b", m._reg.intercept))
        m._reg.optimizer.n_iterations = int(reg.get("it", 0))
        m._ape_all = float((state.get("ape") or [0.0])[0])
        return m

    # ---- internals ----------------------------------------------------------------------------------------

    def _reg_features(self, x: Features) -> dict[str, float]:
        """One-hot kernel (and kernel x GPU) offsets plus *shared* size, shape and contention effects. Per-kernel
        size slopes are left to the statistics: here one global slope is what an unseen kernel inherits."""
        k = x["kernel"]
        le = x.get("le", 0.0)
        xr = {
            "lb": (x["lb"] - _LB_CENTER) * _LB_SCALE,
            "le": (le - _LB_CENTER) * _LB_SCALE if le else 0.0,
            "nd": x.get("nd", 0) * 0.25,
            "lc": math.log(x.get("conc", 1) or 1),
            "k:" + k: 1.0,
        }
        if x["device"] == "gpu":
            xr["gpu"] = 1.0
            xr["kg:" + k] = 1.0
        return xr

    def _predict_ref(self, x: Features) -> float:
        """Log seconds at reference speed on a typical node: the blend described in the module docstring."""
        k, d, lb = x["kernel"], x["device"], x["lb"]
        reg = float(self._reg.predict_one(self._reg_features(x)))
        st = self._stats.get((k, d))
        peer = self._peer_estimate(k, d, lb)
        if st is not None and st.n:
            stat = st.predict(lb)
            if peer is not None and st.n < 2 * self.config.peer_cap:
                pn, py = peer
                stat = (st.n * stat + pn * py) / (st.n + pn)
            w_reg = st.e_stat / (st.e_stat + st.e_reg) if st.n >= 2 else 0.0
            return (1.0 - w_reg) * stat + w_reg * reg
        if peer is not None:
            return peer[1]
        other = self._stats.get((k, _other(d)))
        if other is not None and other.n:
            shift = self._shift.get(d)
            return other.predict(lb) + (shift[1] if shift else 0.0)
        other_peer = self._peer_estimate(k, _other(d), lb)
        if other_peer is not None:
            shift = self._shift.get(d)
            return other_peer[1] + (shift[1] if shift else 0.0)
        # never seen anywhere: the global regression (size-aware, learned from all kernels) shrunk to the prior
        w = self.n_seen / (self.n_seen + self.config.prior_weight)
        return w * reg + (1.0 - w) * math.log(self.config.prior_seconds)

    def _peer_estimate(self, k: str, d: str, lb: float) -> tuple[float, float] | None:
        peers = self._peers.get((k, d))
        if not peers:
            return None
        tot = 0.0
        acc = 0.0
        for n, my, slope, mx in peers.values():
            tot += n
            acc += n * (my + slope * (lb - mx))
        return min(tot, self.config.peer_cap), acc / tot

    def _node_delta(self, x: Features) -> float:
        node = x.get("node")
        # shrunk towards 0 while evidence is thin (see node_delta): two unlucky samples must not brand a node slow
        return 0.0 if node is None else self.node_delta(node, x["device"])

    def _learn_node(self, node: str, d: str, resid: float) -> None:
        key = (node, d)
        e = self._nodes.pop(key, None)
        if e is None:
            if len(self._nodes) >= self.config.max_nodes:
                del self._nodes[next(iter(self._nodes))]
            e = [0.0, 0.0]
        e[0] += 1
        a = max(self._node_alpha, 1.0 / e[0])
        e[1] += a * (max(-5.0, min(5.0, resid)) - e[1])
        self._nodes[key] = e

    def _learn_shift(self, d: str, diff: float) -> None:
        s = self._shift.setdefault(d, [0.0, 0.0])
        s[0] += 1
        s[1] += max(self._alpha, 1.0 / s[0]) * (max(-8.0, min(8.0, diff)) - s[1])

    def _record_ape(self, ratio: float, key: tuple[str, str]) -> None:
        ape = abs(ratio - 1.0)
        # per kernel too, so an operator can see *which* kernel the model gets wrong (status --json)
        ka = self._kernel_ape.pop(key, None) or [0, 0.0]
        ka[0] += 1
        ka[1] += (ape - ka[1]) / min(ka[0], 20)  # about the last 20: the first guesses (the prior) fade out
        self._kernel_ape[key] = ka
        if len(self._kernel_ape) > self.config.max_kernels:
            del self._kernel_ape[next(iter(self._kernel_ape))]
        if len(self._ape) == self._ape.maxlen:
            self._ape_sum -= self._ape[0]
        self._ape.append(ape)
        self._ape_sum += ape
        self._ape_all += ape

    def _evict(self) -> None:
        (k, d), _ = next(iter(self._stats.items()))
        del self._stats[(k, d)]
        if (k, _other(d)) not in self._stats:
            w = self._reg._weights
            for key in ("k:" + k, "kg:" + k):
                if key in w:
                    del w[key]


def _other(d: str) -> str:
    return "cpu" if d == "gpu" else "gpu"
