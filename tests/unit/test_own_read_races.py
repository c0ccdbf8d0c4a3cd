"""``io.lean.LeanReader``'s thread reads (``begin_read``/``read``/``end_read``, the sync client's caller reading its
own answer, docs/performance.md section 20) at their edges, with real ZeroMQ sockets: a thread refused while
another reads gets the loop to read once that one stops, and a reader closed while a thread reads leaves no
descriptor open. Orderings are forced with the loop held still (a blocking call on its thread), never by sleeps."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import zmq

from meshaios.io.lean import LeanReader
from tests.unit.test_lean_reader import run, wait_until


@asynccontextmanager
async def inproc_pair() -> AsyncIterator[tuple[zmq.Socket[bytes], zmq.Socket[bytes], LeanReader]]:
    """A DEALER (what the client has) read through a LeanReader, and its peer; inproc, so that a message sent is
    at the reader's side when ``send`` returns (no I/O thread in between)."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    mine, peer = ctx.socket(zmq.DEALER), ctx.socket(zmq.DEALER)
    for s in (mine, peer):
        s.setsockopt(zmq.LINGER, 0)
    name = f"inproc://own-read-{id(mine)}"
    peer.bind(name)
    mine.connect(name)
    reader = LeanReader(mine)
    try:
        yield mine, peer, reader
    finally:
        reader.close()
        mine.close()
        peer.close()
        ctx.term()


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_thread_refused_while_another_reads_has_the_loop_read_once_that_one_stops() -> None:
    """Thread A reads; thread B's ``begin_read`` is refused (one reader at a time), so B waits for the loop. When A
    stops cleanly (``give_back=False``: A expects nothing more), ``end_read`` still asks for the loop's reader
    back, and what comes for B reaches the loop."""

    async def main() -> None:
        async with inproc_pair() as (_mine, peer, reader):
            to_loop: list[bytes] = []
            reader.serve(lambda msgs: to_loop.extend(bytes(m[0]) for m in msgs), thread_reads=True)
            await asyncio.sleep(0)
            assert reader.begin_read()  # A
            refused = await asyncio.to_thread(reader.begin_read)  # B
            assert not refused
            peer.send(b"for A")
            await wait_until(lambda: reader.parked)  # the descriptor woke the loop: it stepped aside
            got = await asyncio.to_thread(reader.read, 5.0)
            assert got is not None
            assert [bytes(m[0]) for m in got] == [b"for A"]
            peer.send(b"for B")  # arrives while A still holds the socket
            again = await asyncio.to_thread(reader.end_read, False)
            assert again  # B asked meanwhile: the loop must read
            reader.unpark()
            await wait_until(lambda: to_loop == [b"for B"])

    run(main)


def test_a_reader_closed_while_a_thread_reads_leaves_no_descriptor_open() -> None:
    """Each ``serve(thread_reads=True)`` makes one pipe; closing the reader while a thread reads wakes the thread
    (``read`` returns None), later ``begin_read``s are refused, and the thread's ``end_read`` closes the pipe: over
    many rounds the process's descriptor count does not grow."""

    async def one_round() -> None:
        async with inproc_pair() as (_mine, peer, reader):
            reader.serve(lambda msgs: None, thread_reads=True)
            assert reader.begin_read()
            reading = asyncio.ensure_future(asyncio.to_thread(reader.read, 20.0))
            peer.send(b"x")
            got = await reading
            assert got is not None
            assert len(got) == 1
            reading = asyncio.ensure_future(asyncio.to_thread(reader.read, 20.0))
            await asyncio.sleep(0)
            reader.close()
            assert await asyncio.wait_for(reading, 10) is None
            assert not reader.begin_read()
            assert reader._pipe is not None  # the reading thread's until it stops
            reader.end_read(give_back=True)
            assert reader._pipe is None

    async def main() -> None:
        await one_round()
        before = _fds()
        for _ in range(20):
            await one_round()
        assert _fds() <= before

    run(main)
