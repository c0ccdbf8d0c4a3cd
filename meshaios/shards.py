"""Which nodes own a client's tasks, and what the client does when one of them falls silent: a pure state machine.

A client spreads the ownership of its tasks over up to ``spread`` nodes (docs/architecture.md section 4). Each
*shard* is one connection to one node under a client identity of its own (``<client id>`` for shard 0, the entry
node; ``<client id>.<n>`` for the others), with an epoch of its own: every shard is, to the nodes, exactly the one
client of before -- fenced, leased, failed over and reconciled on its own (tasks/epochs.py). This module decides,
with no sockets and no clock (events and ``now`` in, instructions out; ``AsyncClient`` is the shell):

- **where each task goes** (``route``): a task with unfinished dependencies goes to the shard that owns them; one
  whose unfinished dependencies are owned by several shards goes to the shard owning most of them and is *held*
  here until the others have finished; then it is sent with those inputs as finished tasks (``done``: the value,
  or where it lives, plus their lineage), which the owner adopts as it does after a failover. A task with no
  unfinished dependency goes to the shard that already knows most of its inputs, else to the least loaded shard.
- **when a shard has failed** (``tick``): silent past ``heartbeat_timeout``: ``FailOver`` with candidates (live
  nodes that host no shard of ours first). Once the shell has attached it elsewhere (``attached``) its epoch goes
  up and its unfinished tasks go to the new node with their lineage (``Submit``); the other shards carry on.
- **when an owner has lost work** (``tick``): a shard with pending tasks and no result for ``reconcile_after``
  is reconciled: its pending tasks go again to the same node, marked ``rc``.
- **what the client's lineage is**: the specs kept for failover, what it knows of finished ones, releases (a
  release is held back while a task on another shard still needs the object, so that its owner does not free it
  under that task).

``spread=1`` is the single-owner client of before: one shard, the client id as it was, the same failover.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from meshaios.tasks.owner import dep_error
from meshaios.wire import messages as M

Done = M.InlineValue | M.Location


def base(dep: str) -> str:
    """A dependency names a task, or one part of a shuffle map output (``id#j``)."""
    return dep.split("#", 1)[0]


def topological(specs: dict[str, M.SubmitTask]) -> list[str]:
    """Dependencies before dependents, so an owner knows every input when a task arrives."""
    order: list[str] = []
    seen: set[str] = set()
    for root in specs:
        stack: list[tuple[str, bool]] = [(root, False)]
        while stack:
            tid, expanded = stack.pop()
            if expanded:
                order.append(tid)
                continue
            if tid in seen:
                continue
            seen.add(tid)
            stack.append((tid, True))
            for d in specs[tid]["deps"]:
                b = base(d)
                if b in specs and b not in seen:
                    stack.append((b, False))
    return order


# ---- instructions ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Submit:
    """Send these specs to shard ``sid`` (in this order, under its epoch), after an ADOPT of ``puts`` if any."""

    sid: int
    specs: list[M.SubmitTask]
    puts: list[list[Any]] = field(default_factory=list)  # [id, size, [holder ids]]
    resubmit: bool = False  # a failover's or a reconcile's: counted in ``resubmitted``


@dataclass(frozen=True, slots=True)
class Open:
    """Attach a new shard ``sid`` to the node at ``address`` (then ``attached``, or ``open_failed``)."""

    sid: int
    address: str


@dataclass(frozen=True, slots=True)
class FailOver:
    """Shard ``sid`` is silent: attach it to one of ``candidates`` (in order, in rounds), then ``attached``."""

    sid: int
    candidates: list[str]
    silent: float


@dataclass(frozen=True, slots=True)
class Resolve:
    """A held task that will never be sent (an input failed): its result, made here."""

    result: M.Result


@dataclass(frozen=True, slots=True)
class Release:
    """Tell shard ``sid``'s node that the client no longer holds these objects."""

    sid: int
    ids: list[str]


Instruction = Submit | Open | FailOver | Resolve | Release


@dataclass(slots=True)
class Shard:
    sid: int
    ident: str  # the client identity this shard speaks under
    address: str
    node: str = ""  # the node id, once it welcomed us
    epoch: int = 0
    heard: float = 0.0
    progress: float = 0.0  # last result from it (or since it had nothing pending)
    failing: bool = False  # silent: a FailOver is under way
    tasks: set[str] = field(default_factory=set)  # pending tasks it owns
    puts: set[str] = field(default_factory=set)  # puts it (or, after a failover, its new node) holds


def shard_ident(client_id: str, sid: int) -> str:
    return client_id if sid == 0 else f"{client_id}.{sid}"


class Shards:
    """The client's routing and failover core. Not thread-safe: the client's loop thread only."""

    def __init__(
        self,
        client_id: str,
        spread: int = 1,
        heartbeat_timeout: float = 5.0,
        reconcile_after: float = 60.0,
        reopen_after: float = 5.0,
    ) -> None:
        self.client_id = client_id
        self.spread = max(1, spread)
        self.heartbeat_timeout = heartbeat_timeout
        self.reconcile_after = reconcile_after  # 0: never
        self.reopen_after = reopen_after  # an address that failed to open a shard is not tried again before this
        self.shards: dict[int, Shard] = {}
        self.peers: list[str] = []  # live members' addresses, as the last PONG listed them
        self._opening: dict[int, str] = {}
        self._open_failed: dict[str, float] = {}
        self._sids = itertools.count()
        self._rr = 0
        # lineage kept for failover and for inputs crossing shards
        self.specs: dict[str, M.SubmitTask] = {}
        self.users: dict[str, int] = {}  # kept specs that name this task as an input
        self.released: set[str] = set()
        self.finished: dict[str, Done] = {}  # finished tasks whose specs we keep: value or where it lives
        self.failed: dict[str, M.ErrorInfo] = {}  # failed tasks whose specs we keep: why
        self.pending: set[str] = set()  # enqueued and not finished
        self.shard_of: dict[str, int] = {}  # pending tasks sent (or held for) a shard
        self.known: dict[str, set[int]] = {}  # shards whose current node knows this task or put
        self.held: dict[str, tuple[int, set[str]]] = {}  # task -> (target shard, unfinished inputs elsewhere)
        self._blocks: dict[str, set[str]] = {}  # unfinished input -> held tasks waiting for it
        self.puts: dict[str, tuple[int, list[str]]] = {}  # live puts: size and holders
        self._readers: dict[str, int] = {}  # unfinished tasks that name this object as an input
        self._deferred: set[str] = set()  # released by the client while some still do
        # of ``_readers``: those sent to the shard that owns the object, whose owner keeps it for them by itself
        # (``_near_readers``); such readers alone do not defer a release
        self._near: dict[str, int] = {}
        self._near_of: dict[str, tuple[str, ...]] = {}  # a task sent so -> the inputs it counts in ``_near``
        self._freed_by_send: list[Instruction] = []  # releases that sending a task allowed (``routed_releases``)
        self.failovers = 0
        self.reconciles = 0
        self.resubmitted = 0

    # ---- shards ------------------------------------------------------------------------------------------------
    def new_shard(self, address: str) -> int:
        """A shard about to be attached (the first one by ``connect``)."""
        sid = next(self._sids)
        self._opening[sid] = address
        return sid

    def ident(self, sid: int) -> str:
        return shard_ident(self.client_id, sid)

    def live(self) -> list[Shard]:
        return [s for s in self.shards.values() if not s.failing]

    def entry(self) -> Shard | None:
        return self.shards.get(min(self.shards)) if self.shards else None

    def attached(self, sid: int, address: str, node: str, now: float) -> list[Instruction]:
        """Shard ``sid`` is attached to ``node`` at ``address``: a new shard, or one that failed over (then a new
        epoch, and its unfinished tasks with their lineage go to its new node)."""
        self._opening.pop(sid, None)
        self._open_failed.pop(address, None)
        shard = self.shards.get(sid)
        if shard is None:
            self.shards[sid] = Shard(sid, self.ident(sid), address, node, heard=now, progress=now)
            return []
        same = node == shard.node
        shard.address, shard.node, shard.heard, shard.progress, shard.failing = address, node, now, now, False
        shard.epoch += 1
        self.failovers += 1
        stored: list[str] = []
        if not same:
            # our finished results stored on executors that the former node counted go along done now, not only
            # those a pending task reads: the new node claims their copies at once, before the former owner frees
            # them (at its DETACH, or when its memory lease for us runs out) -- brought along only with a task
            # submitted later that reads one, it was recomputed (docs/reliability.md)
            stored = [t for t, where in self.known.items() if sid in where and t not in self.released
                      and t not in self.pending and (done := self.finished.get(t)) is not None and "loc" in done]
            for where in self.known.values():
                where.discard(sid)  # the new node knows nothing of ours
        return [self._resend(shard, also=stored)]

    def open_failed(self, sid: int, address: str, now: float) -> None:
        self._opening.pop(sid, None)
        self._open_failed[address] = now

    def heard(self, sid: int, now: float) -> None:
        shard = self.shards.get(sid)
        if shard is not None:
            shard.heard = now

    def learn_peers(self, addresses: list[str], now: float) -> list[Instruction]:
        """The live members a node listed: failover candidates, and where to open more shards."""
        self.peers = list(dict.fromkeys(addresses))
        return self._grow(now)

    def _grow(self, now: float) -> list[Instruction]:
        used = {s.address for s in self.shards.values()} | set(self._opening.values())
        out: list[Instruction] = []
        for addr in self.peers:
            if len(self.shards) + len(self._opening) >= self.spread:
                break
            if addr in used or now - self._open_failed.get(addr, -1e18) < self.reopen_after:
                continue
            sid = next(self._sids)
            self._opening[sid] = addr
            used.add(addr)
            out.append(Open(sid, addr))
        return out

    def tick(self, now: float) -> list[Instruction]:
        """Every 0.5 s: silent shards fail over; shards with no progress for ``reconcile_after`` are reconciled."""
        out: list[Instruction] = []
        for shard in list(self.shards.values()):
            if shard.failing:
                continue
            silent = now - shard.heard
            if silent > self.heartbeat_timeout:
                shard.failing = True
                out.append(FailOver(shard.sid, self._candidates(shard), silent))
            elif not shard.tasks:
                shard.progress = now
            elif self.reconcile_after > 0 and now - shard.progress > self.reconcile_after:
                # it answers but nothing has finished for a long while: nobody may have our work (a node restarted
                # behind the same address, an owner that let it go); idempotent by task id
                shard.progress = now
                self.reconciles += 1
                out.append(self._resend(shard, reconcile=True))
        out.extend(self._grow(now))
        return out

    def _candidates(self, shard: Shard) -> list[str]:
        """Where a silent shard may go: live nodes hosting no shard of ours first, then the others, its own last.
        The nodes of our shards that answer are candidates even when no node listed them: a node cut off from
        the others (or the last one left) lists no peer, yet it answers us."""
        busy = {s.address for s in self.shards.values() if not s.failing}
        listed = [*self.peers, *(s.address for s in self.shards.values() if not s.failing)]
        others = [a for a in dict.fromkeys(listed) if a != shard.address]
        return [*(a for a in others if a not in busy), *(a for a in others if a in busy)] or [shard.address]

    def _resend(self, shard: Shard, reconcile: bool = False, also: list[str] | None = None) -> Submit:
        roots = [t for t in shard.tasks if t not in self.held]
        if also:
            roots += also
        specs = self._closure(roots, shard.sid, reconcile=reconcile)
        self.resubmitted += len(specs)
        # unfinished tasks the client let go while they ran (a reader's input released early: ``_near_readers``):
        # the new node hears of that after their SUBMIT, as the former one did
        gone = [t for t in roots if t in self.released and t not in self._deferred]
        if gone:
            self._freed_by_send.append(Release(shard.sid, gone))
        puts = [[oid, *self.puts[oid]] for oid in sorted(shard.puts) if oid in self.puts]
        for oid in shard.puts:
            self.known.setdefault(oid, set()).add(shard.sid)
        return Submit(shard.sid, specs, puts, resubmit=True)

    # ---- tasks -------------------------------------------------------------------------------------------------
    def add(self, spec: M.SubmitTask) -> None:
        """A task enqueued by the caller: its spec is lineage until it is released and nothing kept needs it."""
        tid = spec["id"]
        self.specs[tid] = spec
        self.pending.add(tid)
        for d in spec["deps"]:
            b = base(d)
            self.users[b] = self.users.get(b, 0) + 1
        for b in {base(d) for d in spec["deps"]}:
            self._readers[b] = self._readers.get(b, 0) + 1

    def route(self, spec: M.SubmitTask) -> Submit | Resolve | None:
        """Where ``spec`` goes now, in submission order (its inputs were routed before it). None: held here until
        the inputs it needs from other shards have finished (then ``finish`` returns its ``Submit``). Resolve: an
        input has failed already, so it fails here as its owner would fail it."""
        tid = spec["id"]
        deps = list(dict.fromkeys(base(d) for d in spec["deps"]))
        waiting: dict[int, int] = {}  # shard -> its unfinished inputs
        held_input = False
        for d in deps:
            if d in self.failed:
                self.shard_of.pop(tid, None)
                return Resolve(_failed_input(tid, d, self.failed[d]))
            if d in self.pending:
                if d in self.held:
                    held_input = True
                    waiting[self.held[d][0]] = waiting.get(self.held[d][0], 0) + 1
                elif d in self.shard_of:
                    waiting[self.shard_of[d]] = waiting.get(self.shard_of[d], 0) + 1
        target = max(waiting, key=lambda s: (waiting[s], -s)) if waiting else self._pick(deps)
        blockers = {d for d in deps if d in self.pending and (d in self.held or self.shard_of.get(d) != target)}
        self.shard_of[tid] = target
        if held_input or blockers:
            self.held[tid] = (target, blockers)
            for d in blockers:
                self._blocks.setdefault(d, set()).add(tid)
            return None
        return self._send(tid, target)

    def _pick(self, deps: list[str]) -> int:
        """No unfinished input: the live shard that knows most of the inputs, else the least loaded one."""
        live = self.live() or list(self.shards.values())
        if deps:
            score = {s.sid: sum(s.sid in self.known.get(d, ()) for d in deps) for s in live}
            best = max(score.values())
            if best > 0:
                live = [s for s in live if score[s.sid] == best]
        fewest = min(len(s.tasks) for s in live)
        least = [s for s in live if len(s.tasks) == fewest]
        self._rr += 1
        return least[self._rr % len(least)].sid

    def sent(self, tid: str, sid: int) -> None:
        """Task ``tid`` (added, with no inputs) was sent to shard ``sid`` without ``route``: recorded as ``route``
        records it (the sync client's caller thread sends such a task itself when nothing else is in flight)."""
        self._send(tid, sid)

    def _send(self, tid: str, sid: int) -> Submit:
        shard = self.shards[sid]
        shard.tasks.add(tid)
        self.shard_of[tid] = sid
        spec = self.specs[tid]
        if not spec["deps"]:  # the common case, kept cheap
            self.known[tid] = {sid}
            return Submit(sid, [spec])
        specs = self._closure([tid], sid)
        self.known.setdefault(tid, set()).add(sid)
        self._near_readers(tid, sid)
        puts: list[list[Any]] = []
        for d in self.specs[tid]["deps"]:
            b = base(d)
            if b in self.puts and sid not in self.known.get(b, set()):
                puts.append([b, *self.puts[b]])
                self.known.setdefault(b, set()).add(sid)
        return Submit(sid, specs, puts)

    def _near_readers(self, tid: str, sid: int) -> None:
        """``tid`` goes to shard ``sid``: its inputs that this shard's owner holds (pending there, or finished and
        known there, not puts) are kept by that owner for it as for any dependent, so the client need not defer
        their release for it. One the client released meanwhile and that no other reader holds back goes now
        (``routed_releases``, sent after this SUBMIT on the same connection): the owner then frees it as soon as its
        last consumer succeeds, not after that result has come to the client and a RELEASE gone back (the DAG
        benchmark: each 100 MiB intermediate held 30-70 ms into the next task of its node)."""
        if tid in self._near_of:
            return
        # ``known`` must name that shard alone: a RELEASE goes to every shard that knows the object, and a shard
        # that took it along as done for a reader of its own (``_closure``) is not the one that holds it for that
        # reader -- the other owner would free it under that reader
        near = tuple(
            b for b in {base(d) for d in self.specs[tid]["deps"]}
            if b not in self.puts and b not in self.held and self.known.get(b, _NOWHERE) == {sid}
            and (self.shard_of.get(b) == sid if b in self.pending else True)
        )  # fmt: skip
        if not near:
            return
        self._near_of[tid] = near
        for b in near:
            self._near[b] = self._near.get(b, 0) + 1
            if b in self._deferred and not self._held_back(b, self._readers.get(b, 0)):
                self._deferred.discard(b)
                self._freed_by_send.extend(self._release_now(b))

    def _held_back(self, b: str, readers: int) -> bool:
        """Whether releasing ``b`` must wait: an unfinished reader needs it that no owner keeps it for (held here,
        or sent to another shard, which took it along as done), or another shard knows it too -- a RELEASE goes to
        every shard that knows it, and that one would free it under the readers of its owner."""
        return readers > 0 and (readers > self._near.get(b, 0) or len(self.known.get(b, _NOWHERE)) > 1)

    def routed_releases(self) -> list[Instruction]:
        """Releases that routing allowed (``_near_readers``): to send after the SUBMITs of that routing."""
        out, self._freed_by_send = self._freed_by_send, []
        return out

    def _unnear(self, tid: str) -> None:
        for b in self._near_of.pop(tid, ()):
            k = self._near.get(b, 0) - 1
            if k > 0:
                self._near[b] = k
            else:
                self._near.pop(b, None)

    def _closure(self, roots: list[str], sid: int, reconcile: bool = False) -> list[M.SubmitTask]:
        """``roots`` with every input their owner on shard ``sid`` does not know yet: finished ones as ``done``
        (their value, or where it lives, with their own lineage), unfinished ones as they are."""
        need: dict[str, M.SubmitTask] = {}
        top = set(roots)
        stack = list(roots)
        while stack:
            tid = stack.pop()
            if tid in need or tid not in self.specs:
                continue
            if tid not in top and sid in self.known.get(tid, ()) and tid not in self.released:
                continue  # that node has it (a finished input of ours it still holds, or a task pending there)
            if tid not in top and tid in self.pending and self.shard_of.get(tid, sid) != sid:
                continue  # another shard owns it: never run twice (a task waiting for it is held, not sent)
            spec = self.specs[tid]
            done = self.finished.get(tid) if tid not in self.pending else None
            if done is not None:  # the owner takes it as done, and need not run it again
                # released only once no unfinished task of ours reads it: an owner that adopts it released would
                # free the one copy, shared with its first owner, when its own readers are done -- under a reader
                # on another shard (a shuffle's reducers, sent one by one). Otherwise the release follows to every
                # shard that knows it when its last reader finishes (``release``, ``_release_now``).
                spec = {**spec, "done": done, "rel": tid in self.released and not self._readers.get(tid)}
                self.known.setdefault(tid, set()).add(sid)
            elif reconcile and tid in self.pending:
                spec = {**spec, "rc": True}
            need[tid] = spec
            if done is None or "v" not in done:  # its lineage, should it have to be recomputed
                stack.extend(base(d) for d in spec["deps"])
        return [need[t] for t in topological(need)]

    def finish(self, tid: str, ok: bool, done: Done | None, err: M.ErrorInfo | None = None) -> list[Instruction]:
        """A task's result reached the client (first arrival only). ``done``: what an owner needs to take it as
        finished (None: not kept, or failed)."""
        if tid not in self.pending:
            return []
        self.pending.discard(tid)
        sid = self.shard_of.pop(tid, None)
        if sid is not None and sid in self.shards:
            shard = self.shards[sid]
            shard.tasks.discard(tid)
        self.held.pop(tid, None)
        if ok and done is not None and tid in self.specs:
            self.finished[tid] = done
        elif not ok and tid in self.specs:
            self.failed[tid] = err or {"type": "meshaios.TaskError", "msg": "failed"}
        out: list[Instruction] = []
        spec = self.specs.get(tid)
        if self._near_of:
            self._unnear(tid)
        for b in {base(d) for d in spec["deps"]} if spec is not None else ():
            n = self._readers.get(b, 0) - 1
            if n > 0:
                self._readers[b] = n
            else:
                self._readers.pop(b, None)
            if b in self._deferred and not self._held_back(b, n):
                self._deferred.discard(b)
                out.extend(self._release_now(b))
        for h in sorted(self._blocks.pop(tid, set())):
            if h not in self.held or h not in self.pending:
                continue
            target, blockers = self.held[h]
            if not ok:
                del self.held[h]
                out.append(Resolve(_failed_input(h, tid, err)))
                continue
            blockers.discard(tid)
            if not blockers:
                del self.held[h]
                out.append(self._send(h, target))
                out.extend(self._unblock(h))
        return out

    def _unblock(self, tid: str) -> list[Instruction]:
        """``tid`` was just sent: held tasks waiting only for it to leave (same target) go too."""
        out: list[Instruction] = []
        for h in sorted(self._blocks.get(tid, set())):
            if h not in self.held:
                continue
            target, blockers = self.held[h]
            if self.shard_of.get(tid) == target:
                blockers.discard(tid)
                self._blocks[tid].discard(h)
                if not blockers:
                    del self.held[h]
                    out.append(self._send(h, target))
                    out.extend(self._unblock(h))
        return out

    def progress(self, sid: int, now: float) -> None:
        shard = self.shards.get(sid)
        if shard is not None:
            shard.progress = now

    def sid_of(self, obj_id: str) -> int | None:
        """The shard to ask about an object (a GET): its owner, else any shard that knows it."""
        b = base(obj_id)
        sid = self.shard_of.get(b)
        if sid is not None and sid in self.shards:
            return sid
        where = self.known.get(b)
        return min(where) if where else None

    def put_done(self, oid: str, size: int, holders: list[str], sid: int) -> None:
        self.puts[oid] = (size, holders)
        self.known.setdefault(oid, set()).add(sid)
        self.shards[sid].puts.add(oid)

    def cancel_held(self, tid: str) -> Resolve | None:
        """Cancel a task still held here: it is settled at once (nothing of it has left)."""
        if tid not in self.held:
            return None
        del self.held[tid]
        self.shard_of.pop(tid, None)
        return Resolve({"id": tid, "ok": False, "err": {"type": "meshaios.Cancelled", "msg": f"{tid} cancelled"}})

    def release(self, tid: str) -> list[Instruction]:
        """The caller dropped its future: the owners may forget it -- once no unfinished task names it as an input
        (one held here, or sent to another shard, takes it along as done: its owner must not free it meanwhile),
        except those sent to its own owner, which keeps it for them (``_near_readers``)."""
        self.released.add(tid)
        self._drop(tid)
        if self._held_back(tid, self._readers.get(tid, 0)):
            self._deferred.add(tid)
            return []
        return self._release_now(tid)

    def _release_now(self, tid: str) -> list[Instruction]:
        where = self.known.pop(tid, set())
        if tid in self.puts:
            self.puts.pop(tid, None)
            for s in self.shards.values():
                s.puts.discard(tid)
        sid = self.shard_of.get(tid)
        if sid is not None:
            where.add(sid)
        if not where:
            entry = self.entry()
            where = {entry.sid} if entry is not None else set()
        return [Release(s, [tid]) for s in sorted(where) if s in self.shards]

    def _drop(self, key: str) -> None:
        """Forget a released task's spec once no kept spec needs it as an input."""
        stack = [key]
        while stack:
            k = stack.pop()
            if k not in self.released or self.users.get(k, 0) > 0 or k in self.pending:
                continue
            self.released.discard(k)
            self.finished.pop(k, None)
            self.failed.pop(k, None)
            spec = self.specs.pop(k, None)
            if spec is None:
                continue
            for d in spec["deps"]:
                b = base(d)
                n = self.users.get(b, 0) - 1
                if n <= 0:
                    self.users.pop(b, None)
                    stack.append(b)
                else:
                    self.users[b] = n

    def unsent(self, tids: list[str]) -> None:
        """These tasks were routed but never left (the shell lost them with a connection): as if never routed."""
        for tid in tids:
            sid = self.shard_of.pop(tid, None)
            if sid is not None and sid in self.shards:
                self.shards[sid].tasks.discard(tid)
            self._unnear(tid)

    def by_shard(self, ids: list[str]) -> dict[int, list[str]]:
        """Pending ids grouped by the shard that owns them (held and unsent ones left out)."""
        out: dict[int, list[str]] = {}
        for tid in ids:
            sid = self.shard_of.get(tid)
            if sid is not None and tid not in self.held and sid in self.shards:
                out.setdefault(sid, []).append(tid)
        return out


_NOWHERE: frozenset[int] = frozenset()


def _failed_input(tid: str, dep: str, err: M.ErrorInfo | None) -> M.Result:
    """What an owner says of a task whose input failed."""
    out = dep_error(dep, err)
    return {"id": tid, "ok": False, "err": out, "node": out.get("node", "")}
