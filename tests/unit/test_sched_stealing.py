"""Work stealing: the local queue, the cost gate, no ping-pong, and the two-phase hand-over under message loss."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshaios.sched.loadview import DeviceLoad, LoadView, make_summary
from meshaios.sched.stealing import (
    Moved,
    QueuedTask,
    Send,
    StealConfig,
    StealEngine,
    TasksArrived,
    TState,
    WorkQueue,
)

# ---------------------------------------------------------------------------------------------------- helpers


def _task(i: int, predicted: float = 1.0, nbytes: int = 0, path: list[str] | None = None) -> QueuedTask:
    return QueuedTask(id=f"t{i}", att=0, owner="own", kernel="k", predicted=predicted, nbytes=nbytes,
                      path=list(path or []), spec={"i": i})


def _view_of(victim: str, backlog: float = 50.0) -> LoadView:
    v = LoadView()
    v.update(victim, make_summary({"cpu": DeviceLoad(1, 0, backlog, 1.0)}, queued=10, stealable=10), 0.0)
    return v


def _sends(actions: list[Any], kind: str | None = None) -> list[Send]:
    return [a for a in actions if isinstance(a, Send) and (kind is None or a.msg["k"] == kind)]


def _pair(n_tasks: int = 10, predicted: float = 1.0, nbytes: int = 0, cfg: StealConfig | None = None,
          ) -> tuple[StealEngine, StealEngine]:
    vq = WorkQueue({"cpu": 1})
    for i in range(n_tasks):
        vq.push(_task(i, predicted, nbytes))
    victim = StealEngine("victim", vq, cfg)
    thief = StealEngine("thief", WorkQueue({"cpu": 2}), cfg)
    return victim, thief


def _exchange(victim: StealEngine, thief: StealEngine, now: float = 0.0) -> list[Any]:
    """Run one full steal with a perfect network; every action either side emitted, in order."""
    log: list[Any] = []
    out = thief.tick(now, _view_of("victim"))
    log += out
    queue = [("victim", "thief", s.msg) for s in _sends(out)]
    while queue:
        dst, src, msg = queue.pop(0)
        eng = victim if dst == "victim" else thief
        acts = eng.handle(src, msg, now)
        log += acts
        queue += [(s.to, dst, s.msg) for s in _sends(acts)]
    return log


# ------------------------------------------------------------------------------------------------- work queue


def test_work_queue_runs_fifo_within_slots_and_deduplicates() -> None:
    q = WorkQueue({"cpu": 2, "gpu": 0})
    assert q.push(_task(1))
    assert not q.push(_task(1))  # the same attempt twice: once
    q.push(_task(2))
    q.push(_task(3))
    a, b = q.start_next("cpu", 0.0), q.start_next("cpu", 0.0)
    assert a is not None
    assert b is not None
    assert (a.id, b.id) == ("t1", "t2")
    assert q.start_next("cpu", 0.0) is None  # no free slot
    assert q.backlog("cpu", 0.5) == pytest.approx(1.0 + 0.5 + 0.5)
    assert q.take(("t1", 0)) is None  # running: cannot be taken
    q.finish(("t1", 0))
    c = q.start_next("cpu", 1.0)
    assert c is not None
    assert c.id == "t3"


def test_a_task_for_a_missing_device_goes_to_one_it_may_use() -> None:
    q = WorkQueue({"cpu": 1})
    t = _task(1)
    t.device, t.devices = "gpu", ("gpu", "cpu")
    assert q.push(t)
    assert t.device == "cpu"
    g = _task(2)
    g.device, g.devices = "gpu", ("gpu",)
    assert not q.push(g)


# ---------------------------------------------------------------------------------------------------- policy


def test_a_full_exchange_moves_tasks_and_tells_the_owner() -> None:
    victim, thief = _pair(n_tasks=10, predicted=1.0)
    log = _exchange(victim, thief)
    kinds = [a.msg["k"] for a in log if isinstance(a, Send)]
    assert kinds == ["steal_req", "steal_offer", "steal_accept", "steal_commit", "steal_ack"]
    arrived = [t for a in log if isinstance(a, TasksArrived) for t in a.tasks]
    moved = [a for a in log if isinstance(a, Moved)]
    assert 0 < len(arrived) <= 2  # at most one per free slot of the thief
    assert {t.id for t in arrived} == {m.task_id for m in moved}
    assert all(m.to == "thief" and m.src == "victim" and m.here > m.there for m in moved)
    # the tail of the queue moved (the tasks that would have waited longest), with their specs
    assert {t.id for t in arrived} <= {"t9", "t8"}
    assert all(t.path == ["victim"] and t.spec is not None for t in arrived)
    assert all(t.key not in victim.queue for t in arrived)
    assert victim.pending_commits() == 0  # acknowledged: nothing to resend


def test_running_tasks_are_never_offered() -> None:
    victim, thief = _pair(n_tasks=1, predicted=100.0)
    victim.queue.start_next("cpu", 0.0)
    log = _exchange(victim, thief)
    assert not [a for a in log if isinstance(a, TasksArrived)]
    assert thief.counters["refused"] == 1


def test_pinned_tasks_are_never_offered() -> None:
    victim, thief = _pair(n_tasks=10, predicted=1.0)
    for t in victim.queue.queued():
        t.pinned = t.id != "t3"  # inputs already fetched here, say: only t3 may move
    arrived = [t.id for a in _exchange(victim, thief) if isinstance(a, TasksArrived) for t in a.tasks]
    assert arrived == ["t3"]


def test_prefetched_tasks_count_as_running_and_are_never_offered() -> None:
    q = WorkQueue({"cpu": 2})
    for i in range(6):
        q.push(_task(i, predicted=10.0))
    started = [q.start_next("cpu", 0.0, extra=2) for _ in range(5)]
    assert [t.id if t else None for t in started] == ["t0", "t1", "t2", "t3", None]  # two slots + one each
    assert q.free("cpu") == -2
    assert q.n_queued() == 2
    victim = StealEngine("victim", q)
    assert not victim.idle()
    chosen = victim.select("thief", {"free": {"cpu": 2}, "speed": {"cpu": 1.0}}, 0.0)
    assert {t.id for t, *_ in chosen} <= {"t4", "t5"}
    q.finish(("t0", 0))
    assert q.free("cpu") == -1
    head = q.peek("cpu")
    assert head is not None
    assert head.id == "t4"
    head.state = TState.OFFERED  # reserved for a thief: not next here
    nxt = q.peek("cpu")
    assert nxt is not None
    assert nxt.id == "t5"


def test_the_cost_gate_refuses_steals_that_do_not_pay() -> None:
    # tasks that finish here almost at once: not worth a hand-over
    victim, thief = _pair(n_tasks=10, predicted=0.001)
    assert not [a for a in _exchange(victim, thief) if isinstance(a, TasksArrived)]
    # long waits, but 10 GB to move for each task: the transfer costs more than the wait saves
    victim, thief = _pair(n_tasks=10, predicted=1.0, nbytes=10 << 30)
    assert not [a for a in _exchange(victim, thief) if isinstance(a, TasksArrived)]


def test_a_faster_thief_may_take_a_task_the_gate_would_refuse_an_equal_one() -> None:
    info_equal = {"free": {"cpu": 1}, "speed": {"cpu": 1.0}}
    info_fast = {"free": {"cpu": 1}, "speed": {"cpu": 8.0}}
    # long tasks: the second one waits 4 s here; anyone idle is worth giving it to
    victim, _ = _pair(n_tasks=2, predicted=4.0)
    assert [t.id for t, *_ in victim.select("x", info_equal, 0.0)] == ["t1"]
    # 0.1 s tasks: an equal thief saves 0.1 s, less than the margin (0.1 s + half the runtime there) ...
    victim2, _ = _pair(n_tasks=2, predicted=0.1)
    assert victim2.select("x", info_equal, 0.0) == []
    # ... but one eight times faster saves 0.19 s against a margin of 0.106 s
    picked = victim2.select("x", info_fast, 0.0)
    assert [t.id for t, *_ in picked] == ["t1"]
    _, dev, here, there = picked[0]
    assert dev == "cpu"
    assert here == pytest.approx(0.2)
    assert there == pytest.approx(0.1 / 8 + 3 * StealConfig().latency)


def test_no_ping_pong_a_stolen_task_is_not_stolen_again() -> None:
    vq = WorkQueue({"cpu": 1})
    for i in range(6):
        vq.push(_task(i, 5.0, path=["thief"] if i % 2 else ["elsewhere"]))
    victim = StealEngine("victim", vq, StealConfig(max_hops=1))
    assert victim.select("thief", {"free": {"cpu": 4}}, 0.0) == []  # every task already moved once
    victim2 = StealEngine("victim", vq, StealConfig(max_hops=3))
    chosen = [t.id for t, *_ in victim2.select("thief", {"free": {"cpu": 4}}, 0.0)]
    assert chosen
    assert all(int(tid[1:]) % 2 == 0 for tid in chosen)


def test_a_refusal_cools_the_thief_down_on_that_victim() -> None:
    victim, thief = _pair(n_tasks=0)
    _exchange(victim, thief, now=0.0)
    assert thief.counters["refused"] == 1
    assert _sends(thief.tick(0.1, _view_of("victim"))) == []  # within the cooldown: no new request
    assert _sends(thief.tick(10.0, _view_of("victim")), "steal_req")


def test_a_busy_thief_does_not_ask() -> None:
    thief = StealEngine("thief", WorkQueue({"cpu": 1}))
    thief.queue.push(_task(1))
    assert thief.tick(0.0, _view_of("victim")) == []


def test_a_late_accept_commits_nothing_and_the_victim_may_run_the_task() -> None:
    victim, thief = _pair(n_tasks=3, predicted=2.0)
    req = _sends(thief.tick(0.0, _view_of("victim")))[0]
    offer = _sends(victim.handle("thief", req.msg, 0.0))[0]
    assert offer.msg["tasks"]
    offered = [tuple(h[:2]) for h in offer.msg["tasks"]]
    assert all(victim.queue.get(k).state is TState.OFFERED for k in offered)  # type: ignore[union-attr]
    victim.tick(10.0)  # the reservation lapses
    assert all(victim.queue.get(k).state is TState.QUEUED for k in offered)  # type: ignore[union-attr]
    accept = _sends(thief.handle("victim", offer.msg, 10.0))[0]
    commit = _sends(victim.handle("thief", accept.msg, 10.1))[0]
    assert commit.msg["tasks"] == []
    assert victim.counters["late_accept"] == 1
    assert not [a for a in thief.handle("victim", commit.msg, 10.2) if isinstance(a, TasksArrived)]


def test_commits_are_resent_until_acknowledged_and_run_once() -> None:
    victim, thief = _pair(n_tasks=5, predicted=2.0)
    req = _sends(thief.tick(0.0, _view_of("victim")))[0]
    offer = _sends(victim.handle("thief", req.msg, 0.0))[0]
    accept = _sends(thief.handle("victim", offer.msg, 0.0))[0]
    commit = _sends(victim.handle("thief", accept.msg, 0.0), "steal_commit")[0]
    # the commit is lost: the victim resends it
    again = _sends(victim.tick(1.0), "steal_commit")
    assert again
    assert again[0].msg == commit.msg
    first = thief.handle("victim", commit.msg, 1.0)
    for _ in range(2):  # the thief runs them to completion before the resent commit arrives
        t = thief.queue.start_next("cpu", 1.0)
        assert t is not None
        thief.queue.finish(t.key)
    second = thief.handle("victim", again[0].msg, 1.0)
    assert len([t for a in first if isinstance(a, TasksArrived) for t in a.tasks]) == len(commit.msg["tasks"])
    assert not [a for a in second if isinstance(a, TasksArrived)]
    assert thief.counters["dup_commit"] == 1
    victim.handle("thief", _sends(second, "steal_ack")[0].msg, 1.0)
    assert _sends(victim.tick(5.0), "steal_commit") == []


def test_a_dead_thief_releases_its_reservations() -> None:
    victim, thief = _pair(n_tasks=4, predicted=2.0)
    req = _sends(thief.tick(0.0, _view_of("victim")))[0]
    victim.handle("thief", req.msg, 0.0)
    assert victim.queue.n_queued() == 4
    victim.peer_down("thief", 0.1)
    assert all(t.state is TState.QUEUED for t in victim.queue.queued())


@pytest.mark.parametrize("msg", [{}, {"k": "steal_req"}, {"k": "nope", "rid": 1}, {"k": "steal_commit", "rid": 1,
                                 "tasks": [["x"], 3, None]}, {"k": "steal_offer", "rid": 1, "tasks": "x"}])
def test_garbage_is_ignored(msg: dict[str, Any]) -> None:
    victim, thief = _pair(n_tasks=2)
    for eng in (victim, thief):
        acts = eng.handle("someone", msg, 0.0)
        assert not [a for a in acts if isinstance(a, TasksArrived | Moved)]
    assert victim.queue.n_queued() == 2


# ------------------------------------------------------------------------- two-phase safety under a bad network


class _Mesh:
    """Three nodes that steal from each other over a network the test controls completely."""

    def __init__(self, n_tasks: int) -> None:
        cfg = StealConfig(offer_timeout=0.5, request_timeout=1.0, commit_retry=0.3, cooldown=0.1, min_wait_s=0.0,
                          margin_s=0.0, margin_frac=0.0, max_hops=2)
        self.now = 0.0
        self.engines: dict[str, StealEngine] = {}
        for nid, slots in (("a", 1), ("b", 1), ("c", 1)):
            self.engines[nid] = StealEngine(nid, WorkQueue({"cpu": slots}), cfg, random.Random(nid))
        for i in range(n_tasks):
            self.engines["a"].queue.push(_task(i, 1.0))
        self.net: list[tuple[str, str, dict[str, Any]]] = []
        self.history: list[tuple[str, str, dict[str, Any]]] = []  # everything ever sent: duplicates come late too
        self.started: list[tuple[str, tuple[str, int]]] = []
        self.finished: list[tuple[str, int]] = []

    def view(self) -> LoadView:
        v = LoadView()
        for nid, eng in self.engines.items():
            q = eng.queue
            v.update(nid, make_summary({"cpu": DeviceLoad(1, q.free("cpu"), q.backlog("cpu", self.now), 1.0)},
                                       queued=q.n_queued(), stealable=q.n_queued()), self.now)
        return v

    def apply(self, src: str, actions: list[Any]) -> None:
        for a in actions:
            if isinstance(a, Send):
                self.net.append((a.to, src, a.msg))
                self.history.append((a.to, src, a.msg))

    def deliver(self, i: int) -> None:
        if self.net:
            dst, src, msg = self.net.pop(i % len(self.net))
            self.apply(dst, self.engines[dst].handle(src, msg, self.now))

    def duplicate(self, i: int) -> None:
        """Deliver again something sent before (maybe long ago, maybe still in flight)."""
        if self.history:
            dst, src, msg = self.history[-1 - i % len(self.history)]
            self.apply(dst, self.engines[dst].handle(src, msg, self.now))

    def drop(self, i: int) -> None:
        if self.net:
            del self.net[i % len(self.net)]

    def tick(self, dt: float) -> None:
        self.now += dt
        view = self.view()
        for nid, eng in self.engines.items():
            self.apply(nid, eng.tick(self.now, view))

    def start(self, nid: str) -> None:
        t = self.engines[nid].queue.start_next("cpu", self.now)
        if t is not None:
            self.started.append((nid, t.key))

    def finish(self, nid: str) -> None:
        q = self.engines[nid].queue
        running = [t for t in list(q._tasks.values()) if t.state is TState.RUNNING]
        if running:
            q.finish(running[0].key)
            self.finished.append(running[0].key)

    def check_never_twice(self) -> None:
        keys = [k for _, k in self.started]
        assert len(keys) == len(set(keys)), f"a task started twice: {self.started}"


_ops = st.lists(
    st.one_of(
        st.tuples(st.just("deliver"), st.integers(0, 50)),
        st.tuples(st.just("dup"), st.integers(0, 50)),
        st.tuples(st.just("dup"), st.integers(0, 50)),
        st.tuples(st.just("drop"), st.integers(0, 50)),
        st.tuples(st.just("tick"), st.sampled_from([0.05, 0.2, 0.6, 1.5])),
        st.tuples(st.just("start"), st.sampled_from("abc")),
        st.tuples(st.just("finish"), st.sampled_from("abc")),
    ),
    min_size=60,
    max_size=200,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_ops, n_tasks=st.integers(1, 8))
def test_no_task_ever_runs_twice_or_gets_lost_under_loss_duplication_and_reordering(
        ops: list[tuple[str, Any]], n_tasks: int) -> None:
    m = _Mesh(n_tasks)
    for op, arg in ops:
        if op == "deliver":
            m.deliver(arg)
        elif op == "dup":
            m.duplicate(arg)
        elif op == "drop":
            m.drop(arg)
        elif op == "tick":
            m.tick(arg)
        elif op == "start":
            m.start(arg)
        else:
            m.finish(arg)
        m.check_never_twice()
    # heal: a perfect network from now on, time passes, every node works its queue
    for _ in range(400):
        while m.net:
            m.deliver(0)
        for nid in "abc":
            m.finish(nid)
            m.start(nid)
        m.check_never_twice()
        m.tick(0.3)
        if len(m.finished) == n_tasks and not m.net:
            break
    assert sorted(m.finished) == sorted((f"t{i}", 0) for i in range(n_tasks))
    # and no task travelled back to a node it had been on
    for eng in m.engines.values():
        for t in eng.queue.queued():
            assert len(t.path) == len(set(t.path))


def test_a_task_queued_behind_overrunning_ones_is_stolen() -> None:
    """Running tasks past their prediction (an unknown kernel priced at the 0.5 s prior, that has run 20 s) are
    not taken as about to finish: the task queued behind them goes to an idle thief."""
    vq = WorkQueue({"cpu": 2})
    for i in range(3):
        vq.push(_task(i, predicted=0.5))
    vq.start_next("cpu", 0.0)
    vq.start_next("cpu", 0.0)
    victim = StealEngine("victim", vq)
    info = {"free": {"cpu": 1}, "speed": {"cpu": 1.0}}
    assert victim.select("thief", info, 0.4) == []  # both about to finish: the queued one barely waits
    assert vq.running_left("cpu", 20.0) == [10.0, 10.0]
    assert [t.id for t, *_ in victim.select("thief", info, 20.0)] == ["t2"]


def test_prefetched_tasks_taken_back_queue_again_behind_urgent_ones() -> None:
    q = WorkQueue({"cpu": 1})
    for i in range(4):
        q.push(_task(i, predicted=0.001))
    started = [q.start_next("cpu", 0.0, extra=3) for _ in range(4)]  # one in its slot, three prefetched
    assert [t.id for t in started if t] == ["t0", "t1", "t2", "t3"]
    urgent = _task(9)
    urgent.urgent = True
    q.push(urgent)
    q.push(_task(10))
    back = q.unstart([("t2", 0), ("t3", 0), ("t0", 9)])  # an attempt that is not here: ignored
    assert [t.id for t in back] == ["t2", "t3"]
    assert q.free("cpu") == -1  # t0 runs, t1 still prefetched
    assert [t.id for t in q.queued()] == ["t9", "t2", "t3", "t10"]
    victim = StealEngine("victim", q)
    assert {t.id for t, *_ in victim.select("thief", {"free": {"cpu": 4}}, 0.0)} <= {"t9", "t2", "t3", "t10"}


def _committed(victim: StealEngine, thief: StealEngine) -> Send:
    """A full hand-over up to the victim's commit (which the test then delivers, or not)."""
    req = _sends(thief.tick(0.0, _view_of("victim")))[0]
    offer = _sends(victim.handle("thief", req.msg, 0.0))[0]
    accept = _sends(thief.handle("victim", offer.msg, 0.0))[0]
    return _sends(victim.handle("thief", accept.msg, 0.0), "steal_commit")[0]


