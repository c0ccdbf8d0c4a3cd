"""``client.submit_batches``: SUBMITs stay under the node's header limit, whatever the tasks carry in it."""

from __future__ import annotations

from typing import cast

from meshaios import client as C
from meshaios.wire import messages as M
from meshaios.wire.codec import DEFAULT_LIMITS, encode
from meshaios.wire.payload import Payload


def spec(i: int, arg_bytes: int) -> M.SubmitTask:
    return cast(M.SubmitTask, {"id": f"t{i}", "fn": Payload(b"f" * 60), "args": Payload(b"a" * arg_bytes),
                               "deps": [], "pure": False, "retries": 0})  # fmt: skip


def test_small_tasks_go_two_thousand_at_a_time() -> None:
    batches = list(C.submit_batches([spec(i, 20) for i in range(4500)]))
    assert [len(b) for b in batches] == [2000, 2000, 500]


def test_tasks_with_arguments_in_the_header_are_split_by_bytes_and_every_header_fits() -> None:
    specs = [spec(i, 40_000) for i in range(2000)]  # 80 MB in one SUBMIT: over the 64 MiB limit
    batches = list(C.submit_batches(specs))
    assert [t["id"] for b in batches for t in b] == [t["id"] for t in specs]  # all of them, in order
    for b in batches:
        header = encode({"t": M.SUBMIT, "tasks": b, "ep": 0})[0]
        assert len(header) <= C.SUBMIT_HEADER_BYTES + 64 << 10
        assert len(header) < DEFAULT_LIMITS.max_header


def test_a_node_with_a_smaller_header_limit_gets_smaller_submits_and_a_task_over_it_goes_alone() -> None:
    limit = 64 << 10  # the node's max_header_bytes; the client keeps to half (WELCOME mh)
    specs = [spec(i, 2_000) for i in range(100)]
    specs.insert(50, spec(999, 60_000))  # over half the limit on its own
    batches = list(C.submit_batches(specs, limit // 2))
    assert [t["id"] for b in batches for t in b] == [t["id"] for t in specs]
    assert [t["id"] for t in batches[[len(b) for b in batches].index(1)]] == ["t999"]
    for b in batches:
        if len(b) > 1:
            assert len(encode({"t": M.SUBMIT, "req": 1, "tasks": b, "ep": 0})[0]) <= limit


def test_a_large_argument_travels_in_a_frame_of_its_own_and_does_not_count() -> None:
    batches = list(C.submit_batches([spec(i, 1 << 20) for i in range(300)]))  # 1 MiB each: frames, not header
    assert [len(b) for b in batches] == [300]
