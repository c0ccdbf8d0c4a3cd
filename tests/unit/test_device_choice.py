"""``submit(..., device="cpu" | "gpu" | "any")`` (issue 18): what the client accepts and sends, and what the owner
tells placement (``Owner.task_info``'s ``device``) for each choice, with and without ``--gpu-choice``."""

from __future__ import annotations

import random
from typing import Any

import pytest

from meshaios.client import AsyncClient
from meshaios.devices import Kernel, default_registry
from meshaios.devices.choice import submit_device
from meshaios.tasks.owner import Owner, OwnerConfig
from meshaios.wire.payload import Payload

RELU = default_registry().get("meshaios.relu")
CPU_ONLY = Kernel(lambda xp, x: x, name="test.cpu_only", gpu=False)
CLIENT = b"client-1"


@pytest.mark.parametrize("device", ["GPU", "cuda", "", "gpu:0", 1, True])
def test_an_unknown_device_is_refused_with_the_choices_named(device: object) -> None:
    with pytest.raises(ValueError, match="device must be None, 'cpu', 'gpu' or 'any'"):
        submit_device(device, RELU, {})


def test_gpu_is_the_gpu_resource_and_cpu_or_any_travel_as_dev() -> None:
    assert submit_device("gpu", RELU, {}) == ("", {"gpu": 1})
    assert submit_device("gpu", RELU, {"gpu": 2, "memory": 5}) == ("", {"gpu": 2, "memory": 5})
    assert submit_device("gpu", pow, {}) == ("", {"gpu": 1})  # a plain function may use a GPU itself
    assert submit_device("cpu", RELU, {"memory": 5}) == ("cpu", {"memory": 5})
    assert submit_device("cpu", pow, {}) == ("cpu", {})
    assert submit_device("any", RELU, {}) == ("any", {})


def test_a_choice_that_contradicts_a_gpu_resource_or_the_function_is_refused() -> None:
    for device in ("cpu", "any"):
        with pytest.raises(ValueError, match="contradicts resources"):
            submit_device(device, RELU, {"gpu": 1})
    with pytest.raises(ValueError, match="needs a kernel that runs on both"):
        submit_device("any", pow, {})
    for device in ("any", "gpu"):
        with pytest.raises(ValueError, match="has no GPU implementation"):
            submit_device(device, CPU_ONLY, {})
    assert submit_device("cpu", CPU_ONLY, {}) == ("cpu", {})


def test_the_client_checks_the_choice_before_it_sends_anything_and_puts_it_in_the_spec() -> None:
    c = AsyncClient("tcp://127.0.0.1:1", insecure=True)  # never connected: _prepare is local work
    spec, _ = c._prepare(RELU, (1.0,), {}, device="any")
    assert spec.get("dev") == "any"
    assert "resources" not in spec
    spec, _ = c._prepare(RELU, (1.0,), {}, device="gpu", resources={"memory": "1KiB"})
    assert "dev" not in spec
    assert spec.get("resources") == {"memory": 1024, "gpu": 1}
    spec, _ = c._prepare(RELU, (1.0,), {})
    assert "dev" not in spec
    assert "resources" not in spec
    with pytest.raises(ValueError, match="device must be"):
        c._prepare(RELU, (1.0,), {}, device="either")
    with pytest.raises(ValueError, match="contradicts"):
        c._prepare(RELU, (1.0,), {}, device="cpu", resources={"gpu": 1})


def _info(gpu_choice: bool, **task: Any) -> str:
    o = Owner("me", OwnerConfig(), rng=random.Random(0), gpu_capable=(lambda fn: True) if gpu_choice else None)
    o.submit(CLIENT, [{"id": "t", "fn": Payload(b"fn"), "args": Payload(b"args"), "deps": [], **task}], now=0.0)
    info = o.task_info("t")
    assert info is not None
    return str(info.get("device"))


@pytest.mark.parametrize("gpu_choice", [False, True])
def test_the_owner_tells_placement_the_submitters_choice_over_its_own(gpu_choice: bool) -> None:
    assert _info(gpu_choice, dev="any") == "any"  # EFT may choose, with or without --gpu-choice
    assert _info(gpu_choice, dev="cpu") == "cpu"  # never offered a GPU, even with --gpu-choice
    assert _info(gpu_choice, resources={"gpu": 1}) == "gpu"  # device="gpu" travels as this resource
    assert _info(gpu_choice) == ("any" if gpu_choice else "cpu")  # no choice: the node's policy, as before
    assert _info(gpu_choice, dev="fpga") == ("any" if gpu_choice else "cpu")  # read defensively: ignored


def test_the_modules_examples_hold() -> None:
    import doctest

    from meshaios.devices import choice

    assert doctest.testmod(choice).failed == 0
