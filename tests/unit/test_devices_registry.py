"""The kernel registry: naming, variants, device strings, host <-> device movement and error translation."""

from __future__ import annotations

import collections
import sys
from typing import Any

import numpy as np
import pytest

from meshaios.devices import (
    Device,
    DeviceMemoryError,
    DeviceUnavailableError,
    InvalidDeviceError,
    Kernel,
    KernelRegistrationError,
    KernelRegistry,
    UnknownKernelError,
    UnsupportedDeviceError,
    default_registry,
    kernel,
    parse_device,
    payload_nbytes,
)
from meshaios.devices.fakecupy import FakeCupy, FakeDeviceArray, OutOfMemoryError
from meshaios.errors import MeshError

# ---------------------------------------------------------------------------------------------- device strings


@pytest.mark.parametrize(
    ("text", "kind", "index"),
    [("cpu", "cpu", None), ("gpu:0", "gpu", 0), ("gpu:12", "gpu", 12), ("fakegpu:3", "fakegpu", 3)],
)
def test_parse_device(text: str, kind: str, index: int | None) -> None:
    dev = parse_device(text)
    assert (dev.kind, dev.index) == (kind, index)
    assert str(dev) == text
    assert parse_device(dev) is dev
    assert dev.is_gpu_like == (kind != "cpu")


@pytest.mark.parametrize("bad", ["", "CPU", "cpu:0", "gpu", "gpu:", "gpu:-1", "gpu:01", "gpu: 1", "tpu:0", "gpu:99999"])
def test_parse_device_rejects(bad: str) -> None:
    with pytest.raises(InvalidDeviceError, match="device"):
        parse_device(bad)
    with pytest.raises(ValueError):  # also a ValueError, for callers that catch that
        parse_device(bad)


def test_parse_device_rejects_non_strings() -> None:
    with pytest.raises(InvalidDeviceError):
        parse_device(0)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- registration


def test_registries_are_independent() -> None:
    a, b = KernelRegistry(), KernelRegistry()

    @a.kernel(name="test.scale")
    def scale(xp: Any, x: Any, factor: float = 2.0) -> Any:
        return x * factor

    assert "test.scale" in a
    assert "test.scale" not in b
    assert len(a) == 1
    assert len(b) == 0
    assert a.get("test.scale") is scale
    assert isinstance(scale, Kernel)
    assert a.run("test.scale", "cpu", np.arange(3), factor=3.0).tolist() == [0.0, 3.0, 6.0]
    with pytest.raises(UnknownKernelError, match=r"test\.scale"):
        b.get("test.scale")


def double(xp: Any, x: Any) -> Any:
    return x * 2


def test_decorator_forms_and_default_names() -> None:
    reg = KernelRegistry()
    k = reg.kernel(double)
    assert k.name == f"{__name__}.double"
    assert reg.register(lambda xp, x: x, name="test.ident").name == "test.ident"
    via_module = kernel(name="test.neg", registry=reg)(lambda xp, x: -x)
    assert reg.get("test.neg") is via_module
    # The kernel object still works as the plain function it wraps.
    assert k(np, np.array([1, 2])).tolist() == [2, 4]
    assert k.__wrapped__ is double


def test_local_functions_need_an_explicit_name() -> None:
    reg = KernelRegistry()

    with pytest.raises(KernelRegistrationError, match="name"):

        @reg.kernel
        def local(xp: Any, x: Any) -> Any:
            return x


def test_main_module_functions_need_an_explicit_name() -> None:
    def f(xp: Any) -> None:
        return None

    f.__module__ = "__main__"
    with pytest.raises(KernelRegistrationError, match="__main__"):
        KernelRegistry().register(f)


@pytest.mark.parametrize("bad", ["", "plain", ".x", "x.", "a..b", "a.1b", "a b.c", "a.b-c", "a." + "x" * 300, 3])
def test_kernel_names_are_validated(bad: Any) -> None:
    with pytest.raises(KernelRegistrationError):
        Kernel(lambda xp: None, name=bad)


def test_duplicates() -> None:
    reg = KernelRegistry()
    k = reg.register(lambda xp: 1, name="test.dup")
    assert reg.add(k) is k  # the very same object again is fine (modules imported twice)
    with pytest.raises(KernelRegistrationError, match="already registered"):
        reg.register(lambda xp: 2, name="test.dup")
    other = Kernel(lambda xp: 3, name="test.dup")
    reg.add(other, replace=True)
    assert reg.get("test.dup") is other
    with pytest.raises(KernelRegistrationError):
        reg.add("test.dup")  # type: ignore[arg-type]


def test_update_merges_registries() -> None:
    user = KernelRegistry()
    user.register(lambda xp, x: x + 1, name="user.inc")
    node = KernelRegistry.with_builtins()
    node.update(user)
    assert "user.inc" in node
    assert "meshaios.softmax" in node
    assert node.names() == sorted(node.names())
    assert len(list(node)) == len(node)


