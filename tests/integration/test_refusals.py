"""A node that refuses a client's message names it in its ERROR (``req``), and the client fails what the message was
sent for -- and nothing else -- with ``RequestRefused``: no future waits for ever, the node and the client carry on
(docs/protocol.md section 7). Real nodes on the in-memory transport, the client's own sends."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest
import uvloop

from meshaios.client import SUBMIT_HEADER_BYTES, AsyncClient, Future
from meshaios.errors import LimitExceeded, RequestRefused, TaskError, WireError
from meshaios.testing.inproc import InProcessMesh
from meshaios.wire import messages as M
from meshaios.wire.codec import encode
from tests.integration import funcs
from tests.integration.polling import wait_for

SMALL_HEADER = 8 << 10  # the nodes' max_header_bytes here
BIG = "x" * (20 << 10)  # rides in the SUBMIT's header (under BLOB_IN_HEADER): over SMALL_HEADER


def run(fn: Callable[[], Awaitable[Any]]) -> Any:
    return uvloop.run(asyncio.wait_for(fn(), 60))


async def settled(futs: list[Future], timeout: float = 20.0) -> list[Any]:
    """Each future's value or exception, within ``timeout``: none may hang."""
    out: list[Any] = []
    async with asyncio.timeout(timeout):
        for f in futs:
            try:
                out.append(await f)
            except Exception as exc:
                out.append(exc)
    return out


def forgotten(c: AsyncClient) -> bool:
    """Nothing of the client's work is outstanding: no pending future, task in flight or refusable SUBMIT."""
    return not c._pending and c._inflight == 0 and not c.core.pending and not any(c._refusable.values())


def test_a_submit_over_the_nodes_header_limit_fails_its_tasks_and_the_client_carries_on() -> None:
    async def main() -> None:
        async with InProcessMesh(1, max_header_bytes=SMALL_HEADER) as mesh:
            c = await mesh.client(0)
            node = mesh.nodes[0]
            bad_before = node.counters["bad_frames"]
            big = c.submit(funcs.identity, BIG)
            after = c.submit(funcs.identity, big)  # sent before the refusal came back
            [e1, e2] = await settled([big, after])
            assert isinstance(e1, RequestRefused), e1
            assert isinstance(e1, WireError)
            assert e1.task_id == big.task_id
            assert e1.node == node.node_id
            assert f"exceeds the limit of {SMALL_HEADER}" in e1.reason
            # the node never took its input: it fails there, naming it
            assert isinstance(e2, TaskError), e2
            assert e2.remote_type == "meshaios.UnknownDependency"
            assert big.task_id in e2.message
            assert node.counters["bad_frames"] == bad_before + 1
            # a later task that depends on the refused one fails at the client, without being sent
            dep = c.submit(funcs.identity, big)
            with pytest.raises(RequestRefused, match=f"dependency {big.task_id} failed"):
                await dep
            # the client and the node carry on
            assert await c.gather(c.map(funcs.square, range(20))) == [x * x for x in range(20)]
            await wait_for(lambda: forgotten(c), 10, "the refused tasks are forgotten, the SUBMITs acknowledged")

    run(main)


def test_a_streamed_submit_that_is_refused_fails_its_tasks() -> None:
    async def main() -> None:
        async with InProcessMesh(1, max_header_bytes=1 << 20) as mesh:
            c = await mesh.client(0)
            c._batch_bytes[0] = SUBMIT_HEADER_BYTES  # as with a node that does not say its limit (no WELCOME mh)
            futs = c.map(funcs.identity, ["y" * 2000] * 1500)  # one SUBMIT of ~3 MB: streamed, over 1 MiB
            results = await settled(futs)
            assert all(isinstance(r, RequestRefused) for r in results), {type(r) for r in results}
            assert "exceeds the limit" in results[0].reason
            assert not c._refusable_streamed
            assert await c.submit(funcs.square, 5) == 25
            await wait_for(lambda: forgotten(c), 10, "nothing outstanding")

    run(main)


