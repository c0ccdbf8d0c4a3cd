"""Device-resident objects on real node processes with fake GPUs (issue 18): the per-device transfer counters of
``meshaios status`` say how many host<->device copies a pipeline of GPU tasks made."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from meshaios import TaskError
from meshaios.devices import default_registry
from meshaios.testing.localmesh import LocalMesh, wait_for
from tests.integration import funcs

pytestmark = pytest.mark.system

K = default_registry()
GPU = {"gpu": 1}
N = 256  # 256 KiB per float32 matrix: above the 64 KiB inline limit, so results stay where they are made


def load_script(relpath: str) -> ModuleType:
    """A script of the repository (tools/, examples/: not packages), imported by path."""
    path = Path(__file__).resolve().parents[2] / relpath
    spec = importlib.util.spec_from_file_location("meshaios_script_" + path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def gpu_counts(c: Any, device: str = "fakegpu:0") -> dict[str, int]:
    counts: dict[str, int] = c.status()["node"]["gpu"][device]
    return counts


def reference(x: np.ndarray, ws: list[np.ndarray]) -> np.ndarray:
    h = x
    for w in ws:
        h = K.get("meshaios.gelu").call("cpu", (K.get("meshaios.matmul").call("cpu", (h, w)),))
    h = K.get("meshaios.layer_norm").call("cpu", (h,))
    out: np.ndarray = K.get("meshaios.sum").call("cpu", (h,), {"axis": 1})
    return out


def submit_chain(c: Any, x: Any, ws: list[np.ndarray]) -> Any:
    h = x
    for w in ws:
        h = c.submit(K.get("meshaios.gelu"), c.submit(K.get("meshaios.matmul"), h, w, resources=GPU), resources=GPU)
    h = c.submit(K.get("meshaios.layer_norm"), h, resources=GPU)
    return c.submit(K.get("meshaios.sum"), h, axis=1, resources=GPU)


def inputs(seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, N)).astype(np.float32)
    ws = [(rng.standard_normal((N, N)) / np.sqrt(N)).astype(np.float32) for _ in range(4)]
    return x, ws


def test_a_chain_on_one_node_copies_each_input_in_once_and_the_result_out_once() -> None:
    with LocalMesh(1, extra_args=["--fake-gpu", "speed=4,memory=1GiB"]) as mesh, mesh.client(0) as c:
        x, ws = inputs()
        before = gpu_counts(c)
        out = submit_chain(c, x, ws).result(timeout=120)
        assert isinstance(out, np.ndarray)
        assert type(out) is np.ndarray
        np.testing.assert_allclose(out, reference(x, ws), rtol=1e-4, atol=1e-3)
        after = gpu_counts(c)
        # x and the four weights go in once each; ten intermediates of 256 KiB stay on the device; the row sums
        # (1 KiB) come out once
        assert after["h2d"] - before["h2d"] == 5
        assert after["h2d_bytes"] - before["h2d_bytes"] == 5 * N * N * 4
        assert after["d2h"] - before["d2h"] == 1
        assert after["d2h_bytes"] - before["d2h_bytes"] == N * 4
        assert after["evictions"] == 0
        assert c.status()["node"]["store"]["objects"] == 0  # nothing of the chain in host memory


def test_across_two_nodes_a_device_object_leaves_its_gpu_once_when_fetched() -> None:
    """Node 0 owns the tasks and places every task it can run on itself (no GPU there); node 1 has the fake GPU.
    A CPU task on node 0 fetching a GPU result makes one device->host copy on node 1; a GPU task on node 1 taking
    node 0's result makes one host->device copy."""
    owner = ["--placement", "local", "--no-steal"]
    gpu = ["--fake-gpu", "speed=4,memory=1GiB", "--no-steal"]
    with LocalMesh(2, per_node_args={0: owner, 1: gpu}) as mesh, mesh.client(0, spread=1) as c, mesh.client(1) as c1:
        wait_for(lambda: len(c.status()["members"]) == 1, timeout=15, what="discovery")
        gpu_node = mesh.by_index(1).node_id
        x, ws = inputs(1)
        before = gpu_counts(c1)
        a = c.submit(K.get("meshaios.matmul"), x, ws[0], resources=GPU)  # on node 1, kept on its device
        b = c.submit(K.get("meshaios.gelu"), a, resources=GPU)  # node 1, no copy
        cpu = c.submit(K.get("meshaios.multiply"), b, 2.0)  # node 0: fetches b from node 1
        back = c.submit(K.get("meshaios.sum"), cpu, axis=0, resources=GPU)  # node 1: takes node 0's result
        expected = (K.get("meshaios.gelu").call("cpu", (x @ ws[0],)) * 2.0).sum(axis=0)
        np.testing.assert_allclose(back.result(timeout=120), expected, rtol=1e-4, atol=1e-3)
        assert a.node == b.node == back.node == gpu_node
        assert cpu.node == mesh.by_index(0).node_id
        after = gpu_counts(c1)
        assert after["h2d"] - before["h2d"] == 3  # x, ws[0], node 0's product
        assert after["d2h"] - before["d2h"] == 2  # b for node 0's fetch, the final column sums
        assert after["d2h_bytes"] - before["d2h_bytes"] == N * N * 4 + N * 4
        assert c.status()["node"]["counters"]["fetched_bytes"] >= N * N * 4


