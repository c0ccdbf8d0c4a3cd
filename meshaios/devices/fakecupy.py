"""A numpy-backed stand-in for the parts of cupy that meshaios touches, for tests on machines without a GPU.

It is a test double of an external dependency, not an accelerator: everything runs on numpy. What it keeps from
cupy is what our code could get wrong without a GPU to catch it:

* device arrays are a distinct type (``FakeCupy.ndarray``), so a result that never made it back to the host, or
  an argument that never made it to the device, is visible to a test;
* the CUDA API surface used by detection and execution (``cuda.runtime.getDeviceCount`` and friends,
  ``cuda.Device`` / ``cuda.Stream`` as context managers, ``get_default_memory_pool``,
  ``cuda.alloc_pinned_memory`` and ``asnumpy(..., stream=, out=)``), including the "installed but no driver"
  failure, which raises a ``RuntimeError`` subclass like cupy's ``CUDARuntimeError``; it counts the streams made
  (``streams_made``), the copies made while a stream was current (``stream_copies``) and the pinned buffers
  handed out (``pinned_allocs``), so a test sees the overlap path taken; the current device and stream are per
  thread, as in CUDA, so GPU slots on threads of their own do not see each other's;
* cupy's documented differences from numpy that kernels must respect: ``sort``/``argsort`` are always stable
  and accept no ``kind`` other than ``None``/``"stable"``; ``argpartition`` sorts fully;
* out-of-memory: a copy to the device that does not fit in ``memory`` beside the ``held`` bytes (what a node
  keeps on the device between tasks, ``devices/resident.py``) raises ``cuda.memory.OutOfMemoryError``.

Hand it to ``detect_devices(cupy_module=...)`` or ``Kernel.call(..., cupy_module=...)``.
"""

from __future__ import annotations

import threading
import types
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["CUDARuntimeError", "FakeCupy", "FakeDeviceArray", "OutOfMemoryError"]


class CUDARuntimeError(RuntimeError):
    """Like ``cupy_backends.cuda.api.runtime.CUDARuntimeError``: what cupy raises without a usable driver."""


class OutOfMemoryError(MemoryError):
    """Like ``cupy.cuda.memory.OutOfMemoryError``."""


class FakeDeviceArray(np.ndarray[Any, Any]):
    """An array that "lives on the device": numpy underneath, but a type of its own."""


def _to_device(x: Any) -> Any:
    if isinstance(x, np.ndarray) and not isinstance(x, FakeDeviceArray):
        return x.view(FakeDeviceArray)
    if isinstance(x, tuple):
        return tuple(_to_device(i) for i in x)
    return x


class _Device:
    def __init__(self, owner: FakeCupy, index: int) -> None:
        if not 0 <= index < owner.device_count or not owner.driver:
            raise CUDARuntimeError("cudaErrorInvalidDevice: invalid device ordinal")
        self._owner = owner
        self.id = index
        self._prev: list[int] = []

    @property
    def compute_capability(self) -> str:
        return "80"

    def __enter__(self) -> _Device:
        self._prev.append(self._owner.current_device)
        self._owner.current_device = self.id
        return self

    def __exit__(self, *exc: object) -> None:
        self._owner.current_device = self._prev.pop()

    def synchronize(self) -> None:
        self._owner.synchronized += 1


class _Stream:
    def __init__(self, owner: FakeCupy, non_blocking: bool = False) -> None:
        self._owner = owner
        self.device_id = owner.current_device
        self.non_blocking = non_blocking
        self._prev: list[_Stream | None] = []
        owner.streams_made += 1

    def __enter__(self) -> _Stream:
        self._prev.append(self._owner.current_stream)
        self._owner.current_stream = self
        return self

    def __exit__(self, *exc: object) -> None:
        self._owner.current_stream = self._prev.pop()

    def synchronize(self) -> None:
        self._owner.synchronized += 1


class _MemoryPool:
    def __init__(self) -> None:
        self.freed = 0

    def free_all_blocks(self) -> None:
        self.freed += 1

    def used_bytes(self) -> int:
        return 0


