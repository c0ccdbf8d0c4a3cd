"""What a test leaves behind: threads (daemon ones too: every thread meshaios starts is a daemon), sockets and other
kernel handles (an event loop's self-pipe, a ZeroMQ context's sockets and signalling fds), and child processes.

Each ``snapshot()`` is taken before a test; ``leaks(before, grace)`` waits up to ``grace`` seconds for what the test
started to finish going away (a joined thread, a closed socket, a reaped child) and returns what is still there.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

# Threads that the Python runtime or a library starts once per process and keeps on purpose; never meshaios's own.
# A loop's default-executor threads ("asyncio_", "uvloop_") live as long as the loop: a leaked loop is caught by its
# handles (epoll, eventfd, self-pipe) instead.
PROCESS_WIDE = ("asyncio_", "uvloop_", "ThreadPoolExecutor-", "pydevd", "Dummy-")
# Kernel handles worth counting: a leaked loop, context or connection holds at least one of these.
HANDLE_KINDS = ("socket:", "anon_inode:[eventfd]", "anon_inode:[eventpoll]", "pipe:")


@dataclass(frozen=True)
class Snapshot:
    threads: frozenset[int]
    handles: frozenset[str]
    children: frozenset[int]


@dataclass
class Leaks:
    threads: list[str] = field(default_factory=list)
    handles: list[str] = field(default_factory=list)
    children: list[int] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.threads or self.handles or self.children)

    def describe(self) -> str:
        parts = []
        if self.threads:
            parts.append(f"threads {sorted(self.threads)}")
        if self.handles:
            kinds: dict[str, int] = {}
            for h in self.handles:
                kind = h.split("]", 1)[0] + "]" if h.startswith("anon_inode") else h.split(":", 1)[0]
                kinds[kind] = kinds.get(kind, 0) + 1
            parts.append(f"handles {dict(sorted(kinds.items()))}")
        if self.children:
            parts.append(f"child processes {sorted(self.children)}")
        return "test leaked " + "; ".join(parts)


def _handles() -> frozenset[str]:
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed while listing (the listing's own fd, among others)
        if target.startswith(HANDLE_KINDS):
            out.add(f"{target}#{fd}")
    return frozenset(out)


#: Processes whose children count as this process's own: the test suite's zygote, which forks the nodes of every
#: ``LocalMesh`` (meshaios.testing.zygote).
ADOPTED_PARENTS: set[int] = set()


def _children() -> frozenset[int]:
    parents = {os.getpid(), *ADOPTED_PARENTS}
    out = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if int(fields[1]) in parents:
            out.add(int(entry))
    return frozenset(out)


def _threads() -> dict[int, threading.Thread]:
    return {t.ident: t for t in threading.enumerate() if t.ident is not None}


def _describe(t: threading.Thread) -> str:
    target = getattr(t, "_target", None)
    where = getattr(target, "__qualname__", None) or type(t).__qualname__
    return f"{t.name} ({getattr(target, '__module__', type(t).__module__)}.{where})"


def snapshot() -> Snapshot:
    return Snapshot(frozenset(_threads()), _handles(), _children())


def _new_threads(before: Snapshot) -> list[threading.Thread]:
    return [
        t
        for ident, t in _threads().items()
        if ident not in before.threads and t.is_alive() and not t.name.startswith(PROCESS_WIDE)
    ]


def leaks(before: Snapshot, grace: float) -> Leaks:
    """What is still there ``grace`` seconds after the test at most (returns as soon as nothing is)."""
    deadline = time.monotonic() + grace
    while True:
        threads = _new_threads(before)
        for t in threads:
            t.join(timeout=max(0.0, min(0.1, deadline - time.monotonic())))
        found = Leaks(
            threads=[_describe(t) for t in threads if t.is_alive()],
            handles=sorted(_handles() - before.handles),
            children=sorted(_children() - before.children),
        )
        if not found or time.monotonic() >= deadline:
            return found
        time.sleep(0.05)  # polling for closes and exits that are under way, bounded by the grace deadline


def warm_up() -> None:
    """Open what a library opens once per process and keeps, so that the first test to use it is not blamed:
    libuv's signal pipe comes with the first uvloop loop; pyzmq's garbage-collector thread (its own context and
    sockets) with the first zero-copy send; multiprocessing's forkserver and resource tracker (child processes, and
    the pipes to them) with the first process pool of the node's ``forkserver`` context."""
    import multiprocessing.forkserver
    import multiprocessing.resource_tracker

    import uvloop
    import zmq

    multiprocessing.forkserver.ensure_running()
    multiprocessing.resource_tracker.ensure_running()
    uvloop.new_event_loop().close()
    with zmq.Context() as ctx, ctx.socket(zmq.PAIR) as a, ctx.socket(zmq.PAIR) as b:
        a.bind("inproc://meshaios-leakguard")
        b.connect("inproc://meshaios-leakguard")
        a.send(bytes(1 << 20), copy=False)  # over zmq.COPY_THRESHOLD: really zero-copy
        b.recv()
        a.close(linger=0)
        b.close(linger=0)
