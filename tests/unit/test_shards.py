"""The client's routing and failover core (meshaios/shards.py): pure, exact outputs, no event loop."""

from __future__ import annotations

from typing import Any

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from meshaios.shards import FailOver, Open, Release, Resolve, Shards, Submit
from meshaios.wire import messages as M
from meshaios.wire.payload import Payload

FN = Payload(b"\xa1f")
ARGS = Payload(b"\x90")


def spec(tid: str, *deps: str) -> M.SubmitTask:
    return {"id": tid, "fn": FN, "args": ARGS, "deps": list(deps)}


def core(n: int = 3, spread: int | None = None, **kw: Any) -> Shards:
    """A core with ``n`` shards attached to nodes n0.. at addresses a0.. at time 0."""
    c = Shards("c1", spread or n, **kw)
    assert c.attached(c.new_shard("a0"), "a0", "n0", 0.0) == []
    opens = c.learn_peers([f"a{i}" for i in range(n + 1)], 0.0)  # one spare node for failovers
    assert opens == [Open(i, f"a{i}") for i in range(1, n)]
    for o in opens:
        assert c.attached(o.sid, o.address, f"n{o.sid}", 0.0) == []
    return c


def add(c: Shards, s: M.SubmitTask) -> Submit | None:
    c.add(s)
    out = c.route(s)
    assert not isinstance(out, Resolve)
    return out


def ids(sub: Submit | None) -> list[str]:
    assert sub is not None
    return [s["id"] for s in sub.specs]


def test_one_shard_is_the_client_of_before() -> None:
    c = Shards("c1", 1)
    sid = c.new_shard("a0")
    c.attached(sid, "a0", "n0", 0.0)
    assert c.ident(sid) == "c1"  # the same identity, so the same fence and leases as a single-owner client
    assert c.learn_peers(["a0", "a1", "a2"], 0.0) == []  # never a second shard
    subs = [add(c, spec(f"t{i}")) for i in range(4)]
    assert {s.sid for s in subs if s is not None} == {0}
    d = add(c, spec("d", "t0", "t3"))
    assert d is not None
    assert ids(d) == ["d"]


def test_more_shards_open_as_peers_appear_up_to_spread() -> None:
    c = Shards("c1", 3)
    c.attached(c.new_shard("a0"), "a0", "n0", 0.0)
    out = c.learn_peers(["a0", "a1"], 0.0)
    assert out == [Open(1, "a1")]
    assert c.ident(1) == "c1.1"  # its own identity: its own epoch, fence and lease on the nodes
    assert c.learn_peers(["a0", "a1"], 0.5) == []  # already opening
    c.open_failed(1, "a1", 1.0)
    assert c.learn_peers(["a0", "a1", "a2"], 1.0) == [Open(2, "a2")]
    assert c.tick(2.0) == []  # a1 failed a moment ago: not again yet
    c.attached(2, "a2", "n2", 2.0)
    c.heard(0, 6.0)
    assert c.tick(6.5) == [Open(3, "a1")]  # after reopen_after, tried again
    c.attached(3, "a1", "n1", 6.6)
    assert c.learn_peers(["a0", "a1", "a2", "a3"], 7.0) == []  # three shards: the spread


def test_independent_tasks_go_to_the_least_loaded_shard() -> None:
    c = core(3)
    subs = [add(c, spec(f"t{i}")) for i in range(6)]
    assert sorted(s.sid for s in subs if s is not None) == [0, 0, 1, 1, 2, 2]
    for t in ("t0", "t3"):  # both on one shard (least loaded is round robin among equals)
        c.finish(t, True, {"v": ARGS})
    freed = {0, 1, 2} - {c.shard_of[t] for t in ("t1", "t2", "t4", "t5")}
    nxt = add(c, spec("u"))
    assert nxt is not None
    assert nxt.sid in freed | {nxt.sid}
    assert len(c.shards[nxt.sid].tasks) <= 2


def test_a_task_goes_to_the_shard_owning_its_unfinished_inputs() -> None:
    c = core(3)
    a, b = add(c, spec("a")), add(c, spec("b"))
    assert a is not None
    assert b is not None
    assert a.sid != b.sid
    d = add(c, spec("d", "a", "a"))
    assert d is not None
    assert d.sid == a.sid
    assert ids(d) == ["d"]