class FakeCupy:
    """A module-like object; unknown attributes fall through to numpy, with array results made "device" arrays.

    ``driver=False`` models cupy installed on a machine without a CUDA driver; ``fail_probe`` a device that is
    listed but cannot run kernels (every array function raises, as with a missing kernel image).
    """

    ndarray = FakeDeviceArray

    def __init__(
        self,
        *,
        device_count: int = 1,
        driver: bool = True,
        memory: int = 16 * 2**30,
        name: str = "Fake Tesla",
        fail_probe: bool = False,
    ) -> None:
        self.device_count = device_count
        self.driver = driver
        self.memory = memory
        self.name = name
        self.fail_probe = fail_probe
        self._tls = threading.local()  # the current device and stream are per thread, as in CUDA
        self.synchronized = 0
        self.to_device_copies = 0
        self.to_host_copies = 0
        self.streams_made = 0
        self.stream_copies = 0  # copies either way made while a stream of ours was current
        self.pinned_allocs = 0
        self.held = 0  # bytes already in use on the device, set by whoever keeps arrays there
        self.pool = _MemoryPool()
        self.cuda = types.SimpleNamespace(
            runtime=types.SimpleNamespace(
                getDeviceCount=self._get_device_count,
                getDeviceProperties=self._get_device_properties,
                memGetInfo=self._mem_get_info,
                CUDARuntimeError=CUDARuntimeError,
            ),
            memory=types.SimpleNamespace(OutOfMemoryError=OutOfMemoryError),
            Device=lambda index=0: _Device(self, index),
            Stream=lambda non_blocking=False: _Stream(self, non_blocking),
            alloc_pinned_memory=self._alloc_pinned_memory,
        )

    @property
    def current_device(self) -> int:
        return int(getattr(self._tls, "device", 0))

    @current_device.setter
    def current_device(self, index: int) -> None:
        self._tls.device = index

    @property
    def current_stream(self) -> _Stream | None:
        stream: _Stream | None = getattr(self._tls, "stream", None)
        return stream

    @current_stream.setter
    def current_stream(self, stream: _Stream | None) -> None:
        self._tls.stream = stream

    # --- CUDA runtime
    def _get_device_count(self) -> int:
        if not self.driver:
            raise CUDARuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient")
        return self.device_count

    def _get_device_properties(self, index: int) -> dict[str, Any]:
        _Device(self, index)
        return {"name": self.name.encode(), "totalGlobalMem": self.memory, "major": 8, "minor": 0}

    def _mem_get_info(self) -> tuple[int, int]:
        return self.memory - 1024, self.memory

    def get_default_memory_pool(self) -> _MemoryPool:
        return self.pool

    def _alloc_pinned_memory(self, nbytes: int) -> bytearray:
        """Like ``cupy.cuda.alloc_pinned_memory``: a host buffer ``numpy.frombuffer`` can view."""
        self.pinned_allocs += 1
        return bytearray(nbytes)

    # --- host <-> device
    def asarray(self, a: Any, dtype: Any = None) -> FakeDeviceArray:
        arr = np.asarray(a, dtype=dtype)
        if not isinstance(a, FakeDeviceArray):
            if arr.nbytes + self.held > self.memory:
                raise OutOfMemoryError(f"Out of memory allocating {arr.nbytes:,} bytes ({self.held:,} in use)")
            self.to_device_copies += 1
            self.stream_copies += self.current_stream is not None
            arr = arr.copy()
        return arr.view(FakeDeviceArray)

    def asnumpy(self, a: Any, stream: Any = None, out: Any = None, blocking: bool = True) -> np.ndarray[Any, Any]:
        self.to_host_copies += 1
        self.stream_copies += stream is not None or self.current_stream is not None
        if out is not None:
            out[...] = np.asarray(a).view(np.ndarray)
            return out  # type: ignore[no-any-return]
        return np.array(a, copy=True).view(np.ndarray)

    # --- cupy's deviations from numpy
    def sort(self, a: Any, axis: int | None = -1, kind: str | None = None) -> Any:
        if kind not in (None, "stable"):
            raise ValueError("cupy.sort supports only kind=None or 'stable'")
        return _to_device(np.sort(a, axis=axis, kind="stable"))

    def argsort(self, a: Any, axis: int | None = -1, kind: str | None = None) -> Any:
        if kind not in (None, "stable"):
            raise ValueError("cupy.argsort supports only kind=None or 'stable'")
        return _to_device(np.argsort(a, axis=axis, kind="stable"))

    def argpartition(self, a: Any, kth: Any, axis: int | None = -1) -> Any:
        return self.argsort(a, axis=axis)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(np, name)
        if isinstance(attr, type) or not callable(attr):
            return attr
        func: Callable[..., Any] = attr

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if self.fail_probe:
                raise CUDARuntimeError("cudaErrorNoKernelImageForDevice: no kernel image is available")
            return _to_device(func(*args, **kwargs))

        return wrapped