def test_an_unacknowledged_commit_is_resent_less_and_less_often() -> None:
    """A commit carries its tasks' specs (inline arguments: megabytes in the simulator's mapreduce). Resent every
    0.25 s for its 30 s, a 40 MB commit on a 1 Gb/s link was sent 120 times, the copies queued for a minute; now the
    wait doubles from 0.25 s up to ``commit_retry_max`` (4 s): 10 resends in 30 s."""
    victim, thief = _pair(n_tasks=5, predicted=2.0)
    _committed(victim, thief)
    sent: list[float] = []
    now = 0.0
    while now < 40.0:
        now = round(now + 0.05, 2)
        if _sends(victim.tick(now), "steal_commit"):
            sent.append(now)
    gaps = [round(b - a, 2) for a, b in itertools.pairwise(sent)]
    assert sent[:4] == [0.25, 0.75, 1.75, 3.75]  # 0.25 s, then 0.5, 1, 2, 4, 4, ...
    assert gaps[3:] == [4.0] * len(gaps[3:])
    assert len(sent) == 10  # resends in the 30 s: was 120
    assert sent[-1] <= StealConfig().commit_give_up


def test_a_thief_remembers_a_commit_while_its_copies_keep_arriving() -> None:
    """Copies of one commit may reach the thief long after the first (a victim resends for 30 s, each copy behind
    the others on a busy link). The thief forgets a commit ``retention`` (60 s) after the *last* copy it saw: one
    arriving 70 s after the first, 20 s after the previous copy, is still not run again (it was, before)."""
    victim, thief = _pair(n_tasks=5, predicted=2.0)
    commit = _committed(victim, thief)
    first = thief.handle("victim", commit.msg, 1.0)
    ran = [t for a in first if isinstance(a, TasksArrived) for t in a.tasks]
    assert ran
    for t in ran:
        assert thief.queue.start_next("cpu", 1.0) is not None
        thief.queue.finish(t.key)
    assert not [a for a in thief.handle("victim", commit.msg, 50.0) if isinstance(a, TasksArrived)]
    thief.tick(71.0)
    assert not [a for a in thief.handle("victim", commit.msg, 71.0) if isinstance(a, TasksArrived)]
    assert thief.counters["dup_commit"] == 2
    thief.tick(200.0)  # and it is forgotten once the copies stop
    assert thief._done == {}
