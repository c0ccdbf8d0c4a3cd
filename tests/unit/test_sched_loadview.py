"""LoadView: compact summaries, validation of what peers send, ageing, victim ranking."""

from __future__ import annotations

import msgpack
import pytest

from meshaios.sched.loadview import MAX_SUMMARY_BYTES, DeviceLoad, LoadView, make_summary, parse_summary, summary_size


def _summary(backlog: float = 4.0, stealable: int = 3, gpu: bool = False) -> dict[str, object]:
    devs = {"cpu": DeviceLoad(4, 1, backlog, 1.0)}
    if gpu:
        devs["gpu"] = DeviceLoad(1, 0, backlog / 2, 8.0)
    return make_summary(devs, queued=5, stealable=stealable, bandwidth=125e6)


def test_summary_fits_in_swim_meta_even_with_many_kernels() -> None:
    kf = {f"some.rather.long.module.kernel_name_{i:04d}": 1.0 + i / 100 for i in range(200)}
    s = make_summary({"cpu": DeviceLoad(64, 3, 123.4567, 1.25), "gpu": DeviceLoad(8, 1, 9.5, 8.0)},
                     queued=100, stealable=50, kernel_factors=kf, bandwidth=1.25e9)
    assert summary_size(s) <= MAX_SUMMARY_BYTES
    assert 0 < len(s.get("kf", {})) <= 16
    nv = parse_summary("n", msgpack.unpackb(msgpack.packb(s), raw=False), 0.0)
    assert nv is not None
    assert nv.devices["gpu"] == DeviceLoad(8, 1, 9.5, 8.0)
    assert nv.bandwidth == 1.25e9


@pytest.mark.parametrize(
    "bad",
    [None, [], {"v": 2, "d": {}}, {"v": 1}, {"v": 1, "d": {"tpu": [1, 1, 1, 1]}}, {"v": 1, "d": {"cpu": [1, 1]}},
     {"v": 1, "d": {"cpu": [1, 1, -5, 1]}}, {"v": 1, "d": {"cpu": [1, 1, 1, 0]}},
     {"v": 1, "d": {"cpu": [True, 1, 1, 1]}}, {"v": 1, "d": {"cpu": [1, 1, float("nan"), 1]}},
     {"v": 1, "d": {"cpu": [1, 1, 1, 1]}, "bw": -3}],
)
def test_malformed_summaries_are_rejected(bad: object) -> None:
    view = LoadView()
    assert view.update("n", bad, 0.0) is False
    assert len(view) == 0


def test_entries_age_out() -> None:
    view = LoadView(max_age=5.0)
    view.update("a", _summary(), 0.0)
    view.update("b", _summary(), 3.0)
    assert view.get("a", 4.0) is not None
    assert view.get("a", 5.5) is None  # too old to trust, even before ``expire``
    assert view.expire(5.5) == ["a"]
    assert "a" not in view
    assert view.get("b", 5.5) is not None
    assert view.expire(100.0) == ["b"]
    assert len(view) == 0


def test_older_report_does_not_replace_newer_and_order_is_kept() -> None:
    view = LoadView(max_age=5.0)
    view.update("a", _summary(backlog=1.0), 10.0)
    assert view.update("a", _summary(backlog=9.0), 8.0) is False
    got = view.get("a", 10.0)
    assert got is not None
    assert got.devices["cpu"].backlog == 1.0
    view.update("b", _summary(), 4.0)  # heard late, but heard earlier: expires first
    assert view.expire(9.5) == ["b"]


def test_backlog_drains_with_time() -> None:
    view = LoadView()
    view.update("a", _summary(backlog=12.0), 0.0)  # 4 slots, 1 free: 3 busy
    nv = view.get("a", 0.0)
    assert nv is not None
    assert nv.wait("cpu", 0.0) == pytest.approx(3.0)
    assert nv.wait("cpu", 2.0) == pytest.approx((12.0 - 2.0 * 3) / 4)
    assert nv.wait("cpu", 10.0) == 0.0
    assert nv.wait("gpu", 0.0) == float("inf")


def test_busiest_ranks_victims_and_skips_the_useless() -> None:
    view = LoadView(max_age=10.0)
    view.update("idle", _summary(backlog=0.0), 0.0)
    view.update("small", _summary(backlog=2.0), 0.0)
    view.update("big", _summary(backlog=40.0), 0.0)
    view.update("nothing-to-give", _summary(backlog=80.0, stealable=0), 0.0)
    view.update("stale", _summary(backlog=99.0), -20.0)
    assert [n for _, n in view.busiest(1.0)] == ["big", "small"]
    assert [n for _, n in view.busiest(1.0, exclude={"big"})] == ["small"]
    assert view.busiest(1.0, limit=1) == [(10.0, "big")]


def test_busiest_counts_only_the_backlog_on_the_device_kinds_a_thief_has_idle() -> None:
    view = LoadView(max_age=10.0)
    view.update("cpu-queue", _summary(backlog=40.0), 0.0)
    gpu_queue = make_summary({"cpu": DeviceLoad(4, 4, 0.0, 1.0), "gpu": DeviceLoad(1, 0, 6.0, 8.0)}, stealable=3)
    view.update("gpu-queue", gpu_queue, 0.0)
    assert [n for _, n in view.busiest(1.0)] == ["cpu-queue", "gpu-queue"]
    assert view.busiest(1.0, devices=["gpu"]) == [(6.0, "gpu-queue")]  # a GPU idling beside busy CPUs
    assert view.busiest(1.0, devices=["cpu"]) == [(10.0, "cpu-queue")]  # a CPU-only thief: no GPU queue
    assert view.busiest(1.0, devices=[]) == []


def test_size_is_bounded() -> None:
    view = LoadView(max_nodes=3)
    for i in range(5):
        view.update(f"n{i}", _summary(), float(i))
    assert len(view) == 3
    assert {nv.node_id for nv in view} == {"n2", "n3", "n4"}