def test_inputs_on_two_shards_hold_the_task_until_the_remote_one_finished() -> None:
    c = core(3)
    a, b = add(c, spec("a")), add(c, spec("b"))
    assert a is not None
    assert b is not None
    assert add(c, spec("d", "a", "b")) is None  # held here
    e = add(c, spec("e", "d"))  # depends on a held task: held too, for the same target
    assert e is None
    assert c.held["e"][0] == c.held["d"][0]
    target = c.held["d"][0]
    other = "b" if target == a.sid else "a"
    mine = "a" if other == "b" else "b"
    assert c.finish(mine, True, {"v": ARGS}) == []  # the input on the target shard: still waiting for the other
    out = c.finish(other, True, {"loc": ["n9"], "size": 10, "parts": 0})
    subs = [o for o in out if isinstance(o, Submit)]
    assert [s.sid for s in subs] == [target, target]
    first = subs[0].specs
    assert [s["id"] for s in first] == [other, "d"] or [s["id"] for s in first] == [mine, other, "d"]
    carried = {s["id"]: s for s in first}[other]
    assert carried.get("done") == {"loc": ["n9"], "size": 10, "parts": 0}
    assert carried.get("rel") is False
    assert ids(subs[1]) == ["e"]  # sent right behind the task it waits for
    assert not c.held


def test_an_input_carried_to_another_shard_is_not_released_there_while_a_reader_is_unfinished() -> None:
    """A shuffle: map outputs a and b on two shards, released at once (``mapreduce`` drops the map futures), two
    reducers held for them. Sent along as ``done`` with ``rel``, an input is adopted released: its new owner frees
    the one copy -- shared with its first owner -- as soon as its own reader finishes, under the other reducer (seen:
    reducers failing with lost inputs, recomputed maps, then a WireError). It goes unreleased, and the release,
    held back until the last reader finishes, reaches every shard that knows it."""
    c = core(3)
    a, b = add(c, spec("a")), add(c, spec("b"))
    assert a is not None
    assert b is not None
    assert a.sid != b.sid
    assert add(c, spec("r0", "a#0", "b#0")) is None
    assert add(c, spec("r1", "a#1", "b#1")) is None
    target = c.held["r0"][0]
    assert c.release("a") == []
    assert c.release("b") == []
    out = c.finish("a", True, {"loc": ["n1"], "size": 10, "parts": 2})
    out += c.finish("b", True, {"loc": ["n2"], "size": 10, "parts": 2})
    carried = [s for sub in out if isinstance(sub, Submit) for s in sub.specs if "done" in s]
    assert carried
    assert all(s["rel"] is False for s in carried)
    assert {s["id"] for sub in out if isinstance(sub, Submit) for s in sub.specs} >= {"r0", "r1"}
    early = [*c.routed_releases(), *c.finish("r0", True, {"v": ARGS})]
    # an input whose readers all went to its own owner may go at once (that owner keeps it for them); the one
    # carried to the other shard waits for its last reader, r1
    far = "a" if target != a.sid else "b"
    assert all(isinstance(r, Release) and far not in r.ids for r in early)
    rel = [*early, *c.finish("r1", True, {"v": ARGS})]
    assert all(isinstance(r, Release) for r in rel)
    assert {(r.sid, i) for r in rel for i in r.ids} == {(a.sid, "a"), (b.sid, "b"), (target, "a"), (target, "b")}


def test_an_input_that_failed_elsewhere_fails_the_held_task_here() -> None:
    c = core(2)
    add(c, spec("a"))
    add(c, spec("b"))
    assert add(c, spec("d", "a", "b")) is None
    other = "a" if c.held["d"][0] == c.shard_of["b"] else "b"
    out = c.finish(other, False, None, {"type": "ValueError", "msg": "no", "tb": "tb", "node": "n1"})
    assert len(out) == 1
    assert isinstance(out[0], Resolve)
    r = out[0].result
    assert r["id"] == "d"
    assert r["ok"] is False
    assert r["err"]["type"] == "ValueError"
    assert r["err"]["msg"] == f"dependency {other} failed: no"
    assert c.finish("d", False, None, r["err"]) == []  # the shell settles it through finish: nothing more


