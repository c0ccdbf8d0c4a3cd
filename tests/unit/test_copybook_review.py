"""Review of the stored-copy bookkeeping (``meshaios.store.copies.CopyBook``): edge cases of its events that hold,
and a random walk over them with the world kept consistent (every member that comes back is told, as
``Node._member_changed`` tells the book), checking at every step that no copy a reachable owner counts is deleted
and that the book's tables stay consistent, and at the end that every copy no live owner counts goes."""

from __future__ import annotations

import random

import pytest

from meshaios.store.copies import (
    COPY_CHECK_EVERY,
    FREE_HOLD,
    ORPHAN_GRACE,
    RESTATE_AFTER,
    CopyInstruction,
    DeleteCopy,
    SayStored,
    SendDone,
)
from tests.unit.test_copybook import ME, A, B, C, World, _deletes, _until


def _gone(out: list[CopyInstruction]) -> list[str]:
    """The objects these instructions delete, in order."""
    return [a.obj for a in out if isinstance(a, DeleteCopy)]


def test_ids_that_are_not_strings_are_ignored_by_a_claim_and_a_free_raises_nothing() -> None:
    w = World(A, B)
    w.result(A, "t")
    w.copy("p", A)
    bad: list[object] = [1, None, ["t"], ("p",), b"t", 2.5]
    w.book.claimed(B, bad, 0.0)
    assert w.book.results["t"].owners == (A,)
    assert w.book.copies["p"] == A
    assert w.book.free(B, [], 0.0) == []


def test_a_held_free_said_again_keeps_the_first_deadline_and_a_plain_free_after_it_is_refused() -> None:
    w = World(A, B)
    w.result(A, "t", now=0.0)
    assert w.free(A, "t", now=1.0, hold=True) == []
    assert w.book.orphans["t"] == 1.0 + FREE_HOLD
    assert w.free(A, "t", now=3.0, hold=True) == []  # the FREE resent: the timer is not pushed back
    assert w.free(A, "t", now=3.5) == []  # A no longer counts it: its plain free takes nothing
    assert w.book.orphans["t"] == 1.0 + FREE_HOLD
    assert w.book.counters["freed_copies_held"] == 1
    assert _deletes(_until(w, 3.5, 1.0 + FREE_HOLD - 0.5)) == []
    assert _deletes(w.tick(1.0 + FREE_HOLD)) == [DeleteCopy("t")]
    assert "t" not in w.book.results
    assert "t" not in w.book.orphans
    assert w.book.counters["orphan_results_dropped"] == 1


def test_a_held_result_is_not_kept_by_its_former_owner_coming_back_nor_restated_to_anyone() -> None:
    w = World(A, B)
    w.result(A, "t", now=0.0)
    w.free(A, "t", now=0.0, hold=True)
    w.book.member_down(A, 1.0)
    w.live.discard(A)
    w.live.add(A)
    w.book.member_up(A)  # A let the task go: it does not count the copy any more
    assert w.book.orphans["t"] == FREE_HOLD
    out = _until(w, 0.0, COPY_CHECK_EVERY + 1.0)  # the every-check fell inside: no DONE for a held copy
    assert not [a for a in out if isinstance(a, SendDone)]
    assert _deletes(out) == [DeleteCopy("t")]


def test_a_held_copy_taken_by_the_new_owners_run_or_claim_part_by_part() -> None:
    w = World(A, B)
    w.result(A, "m", parts=3, now=0.0)
    w.free(A, "m#0", "m#1", "m#2", now=0.0, hold=True)
    w.book.claimed(B, ["m#0"], 0.0)  # B's CLAIM names only the part it counts
    out = _until(w, 0.0, FREE_HOLD + 1.0)
    assert sorted(_gone(out)) == ["m#1", "m#2"]
    assert w.book.results["m#0"].owners == (B,)
    assert "m#0" not in w.book.orphans
    w2 = World(A, B)
    w2.result(A, "t", now=0.0)
    w2.free(A, "t", now=0.0, hold=True)
    w2.result(B, "t", ep=1, now=1.0)  # the new owner's run stored here again: B counts it, no timer
    assert w2.book.results["t"].owners == (B,)
    assert "t" not in w2.book.orphans
    assert _deletes(_until(w2, 1.0, ORPHAN_GRACE + 1.0)) == []


