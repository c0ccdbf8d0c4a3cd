"""The pure state machine of who reads a socket that the loop's thread reads and another thread may read for a while
(``io.lean.Share`` and its transitions; ``LeanReader`` is its shell, docs/performance.md section 20): each event
gives the next state and the instructions for the shell, checked here without a socket, a loop or a thread."""

from __future__ import annotations

import random

import pytest

from meshaios.io.lean import (
    CLOSE_PIPE,
    OPEN,
    PARK,
    POKE,
    POKE_IF_WAITING,
    READ_IF_WAITING,
    RECHECK,
    REMOVE_READER,
    UNPARK,
    Share,
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

T = 7  # a thread's id


def reading(**kw: bool) -> Share:
    return Share(T, **kw)


def test_with_no_thread_reading_the_loop_reads_and_its_sends_read_what_waits() -> None:
    assert loop_takes(OPEN) == (OPEN, 0)
    assert loop_woken(OPEN) == (OPEN, 0)
    assert loop_sent(OPEN) == (OPEN, READ_IF_WAITING)
    assert loop_unparks(OPEN) == (OPEN, 0)


def test_one_thread_reads_at_a_time_and_one_refused_has_the_loop_read_after() -> None:
    s, ok = thread_begins(OPEN, T, ready=True)
    assert ok
    assert s == reading()
    s2, ok = thread_begins(s, 8, ready=True)
    assert not ok
    assert s2 == reading(wanted=True)
    assert thread_begins(s, T, ready=True) == (s, True)  # the same thread, its read never ended: it goes on
    s3, ok = thread_begins(OPEN, T, ready=False)  # not served for thread reads (or not yet)
    assert not ok
    assert s3 == Share(wanted=True)


def test_the_loop_steps_aside_once_while_a_thread_reads() -> None:
    s, todo = loop_woken(reading())
    assert (s, todo) == (reading(parked=True), PARK)
    assert loop_woken(s) == (s, 0)
    s, todo = loop_takes(reading())  # the loop would read: refused, parks, and wakes the thread (a message waits)
    assert s.reader == T
    assert (s, todo) == (reading(parked=True), PARK | POKE)
    assert loop_takes(s) == (s, POKE)


def test_a_loop_send_while_a_thread_reads_wakes_it_and_is_read_by_the_loop_after() -> None:
    s, todo = loop_sent(reading(parked=True))
    assert (s, todo) == (reading(parked=True, wanted=True), POKE_IF_WAITING)
    s, todo = thread_ends(s, T, give_back=False, kept=False)
    assert todo == RECHECK
    assert s == Share(parked=True, wanted=True)
    assert loop_unparks(s) == (OPEN, UNPARK)


def test_a_loop_send_while_parked_and_nobody_reads_unparks() -> None:
    assert loop_sent(Share(parked=True, wanted=True)) == (OPEN, UNPARK)


@pytest.mark.parametrize(
    ("before", "give_back", "kept", "again"),
    [
        (reading(), False, False, False),  # a clean stop, the loop not woken meanwhile: it stays as it was
        (reading(), False, True, False),  # its own answer kept: the loop takes it in later (``take_kept``)
        (reading(), True, True, True),  # stopped early with messages kept: the loop reads them now
        (reading(), True, False, False),  # stopped early, the loop's reader on the loop: it is woken as ever
        (reading(parked=True), False, False, False),  # parked, nothing expected: parked until the loop's next send
        (reading(parked=True), True, False, True),  # parked, stopped early: the loop reads again
        (reading(parked=True, wanted=True), False, False, True),  # the loop sent meanwhile
        (reading(left=True), False, False, True),  # messages left on the socket, their signal taken
    ],
)
def test_a_thread_that_stops_asks_for_the_loop_exactly_when_the_loop_must_read(
    before: Share, give_back: bool, kept: bool, again: bool
) -> None:
    s, todo = thread_ends(before, T, give_back, kept)
    assert s.reader is None
    assert (s.parked, s.wanted, s.left) == (before.parked, before.wanted, before.left)
    assert todo == (RECHECK if again else 0)


def test_only_the_reading_thread_ends_the_read() -> None:
    s = reading(parked=True)
    assert thread_ends(s, 8, give_back=True, kept=True) == (s, 0)
    assert thread_ends(OPEN, T, give_back=True, kept=True) == (OPEN, 0)  # ended already (a second Ctrl-C)
    assert thread_ends(s, None, give_back=True, kept=False) == (Share(parked=True), RECHECK)


def test_a_take_stopped_part_way_or_full_counts_as_messages_left() -> None:
    taking = thread_takes(reading())
    assert taking == reading(left=True)
    assert thread_took(taking, full=False) == reading()
    assert thread_took(taking, full=True) == reading(left=True)
    # stopped part-way (no ``thread_took``): the loop is asked to read
    assert thread_ends(taking, T, give_back=False, kept=False)[1] == RECHECK
    assert thread_takes(OPEN) is None  # no thread reads
    assert loop_takes(Share(left=True)) == (OPEN, 0)  # the loop's read takes what was left


def test_closing_stops_a_reading_thread_and_every_later_read() -> None:
    s, todo = closes(reading())
    assert todo == REMOVE_READER | POKE
    assert s.closed
    assert thread_takes(s) is None
    assert thread_begins(s, 8, ready=True)[1] is False
    s, todo = thread_ends(s, T, give_back=True, kept=True)
    assert todo == CLOSE_PIPE
    assert s.reader is None
    assert loop_unparks(closes(Share(parked=True))[0]) == (Share(parked=True, closed=True), 0)
    assert closes(OPEN)[1] == REMOVE_READER | CLOSE_PIPE
    assert closes(Share(parked=True))[1] == CLOSE_PIPE  # parked: its descriptor is off the loop already


def test_random_walks_never_leave_the_loop_parked_with_something_to_read_unasked() -> None:
    """Over random sequences of events: the loop never reads while a thread does, nor a thread once none reads or
    after closing; and whenever a read ends with the loop parked and something for it to read (it sent, another
    thread was refused, the thread stopped early or left messages), the shell is told to have the loop read."""
    rng = random.Random(19)
    for _ in range(2000):
        s = OPEN
        must = False  # the loop has something to read since the last time it was told to
        for _ in range(30):
            e = rng.randrange(8)
            if e == 0:
                s, ok = thread_begins(s, T, ready=rng.random() < 0.9)
                assert not ok or s.reader == T
                must = must or not ok
            elif e == 1:
                s, _ = loop_woken(s)
            elif e == 2:
                before = s
                s, _ = loop_takes(s)
                if before.reader is None:
                    assert not s.left
            elif e == 3:
                s, todo = loop_sent(s)
                must = must or s.reader is not None
                if todo & UNPARK:
                    must = False
            elif e == 4:
                s, todo = loop_unparks(s)
                if todo & UNPARK:
                    assert s.reader is None
                    assert not s.parked
                    must = False
            elif e == 5:
                taking = thread_takes(s)
                if taking is None:
                    assert s.reader is None or s.closed
                else:
                    s = thread_took(taking, full=rng.random() < 0.2) if rng.random() < 0.8 else taking
            elif e == 6:
                was = s
                give_back = rng.random() < 0.5
                s, todo = thread_ends(s, T, give_back, kept=rng.random() < 0.5)
                if was.reader is not None and not was.closed and was.parked and (must or give_back):
                    assert todo & RECHECK
                if todo & RECHECK:
                    must = False
            else:
                if rng.random() < 0.1:
                    s, _ = closes(s)
                    must = False
            assert s.reader in (None, T)
