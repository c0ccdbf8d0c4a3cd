"""Objects kept on a GPU between tasks: a node's device tier, under its host object store.

A GPU kernel task whose result holds more than ``inline_bytes`` of device arrays keeps it **on its device**
(``DeviceTier.finish``): the owner hears only its size, as for any large result, and the next kernel task on the
same device takes it as the device array it is, with no copy at all. Anyone else -- a peer's fetch, a client's
``get``, a CPU task, a task on another GPU -- reads it through the node's ``ObjectStore``, which asks this tier
for a host ``Payload``: one device->host copy, made when the value is wanted (``payload``). Small results come
back to the host at once and travel inline, as before.

The other way round, a host object (a ``put``, a fetched input) that a kernel task reads on a GPU is copied to
that device once and kept there too (``DeviceRunner.dep``), beside its host copy: the
next kernel on that device reads it with no copy, and evicting it only drops the device copy.

Device memory is accounted per device, apart from host memory: each device may hold ``limit`` bytes of objects
(``DEVICE_RESIDENT_FRACTION`` of its memory). Beyond that, or when a kernel runs out of device memory, objects
move to the host store least recently used first (where they spill to disk as any object does); a kernel that
ran out of memory is retried once after the move, then fails with ``DeviceMemoryError``.

Overlap: every thread that works on a device does it on a CUDA stream of its own (``DeviceTier.stream``): a GPU
task slot (a thread of the node's pool for that GPU, ``--gpu-slots`` of them) copies its inputs in, runs its
kernel and copies its result out on its stream, so the copies of one task overlap the compute of another; a task
waits for its stream before it reports, so whatever it leaves on the device is complete for the next task, on any
stream. A result copied out to answer a fetch or a get (it leaves the node) of ``PINNED_MIN_BYTES`` or more goes
through a pinned host buffer (``cupy.cuda.alloc_pinned_memory``: cupy's pinned memory pool, the buffer back in
the pool once the answer is sent); copies whose host value stays here (eviction, shuffle parts) go to pageable
memory, which is not a scarce resource. On a fake GPU the ``FakeCupy`` stand-ins take the same path.

``DeviceLedger`` is the pure part (which object is on which device, how big, in what LRU order);
``DeviceTier`` holds the arrays, makes the copies and counts them per device (``TransferCounts``, shown in
``meshaios status --json`` under ``node.gpu`` and on ``/metrics``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from meshaios.devices.errors import DeviceMemoryError
from meshaios.devices.registry import Kernel, _import_cupy, _walk, device_nbytes, device_to_host
from meshaios.wire.payload import Payload

log = logging.getLogger(__name__)

__all__ = [
    "DEVICE_RESIDENT_FRACTION", "PINNED_MIN_BYTES", "DeviceLedger", "DeviceRunner", "DeviceTier", "TransferCounts",
]

#: Share of a GPU's memory that objects kept between tasks may use; the rest is the kernels' working memory.
DEVICE_RESIDENT_FRACTION: Final = 0.5
#: Arrays at least this large that leave the node (a fetch, a get) are copied out through a pinned host buffer.
PINNED_MIN_BYTES: Final = 1 << 20


@dataclass
class TransferCounts:
    """One device's copies and evictions since the node started."""

    h2d: int = 0
    h2d_bytes: int = 0
    d2h: int = 0
    d2h_bytes: int = 0
    evictions: int = 0  # objects moved to host memory under device memory pressure
    evicted_bytes: int = 0
    oom_retries: int = 0  # kernels that ran out of device memory and were retried after evicting
    oom_failures: int = 0  # ... and ran out again: failed with DeviceMemoryError
    streams: int = 0  # CUDA streams made on it: one per task slot, and per thread that copied a result out
    d2h_pinned: int = 0  # device->host copies (of the ``d2h``) made through a pinned host buffer


