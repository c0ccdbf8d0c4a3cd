"""The stored-copy bookkeeping on its own (``meshaios.store.copies.CopyBook``): events and a time in, instructions
out, the world (who is reachable, what the store holds) as data. Each invariant of its docstrings, and the copy
bookkeeping behind the fault harness's regression seeds (docs/reliability.md, "Found by it")."""

from __future__ import annotations

from meshaios.store.copies import (
    COPY_CHECK_EVERY,
    FREE_HOLD,
    ORPHAN_GRACE,
    RESTATE_AFTER,
    CopyBook,
    CopyInstruction,
    DeleteCopy,
    SayStored,
    SendClaim,
    SendDone,
)
from meshaios.wire import messages as M

ME, A, B, C = "me", "a", "b", "c"


class World:
    """The node around a book: the members it can reach and what its store holds; it carries out deletes."""

    def __init__(self, *live: str) -> None:
        self.live = {ME, *live}
        self.store: set[str] = set()
        self.fetched: set[str] = set()
        self.book = CopyBook(
            ME, reachable=self.live.__contains__, stored=self.store.__contains__, fetched=self.fetched.__contains__
        )

    def do(self, out: list[CopyInstruction]) -> list[CopyInstruction]:
        for a in out:
            if isinstance(a, DeleteCopy):
                self.store.discard(a.obj)
        return out

    def free(self, src: str, *ids: str, now: float = 0.0, hold: bool = False) -> list[CopyInstruction]:
        return self.do(self.book.free(src, ids, now, hold))

    def tick(self, now: float) -> list[CopyInstruction]:
        return self.do(self.book.tick(now))

    def result(self, owner: str, tid: str, att: int = 0, ep: int = 0, parts: int = 0, now: float = 0.0) -> None:
        r: M.Result = {"id": tid, "att": att, "ok": True, "size": 8, "dt": 0.5}
        if parts:
            r["parts"] = parts
        objs = [f"{tid}#{j}" for j in range(parts)] if parts else [tid]
        self.store.update(objs)
        self.book.kept_result(owner, r, ep, now)

    def copy(self, obj: str, owner: str, now: float = 0.0) -> None:
        self.store.add(obj)
        self.book.kept_copy(obj, owner, now)


def _until(w: World, start: float, end: float, step: float = 0.5) -> list[CopyInstruction]:
    out: list[CopyInstruction] = []
    t = start
    while t <= end:
        out += w.tick(t)
        t += step
    return out


def _deletes(out: list[CopyInstruction]) -> list[CopyInstruction]:
    return [a for a in out if isinstance(a, DeleteCopy)]


# ---- put copies: the owner's that claimed it last, and only its free takes it ---------------------------------
def test_a_put_copy_is_freed_by_its_owner_only() -> None:
    w = World(A, B)
    w.copy("p", A)
    assert w.free(B, "p") == []
    assert "p" in w.store
    assert w.book.counters["claimed_copies_kept"] == 1
    assert w.free(A, "p") == [DeleteCopy("p")]
    assert "p" not in w.store


def test_a_claimed_put_copy_is_the_claimers_to_free_and_the_former_owners_free_is_refused_seed_52() -> None:
    """--gray seed 52: the owner the client left, alive, freed the copies its new owner had claimed once its
    memory lease for the silent client ran out; the put's readers failed with ObjectLost."""
    w = World(A, B)
    w.copy("p", A)
    w.book.claimed(B, ["p"], 0.0)
    assert w.free(A, "p") == []
    assert "p" in w.store
    assert w.free(B, "p") == [DeleteCopy("p")]


def test_the_put_on_its_own_node_is_kept_for_the_owner_that_claims_it_but_never_a_fetched_copy() -> None:
    w = World(A, B)
    w.store.update({"own", "fetched", "mine"})
    w.fetched.add("fetched")
    w.book.claimed(B, ["own", "fetched", "unknown", 7], 0.0)
    w.book.claimed(ME, ["mine"], 0.0)  # this node adopting its own put: nothing to record
    assert w.book.copies == {"own": B}
    assert w.free(ME, "own") == []
    assert "own" in w.store
    # an object the book does not know (the put's own copy unclaimed, a fetched copy) goes on any free
    assert w.free(ME, "mine", "fetched") == [DeleteCopy("mine"), DeleteCopy("fetched")]