def test_a_copy_claimed_by_this_node_as_owner_is_never_restated_to_itself() -> None:
    w = World(A)
    w.copy("p", A, now=0.0)
    w.book.claimed(ME, ["p"], 0.0)  # this node's owner adopted the put: STORED goes to nobody
    out = _until(w, 0.0, COPY_CHECK_EVERY + 1.0)
    assert [a for a in out if isinstance(a, SayStored)] == []
    w.book.member_down(A, 40.0)
    assert "p" not in w.book.orphans  # A's death does not touch a copy this node counts
    assert w.free(A, "p") == []
    assert w.free(ME, "p") == [DeleteCopy("p")]


def test_the_every_check_counts_from_the_books_first_busy_tick_and_restate_is_per_copy() -> None:
    w = World(A)
    assert w.tick(100.0) == []  # idle: the check's clock does not start
    w.copy("p", A, now=100.0)
    assert w.tick(100.0) == []  # first busy tick: the check is due COPY_CHECK_EVERY later
    assert w.tick(100.0 + RESTATE_AFTER) == [SayStored(A, "p")]
    assert w.tick(100.0 + COPY_CHECK_EVERY - 0.5) == []
    assert w.tick(100.0 + COPY_CHECK_EVERY) == [SayStored(A, "p")]


def test_a_dropped_or_freed_unknown_object_leaves_no_entry_behind() -> None:
    w = World(A)
    w.book.dropped(["nothing", "t#0"])
    w.store.add("f")
    w.fetched.add("f")
    assert w.free(A, "f") == [DeleteCopy("f")]  # a fetched copy the book does not know: deleted
    w.book.claimed(A, ["f"], 0.0)  # gone: not adopted as a put's copy
    assert not (w.book.copies)
    assert not (w.book.results)
    assert not w.book.orphans


# ---- a random walk: the world consistent, the book's promises checked after every event -------------------------
NODES = (A, B, C)


def _walk(seed: int, steps: int = 400) -> None:
    """Who counts each copy is modelled apart from the book (``counts``): a run's owner, a claimer, less those that
    freed it; a put's copy is its last claimer's (or its put node's). Every delete the book asks for is checked
    against it, with the members reachable at that moment."""
    rng = random.Random(seed)
    w = World(*NODES)
    book = w.book
    now = 0.0
    tasks = [f"t{i}" for i in range(6)]
    puts = [f"p{i}" for i in range(4)]
    counts: dict[str, set[str]] = {}  # obj -> the owners that count this node's copy

    def deleted(out: list[CopyInstruction], allowed: set[str] | None = None) -> None:
        for obj in _gone(out):
            live = (counts.pop(obj, set()) & w.live) - (allowed or set())
            assert not live, (seed, obj, live)

    def tables() -> None:
        assert set(book.orphans) <= set(book.copies) | set(book.results), seed
        for obj, run in book.results.items():
            assert run.owners or obj in book.orphans, (seed, obj)

    for _ in range(steps):
        now += rng.choice((0.0, 0.1, 0.5, 1.0, 3.0, 10.0))
        ev = rng.random()
        live = sorted(w.live - {ME})
        if ev < 0.15 and live:  # a run stores its result here (for a reachable owner: see the report, F1)
            owner = rng.choice([*live, ME])
            tid = rng.choice(tasks)
            w.result(owner, tid, att=rng.randrange(3), ep=rng.randrange(3), now=now)
            counts.setdefault(tid, set()).add(owner)
        elif ev < 0.25 and live:  # a put's replica kept here (an id the book forgot: see the report, F3)
            obj = rng.choice(puts)
            if obj not in w.store and obj not in book.copies:
                owner = rng.choice(live)
                w.copy(obj, owner, now=now)
                counts[obj] = {owner}
        elif ev < 0.40 and live:  # a reachable owner claims some objects it counts
            src = rng.choice(live)
            objs = rng.sample([*tasks, *puts], 2)
            book.claimed(src, objs, now)
            for obj in objs:
                if obj in w.store:
                    counts[obj] = {src} if obj in puts else counts.get(obj, set()) | {src}
        elif ev < 0.60:  # an owner frees: only what no other reachable owner counts may go
            src = rng.choice([*NODES, ME])
            obj = rng.choice([*tasks, *puts])
            hold = rng.random() < 0.5
            deleted(w.free(src, obj, now=now, hold=hold), allowed={src})
            if obj in counts and obj in tasks:
                counts[obj].discard(src)
        elif ev < 0.70 and live:  # a member dies
            node = rng.choice(live)
            w.live.discard(node)
            book.member_down(node, now)
        elif ev < 0.80:  # a member comes back, and is told (Node._member_changed)
            dead = sorted(set(NODES) - w.live)
            if dead:
                node = rng.choice(dead)
                w.live.add(node)
                deleted(w.do(book.member_up(node)))
        elif ev < 0.85:  # their last reader ran here: the executing node dropped them
            objs = [o for o in tasks if o in book.results and rng.random() < 0.5]
            w.store.difference_update(objs)
            book.dropped(objs)
            for obj in objs:
                counts.pop(obj, None)
        deleted(w.tick(now))
        tables()
    # everyone else dies: after the grace every copy that no live owner counts is gone, and nothing is left over
    for node in sorted(w.live - {ME}):
        w.live.discard(node)
        book.member_down(node, now)
    deleted(_until(w, now, now + ORPHAN_GRACE + 2 * COPY_CHECK_EVERY, step=1.0))
    tables()
    for obj in w.store:
        assert ME in counts.get(obj, set()), (seed, obj, counts.get(obj))
    assert not book.orphans, seed
    assert set(book.copies) | set(book.results) <= w.store, seed


