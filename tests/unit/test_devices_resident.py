"""The device tier's accounting and eviction (devices/resident.py), on the numpy-backed FakeCupy."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshaios.devices import DeviceMemoryError, default_registry
from meshaios.devices.fakecupy import FakeCupy, FakeDeviceArray
from meshaios.devices.resident import DeviceLedger, DeviceTier
from meshaios.store.objects import ObjectStore
from meshaios.wire.payload import Payload
from meshaios.wire.values import loads

K = default_registry()
MiB = 2**20
DEV = "fakegpu:0"


def f32(mib: float, value: float = 1.0) -> np.ndarray:
    return np.full(int(mib * MiB) // 4, value, dtype=np.float32)


# ---- the ledger: pure ---------------------------------------------------------------------------------------


def test_ledger_evicts_least_recently_used_first_and_skips_kept_keys() -> None:
    led = DeviceLedger({DEV: 10})
    for k in "abcd":
        led.add(k, DEV, 3)
    assert led.used[DEV] == 12
    assert led.victims(DEV) == ["a"]  # 12 - 10: one object of 3 is enough
    led.touch("a")
    assert led.victims(DEV) == ["b"]
    assert led.victims(DEV, need=5, keep={"b"}) == ["c", "d", "a"]  # 12 + 5 - 10 = 7 bytes; b is kept
    assert led.victims(DEV, everything=True, keep={"d"}) == ["b", "c", "a"]
    assert led.remove("b") == 3
    assert led.used[DEV] == 9
    assert led.victims(DEV) == []
    assert led.remove("b") is None
    assert led.fits(DEV, 10)
    assert not led.fits(DEV, 11)
    assert not led.fits("fakegpu:1", 1)


def test_ledger_re_adding_a_key_replaces_it() -> None:
    led = DeviceLedger({DEV: 10, "fakegpu:1": 10})
    led.add("a", DEV, 4)
    led.add("a", "fakegpu:1", 6)
    assert led.used == {DEV: 0, "fakegpu:1": 6}
    assert led.device_of("a") == "fakegpu:1"
    assert len(led) == 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["add", "touch", "remove", "evict"]), st.integers(0, 5), st.integers(1, 6))))
def test_ledger_used_always_equals_the_sum_of_its_objects(ops: list[tuple[str, int, int]]) -> None:
    led = DeviceLedger({DEV: 12})
    sizes: dict[str, int] = {}
    for op, k, n in ops:
        key = f"k{k}"
        if op == "add":
            led.add(key, DEV, n)
            sizes[key] = n
        elif op == "touch":
            led.touch(key)
        elif op == "remove":
            assert led.remove(key) == sizes.pop(key, None)
        else:
            victims = led.victims(DEV)
            for v in victims:
                sizes.pop(v)
                led.remove(v)
            assert led.used[DEV] <= 12
        assert led.used[DEV] == sum(sizes.values())
        assert sorted(led.keys()) == sorted(sizes)


# ---- the tier on a fake GPU ---------------------------------------------------------------------------------


def tier(memory: int = 8 * MiB) -> tuple[DeviceTier, ObjectStore, FakeCupy]:
    store = ObjectStore(1 << 40, None)
    cp = FakeCupy(memory=memory)
    t = DeviceTier({DEV: memory // 2}, inline_bytes=64 << 10, allow_pickle=False, host_put=store.put,
                   cupy_modules={DEV: cp})  # fmt: skip
    store.device = t
    return t, store, cp


def run(t: DeviceTier, store: ObjectStore, key: str, kernel: str, *args: Any, deps: tuple[str, ...] = ()) -> Any:
    """What run_task does with a DeviceRunner, minus the wire: returns the result's size or host value."""
    r = t.runner(DEV, store.get)
    vals = []
    for d in deps:
        found, v = r.dep(d, on_device=True)
        vals.append(v if found else loads(v, allow_pickle=False))
    out = r.call(K.get(kernel), (*vals, *args), {})
    size, host = r.finish(key, out)
    return size or host


def test_a_large_result_stays_on_the_device_and_the_next_kernel_takes_it_without_a_copy() -> None:
    t, store, cp = tier()
    assert run(t, store, "a", "meshaios.multiply", f32(1), 2.0) == MiB
    assert "a" in store
    assert store.size_of("a") == MiB
    assert store.on_disk("a")
    assert store.stats.objects == 0
    assert cp.held == MiB
    assert run(t, store, "b", "meshaios.add", deps=("a", "a")) == MiB
    c = t.counts[DEV]
    assert (c.h2d, c.h2d_bytes, c.d2h) == (1, MiB, 0)
    got = store.get("b")  # a reader off the device: one device->host copy, a host payload
    assert isinstance(got, Payload)
    arr = loads(got, allow_pickle=False)
    assert type(arr) is np.ndarray
    assert not isinstance(arr, FakeDeviceArray)
    np.testing.assert_array_equal(arr, f32(1, 4.0))
    assert (c.d2h, c.d2h_bytes) == (1, MiB)
    assert store.delete("b")
    assert "b" not in store
    assert cp.held == MiB
    store.clear()
    assert cp.held == 0
    assert t.keys() == []


