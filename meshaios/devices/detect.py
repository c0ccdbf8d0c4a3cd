"""What silicon this node has: CPU cores, memory and GPUs, real or fake.

A node with no GPU, or with cupy installed but no driver, is the normal case and not an error: detection never
raises because of the machine it runs on, it only reports less. The result, a ``DeviceInventory``, travels in mDNS
(``summary()``) and in gossip (``to_wire()``), so it is a frozen value with a strict decoder.

Fake GPUs exist so that placement, resources and the scheduler's device choice can be tested for real on CPU-only
machines: a fake GPU runs the numpy path and *declares* a speed, which the scheduler accounts for.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Final, TypedDict

from meshaios.errors import WireError

if TYPE_CHECKING:
    from typing import TypeAlias

    LoggerLike: TypeAlias = logging.Logger | logging.LoggerAdapter[logging.Logger]

__all__ = [
    "DeviceInventory",
    "FakeGpuSpec",
    "GpuInfo",
    "detect_devices",
    "format_size",
    "parse_size",
]

logger = logging.getLogger(__name__)

WIRE_VERSION: Final = 1
# Bounds for decoding a peer's inventory: generous for real machines, small enough that garbage cannot make us
# allocate much or render a status table of a million GPUs.
_MAX_GPUS: Final = 256
_MAX_NAME: Final = 256
_MAX_CORES: Final = 1 << 20
_MAX_BYTES: Final = 1 << 62

_UNITS: Final[dict[str, int]] = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_FAKE_SPEED: Final = 1.0
_FAKE_MEMORY: Final = 16 * 2**30
_FAKE_NAME: Final = "fake-gpu"
_SIZE_RE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def parse_size(value: str | int) -> int:
    """Turn ``"4GiB"`` / ``"512 MB"`` / ``4096`` into bytes.

    Both SI (``KB`` = 1000) and IEC (``KiB`` = 1024) units are accepted, case-insensitively, because users write
    both; bare ``K``/``M``/``G`` are refused since they are ambiguous between the two. Fractions are allowed
    (``"1.5GiB"``) and rounded down to whole bytes.

    >>> parse_size("4GiB")
    4294967296
    >>> parse_size("1.5 kb")
    1500
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"size must be an int or a string like '4GiB', not {type(value).__name__}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"size must not be negative: {value}")
        return value
    m = _SIZE_RE.match(value)
    if m is None:
        raise ValueError(f"cannot parse size {value!r}: expected a number and a unit like '4GiB', '512MB', '100'")
    number, unit = m.group(1), m.group(2).lower()
    if unit not in _UNITS:
        raise ValueError(
            f"unknown unit {m.group(2)!r} in size {value!r}: use B, KB, MB, GB, TB (powers of 1000) "
            "or KiB, MiB, GiB, TiB (powers of 1024)"
        )
    try:
        amount = Decimal(number) * _UNITS[unit]
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only valid decimals
        raise ValueError(f"cannot parse size {value!r}") from exc
    return int(amount)


def format_size(n: int) -> str:
    """Render bytes for humans in IEC units, e.g. for error messages that name what was asked and what exists.

    >>> format_size(16 * 2**30)
    '16GiB'
    >>> format_size(1536)
    '1.5KiB'
    """
    for unit, mult in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= mult:
            text = f"{n / mult:.1f}".removesuffix(".0")
            return f"{text}{unit}"
    return f"{n}B"


