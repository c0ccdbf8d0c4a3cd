"""Simulated hosts: several nodes of one machine share its cores and a same-host link (issue 17,
docs/scheduling.md 6.7), placed by the node's own code (``Locality``, ``EftPolicy``) reading the host's cores from
``Links`` as ``node.py`` fills it.

Seeded and deterministic: comparisons of schedules (bytes moved, cores held), not of timings."""

from __future__ import annotations

import pytest

from meshaios.sched.eft import EftPolicy
from meshaios.sched.placement import Locality
from meshaios.sim.engine import SimConfig, SimResult, Simulation
from meshaios.sim.workloads import bench_dag, heterogeneous_cluster, make_workload, on_hosts, uniform_cluster

MB = 1 << 20


def _dag_on_one_host(policy: str, nodes: int = 3, aware: bool = True, copies: int = 10) -> SimResult:
    """``tools/bench``'s DAG ``copies`` times on ``nodes`` one-worker nodes of one 2-core host."""
    return Simulation(on_hosts(uniform_cluster(nodes), nodes, 2), bench_dag(19 * copies),
                      SimConfig(policy=policy, host_aware=aware)).run()


def test_knowing_the_hosts_cores_moves_fewer_bytes_between_its_nodes() -> None:
    """Three nodes on two cores, the default placement: a free slot is no free core while two tasks run, so
    consumers stay with their inputs instead of being handed over through /dev/shm (whose copy takes a core from
    the running tasks)."""
    aware, blind = _dag_on_one_host("least-loaded"), _dag_on_one_host("least-loaded", aware=False)
    for r in (aware, blind):
        assert r.completed == r.tasks == 190
        assert r.duplicate_executions == 0
        assert r.bytes_moved - MB < r.host_bytes < r.bytes_moved  # every input moved within the host (RUNs: inline)
    assert aware.bytes_moved < 0.9 * blind.bytes_moved


def test_a_host_never_runs_more_tasks_and_copies_than_its_cores() -> None:
    for policy in ("least-loaded", "eft"):
        r = _dag_on_one_host(policy)
        assert r.host_peak == 2


@pytest.mark.parametrize("policy", ["least-loaded", "eft"])
def test_the_owner_places_with_the_hosts_cores_in_its_links(policy: str) -> None:
    """What the simulator hands the node's placement code: every node's host id, and its own host's cores."""
    sim = Simulation(on_hosts(uniform_cluster(3), 3, 2), bench_dag(19), SimConfig(policy=policy))
    owner = sim.nodes[sim.owner_ids[0]]
    assert owner.links is not None
    assert owner.links.hosts == {"n000": "h0", "n001": "h0", "n002": "h0"}
    assert owner.links.cores == {"h0": 2}
    placer = owner.owner.policy.inner if owner.owner is not None else None  # the simulator's timer wraps it
    assert isinstance(placer, Locality | EftPolicy)
    assert placer.links is owner.links
    steal = sim.nodes["n001"].core.steal
    assert steal.link_bandwidth is not None
    assert steal.link_bandwidth("n002") == owner.links.local  # a thief of its host takes inputs through /dev/shm


def test_one_node_per_host_is_the_simulator_as_before() -> None:
    """``on_hosts(..., 1)`` gives no host ids: same schedule, to the byte, as the plain cluster."""
    nodes = heterogeneous_cluster(12, 0)
    a = Simulation(nodes, make_workload("dag", 300, 0), SimConfig(policy="eft")).run()
    b = Simulation(on_hosts(nodes, 1, 2), make_workload("dag", 300, 0), SimConfig(policy="eft")).run()
    assert (a.makespan, a.bytes_moved, a.events, b.host_bytes) == (b.makespan, b.bytes_moved, b.events, 0)
