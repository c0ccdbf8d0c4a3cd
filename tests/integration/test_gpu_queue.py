"""GPU tasks go through the executing node's work queue (issue 18): GPU slots per device, stolen by an idle GPU
node and never by a CPU-only one, and the device a RUN names is the device that runs the kernel."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, cast

import numpy as np
import uvloop

from meshaios.devices.registry import default_registry
from meshaios.tasks.execcore import RunTasks
from meshaios.tasks.functions import encode_function
from meshaios.testing.inproc import InProcessMesh
from meshaios.wire.messages import RunTask
from meshaios.wire.values import dumps
from tests.integration import funcs

GPU = {"gpu": 1}
FAKE = ("speed=4,memory=1GiB",)


def run(fn: Callable[[], Awaitable[Any]]) -> Any:
    return uvloop.run(asyncio.wait_for(fn(), 90))


async def finished(node: Any) -> None:
    """Until ``node`` holds no run (its results went to its own owner, which never heard of them)."""
    for _ in range(3000):
        if not node.exec.queued:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the node never finished its runs")


async def heard(node: Any, peer: Any) -> None:
    """Until ``node`` holds ``peer``'s load summary (rebuilt every other tick, it rides on SWIM traffic)."""
    for _ in range(400):
        if node.loadview.get(peer.node_id, node.clock.now()) is not None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the peer's load summary never arrived")


def test_gpu_tasks_queued_on_one_node_are_stolen_by_an_idle_gpu_node_never_by_a_cpu_only_one() -> None:
    async def main() -> None:
        per_node = {0: {"fake_gpus": FAKE, "placement": "local"}, 1: {"fake_gpus": FAKE}, 2: {}}
        async with InProcessMesh(3, per_node=per_node) as mesh:
            await mesh.wait_converged()
            owner, gpu_thief, cpu_only = mesh.nodes
            c = await mesh.client(0)
            # all placed on node 0 ("local"), whose one GPU slot runs one at a time: the rest wait in its queue
            futs = [c.submit(funcs.thread_after, 0.2, resources=GPU) for _ in range(12)]
            threads = await asyncio.gather(*futs)
            assert all(t.startswith("mesh-fakegpu:0-") for t in threads)  # every one on a GPU slot's thread
            ran = {f.node for f in futs}
            assert ran == {owner.node_id, gpu_thief.node_id}
            assert gpu_thief.steal.counters["stolen"] >= 1
            assert owner.steal.counters["given"] == gpu_thief.steal.counters["stolen"]
            # the CPU-only node sat idle beside a queue of GPU work and took none of it
            assert cpu_only.steal.counters["stolen"] == 0
            assert cpu_only.exec.finished == 0
            assert owner.exec.queued == gpu_thief.exec.queued == 0

    run(main)


def test_the_device_a_run_names_runs_the_kernel_and_gpu_slots_are_per_device() -> None:
    """A node with two fake GPUs and two slots on each: a RUN that names the GPU (EFT's pick, no resources asked)
    runs the kernel there -- its device's copy counters say so -- and a CPU run of the same kernel copies nothing."""

    async def main() -> None:
        async with InProcessMesh(1, per_node={0: {"fake_gpus": FAKE * 2, "gpu_slots": 2}}) as mesh:
            await mesh.wait_converged()
            (node,) = mesh.nodes
            assert node.queue.slots == {"cpu": node.workers, "gpu": 4}
            assert sorted(node._gpu_pools) == ["fakegpu:0", "fakegpu:1"]
            relu = default_registry().get("meshaios.relu")
            x = np.arange(-8, 8, dtype=np.float32)

            def spec(tid: str, **extra: Any) -> RunTask:
                fn = encode_function(relu, allow_pickle=False)
                return cast(RunTask, {"id": tid, "att": 0, "fn": fn, "args": dumps([[x], {}], allow_pickle=False)[0],
                                      "deps": {}, "pure": False, **extra})

            def copies() -> int:
                return sum(st["h2d"] + st["d2h"] for st in node.gpu.status().values())

            node._core(RunTasks(node.node_id, [spec("on-gpu", device="gpu")]))
            await finished(node)
            assert copies() == 2  # x in, the result out, on one of the GPUs
            node._core(RunTasks(node.node_id, [spec("on-cpu", device="cpu")]))
            await finished(node)
            assert copies() == 2
            assert node.exec.finished == 2

    run(main)