class _Meter:
    """A ``TransferMeter`` over one device's counts (kernels and the tier's own copies both report here)."""

    def __init__(self, counts: TransferCounts, lock: threading.Lock) -> None:
        self._c = counts
        self._lock = lock

    def h2d(self, nbytes: int) -> None:
        with self._lock:
            self._c.h2d += 1
            self._c.h2d_bytes += nbytes

    def d2h(self, nbytes: int) -> None:
        with self._lock:
            self._c.d2h += 1
            self._c.d2h_bytes += nbytes


class DeviceLedger:
    """Pure bookkeeping: objects per device in LRU order, bytes used against each device's limit."""

    def __init__(self, limits: Mapping[str, int]) -> None:
        self.limits = dict(limits)
        self.used = dict.fromkeys(self.limits, 0)
        self._lru: dict[str, OrderedDict[str, int]] = {d: OrderedDict() for d in self.limits}
        self._where: dict[str, str] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._where

    def __len__(self) -> int:
        return len(self._where)

    def keys(self) -> list[str]:
        return list(self._where)

    def device_of(self, key: str) -> str | None:
        return self._where.get(key)

    def size_of(self, key: str) -> int | None:
        d = self._where.get(key)
        return None if d is None else self._lru[d][key]

    def objects(self, device: str) -> int:
        return len(self._lru[device])

    def fits(self, device: str, nbytes: int) -> bool:
        """Whether an object of ``nbytes`` may be kept on ``device`` at all (after evicting everything else)."""
        return device in self.limits and nbytes <= self.limits[device]

    def add(self, key: str, device: str, nbytes: int) -> None:
        """Record ``key`` as the most recently used object of ``device`` (replacing any earlier record)."""
        self.remove(key)
        self._lru[device][key] = nbytes
        self._where[key] = device
        self.used[device] += nbytes

    def touch(self, key: str) -> None:
        d = self._where.get(key)
        if d is not None:
            self._lru[d].move_to_end(key)

    def remove(self, key: str) -> int | None:
        d = self._where.pop(key, None)
        if d is None:
            return None
        nbytes = self._lru[d].pop(key)
        self.used[d] -= nbytes
        return nbytes

    def victims(self, device: str, need: int = 0, keep: Iterable[str] = (), everything: bool = False) -> list[str]:
        """Least recently used first: the objects to move off ``device`` so that ``need`` more bytes fit under
        its limit (all of them but ``keep`` with ``everything``). Not removed: the caller moves, then removes."""
        keep = set(keep)
        excess = self.used[device] + need - self.limits[device]
        out = []
        for k, n in self._lru[device].items():
            if not everything and excess <= 0:
                break
            if k in keep:
                continue
            out.append(k)
            excess -= n
        return out


