"""Cancels from another thread racing the answers of lone tasks that their caller reads itself (``_submit_direct``
and ``_read_own``, docs/performance.md sections 20 and 29), against a real node process: a bounded stress. The
interleavings it can meet are forced one by one in tests/system/test_own_read_races.py (the race it found first:
``test_an_answer_read_while_the_loops_reader_takes_in_an_earlier_one_is_taken_in_once``); this one checks that,
whatever instants the cancels land at, every future settles once, with its value or as cancelled, as ``cancel()``
said, and the client's accounts add up."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator

import pytest

from meshaios import Client, Future
from meshaios.errors import CancelledTaskError
from meshaios.testing.localmesh import LocalMesh, wait_for
from tests.integration import funcs
from tests.system.test_direct_submit_processes import _reading, _settled
from tests.system.test_own_read_races import _warm

pytestmark = pytest.mark.system

ROUNDS = 5
TASKS = 200


@pytest.fixture(scope="module")
def mesh() -> Iterator[LocalMesh]:
    with LocalMesh(1, discovery=False, startup_timeout=60) as m:
        yield m


def _round(c: Client, seed: int) -> dict[str, int]:
    """TASKS lone tasks, one after another, each cancelled from another thread 0-1.5 ms after it was submitted;
    checks each outcome against what ``cancel()`` said, and returns how many came out with their value and how
    many cancelled."""
    futures: list[Future] = []
    said: dict[str, bool] = {}  # a future's key -> some ``cancel()`` of it returned True
    ready = threading.Semaphore(0)
    stop = threading.Event()
    errors: list[BaseException] = []

    def canceller() -> None:
        rng = random.Random(seed)
        try:
            while not stop.is_set():
                if ready.acquire(timeout=0.05):
                    stop.wait(rng.random() * 0.0015)  # a random instant of the round trip (~0.1-1 ms)
                    f = futures[-1]  # the last submitted (the one before, if its answer came meanwhile)
                    said[f.key] = f.cancel() or said.get(f.key, False)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=canceller)
    t.start()
    got: dict[str, str] = {}
    try:
        for i in range(TASKS):
            f = c.submit(funcs.square, i)
            futures.append(f)
            ready.release()
            try:
                v = f.result(timeout=30)
                assert v == i * i, (i, v)
                got[f.key] = "value"
            except CancelledTaskError:
                got[f.key] = "cancelled"
    finally:
        stop.set()
        t.join(30)
    assert not t.is_alive()
    assert not errors, errors
    assert len(got) == TASKS
    for f in futures:
        assert f.done()
        # True exactly for the futures that came out cancelled (a later ``cancel()`` of a cancelled one says True
        # again; of one with its value, False)
        assert (got[f.key] == "cancelled") == said.get(f.key, False) == f.cancelled(), (f.key, got[f.key])
    outcomes = {"value": 0, "cancelled": 0}
    for outcome in got.values():
        outcomes[outcome] += 1
    return outcomes


def test_cancels_racing_the_answers_of_lone_tasks_settle_every_future_once(mesh: LocalMesh) -> None:
    """A thread submits lone tasks one after another and waits on each; another cancels each as soon as it is
    submitted, 0-1.5 ms later (before its SUBMIT is recorded by the loop, while its caller reads, or after its
    answer came). Every ``result()`` gives the right value or raises ``CancelledTaskError``, exactly as ``cancel()``
    answered (True: cancelled; False: it had its value); nothing waits past its timeout; after each round every
    task is taken in once (no duplicate, none missing, nothing pending, handed over or kept), no read is left
    begun, and afterwards lone tasks go from the caller's thread again."""
    with mesh.client(0, heartbeat_timeout=60.0) as c:
        _warm(c)
        a = c._async
        results = c.stats["results"]
        sent_direct = a.sent_direct
        values = cancelled = 0
        for seed in range(ROUNDS):
            outcomes = _round(c, seed)
            values += outcomes["value"]
            cancelled += outcomes["cancelled"]
            wait_for(lambda: _settled(c), 20, what="every task taken in: nothing pending, handed over or kept")
            assert c.stats["duplicates"] == 0
            assert c.stats["results"] == results + (seed + 1) * TASKS  # each task's one answer, value or cancel
            assert not _reading(c)
        assert values  # the cancels raced the answers: some came first ...
        assert cancelled  # ... and some did not
        assert a.sent_direct > sent_direct  # the stress went the direct way (most lone tasks do)
        direct = a.sent_direct
        for i in range(20):
            assert c.submit(funcs.square, i).result(timeout=30) == i * i
        assert a.sent_direct > direct
        wait_for(lambda: _settled(c), 20, what="settled")
        assert c.stats["duplicates"] == 0
