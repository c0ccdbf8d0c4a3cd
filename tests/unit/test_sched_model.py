"""RuntimeModel: learns, has a prior, persists through msgpack, and shares what it knows by gossip."""

from __future__ import annotations

import math
import random
import time

import msgpack
import pytest

from meshaios.sched.model import ModelConfig, RuntimeModel, device_kind, task_features

MB = 1 << 20


def _truth(kernel: str, nbytes: int, device: str = "cpu") -> float:
    """A family of kernels: runtime proportional to size, different per kernel, GPUs 10x faster for 'mm'."""
    base = {"k.mm": 0.2, "k.sum": 0.01, "k.parse": 0.05, "k.fft": 0.1}[kernel]
    t = base * nbytes / MB
    if device == "gpu" and kernel == "k.mm":
        t /= 10
    return t


def _train(m: RuntimeModel, kernel: str, n: int, rng: random.Random, device: str = "cpu", node: str | None = None,
           slow: float = 1.0) -> None:
    for _ in range(n):
        nbytes = int(MB * math.exp(rng.uniform(math.log(0.25), math.log(16))))
        x = task_features(kernel, nbytes, device, node=node)
        m.learn_one(x, _truth(kernel, nbytes, device) * slow * math.exp(rng.gauss(0, 0.05)))


def test_device_kind() -> None:
    assert device_kind("gpu:0") == device_kind("fakegpu:1") == device_kind("gpu") == "gpu"
    assert device_kind("cpu") == device_kind(None) == device_kind("") == "cpu"


def test_features_are_plain_and_summarise_shapes() -> None:
    x = task_features("k.mm", 8 * MB, "gpu:0", shape=[[1000, 1000], [1000, 10]], concurrency=3, speed=2.0, node="a")
    assert x["device"] == "gpu"
    assert x["nd"] == 2
    assert x["le"] == pytest.approx(math.log1p(1_010_000))
    assert x["conc"] == 3
    assert x["node"] == "a"
    msgpack.packb(x)  # plain values only


def test_prior_before_anything_is_seen() -> None:
    m = RuntimeModel(ModelConfig(prior_seconds=0.7))
    assert m.predict_one(task_features("never.seen", MB)) == pytest.approx(0.7)
    assert m.known("never.seen") == 0


def test_learns_runtime_and_size_dependence() -> None:
    m = RuntimeModel()
    rng = random.Random(1)
    _train(m, "k.mm", 200, rng)
    for mb in (0.5, 2, 8):
        pred = m.predict_one(task_features("k.mm", int(mb * MB)))
        assert pred == pytest.approx(_truth("k.mm", int(mb * MB)), rel=0.2)
    assert m.known("k.mm", "cpu") == 200
    assert m.mape < 0.2


def test_mape_falls_as_it_learns() -> None:
    m = RuntimeModel()
    rng = random.Random(2)
    _train(m, "k.parse", 5, rng)
    early = m.mape
    _train(m, "k.parse", 300, rng)
    assert m.mape < early
    assert m.mape < 0.15
    assert m.stats()["observations"] == 305