def test_a_cancelled_held_task_is_settled_here() -> None:
    c = core(2)
    add(c, spec("a"))
    add(c, spec("b"))
    add(c, spec("d", "a", "b"))
    settled = c.cancel_held("d")
    assert settled is not None
    assert settled.result["err"]["type"] == "meshaios.Cancelled"
    assert c.cancel_held("a") is None  # sent: cancelled by its owner instead
    assert c.by_shard(["a", "b", "d"]) == {c.shard_of["a"]: ["a"], c.shard_of["b"]: ["b"]}


def test_a_silent_shard_fails_over_alone_and_its_work_is_resubmitted_with_lineage() -> None:
    c = core(3, heartbeat_timeout=5.0)
    for i in range(6):
        add(c, spec(f"t{i}"))
    victim = c.shard_of["t0"]
    mine = sorted(c.shards[victim].tasks)
    done = mine[0]
    c.finish(done, True, {"loc": [f"n{victim}"], "size": 1 << 20, "parts": 0})
    dep = add(c, spec("d", done, mine[1]))
    assert dep is not None
    assert dep.sid == victim
    for s in c.shards.values():
        if s.sid != victim:
            c.heard(s.sid, 6.0)
    out = c.tick(6.0)
    assert out == [FailOver(victim, ["a3", *(f"a{s}" for s in range(3) if s != victim)], 6.0)]
    assert c.tick(6.5) == []  # under way: not twice
    out = c.attached(victim, "a3", "n3", 7.0)
    assert len(out) == 1
    assert isinstance(out[0], Submit)
    sub = out[0]
    assert sub.sid == victim
    assert sub.resubmit
    sent = [s["id"] for s in sub.specs]
    assert sorted(sent) == sorted([*mine, "d"])  # its pending tasks and the finished input they need
    assert sent.index(done) < sent.index("d")
    assert sent.index(mine[1]) < sent.index("d")
    assert {s["id"]: s for s in sub.specs}[done].get("done") == {"loc": [f"n{victim}"], "size": 1 << 20, "parts": 0}
    assert c.shards[victim].epoch == 1
    assert c.failovers == 1
    assert [s.epoch for s in c.shards.values() if s.sid != victim] == [0, 0]
    assert c.shards[victim].address == "a3"


def test_a_failover_brings_every_stored_result_the_former_node_counted_along_done() -> None:
    """Not only the finished inputs a pending task reads: every result of ours stored on an executor that the
    former node counted goes along done at once, so the new node claims its copy before the former owner frees it
    (at its DETACH, or when its memory lease runs out). Brought along only with a task submitted later that read
    it, it was recomputed. A value held here (inline) or a released result: not sent."""
    c = core(1, heartbeat_timeout=5.0)
    for t in ("big", "small", "gone", "running"):
        add(c, spec(t))
    where: M.Location = {"loc": ["n9"], "size": 1 << 20, "parts": 0}
    c.finish("big", True, where)
    c.finish("gone", True, where)
    c.finish("small", True, {"v": Payload(b"1")})
    c.release("gone")
    assert c.tick(6.0) == [FailOver(0, ["a1"], 6.0)]
    (sub,) = c.attached(0, "a1", "n1", 7.0)
    assert isinstance(sub, Submit)
    assert sorted(ids(sub)) == ["big", "running"]
    big = next(s for s in sub.specs if s["id"] == "big")
    assert big.get("done") == where
    assert big.get("rel") is False


def test_a_shard_heard_again_in_time_does_not_fail_over() -> None:
    c = core(2, heartbeat_timeout=5.0)
    add(c, spec("t0"))
    c.heard(0, 4.0)
    c.heard(1, 4.0)
    assert c.tick(8.9) == []
    c.heard(0, 9.0)
    out = c.tick(9.5)
    assert out == [FailOver(1, ["a2", "a0"], 5.5)]


def test_a_silent_shard_fails_over_to_a_node_of_ours_that_answers_when_no_node_lists_peers() -> None:
    """The last PONG came from a node cut off from the others (it lists no live peer), yet our other shard's
    node answers: the silent shard fails over there, not nowhere (found by the fault-injection test)."""
    c = core(2, heartbeat_timeout=5.0)
    c.learn_peers([], 0.0)
    add(c, spec("t0"))
    add(c, spec("t1"))
    c.heard(0, 6.0)
    assert c.tick(6.0) == [FailOver(1, ["a0"], 6.0)]


