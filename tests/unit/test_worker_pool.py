"""The worker threads' pool: results come back in batches on the loop; a prefetched item can be taken back until a
worker starts it, and then it never runs -- exactly one of "recalled" and "ran" for every item."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from meshaios.tasks.workers import WorkerPool


def test_recalled_items_never_run_and_the_rest_run_once() -> None:
    async def main() -> tuple[list[Any], list[Any], list[int]]:
        loop = asyncio.get_running_loop()
        done: list[Any] = []
        finished = asyncio.Event()
        gate = threading.Event()
        ran: list[int] = []

        def on_done(batch: list[tuple[Any, Any]]) -> None:
            done.extend(ctx for ctx, _ in batch)
            if len(done) >= expected[0]:
                finished.set()

        def work(i: int) -> int:
            if i == 0:
                gate.wait(10)  # holds the only worker: everything else waits in the queue
            ran.append(i)
            return i

        expected = [0]
        pool = WorkerPool(1, "t", loop, on_done)
        try:
            for i in range(100):
                pool.submit(i, work, i, key=("t", i))
            back = pool.recall([("t", i) for i in range(0, 100, 2)])  # item 0 may have started already
            expected[0] = 100 - len(back)
            gate.set()
            await asyncio.wait_for(finished.wait(), 10)
            return back, done, ran
        finally:
            pool.shutdown()

    back, done, ran = asyncio.run(main())
    assert {k[1] for k in back} >= set(range(2, 100, 2))
    assert sorted(ran) == sorted(done)
    assert sorted(ran + [k[1] for k in back]) == list(range(100))  # each item exactly once: recalled or ran


def test_a_finished_item_is_not_kept_alive_by_its_idle_worker() -> None:
    """The worker's frame held the last item's argument and result until the next item came: a quiet node kept the
    last task's inputs (100 MiB arrays) after everyone had let them go."""
    import gc
    import weakref

    class Big:
        pass

    async def main() -> tuple[Any, Any]:
        loop = asyncio.get_running_loop()
        finished = asyncio.Event()
        pool = WorkerPool(1, "t", loop, lambda batch: finished.set())
        try:
            arg, out = Big(), Big()
            refs = weakref.ref(arg), weakref.ref(out)
            pool.submit("ctx", lambda a, r=out: r, arg)
            del arg, out
            await asyncio.wait_for(finished.wait(), 10)
            return refs
        finally:
            pool.shutdown()

    gc.disable()
    try:
        arg_ref, out_ref = asyncio.run(main())
        assert arg_ref() is None
        assert out_ref() is None
    finally:
        gc.enable()
