"""Review of io/lean.py's shared reading (``Share`` and ``LeanReader.begin_read``/``read``/``end_read``, the sync
client's caller reading its own answer, docs/performance.md sections 20 and 29) with more than one thread: the pure
transitions over random walks of two threads, and real ZeroMQ sockets read by several threads in turn while the
loop serves them. What must hold: one reader at a time, a thread that does not read cannot end another's read, and
every message reaches the loop exactly once, in the order sent, whoever took it off the socket."""

from __future__ import annotations

import asyncio
import random
import threading

from meshaios.io.lean import (
    OPEN,
    RECHECK,
    UNPARK,
    _share,
    closes,
    loop_sent,
    loop_takes,
    loop_unparks,
    loop_woken,
    thread_begins,
    thread_ends,
    thread_takes,
    thread_took,
)
from tests.unit.test_lean_reader import run, wait_until
from tests.unit.test_own_read_races import inproc_pair

T, U = 101, 202


def test_random_walks_of_two_threads_keep_one_reader_and_leave_nothing_unasked() -> None:
    """Two threads begin, take and end reads in random order with the loop's events between: only one reads at a
    time; the other is refused and cannot end the read it does not hold (its ``end_read`` in a ``finally`` changes
    nothing); and whenever the read ends with the loop parked and something for it to read (a refused thread, a
    send of the loop's, an early stop, messages left), the shell is told to have the loop read."""
    rng = random.Random(1919)
    for _ in range(3000):
        s = OPEN
        must = False
        for _ in range(40):
            e = rng.randrange(9)
            who = T if rng.random() < 0.5 else U
            if e == 0:
                before = s
                s, ok = thread_begins(s, who, ready=True)
                if before.reader not in (None, who) or before.closed:
                    assert not ok
                    assert s.reader == before.reader
                    assert s.wanted
                    must = True
                else:
                    assert ok
                    assert s.reader == who
            elif e == 1:
                s, _ = loop_woken(s)
            elif e == 2:
                before = s
                s, _ = loop_takes(s)
                assert s.reader == before.reader  # the loop never takes a read from a thread
            elif e == 3:
                s, todo = loop_sent(s)
                must = must or s.reader is not None
                if todo & UNPARK:
                    must = False
            elif e == 4:
                s, todo = loop_unparks(s)
                if todo & UNPARK:
                    assert s.reader is None
                    must = False
            elif e == 5 and s.reader is not None:
                taking = thread_takes(s)
                if taking is not None:
                    s = thread_took(taking, full=rng.random() < 0.2) if rng.random() < 0.8 else taking
            elif e == 6:
                before = s
                give_back = rng.random() < 0.5
                s, todo = thread_ends(s, who, give_back, kept=rng.random() < 0.5)
                if before.reader != who:
                    assert (s, todo) == (before, 0)  # not this thread's read: nothing happens
                    continue
                assert s.reader is None
                if not before.closed and before.parked and (must or give_back):
                    assert todo & RECHECK
                if todo & RECHECK:
                    must = False
            elif e == 7 and rng.random() < 0.05:
                s, _ = closes(s)
                must = False
            assert s.reader in (None, T, U)


def test_messages_taken_by_several_threads_in_turn_reach_the_loop_once_and_in_order() -> None:
    """Four threads contend for reads (``begin_read`` .. ``read`` .. ``end_read``, refused while another reads)
    while a peer sends 3,000 numbered messages; each ends its read as the client's caller would, asking the loop to
    read again when ``end_read`` says so, and telling it of what it read (the loop takes it in with ``take_kept``,
    as the client's ``_adopt`` does). The loop's handler gets every message exactly once, in the order sent."""
    n = 3000

    async def main() -> None:
        async with inproc_pair() as (_mine, peer, reader):
            to_loop: list[int] = []
            by_loop = [0]

            def handler(msgs: list[list[object]]) -> None:
                by_loop[0] += len(msgs)
                to_loop.extend(int(bytes(m[0])) for m in msgs)  # type: ignore[call-overload]

            reader.serve(handler, thread_reads=True)
            await asyncio.sleep(0)
            loop = asyncio.get_running_loop()
            stop = threading.Event()
            looked: list[int] = []  # messages the threads saw (a look: they stay the loop's)

            def recheck() -> None:
                with reader.lock:
                    reader.sent()

            def adopt() -> None:  # the client's ``_adopt``: what a thread read, taken from the reader once
                to_loop.extend(int(bytes(m[0])) for m in reader.take_kept())

            def contender(seed: int) -> None:
                rng = random.Random(seed)
                me = threading.get_ident()
                while not stop.is_set():
                    told = False
                    try:
                        if not reader.begin_read():
                            stop.wait(0.0005)  # pacing only: a refused thread would spin on the GIL
                            continue
                        got = reader.read(0.002, rng.random() < 0.5)
                        if got:
                            looked.append(len(got))
                            loop.call_soon_threadsafe(adopt)  # a notice of what it read, as ``_handback``
                            told = True
                    finally:
                        if reader.end_read(rng.random() < 0.7, me, told):
                            loop.call_soon_threadsafe(recheck)
                    if rng.random() < 0.5:
                        stop.wait(0.001)  # the loop's turn now and then: it reads too

            def send() -> None:
                for i in range(n):
                    peer.send(str(i).encode())
                    if i % 100 == 99:
                        stop.wait(0.002)  # in bursts, so that thread reads and the loop's interleave

            threads = [threading.Thread(target=contender, args=(k,)) for k in range(4)]
            for t in threads:
                t.start()
            try:
                await asyncio.to_thread(send)
                await wait_until(lambda: len(to_loop) >= n or not any(t.is_alive() for t in threads))
            finally:
                stop.set()
                for t in threads:
                    await asyncio.to_thread(t.join, 10)
            recheck()  # as the client's next heartbeat: a read ended with nothing expected leaves the loop parked
            await wait_until(lambda: len(to_loop) >= n)
            assert to_loop == list(range(n))
            assert not reader.reading

    run(main)


def test_the_loops_states_survive_a_clear_of_the_interned_ones() -> None:
    """Threads come and go, and their ``Share`` states with them (past 4,096 the interned ones are cleared): the
    loop's own stay, OPEN the same object, so that the fast path's ``is OPEN`` still holds."""
    for reader in range(5_000):
        _share(reader + 1, False, False, False, False)
    assert _share(None, False, False, False, False) is OPEN