class DeviceTier:
    """The arrays kept on this node's GPUs, their copies to the host, and their eviction to the host store.

    Thread-safe: GPU worker threads add and read objects while the event loop's helper threads copy them out
    for fetches. ``host_put`` is the host store's ``put`` (evicted objects go there); ``cupy_modules`` maps a
    device to the module that runs it (a ``FakeCupy`` for a fake GPU; real GPUs import cupy when first used).
    """

    def __init__(
        self,
        limits: Mapping[str, int],
        *,
        inline_bytes: int,
        allow_pickle: bool,
        host_put: Callable[[str, Payload], None],
        cupy_modules: Mapping[str, Any] | None = None,
    ) -> None:
        self.ledger = DeviceLedger(limits)
        self.inline_bytes = inline_bytes
        self.allow_pickle = allow_pickle
        self._host_put = host_put
        self._cp: dict[str, Any] = dict(cupy_modules or {})
        self._values: dict[str, Any] = {}
        self._leaving: set[str] = set()  # being copied to the host by one thread: no other thread moves them too
        self._host_backed: set[str] = set()  # device copies of objects the host store holds as well
        self._lock = threading.Lock()
        self._local = threading.local()  # this thread's stream per device (``stream``)
        self.counts = {d: TransferCounts() for d in limits}
        self._meters = {d: _Meter(c, self._lock) for d, c in self.counts.items()}

    # ---- what the host store asks (store/objects.py: the device tier under it) --------------------------------
    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self.ledger

    def keys(self) -> list[str]:
        with self._lock:
            return self.ledger.keys()

    def size_of(self, key: str) -> int | None:
        with self._lock:
            return self.ledger.size_of(key)

    def where(self, key: str) -> str | None:
        """The device that keeps ``key``, if any."""
        with self._lock:
            return self.ledger.device_of(key)

    def payload(self, key: str) -> Payload | None:
        """A host copy of ``key`` as a ``Payload`` (one device->host copy), or None if it is not on a device."""
        with self._lock:
            device = self.ledger.device_of(key)
            if device is None:
                return None
            value = self._values[key]
        return self._to_payload(device, value, pinned=True)  # it leaves the node: through a pinned buffer

    def delete(self, key: str) -> bool:
        with self._lock:
            device = self.ledger.device_of(key)
            if device is None:
                return False
            self.ledger.remove(key)
            del self._values[key]
            self._host_backed.discard(key)
            self._held_changed(device)
            return True

    def clear(self) -> None:
        for k in self.keys():
            self.delete(k)

    # ---- what a GPU task asks (tasks/execute.py) ------------------------------------------------------------
    def runner(self, device: str, get: Callable[[str], Payload | None]) -> DeviceRunner:
        """What ``run_task`` needs to run a kernel task on ``device``; ``get`` reads the host store."""
        return DeviceRunner(self, device, get)

    def module(self, device: str) -> Any:
        cp = self._cp.get(device)
        if cp is None:
            cp = self._cp[device] = _import_cupy()
        return cp

    def status(self) -> dict[str, dict[str, int]]:
        """Per device: the counts, the bytes and objects kept there, and the limit."""
        with self._lock:
            return {
                d: {
                    **dataclasses.asdict(c),
                    "resident_bytes": self.ledger.used[d],
                    "resident_objects": self.ledger.objects(d),
                    "limit": self.ledger.limits[d],
                }
                for d, c in self.counts.items()
            }

    def keep(self, key: str, device: str, value: Any, small: bool = False) -> int:
        """Keep ``value`` (holding device arrays) on ``device`` as ``key``, moving older objects to the host if
        it does not fit beside them. Returns its device bytes, or 0 if it is not kept (too small, unless
        ``small``: it travels inline; too large for the device's share: it goes to the host)."""
        nbytes = device_nbytes(self.module(device), value)
        if nbytes == 0 or (nbytes <= self.inline_bytes and not small):
            return 0
        with self._lock:
            if not self.ledger.fits(device, nbytes):
                return 0
            self.ledger.add(key, device, nbytes)
            self._values[key] = value
            self._held_changed(device)
            victims = self._choose_locked(device, 0, {key}, everything=False)
        self._evict(device, victims)
        return nbytes

    def cache_input(self, key: str, device: str, payload: Payload) -> tuple[bool, Any]:
        """Copy a host object to ``device`` and keep the copy there beside the host one: (True, device value), or
        (False, None) if it holds no array, does not fit, or will not decode or copy (the kernel then copies it)."""
        with self._lock:  # (a result kept on another GPU of this node is no host object: it stays where it is)
            if key in self.ledger or not self.ledger.fits(device, payload.nbytes):
                return False, None
        from meshaios.wire.values import loads

        cp = self.module(device)
        meter = self._meters[device]

        def to_device(x: Any) -> Any:
            if isinstance(x, np.ndarray) and not isinstance(x, cp.ndarray):
                y = cp.asarray(x)
                meter.h2d(int(x.nbytes))
                return y
            return x

        try:
            with self.on_stream(device) as stream:
                value = _walk(loads(payload, allow_pickle=self.allow_pickle), to_device)
                stream.synchronize()  # complete before any other stream (another slot's task) reads it
        except Exception:  # out of device memory, say: the kernel call copies it (and evicts) as usual
            return False, None
        nbytes = device_nbytes(cp, value)
        if nbytes == 0:  # no arrays in it: nothing to keep on a device
            return False, None
        with self._lock:
            self.ledger.add(key, device, nbytes)
            self._values[key] = value
            self._host_backed.add(key)
            self._held_changed(device)
            victims = self._choose_locked(device, 0, {key}, everything=False)
        self._evict(device, victims)
        return True, value

    def get_device(self, key: str, device: str) -> tuple[bool, Any]:
        """(True, the device value) if ``key`` is kept on ``device`` (now its most recently used object)."""
        with self._lock:
            if self.ledger.device_of(key) != device:
                return False, None
            self.ledger.touch(key)
            return True, self._values[key]

    def evict_all(self, device: str, keep: Iterable[str] = ()) -> int:
        """Move every object of ``device`` but ``keep`` to the host (a kernel ran out of memory); how many."""
        with self._lock:
            victims = self._choose_locked(device, 0, set(keep), everything=True)
        return self._evict(device, victims)

    def to_host(self, device: str, value: Any, pinned: bool = False) -> Any:
        """``value`` with its device arrays copied to the host on this thread's stream, counted; with ``pinned``,
        those of ``PINNED_MIN_BYTES`` or more through pinned host buffers (for a value that leaves the node)."""
        cp = self.module(device)
        with self.on_stream(device) as stream:
            if not pinned:
                return device_to_host(cp, value, self._meters[device])
            counts = self.counts[device]

            def copy(x: Any) -> Any:
                if x.nbytes < PINNED_MIN_BYTES:
                    return cp.asnumpy(x, stream=stream)
                with self._lock:
                    counts.d2h_pinned += 1
                return _pinned_copy(cp, stream, x)

            return device_to_host(cp, value, self._meters[device], copy)

    def stream(self, device: str) -> Any:
        """This thread's CUDA stream on ``device``, made on its first use there (non-blocking: it does not wait
        for the legacy default stream). A GPU task slot is a thread, so each slot has its stream."""
        streams: dict[str, Any] | None = getattr(self._local, "streams", None)
        if streams is None:
            streams = self._local.streams = {}
        s = streams.get(device)
        if s is None:
            cp = self.module(device)
            with cp.cuda.Device(_index(device)):
                s = streams[device] = cp.cuda.Stream(non_blocking=True)
            with self._lock:
                self.counts[device].streams += 1
        return s

    @contextlib.contextmanager
    def on_stream(self, device: str) -> Iterator[Any]:
        """``device`` current, and this thread's stream on it: what cupy does inside runs there."""
        cp = self.module(device)
        stream = self.stream(device)
        with cp.cuda.Device(_index(device)), stream:
            yield stream

    def meter(self, device: str) -> _Meter:
        return self._meters[device]

    def count_oom(self, device: str, failed: bool) -> None:
        with self._lock:
            c = self.counts[device]
            if failed:
                c.oom_failures += 1
            else:
                c.oom_retries += 1

    # ---- internals ------------------------------------------------------------------------------------------
    def _choose_locked(self, device: str, need: int, keep: set[str], *, everything: bool) -> list[str]:
        victims = self.ledger.victims(device, need, keep | self._leaving, everything=everything)
        self._leaving.update(victims)
        return victims

    def _evict(self, device: str, victims: list[str]) -> int:
        """Copy each victim to the host store, then forget its device copy (the key is always somewhere).

        The copy is made outside the lock; it is handed to the host store under it, and only if the object is
        still here: one deleted meanwhile leaves nothing behind (``ObjectStore.delete`` asks this tier first).
        """
        moved = 0
        for key in victims:
            with self._lock:
                value = self._values.get(key)
                host_backed = key in self._host_backed  # the host store has its own copy of those
            try:
                if value is None:
                    continue
                try:
                    p = None if host_backed else self._to_payload(device, value)
                except Exception as exc:  # it stays on the device, over the limit, rather than fail a task
                    log.warning("cannot move %s off %s: %s: %s", key, device, type(exc).__name__, exc)
                    continue
                with self._lock:
                    if self._values.get(key) is value:
                        if p is not None:
                            self._host_put(key, p)
                        nbytes = self.ledger.remove(key) or 0
                        del self._values[key]
                        self._host_backed.discard(key)
                        self.counts[device].evictions += 1
                        self.counts[device].evicted_bytes += nbytes
                        self._held_changed(device)
                        moved += 1
            finally:
                with self._lock:
                    self._leaving.discard(key)
        return moved

    def _to_payload(self, device: str, value: Any, pinned: bool = False) -> Payload:
        from meshaios.wire.values import dumps

        return dumps(self.to_host(device, value, pinned), allow_pickle=self.allow_pickle)[0]

    def _held_changed(self, device: str) -> None:
        """A fake GPU's out-of-memory test counts what is kept on it (a real GPU knows by itself)."""
        cp = self._cp.get(device)
        if cp is not None and hasattr(cp, "held"):
            cp.held = self.ledger.used[device]


