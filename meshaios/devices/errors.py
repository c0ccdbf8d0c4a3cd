"""Errors of the device layer, all under ``MeshError``.

They live here rather than in ``meshaios.errors`` so that the device layer stays one self-contained package; the
package ``meshaios.devices`` re-exports them. Several also derive from the built-in a caller would naturally
catch (``ValueError`` for a bad device string, ``LookupError`` for an unknown kernel), so code written against
plain Python conventions keeps working.
"""

from __future__ import annotations

from meshaios.errors import MeshError


class DeviceError(MeshError):
    """Root of the device layer's errors: something about *where* a kernel runs, not the kernel's own bug."""


class InvalidDeviceError(DeviceError, ValueError):
    """A device string is not ``"cpu"``, ``"gpu:N"`` or ``"fakegpu:N"``."""


class DeviceUnavailableError(DeviceError):
    """The device was asked for but cannot be used here (no cupy, no driver, no such index).

    The scheduler should never pick such a device, since it only sees what ``detect_devices`` reported; seeing this
    error means the inventory and the request disagree, which is worth a clear message rather than a cupy trace.
    """


class UnsupportedDeviceError(DeviceError):
    """The kernel has no implementation for that kind of device (e.g. a numpy-only kernel sent to a GPU)."""


class DeviceMemoryError(DeviceError):
    """A kernel ran out of device memory.

    Raised instead of cupy's ``OutOfMemoryError`` so that the task fails with a message naming the kernel and the
    device, the node frees its cached GPU blocks and carries on, and the caller can catch it without importing
    cupy.
    """

    def __init__(self, kernel: str, device: str, detail: str) -> None:
        self.kernel = kernel
        self.device = device
        self.detail = detail
        super().__init__(
            f"kernel {kernel!r} ran out of memory on {device}: {detail} "
            "(use smaller inputs, or ask for a device with more memory via resources={'gpu_memory': ...})"
        )


class UnknownKernelError(DeviceError, LookupError):
    """No kernel of that name is registered on this node."""


class KernelRegistrationError(DeviceError, ValueError):
    """A kernel or variant could not be registered: bad name, duplicate name, or duplicate variant."""
