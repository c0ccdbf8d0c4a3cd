"""``io.lean.LeanReader``: a ROUTER read through one descriptor reader, real ZeroMQ sockets over loopback TCP.
What must hold: no message is lost or left asleep -- also when a send on the same socket consumed the descriptor's
signal -- batches drain what is there, and ``close`` cancels a waiting read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvloop
import zmq

from meshaios.io.lean import _EVENTS, _POLLIN, LeanReader, _get, recv_frames, send_frames


def run(fn: Callable[[], Awaitable[Any]]) -> Any:
    return uvloop.run(asyncio.wait_for(fn(), 30))


@asynccontextmanager
async def pair() -> AsyncIterator[tuple[zmq.Socket[bytes], zmq.Socket[bytes], LeanReader]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    router, dealer = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    for s in (router, dealer):
        s.setsockopt(zmq.LINGER, 0)
    dealer.setsockopt(zmq.ROUTING_ID, b"d")
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer.connect(f"tcp://127.0.0.1:{port}")
    reader = LeanReader(router)
    try:
        yield router, dealer, reader
    finally:
        reader.close()
        router.close()
        dealer.close()
        ctx.term()


async def dealer_recv(dealer: zmq.Socket[bytes]) -> list[bytes]:
    while True:
        try:
            return dealer.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            await asyncio.sleep(0.001)


def test_round_trips_one_at_a_time_never_stall() -> None:
    async def main() -> None:
        async with pair() as (router, dealer, reader):
            for i in range(500):
                dealer.send_multipart([b"ping", str(i).encode()])
                (msg,) = await reader.recv_batch(16)
                assert [bytes(f) for f in msg] == [b"d", b"ping", str(i).encode()]
                router.send_multipart([b"d", b"pong", str(i).encode()], zmq.NOBLOCK)
                reader.sent()
                assert await dealer_recv(dealer) == [b"pong", str(i).encode()]

    run(main)


def test_a_batch_drains_what_is_there_up_to_the_limit() -> None:
    async def main() -> None:
        async with pair() as (_router, dealer, reader):
            for i in range(10):
                dealer.send_multipart([str(i).encode()])
            got: list[bytes] = []
            while len(got) < 10:
                batch = await reader.recv_batch(4)
                assert 1 <= len(batch) <= 4
                got += [bytes(m[1]) for m in batch]
            assert got == [str(i).encode() for i in range(10)]

    run(main)


def test_a_send_that_consumes_the_signal_still_wakes_the_waiting_reader() -> None:
    async def main() -> None:
        async with pair() as (router, dealer, reader):
            dealer.send_multipart([b"hello"])
            assert len(await reader.recv_batch(8)) == 1
            waiting = asyncio.ensure_future(reader.recv_batch(8))
            await asyncio.sleep(0.01)  # the reader waits on the descriptor
            dealer.send_multipart([b"second"])
            # before the loop sees the descriptor, a send on the router processes libzmq's commands: the message's
            # signal is gone, and only ``sent()`` can tell the reader
            for _ in range(200):
                router.send_multipart([b"d", b"x"], zmq.NOBLOCK)
                reader.sent()
                if waiting.done():
                    break
                await asyncio.sleep(0.001)
            (msg,) = await waiting
            assert bytes(msg[1]) == b"second"

    run(main)


def test_close_cancels_a_waiting_read() -> None:
    async def main() -> None:
        async with pair() as (_router, _dealer, reader):
            waiting = asyncio.ensure_future(reader.recv_batch(8))
            await asyncio.sleep(0.01)
            reader.close()
            with pytest.raises(asyncio.CancelledError):
                await waiting

    run(main)


def test_served_batches_reach_the_handler_in_order_up_to_the_limit_and_replies_never_stall() -> None:
    async def main() -> None:
        async with pair() as (router, dealer, reader):
            for i in range(10):  # waiting before ``serve``: drained at once, at most ``limit`` per call
                dealer.send_multipart([str(i).encode()])
            await asyncio.sleep(0.05)
            batches: list[list[bytes]] = []
            replies = 0
            ten = asyncio.Event()

            def handler(msgs: list[list[Any]]) -> None:
                nonlocal replies
                batches.append([bytes(m[1]) for m in msgs])
                if sum(map(len, batches)) >= 10:
                    ten.set()
                for m in msgs:
                    if bytes(m[1]) == b"ping":
                        router.send_multipart([b"d", b"pong", bytes(m[2])], zmq.NOBLOCK)
                        reader.sent()
                        replies += 1

            reader.serve(handler, limit=4)
            await ten.wait()
            assert all(1 <= len(b) <= 4 for b in batches)
            assert [x for b in batches for x in b] == [str(i).encode() for i in range(10)]
            for i in range(300):  # one at a time: each answer comes from the handler, none waits for a timer
                dealer.send_multipart([b"ping", str(i).encode()])
                assert await asyncio.wait_for(dealer_recv(dealer), 5) == [b"pong", str(i).encode()]
            assert replies == 300
            reader.unserve()
            dealer.send_multipart([b"after"])
            await asyncio.sleep(0.05)
            assert batches[-1] != [b"after"]  # unserved: nothing more reaches the handler

    run(main)


def test_a_send_that_consumes_the_signal_still_reaches_the_served_handler() -> None:
    async def main() -> None:
        async with pair() as (router, dealer, reader):
            got: list[bytes] = []
            first = asyncio.Event()

            def handler(msgs: list[list[Any]]) -> None:
                got.extend(bytes(m[1]) for m in msgs)
                first.set()

            reader.serve(handler)
            dealer.send_multipart([b"hello"])
            await first.wait()
            dealer.send_multipart([b"second"])
            for _ in range(200):  # sends on the router may take the message's signal: ``sent()`` drains it
                router.send_multipart([b"d", b"x"], zmq.NOBLOCK)
                reader.sent()
                if len(got) == 2:
                    break
                await asyncio.sleep(0.001)
            assert got == [b"hello", b"second"]

    run(main)


def test_a_message_whose_signal_a_handler_send_took_still_reaches_the_served_handler() -> None:
    """A socket only the loop reads is served a message at a time (``_drain_each``), and the handler's sends leave
    their ``ZMQ_EVENTS`` read to the drain: a message that arrived while the handler ran, its signal taken by the
    handler's own calls on the socket, is handed over all the same, with no other message to wake the loop."""

    async def main() -> None:
        async with pair() as (router, dealer, reader):
            got: list[bytes] = []
            done = asyncio.Event()

            def handler(msgs: list[list[Any]]) -> None:
                assert len(msgs) == 1  # one at a time
                body = bytes(msgs[0][1])
                got.append(body)
                if body == b"first":
                    dealer.send_multipart([b"second"])
                    # the router processes libzmq's commands (the descriptor's signal of "second" goes with them)
                    assert router.poll(5000, zmq.POLLIN)
                if body == b"second":
                    done.set()
                router.send_multipart([b"d", body], zmq.NOBLOCK)
                reader.sent()

            reader.serve(handler)
            dealer.send_multipart([b"first"])
            await asyncio.wait_for(done.wait(), 5)
            assert got == [b"first", b"second"]
            assert [await dealer_recv(dealer), await dealer_recv(dealer)] == [[b"first"], [b"second"]]

    run(main)


