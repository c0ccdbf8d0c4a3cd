"""Freed heap memory: reused while the node works, handed back to the OS once it goes idle.

glibc serves a buffer under its mmap threshold from the process's heaps and keeps it there when it is freed, so
the next buffer of that size reuses pages already mapped; a buffer over the threshold gets a mapping of its own,
unmapped on free, and the next one starts from fresh pages that the kernel must fault in and zero. The threshold
starts at 128 KiB and follows the largest buffer freed so far, up to 32 MiB (glibc's default, which Ray's and Dask's
workers run with too).

Nodes fixed it at 64 KiB until 2026-12-05 so that freed arrays left RSS at once: every shuffle part, every
concatenation and every temporary of 64 KiB or more was then a fresh mapping, and on the 400 MB shuffle of
``tools/bench`` the nodes spent 0.6-0.9 CPU-s more than with the default, nearly all of it in the kernel zeroing
new pages (docs/performance.md section 22). Now the default stands, and a node gives back what its heaps hold
free once it has had no task for ``IDLE_AFTER`` seconds (``malloc_trim``, on the store's release thread), so an
idle node still ends up at its baseline.

Huge pages: numpy asks the kernel for 2 MiB pages for every array of 4 MiB or more. On a VM whose balloon device
hands free memory back to its host (free page reporting, which works in 2 MiB blocks), a freed huge page that is not
reused at once goes back to the host, and the next array that gets it pays a fault in the host for each of its 4 KiB
pages on top of the zeroing: on the DAG of ``tools/bench`` the nodes spent 0.8 CPU-s of 2.1 zeroing new huge pages
(docs/performance.md section 22). There a node asks numpy for ordinary pages instead (``small_pages_for_arrays``):
more faults, but freed 4 KiB pages are reused while still backed.

One arena: glibc gives each thread that allocates an arena of its own, and ``malloc_trim`` hands back the free
pages inside every arena but the free space at the top of a thread's arena only down to glibc's trim threshold (up to
64 MiB with the dynamic thresholds above): after the benchmark's shuffle an idle node kept 25 MB it had freed, and
the DAG run next on the same nodes peaked that much higher. A node therefore allocates from one arena for all its
threads (``one_arena``, unless ``MALLOC_ARENA_MAX`` is set), whose top ``malloc_trim`` does hand back.

``HeapTrim`` is the pure rule (when to trim); ``trim`` does it.
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Callable
from pathlib import Path

IDLE_AFTER = 0.5  # seconds without a queued or running task before a node hands its free heap pages back
BALLOONS = Path("/sys/bus/virtio/drivers/virtio_balloon")
F_REPORTING = 5  # VIRTIO_BALLOON_F_REPORTING: the guest reports free pages to the host, which takes them back


class HeapTrim:
    """Trim once each time the node has been idle ``idle_after`` seconds after it last had a task.

    Fed at every tick with the executor's counts: tasks queued or running now, and tasks finished so far (a task
    that came and went between two ticks counts as work too)."""

    def __init__(self, idle_after: float = IDLE_AFTER) -> None:
        self.idle_after = idle_after
        self._busy_at: float | None = None  # the last time a task was seen, since the last trim
        self._finished = 0
        self.trims = 0

    def tick(self, now: float, queued: int, finished: int) -> bool:
        """True when the heap should be trimmed now."""
        if queued or finished != self._finished:
            self._finished = finished
            self._busy_at = now
            return False
        if self._busy_at is None or now - self._busy_at < self.idle_after:
            return False
        self._busy_at = None
        self.trims += 1
        return True


@functools.cache
def _glibc(name: str) -> Callable[..., int] | None:
    """glibc's function ``name``; None where there is no glibc (nothing to trim or tune)."""
    try:
        fn: Callable[..., int] = getattr(ctypes.CDLL("libc.so.6"), name)
    except (OSError, AttributeError):
        return None
    return fn


M_ARENA_MAX = -8  # mallopt's parameter number (malloc.h)


def one_arena() -> bool:
    """Every thread of this process allocates from glibc's main arena from now on (call it before threads start);
    False where there is no glibc, or where ``MALLOC_ARENA_MAX`` already says how many."""
    mallopt = _glibc("mallopt")
    if "MALLOC_ARENA_MAX" in os.environ or mallopt is None:
        return False
    return mallopt(M_ARENA_MAX, 1) == 1


def trim() -> bool:
    """Hand every free page of the process's heaps back to the OS; False where there is no glibc."""
    fn = _glibc("malloc_trim")
    if fn is None:
        return False
    fn(0)
    return True


def reports_free_pages(balloons: Path = BALLOONS) -> bool:
    """True on a VM whose virtio balloon hands free memory back to the host (feature bit ``F_REPORTING``)."""
    try:
        for dev in balloons.glob("virtio*"):
            bits = (dev / "features").read_text().strip()
            if len(bits) > F_REPORTING and bits[F_REPORTING] == "1":
                return True
    except OSError:
        pass
    return False


def small_pages_for_arrays(balloons: Path = BALLOONS) -> bool:
    """Where free pages go back to the host, ask numpy not to request huge pages for its arrays; True if it did."""
    if not reports_free_pages(balloons):
        return False
    import numpy as np

    core = getattr(np, "_core", None) or getattr(np, "core", None)
    set_hugepage = getattr(getattr(core, "multiarray", None), "_set_madvise_hugepage", None)
    if set_hugepage is None:  # a numpy without the switch: nothing to do
        return False
    set_hugepage(False)
    return True