def test_a_put_for_the_gpu_lands_on_a_gpu_nodes_device_and_kernels_there_read_it_without_a_copy() -> None:
    """The client's node has no GPU: the put's second copy goes to the GPU node, onto its device, before the put
    returns; kernel tasks there read it with no copy (1 MiB: through /dev/shm from the client, as any put)."""
    gpu = ["--fake-gpu", "speed=4,memory=1GiB"]
    with LocalMesh(2, per_node_args={1: gpu}) as mesh, mesh.client(0) as c, mesh.client(1) as c1:
        wait_for(lambda: len(c.status()["members"]) == 1, timeout=15, what="discovery")
        x = np.random.default_rng(3).standard_normal((512, 512)).astype(np.float32)
        before = gpu_counts(c1)
        ref = c.put(x, device="gpu")
        put = gpu_counts(c1)
        assert put["h2d"] - before["h2d"] == 1
        assert put["resident_objects"] - before["resident_objects"] == 1
        futs = [c.submit(K.get("meshaios.matmul"), ref, ref, resources=GPU) for _ in range(3)]
        for f in futs:
            np.testing.assert_allclose(f.result(timeout=60), x @ x, rtol=1e-4, atol=1e-3)
        after = gpu_counts(c1)
        assert after["h2d"] == put["h2d"]  # the put was already there, three times
        assert after["d2h"] - put["d2h"] == 3  # the three products, to the client
        with pytest.raises(ValueError, match="device must be"):
            c.put(x, device="tpu")


def test_device_memory_pressure_moves_objects_to_host_and_an_oom_leaves_the_node_serving() -> None:
    """8 MiB of fake device memory: 4 MiB for objects kept between tasks. Six 1 MiB results push the two least
    recently used to host memory; a 5 MiB input that does not fit beside the four kept evicts them and is retried;
    a 10 MiB input can never fit and fails with DeviceMemoryError, and the node carries on."""
    with LocalMesh(1, extra_args=["--fake-gpu", "speed=4,memory=8MiB"]) as mesh, mesh.client(0) as c:
        rng = np.random.default_rng(2)
        m = 512  # 1 MiB float32
        xs = [rng.standard_normal((m, m)).astype(np.float32) for _ in range(6)]
        futs = [c.submit(K.get("meshaios.multiply"), x, 3.0, resources=GPU) for x in xs]
        for f in futs:
            assert f.exception(timeout=60) is None
        counts = gpu_counts(c)
        assert counts["limit"] == 4 * 2**20
        assert counts["resident_bytes"] == 4 * 2**20
        assert counts["resident_objects"] == 4
        assert counts["evictions"] == 2
        assert counts["evicted_bytes"] == 2 * 2**20
        assert c.status()["node"]["store"]["objects"] == 2  # the evicted ones, in host memory
        for f, x in zip(futs, xs, strict=True):  # all readable, wherever they are
            np.testing.assert_array_equal(f.result(timeout=60), x * 3.0)

        big = rng.standard_normal(5 * 2**18).astype(np.float32)  # 5 MiB
        fits_after_eviction = c.submit(K.get("meshaios.multiply"), big, 2.0, resources=GPU)
        np.testing.assert_array_equal(fits_after_eviction.result(timeout=60), big * 2.0)
        counts = gpu_counts(c)
        assert counts["oom_retries"] == 1
        assert counts["oom_failures"] == 0
        assert counts["evictions"] == 6  # all four kept objects made room

        huge = rng.standard_normal(10 * 2**18).astype(np.float32)  # 10 MiB: more than the device has
        with pytest.raises(TaskError, match="ran out of memory on fakegpu:0") as info:
            c.submit(K.get("meshaios.multiply"), huge, 2.0, resources=GPU).result(timeout=60)
        assert info.value.remote_type == "meshaios.devices.errors.DeviceMemoryError"
        counts = gpu_counts(c)
        assert counts["oom_retries"] == 2
        assert counts["oom_failures"] == 1
        # the node still serves: GPU and CPU tasks, and the objects it holds
        assert c.submit(K.get("meshaios.sum"), xs[0], resources=GPU).result(timeout=60) == pytest.approx(
            float(xs[0].sum()), rel=1e-4
        )
        assert c.submit(funcs.square, 7).result(timeout=60) == 49
        np.testing.assert_array_equal(futs[0].result(timeout=60), xs[0] * 3.0)


