"""The per-task timeline: phases in order, bounded memory, a summary of where the time went."""

from __future__ import annotations

import pytest

from meshaios.timeline import Timeline


def test_a_task_with_remote_inputs_records_every_phase() -> None:
    tl = Timeline("n1")
    tl.queued("t", 0, "owner", now=10.0)
    tl.inputs_requested("t", 0, 200 << 20, now=10.0)
    tl.inputs_arrived("t", 0, now=10.5)
    tl.finished("t", 0, ok=True, now=12.0, run_s=1.0, device="gpu")
    (r,) = tl.recent(offset=1000.0)
    assert (r["node"], r["owner"], r["device"], r["outcome"]) == ("n1", "owner", "gpu", "ok")
    assert (r["queued"], r["inputs_requested"], r["inputs_arrived"], r["started"], r["finished"]) == (
        1010.0, 1010.0, 1010.5, 1011.0, 1012.0)
    assert (r["fetch_s"], r["wait_s"], r["run_s"], r["bytes_in"]) == (0.5, 0.5, 1.0, 200 << 20)
    s = tl.summary()
    assert (s["tasks"], s["fetch_s"], s["wait_s"], s["run_s"], s["bytes_in"]) == (1, 0.5, 0.5, 1.0, 200 << 20)
    assert s["share"] == {"wait_s": 0.25, "fetch_s": 0.25, "run_s": 0.5}


def test_outcomes_and_events_for_unknown_tasks() -> None:
    tl = Timeline("n1")
    tl.inputs_arrived("ghost", 0, now=1.0)  # never queued here: ignored
    tl.finished("ghost", 0, ok=True, now=1.0)
    tl.queued("a", 0, "o", now=0.0)
    tl.moved("a", 0, now=0.2)
    tl.queued("b", 1, "o", now=0.0)
    tl.finished("b", 1, ok=False, now=0.3, outcome="lost")
    tl.queued("c", 0, "o", now=0.0)
    tl.queued("c", 0, "o", now=5.0)  # delivered twice: the first arrival counts
    tl.started("c", 0, "cpu", now=0.5)
    tl.finished("c", 0, ok=False, now=1.0)
    assert [(r["task"], r["outcome"]) for r in tl.recent()] == [("a", "moved"), ("b", "lost"), ("c", "error")]
    assert tl.recent()[2]["started"] == 0.5
    assert tl.open == 0


def test_memory_is_bounded() -> None:
    tl = Timeline("n1", capacity=3, max_open=2)
    for i in range(5):
        tl.queued(f"t{i}", 0, "o", now=float(i))
    assert (tl.open, tl.dropped) == (2, 3)
    for i in range(3, 5):
        tl.finished(f"t{i}", 0, ok=True, now=10.0)
    for i in range(5, 10):
        tl.queued(f"t{i}", 0, "o", now=0.0)
        tl.finished(f"t{i}", 0, ok=True, now=1.0)
    assert len(tl) == 3
    assert [r["task"] for r in tl.recent()] == ["t7", "t8", "t9"]
    assert [r["task"] for r in tl.recent(limit=1)] == ["t9"]
    assert tl.summary()["tasks"] == 7  # the totals cover every finished task, not only those kept
    with pytest.raises(ValueError, match="at least 1"):
        Timeline("n", capacity=0)