def test_module_decorator_fills_the_default_registry() -> None:
    reg = default_registry()
    try:

        @kernel(name="test.default_reg", gpu=False)
        def f(xp: Any, x: Any) -> Any:
            return x

        assert reg.get("test.default_reg") is f
        assert not f.supports_gpu
        assert kernel(double) is reg.get(f"{__name__}.double")
    finally:
        reg.remove("test.default_reg")
        reg.remove(f"{__name__}.double")
    assert "test.default_reg" not in reg
    with pytest.raises(UnknownKernelError):
        reg.remove("test.default_reg")


def test_default_registry_has_builtins_and_is_shared() -> None:
    reg = default_registry()
    assert reg is default_registry()
    assert "meshaios.matmul" in reg
    assert KernelRegistry.with_builtins() is not reg


def test_errors_are_mesh_errors() -> None:
    for exc in (UnknownKernelError, KernelRegistrationError, DeviceMemoryError, InvalidDeviceError):
        assert issubclass(exc, MeshError)
    with pytest.raises(LookupError):
        KernelRegistry().get("nope.nothing")


# -------------------------------------------------------------------------------------------------- variants


def test_variants_are_chosen_per_device() -> None:
    calls: list[str] = []

    @kernel(name="test.which", registry=KernelRegistry())
    def which(xp: Any, x: Any) -> Any:
        calls.append("generic")
        return x

    @which.variant("cpu")
    def which_cpu(xp: Any, x: Any) -> Any:
        calls.append("cpu")
        return x

    @which.variant("gpu")
    def which_gpu(xp: Any, x: Any) -> Any:
        calls.append("gpu")
        return x

    assert callable(which_cpu)
    assert not isinstance(which_cpu, Kernel)
    which.run("cpu", 1)
    which.run("fakegpu:0", 1)  # a fake GPU runs the numpy (CPU) implementation
    which.call("gpu:0", (1,), cupy_module=FakeCupy())
    which(np, 1)
    which(FakeCupy(), 1)
    assert calls == ["cpu", "cpu", "gpu", "cpu", "gpu"]
    with pytest.raises(KernelRegistrationError, match="already has"):
        which.variant("gpu")(lambda xp, x: x)
    with pytest.raises(KernelRegistrationError, match="variant kind"):
        which.variant("tpu")  # type: ignore[arg-type]


def test_cpu_only_kernels_refuse_gpus_real_and_fake() -> None:
    k = Kernel(lambda xp, x: x, name="test.cpuonly", gpu=False)
    assert k.device_kinds == ("cpu",)
    assert not k.supports_gpu
    assert k.run("cpu", 5) == 5
    with pytest.raises(UnsupportedDeviceError, match="fake GPU"):
        k.run("fakegpu:0", 5)
    with pytest.raises(UnsupportedDeviceError, match="no GPU implementation"):
        k.call("gpu:0", (5,), cupy_module=FakeCupy())
    # A GPU variant makes it GPU-capable; fake GPUs then run the numpy implementation.
    k.variant("gpu")(lambda xp, x: x * 10)
    assert k.supports_gpu
    assert k.run("fakegpu:0", 5) == 5
    assert k.call("gpu:0", (5,), cupy_module=FakeCupy()) == 50


# ----------------------------------------------------------------------------------------- running on devices


def test_run_rejects_bad_device_strings() -> None:
    k = Kernel(lambda xp: 1, name="test.one")
    with pytest.raises(InvalidDeviceError):
        k.run("gpu0")


def test_kernel_keyword_named_device_does_not_clash() -> None:
    k = Kernel(lambda xp, device="x": device, name="test.kw")
    assert k.run("cpu", device="mine") == "mine"
    assert k.call("fakegpu:1", (), {"device": "y"}) == "y"


def test_fake_gpu_gives_the_kernel_private_copies() -> None:
    def mutate(xp: Any, x: Any) -> Any:
        x += 1
        return x

    k = Kernel(mutate, name="test.mutate")
    host = np.zeros(3)
    out = k.run("fakegpu:0", host)
    assert host.tolist() == [0.0, 0.0, 0.0]  # as on a real GPU, the caller's array is untouched
    assert out.tolist() == [1.0, 1.0, 1.0]
    k.run("cpu", host)  # the CPU path does not copy: in-place kernels are the caller's business there
    assert host.tolist() == [1.0, 1.0, 1.0]