@dataclass(frozen=True, slots=True)
class FakeGpuSpec:
    """A fake GPU declared on the command line (``--fake-gpu speed=8,memory=16GiB,name=fake0``).

    ``speed`` is how many times faster than this node's CPU path the scheduler should believe the device to be;
    ``memory`` is the device memory that resource checks see. The kernels themselves run on numpy.
    """

    speed: float = _FAKE_SPEED
    memory: int = _FAKE_MEMORY
    name: str = _FAKE_NAME

    def __post_init__(self) -> None:
        if isinstance(self.speed, bool) or not isinstance(self.speed, int | float):
            raise ValueError(f"fake GPU speed must be a number, not {self.speed!r}")
        if not (math.isfinite(self.speed) and self.speed > 0):
            raise ValueError(f"fake GPU speed must be a finite number > 0, not {self.speed!r}")
        if isinstance(self.memory, bool) or not isinstance(self.memory, int) or self.memory <= 0:
            raise ValueError(f"fake GPU memory must be a positive number of bytes, not {self.memory!r}")
        _check_name(self.name, ValueError)
        if any(c in self.name for c in ",="):
            raise ValueError(f"fake GPU name must not contain ',' or '=': {self.name!r}")

    @classmethod
    def parse(cls, text: str) -> FakeGpuSpec:
        """Parse the ``--fake-gpu`` option: comma-separated ``key=value`` with keys speed, memory, name.

        An empty string gives the defaults, so ``--fake-gpu ''`` means "one fake GPU, nothing special".

        >>> FakeGpuSpec.parse("speed=8,memory=16GiB,name=fake0")
        FakeGpuSpec(speed=8.0, memory=17179869184, name='fake0')
        """
        values: dict[str, str] = {}
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            key, sep, val = part.partition("=")
            key, val = key.strip().lower(), val.strip()
            if not sep or not val:
                raise ValueError(f"bad --fake-gpu item {part!r} in {text!r}: expected key=value")
            if key not in ("speed", "memory", "name"):
                raise ValueError(f"unknown --fake-gpu key {key!r} in {text!r}: allowed are speed, memory, name")
            if key in values:
                raise ValueError(f"--fake-gpu key {key!r} given twice in {text!r}")
            values[key] = val
        speed = _FAKE_SPEED
        if "speed" in values:
            try:
                speed = float(values["speed"])
            except ValueError:
                raise ValueError(f"--fake-gpu speed must be a number, not {values['speed']!r}") from None
        memory = parse_size(values["memory"]) if "memory" in values else _FAKE_MEMORY
        return cls(speed=speed, memory=memory, name=values.get("name", _FAKE_NAME))

    def to_option(self) -> str:
        """The ``--fake-gpu`` text that parses back to this spec, for spawning child nodes with the same fakes."""
        return f"speed={self.speed!r},memory={self.memory},name={self.name}"


class GpuWire(TypedDict):
    """``GpuInfo.to_wire()``: one GPU in an ``InventoryWire``."""

    index: int
    name: str
    total_memory: int
    free_memory: int
    compute_capability: str
    fake: bool
    speed: float


class InventoryWire(TypedDict):
    """``DeviceInventory.to_wire()`` (read back, defensively, by ``from_wire``)."""

    v: int  # WIRE_VERSION
    cpu_cores: int
    memory: int
    gpus: list[GpuWire]


@dataclass(frozen=True, slots=True)
class GpuInfo:
    """One GPU as the mesh sees it.

    ``index`` counts within its kind: real GPUs are ``gpu:0..``, fake ones ``fakegpu:0..``, so a node may have
    both a ``gpu:0`` and a ``fakegpu:0``. ``free_memory`` is a snapshot taken at detection. ``speed`` is a
    declared multiplier over the CPU path: 1.0 for a real GPU (nothing declared, the scheduler learns), the
    configured value for a fake one. ``compute_capability`` is ``"major.minor"``, empty for a fake GPU.
    """

    index: int
    name: str
    total_memory: int
    free_memory: int
    compute_capability: str = ""
    fake: bool = False
    speed: float = 1.0

    @property
    def device(self) -> str:
        """The device string that ``Kernel.run`` accepts for this GPU."""
        return f"{'fakegpu' if self.fake else 'gpu'}:{self.index}"

    def to_wire(self) -> GpuWire:
        return {
            "index": self.index,
            "name": self.name,
            "total_memory": self.total_memory,
            "free_memory": self.free_memory,
            "compute_capability": self.compute_capability,
            "fake": self.fake,
            "speed": self.speed,
        }

    @classmethod
    def from_wire(cls, d: object) -> GpuInfo:
        if not isinstance(d, Mapping):
            raise WireError(f"gpu entry must be a map, not {type(d).__name__}")
        index = _wire_int(d, "index", 0, _MAX_GPUS)
        name = _wire_str(d, "name")
        total = _wire_int(d, "total_memory", 0, _MAX_BYTES)
        free = _wire_int(d, "free_memory", 0, _MAX_BYTES)
        if free > total:
            raise WireError(f"gpu free_memory {free} exceeds total_memory {total}")
        cc = _wire_str(d, "compute_capability", allow_empty=True)
        fake = d.get("fake")
        if not isinstance(fake, bool):
            raise WireError(f"gpu field 'fake' must be a bool, not {fake!r}")
        speed = d.get("speed")
        if isinstance(speed, bool) or not isinstance(speed, int | float):
            raise WireError(f"gpu field 'speed' must be a number, not {speed!r}")
        if not (math.isfinite(speed) and speed > 0):
            raise WireError(f"gpu field 'speed' must be finite and > 0, not {speed!r}")
        return cls(index, name, total, free, cc, fake, float(speed))


