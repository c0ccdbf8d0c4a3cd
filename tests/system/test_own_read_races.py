"""Races around the sync client's caller reading its own answer (``AsyncClient._read_own``, docs/performance.md
section 20), against real node processes: the caller is interrupted (Ctrl-C), its task cancelled, the client closed
or its node stopped while it reads the connection, or another thread waits on the same future. What must hold:
the caller never waits past its timeout or forever, every result reaches its future once, the connection is read
again by the loop afterwards (the next task's answer comes), and nothing is left open. Tasks that must stay
unfinished wait on a file the test creates (``funcs.square_at_gate``), never on a sleep."""

from __future__ import annotations

import linecache
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import meshaios.client as client_mod
from meshaios import Client
from meshaios.errors import CancelledTaskError, MeshError, MeshTimeoutError
from meshaios.testing.localmesh import LocalMesh, wait_for
from tests.integration import funcs
from tests.system.test_direct_submit_processes import _reading, _settled

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def mesh() -> Iterator[LocalMesh]:
    with LocalMesh(1, discovery=False, startup_timeout=60) as m:
        yield m


def _in_read(ident: int) -> bool:
    """Thread ``ident`` waits in ``LeanReader.read``'s poll of the socket (where a caller spends its wait), i.e.
    inside ``_read_own``'s ``try``, holding nothing it has taken from the socket."""
    frame = sys._current_frames().get(ident)
    if frame is None or frame.f_code.co_name != "read":
        return False
    filename = frame.f_code.co_filename
    return filename.endswith(os.path.join("io", "lean.py")) and ".poll(" in linecache.getline(filename, frame.f_lineno)


def _warm(c: Client) -> None:
    """A few lone tasks, so that the next one goes from the caller's thread (``_submit_direct``)."""
    for i in range(3):
        assert c.submit(funcs.square, i).result(timeout=30) == i * i
    wait_for(lambda: _settled(c), 10, what="the loop recorded the warm-up")


def test_ctrl_c_while_the_caller_reads_cancels_its_task_and_the_connection_is_read_again(
    mesh: LocalMesh, tmp_path: Path
) -> None:
    """SIGINT reaches the main thread while it polls its connection for its answer (where it spends its wait): the
    ``KeyboardInterrupt`` comes out of ``result()``, the task is cancelled, the socket goes back to the loop, and
    the next lone task's answer comes (read by its caller again)."""
    gate = str(tmp_path / "gate")
    main = threading.get_ident()
    with mesh.client(0) as c:
        _warm(c)
        f = c.submit(funcs.square_at_gate, 3, gate)
        assert f._direct is not None

        def interrupt() -> None:
            wait_for(lambda: _in_read(main), 10, what="the caller reads its connection")
            signal.pthread_kill(main, signal.SIGINT)

        t = threading.Thread(target=interrupt)
        t.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                f.result(timeout=30)
        finally:
            t.join(10)
            Path(gate).touch()
        assert f.cancelled()
        assert not _reading(c)
        read = c._async.read_direct
        assert c.submit(funcs.square, 4).result(timeout=30) == 16
        wait_for(lambda: _settled(c), 20, what="the loop recorded every task and its result")
        assert c.submit(funcs.square, 5).result(timeout=30) == 25
        assert c._async.read_direct > read  # lone tasks are read by their caller again
        assert c.stats["duplicates"] == 0


def test_a_caller_reading_for_a_stopped_node_raises_its_timeout_and_the_task_still_finishes(
    mesh: LocalMesh, tmp_path: Path
) -> None:
    """The owning node is SIGSTOPped while the caller reads: ``result(timeout)`` raises ``MeshTimeoutError``,
    without waiting a heartbeat timeout or ``READ_OWN_S`` past it; once the node goes on, a later ``result()``
    gets the value (read by the loop's reader: the socket went back to it)."""
    gate = str(tmp_path / "gate")
    with mesh.client(0, heartbeat_timeout=60.0) as c:  # no failover: the stopped node is the only one
        _warm(c)
        f = c.submit(funcs.square_at_gate, 6, gate)
        mesh.kill(0, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            with pytest.raises(MeshTimeoutError):
                f.result(timeout=0.2)
            waited = time.monotonic() - t0
            assert waited < 5.0, waited  # the timeout holds (generous: the box is shared)
            assert not _reading(c)
        finally:
            mesh.kill(0, signal.SIGCONT)
        Path(gate).touch()
        assert f.result(timeout=30) == 36
        wait_for(lambda: _settled(c), 20, what="the loop recorded every task and its result")


def test_closing_the_client_from_another_thread_ends_a_callers_read(mesh: LocalMesh, tmp_path: Path) -> None:
    """``Client.close()`` on another thread while the caller reads its connection for an answer that will not
    come: the caller stops reading and its ``result()`` raises a ``MeshError`` at once (not at its timeout); the
    reader's pipe is closed with the connection (the leak guard counts descriptors)."""
    gate = str(tmp_path / "gate")
    c = mesh.client(0)
    try:
        _warm(c)
        f = c.submit(funcs.square_at_gate, 7, gate)
        assert f._direct is not None
        main = threading.get_ident()

        def close() -> None:
            wait_for(lambda: _in_read(main), 10, what="the caller reads its connection")
            c.close()

        t = threading.Thread(target=close)
        t.start()
        t0 = time.monotonic()
        with pytest.raises(MeshError):
            f.result(timeout=60)
        assert time.monotonic() - t0 < 30  # the client's close, not the caller's timeout, ended the wait
        t.join(30)
        assert not t.is_alive()
        conn = c._async._conns.get(0)
        assert conn is not None
        assert conn._lean._pipe is None  # type: ignore[attr-defined]
    finally:
        Path(gate).touch()
        c.close()


def test_a_cancel_from_another_thread_ends_a_callers_read(mesh: LocalMesh, tmp_path: Path) -> None:
    """``fut.cancel()`` on another thread while the caller reads for its answer: the caller's ``result()`` raises
    ``CancelledTaskError`` well before its timeout, and the connection is read again afterwards."""
    gate = str(tmp_path / "gate")
    with mesh.client(0) as c:
        _warm(c)
        f = c.submit(funcs.square_at_gate, 8, gate)
        main = threading.get_ident()

        def cancel() -> None:
            wait_for(lambda: _in_read(main), 10, what="the caller reads its connection")
            assert f.cancel()

        t = threading.Thread(target=cancel)
        t.start()
        try:
            t0 = time.monotonic()
            with pytest.raises(CancelledTaskError):
                f.result(timeout=60)
            assert time.monotonic() - t0 < 30
        finally:
            t.join(10)
            Path(gate).touch()
        assert c.submit(funcs.square, 9).result(timeout=30) == 81
        wait_for(lambda: _settled(c), 20, what="the loop recorded every task and its result")


def test_two_threads_waiting_on_one_direct_future_both_get_its_value(mesh: LocalMesh, tmp_path: Path) -> None:
    """Two threads call ``result()`` on the same future sent from the caller's thread: one reads the connection,
    the other cannot (``begin_read`` refuses) and waits the ordinary way; both get the value once the task ends,
    and the result is counted once."""
    gate = str(tmp_path / "gate")
    with mesh.client(0) as c:
        _warm(c)
        results = c.stats["results"]
        f = c.submit(funcs.square_at_gate, 11, gate)
        got: list[int] = []
        errors: list[BaseException] = []

        def wait() -> None:
            try:
                got.append(f.result(timeout=60))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=wait) for _ in range(2)]
        for t in threads:
            t.start()
        wait_for(lambda: _reading(c), 10, what="one of them reads the connection")
        Path(gate).touch()
        for t in threads:
            t.join(60)
        assert not errors, errors
        assert got == [121, 121]
        wait_for(lambda: _settled(c), 20, what="the loop recorded every task and its result")
        assert c.stats["results"] == results + 1
        assert c.stats["duplicates"] == 0


