"""Host-aware placement: nodes of one machine share its cores (issue 17, docs/scheduling.md 3.4).

Three node processes on a 2-core machine are not three cores: a peer of the holder's host with a free slot is idle
compute only while the host has a free core, and moving a 100 MiB input to it costs CPU (a /dev/shm write, the
reader's page faults) on the cores the running tasks need. A node of another host is priced as before."""

from __future__ import annotations

import random

import pytest

from meshaios.clock import ManualClock
from meshaios.sched.eft import EftConfig, EftPolicy
from meshaios.sched.inputs import Links
from meshaios.sched.loadview import DeviceLoad, LoadView, make_summary
from meshaios.sched.model import RuntimeModel, task_features
from meshaios.sched.placement import Locality, NodeLoad, host_wait, make_policy

MB = 1 << 20
# a consumer of a 100 MiB input held on x, its kernel estimated at 0.5 s
TASK = {"id": "use", "fn_key": "k", "nbytes": 64, "inputs": [[["x"], 100 * MB]]}


def _policy(hosts: dict[str, str], cores: dict[str, int]) -> Locality:
    links = Links(default=125e6, local=1e9)
    links.hosts.update(hosts)
    links.cores.update(cores)
    policy = make_policy("least-loaded", node_id="o", links=links)
    assert isinstance(policy, Locality)
    return policy


def _cands() -> list[NodeLoad]:
    """The owner's node and the holder x each run a task; y, one slot like them, has none."""
    return [NodeLoad("o", 1, inflight=1), NodeLoad("x", 1, inflight=1), NodeLoad("y", 1, inflight=0)]


ONE_HOST = {"o": "h", "x": "h", "y": "h"}


def test_a_peer_of_a_host_whose_cores_are_all_busy_does_not_get_the_input_moved_to_it() -> None:
    """2 tasks on 2 cores: y's free slot is no free core. Waiting for x (0.5 s) beats 0.25 s for a core of the host
    plus the copy (0.1 s at 1 GB/s) weighed three times; the old pricing moved it (0.2 s against 0.5 s)."""
    for seed in range(6):
        assert _policy(ONE_HOST, {"h": 2}).choose(dict(TASK), _cands(), random.Random(seed)).node_id == "x"


def test_a_host_with_a_free_core_still_lends_it_to_a_peer() -> None:
    for seed in range(6):
        assert _policy(ONE_HOST, {"h": 4}).choose(dict(TASK), _cands(), random.Random(seed)).node_id == "y"


@pytest.mark.parametrize("hosts", [
    {"o": "h1", "x": "h2", "y": "h3"},  # three machines: y is real extra compute
    {},  # no host ids (the simulator, --no-shm)
])
def test_nodes_of_other_hosts_are_priced_as_without_host_cores(hosts: dict[str, str]) -> None:
    cores = {"h": 2, "h1": 2, "h2": 2, "h3": 2}
    for busy in range(8):
        cands = [NodeLoad("o", 1, inflight=1), NodeLoad("x", 1, inflight=busy), NodeLoad("y", 1, inflight=0)]
        for seed in range(4):
            got = _policy(hosts, cores).choose(dict(TASK), cands, random.Random(seed)).node_id
            assert got == _policy(hosts, {}).choose(dict(TASK), cands, random.Random(seed)).node_id


def test_without_the_host_cores_one_host_is_priced_as_before() -> None:
    for seed in range(6):
        assert _policy(ONE_HOST, {}).choose(dict(TASK), _cands(), random.Random(seed)).node_id == "y"


def test_a_holder_far_busier_than_the_host_still_gives_its_consumer_to_a_peer() -> None:
    """Host-awareness adds the host's queue to every node of it; it does not pin a task behind a long queue."""
    cands = [NodeLoad("o", 1, inflight=0), NodeLoad("x", 1, inflight=4), NodeLoad("y", 1, inflight=0)]
    assert _policy(ONE_HOST, {"h": 2}).choose(dict(TASK), cands, random.Random(0)).node_id in ("o", "y")


def test_host_wait_counts_every_node_of_the_host_against_its_cores() -> None:
    assert host_wait(1, 2, 0.5) == 0.0  # a core free
    assert host_wait(2, 2, 0.5) == pytest.approx(0.25)
    assert host_wait(5, 2, 0.5) == pytest.approx(1.0)
    assert host_wait(3, 0, 0.5) == pytest.approx(2.0)  # cores unknown as 0: one


# ---- EFT (sched/eft.py): the same host term, read through ``placement.host_tasks`` -----------------------------


def _eft(cores: dict[str, int], backlog_x: float) -> tuple[EftPolicy, list[NodeLoad]]:
    """o (the owner, 2 s of work gossiped) and x (the holder, ``backlog_x`` s) each run a task, y none; one host, 1 slot
    each; the kernel takes 0.5 s. EFT prices moving the 100 MiB input to y at 0.84 s (125 MB/s: it prices an
    unmeasured same-host pair at the network's rate)."""
    model = RuntimeModel()
    for i in range(30):
        model.learn_one(task_features("k", (1 + i % 5) * MB, "cpu"), 0.5)
    links = Links(default=125e6, local=1e9)
    links.hosts.update(ONE_HOST)
    links.cores.update(cores)
    view = LoadView()
    view.update("o", make_summary({"cpu": DeviceLoad(1, 0, 2.0)}), 100.0)
    view.update("x", make_summary({"cpu": DeviceLoad(1, 0, backlog_x)}), 100.0)
    view.update("y", make_summary({"cpu": DeviceLoad(1, 1, 0.0)}), 100.0)
    policy = EftPolicy(model, view, ManualClock(100.0), node_id="o", config=EftConfig(risk=0.0), links=links)
    return policy, _cands()


def test_eft_keeps_a_consumer_on_its_holder_while_the_host_has_no_free_core() -> None:
    """Without the host's cores y (0.84 s copy, then 0.5 s: 1.34 s) beats x (1.0 s queue, then 0.5 s); with 2 cores
    busy, y's slot waits 0.25 s for a core and its copy comes on top (1.59 s): x."""
    policy, cands = _eft({}, 1.0)
    assert policy.choose(dict(TASK), cands, random.Random(0)).node_id == "y"
    policy, cands = _eft({"h": 2}, 1.0)
    assert policy.choose(dict(TASK), cands, random.Random(0)).node_id == "x"


def test_eft_lends_a_free_core_of_the_host_to_a_peer() -> None:
    policy, cands = _eft({"h": 4}, 1.0)
    assert policy.choose(dict(TASK), cands, random.Random(0)).node_id == "y"

