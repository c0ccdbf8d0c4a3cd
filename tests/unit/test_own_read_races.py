"""``io.lean.LeanReader``'s thread reads (``begin_read``/``read``/``end_read``, the sync client's caller reading its
own answer, docs/performance.md section 20) at their edges, with real ZeroMQ sockets: a thread refused while
another reads gets the loop to read once that one stops, and a reader closed while a thread reads leaves no
descriptor open. Orderings are forced with the loop held still (a blocking call on its thread), never by sleeps."""

from __future__ import annotations

import asyncio
import linecache
import os
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

import pytest
import zmq

import meshaios.io.lean as lean
from meshaios.io.lean import LeanReader, send_frames
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
            await wait_until(lambda: to_loop == [b"for A", b"for B"])  # what A read is the loop's to take in too

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


def test_messages_a_reading_thread_leaves_past_its_limit_reach_the_loop() -> None:
    """More messages wait than one ``read`` takes (the reader's limit, 256) while the loop's reader callback has
    not run since ``begin_read`` (the loop was busy): the thread took the descriptor's signal, so the loop is
    never woken for the rest. ``end_read`` asks for the loop's reader (the client calls ``recheck`` then)."""

    async def main() -> None:
        async with inproc_pair() as (_mine, peer, reader):
            to_loop: list[bytes] = []
            reader.serve(lambda msgs: to_loop.extend(bytes(m[0]) for m in msgs), thread_reads=True)
            await asyncio.sleep(0.01)
            for i in range(300):
                peer.send(b"%d" % i)
            out: dict[str, object] = {}

            def caller() -> None:  # the sync client's caller: begin_read, read, hand back, end_read
                assert reader.begin_read()
                got = reader.read(5.0)
                out["n"] = len(got or [])
                out["again"] = reader.end_read(give_back=True)

            t = threading.Thread(target=caller)
            t.start()
            t.join()  # the loop's thread is busy meanwhile: its reader callback does not run
            assert out["n"] == 256
            assert out["again"]
            with reader.lock:  # what the client's ``recheck`` does on the loop
                reader.sent()
            await wait_until(lambda: len(to_loop) == 300)  # the thread's 256 (it only looked at them), then the rest
            assert to_loop == [b"%d" % i for i in range(300)]

    run(main)


def _line(frame: FrameType) -> str:
    return linecache.getline(frame.f_code.co_filename, frame.f_lineno)


def test_a_poke_racing_the_reading_threads_end_read_after_close_does_not_raise() -> None:
    """The loop pokes the reading thread (``ZmqConnection.poke``, when it settles the caller's future) just as that
    thread's ``end_read`` closes the pipe (its reader was closed meanwhile): the poke holds the reader's lock, so
    it writes into the pipe before it is closed, never into a closed (perhaps reused) descriptor nor ``None``."""

    async def main() -> None:
        async with inproc_pair() as (_mine, _peer, reader):
            reader.serve(lambda msgs: None, thread_reads=True)
            assert reader.begin_read()  # the caller reads ...
            reader.close()  # ... its connection is closed (a failover): the pipe stays the thread's until it stops
            at_write, go = threading.Event(), threading.Event()
            errors: list[BaseException] = []

            def tracer(frame: FrameType, event: str, arg: Any) -> Any:
                if frame.f_code.co_name == "_poke" and event == "line" and "os.write" in _line(frame):
                    at_write.set()  # past the ``is not None`` check, about to index ``self._pipe``
                    go.wait(10)
                return tracer

            def poke() -> None:  # the loop settling the caller's future: ``direct[0].poke()``
                sys.settrace(tracer)
                try:
                    reader.poke()
                except BaseException as exc:
                    errors.append(exc)
                finally:
                    sys.settrace(None)

            t = threading.Thread(target=poke)
            t.start()
            assert await asyncio.to_thread(at_write.wait, 10)
            ender = threading.Thread(target=reader.end_read, args=(True,))  # the reading thread stops
            ender.start()

            def ended_or_waits() -> bool:  # done (the poke held no lock), or waiting for the poke's lock
                frame = sys._current_frames().get(ender.ident or 0)
                return not ender.is_alive() or (
                    frame is not None and frame.f_code.co_name == "end_read" and "self.lock" in _line(frame)
                )

            await wait_until(ended_or_waits)
            go.set()
            t.join(10)
            ender.join(10)
            assert not errors, errors
            assert reader._pipe is None

    run(main)


