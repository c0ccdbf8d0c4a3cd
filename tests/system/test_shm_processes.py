"""Same-host transfers through /dev/shm with real node processes (issue 17 item 2): a 200 MB array made on one
node and used on another arrives through shared memory, zero-copy and intact, the socket carries ~none of it, and
no file stays behind -- also when the consumer or the holder is SIGKILLed mid-transfer, or when the receiver
refuses a file (wrong mode) and the fetch falls back to the socket.

Node 1 owns the tasks (the client talks to it) and places them on itself (``--placement local``), so the 200 MB
producer runs there. Node 0 has the only (fake) GPU; the consumer asks for one, so it runs on node 0 and fetches
its input from node 1. The faults (``--shm-fault``, obeyed with ``--fault-injection`` only) stand for the crashes
that no test could time: a consumer that dies between asking and claiming, a holder that dies between writing the
file and answering."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

from meshaios.dashboard.metrics import render_metrics
from meshaios.store import shm
from meshaios.testing.localmesh import LocalMesh, wait_for
from tests.integration import funcs

pytestmark = [
    pytest.mark.usefixtures("one_owner"),  # the tests place on and read counters of the node that owns the tasks
    pytest.mark.system,
    pytest.mark.skipif(not shm.host_id(), reason="no /dev/shm on this machine"),
]

N = 200 * 2**20 // 8  # float64: 200 MB
DATA = re.compile(r"^[0-9a-f]{12}\.[0-9A-Za-z_-]+\.[0-9a-f]{8}\.[0-9a-f]{32}$")


def data_files(tag: str) -> list[str]:
    """The data files of one mesh in this user's shared-memory directory (lock files are not data)."""
    d = shm.user_dir()
    try:
        return sorted(n.name for n in d.iterdir() if DATA.match(n.name) and n.name.startswith(tag + "."))
    except FileNotFoundError:
        return []


def node_status(mesh: LocalMesh, i: int) -> dict[str, Any]:
    with mesh.client(i) as ci:
        node: dict[str, Any] = ci.status()["node"]
        return node


@contextmanager
def two_nodes(
    consumer_args: tuple[str, ...] = (), holder_args: tuple[str, ...] = ()
) -> Iterator[tuple[LocalMesh, Any, str]]:
    gpu = ["--fake-gpu", "speed=1,memory=8GiB"]
    per_node = {0: [*gpu, *consumer_args], 1: ["--placement", "local", *holder_args]}
    with LocalMesh(2, extra_args=["--no-steal"], per_node_args=per_node, startup_timeout=60) as mesh, \
            mesh.client(1) as c:
        wait_for(lambda: len(c.status()["members"]) == 1, timeout=10)
        node = c.status()["node"]
        assert node["shm"]["enabled"], "shared memory is off on the holder"
        yield mesh, c, shm.mesh_tag(node["mesh"])


def test_a_200mb_array_moves_between_two_local_nodes_through_shared_memory() -> None:
    with two_nodes() as (mesh, c, tag):
        before_files = data_files(tag)
        a = c.submit(funcs.make_array, N, 1)
        assert a.exception(timeout=120) is None
        assert a.node == mesh.by_index(1).node_id
        sent_before = node_status(mesh, 1)["transport"]["bytes_sent"]
        got = c.submit(funcs.inspect_input, a, resources={"gpu": 1})
        total, writeable, backing = got.result(timeout=120)
        assert got.node == mesh.by_index(0).node_id
        assert total == pytest.approx(float(funcs.make_array(N, 1).sum()))
        assert (writeable, backing) == (False, "mmap")  # zero-copy views of the mapping, read-only
        holder, consumer = node_status(mesh, 1), node_status(mesh, 0)
        assert (holder["shm"]["sent"], consumer["shm"]["received"]) == (1, 1)
        assert holder["shm"]["sent_bytes"] >= N * 8
        assert consumer["shm"]["received_bytes"] >= N * 8
        assert holder["transport"]["bytes_sent"] - sent_before < 1 << 20  # the socket carried the name, not the data
        assert consumer["store"]["peak_memory"] >= N * 8  # counted in the receiver's store like any fetched copy
        assert consumer["store"]["bytes_in_memory"] == 0  # and dropped once its consumer ran
        assert data_files(tag) == before_files == []  # claimed, unlinked at once
        wait_for(lambda: node_status(mesh, 1)["shm"]["files_pending"] == 0, timeout=10)
        with mesh.client(0) as c0:
            metrics = render_metrics(c0.status())  # what the node's /metrics serves
        assert 'meshaios_node_events_total{event="shm_received"} 1' in metrics
        assert re.search(r'meshaios_shm_bytes_total\{direction="received"\} [1-9]', metrics)
        del a, got


FAULT = ("--fault-injection", "--shm-fault")


@pytest.mark.parametrize(
    ("fault", "killed", "counter", "within"),
    [
        # a consumer that dies between asking and claiming: the holder removes the file when the consumer is
        # declared dead (at the latest after the claim timeout)
        ({"consumer_args": (*FAULT, "drop")}, 0, "expired", shm.CLAIM_TIMEOUT + 10),
        # a holder that dies between writing the file and answering: the survivor takes the dead holder's lock and
        # removes its files within a sweep
        ({"holder_args": (*FAULT, "keep")}, 1, "swept", shm.SWEEP_EVERY + 10),
    ],
    ids=["consumer-killed", "holder-killed"],
)
def test_a_node_killed_mid_transfer_leaves_no_file_behind(
    fault: dict[str, tuple[str, ...]], killed: int, counter: str, within: float
) -> None:
    with two_nodes(**fault) as (mesh, c, tag):
        a = c.submit(funcs.make_array, N, 2)
        assert a.exception(timeout=120) is None
        c.submit(funcs.total, a, resources={"gpu": 1})
        wait_for(lambda: len(data_files(tag)) == 1, timeout=60, what="the holder wrote the file")
        mesh.kill(killed, signal.SIGKILL)
        wait_for(lambda: data_files(tag) == [], timeout=within, what="the file removed")
        assert node_status(mesh, 1 - killed)["shm"][counter] == 1


