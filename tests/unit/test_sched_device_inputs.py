"""Placement prices where device-resident inputs are (issue 18): a result a GPU task left on its GPU is free to a
GPU task on that node, and costs a device->host copy (``DEVICE_COPY_BW``) to anything else, plus the network
move when it runs elsewhere -- in the one shared ``sched.inputs.transfer_seconds``, fed by the owner from the
executor's ``kdev``."""

from __future__ import annotations

import random
from typing import Any

import pytest

from meshaios.clock import ManualClock
from meshaios.sched.eft import EftPolicy
from meshaios.sched.inputs import DEVICE_COPY_BW, Held, Links, TaskInputs, parse_inputs, transfer_seconds
from meshaios.sched.loadview import DeviceLoad, make_summary
from meshaios.sched.placement import make_policy
from meshaios.tasks.owner import Dispatch, Owner, OwnerAction, OwnerConfig
from meshaios.wire.payload import Payload

MB = 1 << 20
SIZE = 600 * MB
FN = Payload(b"fn")
SMALL = Payload(b"args")
NET = 125e6  # Links' assumed network bandwidth
COPY = SIZE / DEVICE_COPY_BW


def _price(held: Held, node: str, device: str) -> float:
    return transfer_seconds(TaskInputs(0, (held,)), node, "owner", Links(default=NET).bandwidth, 0.0, device)


def test_a_device_resident_input_is_free_only_to_a_gpu_task_on_its_holder() -> None:
    on_x = Held(("x",), SIZE, "x")
    assert _price(on_x, "x", "gpu") == 0.0
    assert _price(on_x, "x", "cpu") == pytest.approx(COPY)  # off the GPU to the host, no network
    assert _price(on_x, "y", "cpu") == pytest.approx(COPY + SIZE / NET)  # off the GPU, then over the network
    assert _price(on_x, "y", "gpu") == pytest.approx(2 * COPY + SIZE / NET)  # ... and onto y's GPU
    # the same input on the host: free on the holder whatever the device, the network elsewhere
    on_host = Held(("x",), SIZE)
    assert _price(on_host, "x", "cpu") == _price(on_host, "x", "gpu") == 0.0
    assert _price(on_host, "y", "cpu") == _price(on_host, "y", "gpu") == pytest.approx(SIZE / NET)


def test_a_host_copy_elsewhere_is_read_instead_of_the_device_one() -> None:
    both = Held(("x", "y"), SIZE, "x")  # x keeps it on its GPU, y has a host copy (it fetched it)
    assert _price(both, "y", "cpu") == 0.0
    assert _price(both, "y", "gpu") == pytest.approx(COPY)  # host -> y's GPU
    assert _price(both, "x", "gpu") == 0.0
    assert _price(both, "z", "cpu") == pytest.approx(SIZE / NET)  # from y's host copy: no device copy
    links = Links(default=NET)
    links.observe("y", "z", SIZE, SIZE / 1e6)  # y -> z is slow, measured: the source is y all the same
    assert transfer_seconds(TaskInputs(0, (both,)), "z", None, links.bandwidth, 0.0) == pytest.approx(SIZE / 1e6)


def test_the_device_holder_travels_in_the_task_dict() -> None:
    inputs = TaskInputs(64, (Held(("x", "y"), SIZE, "x"), Held(("y",), MB)))
    info = inputs.info("k", "gpu")
    assert info["inputs"] == [(["x", "y"], SIZE, "x"), (["y"], MB)]
    assert parse_inputs(info) == inputs
    assert parse_inputs({"inputs": [[["x"], 5, 7]]}) == TaskInputs(0, (Held(("x",), 5),))  # junk device: none


def _dispatched(actions: list[OwnerAction]) -> dict[str, str]:
    return {t["id"]: a.node for a in actions if isinstance(a, Dispatch) for t in a.tasks}


GPU_META = {"res": {"gpu": 1},
            "ld": make_summary({"cpu": DeviceLoad(2, 2, 0.0, 1.0), "gpu": DeviceLoad(1, 1, 0.0, 1.0)})}


def _mesh(policy: Any) -> Owner:
    """An owner without a GPU and two GPU nodes x and y, otherwise equal."""
    o = Owner("owner", OwnerConfig(), policy, random.Random(0))
    o.node_up("owner", 2)
    o.node_up("x", 2, GPU_META)
    o.node_up("y", 2, GPU_META)
    return o


def _keep_on_gpu(o: Owner, tid: str, kdev: str | None = "fakegpu:0", node: str | None = None) -> str:
    """Submit GPU task ``tid`` and have ``node`` (by default, the one it was sent to) finish it, keeping a
    ``SIZE``-byte result (on its GPU when ``kdev``), as a node reports it; returns that node."""
    acts = o.submit(b"c", [{"id": tid, "fn": FN, "args": SMALL, "deps": [], "resources": {"gpu": 1}}])
    where = node or _dispatched(acts)[tid]
    result: dict[str, Any] = {"id": tid, "ok": True, "size": SIZE}
    if kdev is not None:
        result["kdev"] = kdev
    o.completed(where, [result])  # type: ignore[list-item]
    return where


def test_the_owner_records_the_device_holder_from_the_result() -> None:
    o = _mesh(make_policy("least-loaded", node_id="owner"))
    where = _keep_on_gpu(o, "big")
    assert o.tasks["big"].device_at == where
    other = "y" if where == "x" else "x"
    o.add_location("big", other)  # a fetch left a host copy there
    o.submit(b"c", [{"id": "use", "fn": FN, "args": SMALL, "deps": ["big"]}])
    inputs = o.inputs("use")
    assert inputs is not None
    assert inputs.held == (Held((where, other), SIZE, where),)
    _keep_on_gpu(o, "host", kdev=None)
    assert o.tasks["host"].device_at == ""


@pytest.mark.parametrize("policy", ["least-loaded", "eft"])
def test_a_gpu_consumer_lands_on_the_gpu_that_keeps_its_input_a_cpu_consumer_on_a_host_copy(policy: str) -> None:
    """x keeps a 600 MB result on its GPU, y holds a host copy of it; x and y are otherwise equal. A GPU consumer
    goes to x (no copy; y would copy it onto its GPU), a CPU consumer to y (x would copy it off its GPU)."""
    for seed in range(8):  # whatever the inner policy's tie-break, and with either node keeping it
        for holder, other in (("x", "y"), ("y", "x")):
            inner = EftPolicy(clock=ManualClock(), node_id="owner") if policy == "eft" else make_policy(
                policy, node_id="owner", clock=ManualClock())
            o = _mesh(inner)
            o.rng = random.Random(seed)
            _keep_on_gpu(o, "big", node=holder)
            o.add_location("big", other)
            acts = o.submit(b"c", [{"id": "g", "fn": FN, "args": SMALL, "deps": ["big"], "resources": {"gpu": 1}},
                                   {"id": "c", "fn": FN, "args": SMALL, "deps": ["big"]}])
            assert _dispatched(acts) == {"g": holder, "c": other}
