from __future__ import annotations

from meshaios.store.fetch import FetchPlanner, InputsLost, Runnable, SendFetch


def task(tid: str) -> dict[str, object]:
    return {"id": tid}


def test_task_with_everything_local_is_runnable_at_once() -> None:
    fp = FetchPlanner()
    assert fp.need(task("a"), {"x": (["n1"], 10)}, {"x"}, 0.0) == [Runnable(task("a"))]


def test_one_fetch_per_object_even_when_two_tasks_need_it() -> None:
    fp = FetchPlanner()
    a1 = fp.need(task("a"), {"x": (["n1"], 10)}, set(), 0.0)
    a2 = fp.need(task("b"), {"x": (["n1"], 10), "y": (["n2"], 5)}, set(), 0.0)
    assert a1 == [SendFetch("n1", "x", 1)]
    assert a2 == [SendFetch("n2", "y", 2)]
    assert fp.arrived(1, True, 0.1) == [Runnable(task("a"))]
    assert fp.arrived(2, True, 0.2) == [Runnable(task("b"))]
    assert fp.fetched_bytes == 15


def test_bytes_in_flight_are_capped_but_one_large_fetch_always_proceeds() -> None:
    fp = FetchPlanner(max_bytes_in_flight=100)
    out = fp.need(task("a"), {"x": (["n1"], 500), "y": (["n1"], 50)}, set(), 0.0)
    assert out == [SendFetch("n1", "x", 1)]
    assert fp.bytes_in_flight == 500
    out = fp.arrived(1, True, 0.1)
    assert out == [SendFetch("n1", "y", 2)]
    assert fp.arrived(2, True, 0.2) == [Runnable(task("a"))]
    assert fp.bytes_in_flight == 0


def test_dead_holder_falls_back_to_the_next_then_reports_lost_inputs() -> None:
    fp = FetchPlanner()
    assert fp.need(task("a"), {"x": (["n1", "n2"], 10)}, set(), 0.0) == [SendFetch("n1", "x", 1)]
    assert fp.holder_dead("n1", 1.0) == [SendFetch("n2", "x", 2)]
    assert fp.arrived(1, True, 1.1) == []  # the late reply from the dead node's request is ignored
    assert fp.arrived(2, False, 1.2) == [InputsLost(task("a"), ["x"])]
    assert fp.pending == 0
    assert fp.bytes_in_flight == 0


def test_timeout_retries_elsewhere() -> None:
    fp = FetchPlanner(timeout=5)
    fp.need(task("a"), {"x": (["n1", "n2"], 10)}, set(), 0.0)
    assert fp.tick(4.0) == []
    assert fp.tick(6.0) == [SendFetch("n2", "x", 2)]
    assert fp.arrived(2, True, 6.5) == [Runnable(task("a"))]


def test_a_live_holder_that_does_not_answer_is_asked_again_before_its_object_counts_as_lost() -> None:
    """A dropped request or reply is not a missing object: the only holder, alive, is asked again after each
    timeout; after MAX_TIMEOUTS silences the inputs are reported lost."""
    fp = FetchPlanner(timeout=5)
    assert fp.need(task("a"), {"x": (["n1"], 10)}, set(), 0.0) == [SendFetch("n1", "x", 1)]
    assert fp.tick(6.0) == [SendFetch("n1", "x", 2)]
    assert fp.arrived(1, True, 6.1) == []  # the first request's late answer: given up on
    assert fp.tick(12.0) == [SendFetch("n1", "x", 3)]
    assert fp.tick(18.0) == [InputsLost(task("a"), ["x"])]
    assert fp.pending == 0
    assert fp.bytes_in_flight == 0
    fp.need(task("b"), {"y": (["n1", "n2"], 10)}, set(), 20.0)
    assert fp.tick(26.0) == [SendFetch("n2", "y", 5)]  # another holder first
    assert fp.tick(32.0) == [SendFetch("n1", "y", 6)]  # then the silent one again
    assert fp.arrived(6, True, 32.5) == [Runnable(task("b"))]


def test_a_fetch_in_flight_says_where_from_how_big_and_since_when() -> None:
    fp = FetchPlanner()
    assert fp.need(task("a"), {"x": (["n1"], 10)}, set(), 2.0) == [SendFetch("n1", "x", 1)]
    assert fp.request(1) == ("n1", 10, 2.0)
    fp.arrived(1, True, 2.5)
    assert fp.request(1) is None
    assert fp.request(99) is None