def test_gpu_path_moves_nested_arrays_both_ways() -> None:
    shim = FakeCupy(device_count=2)
    Pair = collections.namedtuple("Pair", "a b")
    seen: dict[str, Any] = {}

    def inspect(xp: Any, items: Any, mapping: Any, pair: Any, scalar: Any) -> Any:
        seen["items"] = [type(i) for i in items]
        seen["mapping"] = type(mapping["w"])
        seen["pair"] = (type(pair.a), type(pair), type(scalar))
        seen["device"] = shim.current_device
        return {"sum": xp.sum(items[0]), "arrays": (items[0] * 2, [mapping["w"]]), "text": "ok", "pair": pair}

    k = Kernel(inspect, name="test.inspect")
    out = k.call(
        "gpu:1",
        ([np.ones(2), np.zeros(1)], {"w": np.arange(3)}, Pair(np.ones(1), 7)),
        {"scalar": 2.5},
        cupy_module=shim,
    )
    assert seen["items"] == [FakeDeviceArray, FakeDeviceArray]
    assert seen["mapping"] is FakeDeviceArray
    assert seen["pair"] == (FakeDeviceArray, Pair, float)
    assert seen["device"] == 1
    assert shim.current_device == 0
    assert isinstance(out["sum"], np.float64)  # 0-d device result -> numpy scalar
    assert type(out["arrays"]) is tuple
    assert type(out["arrays"][0]) is np.ndarray
    assert type(out["arrays"][1][0]) is np.ndarray
    assert out["arrays"][1][0].tolist() == [0, 1, 2]
    assert out["text"] == "ok"
    assert type(out["pair"]) is Pair
    assert type(out["pair"].a) is np.ndarray
    assert shim.to_device_copies == 4
    assert shim.to_host_copies >= 4


def test_zero_d_results_are_scalars_on_every_device() -> None:
    k = Kernel(lambda xp, x: xp.asarray(x).sum(), name="test.total")
    x = np.arange(4, dtype=np.int32)
    results = [k.run("cpu", x), k.run("fakegpu:0", x), k.call("gpu:0", (x,), cupy_module=FakeCupy())]
    assert [type(r) for r in results] == [np.int64] * 3
    zero_d = Kernel(lambda xp: xp.asarray(3.0), name="test.zerod")
    assert isinstance(zero_d.run("cpu"), np.float64)


def test_gpu_out_of_memory_becomes_device_memory_error() -> None:
    shim = FakeCupy(memory=1000)
    k = Kernel(lambda xp, x: x * 2, name="test.big")
    with pytest.raises(DeviceMemoryError, match=r"test\.big.*gpu:0.*Out of memory") as info:
        k.call("gpu:0", (np.zeros(1000),), cupy_module=shim)
    assert info.value.kernel == "test.big"
    assert info.value.device == "gpu:0"
    # Raised after the cupy exception is dropped, so its traceback no longer pins device arrays in memory.
    assert info.value.__cause__ is None
    assert info.value.__context__ is None
    assert shim.pool.freed == 1  # the node gives cached blocks back and carries on
    assert shim.current_device == 0
    assert k.call("gpu:0", (np.zeros(10),), cupy_module=shim).tolist() == [0.0] * 10


def test_oom_raised_inside_the_kernel_is_translated_too() -> None:
    def greedy(xp: Any) -> Any:
        raise OutOfMemoryError("Out of memory allocating 8,589,934,592 bytes")

    with pytest.raises(DeviceMemoryError, match="8,589,934,592"):
        Kernel(greedy, name="test.greedy").call("gpu:0", (), cupy_module=FakeCupy())


def test_cublas_style_alloc_failure_is_recognised() -> None:
    alloc_failed = type("CUBLASError", (RuntimeError,), {"__module__": "cupy_backends.cuda.libs.cublas"})

    def gemm(xp: Any) -> Any:
        raise alloc_failed("CUBLAS_STATUS_ALLOC_FAILED")

    with pytest.raises(DeviceMemoryError):
        Kernel(gemm, name="test.gemm").call("gpu:0", (), cupy_module=FakeCupy())


def test_other_kernel_errors_pass_through_unchanged() -> None:
    def broken(xp: Any) -> Any:
        raise KeyError("user bug")

    shim = FakeCupy()
    with pytest.raises(KeyError, match="user bug"):
        Kernel(broken, name="test.broken").call("gpu:0", (), cupy_module=shim)
    assert shim.pool.freed == 0
    assert shim.current_device == 0


def test_gpu_device_that_does_not_exist() -> None:
    k = Kernel(lambda xp: 1, name="test.one")
    with pytest.raises(DeviceUnavailableError, match="gpu:3"):
        k.call("gpu:3", (), cupy_module=FakeCupy(device_count=1))


def test_gpu_without_cupy_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(DeviceUnavailableError, match="cupy"):
        Kernel(lambda xp: 1, name="test.one").run("gpu:0")


def test_payload_nbytes() -> None:
    args = ([np.zeros(10), np.zeros((2, 2), dtype=np.float32)], {"k": np.zeros(3, dtype=np.uint8), "s": "text"}, 5)
    assert payload_nbytes(args) == 80 + 16 + 3
    assert payload_nbytes(()) == 0


def test_kernel_repr_and_device_kinds() -> None:
    k = Kernel(lambda xp: 1, name="test.repr")
    assert "test.repr" in repr(k)
    assert "gpu" in repr(k)
    assert k.device_kinds == ("cpu", "gpu", "fakegpu")
    assert parse_device("fakegpu:0") == Device("fakegpu", 0)
    assert "kernels" in repr(KernelRegistry())