@dataclass(frozen=True, slots=True)
class DeviceInventory:
    """Everything a node can offer, as announced to peers and used by placement."""

    cpu_cores: int
    memory: int
    gpus: tuple[GpuInfo, ...] = field(default=())

    @property
    def devices(self) -> tuple[str, ...]:
        """Device strings a task may be run on here, CPU first."""
        return ("cpu", *(g.device for g in self.gpus))

    @property
    def gpu_count(self) -> int:
        """Real and fake GPUs alike: to placement a fake GPU *is* a GPU."""
        return len(self.gpus)

    @property
    def max_gpu_memory(self) -> int:
        """The largest single GPU's memory, for "can this node ever satisfy gpu_memory=X" checks."""
        return max((g.total_memory for g in self.gpus), default=0)

    def gpu(self, device: str) -> GpuInfo | None:
        """Look a GPU up by device string, ``None`` if this node has no such device."""
        for g in self.gpus:
            if g.device == device:
                return g
        return None

    def summary(self) -> str:
        """A short text for an mDNS TXT record or a status table, e.g. ``"cpu:8,gpu:1(fake)"``.

        Real and fake GPUs are counted together, with the fake share in brackets: ``"cpu:8,gpu:3(1 fake)"``.
        """
        text = f"cpu:{self.cpu_cores}"
        if self.gpus:
            fakes = sum(g.fake for g in self.gpus)
            text += f",gpu:{len(self.gpus)}"
            if fakes == len(self.gpus):
                text += "(fake)"
            elif fakes:
                text += f"({fakes} fake)"
        return text

    def to_wire(self) -> InventoryWire:
        """A msgpack-able map; new fields may be added under the same version, old decoders ignore them."""
        return {
            "v": WIRE_VERSION,
            "cpu_cores": self.cpu_cores,
            "memory": self.memory,
            "gpus": [g.to_wire() for g in self.gpus],
        }

    @classmethod
    def from_wire(cls, d: object) -> DeviceInventory:
        """Decode a peer's inventory, raising ``WireError`` on anything malformed; never trust the peer."""
        if not isinstance(d, Mapping):
            raise WireError(f"device inventory must be a map, not {type(d).__name__}")
        v = d.get("v")
        if isinstance(v, bool) or v != WIRE_VERSION:
            raise WireError(f"unsupported device inventory version {v!r} (expected {WIRE_VERSION})")
        cores = _wire_int(d, "cpu_cores", 1, _MAX_CORES)
        memory = _wire_int(d, "memory", 0, _MAX_BYTES)
        raw_gpus = d.get("gpus")
        if not isinstance(raw_gpus, list | tuple):
            raise WireError(f"device inventory 'gpus' must be a list, not {type(raw_gpus).__name__}")
        if len(raw_gpus) > _MAX_GPUS:
            raise WireError(f"device inventory lists {len(raw_gpus)} GPUs, more than the limit {_MAX_GPUS}")
        gpus = tuple(GpuInfo.from_wire(g) for g in raw_gpus)
        seen = [g.device for g in gpus]
        if len(set(seen)) != len(seen):
            raise WireError(f"device inventory lists a GPU twice: {seen}")
        return cls(cores, memory, gpus)


def _check_name(name: object, exc: type[Exception]) -> None:
    if not isinstance(name, str) or not name or len(name) > _MAX_NAME or not name.isprintable():
        raise exc(f"GPU name must be 1..{_MAX_NAME} printable characters, not {name!r}")


def _wire_int(d: Mapping[Any, Any], key: str, lo: int, hi: int) -> int:
    val = d.get(key)
    if isinstance(val, bool) or not isinstance(val, int):
        raise WireError(f"field {key!r} must be an int, not {val!r}")
    if not lo <= val <= hi:
        raise WireError(f"field {key!r} = {val} is out of range [{lo}, {hi}]")
    return val


def _wire_str(d: Mapping[Any, Any], key: str, *, allow_empty: bool = False) -> str:
    val = d.get(key)
    if not isinstance(val, str):
        raise WireError(f"field {key!r} must be a string, not {val!r}")
    if allow_empty and not val:
        return val
    _check_name(val, WireError)
    return val


# --------------------------------------------------------------------------------------------------- detection

_IMPORT: Final = object()  # sentinel: "import cupy yourself"