def test_a_shard_back_on_its_own_node_keeps_what_that_node_knows() -> None:
    c = core(2, heartbeat_timeout=1.0)
    add(c, spec("a"))
    add(c, spec("b"))
    sid = c.shard_of["a"]
    c.finish("a", True, {"v": ARGS})
    add(c, spec("x"))
    d = add(c, spec("d", "a"))
    assert d is not None
    assert ids(d) == ["d"]
    c.heard(1 - sid, 2.0)
    assert c.tick(2.0)[0] == FailOver(sid, ["a2", f"a{1 - sid}"], 2.0)
    out = c.attached(sid, f"a{sid}", f"n{sid}", 3.0)  # the same node answered again (it was paused)
    assert isinstance(out[0], Submit)
    assert "a" not in [s["id"] for s in out[0].specs]
    assert c.shards[sid].epoch == 1


def test_a_shard_without_progress_is_reconciled_with_its_own_node() -> None:
    c = core(2, reconcile_after=10.0)
    add(c, spec("a"))
    add(c, spec("b"))
    for t in (5.0, 9.0):
        c.heard(0, t)
        c.heard(1, t)
        assert c.tick(t) == []
    c.progress(c.shard_of["b"], 9.0)
    c.heard(0, 11.0)
    c.heard(1, 11.0)
    out = c.tick(11.0)
    assert len(out) == 1
    assert isinstance(out[0], Submit)
    assert out[0].sid == c.shard_of["a"]
    assert [s.get("rc") for s in out[0].specs] == [True]
    assert c.reconciles == 1


def test_a_release_waits_while_a_task_on_another_shard_needs_the_object() -> None:
    c = core(2)
    add(c, spec("a"))
    add(c, spec("b"))
    owner_a = c.shard_of["a"]
    c.finish("a", True, {"loc": ["n0"], "size": 100, "parts": 0})
    c.finish("b", True, {"v": ARGS})
    add(c, spec("x"))  # loads shard of a: d goes to the other, with a carried as done
    add(c, spec("y"))
    d = add(c, spec("d", "a", "b"))
    assert d is not None
    if d.sid == owner_a:
        return  # a tie broken towards a's owner: nothing crossed
    assert "a" in ids(d)
    assert c.release("a") == []  # deferred: d at the other shard fetches it from where it lives
    out = c.finish("d", True, {"v": ARGS})
    assert sorted(o.sid for o in out if isinstance(o, Release)) == sorted({owner_a, d.sid})


def test_an_input_read_only_on_its_own_shard_is_released_once_its_reader_is_sent() -> None:
    """Issue 17 (performance.md section 15): the owner keeps an input for a reader it was sent itself, so the
    client's release of that input does not wait for the reader's result; it goes right after the reader's SUBMIT
    (``routed_releases``), or at once if the reader was sent already."""
    c = core(1)
    add(c, spec("s"))
    c.add(spec("m", "s"))  # submitted, not routed yet (the window's outbox): the release waits
    assert c.release("s") == []
    assert c.routed_releases() == []
    assert ids(c.route(spec("m", "s")))[-1] == "m"
    assert c.routed_releases() == [Release(0, ["s"])]  # after the SUBMIT of m, on the same connection
    add(c, spec("p", "m"))
    assert c.release("m") == [Release(0, ["m"])]  # p was sent to m's own shard already
    assert c.finish("m", True, {"loc": ["n0"], "size": 100, "parts": 0}) == []
    assert c.finish("p", True, {"v": ARGS}) == []  # nothing left to release


def test_an_input_also_known_on_another_shard_waits_for_every_reader() -> None:
    c = core(2)
    add(c, spec("a"))
    owner_a = c.shard_of["a"]
    c.finish("a", True, {"loc": ["n0"], "size": 100, "parts": 0})
    other = 1 - owner_a
    near = add(c, spec("n", "a"))
    assert near is not None
    assert near.sid == owner_a
    c.add(spec("f", "a"))
    c.shard_of["f"] = other
    far = c._send("f", other)  # a reader on the other shard, which takes a along as done
    assert "a" in ids(far)
    assert c.release("a") == []  # the other shard knows a too: a release there would free it under n
    assert c.finish("f", True, {"v": ARGS}) == []  # n still reads it, and a's RELEASE would reach both shards
    out = c.finish("n", True, {"v": ARGS})
    assert sorted(o.sid for o in out if isinstance(o, Release)) == [0, 1]


