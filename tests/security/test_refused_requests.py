"""Refusals over real sockets: a node process with a small ``max_header_bytes`` and a CURVE client. Each refused
request's future fails with ``RequestRefused`` naming the node's reason, garbage on the client's own connection fails
nothing, a throttled client still gets an answer for every request (and its heartbeats), and the node serves
everyone meanwhile (docs/protocol.md section 7; the in-process twin is tests/integration/test_refusals.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import uvloop

from meshaios.client import AsyncClient
from meshaios.errors import RequestRefused
from meshaios.testing.localmesh import LocalMesh
from tests.integration import funcs

LIMIT = 8 << 10
BIG = "x" * (20 << 10)  # rides in the SUBMIT's header: over LIMIT


@pytest.fixture(scope="module")
def small_node() -> Iterator[LocalMesh]:
    with LocalMesh(1, discovery=False, workers=2, env={"MESHAIOS_MAX_HEADER_BYTES": str(LIMIT)}) as mesh:
        yield mesh


async def outcome(fut: Any) -> Any:
    try:
        return await fut
    except Exception as exc:
        return exc


def test_refused_requests_fail_by_name_over_real_sockets(small_node: LocalMesh) -> None:
    async def main() -> None:
        async with (
            AsyncClient(small_node.address(0), token=small_node.token) as c,
            AsyncClient(small_node.address(0), token=small_node.token) as other,
        ):
            # (a) a single task over the node's header limit
            big_fut = c.submit(funcs.identity, BIG)
            big = await outcome(big_fut)
            assert isinstance(big, RequestRefused), big
            assert f"exceeds the limit of {LIMIT}" in big.reason
            assert await c.submit(funcs.square, 3) == 9
            # (b) garbage on the client's own connection, amid normal work: nothing fails
            work = c.map(funcs.square, range(30))
            c._conns[0].send([b"\xc1 not msgpack"])
            c._conns[0].send([b"\x93\x01\x02\x03", b"a stray frame"])
            assert await c.gather(work) == [x * x for x in range(30)]
            # (c) throttled after repeated oversized SUBMITs: every request still gets an answer, by name
            for i in range(4):
                assert isinstance(await outcome(c.submit(funcs.identity, BIG + str(i))), RequestRefused)
            dropped = await outcome(c.submit(funcs.total, np.ones(20_000)))  # 160 kB: over 64 KiB, dropped unread
            assert isinstance(dropped, RequestRefused), dropped
            assert "dropped unread" in dropped.reason
            assert await c.gather(c.map(funcs.square, range(10))) == [x * x for x in range(10)]
            assert await c.ping() < 5  # its heartbeats are answered: no failover
            assert c.failovers == 0
            assert await other.gather(other.map(funcs.square, range(10))) == [x * x for x in range(10)]
            view = (await other.status())["node"]
            assert view["throttle"]["peers"] == 1
            assert view["throttle"]["dropped"] >= 1
            # a dependent of a refused task, submitted after the refusal: fails here, never sent
            with pytest.raises(RequestRefused, match="dependency"):
                await c.submit(funcs.identity, big_fut)

    uvloop.run(asyncio.wait_for(main(), 60))