def test_messages_behind_one_whose_handler_raised_still_reach_the_served_handler() -> None:
    async def main() -> None:
        async with pair() as (_router, dealer, reader):
            for body in (b"a", b"boom", b"b", b"c"):
                dealer.send_multipart([body])
            got: list[bytes] = []
            three = asyncio.Event()
            errors: list[BaseException] = []
            asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx["exception"]))

            def handler(msgs: list[list[Any]]) -> None:
                body = bytes(msgs[0][1])
                if body == b"boom":
                    raise RuntimeError("boom")
                got.append(body)
                if len(got) == 3:
                    three.set()

            reader.serve(handler)
            await asyncio.wait_for(three.wait(), 5)
            assert got == [b"a", b"b", b"c"]
            assert [str(e) for e in errors] == ["boom"]

    run(main)


def test_send_frames_and_recv_frames_carry_a_message_whole_or_not_at_all() -> None:
    """The frame-by-frame send and receive with int flags (``send_frames``, ``recv_frames``) carry what
    ``send_multipart``/``recv_multipart`` carry: bytes, memoryviews, a buffer over pyzmq's copy threshold (sent
    without a copy) and ``zmq.Frame``s, the ROUTER's routing id first; a frame that is not a buffer raises before any
    frame leaves, so the next message arrives intact; a full queue raises ``zmq.Again`` with nothing sent."""
    big = bytearray(range(256)) * 1024  # 256 KiB: over the copy threshold
    frames: list[Any] = [b"head", memoryview(b"view"), big, zmq.Frame(b"frame"), b""]

    async def main() -> None:
        async with pair() as (router, dealer, reader):
            send_frames(dealer, frames)
            (msg,) = await reader.recv_batch(16)
            assert [bytes(f) for f in msg] == [b"d", b"head", b"view", bytes(big), b"frame", b""]
            with pytest.raises(TypeError):
                send_frames(router, [b"ok", object()], b"d")
            send_frames(router, [b"one"], b"d")
            send_frames(router, [b"two", b"2"], b"d")
            got = []
            while len(got) < 2:
                if _get(dealer, _EVENTS) & _POLLIN:
                    got.append([bytes(f) for f in recv_frames(dealer)])
                else:
                    await asyncio.sleep(0.001)
            assert got == [[b"one"], [b"two", b"2"]]
            with pytest.raises(zmq.Again):
                recv_frames(dealer)

    run(main)