@pytest.mark.parametrize("seed", range(200))
def test_random_walk_never_deletes_a_copy_a_reachable_owner_counts_and_leaves_nothing_behind(seed: int) -> None:
    _walk(seed)


# the review's findings, fixed in copies.py: an orphan timer follows reachability at every event that can change it
def test_a_replica_kept_for_an_owner_this_node_holds_dead_goes_after_the_grace() -> None:
    w = World()  # A declared dead here (member_down already happened); its STORE was on its way
    w.copy("p", A, now=0.0)
    out = _until(w, 0.0, ORPHAN_GRACE + 2 * COPY_CHECK_EVERY)
    assert _deletes(out) == [DeleteCopy("p")]


def test_a_claim_from_an_owner_this_node_holds_dead_does_not_end_the_orphan_timer() -> None:
    w = World(A)
    w.result(A, "t", now=0.0)
    w.copy("p", A, now=0.0)
    w.live.discard(A)
    w.book.member_down(A, 1.0)  # both orphans, due at 61
    w.book.claimed(B, ["t", "p"], 2.0)  # B is dead here too: its CLAIM was on its way
    out = _until(w, 1.0, 1.0 + ORPHAN_GRACE + 2 * COPY_CHECK_EVERY)
    assert sorted(a.obj for a in _deletes(out)) == ["p", "t"]


def test_an_orphan_is_not_dropped_once_an_owner_is_reachable_again() -> None:
    w = World()  # A joined a moment ago: this node has not heard of it yet (SWIM gossip on its way)
    w.result(A, "t", now=0.0)  # A's RUN came first: no reachable owner, an orphan at once
    w.live.add(A)  # A appears (MemberChanged old=None -> ALIVE): Node._member_changed calls member_up only
    # for DEAD/LEFT -> ALIVE, so the book is never told
    out = _until(w, 0.0, ORPHAN_GRACE + 1.0)
    assert _deletes(out) == []


def test_a_copy_kept_again_under_an_id_with_a_stale_orphan_timer_is_not_dropped_by_it() -> None:
    w = World(A, B, C)
    w.copy("p", B, now=0.0)
    w.live.discard(B)
    w.book.member_down(B, 0.0)  # orphan, due at 60
    w.free(B, "p", now=1.0)  # B (gray: alive, declared dead here) frees it; the book keeps copies/orphans
    w.copy("p", C, now=10.0)  # the same id kept again, for live C
    out = _until(w, 10.0, 10.0 + ORPHAN_GRACE)
    assert _deletes(out) == []