def test_a_future_polled_with_done_while_its_caller_reads_settles_once(mesh: LocalMesh, tmp_path: Path) -> None:
    """Another thread polls ``done()`` on a future whose caller reads the connection for it (``_give_back``: the
    loop is asked to read again while the caller still reads): the value arrives once, by whichever reads it."""
    gate = str(tmp_path / "gate")
    with mesh.client(0) as c:
        _warm(c)
        f = c.submit(funcs.square_at_gate, 12, gate)
        got: list[int] = []
        waiter = threading.Thread(target=lambda: got.append(f.result(timeout=60)))
        waiter.start()
        wait_for(lambda: _reading(c), 10, what="the waiting thread reads the connection")
        assert not f.done()
        assert f._direct is None  # looked at otherwise: the loop's reader reads for it again
        Path(gate).touch()
        waiter.join(60)
        assert got == [144]
        wait_for(lambda: _settled(c), 20, what="the loop recorded every task and its result")
        assert c.stats["duplicates"] == 0
        assert c.submit(funcs.square, 2).result(timeout=30) == 4


def test_a_failover_while_the_caller_reads_ends_its_read_and_the_new_owners_answer_comes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The owner is SIGSTOPped (its last PONG read, three PINGs unanswered) and a lone task goes to it; its caller
    reads the connection (``READ_OWN_S`` raised so that the read outlasts the heartbeat timeout), reads nothing,
    and is still reading when the client fails over to the other node: it sees its connection replaced and stops,
    and the new owner's answer reaches its ``result()``, once."""
    monkeypatch.setattr(client_mod, "READ_OWN_S", 60.0)
    gate = str(tmp_path / "gate")
    main = threading.get_ident()
    with LocalMesh(2, startup_timeout=60) as m, m.client(0, spread=1, heartbeat_timeout=2.0) as c:
        a = c._async
        wait_for(lambda: len(a._known_nodes) >= 2, 30, what="the client learns the other node")
        _warm(c)
        results = c.stats["results"]
        read_from = a._conns[0]
        m.kill(0, signal.SIGSTOP)
        try:
            # every PING's send puts the loop's reader back and drains the socket: a PONG sent before the stop is read
            wait_for(lambda: len(a._ping_marks[0]) >= 3, 10, what="three PINGs unanswered")
            handed = a.handed_back
            f = c.submit(funcs.square_at_gate, 13, gate)
            assert f._direct is not None

            def after_failover() -> None:
                wait_for(lambda: _in_read(main), 10, what="the caller reads its connection")
                wait_for(lambda: a.failovers == 1, 30, what="the client fails over")
                Path(gate).touch()  # the new owner runs it to the end

            t = threading.Thread(target=after_failover)
            t.start()
            t0 = time.monotonic()
            assert f.result(timeout=60) == 169
            assert time.monotonic() - t0 < 45  # the failover, not READ_OWN_S, ended the read
            t.join(60)
        finally:
            m.kill(0, signal.SIGCONT)
        assert a.handed_back == handed  # nothing came on the old connection meanwhile
        assert a._conns[0] is not read_from
        assert not read_from._lean.reading  # type: ignore[attr-defined]
        wait_for(lambda: _settled(c), 20, what="the loop recorded every task and its result")
        assert c.stats["results"] == results + 1
        assert c.stats["duplicates"] == 0
        assert c.submit(funcs.square, 3).result(timeout=30) == 9
