"""A node's heap (store/heap.py): free pages handed back to the OS once per idle spell after work; numpy on small
pages where free memory goes back to a hypervisor."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from meshaios.store import heap
from meshaios.store.heap import HeapTrim
from meshaios.store.objects import ObjectStore


def test_trims_once_after_the_node_has_been_idle_long_enough() -> None:
    h = HeapTrim(idle_after=0.5)
    assert not h.tick(0.0, queued=0, finished=0)  # never worked: nothing to hand back
    assert not h.tick(1.0, queued=1, finished=0)
    assert not h.tick(1.2, queued=0, finished=1)  # the task finished: idle from now
    assert not h.tick(1.6, queued=0, finished=1)
    assert h.tick(1.75, queued=0, finished=1)
    assert not h.tick(2.0, queued=0, finished=1)  # once per idle spell
    assert not h.tick(9.0, queued=0, finished=1)
    assert h.trims == 1


def test_a_task_between_two_ticks_counts_as_work() -> None:
    h = HeapTrim(idle_after=0.5)
    h.tick(0.0, queued=0, finished=0)
    assert not h.tick(0.05, queued=0, finished=3)  # three tasks came and went between the ticks
    assert not h.tick(0.5, queued=0, finished=3)
    assert h.tick(0.6, queued=0, finished=3)


def test_work_during_the_wait_starts_it_again() -> None:
    h = HeapTrim(idle_after=0.5)
    h.tick(0.0, queued=1, finished=0)
    assert not h.tick(0.4, queued=0, finished=1)
    h.tick(0.45, queued=1, finished=1)  # a task came: its buffers are wanted for the next one
    assert not h.tick(0.9, queued=0, finished=2)
    assert h.tick(1.41, queued=0, finished=2)
    h.tick(3.0, queued=0, finished=3)
    assert h.tick(3.5, queued=0, finished=3)
    assert h.trims == 2


PROBE = """
import numpy as np
from meshaios.store import heap

def rss():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) // 1024 for line in fh if line.startswith("VmRSS:"))

# an 8 MiB buffer freed: glibc's mmap threshold rises to 8 MiB. (Mapped, not cut from a free chunk the imports left
# in the heap: a 1 MiB one was, after meshaios's compiled modules loaded, and the threshold stayed at 128 KiB.)
a = np.ones(1 << 20); del a
xs = [np.ones(1 << 17) for _ in range(200)]  # 200 MiB from the heap
guard = np.ones(1 << 17)  # above them: the heap cannot shrink from its top
base = rss()
del xs
kept = rss()
assert heap.trim()
print(base, kept, rss())
"""


def test_trim_hands_free_heap_pages_back_to_the_os() -> None:
    """Buffers under glibc's mmap threshold come from the heap and stay in RSS once freed; ``trim`` gives them
    back (in a process of its own: the test runner's heap is not ours to measure)."""
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True)
    base, kept, trimmed = (int(x) for x in out.stdout.split())
    assert kept > base - 50  # freed, still resident: what the node reuses for its next task
    assert trimmed < base - 150  # handed back


def test_the_store_trims_on_its_release_thread() -> None:
    store = ObjectStore(1 << 30, None, background=True)
    try:
        store.trim_heap()  # runs on ``meshaios-free``; returns at once
    finally:
        store.clear()  # waits for the release thread: the trim has run


def _balloon(root: Path, bits: str) -> Path:
    dev = root / "virtio3"
    dev.mkdir(parents=True)
    (dev / "features").write_text(bits + "\n")
    return root


def test_a_balloon_that_reports_free_pages_is_recognised(tmp_path: Path) -> None:
    assert heap.reports_free_pages(_balloon(tmp_path / "a", "0110010100000000"))  # bit 5: free page reporting
    assert not heap.reports_free_pages(_balloon(tmp_path / "b", "0110000100000000"))  # a balloon without it
    assert not heap.reports_free_pages(tmp_path / "none")  # no balloon driver at all


def test_numpy_is_asked_for_small_pages_only_where_free_pages_go_back(tmp_path: Path) -> None:
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    switch = core.multiarray._set_madvise_hugepage
    before = switch(True)
    try:
        assert not heap.small_pages_for_arrays(_balloon(tmp_path / "b", "0110000100000000"))
        assert switch(True) is True  # untouched
        assert heap.small_pages_for_arrays(_balloon(tmp_path / "a", "0110010100000000"))
        assert switch(True) is False  # it was turned off
    finally:
        switch(before)


ARENA_PROBE = """
import sys, threading
import numpy as np
from meshaios.store import heap

np_core = getattr(np, "_core", None) or np.core
np_core.multiarray._set_madvise_hugepage(False)  # RSS in 4 KiB pages, as on the nodes of a ballooned VM
if sys.argv[1] == "one":
    assert heap.one_arena()

def rss():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) // 1024 for line in fh if line.startswith("VmRSS:"))

def task():  # what a node's task thread does: a buffer above glibc's threshold, freed, then another
    a = np.ones(25 << 17); del a  # 25 MiB mapped and unmapped: the thresholds rise to 25 MiB (trim: 50)
    b = np.ones(25 << 17); del b  # 25 MiB from the arena's heap, freed back to its top

base = rss()
t = threading.Thread(target=task); t.start(); t.join()
assert heap.trim()
print(base, rss())
"""


def test_with_one_arena_trim_hands_back_what_a_task_thread_freed() -> None:
    """A thread's own glibc arena keeps the free space at its top through ``malloc_trim`` (up to the trim threshold);
    with every thread on the main arena (``one_arena``, as a node starts) ``trim`` hands it back. Each case in a
    process of its own."""
    def run(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", ARENA_PROBE, mode], capture_output=True, text=True, timeout=60,
                             check=True)  # fmt: skip
        base, after = (int(x) for x in out.stdout.split())
        return after - base

    assert run("threads") >= 20  # the 25 MiB stay resident in the thread's arena
    assert run("one") < 5


def test_one_arena_leaves_an_explicit_malloc_arena_max_alone() -> None:
    probe = "from meshaios.store import heap; print(heap.one_arena())"
    env = {**os.environ, "MALLOC_ARENA_MAX": "4"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, env=env, check=True)
    assert out.stdout.strip() == "False"
