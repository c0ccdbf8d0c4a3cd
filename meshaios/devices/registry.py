"""Named kernels, written once against the array module ``xp`` and run on whichever device the scheduler picks.

A kernel is a plain function whose first argument is the array module (``numpy`` or ``cupy``)::

    @kernel(name="myproj.scale")
    def scale(xp, x, factor=2.0):
        return x * factor

    scale.run("cpu", np.ones(3))        # numpy
    scale.run("gpu:0", np.ones(3))      # cupy; the argument goes to the GPU and the result comes back

Arrays move host -> device on the way in and device -> host on the way out, so callers (and the wire) only ever
see numpy arrays and plain Python values. Tasks name kernels on the wire (``"meshaios.softmax"``), which is why
names are namespaced, validated and stable rather than derived from whatever the function is called today.

Registries are ordinary objects so that several nodes in one process, or two tests, can hold different sets of
kernels; ``default_registry()`` is only a convenience for the ``@kernel`` decorator and the built-ins.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol, TypeVar, overload

import numpy as np

from meshaios.devices.errors import (
    DeviceMemoryError,
    DeviceUnavailableError,
    InvalidDeviceError,
    KernelRegistrationError,
    UnknownKernelError,
    UnsupportedDeviceError,
)

__all__ = [
    "Device",
    "Kernel",
    "KernelRegistry",
    "TransferMeter",
    "default_registry",
    "kernel",
    "parse_device",
    "payload_nbytes",
]

F = TypeVar("F", bound=Callable[..., Any])
DeviceKind = Literal["cpu", "gpu", "fakegpu"]
VariantKind = Literal["cpu", "gpu"]

_NAME_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
_MAX_NAME: Final = 200
_DEVICE_RE: Final = re.compile(r"^(gpu|fakegpu):(0|[1-9][0-9]{0,3})$")


# ----------------------------------------------------------------------------------------------------- devices


@dataclass(frozen=True, slots=True)
class Device:
    """A parsed device string. ``index`` is ``None`` only for the CPU, which is one pool of cores."""

    kind: DeviceKind
    index: int | None = None

    def __str__(self) -> str:
        return self.kind if self.index is None else f"{self.kind}:{self.index}"

    @property
    def is_gpu_like(self) -> bool:
        """Real or fake GPU: fake ones obey the same kernel capabilities so placement tests stay faithful."""
        return self.kind != "cpu"


def parse_device(device: str | Device) -> Device:
    """Validate ``"cpu"``, ``"gpu:N"`` or ``"fakegpu:N"``; device strings may come off the wire."""
    if isinstance(device, Device):
        return device
    if not isinstance(device, str):
        raise InvalidDeviceError(f"device must be a string like 'cpu' or 'gpu:0', not {type(device).__name__}")
    if device == "cpu":
        return Device("cpu")
    m = _DEVICE_RE.match(device)
    if m is None:
        raise InvalidDeviceError(f"bad device {device!r}: expected 'cpu', 'gpu:N' or 'fakegpu:N'")
    kind: DeviceKind = "gpu" if m.group(1) == "gpu" else "fakegpu"
    return Device(kind, int(m.group(2)))


# ------------------------------------------------------------------------------------------- host <-> device


def _walk(obj: Any, leaf: Callable[[Any], Any]) -> Any:
    """Apply ``leaf`` through lists, tuples (named ones too) and dicts; anything else is a leaf."""
    if isinstance(obj, list):
        return [_walk(o, leaf) for o in obj]
    if isinstance(obj, tuple):
        items = [_walk(o, leaf) for o in obj]
        if hasattr(obj, "_make"):
            return type(obj)._make(items)
        return tuple(items)
    if isinstance(obj, dict):
        return {k: _walk(v, leaf) for k, v in obj.items()}
    return leaf(obj)


def _normalise_host(x: Any) -> Any:
    """0-d arrays become numpy scalars, so numpy and cupy kernels return the same types for reductions."""
    if isinstance(x, np.ndarray) and x.ndim == 0:
        return x[()]
    return x


def payload_nbytes(obj: Any) -> int:
    """Bytes of array data in a nested argument structure: what a host <-> device transfer would move.

    The scheduler's transfer-cost term needs this for both the arguments and, after a run, the result.
    """
    total = 0

    def leaf(x: Any) -> Any:
        nonlocal total
        nbytes = getattr(x, "nbytes", None)
        if isinstance(nbytes, int) and hasattr(x, "shape"):
            total += nbytes
        return x

    _walk(obj, leaf)
    return total


class TransferMeter(Protocol):
    """Counts the copies a kernel call makes between host and device (``devices/resident.py`` keeps them)."""

    def h2d(self, nbytes: int) -> None: ...

    def d2h(self, nbytes: int) -> None: ...


def device_to_host(
    cp: Any, out: Any, meter: TransferMeter | None = None, copy: Callable[[Any], Any] | None = None
) -> Any:
    """``out`` with every array of ``cp`` copied to the host (one counted device->host copy each), by ``copy``
    if given (``devices/resident.py``: through a pinned buffer, on a stream), else ``cp.asnumpy``."""

    def to_host(x: Any) -> Any:
        if isinstance(x, cp.ndarray):
            if meter is not None:
                meter.d2h(int(x.nbytes))
            x = copy(x) if copy is not None else cp.asnumpy(x)
        return _normalise_host(x)

    return _walk(out, to_host)


def device_nbytes(cp: Any, obj: Any) -> int:
    """Bytes of ``cp`` arrays (device arrays) in a nested value."""
    total = 0

    def leaf(x: Any) -> Any:
        nonlocal total
        if isinstance(x, cp.ndarray):
            total += int(x.nbytes)
        return x

    _walk(obj, leaf)
    return total


def _is_cupy_oom(cp: Any, exc: BaseException) -> bool:
    oom_type = getattr(getattr(getattr(cp, "cuda", None), "memory", None), "OutOfMemoryError", None)
    if isinstance(oom_type, type) and isinstance(exc, oom_type):
        return True
    # cuBLAS/cuFFT/CUDA runtime report allocation failures as their own error types, not OutOfMemoryError.
    if type(exc).__module__.startswith(("cupy", "cupy_backends")):
        text = str(exc)
        return "ALLOC_FAILED" in text or "cudaErrorMemoryAllocation" in text or "out of memory" in text.lower()
    return False


def _import_cupy() -> Any:
    try:
        import cupy
    except Exception as exc:
        raise DeviceUnavailableError(f"a GPU device was asked for but cupy cannot be imported: {exc}") from exc
    return cupy


# ----------------------------------------------------------------------------------------------------- kernels


class Kernel:
    """A named computation with a generic ``xp`` implementation and optional per-device variants.

    Calling the object like the original function, ``k(xp, *args)``, runs the implementation matching ``xp``
    without moving anything, which is how kernels compose (``blur`` calls ``conv2d`` with its own ``xp``).
    ``run``/``call`` are the node's entry points: they pick the device, move data and translate errors.
    """

    def __init__(self, func: Callable[..., Any], *, name: str, gpu: bool = True) -> None:
        _check_kernel_name(name)
        if not callable(func):
            raise KernelRegistrationError(f"kernel {name!r} must be callable, not {type(func).__name__}")
        self.name = name
        #: Whether the generic implementation also works on cupy. A "gpu" variant adds GPU support regardless.
        self.gpu = gpu
        self._impl = func
        self._variants: dict[str, Callable[..., Any]] = {}
        self.__doc__ = func.__doc__
        self.__wrapped__ = func

    def __repr__(self) -> str:
        return f"<Kernel {self.name} devices={'/'.join(self.device_kinds)}>"

    @property
    def device_kinds(self) -> tuple[DeviceKind, ...]:
        """Kinds of device this kernel can run on; a fake GPU accepts exactly what a real one does."""
        return ("cpu", "gpu", "fakegpu") if self.supports_gpu else ("cpu",)

    @property
    def supports_gpu(self) -> bool:
        return self.gpu or "gpu" in self._variants

    def variant(self, kind: VariantKind) -> Callable[[F], F]:
        """Register a device-specific implementation, e.g. a hand-written cupy ``RawKernel`` for "gpu".

        The decorated function is returned unchanged. A "gpu" variant is only ever called with cupy; a "cpu"
        variant is called with numpy, on the CPU and on fake GPUs alike.
        """
        if kind not in ("cpu", "gpu"):
            raise KernelRegistrationError(f"variant kind must be 'cpu' or 'gpu', not {kind!r}")

        def register(func: F) -> F:
            if kind in self._variants:
                raise KernelRegistrationError(f"kernel {self.name!r} already has a {kind!r} variant")
            if not callable(func):
                raise KernelRegistrationError(f"variant of {self.name!r} must be callable")
            self._variants[kind] = func
            return func

        return register

    def implementation(self, kind: DeviceKind) -> Callable[..., Any]:
        """The function that runs on ``kind``; raises ``UnsupportedDeviceError`` if there is none."""
        if kind == "gpu":
            if "gpu" in self._variants:
                return self._variants["gpu"]
            if self.gpu:
                return self._impl
            raise UnsupportedDeviceError(f"kernel {self.name!r} has no GPU implementation (registered gpu=False)")
        if kind == "fakegpu" and not self.supports_gpu:
            raise UnsupportedDeviceError(
                f"kernel {self.name!r} has no GPU implementation, so it cannot run on a fake GPU either"
            )
        return self._variants.get("cpu", self._impl)

    def __call__(self, xp: Any, *args: Any, **kwargs: Any) -> Any:
        kind: DeviceKind = "cpu" if xp is np else "gpu"
        return self.implementation(kind)(xp, *args, **kwargs)

    def run(self, device: str | Device, /, *args: Any, **kwargs: Any) -> Any:
        """Run on ``device`` ("cpu", "gpu:N", "fakegpu:N") with host arguments; return host values."""
        return self.call(device, args, kwargs)

    def call(
        self,
        device: str | Device,
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        cupy_module: Any = None,
        on_device: bool = False,
        meter: TransferMeter | None = None,
    ) -> Any:
        """The explicit form of ``run``, for executors: no clash between kernel keywords and our own.

        On a real GPU the work runs on cupy's *current* stream of device N: an executor that owns a stream per
        GPU enters ``with cupy.cuda.Device(n), stream:`` around this call. ``cupy_module`` stands in for
        ``import cupy`` (tests pass a fake; ``None`` imports the real one when a GPU is asked for). A fake GPU
        given a ``cupy_module`` (a node's ``FakeCupy``) runs the GPU path on it, copies and all.

        Results come back as numpy arrays, numpy scalars (for 0-d results, on every device alike) and plain
        Python values, nested in the same lists, tuples and dicts the kernel returned -- or, with ``on_device``
        on a GPU, as the kernel returned them (device arrays stay on the device, for the next kernel). Arguments
        that are already device arrays of that module are used where they are, with no copy. ``meter`` counts
        the host<->device copies.
        """
        dev = parse_device(device)
        impl = self.implementation(dev.kind)
        kw = dict(kwargs) if kwargs is not None else {}
        if dev.kind == "cpu":
            return _walk(impl(np, *args, **kw), _normalise_host)
        if dev.kind == "fakegpu" and cupy_module is not None:
            return self._call_cupy(dev, self.implementation("gpu"), args, kw, cupy_module, on_device, meter)
        if dev.kind == "fakegpu":
            # A fake GPU runs numpy but keeps GPU semantics: the kernel works on private copies of its inputs,
            # exactly as it would on device copies, so a kernel that mutates its arguments behaves the same.
            def copy_in(x: Any) -> Any:
                return np.array(x, copy=True) if isinstance(x, np.ndarray) else x

            out = impl(np, *_walk(list(args), copy_in), **_walk(kw, copy_in))
            return _walk(out, _normalise_host)
        return self._call_cupy(dev, impl, args, kw, cupy_module, on_device, meter)

    def _call_cupy(
        self,
        dev: Device,
        impl: Callable[..., Any],
        args: tuple[Any, ...] | list[Any],
        kw: dict[str, Any],
        cupy_module: Any,
        on_device: bool = False,
        meter: TransferMeter | None = None,
    ) -> Any:
        cp = cupy_module if cupy_module is not None else _import_cupy()
        assert dev.index is not None
        try:
            device_ctx = cp.cuda.Device(dev.index)
            device_ctx.__enter__()
        except Exception as exc:
            raise DeviceUnavailableError(f"{dev} cannot be used: {type(exc).__name__}: {exc}") from exc
        try:

            def to_device(x: Any) -> Any:
                if isinstance(x, cp.ndarray) or not isinstance(x, np.ndarray):
                    return x  # already there (a device-resident input), or not an array
                y = cp.asarray(x)
                if meter is not None:
                    meter.h2d(int(x.nbytes))
                return y

            try:
                dev_args = _walk(list(args), to_device)
                dev_kw = _walk(kw, to_device)
                out = impl(cp, *dev_args, **dev_kw)
                del dev_args, dev_kw
                return out if on_device else device_to_host(cp, out, meter)
            except Exception as exc:
                if not _is_cupy_oom(cp, exc):
                    raise
                detail = str(exc) or type(exc).__name__
            # Outside the except block so that the traceback (and the arrays its frames hold) is released before
            # the pool is trimmed; the node stays usable for the next task.
            try:
                cp.get_default_memory_pool().free_all_blocks()
            except Exception:
                pass
            raise DeviceMemoryError(self.name, str(dev), detail)
        finally:
            device_ctx.__exit__(None, None, None)


def _check_kernel_name(name: object) -> None:
    if not isinstance(name, str) or len(name) > _MAX_NAME or not _NAME_RE.match(name):
        raise KernelRegistrationError(
            f"kernel name {name!r} is not a namespaced dotted name like 'myproject.normalize' "
            "(names travel on the wire and must be stable: pass name=... explicitly)"
        )


# -------------------------------------------------------------------------------------------------- registry


class KernelRegistry:
    """Name -> kernel, for one node (or one test).

    Lookups are what the node does for every task, so they are a plain dict read; registration takes a lock so
    that importing modules from several threads cannot lose a kernel.
    """

    def __init__(self, kernels: Mapping[str, Kernel] | None = None) -> None:
        self._kernels: dict[str, Kernel] = {}
        self._lock = threading.Lock()
        if kernels:
            for k in kernels.values():
                self.add(k)

    @classmethod
    def with_builtins(cls) -> KernelRegistry:
        """A fresh registry holding the ``meshaios.*`` library, which every node is expected to offer."""
        from meshaios.devices.kernels import BUILTIN_KERNELS

        reg = cls()
        for k in BUILTIN_KERNELS:
            reg.add(k)
        return reg

    def add(self, k: Kernel, *, replace: bool = False) -> Kernel:
        """Add an existing kernel object; re-adding the very same object is a no-op, a different one an error."""
        if not isinstance(k, Kernel):
            raise KernelRegistrationError(f"expected a Kernel, not {type(k).__name__}")
        with self._lock:
            old = self._kernels.get(k.name)
            if old is not None and old is not k and not replace:
                raise KernelRegistrationError(
                    f"a different kernel is already registered as {k.name!r} (pass replace=True to override)"
                )
            self._kernels[k.name] = k
        return k

    def register(self, func: Callable[..., Any], *, name: str | None = None, gpu: bool = True) -> Kernel:
        """Wrap ``func`` as a kernel named ``name`` (default ``module.qualname``) and add it."""
        return self.add(Kernel(func, name=name if name is not None else _default_name(func), gpu=gpu))

    @overload
    def kernel(self, func: Callable[..., Any], /) -> Kernel: ...

    @overload
    def kernel(self, /, *, name: str | None = None, gpu: bool = True) -> Callable[[Callable[..., Any]], Kernel]: ...

    def kernel(
        self, func: Callable[..., Any] | None = None, /, *, name: str | None = None, gpu: bool = True
    ) -> Kernel | Callable[[Callable[..., Any]], Kernel]:
        """Decorator form of ``register``: ``@reg.kernel`` or ``@reg.kernel(name="proj.f", gpu=False)``."""
        if func is not None:
            return self.register(func, name=name, gpu=gpu)

        def decorate(f: Callable[..., Any]) -> Kernel:
            return self.register(f, name=name, gpu=gpu)

        return decorate

    def update(self, other: KernelRegistry, *, replace: bool = False) -> None:
        """Take every kernel of ``other``, e.g. a node merging the user's ``@kernel`` functions into its own."""
        for k in list(other):
            self.add(k, replace=replace)

    def remove(self, name: str) -> Kernel:
        """Drop a kernel, e.g. a test undoing what it registered in ``default_registry()``."""
        with self._lock:
            try:
                return self._kernels.pop(name)
            except KeyError:
                raise UnknownKernelError(f"no kernel named {name!r} to remove") from None

    def get(self, name: str) -> Kernel:
        try:
            return self._kernels[name]
        except (KeyError, TypeError):
            raise UnknownKernelError(
                f"no kernel named {name!r} on this node ({len(self._kernels)} registered; "
                "is the module that defines it imported on every node?)"
            ) from None

    def run(self, name: str, device: str | Device, /, *args: Any, **kwargs: Any) -> Any:
        return self.get(name).call(device, args, kwargs)

    def names(self) -> list[str]:
        return sorted(self._kernels)

    def __contains__(self, name: object) -> bool:
        return name in self._kernels

    def __iter__(self) -> Iterator[Kernel]:
        return iter(list(self._kernels.values()))

    def __len__(self) -> int:
        return len(self._kernels)

    def __repr__(self) -> str:
        return f"<KernelRegistry {len(self._kernels)} kernels>"


def _default_name(func: Callable[..., Any]) -> str:
    module = getattr(func, "__module__", None) or ""
    qualname = getattr(func, "__qualname__", None) or getattr(func, "__name__", "")
    if module == "__main__":
        # "__main__.f" names a different module in every process, so peers could never resolve it.
        raise KernelRegistrationError(
            f"kernel {qualname!r} is defined in __main__: give it a stable name, e.g. @kernel(name='myproj.{qualname}')"
        )
    return f"{module}.{qualname}"


_DEFAULT: KernelRegistry | None = None
_DEFAULT_LOCK: Final = threading.Lock()


def default_registry() -> KernelRegistry:
    """The process-wide registry that ``@kernel`` fills; created on first use with the built-ins in it.

    Nodes should not share it blindly: a node builds its own with ``KernelRegistry.with_builtins()`` and
    ``update(default_registry())`` to pick up the user's decorated kernels.
    """
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = KernelRegistry.with_builtins()
        return _DEFAULT


@overload
def kernel(func: Callable[..., Any], /) -> Kernel: ...


@overload
def kernel(
    *, name: str | None = None, gpu: bool = True, registry: KernelRegistry | None = None
) -> Callable[[Callable[..., Any]], Kernel]: ...


def kernel(
    func: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    gpu: bool = True,
    registry: KernelRegistry | None = None,
) -> Kernel | Callable[[Callable[..., Any]], Kernel]:
    """Register a kernel written against ``xp``; ``registry`` defaults to ``default_registry()``.

    ``gpu=True`` (the default) promises that the generic implementation runs unchanged on cupy; say
    ``gpu=False`` for code that only numpy can run, or add a ``@k.variant("gpu")``.
    """

    def decorate(f: Callable[..., Any]) -> Kernel:
        reg = registry if registry is not None else default_registry()
        return reg.register(f, name=name, gpu=gpu)

    if func is not None:
        return decorate(func)
    return decorate
