"""``meshaios.wait``/``meshaios.as_completed`` on meshaios futures settled by hand (no mesh: what the client's
reader does when a result arrives), mixed with ``concurrent.futures`` futures; the real-node cases are in
tests/ux/test_executor_cpython.py."""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Any

import pytest

import meshaios
from meshaios.client import Future
from meshaios.errors import CancelledTaskError, MeshTimeoutError, TaskError


def mesh_future(key: str) -> Future:
    return Future(key, None)  # type: ignore[arg-type]  # no client: nothing to release, nothing to fetch


def finished(value: Any) -> concurrent.futures.Future[Any]:
    f: concurrent.futures.Future[Any] = concurrent.futures.Future()
    f.set_result(value)
    return f


def test_wait_returns_the_objects_it_was_given_for_every_return_when() -> None:
    a, b, c = mesh_future("a"), mesh_future("b"), mesh_future("c")
    plain = finished(1)
    a._cf.set_result(10)
    done, not_done = meshaios.wait([a, b, plain, a], timeout=0)
    assert (done, not_done) == ({a, plain}, {b})
    assert meshaios.wait([a, b], return_when=meshaios.FIRST_COMPLETED).done == {a}

    b._cf.set_exception(TaskError("b", "ValueError", "bad", ""))
    done, not_done = meshaios.wait([b, c], return_when=meshaios.FIRST_EXCEPTION)
    assert (done, not_done) == ({b}, {c})

    threading.Timer(0.01, c._cf.set_result, (3,)).start()  # finishes while wait() waits
    assert meshaios.wait([a, b, c, plain], timeout=30).not_done == set()


def test_a_cancelled_meshaios_future_wakes_waiters_at_once() -> None:
    f = mesh_future("f")
    waiting = meshaios.as_completed([f], timeout=30)
    woke: list[Any] = []
    t = threading.Thread(target=lambda: woke.append(next(waiting)))
    t.start()
    assert f._cancel_local()  # what cancel() does before telling the mesh
    t.join(30)
    assert woke == [f]
    assert f.cancelled()
    assert not f._cancel_local()  # once only: Client.cancel counts what it cancelled
    assert meshaios.wait([f], timeout=0).done == {f}
    with pytest.raises(CancelledTaskError):
        f.result(timeout=0)


def test_as_completed_yields_each_once_and_times_out_with_the_standard_message() -> None:
    a, b = mesh_future("a"), mesh_future("b")
    a._cf.set_result(1)
    it = meshaios.as_completed([a, a, b, finished(2)], timeout=0)
    first = {next(it), next(it)}
    assert a in first
    with pytest.raises(MeshTimeoutError, match=r"^1 \(of 3\) futures unfinished$"):
        next(it)


def test_bad_arguments_are_refused_clearly() -> None:
    with pytest.raises(TypeError, match="futures, got int"):
        meshaios.wait([1])
    with pytest.raises(ValueError, match="return_when"):
        meshaios.wait([finished(1)], return_when="NEVER")
    f = mesh_future("x")
    with pytest.raises(AttributeError, match=r"meshaios\.wait"):
        concurrent.futures.wait([f], timeout=0)  # type: ignore[list-item]