def test_gpu_tasks_queued_on_one_node_process_are_stolen_by_the_other_gpu_node_not_by_the_cpu_only_one() -> None:
    """Three node processes: node 0 places everything on itself and has one fake GPU slot, node 1 has an idle
    fake GPU, node 2 has none. Twelve GPU tasks queue on node 0; node 1 steals some and runs them on its GPU
    slot's thread, node 2 none."""
    gpu = ["--fake-gpu", "speed=4,memory=1GiB"]
    per_node = {0: [*gpu, "--placement", "local"], 1: gpu}
    with LocalMesh(3, per_node_args=per_node) as mesh, mesh.client(0, spread=1) as c:  # node 0 owns and queues
        wait_for(lambda: len(c.status()["members"]) == 2, timeout=15, what="discovery")
        futs = [c.submit(funcs.thread_after, 0.25, resources=GPU) for _ in range(12)]
        threads = [f.result(timeout=120) for f in futs]
        assert all(t.startswith("mesh-fakegpu:0-") for t in threads)  # each on a GPU slot's thread
        ids = [mesh.by_index(i).node_id for i in range(3)]
        ran = {f.node for f in futs}
        assert ran == {ids[0], ids[1]}
        stolen = sum(f.node == ids[1] for f in futs)
        with mesh.client(1) as c1, mesh.client(2) as c2:
            assert c1.status()["node"]["steal"]["stolen_in"] == stolen
            assert c2.status()["node"]["steal"]["stolen_in"] == 0
        assert c.status()["node"]["steal"]["stolen_out"] == stolen


def test_gpu_check_chain_rows_on_a_fake_gpu() -> None:
    """tools/gpu_check.py's chain (the issue's four rows) at a toy size: the copies each row makes per run."""
    mod = load_script("tools/gpu_check.py")
    rows = {r["row"]: r for r in mod.chain(160, 1, fake=True, mesh=True)}  # 100 KiB matrices: kept on the device
    assert list(rows) == ["resident", "kernel_call", "mesh", "cpu"]
    assert all(r["agree"] for r in rows.values())
    copies = {k: (r["h2d"], r["d2h"], r["setup_h2d"]) for k, r in rows.items()}
    assert copies == {"resident": (0, 1, 5), "kernel_call": (14, 10, 0), "mesh": (0, 1, 5), "cpu": (0, 0, 0)}


def test_gpu_check_overlap_rows_on_a_fake_gpu() -> None:
    """tools/gpu_check.py's overlap check (streams per slot, products out through pinned buffers) at a toy size:
    the same code path a real GPU takes, on FakeCupy's stand-ins."""
    mod = load_script("tools/gpu_check.py")
    rows = mod.overlap(512, 4, 1, fake=True)  # 1 MiB products: PINNED_MIN_BYTES
    assert [r["slots"] for r in rows] == [1, 2]
    assert all(r["agree"] and r["streams_ok"] and r["pinned_ok"] for r in rows)
    assert [(r["streams"], r["d2h_pinned"]) for r in rows] == [(2, 8), (4, 8)]  # 2 runs: warm-up and timed
    assert mod.overlap_failures(rows) == []


def test_the_mlp_inference_example_copies_weights_in_once_and_each_batch_in_and_out_once() -> None:
    """examples/mlp_inference.py: weights put on the GPU once, batches streamed through two layers; the logits
    (small) stay on the device because the task asks (keep_on_device=True)."""
    mod = load_script("examples/mlp_inference.py")
    r = mod.run(batches=4, batch=64, features=128, hidden=512, cpu=False)
    assert r["ok"]
    assert r["on_gpu_node"]
    assert (r["h2d"], r["d2h"]) == (2 + 4, 4)
