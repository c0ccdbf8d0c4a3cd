"""Device discovery: sizes, fake GPU specs, detection with and without (a stand-in for) cupy, the wire form."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshaios.devices import DeviceInventory, FakeGpuSpec, GpuInfo, detect_devices, format_size, parse_size
from meshaios.devices.detect import cpu_cores, total_memory
from meshaios.devices.fakecupy import FakeCupy
from meshaios.errors import MeshError, WireError

# ------------------------------------------------------------------------------------------------------ sizes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("100", 100),
        (4096, 4096),
        ("12B", 12),
        ("1KB", 1000),
        ("1KiB", 1024),
        ("3 MB", 3_000_000),
        ("3MiB", 3 * 2**20),
        ("4GiB", 4 * 2**30),
        ("4gib", 4 * 2**30),
        ("2GB", 2 * 10**9),
        ("1TB", 10**12),
        ("1TiB", 2**40),
        ("1.5GiB", 3 * 2**29),
        ("1.1KiB", 1126),
        ("  16GiB ", 16 * 2**30),
    ],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "GiB", "abc", "-1GiB", "4XB", "4 G", "4K", "1e3", "nan", "inf", "4GiB!", "1,5GB"])
def test_parse_size_rejects_garbage(bad: str) -> None:
    with pytest.raises(ValueError, match=r"size|unit"):
        parse_size(bad)


@pytest.mark.parametrize("bad", [-1, True, 1.5, None, b"4GiB"])
def test_parse_size_rejects_wrong_types(bad: Any) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(bad)


def test_format_size() -> None:
    assert format_size(0) == "0B"
    assert format_size(1023) == "1023B"
    assert format_size(1536) == "1.5KiB"
    assert format_size(16 * 2**30) == "16GiB"
    assert format_size(2**40 * 3) == "3TiB"
    assert parse_size(format_size(16 * 2**30)) == 16 * 2**30


# --------------------------------------------------------------------------------------------- fake GPU specs


def test_fake_gpu_spec_parse() -> None:
    spec = FakeGpuSpec.parse("speed=8,memory=16GiB,name=fake0")
    assert spec == FakeGpuSpec(speed=8.0, memory=16 * 2**30, name="fake0")
    assert FakeGpuSpec.parse("") == FakeGpuSpec()
    assert FakeGpuSpec.parse(" memory = 512MiB , ") == FakeGpuSpec(memory=512 * 2**20)
    assert FakeGpuSpec.parse("SPEED=0.5").speed == 0.5
    assert FakeGpuSpec.parse(spec.to_option()) == spec


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("speed", "key=value"),
        ("speed=", "key=value"),
        ("speed=fast", "number"),
        ("speed=0", "> 0"),
        ("speed=-2", "> 0"),
        ("speed=inf", "> 0"),
        ("speed=nan", "> 0"),
        ("memory=lots", "size"),
        ("memory=0", "positive"),
        ("colour=red", "unknown --fake-gpu key"),
        ("speed=2,speed=3", "twice"),
        ("name=a\tb", "printable"),
    ],
)
def test_fake_gpu_spec_parse_errors(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FakeGpuSpec.parse(text)


def test_fake_gpu_spec_validates_direct_construction() -> None:
    with pytest.raises(ValueError, match="name"):
        FakeGpuSpec(name="")
    with pytest.raises(ValueError, match="','"):
        FakeGpuSpec(name="a,b")
    with pytest.raises(ValueError, match="memory"):
        FakeGpuSpec(memory=True)


# -------------------------------------------------------------------------------------------------- detection


def test_detect_without_cupy_is_cpu_only(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` raise ImportError, GPU machine or not
    with caplog.at_level(logging.INFO, logger="meshaios.devices.detect"):
        inv = detect_devices()
    assert inv.gpus == ()
    assert inv.cpu_cores >= 1
    assert inv.memory > 0
    assert inv.devices == ("cpu",)
    assert inv.summary() == f"cpu:{inv.cpu_cores}"
    assert any("cupy is not installed" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)


def test_detect_with_cupy_disabled_and_a_fake_gpu() -> None:
    inv = detect_devices([FakeGpuSpec.parse("speed=8,memory=16GiB,name=fake0")], cupy_module=None)
    assert inv.gpus == (
        GpuInfo(
            index=0,
            name="fake0",
            total_memory=16 * 2**30,
            free_memory=16 * 2**30,
            compute_capability="",
            fake=True,
            speed=8.0,
        ),
    )
    assert inv.devices == ("cpu", "fakegpu:0")
    assert inv.summary() == f"cpu:{inv.cpu_cores},gpu:1(fake)"
    assert inv.max_gpu_memory == 16 * 2**30
    assert inv.gpu("fakegpu:0") is inv.gpus[0]
    assert inv.gpu("gpu:0") is None


def test_detect_cupy_without_driver_falls_back(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeCupy(driver=False)
    with caplog.at_level(logging.INFO, logger="meshaios.devices.detect"):
        inv = detect_devices([FakeGpuSpec()], cupy_module=fake)
    assert [g.device for g in inv.gpus] == ["fakegpu:0"]
    (record,) = [r for r in caplog.records if "CUDA is unusable" in r.getMessage()]
    assert record.levelno == logging.INFO
    assert "CUDARuntimeError" in record.getMessage()


def test_detect_cupy_with_zero_devices() -> None:
    assert detect_devices(cupy_module=FakeCupy(device_count=0)).gpus == ()


def test_detect_real_gpus_through_cupy() -> None:
    fake = FakeCupy(device_count=2, memory=8 * 2**30, name="Fake A100")
    inv = detect_devices([FakeGpuSpec(speed=4.0)], cupy_module=fake)
    assert [g.device for g in inv.gpus] == ["gpu:0", "gpu:1", "fakegpu:0"]
    g0 = inv.gpus[0]
    assert g0.name == "Fake A100"
    assert not g0.fake
    assert g0.speed == 1.0
    assert g0.total_memory == 8 * 2**30
    assert 0 < g0.free_memory <= g0.total_memory
    assert g0.compute_capability == "8.0"
    assert inv.summary() == f"cpu:{inv.cpu_cores},gpu:3(1 fake)"
    assert inv.gpu_count == 3
    assert fake.current_device == 0  # the Device context was left again


def test_detect_skips_gpu_that_fails_its_test_kernel(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="meshaios.devices.detect"):
        inv = detect_devices(cupy_module=FakeCupy(fail_probe=True))
    assert inv.gpus == ()
    assert any("failed a test kernel" in r.getMessage() for r in caplog.records)


def test_detect_uses_the_given_logger(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.LoggerAdapter(logging.getLogger("meshaios.node.test"), {"node": "n1"})
    with caplog.at_level(logging.INFO, logger="meshaios.node.test"):
        detect_devices(cupy_module=FakeCupy(driver=False), log=log)
    assert any(r.name == "meshaios.node.test" for r in caplog.records)


def test_cpu_cores_and_memory_readers(tmp_path: Path) -> None:
    assert cpu_cores() >= 1
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemFree:  10 kB\nMemTotal:       2048 kB\n")
    absent = str(tmp_path / "absent")
    assert total_memory(str(meminfo), absent) == 2048 * 1024
    limit = tmp_path / "memory.max"
    limit.write_text("1000\n")
    assert total_memory(str(meminfo), str(limit)) == 1000
    limit.write_text("max\n")
    assert total_memory(str(meminfo), str(limit)) == 2048 * 1024
    # No /proc/meminfo (not Linux): fall back to sysconf, which is positive on any POSIX machine.
    assert total_memory(absent, absent) > 0


# ------------------------------------------------------------------------------------------------------- wire


def _inventory() -> DeviceInventory:
    return DeviceInventory(
        cpu_cores=8,
        memory=32 * 2**30,
        gpus=(
            GpuInfo(0, "NVIDIA H100", 80 * 2**30, 79 * 2**30, "9.0", False, 1.0),
            GpuInfo(0, "fake0", 16 * 2**30, 16 * 2**30, "", True, 8.0),
        ),
    )


def test_inventory_wire_round_trip_through_msgpack() -> None:
    inv = _inventory()
    blob = msgpack.packb(inv.to_wire())
    back = DeviceInventory.from_wire(msgpack.unpackb(blob))
    assert back == inv
    assert back.devices == ("cpu", "gpu:0", "fakegpu:0")
    assert DeviceInventory.from_wire(msgpack.unpackb(msgpack.packb(DeviceInventory(1, 0).to_wire()))).gpus == ()


def test_inventory_from_wire_accepts_int_speed_and_ignores_new_fields() -> None:
    d = _inventory().to_wire()
    d["gpus"][1]["speed"] = 8
    d["future_field"] = {"x": 1}
    d["gpus"][0]["future"] = True
    back = DeviceInventory.from_wire(d)
    assert back.gpus[1].speed == 8.0
    assert isinstance(back.gpus[1].speed, float)


def _mutations() -> list[tuple[str, Any]]:
    def with_(path: list[Any], value: Any, delete: bool = False) -> Any:
        d = _inventory().to_wire()
        target = d
        for p in path[:-1]:
            target = target[p]
        if delete:
            del target[path[-1]]
        else:
            target[path[-1]] = value
        return d

    return [
        ("not a map", [1, 2, 3]),
        ("none", None),
        ("version missing", with_(["v"], None, delete=True)),
        ("version 2", with_(["v"], 2)),
        ("version bool", with_(["v"], True)),
        ("cores str", with_(["cpu_cores"], "8")),
        ("cores zero", with_(["cpu_cores"], 0)),
        ("cores bool", with_(["cpu_cores"], True)),
        ("memory negative", with_(["memory"], -1)),
        ("memory float", with_(["memory"], 1.5)),
        ("memory huge", with_(["memory"], 2**70)),
        ("gpus not list", with_(["gpus"], {"0": 1})),
        ("gpus missing", with_(["gpus"], None, delete=True)),
        ("too many gpus", with_(["gpus"], [_inventory().gpus[0].to_wire()] * 300)),
        ("gpu not map", with_(["gpus"], ["gpu"])),
        ("gpu index negative", with_(["gpus", 0, "index"], -1)),
        ("gpu name empty", with_(["gpus", 0, "name"], "")),
        ("gpu name bytes", with_(["gpus", 0, "name"], b"x")),
        ("gpu name control", with_(["gpus", 0, "name"], "a\nb")),
        ("gpu name long", with_(["gpus", 0, "name"], "x" * 1000)),
        ("gpu free > total", with_(["gpus", 0, "free_memory"], 81 * 2**30)),
        ("gpu fake not bool", with_(["gpus", 0, "fake"], 1)),
        ("gpu speed str", with_(["gpus", 0, "speed"], "8")),
        ("gpu speed zero", with_(["gpus", 0, "speed"], 0.0)),
        ("gpu speed nan", with_(["gpus", 0, "speed"], float("nan"))),
        ("gpu speed bool", with_(["gpus", 0, "speed"], True)),
        ("gpu cc int", with_(["gpus", 0, "compute_capability"], 90)),
        ("duplicate gpu", with_(["gpus"], [_inventory().gpus[0].to_wire()] * 2)),
    ]


@pytest.mark.parametrize(("label", "garbage"), _mutations(), ids=[m[0] for m in _mutations()])
def test_inventory_from_wire_rejects_garbage(label: str, garbage: Any) -> None:
    with pytest.raises(WireError):
        DeviceInventory.from_wire(garbage)


def test_wire_error_is_a_mesh_error() -> None:
    with pytest.raises(MeshError):
        DeviceInventory.from_wire("garbage")


_names = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=40)
_gpus = st.builds(
    lambda i, name, total, free_frac, cc, fake, speed: GpuInfo(i, name, total, int(total * free_frac), cc, fake, speed),
    st.integers(0, 255),
    _names.filter(str.isprintable),
    st.integers(0, 2**50),
    st.floats(0, 1),
    st.sampled_from(["", "8.0", "9.0"]),
    st.booleans(),
    st.floats(0.01, 1000),
)


@given(
    cores=st.integers(1, 4096),
    memory=st.integers(0, 2**50),
    gpus=st.lists(_gpus, max_size=5, unique_by=lambda g: (g.index, g.fake)),
)
def test_inventory_wire_round_trip_property(cores: int, memory: int, gpus: list[GpuInfo]) -> None:
    inv = DeviceInventory(cores, memory, tuple(gpus))
    assert DeviceInventory.from_wire(msgpack.unpackb(msgpack.packb(inv.to_wire()))) == inv


_json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5) | st.binary(max_size=5),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=6),
    max_leaves=20,
)


@given(_json_like)
def test_inventory_from_wire_only_ever_raises_wire_error(garbage: Any) -> None:
    try:
        DeviceInventory.from_wire(garbage)
    except WireError:
        pass


@given(
    field=st.sampled_from(
        [
            "v",
            "cpu_cores",
            "memory",
            "gpus",
            "index",
            "name",
            "total_memory",
            "free_memory",
            "compute_capability",
            "fake",
            "speed",
        ]
    ),
    value=_json_like,
)
def test_inventory_from_wire_with_one_field_corrupted(field: str, value: Any) -> None:
    d = _inventory().to_wire()
    target = d if field in d else d["gpus"][0]
    target[field] = value
    try:
        back = DeviceInventory.from_wire(d)
    except WireError:
        return
    assert isinstance(back, DeviceInventory)