def test_with_gpu_choice_eft_puts_a_kernel_on_the_gpu_and_the_executor_runs_it_there() -> None:
    """Node 0 owns the work with EFT; node 1 has a fake GPU declared 8x the CPU. A kernel task that asks for no
    GPU: without ``gpu_choice`` it is a CPU task wherever it goes (no copies on the GPU); with it, EFT picks node
    1's GPU, the RUN says so, and node 1 runs it on its fake GPU: its copy counters move."""

    async def main(choice: bool) -> tuple[bool, int]:
        per_node = {0: {"placement": "eft", "gpu_choice": choice}, 1: {"fake_gpus": ("speed=8,memory=1GiB",)}}
        async with InProcessMesh(2, per_node=per_node) as mesh:
            await mesh.wait_converged()
            owner, gpu_node = mesh.nodes
            await heard(owner, gpu_node)  # EFT knows the GPU from its gossiped load summary
            c = await mesh.client(0, spread=1)  # node 0 (EFT with the GPU choice) owns the task
            x = np.arange(-8, 8, dtype=np.float32)
            f = c.submit(default_registry().get("meshaios.relu"), x)
            np.testing.assert_array_equal(await f, np.maximum(x, 0))
            copies = sum(st["h2d"] + st["d2h"] for st in gpu_node.gpu.status().values())
            return f.node == gpu_node.node_id, copies

    assert run(lambda: main(False))[1] == 0  # a CPU task, wherever it ran
    assert run(lambda: main(True)) == (True, 2)  # on the GPU node's GPU: x in, the result out


def test_a_tasks_own_device_choice_reaches_eft_and_the_executor_whatever_the_nodes_gpu_choice() -> None:
    """``submit(..., device=...)`` per task (issue 18): the same mesh as above. ``device="any"`` on an owner
    without ``gpu_choice`` lets EFT put the kernel on node 1's GPU, and node 1 runs it there (its copies move);
    ``device="cpu"`` on an owner with ``gpu_choice`` keeps it off every GPU."""

    async def main(choice: bool, device: str) -> tuple[bool, int]:
        per_node = {0: {"placement": "eft", "gpu_choice": choice}, 1: {"fake_gpus": ("speed=8,memory=1GiB",)}}
        async with InProcessMesh(2, per_node=per_node) as mesh:
            await mesh.wait_converged()
            owner, gpu_node = mesh.nodes
            await heard(owner, gpu_node)
            c = await mesh.client(0, spread=1)
            x = np.arange(-8, 8, dtype=np.float32)
            f = c.submit(default_registry().get("meshaios.relu"), x, device=device)
            np.testing.assert_array_equal(await f, np.maximum(x, 0))
            copies = sum(st["h2d"] + st["d2h"] for st in gpu_node.gpu.status().values())
            return f.node == gpu_node.node_id, copies

    assert run(lambda: main(False, "any")) == (True, 2)  # EFT chose the GPU: x in, the result out
    assert run(lambda: main(True, "cpu"))[1] == 0  # a CPU task, wherever it ran


def test_a_gpu_task_that_asked_to_report_its_start_is_reported_running() -> None:
    """``report_start`` (the executor API's ``running()``) holds on a GPU slot too."""

    async def main() -> None:
        async with InProcessMesh(1, per_node={0: {"fake_gpus": FAKE}}) as mesh:
            await mesh.wait_converged()
            c = await mesh.client(0)
            item = c._prepare(funcs.thread_after, (0.5,), {}, resources=GPU, report_start=True)
            c._enqueue([item])
            f = item[1]
            for _ in range(400):
                if f.running() or f.done():
                    break
                await asyncio.sleep(0.01)
            assert f.running()  # told while it runs, on the GPU slot's thread
            assert (await f).startswith("mesh-fakegpu:0-")

    run(main)


def test_a_result_kept_on_a_gpu_is_reported_and_its_gpu_consumer_runs_there_with_no_copy() -> None:
    """Two fake-GPU nodes and a CPU-only owner: a 2 MiB kernel result stays on its node's GPU, the node says so in
    its result (``kdev``) and the owner records it; a GPU consumer of it runs on that node and reads it with no
    copy (placement prices moving it off the GPU, ``sched/inputs.py``)."""

    async def main() -> None:
        per_node = {0: {}, 1: {"fake_gpus": FAKE}, 2: {"fake_gpus": FAKE}}
        async with InProcessMesh(3, per_node=per_node) as mesh:
            await mesh.wait_converged()
            owner = mesh.nodes[0]
            c = await mesh.client(0, spread=1)  # the CPU-only node 0 owns the tasks
            reg = default_registry()
            x = np.arange(-(1 << 18), 1 << 18, dtype=np.float32)  # 2 MiB
            first = c.submit(reg.get("meshaios.relu"), x, resources=GPU)
            await first
            holder = next(n for n in mesh.nodes if n.node_id == first.node)
            assert owner.owner.tasks[first.key].device_at == holder.node_id
            before = holder.gpu.status()["fakegpu:0"]
            second = c.submit(reg.get("meshaios.multiply"), first, 2.0, resources=GPU)
            np.testing.assert_array_equal(await second, np.maximum(x, 0) * 2.0)
            assert second.node == holder.node_id
            after = holder.gpu.status()["fakegpu:0"]
            assert after["h2d"] == before["h2d"]  # the input was read where it was kept
            assert after["d2h"] == before["d2h"] + 1  # only the consumer's result, to the client

    run(main)