# ---- stored results: dropped once no live owner counts them, and only then --------------------------------------
def test_a_free_takes_only_its_senders_count_and_one_from_an_owner_that_does_not_count_it_is_ignored() -> None:
    w = World(A, B, C)
    w.result(A, "r")
    w.book.claimed(B, ["r"], 0.0)
    assert w.free(C, "r") == []
    assert w.book.counters["replaced_copies_kept"] == 1
    assert w.free(A, "r") == []
    assert w.book.results["r"].owners == (B,)
    assert w.free(A, "r") == []
    assert w.book.counters["replaced_copies_kept"] == 2
    assert w.free(B, "r") == [DeleteCopy("r")]
    assert w.book.results == {}


def test_a_free_that_leaves_only_dead_owners_starts_the_orphan_timer() -> None:
    w = World(A)
    w.result(A, "r")
    w.book.claimed(B, ["r"], 0.0)  # B is dead to this node
    assert w.free(A, "r", now=10.0) == []
    assert w.book.orphans == {"r": 10.0 + ORPHAN_GRACE}
    assert _until(w, 11.0, 10.0 + ORPHAN_GRACE - 0.5) == []
    assert "r" in w.store
    assert DeleteCopy("r") in w.tick(10.0 + ORPHAN_GRACE)
    assert "r" not in w.store
    assert w.book.counters["orphan_results_dropped"] == 1


def test_a_result_whose_owner_died_goes_after_the_grace_unless_claimed_or_its_owner_comes_back_seeds_33_87() -> None:
    """Shuffle seeds 33, 87: the owner was killed before the done reached it, and its copy was never freed."""
    w = World(A, B)
    w.result(C, "gone")  # C: an owner this node never saw alive
    for tid in ("claimed", "back"):
        w.result(A, tid)
    w.live.discard(A)
    w.book.member_down(A, 5.0)
    assert w.book.orphans == {"gone": ORPHAN_GRACE, "claimed": 5.0 + ORPHAN_GRACE, "back": 5.0 + ORPHAN_GRACE}
    w.book.claimed(B, ["claimed"], 0.0)
    w.live.add(A)
    w.book.member_up(A)
    assert set(w.book.orphans) == {"gone"}  # A came back: it counts "back" again
    w.live.discard(A)
    w.book.member_down(A, 6.0)
    assert w.book.orphans == {"gone": ORPHAN_GRACE, "back": 6.0 + ORPHAN_GRACE}
    assert _deletes(_until(w, 6.0, ORPHAN_GRACE - 0.5)) == []
    assert _deletes(w.tick(ORPHAN_GRACE)) == [DeleteCopy("gone")]
    _until(w, ORPHAN_GRACE, 6.0 + ORPHAN_GRACE)
    assert w.store == {"claimed"}
    assert w.book.counters["orphan_results_dropped"] == 2


def test_a_result_stored_for_an_owner_already_dead_is_an_orphan_at_once() -> None:
    w = World()
    w.result(A, "r", now=1.0)
    assert w.book.orphans == {"r": 1.0 + ORPHAN_GRACE}


def test_member_down_leaves_a_result_another_reachable_owner_counts_and_an_object_no_longer_stored() -> None:
    w = World(A, B)
    w.result(A, "r")
    w.book.claimed(B, ["r"], 0.0)
    w.copy("p", A)
    w.copy("gone", A)
    w.store.discard("gone")  # freed meanwhile (a lease): nothing to time out
    w.live.discard(A)
    w.book.member_down(A, 0.0)
    assert w.book.orphans == {"p": ORPHAN_GRACE}
    assert w.tick(ORPHAN_GRACE) == [DeleteCopy("p")]
    assert w.book.counters["orphan_copies_dropped"] == 1
    assert "p" not in w.book.copies
    assert "r" in w.store


def test_a_member_back_from_the_dead_hears_stored_for_its_copies_again() -> None:
    w = World(B)
    w.copy("p", A)
    w.copy("q", B)
    w.book.member_down(A, 0.0)
    w.live.add(A)
    assert w.book.member_up(A) == [SayStored(A, "p")]
    assert w.book.orphans == {}


