"""Fenced ownership: which owner may have a client's work run, and who is owed each result.

A client's work is owned under an *epoch*: a counter the client bumps each time it fails over to another entry
node. It rides on every SUBMIT and, from the owner, on every task of a RUN. The newest epoch wins, everywhere:

- An executor (``RunFence``) remembers, per client, the newest epoch a RUN carried. A RUN of an older epoch comes
  from an owner the client has left (paused, partitioned away, declared dead and back): it is refused, and that
  owner is told (FENCED) so that it stops. A run of the same task and attempt that is already here for another
  owner of the same client is *adopted*, not run again: it runs once and its result goes to the newest owner that
  asked for it. One that is here for *another client's* owner is *taken*: the shards of a spread client each have
  an identity, and two of them may own one task (an input of both, carried from one to the other done) and
  recompute it from lineage at once, under the same attempt number; adopted, one owner's run went to the other
  and the first waited for ever. The later owner is told it moved to no node it knows (MOVED), and so places
  it again as a new attempt (``Owner.moved``): each owner gets a run of its own, as when the two land on two nodes.
- An owner (``ClientLeases``) abandons the work a client submitted under an older epoch as soon as it learns of a
  newer one -- from the client (DETACH, sent to the old entry node on failover), from an executor (FENCED), or
  from the client's own newer SUBMIT -- and holds back (does not dispatch) a client's work while the client is
  silent past its lease: a client on the far side of a partition, or one that has failed over, gets no work run
  on its behalf that nobody will collect.

Both are pure: events and a time in, decisions out; the node does the I/O.

>>> f = RunFence()
>>> f.offer(("t1", 0), Run("nodeA", "c:1", 0))
<Verdict.NEW: 'new'>
>>> f.offer(("t1", 0), Run("nodeB", "c:1", 1))   # the client failed over to B: the run here now reports to B
<Verdict.ADOPT: 'adopt'>
>>> f.offer(("t2", 0), Run("nodeA", "c:1", 0))   # A came back and carries on: refused
<Verdict.FENCED: 'fenced'>
>>> f.done(("t1", 0))
Run(owner='nodeB', client='c:1', ep=1)
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum

from meshaios.fastinit import fast_init

MAX_CLIENT_EPOCHS = 65536  # clients whose epoch an owner remembers


@fast_init
@dataclass(frozen=True, slots=True)
class Run:
    """Who asked for a run and is owed its result: an owner, for a client, under that client's epoch."""

    owner: str
    client: str = ""  # "" for a run whose owner does not say (no fencing applies)
    ep: int = 0


class Verdict(StrEnum):
    NEW = "new"  # run it
    DUPLICATE = "duplicate"  # the same run delivered twice: it is here already
    ADOPT = "adopt"  # the same task and attempt is here for another owner: it runs once, for the newest one
    TAKEN = "taken"  # the same task and attempt is here for another client's owner: this owner must place it again
    FENCED = "fenced"  # an owner the client has left: refuse, and tell it


class RunFence:
    """Executor side: the newest epoch seen per client (bounded, least recently used forgotten first) and the
    runs accepted here and not yet reported, each with the owner owed its result."""

    def __init__(self, max_clients: int = 4096) -> None:
        self.max_clients = max_clients
        self._epochs: OrderedDict[str, int] = OrderedDict()
        self._owners: dict[str, str] = {}  # client -> the owner that sent its newest epoch
        self.runs: dict[tuple[str, int], Run] = {}
        self.counters = {"fenced": 0, "adopted": 0, "duplicates": 0, "taken": 0}

    def epoch(self, client: str) -> int:
        return self._epochs.get(client, 0)

    def newest(self, client: str) -> Run | None:
        """The owner of the client's newest epoch seen here, as a run to report to (None: none seen)."""
        owner = self._owners.get(client)
        return Run(owner, client, self._epochs[client]) if owner is not None else None

    def __contains__(self, key: object) -> bool:
        return key in self.runs

    def __len__(self) -> int:
        return len(self.runs)

    def offer(self, key: tuple[str, int], run: Run) -> Verdict:
        if run.client:
            known = self._epochs.get(run.client)
            if known is not None and run.ep < known:
                self.counters["fenced"] += 1
                return Verdict.FENCED
            if known is None or run.ep > known:
                self._epochs[run.client] = run.ep
                self._owners[run.client] = run.owner
                if len(self._epochs) > self.max_clients:
                    gone, _ = self._epochs.popitem(last=False)
                    self._owners.pop(gone, None)
            self._epochs.move_to_end(run.client)
        cur = self.runs.get(key)
        if cur is None:
            self.runs[key] = run
            return Verdict.NEW
        if cur.owner == run.owner and cur.ep == run.ep:
            self.counters["duplicates"] += 1
            return Verdict.DUPLICATE
        if run.client and cur.client == run.client and cur.ep > run.ep:
            self.counters["fenced"] += 1  # unreachable while the epoch table remembers this client; kept exact
            return Verdict.FENCED
        if run.client and cur.client and cur.client != run.client and cur.owner != run.owner:
            self.counters["taken"] += 1  # another client's run (a spread client's other shard): not this one's
            return Verdict.TAKEN
        self.runs[key] = run
        self.counters["adopted"] += 1
        return Verdict.ADOPT

    def owner_of(self, key: tuple[str, int]) -> str | None:
        run = self.runs.get(key)
        return run.owner if run is not None else None

    def done(self, key: tuple[str, int]) -> Run | None:
        """The run finished (or left this node): who is owed its result."""
        return self.runs.pop(key, None)


class ClientLeases:
    """Owner side: per client with work here, its newest epoch and when it was last heard from.

    ``lease`` seconds of silence suspend a client (its work is held back, not dispatched); hearing from it again
    resumes it. ``lease`` 0 turns leases off (the pure owner's default; a node sets one)."""

    def __init__(self, lease: float = 0.0) -> None:
        self.lease = lease
        self._epochs: dict[bytes, int] = {}
        self._heard: dict[bytes, float] = {}
        self.suspended: set[bytes] = set()

    def epoch(self, client: bytes) -> int:
        return self._epochs.get(client, 0)

    def advance(self, client: bytes, ep: int) -> bool:
        """Record ``ep``; True if it is newer than what we knew."""
        if ep > self._epochs.get(client, 0):
            self._epochs[client] = ep
            if len(self._epochs) > MAX_CLIENT_EPOCHS:
                del self._epochs[next(iter(self._epochs))]  # the oldest entry: at worst, a late stale SUBMIT runs
            return True
        return False

    def heard(self, client: bytes, now: float) -> bool:
        """The client spoke. True if it was suspended (its held work may go out again)."""
        if client in self._heard or client in self.suspended:
            self._heard[client] = now
        if client in self.suspended:
            self.suspended.discard(client)
            return True
        return False

    def track(self, client: bytes, now: float) -> None:
        """The client has work here: its lease runs from now."""
        if self.lease <= 0:
            return
        self._heard[client] = now
        self.suspended.discard(client)

    def expire(self, now: float) -> list[bytes]:
        """Clients silent past the lease since the last call: suspended from now."""
        if self.lease <= 0:
            return []
        out = [c for c, t in self._heard.items() if now - t > self.lease and c not in self.suspended]
        self.suspended.update(out)
        return out

    def forget(self, client: bytes) -> None:
        """No work of this client is left here (its epoch is kept: it still fences a late, older SUBMIT)."""
        self._heard.pop(client, None)
        self.suspended.discard(client)