def test_a_file_with_the_wrong_mode_is_refused_and_the_fetch_falls_back_to_the_socket() -> None:
    with two_nodes(holder_args=("--fault-injection", "--shm-fault", "mode")) as (mesh, c, tag):
        a = c.submit(funcs.make_array, N, 4)
        assert a.exception(timeout=120) is None
        got = c.submit(funcs.inspect_input, a, resources={"gpu": 1})
        total, writeable, backing = got.result(timeout=180)
        assert total == pytest.approx(float(funcs.make_array(N, 4).sum()))
        assert not writeable
        assert backing != "mmap"
        consumer = node_status(mesh, 0)
        assert (consumer["shm"]["refused"], consumer["shm"]["received"]) == (1, 0)
        assert re.search(r"shared memory from \w+ refused.*mode 0644, not 0600", mesh.log(0))
        assert data_files(tag) == []  # the holder removed the refused file when asked again
        assert node_status(mesh, 1)["transport"]["bytes_sent"] >= N * 8
        # a client of this machine refuses it too, and gets the value over the socket
        np.testing.assert_array_equal(a.result(timeout=120), funcs.make_array(N, 4))
        assert (c.stats["shm_refused"], c.stats["shm_received"]) == (1, 0)
        assert data_files(tag) == []
        # a put's replica (node 1 to node 0) is refused too, and sent over the socket: the put completes
        p = c.put(funcs.make_array(N, 7))
        assert node_status(mesh, 0)["shm"]["refused"] == 2
        assert c.submit(funcs.total, p, resources={"gpu": 1}).result(timeout=120) == pytest.approx(
            float(funcs.make_array(N, 7).sum())
        )
        assert data_files(tag) == []
        del a, got


def test_a_client_on_the_same_machine_gets_a_200mb_result_through_shared_memory() -> None:
    with two_nodes() as (mesh, c, tag):
        a = c.submit(funcs.make_array, N, 5)
        sent_before = node_status(mesh, 1)["transport"]["bytes_sent"]
        arr = a.result(timeout=120)
        np.testing.assert_array_equal(arr, funcs.make_array(N, 5))
        assert not arr.flags.writeable
        base = arr
        while isinstance(base, np.ndarray) and base.base is not None:
            base = base.base
        assert isinstance(base, memoryview)
        assert type(base.obj).__name__ == "mmap"  # zero-copy in the client too
        holder = node_status(mesh, 1)
        assert holder["shm"]["sent"] == 1
        assert holder["transport"]["bytes_sent"] - sent_before < 1 << 20
        assert c.stats["shm_received"] == 1
        assert data_files(tag) == []
        del arr, base


def test_a_client_on_the_same_machine_puts_a_200mb_array_through_shared_memory() -> None:
    with two_nodes() as (mesh, c, tag):
        before = node_status(mesh, 1)["transport"]
        ref = c.put(funcs.make_array(N, 6))
        assert c.stats["shm_sent"] == 1
        entry, replica = node_status(mesh, 1), node_status(mesh, 0)
        assert entry["shm"]["received"] == 1  # the client's node mapped the client's file
        assert entry["shm"]["received_bytes"] >= N * 8
        assert entry["shm"]["sent"] == 1  # and handed the replica to node 0 the same way
        assert replica["shm"]["received"] == 1
        assert entry["transport"]["received"] - before["received"] < 100  # names, not 200 MB of chunks
        assert entry["transport"]["bytes_sent"] - before["bytes_sent"] < 1 << 20
        assert data_files(tag) == []
        total, _, _ = c.submit(funcs.inspect_input, ref).result(timeout=120)
        assert total == pytest.approx(float(funcs.make_array(N, 6).sum()))
        client_files = re.compile(rf"^{tag}\.c[0-9a-f]{{24}}\.")  # a client's id is "c" + 24 hex digits
        assert [n for n in os.listdir(shm.user_dir()) if client_files.match(n)]  # its lock, while it runs
        c.close()  # the lock goes with it
        assert not [n for n in os.listdir(shm.user_dir()) if client_files.match(n)]


def test_a_reference_this_node_cannot_read_falls_back_to_the_socket_at_once() -> None:
    """A holder of another version names its files otherwise (the naming changed on 2026-12-04): the consumer takes
    the answer as a refusal and asks over the socket -- it used to raise on it, drop the answer, and wait out the
    fetch timeout (60 s) before declaring the input lost, which failed a DAG with ``LineageLost``."""
    with two_nodes(holder_args=("--fault-injection", "--shm-fault", "name")) as (mesh, c, tag):
        a = c.submit(funcs.make_array, N, 5)
        assert a.exception(timeout=120) is None
        got = c.submit(funcs.inspect_input, a, resources={"gpu": 1})
        total, _writeable, backing = got.result(timeout=30)  # well inside the 60 s fetch timeout
        assert total == pytest.approx(float(funcs.make_array(N, 5).sum()))
        assert backing != "mmap"
        consumer = node_status(mesh, 0)
        assert (consumer["shm"]["refused"], consumer["shm"]["received"]) == (1, 0)
        assert re.search(r"shared memory from \w+ refused.*unusable reference", mesh.log(0))
        wait_for(lambda: data_files(tag) == [], 10, what="the holder removed the file when asked again")
        del a, got