# ---- a free from the owner the client left, racing the new owner's claim --------------------------------------
def test_a_free_from_an_owner_whose_client_failed_over_keeps_the_copy_for_a_claim_a_while() -> None:
    """The former owner frees its copies of the client's finished tasks when it learns of the failover (DETACH,
    FENCED) while the new owner claims them: the free may come first. It used to take the copy at once."""
    w = World(A, B)
    w.result(A, "r")
    w.result(A, "m", parts=2)
    w.result(A, "lone")
    assert w.free(A, "r", "m#0", "m#1", "lone", now=1.0, hold=True) == []
    assert w.book.orphans == dict.fromkeys(("r", "m#0", "m#1", "lone"), 1.0 + FREE_HOLD)
    assert w.book.counters["freed_copies_held"] == 4
    w.book.claimed(B, ["r", "m#0", "m#1"], 0.0)  # the new owner's claim, second
    assert set(w.book.orphans) == {"lone"}
    assert w.book.results["r"].owners == (B,)
    assert w.free(A, "r") == []  # the former owner's lease runs out later: its free of what it counted is ignored
    # held, the copy is neither restated to anyone nor counted by the former owner any more
    assert _deletes(_until(w, 1.0, 1.0 + FREE_HOLD - 0.5)) == []
    assert w.tick(1.0 + FREE_HOLD) == [DeleteCopy("lone")]  # nobody claimed it: it goes
    assert w.free(B, "r", "m#0", "m#1") == [DeleteCopy("r"), DeleteCopy("m#0"), DeleteCopy("m#1")]
    assert w.store == set()


def test_a_held_free_changes_nothing_for_a_copy_another_owner_counts_or_one_the_book_does_not_know() -> None:
    w = World(A, B)
    w.result(A, "r")
    w.book.claimed(B, ["r"], 0.0)
    w.store.add("fetched")
    assert w.free(A, "r", "fetched", hold=True) == [DeleteCopy("fetched")]
    assert w.book.results["r"].owners == (B,)
    assert w.book.orphans == {}


# ---- a later run under the same ids: the newest record stands, every owner that counted it counts it still -------
def test_the_newest_run_stands_in_either_order_and_every_owner_still_counts_the_copy() -> None:
    """``test_result_orphans.py`` through the executor's real path; here the book alone: an older epoch's run
    finishing after a claim took the claim with it, and the former owner's free then took the new owner's copy."""
    w = World(A, B)
    w.result(A, "claimed", att=0, ep=0)
    w.book.claimed(B, ["claimed"], 0.0)
    w.result(A, "claimed", att=1, ep=0)  # A's late run, attempt 1
    w.result(B, "newer", att=0, ep=1)
    w.result(A, "newer", att=0, ep=0)  # an older epoch's run finishing later: B's record stands
    run = w.book.results["newer"]
    assert (run.owners, run.ep, run.att) == ((B, A), 1, 0)
    run = w.book.results["claimed"]
    assert (run.owners, run.ep, run.att) == ((A, B), 0, 1)
    assert w.free(A, "claimed", "newer") == []
    assert {o: r.owners for o, r in w.book.results.items()} == {"claimed": (B,), "newer": (B,)}


def test_a_newer_run_for_a_live_owner_cancels_an_older_runs_orphan_timer() -> None:
    """A map task's parts stored for a dead owner, then the task again here for a live owner under the same ids:
    the old run's timer must not reach them, nor the old owner's late free (it only stops counting them)."""
    w = World()
    w.result(A, "m", parts=2)
    assert set(w.book.orphans) == {"m#0", "m#1"}
    w.result(ME, "m", ep=1, parts=2)
    assert w.book.orphans == {}
    assert w.free(A, "m#0", "m#1") == []
    assert _until(w, 0.0, ORPHAN_GRACE + COPY_CHECK_EVERY + 1) == []
    assert w.store == {"m#0", "m#1"}