def test_puts_go_along_to_a_shard_that_does_not_know_them() -> None:
    c = core(2)
    c.put_done("p1", 1000, ["n0", "n1"], 0)
    d = add(c, spec("d", "p1"))
    assert d is not None
    assert d.sid == 0
    assert d.puts == []
    add(c, spec("x"))
    add(c, spec("y"))
    add(c, spec("z"))
    e = add(c, spec("e", "p1"))
    assert e is not None
    if e.sid == 1:
        assert e.puts == [["p1", 1000, ["n0", "n1"]]]


# ---- stateful: any interleaving of submissions, results and failovers -----------------------------------------------
class ShardsMachine(RuleBasedStateMachine):
    """Submissions of random DAGs, results in any order, shards failing over: the core never loses a task, never
    sends one whose unfinished inputs another shard owns, and never holds one forever."""

    def __init__(self) -> None:
        super().__init__()
        self.c = core(3, heartbeat_timeout=5.0)
        self.n = 0
        self.sent: dict[str, int] = {}  # task -> the shard it was last sent to
        self.now = 0.0

    def _take(self, out: list[Any]) -> None:
        for o in out:
            if isinstance(o, Submit):
                for s in o.specs:
                    if "done" not in s:
                        self.sent[s["id"]] = o.sid
                        for d in s["deps"]:
                            # an unfinished input is on the same owner
                            assert d not in self.c.pending or self.c.shard_of.get(d) == o.sid, (s["id"], d)
            elif isinstance(o, Resolve):
                self._take(self.c.finish(o.result["id"], False, None, o.result.get("err")))

    @rule(k=st.integers(0, 3), data=st.data())
    def submit(self, k: int, data: st.DataObject) -> None:
        known = sorted(self.c.specs)
        deps = data.draw(st.lists(st.sampled_from(known), max_size=k)) if known else []
        tid = f"t{self.n}"
        self.n += 1
        self.c.add(spec(tid, *deps))
        sub = self.c.route(self.c.specs[tid])
        if isinstance(sub, Resolve):
            assert any(d in self.c.failed for d in deps)
        if sub is not None:
            self._take([sub])

    @precondition(lambda self: any(t in self.c.pending for t in self.sent))
    @rule(data=st.data(), ok=st.booleans())
    def result(self, data: st.DataObject, ok: bool) -> None:
        tid = data.draw(st.sampled_from(sorted(t for t in self.sent if t in self.c.pending)))
        done: Any = {"v": ARGS} if ok else None
        self._take(self.c.finish(tid, ok, done, None if ok else {"type": "E", "msg": "x"}))

    @rule(sid=st.integers(0, 2))
    def failover(self, sid: int) -> None:
        self.now += 6.0
        for s in self.c.shards:
            if s != sid:
                self.c.heard(s, self.now)
        out = self.c.tick(self.now)
        assert [o.sid for o in out if isinstance(o, FailOver)] == [sid]
        self._take(self.c.attached(sid, f"b{self.n}", f"m{self.n}", self.now))

    @invariant()
    def every_pending_task_is_somewhere_once(self) -> None:
        for tid in self.c.pending:
            owners = [s.sid for s in self.c.shards.values() if tid in s.tasks]
            assert (tid in self.c.held) != bool(owners), tid
            assert len(owners) <= 1

    @invariant()
    def nothing_held_without_a_reason(self) -> None:
        for tid, (_, blockers) in self.c.held.items():
            deps = {d for d in self.c.specs[tid]["deps"]}
            assert any(d in self.c.pending for d in deps), tid
            assert blockers <= deps

    def teardown(self) -> None:
        # everything finishes: nothing stays held
        while True:
            live = sorted(t for t in self.sent if t in self.c.pending and t not in self.c.held)
            if not live:
                break
            self._take(self.c.finish(live[0], True, {"v": ARGS}))
        assert not self.c.held
        assert not self.c.pending


ShardsMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestShardsStateful = ShardsMachine.TestCase
