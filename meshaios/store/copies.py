"""Who frees each copy a node keeps for others (pure bookkeeping): put replicas and stored task results.

A node keeps copies that another node counts and frees: a put's replica (``STORE``), or the put itself once an
owner that adopted it after its client's failover claims it (``CLAIM``), and a task result it stored as the task's
executor (large, or a map output's parts ``id#j``), counted by the owner whose run stored it and by those that
adopted the task (``CLAIM``). ``CopyBook`` takes the events that change who counts a copy -- a copy kept, a result
stored, a claim, a free, a member down or back up, the time passing (``tick``) -- and answers with what the node
must do: delete a copy from its store (``DeleteCopy``), say ``STORED`` to a copy's owner (``SayStored``), send a
stored result's ``DONE`` again to the owners that count it (``SendDone``), send a ``CLAIM`` once more
(``SendClaim``). The node carries them out (``Node._copy_actions``); what the book needs to know about the world it
asks through three predicates: whether a node is reachable (alive or suspect to this one, or this node itself),
whether the store holds an object, and whether an object is a fetched copy of another node's.

Invariants (each has a test in ``tests/unit/test_copybook.py``):
- a put's copy is the owner's that claimed it last (or the put's node's, unclaimed), and only that owner's free
  takes it;
- a stored result is dropped once no live owner counts it, and only then: a free takes only its sender's count
  off, one from an owner that does not count the copy is ignored, and a copy whose owners all died goes after
  ``ORPHAN_GRACE`` unless an owner claims it or comes back; one freed by the owner its client left (a free that
  says ``hold``) goes after ``FREE_HOLD`` unless the client's new owner claims it;
- a later run of the same task stores under the same ids: the newest run's record (client epoch, then attempt)
  stands and its ``DONE`` is the one restated, and every owner that counted the copy under these ids counts it still;
- a ``STORED``, ``DONE``, ``FREE`` or ``CLAIM`` lost on its way is made good: a replica says ``STORED`` once more
  ``RESTATE_AFTER`` after it was kept, a claim goes once more ``RESTATE_AFTER`` after it was sent, and every
  ``COPY_CHECK_EVERY`` each copy says ``STORED`` and each stored result's ``DONE`` goes to the owners that count it.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import cast

from meshaios.clock import Every
from meshaios.wire import messages as M

COPY_CHECK_EVERY = 30.0  # seconds between a holder's STORED for each put copy it keeps (``CopyBook.tick``)
ORPHAN_GRACE = 60.0  # seconds a put's copy or stored result outlives its owner's death unless another owner claims it
RESTATE_AFTER = 2.0  # seconds after keeping a put's replica, it says STORED once more (``CopyBook.tick``),
# and after claiming copies, an owner sends its CLAIM once more (``Node._claim``)
FREE_HOLD = 5.0  # seconds a copy freed by an owner its client left (DETACH, FENCED) is kept for the new owner's CLAIM


@dataclass(slots=True)
class StoredRun:
    """A result stored here: the owners that count the copy (the one whose run stored it, then those that adopted
    the task: CLAIM), that run's client epoch and attempt, and its result as the ``DONE`` restates it."""

    owners: tuple[str, ...]
    ep: int
    att: int
    done: M.Result


@dataclass(frozen=True, slots=True)
class DeleteCopy:
    """Delete ``obj`` from the store (if it is there)."""

    obj: str


@dataclass(frozen=True, slots=True)
class SayStored:
    """Send ``STORED`` for ``obj`` to ``owner`` (a live member)."""

    owner: str
    obj: str


@dataclass(frozen=True, slots=True)
class SendDone:
    """Send ``DONE`` with these stored results to ``owner`` (a live member) once more."""

    owner: str
    results: list[M.Result]


@dataclass(frozen=True, slots=True)
class SendClaim:
    """Send ``CLAIM`` of ``ids`` to ``holder`` once more."""

    holder: str
    ids: list[str]


CopyInstruction = DeleteCopy | SayStored | SendDone | SendClaim