def detect_devices(
    fake_gpus: Sequence[FakeGpuSpec] = (),
    *,
    cupy_module: object = _IMPORT,
    log: LoggerLike | None = None,
) -> DeviceInventory:
    """Find this node's CPU cores, memory and GPUs; add the declared fake GPUs.

    ``cupy_module`` exists so that tests can hand in a stand-in for cupy (for instance one that imports fine but
    has no driver), and so that a node can say ``None`` to mean "do not look for GPUs". By default cupy is
    imported here, lazily, so that a CPU-only install never pays for it.

    ``log`` lets the node pass a ``LoggerAdapter`` that stamps its node id on the records.
    """
    log = log if log is not None else logger
    cp: Any = _import_cupy(log) if cupy_module is _IMPORT else cupy_module
    real = _detect_cupy_gpus(cp, log) if cp is not None else []
    fakes = [
        GpuInfo(
            index=i,
            name=spec.name,
            total_memory=spec.memory,
            free_memory=spec.memory,
            compute_capability="",
            fake=True,
            speed=float(spec.speed),
        )
        for i, spec in enumerate(fake_gpus)
    ]
    return DeviceInventory(cpu_cores=cpu_cores(), memory=total_memory(), gpus=(*real, *fakes))


def _import_cupy(log: LoggerLike) -> Any:
    try:
        import cupy
    except ImportError as exc:
        log.info("no GPUs: cupy is not installed (%s); running CPU-only", exc)
        return None
    except Exception as exc:  # a broken CUDA install can fail at import with anything
        log.info("no GPUs: importing cupy failed (%s: %s); running CPU-only", type(exc).__name__, exc)
        return None
    return cupy


def _detect_cupy_gpus(cp: Any, log: LoggerLike) -> list[GpuInfo]:
    try:
        count = int(cp.cuda.runtime.getDeviceCount())
    except Exception as exc:  # cupy without a driver raises CUDARuntimeError (a RuntimeError) here
        log.info("no GPUs: cupy is installed but CUDA is unusable (%s: %s); running CPU-only", type(exc).__name__, exc)
        return []
    if count <= 0:
        log.info("no GPUs: cupy reports no CUDA devices; running CPU-only")
        return []
    found: list[GpuInfo] = []
    for index in range(count):
        try:
            found.append(_probe_gpu(cp, index))
        except Exception as exc:
            # The driver lists the device but it cannot run work (wrong arch, no NVRTC, busy in exclusive mode).
            log.warning("GPU %d skipped: it failed a test kernel (%s: %s)", index, type(exc).__name__, exc)
    if not found:
        log.info("no usable GPUs among %d reported by CUDA; running CPU-only", count)
    return found


def _probe_gpu(cp: Any, index: int) -> GpuInfo:
    """Read one GPU's properties and prove it computes, since a listed device is not always a working one."""
    props = cp.cuda.runtime.getDeviceProperties(index)
    raw_name = props.get("name", b"")
    name = raw_name.decode(errors="replace") if isinstance(raw_name, bytes) else str(raw_name)
    name = "".join(c for c in name.strip("\x00 ") if c.isprintable())[:_MAX_NAME] or f"GPU {index}"
    cc = f"{int(props.get('major', 0))}.{int(props.get('minor', 0))}"
    with cp.cuda.Device(index):
        free, total = cp.cuda.runtime.memGetInfo()
        # A tiny elementwise kernel and reduction: exercises NVRTC compilation, a launch and a device->host copy.
        x = cp.arange(8, dtype=cp.float32)
        got = float((x * 2.0).sum())
        cp.cuda.Device(index).synchronize()
    if got != 56.0:
        raise RuntimeError(f"test kernel returned {got}, expected 56.0")
    total = int(total) or int(props.get("totalGlobalMem", 0))
    return GpuInfo(
        index=index,
        name=name,
        total_memory=total,
        free_memory=min(int(free), total),
        compute_capability=cc,
        fake=False,
        speed=1.0,
    )


def cpu_cores() -> int:
    """Cores this process may run on: the affinity mask, which respects taskset and container cpusets."""
    getaffinity = getattr(os, "sched_getaffinity", None)
    if getaffinity is not None:
        try:
            return max(1, len(getaffinity(0)))
        except OSError:
            pass
    return max(1, os.cpu_count() or 1)


def total_memory(meminfo: str = "/proc/meminfo", cgroup_max: str = "/sys/fs/cgroup/memory.max") -> int:
    """Physical memory, capped by a cgroup v2 limit when one is set (a container sees the host's MemTotal)."""
    total = 0
    try:
        with open(meminfo, encoding="ascii") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    parts = line.split()
                    total = int(parts[1]) * (1024 if parts[2:3] == ["kB"] else 1)
                    break
    except (OSError, ValueError, IndexError):
        total = 0
    if total <= 0:
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (OSError, ValueError, AttributeError):
            total = 0
    try:
        with open(cgroup_max, encoding="ascii") as f:
            limit = f.read().strip()
        if limit.isdigit() and int(limit) > 0 and (total <= 0 or int(limit) < total):
            total = int(limit)
    except OSError:
        pass
    return max(0, total)