def test_malformed_frames_on_the_clients_connection_fail_nothing(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with InProcessMesh(1) as mesh:
            c = await mesh.client(0)
            node = mesh.nodes[0]
            bad_before = node.counters["bad_frames"]
            first = c.map(funcs.slow_square, range(40), [0.005] * 40)
            conn = c._conns[0]
            conn.send([b"\xc1 not msgpack"])  # unreadable: answered with an ERROR that names nothing
            conn.send([b"\x93\x01\x02\x03"])  # not a map
            # a SUBMIT with an invalid task: refused by name, but that name (req) is none of the client's
            conn.send(encode({"t": M.SUBMIT, "req": 10**9, "tasks": [{"id": 1}]}))
            second = c.map(funcs.square, range(40))
            assert await c.gather(first) == [x * x for x in range(40)]
            assert await c.gather(second) == [x * x for x in range(40)]
            assert node.counters["bad_frames"] == bad_before + 3
            await wait_for(lambda: forgotten(c), 10, "nothing outstanding")

    with caplog.at_level(logging.ERROR, logger="meshaios.client"):
        run(main)
    refusals = [r.getMessage() for r in caplog.records if "refused a message of ours" in r.getMessage()]
    assert len(refusals) == 3, refusals  # each one answered, the last one by its req
    assert sum("(req 1000000000)" in m for m in refusals) == 1


def test_a_throttled_client_gets_an_answer_for_every_request_and_others_are_served() -> None:
    async def main() -> None:
        async with InProcessMesh(1, max_header_bytes=SMALL_HEADER) as mesh:
            c = await mesh.client(0)
            other = await mesh.client(0)
            node = mesh.nodes[0]
            strikes = node._throttle.strikes
            for i in range(strikes):  # oversized again and again: the node throttles this client
                with pytest.raises(RequestRefused, match="exceeds the limit"):
                    await c.submit(funcs.identity, BIG + str(i))
            assert node._throttle.throttled == 1
            # now its large messages are dropped unread, each answered by name; its small ones are served
            mixed = []
            for i in range(30):
                mixed.append(c.submit(funcs.square, i))
                if i % 10 == 0:
                    # one loop iteration flushes what is queued (call_soon): the large task goes in a SUBMIT of
                    # its own, between SUBMITs of small ones
                    await asyncio.sleep(0)
                    mixed.append(c.submit(funcs.total, np.full(20_000, float(i))))  # 160 kB: dropped
                    await asyncio.sleep(0)
            outcomes = await settled(mixed)
            dropped = [r for r in outcomes if isinstance(r, Exception)]
            assert len(dropped) == 3, dropped
            assert all(isinstance(r, RequestRefused) and "dropped unread" in r.reason for r in dropped), dropped
            assert [r for r in outcomes if not isinstance(r, Exception)] == [i * i for i in range(30)]
            assert node._throttle.dropped >= 3
            with pytest.raises(RequestRefused, match="dropped unread"):
                await c.put(np.zeros(20_000))  # a PUT too
            # heartbeats still answered: no failover; another client served all along
            assert await c.ping() < 5
            assert c.failovers == 0
            assert await other.gather(other.map(funcs.square, range(20))) == [x * x for x in range(20)]
            assert other.failovers == 0
            await wait_for(lambda: forgotten(c), 10, "nothing outstanding")

    run(main)


def test_refused_error_survives_pickling() -> None:
    import pickle

    e = RequestRefused("too big", "t1", "n1")
    e2 = pickle.loads(pickle.dumps(e))
    assert (e2.reason, e2.task_id, e2.node, str(e2)) == ("too big", "t1", "n1", str(e))
    assert not isinstance(e, LimitExceeded)


def test_refusals_on_a_spread_client_fail_only_the_refused_tasks_of_each_owner() -> None:
    async def main() -> None:
        async with InProcessMesh(3, max_header_bytes=SMALL_HEADER) as mesh:
            await mesh.wait_converged()
            c = await mesh.client(0, spread=3)
            await wait_for(lambda: len(c.core.shards) == 3, 10, "three owners")
            futs: list[Future] = []
            for i in range(9):  # each big task alone in its SUBMIT, between SUBMITs of small ones (see below)
                small = c.map(funcs.square, range(i * 10, i * 10 + 10))
                futs.extend(small)
                # the big one goes to the least loaded owner: with the small ones settled every owner is (or all
                # but those still holding an earlier big one), and the client takes them in turn -- while small ones
                # were in flight, all nine could go to whichever owner answered its share first
                await settled(small)
                futs.append(c.submit(funcs.identity, BIG + str(i)))
                await asyncio.sleep(0)  # one loop iteration: what is queued is flushed (call_soon)
            outcomes = await settled(futs)
            refused = [r for r in outcomes if isinstance(r, RequestRefused)]
            assert len(refused) == 9, outcomes
            assert len({r.node for r in refused}) > 1  # refused by more than one owner
            assert [r for r in outcomes if not isinstance(r, Exception)] == [x * x for x in range(90)]
            await wait_for(lambda: forgotten(c), 10, "nothing outstanding")

    run(main)


def test_many_small_tasks_fit_a_small_header_limit_that_one_submit_of_them_all_would_break() -> None:
    async def main() -> None:
        async with InProcessMesh(1, max_header_bytes=64 << 10) as mesh:
            c = await mesh.client(0)
            assert c._batch_bytes[0] == 32 << 10  # half the node's limit, from its WELCOME
            args = [str(i) * 2000 for i in range(10, 210)]  # 400 kB of arguments, all in SUBMIT headers
            assert await c.gather(c.map(funcs.identity, args)) == args
            assert mesh.nodes[0].counters["bad_frames"] == 0

    run(main)