class CopyBook:
    """The copies node ``me`` keeps for other owners, and the claims it sent as an owner (see the module's
    docstring). ``reachable(node)``: alive or suspect to this node, or this node; ``stored(obj)``: in the store;
    ``fetched(obj)``: a fetched copy of another node's object (not this node's to keep)."""

    def __init__(
        self,
        me: str,
        *,
        reachable: Callable[[str], bool],
        stored: Callable[[str], bool],
        fetched: Callable[[str], bool],
        counters: MutableMapping[str, int] | None = None,
    ) -> None:
        self.me = me
        self._reachable = reachable
        self._stored = stored
        self._fetched = fetched
        self.counters: MutableMapping[str, int] = counters if counters is not None else defaultdict(int)
        # every put copy kept here for another node: obj -> the node that owns it (the put's node, or the owner
        # that adopted it: CLAIM)
        self.copies: dict[str, str] = {}
        # results stored here (each id, or id#j of a map output) -> the run that stored it and who counts it
        self.results: dict[str, StoredRun] = {}
        # copies and results whose owners are all dead, with when they go unless an owner claims them
        self.orphans: dict[str, float] = {}
        self._restate_due: deque[tuple[float, str]] = deque()  # (when kept, obj): to say STORED a second time
        self._claim_again: deque[tuple[float, str, list[str]]] = deque()  # (when sent, holder, ids)
        self._every_check = Every(COPY_CHECK_EVERY)

    # ---- events ---------------------------------------------------------------------------------------------
    def kept_copy(self, obj: str, owner: str, now: float) -> None:
        """A put's replica kept here for ``owner`` (``STORE``); the node answers ``STORED`` itself."""
        self.copies[obj] = owner
        self._restate_due.append((now, obj))
        self.orphans.pop(obj, None)
        if not self._reachable(owner):
            self.orphans[obj] = now + ORPHAN_GRACE

    def kept_result(self, owner: str, result: M.Result, ep: int, now: float) -> None:
        """A result of ``owner``'s task stored here (large, or a map output's parts): its ``done`` may reach no
        owner -- ``owner`` dies first, or this node declares it dead and never sees it alive again -- and then
        nobody would ever free it. So it is handled like a put's replica: once its owner is dead, it goes after
        ``ORPHAN_GRACE`` unless an owner that adopted the task (its client failed over) claims it (CLAIM), or its
        owner comes back: not before every owner that counts it is dead. A later run of the same task here stores
        under the same ids, for a newer attempt or a newer client epoch (a new owner's run), or an older run
        finishes after a newer one: the newest run's record stands (its ``done`` is the one restated), and every
        owner that counted the copy under these ids -- its run's, or one that claimed it -- counts it still (none
        can tell the copies apart: an older-epoch run finishing after a CLAIM took the claim with it, and the
        former owner's free then took the copy its client's new owner counted). Invariant: a stored result is
        dropped once no live owner counts it, and only then."""
        parts = result.get("parts") or 0
        tid, att = result["id"], result["att"]
        done = cast("M.Result", {k: v for k, v in result.items() if k != "dt"})  # restated as it was (``tick``)
        for obj in [f"{tid}#{j}" for j in range(parts)] if parts else [tid]:
            old = self.results.get(obj)
            if old is None:
                run = StoredRun((owner,), ep, att, done)
            elif (old.ep, old.att) > (ep, att):  # a newer run's copy, the same value: its record stands
                run = StoredRun(old.owners if owner in old.owners else (*old.owners, owner), old.ep, old.att, old.done)
            else:
                run = StoredRun((owner, *(o for o in old.owners if o != owner)), ep, att, done)
            self.results[obj] = run
            self.orphans.pop(obj, None)
            if not any(map(self._reachable, run.owners)):
                self.orphans[obj] = now + ORPHAN_GRACE

    def claimed(self, src: str, ids: Iterable[object], now: float) -> None:
        """Owner ``src`` adopted these objects and counts this node's copies: a put's, whose client failed over to
        it, is its to free from now on; a task's result is one it may free too (the owner whose run stored it may
        still count it: a spread client's input carried to another shard). Neither is an orphan any more -- unless no
        owner that counts it is reachable from here (a CLAIM from an owner this node has declared dead, on its way):
        then it goes after ``ORPHAN_GRACE`` like any orphan."""
        for obj in ids:
            if not isinstance(obj, str):
                continue
            if obj in self.copies:
                self.copies[obj] = src
            elif (run := self.results.get(obj)) is not None:
                if src not in run.owners:
                    run.owners = (*run.owners, src)
            elif src != self.me and self._stored(obj) and not self._fetched(obj):
                # a put made here, by the owner its client has left: the adopting owner frees it now, not this one
                self.copies[obj] = src
            else:
                continue
            if self._counted_live(obj):
                self.orphans.pop(obj, None)
            else:  # src is dead to this node: its CLAIM was on its way
                self.orphans.setdefault(obj, now + ORPHAN_GRACE)

    def claim_sent(self, holder: str, ids: list[str], now: float) -> None:
        """This node, as an owner, sent ``holder`` a CLAIM of ``ids``: it goes once more ``RESTATE_AFTER`` later
        (idempotent): a CLAIM lost on its way would leave the copy to the former owner's free."""
        self._claim_again.append((now, holder, ids))

    def free(self, src: str, ids: Iterable[str], now: float, hold: bool = False) -> list[CopyInstruction]:
        """Owner ``src`` frees these objects here. A copy that another owner counts is not freed: a result that a
        newer run stored here for other owners (the same ids: the task ran again, for the owner its client failed
        over to) or that an owner adopting its task claimed, and a put's copy claimed by the owner its client
        failed over to (CLAIM) -- ``src`` is a former owner, still alive, that its own bookkeeping lets free it
        (its client fell silent past the memory lease, or told it to let go: ``Owner.detach``). An object this
        book does not know (a put's own copy on its node, a fetched copy) is deleted.

        ``hold``: ``src`` frees them because their client failed over to another owner (``Owner.detach``), which
        claims the copies it counts at about the same moment: a copy no other owner counts yet is kept
        ``FREE_HOLD`` s as an orphan, for that claim, instead of going at once -- the free that reached the holder
        first took the copy the new owner counted, and it was recomputed when read."""
        out: list[CopyInstruction] = []
        results = self.results
        for obj in ids:
            owner = self.copies.get(obj)
            if owner is not None and owner != src:
                self.counters["claimed_copies_kept"] += 1
                continue
            run = results.get(obj)
            if run is not None:
                if src not in run.owners:
                    self.counters["replaced_copies_kept"] += 1
                    continue
                owners = tuple(o for o in run.owners if o != src)
                if owners or hold:  # another owner that adopted the task counts it too, or may claim it now
                    run.owners = owners
                    if not owners:
                        self.counters["freed_copies_held"] += 1
                        self.orphans.setdefault(obj, now + FREE_HOLD)
                    elif not any(map(self._reachable, owners)):
                        self.orphans.setdefault(obj, now + ORPHAN_GRACE)
                    continue
                del results[obj]
                self.orphans.pop(obj, None)
            out.append(DeleteCopy(obj))
        return out

    def dropped(self, objs: Iterable[str]) -> None:
        """These stored results were deleted here by the executing node (their last reader ran: ``DropAfter``)."""
        for obj in objs:
            if self.results.pop(obj, None) is not None:
                self.orphans.pop(obj, None)

    def member_down(self, node: str, now: float) -> None:
        """``node`` is dead or left: the copies it owns, and the results no reachable owner counts any more, go
        after ``ORPHAN_GRACE`` unless an owner claims them or ``node`` comes back."""
        deadline = now + ORPHAN_GRACE
        for obj in [o for o, owner in self.copies.items() if owner == node and self._stored(o)]:
            self.orphans.setdefault(obj, deadline)
        for obj, run in self.results.items():
            if node in run.owners and not any(map(self._reachable, run.owners)) and self._stored(obj):
                self.orphans.setdefault(obj, deadline)

    def member_up(self, node: str) -> list[CopyInstruction]:
        """``node`` is back from the dead: the copies it owns say STORED again (one it counted as gone is freed),
        and neither they nor the results it counts are orphans any more (its results' DONE goes again with the
        next check)."""
        out = self._restate([o for o, owner in self.copies.items() if owner == node])
        for obj in [o for o in self.orphans if self.copies.get(o) == node
                    or ((run := self.results.get(o)) is not None and node in run.owners)]:  # fmt: skip
            del self.orphans[obj]
        return out

    def tick(self, now: float) -> list[CopyInstruction]:
        """Each copy says STORED once more ``RESTATE_AFTER`` s after it was kept (in the order they were kept: the
        cost is per copy, not per tick), and every ``COPY_CHECK_EVERY`` s. Copies whose owner died and that no other
        owner claimed (CLAIM) within ``ORPHAN_GRACE`` go: a client that fails over hands its puts to a new owner at
        once, which claims the copies it counts; one it does not count, or a client that is gone too, leaves a copy
        nobody would ever free. Stored results likewise (``kept_result``), claimed by an owner that adopts their
        task done."""
        if not (self.copies or self._restate_due or self.results or self._claim_again):
            return []
        out: list[CopyInstruction] = []
        due = self._restate_due
        while due and due[0][0] <= now - RESTATE_AFTER:
            out += self._restate([due.popleft()[1]])
        claims = self._claim_again
        while claims and claims[0][0] <= now - RESTATE_AFTER:
            _, holder, ids = claims.popleft()
            out.append(SendClaim(holder, ids))
        for obj, at in list(self.orphans.items()):
            if at <= now:
                del self.orphans[obj]
                if self._counted_live(obj):
                    continue  # an owner is reachable again (a member this node had not heard of, say)
                put = self.copies.pop(obj, None) is not None
                self.results.pop(obj, None)
                if self._stored(obj):
                    out.append(DeleteCopy(obj))
                    self.counters["orphan_copies_dropped" if put else "orphan_results_dropped"] += 1
        if self._every_check.due(now):
            for obj in [o for o in self.copies if not self._stored(o)]:  # freed (FREE, lease): forgotten here too
                del self.copies[obj]
                self.orphans.pop(obj, None)
            for obj in [o for o in self.results if not self._stored(o)]:
                del self.results[obj]
                self.orphans.pop(obj, None)
            # and each stored result's DONE to the owners that count it, once a task: a DONE or a FREE lost on its
            # way is made good (``Owner.completed``: the result taken, or the copy freed if nobody counts it here)
            again: dict[str, dict[str, M.Result]] = {}
            for obj, run in self.results.items():
                if obj not in self.orphans:
                    for owner in run.owners:
                        again.setdefault(owner, {})[run.done["id"]] = run.done
            out += [SendDone(o, list(d.values())) for o, d in again.items() if o != self.me and self._reachable(o)]
            # a FREE lost on its way: told again, the owner frees the copy
            out += self._restate([o for o in self.copies if o not in self.orphans])
        return out

    def _counted_live(self, obj: str) -> bool:
        """Whether an owner that counts ``obj`` here is reachable: a stored result's owners, or a put copy's."""
        run = self.results.get(obj)
        if run is not None:
            return any(map(self._reachable, run.owners))
        owner = self.copies.get(obj)
        return owner is not None and self._reachable(owner)

    def _restate(self, objs: Iterable[str]) -> list[CopyInstruction]:
        """Say STORED again for these replicas kept here: a STORED lost on the way (its origin cut off, paused or
        declared dead meanwhile, or the message dropped) left a copy that no owner counts, and so none would ever
        free; told again, the owner counts it, or frees it if it no longer wants it (``Owner.add_location``).
        Idempotent either way."""
        out: list[CopyInstruction] = []
        for obj in objs:
            owner = self.copies.get(obj)
            if owner is not None and owner != self.me and self._reachable(owner) and self._stored(obj):
                out.append(SayStored(owner, obj))
        return out
