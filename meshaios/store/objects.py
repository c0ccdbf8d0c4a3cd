"""A node's object store: task results kept where they were produced, under a memory limit, spilling to disk.

Objects are ``Payload``s (a msgpack blob + raw buffers), keyed by object id (a task id, ``task#part`` for one
partition of a shuffle map output, or a ``put`` id). Beyond ``memory_limit`` bytes, the least recently used
objects are written to ``spill_dir`` and read back on demand, so a shuffle larger than RAM still completes.

Spilling runs on a thread of the store's own (``background=True``, what a node uses): a ``put`` from the event
loop never waits for a disk. Reading a spilled object back is ``get``, which reads the file: callers on an event
loop ask ``on_disk`` first and call ``get`` from a thread. Spill files are named by a hash of the id, so no two
ids share a file whatever characters they contain.

Under the host tiers a node may have a device tier (``device``, ``devices/resident.py``): GPU results kept on
their GPU. The store answers for them too -- ``in``, ``size_of``, ``delete`` -- and ``get`` returns a host copy
(one device->host copy); ``on_disk`` is true for them as well, so event-loop callers make that copy on a thread.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import logging
import os
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from meshaios.errors import MeshError
from meshaios.store import heap
from meshaios.wire.payload import Payload

log = logging.getLogger(__name__)


class SpillError(MeshError):
    """Spilling failed (disk full, unwritable directory): the object stays in memory; the limit is exceeded."""


class DeviceTier(Protocol):
    """What the store asks of the objects kept on devices (``meshaios.devices.resident.DeviceTier``)."""

    def __contains__(self, key: object) -> bool: ...

    def keys(self) -> list[str]: ...

    def size_of(self, key: str) -> int | None: ...

    def payload(self, key: str) -> Payload | None: ...

    def delete(self, key: str) -> bool: ...

    def clear(self) -> None: ...


@dataclass
class StoreStats:
    objects: int = 0
    bytes_in_memory: int = 0
    bytes_spilled: int = 0
    spilled_objects: int = 0
    spill_events: int = 0
    unspill_events: int = 0
    spill_failures: int = 0
    peak_memory: int = 0


RELEASE_OFF_LOOP = 32 << 20  # objects at least this large are let go on the store's release thread


class ObjectStore:
    """Thread-safe: executor threads put results while the event loop serves fetches."""

    def __init__(self, memory_limit: int, spill_dir: Path | None, background: bool = False) -> None:
        self.memory_limit = memory_limit
        self.spill_dir = spill_dir
        self._spiller = (
            concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="meshaios-spill") if background else None
        )
        # large objects are let go on a thread of their own: unmapping 1 GiB of /dev/shm pages takes ~0.3 s, and on
        # the event loop that stalled SWIM past its probe timeout (a 1 GiB put made its holder a suspect)
        self._releaser = (
            concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="meshaios-free") if background else None
        )
        self._mem: OrderedDict[str, Payload] = OrderedDict()  # LRU order: oldest first
        self._disk: dict[str, tuple[Path, int]] = {}
        self._lock = threading.Lock()
        self._spilling: set[str] = set()  # chosen as victims by one thread: no other thread writes them too
        self.stats = StoreStats()
        self.device: DeviceTier | None = None  # objects kept on GPUs, under the host tiers

    def __contains__(self, key: str) -> bool:
        with self._lock:
            if key in self._mem or key in self._disk:
                return True
        return self.device is not None and key in self.device

    def keys(self) -> list[str]:
        with self._lock:
            keys = list(self._mem) + list(self._disk)
        return keys + (self.device.keys() if self.device is not None else [])

    def on_disk(self, key: str) -> bool:
        """Spilled, or kept on a device only: ``get`` would read a file or copy from the device."""
        with self._lock:
            if key in self._disk:
                return True
            if key in self._mem:
                return False
        return self.device is not None and key in self.device

    def size_of(self, key: str) -> int | None:
        with self._lock:
            p = self._mem.get(key)
            if p is not None:
                return p.nbytes
            d = self._disk.get(key)
            if d is not None:
                return d[1]
        return self.device.size_of(key) if self.device is not None else None

    def put(self, key: str, payload: Payload) -> None:
        with self._lock:
            self._drop_locked(key)
            self._mem[key] = payload
            self.stats.bytes_in_memory += payload.nbytes
            self.stats.objects += 1
            self.stats.peak_memory = max(self.stats.peak_memory, self.stats.bytes_in_memory)
            victims = self._choose_victims_locked(keep=key)
        for k, p in victims:
            if self._spiller is not None:
                self._spiller.submit(self._spill, k, p)
            else:
                self._spill(k, p)

    def get(self, key: str) -> Payload | None:
        with self._lock:
            p = self._mem.get(key)
            if p is not None:
                self._mem.move_to_end(key)
                return p
            d = self._disk.get(key)
        if d is None:
            return self.device.payload(key) if self.device is not None else None
        self.stats.unspill_events += 1
        try:
            return _read(d[0])
        except OSError as exc:  # deleted meanwhile, or the disk failed: the object is not here
            if key in self:
                log.warning("cannot read spilled %s back from %s: %s", key, d[0], exc)
            return None

    def delete(self, key: str) -> bool:
        # the device tier first: an object it is moving to host memory meanwhile then lands here before the
        # drop below, or not at all
        dropped = self.device.delete(key) if self.device is not None else False
        with self._lock:
            return self._drop_locked(key) or dropped

    def trim_heap(self) -> None:
        """Hand the process's free heap pages back to the OS (``heap.trim``), on the release thread if there is
        one: it walks every heap, which should not hold the event loop."""
        releaser = self._releaser
        if releaser is None:
            heap.trim()
            return
        with contextlib.suppress(RuntimeError):  # shut down meanwhile: the node stops, nothing to hand back
            releaser.submit(heap.trim)

    def clear(self) -> None:
        """Drop everything and stop the spill and release threads (the node calls this when it stops)."""
        if self._spiller is not None:
            self._spiller.shutdown(wait=True, cancel_futures=True)
            self._spiller = None
        releaser, self._releaser = self._releaser, None
        with self._lock:
            for k in list(self._mem) + list(self._disk):
                self._drop_locked(k)
        if releaser is not None:
            releaser.shutdown(wait=True)
        if self.device is not None:
            self.device.clear()

    # ---- internals ----------------------------------------------------------------------------------------
    def _drop_locked(self, key: str) -> bool:
        if key in self._mem:
            held = [self._mem.pop(key)]  # our only reference: the release thread empties the list
            nbytes = held[0].nbytes
            self.stats.bytes_in_memory -= nbytes
            self.stats.objects -= 1
            releaser = self._releaser
            if releaser is not None and nbytes >= RELEASE_OFF_LOOP:
                with contextlib.suppress(RuntimeError):  # shut down meanwhile (the node stops): dropped here
                    releaser.submit(held.clear)  # if ours was the last reference, it dies on that thread
            return True
        d = self._disk.pop(key, None)
        if d is not None:
            self.stats.bytes_spilled -= d[1]
            self.stats.spilled_objects -= 1
            self.stats.objects -= 1
            with contextlib.suppress(OSError):
                d[0].unlink()
            return True
        return False

    def _choose_victims_locked(self, keep: str) -> list[tuple[str, Payload]]:
        if self.spill_dir is None or self.stats.bytes_in_memory <= self.memory_limit:
            return []
        victims = []
        excess = self.stats.bytes_in_memory - self.memory_limit
        for k, p in self._mem.items():
            if excess <= 0:
                break
            if (k == keep and len(self._mem) > 1) or k in self._spilling:
                continue
            victims.append((k, p))
            self._spilling.add(k)
            excess -= p.nbytes
        return victims

    def _spill(self, key: str, payload: Payload) -> None:
        assert self.spill_dir is not None
        path = self.spill_dir / spill_name(key)
        try:
            self.spill_dir.mkdir(parents=True, exist_ok=True)
            _write(path, payload)
        except (OSError, ValueError) as exc:
            with self._lock:
                self._spilling.discard(key)
            self.stats.spill_failures += 1
            log.warning("cannot spill %s to %s: %s (keeping it in memory)", key, self.spill_dir, exc)
            return
        with self._lock:
            self._spilling.discard(key)
            if self._mem.get(key) is not payload:  # deleted or replaced meanwhile
                with contextlib.suppress(OSError):
                    path.unlink()
                return
            del self._mem[key]
            self._disk[key] = (path, payload.nbytes)
            self.stats.bytes_in_memory -= payload.nbytes
            self.stats.bytes_spilled += payload.nbytes
            self.stats.spilled_objects += 1
            self.stats.spill_events += 1


def spill_name(key: str) -> str:
    """The file an object spills to: a hash of its id, so ``coll/a`` and ``coll_a`` never share one."""
    return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest() + ".obj"


_HEAD = struct.Struct("<II")


def _write(path: Path, payload: Payload) -> None:
    tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
    try:
        _write_file(tmp, payload)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _write_file(tmp: Path, payload: Payload) -> None:
    with open(tmp, "wb") as fh:
        fh.write(_HEAD.pack(len(payload.blob), len(payload.buffers)))
        for b in payload.buffers:
            fh.write(struct.pack("<Q", memoryview(b).nbytes))
        fh.write(payload.blob)
        for b in payload.buffers:
            fh.write(memoryview(b).cast("B"))
        fh.flush()


def _read(path: Path) -> Payload:
    with open(path, "rb") as fh:
        nblob, nbuf = _HEAD.unpack(fh.read(_HEAD.size))
        sizes = [struct.unpack("<Q", fh.read(8))[0] for _ in range(nbuf)]
        blob = fh.read(nblob)
        bufs: list[Any] = []
        for s in sizes:
            ba = bytearray(s)
            fh.readinto(ba)
            bufs.append(ba)
    return Payload(blob, tuple(bufs))