def test_two_owners_runs_of_the_same_attempt_both_count_the_copy_seed_266() -> None:
    """Shuffle seed 266: two shards of a spread client recomputed a map task they both owned under the same
    attempt on one node: each owner counts the copy, and one's free leaves it to the other."""
    w = World(A, B)
    w.result(A, "m", parts=2)
    w.result(B, "m", parts=2)
    assert w.book.results["m#0"].owners == (B, A)
    assert w.free(A, "m#0", "m#1") == []
    assert w.free(B, "m#0", "m#1") == [DeleteCopy("m#0"), DeleteCopy("m#1")]


def test_a_free_that_reaches_the_node_before_a_recompute_stores_takes_only_the_old_copy_seed_147() -> None:
    """--gray --shuffle seed 147: the owner freed a map output's old copies and recomputed it on the same node;
    the FREE now goes out before the RUN, so it reaches the node first and the new copies stand."""
    w = World(A)
    w.result(A, "m", parts=2)
    assert w.free(A, "m#0", "m#1") == [DeleteCopy("m#0"), DeleteCopy("m#1")]
    w.result(A, "m", att=1, parts=2)
    assert w.store == {"m#0", "m#1"}
    assert w.book.results["m#1"].att == 1


def test_a_dropped_result_is_forgotten_with_its_timer() -> None:
    w = World()
    w.result(A, "r")
    w.book.dropped(["r", "unknown"])
    assert w.book.results == {}
    assert w.book.orphans == {}


# ---- what is lost on the way is made good --------------------------------------------------------------------
def test_a_replica_says_stored_once_more_after_restate_after_in_the_order_kept() -> None:
    w = World(A, B)
    w.copy("p", A, now=0.0)
    w.copy("q", B, now=1.0)
    w.copy("mine", ME, now=1.0)  # a copy this node owns itself: no message to itself
    assert w.tick(RESTATE_AFTER - 0.1) == []
    assert w.tick(RESTATE_AFTER) == [SayStored(A, "p")]
    w.live.discard(B)
    assert w.tick(RESTATE_AFTER + 1.0) == []  # q's owner is not reachable: nothing sent, nothing left due
    w.live.add(B)
    assert w.tick(RESTATE_AFTER + 2.0) == []


def test_a_claim_goes_once_more_after_restate_after() -> None:
    w = World()
    w.book.claim_sent(A, ["x#0", "x#1"], 3.0)
    assert w.tick(3.0 + RESTATE_AFTER - 0.1) == []
    assert w.tick(3.0 + RESTATE_AFTER) == [SendClaim(A, ["x#0", "x#1"])]
    assert w.tick(3.0 + 2 * RESTATE_AFTER) == []


def test_every_check_restates_each_results_done_once_a_task_and_each_copy_and_forgets_what_is_gone_seed_36() -> None:
    """Shuffle seed 36: a FREE lost on its way left a map output behind; shuffle seeds 19, 61: a late copy of a
    task its owner had forgotten. Every ``COPY_CHECK_EVERY`` each stored result's DONE goes to the owners that
    count it (the owner takes it, or frees the copy), once a task, and each put copy says STORED."""
    w = World(A, B)
    w.result(A, "m", parts=2)
    w.book.claimed(B, ["m#1"], 0.0)
    w.result(ME, "mine")  # this node owns it: its owner part needs no message
    w.result(C, "dead")  # its only owner is dead: an orphan, not restated
    w.copy("p", A)
    w.copy("freed", B)
    w.store.discard("freed")
    w.result(A, "freed-result")
    w.store.discard("freed-result")
    w.tick(0.0)  # the first check is one period after the first tick
    assert w.tick(RESTATE_AFTER) == [SayStored(A, "p")]  # the replica's second STORED
    out = w.tick(COPY_CHECK_EVERY)
    done: M.Result = {"id": "m", "att": 0, "ok": True, "size": 8, "parts": 2}  # as it was, less its run time
    assert out == [SendDone(A, [done]), SendDone(B, [done]), SayStored(A, "p")]
    assert set(w.book.copies) == {"p"}
    assert set(w.book.results) == {"m#0", "m#1", "mine", "dead"}
    assert w.tick(COPY_CHECK_EVERY + 1) == []


def test_an_idle_book_does_nothing() -> None:
    w = World(A)
    assert w.tick(0.0) == []
    assert w.tick(COPY_CHECK_EVERY * 3) == []