def test_a_thread_reading_the_socket_gets_every_message_and_gives_the_socket_back() -> None:
    """``begin_read`` .. ``end_read`` (the sync client's caller reading its own answer): meanwhile the messages go to
    the reading thread, none to the served handler, also when a send of the loop's consumed their signal (the
    thread is woken, it does not wait out its timeout); afterwards the handler gets what the thread read (once, in
    order: the thread only looked at it) and what comes, and a closed reader stops a reading thread."""

    async def main() -> None:
        async with pair() as (router, dealer, reader):
            to_loop: list[bytes] = []
            reader.serve(lambda msgs: to_loop.extend(bytes(m[1]) for m in msgs))
            assert not reader.begin_read()  # served for the loop alone
            reader.serve(lambda msgs: to_loop.extend(bytes(m[1]) for m in msgs), thread_reads=True)
            dealer.send_multipart([b"before"])
            await wait_until(lambda: to_loop == [b"before"])
            assert reader.begin_read()
            assert not await asyncio.to_thread(reader.begin_read)  # one reading thread at a time

            def read_one() -> list[bytes]:
                batch = reader.read(20.0)  # a stall would wait this long and return []
                assert batch, "the reading thread was not woken"
                return [bytes(m[1]) for m in batch]

            reading = asyncio.ensure_future(asyncio.to_thread(read_one))
            await asyncio.sleep(0.01)
            dealer.send_multipart([b"a"])
            assert await reading == [b"a"]

            reading = asyncio.ensure_future(asyncio.to_thread(read_one))
            await asyncio.sleep(0.01)
            dealer.send_multipart([b"b"])
            for _ in range(200):  # the loop's sends may take the message's signal: ``sent()`` wakes the reader
                with reader.lock:
                    router.send_multipart([b"d", b"x"], zmq.NOBLOCK)
                    reader.sent()
                if reading.done():
                    break
                await asyncio.sleep(0.001)
            assert await reading == [b"b"]
            assert to_loop == [b"before"]  # nothing reached the loop meanwhile

            if reader.end_read(give_back=False):
                reader.unpark()
            dealer.send_multipart([b"after"])
            with reader.lock:  # the loop's next send puts a parked reader back on the loop
                router.send_multipart([b"d", b"y"], zmq.NOBLOCK)
                reader.sent()
            # what the thread read is the loop's to take in too, once, in order, before what came after it
            await wait_until(lambda: to_loop == [b"before", b"a", b"b", b"after"])
            assert reader.take_kept() == []

            assert reader.begin_read()
            reading = asyncio.ensure_future(asyncio.to_thread(reader.read, 20.0))
            await asyncio.sleep(0.01)
            reader.close()
            assert await asyncio.wait_for(reading, 5) is None
            reader.end_read(give_back=True)  # closes the reading thread's pipe

    run(main)


def test_send_frames_refuses_a_full_queue_with_nothing_sent() -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    try:
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.setsockopt(zmq.SNDHWM, 1)
        dealer.connect("tcp://127.0.0.1:1")  # nobody there: messages queue until the high-water mark
        sent = 0
        for _ in range(100):
            try:
                send_frames(dealer, [b"a", b"b"])
            except zmq.Again:
                break
            sent += 1
        else:
            pytest.fail("a full queue took every message")
        assert sent >= 1
    finally:
        dealer.close()
        ctx.term()


async def wait_until(cond: Callable[[], bool]) -> None:
    for _ in range(5000):
        if cond():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("not within 5 s")