def test_an_interrupt_between_the_frames_of_a_message_sent_completes_it() -> None:
    """A Ctrl-C between two frames of a message (``send_frames``, the sync client's caller sending a SUBMIT): the
    message goes whole before the ``KeyboardInterrupt`` leaves (marked ``sent_whole``), and the next message is
    received apart from it, not glued onto it."""

    async def main() -> None:
        async with inproc_pair() as (mine, peer, _reader):
            orig = lean._send
            calls = [0]

            def send(sock: Any, frame: Any, flags: int, copy: bool) -> Any:
                out = orig(sock, frame, flags, copy)
                calls[0] += 1
                if calls[0] == 2:
                    raise KeyboardInterrupt  # as the signal handler raises right after a call returns
                return out

            lean._send = send
            try:
                with pytest.raises(KeyboardInterrupt) as info:
                    send_frames(mine, [b"b", b"c", b"d"], b"a")
            finally:
                lean._send = orig
            assert getattr(info.value, "sent_whole", False)
            send_frames(mine, [b"next"])
            assert peer.recv_multipart() == [b"a", b"b", b"c", b"d"]
            assert peer.recv_multipart() == [b"next"]

    run(main)


def test_an_interrupt_while_a_thread_takes_messages_leaves_them_whole_for_the_loop() -> None:
    """A Ctrl-C while the reading thread receives, between two frames of a message, after a whole one: neither is
    lost nor split; ``end_read`` asks for the loop's reader, and the loop gets both whole, then what follows."""

    async def main() -> None:
        async with inproc_pair() as (_mine, peer, reader):
            to_loop: list[list[bytes]] = []
            reader.serve(lambda msgs: to_loop.extend([bytes(f) for f in m] for m in msgs), thread_reads=True)
            await asyncio.sleep(0.01)
            peer.send(b"one")
            peer.send_multipart([b"two", b"2", b"two"])
            peer.send(b"three")
            orig = lean._recv
            calls = [0]

            def recv(sock: Any, flags: int, copy: bool) -> Any:
                calls[0] += 1
                if calls[0] == 3:  # after "one" and the first frame of "two": the signal lands between calls
                    raise KeyboardInterrupt
                return orig(sock, flags, copy)

            out: dict[str, object] = {}

            def caller() -> None:
                assert reader.begin_read()
                lean._recv = recv
                try:
                    reader.read(5.0)
                except KeyboardInterrupt:
                    out["interrupted"] = True
                finally:
                    lean._recv = orig
                out["again"] = reader.end_read(give_back=False)

            def next_caller() -> None:  # begins, and is stopped before it reads: what is kept is still the loop's
                assert reader.begin_read()
                out["again2"] = reader.end_read(give_back=False)

            for target in (caller, next_caller):
                t = threading.Thread(target=target)
                t.start()
                t.join()
            assert out == {"interrupted": True, "again": True, "again2": True}
            with reader.lock:  # the client's ``recheck`` on the loop
                reader.sent()
            await wait_until(lambda: len(to_loop) == 3)
            assert to_loop == [[b"one"], [b"two", b"2", b"two"], [b"three"]]

    run(main)


def test_a_thread_whose_read_was_never_ended_reads_again_and_ends_it() -> None:
    """Ctrl-Cs in a row may stop a reading thread even inside its ``end_read``: the read is left begun. That
    thread may begin again (it goes on with its own read), reads, ends it, and the loop reads afterwards; another
    thread is still refused meanwhile."""

    async def main() -> None:
        async with inproc_pair() as (_mine, peer, reader):
            to_loop: list[bytes] = []
            reader.serve(lambda msgs: to_loop.extend(bytes(m[0]) for m in msgs), thread_reads=True)
            await asyncio.sleep(0.01)
            out: dict[str, object] = {}

            def caller() -> None:
                assert reader.begin_read()  # ... and stopped before its ``end_read``
                assert reader.begin_read()  # the next ``result()`` on the same thread
                out["got"] = [bytes(m[0]) for m in reader.read(5.0) or []]
                out["again"] = reader.end_read(give_back=True, reader=threading.get_ident())

            peer.send(b"x")
            t = threading.Thread(target=caller)
            t.start()
            t.join()
            assert out["got"] == [b"x"]
            assert out["again"]  # stopped with what it read untold: the loop takes it in
            assert not reader.reading
            with reader.lock:
                reader.sent()
            peer.send(b"y")
            await wait_until(lambda: to_loop == [b"x", b"y"])

    run(main)
