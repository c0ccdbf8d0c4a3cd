"""The data plane with real node processes: spill, peer-to-peer DAG data, a mapper's node killed mid-shuffle."""

from __future__ import annotations

import functools
import signal
from pathlib import Path

import numpy as np
import pytest

from meshaios import TaskError
from meshaios.testing.localmesh import LocalMesh, wait_for
from tests.integration import funcs

pytestmark = pytest.mark.system


def expected_group_sum(seeds: range, rows: int) -> dict[int, int]:
    ks, vs = zip(*(funcs.keyed_chunk(rows, s) for s in seeds), strict=True)
    return funcs.group_sum(np.concatenate(ks), np.concatenate(vs))


def merged(parts: list[dict[int, int]]) -> dict[int, int]:
    out: dict[int, int] = {}
    for p in parts:
        assert not set(p) & set(out), "a key reached two reducers"
        out.update(p)
    return out


def test_shuffle_larger_than_the_store_limit_spills_and_is_exact() -> None:
    rows, chunks = 1_000_000, 12  # 192 MB of int64 keys + values against a 32 MiB store per node
    with LocalMesh(3, extra_args=["--memory-limit", "32MiB"]) as mesh, mesh.client(0) as c:
        wait_for(lambda: len(c.status()["members"]) == 2, timeout=10)
        mapper = functools.partial(funcs.keyed_chunk, rows)
        outs = c.mapreduce(mapper, funcs.group_sum, range(chunks), partitions=16)
        assert merged(c.gather(outs, timeout=300)) == expected_group_sum(range(chunks), rows)
        spills = 0
        for i in range(3):
            with mesh.client(i) as ci:
                spills += ci.status()["node"]["store"]["spill_events"]
        assert spills > 0


def test_dag_over_100mb_results_moves_peer_to_peer() -> None:
    """Node 0 owns the tasks but has no GPU; producers and consumers need one: the data never touches node 0.

    The producers' resources pin them to different nodes (one 16 GiB GPU on node 1, two 8 GiB GPUs on node 2),
    so whichever node runs the consumer must pull one 100 MB input from the other. Without the pins both producers
    may run on one node (the client spreads ownership, and each owner places its producer without seeing the other's
    in flight; one owner breaks ties between equally loaded nodes at random, and the first producer can finish
    before the second is placed), and the consumer then rightly runs where both inputs are: moving nothing is the
    correct outcome there, so the test does not depend on a schedule."""
    per_node = {1: ["--fake-gpu", "speed=4,memory=16GiB"],
                2: ["--fake-gpu", "speed=4,memory=8GiB", "--fake-gpu", "speed=4,memory=8GiB"]}
    with LocalMesh(3, per_node_args=per_node) as mesh, mesh.client(0) as c:
        wait_for(lambda: len(c.status()["members"]) == 2, timeout=10)
        n = 100 * 2**20 // 8
        a = c.submit(funcs.make_array, n, 1, resources={"gpu": 1, "gpu_memory": "12GiB"})  # node 1 alone fits
        b = c.submit(funcs.make_array, n, 2, resources={"gpu": 2})  # node 2 alone fits
        t = c.submit(funcs.total, a, b, resources={"gpu": 1})
        expected = float(funcs.make_array(n, 1).sum()) + float(funcs.make_array(n, 2).sum())
        assert t.result(timeout=300) == pytest.approx(expected)
        one, two = mesh.by_index(1).node_id, mesh.by_index(2).node_id
        assert (a.node, b.node) == (one, two)
        assert t.node in (one, two)
        me = c.status()["node"]
        assert me["counters"].get("fetched_bytes", 0) == 0
        assert me["counters"].get("served_bytes", 0) == 0
        assert me["store"]["objects"] == 0
        fetched: dict[str, int] = {}
        for i in (1, 2):
            with mesh.client(i) as ci:
                fetched[mesh.by_index(i).node_id] = ci.status()["node"]["counters"].get("fetched_bytes", 0)
        assert fetched[t.node] >= n * 8  # the consumer's node pulled the other producer's 100 MB array
        futs = [c.submit(funcs.square, i, resources={"gpu": 1}) for i in range(30)]
        assert c.gather(futs, timeout=60) == [i * i for i in range(30)]
        assert {f.node for f in futs} <= {one, two}
        with pytest.raises(TaskError, match=r"gpu_memory=32\.0GiB.*16\.0GiB"):
            c.submit(funcs.square, 2, resources={"gpu": 1, "gpu_memory": "32GiB"}).result(timeout=10)