def test_a_small_result_comes_back_to_the_host_at_once() -> None:
    t, store, _ = tier()
    out = run(t, store, "s", "meshaios.sum", f32(1))
    assert out == pytest.approx(MiB // 4)
    assert "s" not in store
    assert (t.counts[DEV].h2d, t.counts[DEV].d2h) == (1, 1)


def test_pressure_moves_the_least_recently_used_to_host_memory() -> None:
    t, store, cp = tier(8 * MiB)  # 4 MiB for objects
    for i in range(4):
        run(t, store, f"o{i}", "meshaios.multiply", f32(1.5, i), 1.0)
    c = t.counts[DEV]
    assert (c.evictions, c.evicted_bytes) == (2, 3 * MiB)
    assert t.ledger.used[DEV] == 3 * MiB == cp.held
    assert store.stats.objects == 2
    assert store.stats.bytes_in_memory >= 3 * MiB
    for i in range(4):
        np.testing.assert_array_equal(loads(store.get(f"o{i}"), allow_pickle=False), f32(1.5, i))  # type: ignore[arg-type]
    too_big = run(t, store, "big", "meshaios.multiply", f32(5), 1.0)  # over the 4 MiB share: to the host
    assert isinstance(too_big, np.ndarray)
    assert "big" not in t


def test_out_of_memory_evicts_all_but_the_inputs_and_retries_once() -> None:
    t, store, cp = tier(8 * MiB)
    run(t, store, "keep", "meshaios.multiply", f32(1), 1.0)
    run(t, store, "other", "meshaios.multiply", f32(3), 1.0)
    assert cp.held == 4 * MiB
    # 5 MiB in beside 4 kept: out of memory; "other" moves out (not "keep": an input), and the retry fits
    out = run(t, store, "r", "meshaios.multiply", f32(5).reshape(5, -1), deps=("keep",))
    np.testing.assert_array_equal(out, f32(5).reshape(5, -1))  # over the 4 MiB share: it came back to the host
    c = t.counts[DEV]
    assert (c.oom_retries, c.oom_failures, c.evictions) == (1, 0, 1)
    assert "keep" in t
    assert "other" not in t
    assert "other" in store
    with pytest.raises(DeviceMemoryError, match="fakegpu:0"):
        run(t, store, "x", "meshaios.multiply", f32(9), 1.0)
    assert (c.oom_retries, c.oom_failures) == (2, 1)
    assert run(t, store, "y", "meshaios.multiply", f32(1), 1.0) == MiB  # and it carries on


def test_status_reports_each_device() -> None:
    t, store, _ = tier()
    run(t, store, "a", "meshaios.multiply", f32(1), 2.0)
    st_ = t.status()[DEV]
    assert st_["resident_bytes"] == MiB
    assert st_["resident_objects"] == 1
    assert st_["limit"] == 4 * MiB
    assert st_["h2d"] == 1
    assert st_["d2h"] == 0
    assert st_["evictions"] == 0


def test_a_large_host_input_is_copied_to_the_device_once_and_stays_beside_its_host_copy() -> None:
    from meshaios.wire.values import dumps

    t, store, cp = tier(16 * MiB)
    store.put("w", dumps(f32(1, 2.0), allow_pickle=False)[0])
    store.put("tiny", dumps(f32(0.01), allow_pickle=False)[0])
    for i in range(3):
        assert run(t, store, f"r{i}", "meshaios.multiply", 1.0, deps=("w",)) == MiB
    run(t, store, "s", "meshaios.sum", deps=("tiny",))
    run(t, store, "s2", "meshaios.sum", deps=("tiny",))
    c = t.counts[DEV]
    assert (c.h2d, c.h2d_bytes) == (2, MiB + f32(0.01).nbytes)  # w once, tiny once
    assert "w" in t
    assert "tiny" in t
    assert store.stats.objects == 2  # both still on the host
    t.evict_all(DEV)  # a device copy of a host object is dropped, not copied back
    assert c.d2h == 2 + 3  # the two sums; then the three results, moved to the host
    assert "w" not in t
    np.testing.assert_array_equal(loads(store.get("w"), allow_pickle=False), f32(1, 2.0))  # type: ignore[arg-type]
    assert cp.held == 0


def test_deleting_while_objects_move_to_the_host_leaves_nothing_behind() -> None:
    """A GPU thread keeps 1 MiB results (each one pushing older ones to host memory) while another thread frees
    them as fast as it can: once both are done and the rest freed, no copy is left anywhere."""
    import threading

    t, store, cp = tier(8 * MiB)
    keys = [f"k{i}" for i in range(150)]
    done = threading.Event()

    def produce() -> None:
        for k in keys:
            t.keep(k, DEV, cp.asarray(f32(1)))
        done.set()

    def free() -> None:
        i = 0
        while not done.is_set():
            store.delete(keys[i % len(keys)])
            i += 1

    threads = [threading.Thread(target=produce), threading.Thread(target=free)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for k in keys:
        store.delete(k)
    assert store.keys() == []
    assert store.stats.objects == 0
    assert store.stats.bytes_in_memory == 0
    assert t.ledger.used[DEV] == 0
    assert cp.held == 0


def test_a_small_result_asked_to_stay_stays_on_the_device() -> None:
    t, store, _ = tier()
    r = t.runner(DEV, store.get)
    size, host = r.finish("small", r.call(K.get("meshaios.multiply"), (f32(0.01), 2.0), {}), keep=True)
    assert size == f32(0.01).nbytes
    assert host is None
    assert "small" in t
    assert t.counts[DEV].d2h == 0
    np.testing.assert_array_equal(loads(store.get("small"), allow_pickle=False), f32(0.01, 2.0))  # type: ignore[arg-type]


# ---- overlap: a stream per task slot, pinned buffers for results that leave ----------------------------------


def test_each_task_slot_thread_runs_its_copies_and_kernels_on_a_stream_of_its_own() -> None:
    import threading

    t, store, cp = tier(64 * MiB)
    run(t, store, "a", "meshaios.multiply", f32(1), 2.0)  # this thread: its stream, made once
    run(t, store, "b", "meshaios.multiply", f32(1), 3.0)
    assert t.counts[DEV].streams == cp.streams_made == 1
    assert cp.synchronized >= 2  # each task waited for its stream before reporting
    slot = threading.Thread(target=run, args=(t, store, "c", "meshaios.add"), kwargs={"deps": ("a", "b")})
    slot.start()
    slot.join()
    assert t.counts[DEV].streams == 2  # another slot (thread): another stream
    # every copy of the three tasks was made with a task's stream current: 2 inputs in, nothing out yet
    assert cp.stream_copies == cp.to_device_copies + cp.to_host_copies == 2
    np.testing.assert_array_equal(loads(store.get("c"), allow_pickle=False), f32(1, 5.0))  # type: ignore[arg-type]


def test_a_large_result_read_off_the_device_comes_through_a_pinned_buffer_a_small_one_and_evictions_do_not() -> None:
    t, store, cp = tier(64 * MiB)
    run(t, store, "big", "meshaios.multiply", f32(2), 2.0)
    run(t, store, "small", "meshaios.multiply", f32(0.5), 2.0, deps=())
    t.keep("tiny", DEV, cp.asarray(f32(0.25)), small=True)
    for key, value, pinned in (("big", 2.0, 1), ("small", 2.0, 1), ("tiny", 1.0, 1)):
        got = loads(store.get(key), allow_pickle=False)  # type: ignore[arg-type]
        np.testing.assert_array_equal(got, f32({"big": 2, "small": 0.5, "tiny": 0.25}[key], value))
        assert t.counts[DEV].d2h_pinned == pinned  # only "big" is PINNED_MIN_BYTES or more
    assert cp.pinned_allocs == 1
    assert t.evict_all(DEV) == 3  # moved to host memory to stay: pageable, not pinned
    assert t.counts[DEV].d2h_pinned == cp.pinned_allocs == 1
    np.testing.assert_array_equal(loads(store.get("big"), allow_pickle=False), f32(2, 2.0))  # type: ignore[arg-type]


def test_the_fake_gpus_current_stream_is_per_thread_as_in_cuda() -> None:
    import threading

    cp = FakeCupy()
    mine = cp.cuda.Stream(non_blocking=True)
    entered, leave = threading.Event(), threading.Event()
    seen: list[Any] = []

    def other_slot() -> None:
        with cp.cuda.Stream(non_blocking=True) as theirs:
            seen.append(cp.current_stream is theirs)
            entered.set()
            leave.wait(5)

    t = threading.Thread(target=other_slot)
    with mine:
        t.start()
        assert entered.wait(5)
        assert cp.current_stream is mine  # the other thread's stream did not replace this thread's
        leave.set()
        t.join()
        assert cp.current_stream is mine
    assert cp.current_stream is None
    assert seen == [True]