class DeviceRunner:
    """One kernel task's view of its device: resident inputs, the call (evict and retry once on out-of-memory),
    and what becomes of the result. ``run_task`` drives it (``tasks/execute.py``)."""

    def __init__(self, tier: DeviceTier, device: str, get: Callable[[str], Payload | None]) -> None:
        self.tier = tier
        self.device = device
        self._get = get
        self.inputs: set[str] = set()

    def dep(self, key: str, on_device: bool) -> tuple[bool, Any]:
        """An input that was not sent with the task: (True, its device value) when ``on_device`` and it is kept
        on this device (a kernel takes it with no copy) or, being a large host object, has just been copied there
        to stay; else (False, its host ``Payload`` from the store, or None if it is in neither)."""
        self.inputs.add(key)
        if not on_device:
            return False, self._get(key)
        found, value = self.tier.get_device(key, self.device)
        if found:
            return True, value
        p = self._get(key)
        if isinstance(p, Payload):
            found, value = self.tier.cache_input(key, self.device, p)
            if found:
                return True, value
        return False, p

    def call(self, kernel: Kernel, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        tier, device = self.tier, self.device
        cp = tier.module(device)

        def once() -> Any:
            # on this slot's stream: its argument copies and kernels overlap other slots' work; done when it returns
            with tier.on_stream(device) as stream:
                out = kernel.call(device, args, kwargs, cupy_module=cp, on_device=True, meter=tier.meter(device))
                stream.synchronize()
                return out

        try:
            return once()
        except DeviceMemoryError:
            pass
        tier.evict_all(device, keep=self.inputs)
        tier.count_oom(device, failed=False)
        try:
            return once()
        except DeviceMemoryError:
            tier.count_oom(device, failed=True)
            raise

    def finish(self, key: str, value: Any, keep: bool = False) -> tuple[int, Any]:
        """(device bytes, None) if the result stays on the device (large, or ``keep``: the task asked to);
        else (0, the value on the host)."""
        kept = self.tier.keep(key, self.device, value, small=keep)
        if kept:
            return kept, None
        return 0, self.tier.to_host(self.device, value)

    def to_host(self, value: Any) -> Any:
        return self.tier.to_host(self.device, value)


def _index(device: str) -> int:
    return int(device.rsplit(":", 1)[1])


def _pinned_copy(cp: Any, stream: Any, x: Any) -> Any:
    """``x`` copied to a host array in a pinned buffer of cupy's pool (back in the pool when the array goes)."""
    x = cp.ascontiguousarray(x)
    mem = cp.cuda.alloc_pinned_memory(x.nbytes)
    host = np.frombuffer(mem, dtype=x.dtype, count=x.size).reshape(x.shape)
    cp.asnumpy(x, stream=stream, out=host)  # blocking: complete when it returns
    return host
