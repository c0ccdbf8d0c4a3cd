"""Memory freed as soon as nothing needs it (issue 17): clients that put and leave -- half close, half are
SIGKILLed -- leave the nodes' stores where they started, within the memory lease. Real processes, real SIGKILL."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import pytest

from meshaios.testing.localmesh import LocalMesh, wait_for

pytestmark = pytest.mark.system

CLIENT = """
import os, signal, sys
import numpy as np
from meshaios import Client
addr, token, mb, mode = sys.argv[1:]
c = Client(addr, token=token)
f = c.put(np.ones(int(mb) * 2**20 // 8), timeout=300)
print("held by", len(c._async._puts[f.key][1]), flush=True)
if mode == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
c.close()
"""


def store_bytes(mesh: LocalMesh) -> list[int]:
    out = []
    for p in mesh.procs:
        with mesh.client(p.index) as c:
            st = c.status()["node"]["store"]
        out.append(st["bytes_in_memory"] + st["bytes_spilled"])
    return out


def put_and_leave(mesh: LocalMesh, clients: int, mb: int, lease: float, batch: int) -> None:
    with mesh.client(0) as c:
        wait_for(lambda: len(c.status()["members"]) == len(mesh.procs) - 1, timeout=30, what="full membership")
    before = store_bytes(mesh)
    for start in range(0, clients, batch):
        procs = []
        for i in range(start, min(clients, start + batch)):
            mode = "close" if i % 2 == 0 else "kill"
            cmd = [sys.executable, "-c", CLIENT, mesh.address(i % len(mesh.procs)), mesh.token, str(mb), mode]
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=mesh.client_env()))
        for p in procs:
            out, err = p.communicate(timeout=600)
            assert b"held by 2" in out, err.decode(errors="replace")[-2000:]
    left = time.monotonic()
    slack = 10 << 20
    wait_for(
        lambda: all(now <= b + slack for now, b in zip(store_bytes(mesh), before, strict=True)),
        timeout=lease + 20,
        interval=0.5,
        what="store bytes back to where they started",
    )
    assert time.monotonic() - left < lease + 20


def test_clients_that_put_and_leave_hand_their_memory_back_within_the_lease() -> None:
    lease = 3.0
    with LocalMesh(3, extra_args=["--memory-lease", str(lease)], startup_timeout=60) as mesh:
        put_and_leave(mesh, clients=6, mb=16, lease=lease, batch=6)


@pytest.mark.slow
def test_a_hundred_clients_of_100mb_each() -> None:
    with LocalMesh(3, startup_timeout=60) as mesh:
        put_and_leave(mesh, clients=100, mb=100, lease=30.0, batch=10)


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_node_hands_freed_results_back_to_the_os() -> None:
    """The store frees what nobody needs; the process must then give the pages back. Two 100 MiB arrays, a task
    over each, then every future dropped: the node's RSS returns to where it was, with no allocation afterwards to
    wake Python's cyclic GC. It stayed 400 MiB up (the results and inputs were held by reference cycles in the
    value encoder and decoder, and by an idle worker's frame)."""
    import numpy as np

    from tests.integration import funcs

    n = 100 * 2**20 // 8
    with LocalMesh(1, discovery=False, workers=1) as mesh, mesh.client(0) as c:
        pid = mesh.procs[0].pid
        c.submit(funcs.make_array, 10, 1).result(timeout=30)
        base = _rss_mib(pid)
        xs = [c.submit(funcs.make_array, n, i) for i in range(2)]
        ys = [c.submit(np.sin, x) for x in xs]
        assert all(f.exception(timeout=120) is None for f in ys)
        held = _rss_mib(pid)
        assert held - base > 300  # four arrays of 100 MiB
        del xs, ys
        wait_for(lambda: store_bytes(mesh) == [0], 30, what="the store emptied")
        # the store is empty; the pages go back as soon as the last reference does (buffers over glibc's mmap
        # threshold, 32 MiB at most, are mappings of their own: unmapped on free)
        wait_for(lambda: _rss_mib(pid) - base < 50, 10, what=f"RSS back near {base:.0f} MiB (held {held:.0f})")


def test_an_idle_node_hands_its_free_heap_pages_back() -> None:
    """Buffers under glibc's mmap threshold (at most 32 MiB) come from the heap and stay there when freed, for the
    next task to reuse (store/heap.py); once the node has been idle for ``heap.IDLE_AFTER`` s it hands them back.
    Forty 4 MiB results, every other one dropped (holes that the heap cannot give back by shrinking): the node's
    RSS falls by about what was dropped. Without the trim it stays where it was."""
    from tests.integration import funcs

    n = 4 * 2**20 // 8
    with LocalMesh(1, discovery=False, workers=1) as mesh, mesh.client(0) as c:
        pid = mesh.procs[0].pid
        warm = c.submit(funcs.make_array, n, 0)
        assert c.submit(funcs.total, warm).exception(timeout=30) is None
        del warm  # a 4 MiB mapping freed: glibc's threshold rises to 4 MiB, so the next ones come from the heap
        wait_for(lambda: store_bytes(mesh) == [0], 30, what="the store emptied")
        wait_for(lambda: _heap_trims(c) >= 1, 10, what="the idle node's first trim")
        xs = [c.submit(funcs.make_array, n, i) for i in range(40)]
        assert all(f.exception(timeout=120) is None for f in xs)
        held = _rss_mib(pid)
        del xs[::2]
        wait_for(lambda: store_bytes(mesh)[0] < 21 * 4 * 2**20, 30, what="half the results dropped")
        wait_for(lambda: _heap_trims(c) >= 2, 10, what="the idle node's second trim")
        wait_for(lambda: held - _rss_mib(pid) > 60, 5, what=f"RSS down from {held:.0f} MiB by 80 MiB of holes")


def _heap_trims(c: Any) -> int:
    return int(c.status()["node"]["counters"].get("heap_trims", 0))
