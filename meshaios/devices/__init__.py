"""Heterogeneous execution: which devices a node has, and named kernels that run on any of them.

``detect_devices`` builds the node's ``DeviceInventory`` (CPU, real GPUs through cupy, fake GPUs for tests);
``KernelRegistry``/``kernel`` hold named kernels written against the array module ``xp``; the built-in
``meshaios.*`` library lives in ``meshaios.devices.kernels``.
"""

from __future__ import annotations

from meshaios.devices.detect import (
    DeviceInventory,
    FakeGpuSpec,
    GpuInfo,
    detect_devices,
    format_size,
    parse_size,
)
from meshaios.devices.errors import (
    DeviceError,
    DeviceMemoryError,
    DeviceUnavailableError,
    InvalidDeviceError,
    KernelRegistrationError,
    UnknownKernelError,
    UnsupportedDeviceError,
)
from meshaios.devices.registry import (
    Device,
    Kernel,
    KernelRegistry,
    default_registry,
    kernel,
    parse_device,
    payload_nbytes,
)

__all__ = [
    "Device",
    "DeviceError",
    "DeviceInventory",
    "DeviceMemoryError",
    "DeviceUnavailableError",
    "FakeGpuSpec",
    "GpuInfo",
    "InvalidDeviceError",
    "Kernel",
    "KernelRegistrationError",
    "KernelRegistry",
    "UnknownKernelError",
    "UnsupportedDeviceError",
    "default_registry",
    "detect_devices",
    "format_size",
    "kernel",
    "parse_device",
    "parse_size",
    "payload_nbytes",
]
