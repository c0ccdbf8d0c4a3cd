"""Tiny-task cost of one node, in one process: 10,000 no-op tasks on an in-process mesh of one node (one event
loop, the in-memory transport: no sockets, no encryption), after a 1,000-task warm-up. Prints the process CPU time
per task (client and node together) and the wall-clock rate. Needs only meshaios, so it compares two trees of the
code on one machine in one sitting (the bench venv is not needed)::

    for i in 1 2 3 4 5 6 7 8; do for tree in /tmp/old /tmp/new; do
        PYTHONPATH=$tree .venv/bin/python tools/bench/inproc_noop.py; done; done
"""

from __future__ import annotations

import asyncio
import operator
import time

import meshaios
from meshaios.testing.inproc import InProcessMesh

TASKS = 10_000


async def main() -> None:
    async with InProcessMesh(1) as mesh:
        await mesh.wait_converged()
        c = await mesh.client(0)
        await c.gather(c.map(operator.neg, range(1000)))
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await c.gather(c.map(operator.neg, range(TASKS)))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        print(f"{meshaios.__file__}: {cpu / TASKS * 1e6:.1f} CPU-us/task, {TASKS / wall:,.0f} tasks/s")


if __name__ == "__main__":
    asyncio.run(main())
