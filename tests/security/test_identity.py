"""Identities that cannot be borrowed on an insecure node (issue 14). Another local process that connected with a
victim's client id (it was on ``/api/status``) took over the victim's connection -- ZeroMQ's router handover --,
received its results and cut it off for 5 s. Now an insecure node has no handover (``ZmqOptions.router_handover``)
and status pages show a label per client, never its id."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import uvloop
import zmq

from meshaios.client import AsyncClient
from meshaios.testing.localmesh import LocalMesh
from meshaios.wire import messages as M
from meshaios.wire.codec import decode, encode
from tests.security import canary

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def insecure() -> Iterator[LocalMesh]:
    with LocalMesh(1, insecure=True, discovery=False, extra_args=["--allow-module", "tests.security.canary"]) as m:
        yield m


def test_a_borrowed_client_id_gets_nothing(insecure: LocalMesh, zctx: zmq.Context[Any]) -> None:
    with insecure.client(0) as victim:
        assert victim.submit(canary.noop, 0).result(timeout=10) == 0
        pending = [victim.submit(canary.slow, 0.3) for _ in range(4)]
        thief = zctx.socket(zmq.DEALER)
        thief.setsockopt(zmq.LINGER, 0)
        thief.setsockopt(zmq.ROUTING_ID, b"c:" + victim._async.client_id.encode())
        thief.connect(insecure.address(0))
        thief.send_multipart(encode({"t": M.HELLO, "client": victim._async.client_id}))
        t0 = time.monotonic()
        # the victim keeps its connection and its results, without a pause
        assert [f.result(timeout=10) for f in pending] == [None] * 4
        assert [victim.submit(canary.noop, i).result(timeout=5) for i in range(20)] == list(range(20))
        assert time.monotonic() - t0 < 4
        stolen = []
        while thief.poll(300):
            stolen.append(decode(thief.recv_multipart()))
        assert stolen == []  # not even a welcome: the connection with a taken id was refused


def test_status_pages_do_not_publish_client_ids(insecure: LocalMesh) -> None:
    with insecure.client(0) as c:
        f = c.submit(canary.slow, 2.0)  # a job in flight, so that /api/status lists it
        url = c.status()["node"]["http"]
        with urllib.request.urlopen(url + "/api/status", timeout=5) as r:
            body = r.read().decode()
        f.result(timeout=10)
    assert '"jobs"' in body
    assert c._async.client_id not in body
    assert c._async.client_id[:10] not in body  # nor a prefix of it


def test_a_client_naming_a_node_in_a_free_frees_nothing(insecure: LocalMesh) -> None:
    """Only owners free copies (``free``, node to holder), and a node's messages arrive with its own identity: a
    connection that names another node as ``src`` is refused like one naming another in a ``claim``."""

    async def main() -> tuple[float, int, int]:
        async with AsyncClient(insecure.address(0), insecure=True) as c:
            put = await c.put(np.ones(1 << 17))  # 1 MiB: stored on the node, not inline
            before = (await c.status())["node"]["counters"].get("bad_frames", 0)
            node_id = insecure.procs[0].node_id
            c._conns[0].send(encode({"t": M.FREE, "src": node_id, "ids": [put.key]}))
            total = await c.submit(canary.total, put)  # served after the forged free: the copy is still there
            after = (await c.status())["node"]["counters"].get("bad_frames", 0)
            return total, before, after

    total, before, after = uvloop.run(main())
    assert total == float(1 << 17)
    assert after == before + 1