def test_sigkill_of_a_mapper_node_mid_shuffle_still_gives_the_exact_answer() -> None:
    rows, chunks = 200_000, 24
    with LocalMesh(3) as mesh, mesh.client(0, spread=1) as c:  # node 0 owns it all: its counters say what happened
        wait_for(lambda: len(c.status()["members"]) == 2, timeout=10)
        mapper = functools.partial(funcs.slow_chunk, rows=rows, delay=0.15)
        outs = c.mapreduce(mapper, funcs.group_sum, range(chunks), partitions=8)
        wait_for(lambda: c.status()["node"]["owner"]["done"] >= 6, timeout=60, what="some maps done")
        mesh.kill(2, signal.SIGKILL)
        assert merged(c.gather(outs, timeout=300)) == expected_group_sum(range(chunks), rows)
        owner = c.status()["node"]["owner"]
        assert owner["replaced"] + owner["recomputed"] > 0


def test_a_chain_goes_on_before_the_next_chain_starts_on_a_one_slot_node(tmp_path: Path, one_owner: None) -> None:
    """Graph order (docs/scheduling.md section 10.4), on real processes: two chains x -> s -> m over 2 MiB arrays,
    all on node 1 (the only GPU node, one slot). Whenever s2 reaches the owner, node 1 starts m0 before it: while
    s0 runs, s2 would only queue behind it and s0's finish makes m0 ready, so the owner holds s2 back (without
    that, s2 starts as soon as s0 ends: s0 s2 m0 m2). One owner (``one_owner``): the hold sees that owner's tasks
    only. Asserts the order of starts, not their times."""
    log = str(tmp_path / "log")
    with LocalMesh(2, workers=1, per_node_args={1: ["--fake-gpu", "speed=4,memory=8GiB"]}) as mesh, \
            mesh.client(0) as c:
        wait_for(lambda: len(c.status()["members"]) == 1, timeout=10)
        gpu = {"gpu": 1}
        xs = [c.submit(funcs.make_array, 2**18, k, resources=gpu) for k in (0, 2)]
        c.gather(xs, timeout=60)
        names: dict[str, str] = {}
        ms = []
        for k, x in zip((0, 2), xs, strict=True):
            s = c.submit(funcs.sum_after_sleep_and_log, k, x, 0.5, log, resources=gpu)
            m = c.submit(funcs.square, s, resources=gpu)
            names[s.key], names[m.key] = f"s{k}", f"m{k}"
            ms.append(m)
        sums = [float(funcs.make_array(2**18, k).sum()) for k in (0, 2)]
        assert c.gather(ms, timeout=60) == pytest.approx([v * v for v in sums])
        with mesh.client(1) as c1:
            rows = [r for r in c1.status()["node"]["timeline"] if r["task"] in names and r["started"] is not None]
        assert [names[r["task"]] for r in sorted(rows, key=lambda r: r["started"])] == ["s0", "m0", "s2", "m2"]


def test_a_chain_drops_each_intermediate_when_its_last_user_succeeds(tmp_path: Path) -> None:
    """Issue 17 (docs/performance.md section 15), on a real node: s -> r over a 16 MiB array, the client keeping
    only r. The client releases s once it has s's result, without waiting for r (sent to the same owner), so the
    owner tells the node that r, running there, is s's last reader (a FREE with ``after``) and the node drops s
    the moment r succeeds (counter ``inputs_dropped_at_finish``; before, s stayed until a FREE came back after r's
    result had reached the client and its RELEASE the owner). r takes 0.5 s, long enough for that release to reach
    the owner while r runs. Asserts counts, not times."""
    log = str(tmp_path / "log")
    with LocalMesh(1, workers=1) as mesh, mesh.client(0) as c:
        n = 2**21
        r = c.submit(funcs.sum_after_sleep_and_log, 0, c.submit(funcs.make_array, n, 7), 0.5, log)
        assert r.result(timeout=60) == pytest.approx(float(funcs.make_array(n, 7).sum()))
        assert c.status()["node"]["counters"].get("inputs_dropped_at_finish", 0) == 1
        wait_for(lambda: c.status()["node"]["store"]["objects"] == 0, timeout=10, what="the store empty")