def test_unseen_kernel_prior_comes_from_similar_work() -> None:
    """After many kernels, an unseen one is estimated by the global regression, which knows that more bytes
    take longer -- better than one constant for everything."""
    m = RuntimeModel()
    rng = random.Random(3)
    for k in ("k.mm", "k.sum", "k.parse", "k.fft"):
        _train(m, k, 60, rng)
    small = m.predict_one(task_features("k.new", MB // 4))
    big = m.predict_one(task_features("k.new", 16 * MB))
    assert big > 2 * small
    assert small != pytest.approx(m.config.prior_seconds)


def test_other_device_gives_an_estimate_before_the_first_gpu_run() -> None:
    m = RuntimeModel()
    rng = random.Random(4)
    _train(m, "k.mm", 50, rng, "cpu")
    _train(m, "k.mm", 50, rng, "gpu")
    _train(m, "k.fft", 50, rng, "cpu")
    # k.fft never ran on a GPU: its CPU estimate shifted by what GPUs did for the kernels seen on both
    gpu = m.predict_one(task_features("k.fft", 4 * MB, "gpu"))
    cpu = m.predict_one(task_features("k.fft", 4 * MB, "cpu"))
    assert gpu < cpu
    assert m.spread(task_features("k.fft", MB, "gpu")) > m.spread(task_features("k.fft", MB, "cpu"))


def test_learns_a_node_that_is_slower_than_it_declares() -> None:
    m = RuntimeModel()
    rng = random.Random(5)
    for _ in range(100):
        node = rng.choice(["a", "b", "slow"])
        nbytes = int(MB * rng.uniform(0.5, 8))
        x = task_features("k.parse", nbytes, node=node)
        m.learn_one(x, _truth("k.parse", nbytes) * (3.0 if node == "slow" else 1.0))
    # factors are relative to the model's reference (the average node it has seen): only their ratio is fixed
    assert m.node_factor("slow") / m.node_factor("a") == pytest.approx(1 / 3, rel=0.25)
    slow = m.predict_one(task_features("k.parse", MB, node="slow"))
    ratio = slow / m.predict_one(task_features("k.parse", MB, node="a"))
    assert ratio == pytest.approx(3.0, rel=0.3)
    assert m.node_offset("never", "cpu") is None


def test_declared_speed_scales_predictions() -> None:
    m = RuntimeModel()
    _train(m, "k.sum", 50, random.Random(6))
    slow = m.predict_one(task_features("k.sum", MB, speed=0.5))
    fast = m.predict_one(task_features("k.sum", MB, speed=2.0))
    assert slow / fast == pytest.approx(4.0, rel=1e-6)


def test_state_round_trips_through_msgpack() -> None:
    m = RuntimeModel()
    rng = random.Random(7)
    for k in ("k.mm", "k.sum"):
        _train(m, k, 40, rng, node="a")
    _train(m, "k.mm", 10, rng, "gpu")
    m.merge_gossip({"v": 1, "k": [["k.fft", "cpu", 12, -1.0, 1.0, 15.0]]}, "peer")
    blob = msgpack.packb(m.to_state(), use_bin_type=True)
    m2 = RuntimeModel.from_state(msgpack.unpackb(blob, raw=False))
    probes = [task_features(k, s, d, node=n) for k in ("k.mm", "k.sum", "k.fft", "k.none")
              for s in (MB, 8 * MB) for d in ("cpu", "gpu") for n in (None, "a")]
    for x in probes:
        assert m2.predict_log(x) == pytest.approx(m.predict_log(x), abs=1e-9)
    # and they go on learning identically
    x = task_features("k.sum", 3 * MB, node="a")
    m.learn_one(x, 0.05)
    m2.learn_one(x, 0.05)
    for p in probes:
        assert m2.predict_log(p) == pytest.approx(m.predict_log(p), abs=1e-9)


def test_state_of_another_version_is_refused() -> None:
    with pytest.raises(ValueError, match="version"):
        RuntimeModel.from_state({"v": 99})


@pytest.mark.parametrize("raw", [b"", b"\xc1", msgpack.packb({"v": 1, "stats": [["k"]]}), msgpack.packb([1, 2])])
def test_a_corrupt_state_file_is_refused_not_half_read(raw: bytes) -> None:
    with pytest.raises(ValueError, match="runtime model state"):
        RuntimeModel.loads(raw)


def test_dumps_and_loads() -> None:
    m = RuntimeModel()
    _train(m, "k.sum", 20, random.Random(14))
    m2 = RuntimeModel.loads(m.dumps())
    x = task_features("k.sum", 2 * MB)
    assert m2.predict_one(x) == pytest.approx(m.predict_one(x))


def test_gossip_lets_a_fresh_node_predict_a_kernel_it_never_ran() -> None:
    a = RuntimeModel()
    _train(a, "k.mm", 100, random.Random(8))
    b = RuntimeModel()
    assert b.merge_gossip(a.summary(), "node-a") == 1
    x = task_features("k.mm", 4 * MB)
    assert b.predict_one(x) == pytest.approx(_truth("k.mm", 4 * MB), rel=0.25)
    assert b.known("k.mm") == 0  # second-hand knowledge is not counted as its own


def test_local_experience_outweighs_gossip() -> None:
    b = RuntimeModel()
    b.merge_gossip({"v": 1, "k": [["k.sum", "cpu", 1000, math.log(10.0), 0.0, 14.0]]}, "liar")
    _train(b, "k.sum", 60, random.Random(9))
    assert b.predict_one(task_features("k.sum", MB)) == pytest.approx(_truth("k.sum", MB), rel=0.3)


@pytest.mark.parametrize(
    "garbage",
    [None, 3, {"k": "x"}, {"k": [["a"]]}, {"k": [[1, "cpu", 1, 1, 1, 1]]}, {"k": [["a", "tpu", 1, 1, 1, 1]]},
     {"k": [["a", "cpu", 1, float("nan"), 1, 1]]}, {"k": [["a", "cpu", True, "x", 1, 1]]}],
)
def test_gossip_garbage_is_ignored(garbage: object) -> None:
    m = RuntimeModel()
    assert m.merge_gossip(garbage, "bad") == 0
    assert m.predict_one(task_features("a", MB)) == pytest.approx(m.config.prior_seconds)


def test_summary_is_small_and_most_recent_first() -> None:
    m = RuntimeModel()
    rng = random.Random(10)
    for i in range(30):
        m.learn_one(task_features(f"k.n{i}", MB), 0.1 + rng.random())
    s = m.summary(limit=8)
    assert [r[0] for r in s["k"]][:2] == ["k.n29", "k.n28"]
    assert len(msgpack.packb(s)) < 600


def test_memory_is_bounded() -> None:
    m = RuntimeModel(ModelConfig(max_kernels=16, max_nodes=4))
    for i in range(100):
        m.learn_one(task_features(f"k.{i}", MB, node=f"n{i}"), 0.1)
    assert m.stats()["kernels"] <= 16
    assert m.stats()["nodes"] <= 4


def test_clone_is_untrained() -> None:
    m = RuntimeModel(ModelConfig(prior_seconds=2.0))
    _train(m, "k.mm", 10, random.Random(11))
    c = m.clone()
    assert c.config == m.config
    assert c.n_seen == 0


def test_learning_is_cheap_enough_for_the_event_loop() -> None:
    """~15-30 us per call on an idle machine; the bound is loose because CI machines are shared."""
    m = RuntimeModel()
    xs = [task_features(f"k.{i % 20}", (i % 16 + 1) * MB, "gpu" if i % 3 else "cpu", node=f"n{i % 50}")
          for i in range(2000)]
    t0 = time.perf_counter()
    for i, x in enumerate(xs):
        m.learn_one(x, 0.01 * (i % 16 + 1))
    per_call = (time.perf_counter() - t0) / len(xs)
    assert per_call < 1e-3


def test_kernel_factors_say_how_this_node_compares_with_its_peers() -> None:
    peer = RuntimeModel()
    _train(peer, "k.mm", 50, random.Random(12))
    me = RuntimeModel()
    me.merge_gossip(peer.summary(), "peer")
    rng = random.Random(13)
    for _ in range(30):  # this node runs k.mm twice as fast as the peer
        nbytes = int(MB * rng.uniform(0.5, 8))
        me.learn_one(task_features("k.mm", nbytes), _truth("k.mm", nbytes) / 2)
    assert me.kernel_factors()["k.mm"] == pytest.approx(2.0, rel=0.2)
    assert RuntimeModel().kernel_factors() == {}
