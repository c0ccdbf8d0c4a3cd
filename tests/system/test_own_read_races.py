"""Races around the sync client's caller reading its own answer (``AsyncClient._read_own``, docs/performance.md
section 20), against real node processes: the caller is interrupted (Ctrl-C), its task cancelled, the client closed
or its node stopped while it reads the connection, or another thread waits on the same future. What must hold:
the caller never waits past its timeout or forever, every result reaches its future once, the connection is read
again by the loop afterwards (the next task's answer comes), and nothing is left open. Tasks that must stay
unfinished wait on a file the test creates (``funcs.square_at_gate``), never on a sleep."""

from __future__ import annotations

import dis
import linecache
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

import meshaios.client as client_mod
import meshaios.io.lean as lean
from meshaios import Client
from meshaios.errors import CancelledTaskError, MeshError, MeshTimeoutError
from meshaios.testing.localmesh import LocalMesh, wait_for
from meshaios.wire import messages as M
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


class _HeldRead:
    """Makes a lone task's caller read its connection for an answer that has not come until the test has acted, and
    records the order of what happened. A caller's read ends on its own at the first message that is not its answer
    (a PONG: handed to the loop), or after ``READ_OWN_S``; a test that waits for the read and then acts could find
    it over. So, from ``__init__`` on: ``READ_OWN_S`` is raised to ``HELD_S``, the heartbeat sends no PING (stopped on
    the loop's thread, between two of its beats; a request's PING, ``close``'s, still goes) and none is left in
    flight (its PONG read by the loop first); the gated task's answer is the test's to release. Nothing then ends
    the read but the test's action (or ``HELD_S``, should the action not end it: the test fails then, clearly).

    ``begin_read`` and ``end_read`` of the client's connection are wrapped (instance attributes, removed by
    ``restore``) to note each read begun, refused and ended in ``log``, with the test's own steps (``step``): a test
    asserts with ``acted_while_reading`` that the read it acted on had begun before and ended only after."""

    HELD_S = 20.0

    def __init__(self, c: Client, monkeypatch: pytest.MonkeyPatch) -> None:
        a = c._async
        monkeypatch.setattr(client_mod, "READ_OWN_S", self.HELD_S)
        stopped = threading.Event()
        send_ping = a._send_ping

        def requested_only(sid: int, conn: Any, msg: Any) -> None:
            waiting = a._replies.get(M.PONG)
            if waiting is not None and not waiting.done():  # a request's PING (``close``'s, ``ping()``): it goes
                send_ping(sid, conn, msg)

        def stop_pings() -> None:  # on the loop's thread: no beat is half-way through its PING now
            monkeypatch.setattr(a, "_send_ping", requested_only)
            stopped.set()

        assert a._loop is not None
        a._loop.call_soon_threadsafe(stop_pings)
        assert stopped.wait(10)
        wait_for(lambda: not any(a._ping_marks.values()), 10, what="the PONG to the last PING")
        self.conn: Any = a._conns[0]
        self.log: list[tuple[str, int]] = []
        self.begun = threading.Event()
        self.refused = threading.Event()
        self._lock = threading.Lock()
        begin, end = self.conn.begin_read, self.conn.end_read

        def begin_read() -> bool:
            ok: bool = begin()
            self._note("begun" if ok else "refused")
            return ok

        def end_read(*args: Any) -> bool:
            self._note("ended")
            out: bool = end(*args)
            return out

        self.conn.begin_read = begin_read
        self.conn.end_read = end_read

    def _note(self, what: str) -> None:
        with self._lock:
            self.log.append((what, threading.get_ident()))
        if what == "begun":
            self.begun.set()
        elif what == "refused":
            self.refused.set()

    def step(self, what: str) -> None:
        """The test's own step, in the log (call it just before the action)."""
        self._note(what)

    def acted_while_reading(self, what: str) -> None:
        """The read that began first was still going when the test noted ``what``: begun before it, ended after."""
        names = [name for name, _ in self.log]
        assert "begun" in names, self.log
        reader = self.log[names.index("begun")][1]
        ends = [i for i, (name, ident) in enumerate(self.log) if name == "ended" and ident == reader]
        assert ends, self.log
        assert names.index("begun") < names.index(what) < ends[0], self.log

    def restore(self) -> None:
        for name in ("begin_read", "end_read"):
            self.conn.__dict__.pop(name, None)


def _warm(c: Client) -> None:
    """A few lone tasks, so that the next one goes from the caller's thread (``_submit_direct``)."""
    for i in range(3):
        assert c.submit(funcs.square, i).result(timeout=30) == i * i
    wait_for(lambda: _settled(c), 10, what="the loop recorded the warm-up")


def test_ctrl_c_while_the_caller_reads_cancels_its_task_and_the_connection_is_read_again(
    mesh: LocalMesh, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGINT reaches the main thread while it polls its connection for its answer (where it spends its wait; the
    read held open, ``_HeldRead``): the ``KeyboardInterrupt`` comes out of ``result()``, the task is cancelled, the
    socket goes back to the loop, and the next lone task's answer comes (read by its caller again)."""
    gate = str(tmp_path / "gate")
    main = threading.get_ident()
    with mesh.client(0, heartbeat_timeout=60.0) as c:
        _warm(c)
        held = _HeldRead(c, monkeypatch)
        f = c.submit(funcs.square_at_gate, 3, gate)
        assert f._direct is not None

        def interrupt() -> None:
            assert held.begun.wait(10)
            # the read goes on until the SIGINT: the caller is in its poll most of the time, found there soon
            wait_for(lambda: _in_read(main), 10, interval=0.001, what="the caller polls its connection")
            held.step("interrupted")
            signal.pthread_kill(main, signal.SIGINT)

        t = threading.Thread(target=interrupt)
        t.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                f.result(timeout=30)
        finally:
            t.join(10)
            held.restore()
            Path(gate).touch()
        held.acted_while_reading("interrupted")
        assert f.cancelled()
        assert not _reading(c)
        read = c._async.read_direct
        assert c.submit(funcs.square, 4).result(timeout=30) == 16
        wait_for(lambda: _settled(c), 20, what="the loop recorded every task and its result")
        # lone tasks are read by their caller again (the loop, its reader back since the interrupted read, may read
        # an answer that comes before its caller begins to read; then the caller's next read parks the loop's reader)
        for i in range(20):
            assert c.submit(funcs.square, i).result(timeout=30) == i * i
            if c._async.read_direct > read:
                break
            wait_for(lambda: _settled(c), 20, what="the loop recorded every task and its result")
        assert c._async.read_direct > read
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


def test_closing_the_client_from_another_thread_ends_a_callers_read(
    mesh: LocalMesh, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Client.close()`` on another thread while the caller reads its connection for an answer that will not
    come (the read held open, ``_HeldRead``): the caller stops reading and its ``result()`` raises a ``MeshError``
    at once (not at its timeout); the reader's pipe is closed with the connection (the leak guard counts
    descriptors)."""
    gate = str(tmp_path / "gate")
    c = mesh.client(0, heartbeat_timeout=60.0)
    try:
        _warm(c)
        held = _HeldRead(c, monkeypatch)
        f = c.submit(funcs.square_at_gate, 7, gate)
        assert f._direct is not None

        def close() -> None:
            assert held.begun.wait(10)
            held.step("closed")
            c.close()

        t = threading.Thread(target=close)
        t.start()
        t0 = time.monotonic()
        with pytest.raises(MeshError):
            f.result(timeout=60)
        waited = time.monotonic() - t0
        t.join(30)
        assert not t.is_alive()
        held.acted_while_reading("closed")
        assert waited < _HeldRead.HELD_S / 2, waited  # the client's close, not the end of its read, ended the wait
        conn = c._async._conns.get(0)
        assert conn is not None
        assert conn._lean._pipe is None  # type: ignore[attr-defined]
    finally:
        Path(gate).touch()
        c.close()


def test_a_cancel_from_another_thread_ends_a_callers_read(
    mesh: LocalMesh, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``fut.cancel()`` on another thread while the caller reads for its answer (the read held open,
    ``_HeldRead``): the caller's ``result()`` raises ``CancelledTaskError`` well before its read would have ended,
    and the connection is read again afterwards."""
    gate = str(tmp_path / "gate")
    with mesh.client(0, heartbeat_timeout=60.0) as c:
        _warm(c)
        held = _HeldRead(c, monkeypatch)
        f = c.submit(funcs.square_at_gate, 8, gate)
        assert f._direct is not None
        cancelled: list[bool] = []

        def cancel() -> None:
            assert held.begun.wait(10)
            held.step("cancelled")
            cancelled.append(f.cancel())

        t = threading.Thread(target=cancel)
        t.start()
        try:
            t0 = time.monotonic()
            with pytest.raises(CancelledTaskError):
                f.result(timeout=60)
            waited = time.monotonic() - t0
        finally:
            t.join(10)
            held.restore()
            Path(gate).touch()
        assert cancelled == [True]
        held.acted_while_reading("cancelled")
        assert waited < _HeldRead.HELD_S / 2, waited  # the cancel, not the end of its read, ended the wait
        assert not _reading(c)
        assert c.submit(funcs.square, 9).result(timeout=30) == 81
        wait_for(lambda: _settled(c), 20, what="the loop recorded every task and its result")


def test_two_threads_waiting_on_one_direct_future_both_get_its_value(
    mesh: LocalMesh, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two threads call ``result()`` on the same future sent from the caller's thread: one reads the connection
    (held open until the task's answer, ``_HeldRead``), the other cannot (``begin_read`` refuses) and waits the
    ordinary way; both get the value once the task ends, and the result is counted once."""
    gate = str(tmp_path / "gate")
    with mesh.client(0, heartbeat_timeout=60.0) as c:
        _warm(c)
        held = _HeldRead(c, monkeypatch)
        results = c.stats["results"]
        f = c.submit(funcs.square_at_gate, 11, gate)
        assert f._direct is not None
        got: list[int] = []
        errors: list[BaseException] = []

        def wait() -> None:
            try:
                got.append(f.result(timeout=60))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=wait) for _ in range(2)]
        try:
            for t in threads:
                t.start()
            assert held.begun.wait(10)  # one reads (and goes on reading until the answer) ...
            assert held.refused.wait(10)  # ... so the other is refused
            held.step("answered")
            Path(gate).touch()
            for t in threads:
                t.join(60)
        finally:
            held.restore()
            Path(gate).touch()
        assert not errors, errors
        assert got == [121, 121]
        held.acted_while_reading("answered")
        # one read, one refusal (its thread's ``end_read`` a no-op), and nothing more: each thread tried once
        assert sorted(name for name, _ in held.log) == ["answered", "begun", "ended", "ended", "refused"], held.log
        wait_for(lambda: _settled(c), 20, what="the loop recorded every task and its result")
        assert c.stats["results"] == results + 1
        assert c.stats["duplicates"] == 0


def test_a_future_polled_with_done_while_its_caller_reads_settles_once(
    mesh: LocalMesh, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another thread polls ``done()`` on a future whose caller reads the connection for it (held open until the
    answer, ``_HeldRead``; ``_give_back``: the loop is asked to read again while the caller still reads): the value
    arrives once, by whichever reads it."""
    gate = str(tmp_path / "gate")
    with mesh.client(0, heartbeat_timeout=60.0) as c:
        _warm(c)
        held = _HeldRead(c, monkeypatch)
        f = c.submit(funcs.square_at_gate, 12, gate)
        assert f._direct is not None
        got: list[int] = []
        waiter = threading.Thread(target=lambda: got.append(f.result(timeout=60)))
        try:
            waiter.start()
            assert held.begun.wait(10)
            held.step("polled")
            assert not f.done()
            assert f._direct is None  # looked at otherwise: the loop's reader reads for it again
            Path(gate).touch()
            waiter.join(60)
        finally:
            held.restore()
            Path(gate).touch()
        assert got == [144]
        held.acted_while_reading("polled")
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
                wait_for(lambda: _in_read(main), 10, interval=0.001, what="the caller reads its connection")
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


def _interrupted_after_taking_its_answer(
    c: Client, monkeypatch: pytest.MonkeyPatch, cancel_on_interrupt: bool
) -> client_mod.Future:
    """A lone task whose caller is interrupted (SIGINT) while it decodes the batch it took from the socket, its
    answer in it: the ``KeyboardInterrupt`` comes out of ``result()``. Tried until the caller, not the loop, reads
    the answer (a PONG read first hands the batch to the loop)."""
    main = threading.get_ident()
    orig = client_mod._decoded_one
    armed = [True]
    f = c.submit(funcs.square, 3)

    def decoded(frames: list[Any]) -> Any:
        m = orig(frames)
        mine = m is not None and m["t"] == M.RESULTS and any(r.get("id") == f.key for r in m["results"])
        if armed[0] and threading.get_ident() == main and mine:
            armed[0] = False
            signal.raise_signal(signal.SIGINT)  # Ctrl-C arrives here: KeyboardInterrupt at once
        return m

    monkeypatch.setattr(client_mod, "_decoded_one", decoded)
    try:
        for _ in range(50):
            try:
                assert f.result(timeout=10, cancel_on_interrupt=cancel_on_interrupt) == 9
            except KeyboardInterrupt:
                return f
            wait_for(lambda: _settled(c), 10, what="settled")
            f = c.submit(funcs.square, 3)
        raise AssertionError("the caller never read its own answer")
    finally:
        monkeypatch.setattr(client_mod, "_decoded_one", orig)


def test_ctrl_c_after_the_caller_took_its_answer_from_the_socket_loses_nothing(
    mesh: LocalMesh, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGINT lands after the caller took its answer off the socket, before it handed the batch to the loop. With
    ``cancel_on_interrupt=False`` the task goes on, and a second ``result()`` gets its value at once (not at the
    reconcile, a minute later)."""
    with mesh.client(0, heartbeat_timeout=60.0) as c:
        _warm(c)
        f = _interrupted_after_taking_its_answer(c, monkeypatch, cancel_on_interrupt=False)
        assert f.result(timeout=5) == 9
        wait_for(lambda: _settled(c), 10, what="settled")


def test_the_default_ctrl_c_after_the_caller_took_its_answer_leaves_the_client_settled(
    mesh: LocalMesh, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same with the default ``cancel_on_interrupt``: the answer taken reaches the loop, the task is not left
    pending, and the next lone tasks go from the caller's thread and their answers come."""
    with mesh.client(0, heartbeat_timeout=60.0) as c:
        _warm(c)
        _interrupted_after_taking_its_answer(c, monkeypatch, cancel_on_interrupt=True)
        wait_for(lambda: _settled(c), 5, what="settled")
        sent = c._async.sent_direct
        for i in range(20):
            assert c.submit(funcs.square, i).result(timeout=5) == i * i
        assert c._async.sent_direct > sent
        wait_for(lambda: _settled(c), 5, what="settled")


def test_ctrl_c_right_after_the_caller_began_reading_leaves_the_connection_readable(mesh: LocalMesh) -> None:
    """SIGINT lands just after ``begin_read`` returned True: the connection is not left marked as read by a thread
    that has gone; the next task's answer comes."""
    with mesh.client(0, heartbeat_timeout=60.0) as c:
        _warm(c)
        conn = c._async._conns[0]
        orig = conn.begin_read
        armed = [True]

        def begin_read() -> bool:
            ok = orig()
            if ok and armed[0]:
                armed[0] = False
                signal.raise_signal(signal.SIGINT)
            return ok

        conn.begin_read = begin_read  # type: ignore[method-assign]
        f = c.submit(funcs.square, 3)
        try:
            with pytest.raises(KeyboardInterrupt):
                f.result(timeout=10)
        finally:
            conn.begin_read = orig  # type: ignore[method-assign]
        assert not armed[0]
        assert not _reading(c)
        assert c.submit(funcs.square, 4).result(timeout=5) == 16
        wait_for(lambda: _settled(c), 10, what="settled")


def test_ctrl_c_between_the_frames_of_a_submit_the_caller_sends_leaves_the_connection_usable(
    mesh: LocalMesh, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGINT lands between two frames of the SUBMIT the caller's thread sends (``_submit_direct``): the message
    goes whole, the task is recorded as sent, and the next SUBMITs are not glued onto it."""
    main = threading.get_ident()
    with mesh.client(0, heartbeat_timeout=60.0) as c:
        _warm(c)
        orig = lean._send
        armed = [True]
        req = c._async._next_req

        def send(sock: Any, frame: Any, flags: int, copy: bool) -> Any:
            out = orig(sock, frame, flags, copy)
            if armed[0] and threading.get_ident() == main and flags & 2:  # SNDMORE: more frames to come
                armed[0] = False
                signal.raise_signal(signal.SIGINT)
            return out

        monkeypatch.setattr(lean, "_send", send)
        try:
            with pytest.raises(KeyboardInterrupt):
                c.submit(funcs.identity, b"x" * 200_000)  # a value frame apart from the header
        finally:
            monkeypatch.setattr(lean, "_send", orig)
        assert not armed[0]
        assert c._async._next_req > req  # its number given out, not reused by the next SUBMIT
        for i in range(5):
            assert c.submit(funcs.square, i).result(timeout=5) == i * i
        wait_for(lambda: _settled(c), 5, what="settled")


def _lone_direct(c: Client, x: int, submitted: list[int]) -> client_mod.Future:
    """A lone task sent from the caller's thread (the loop made to take in what came before it first); counts the
    tasks submitted in ``submitted[0]``."""
    a = c._async
    for _ in range(50):
        assert a._loop is not None
        a._loop.call_soon_threadsafe(a._adopt)  # the loop takes in the last read now, not at its next beat
        wait_for(lambda: _settled(c), 10, what="settled")
        f = c.submit(funcs.square, x)
        submitted[0] += 1
        if f._direct is not None:
            return f
        assert f.result(timeout=10) == x * x
    raise AssertionError("no lone task went from the caller's thread")


def test_a_second_ctrl_c_while_the_caller_hands_over_what_it_read_loses_nothing(
    mesh: LocalMesh, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first SIGINT right after the caller decoded the batch it took off the socket, its answer in it; a second
    one at the caller's next step that could take it -- decoding the batch again to hand it to the loop, or the
    ``end_read`` that ends its read. Neither loses the answer (the task is not cancelled: ``result()`` again gets
    its value), nor hands it to the loop twice, and the connection is read again afterwards."""
    main = threading.get_ident()
    with mesh.client(0, heartbeat_timeout=60.0) as c:
        _warm(c)
        a = c._async
        results = c.stats["results"]
        names = [name for name in ("_decoded", "_decoded_one") if hasattr(client_mod, name)]
        decoders = {name: getattr(client_mod, name) for name in names}
        conn = a._conns[0]
        end_read = conn.end_read
        state = {"armed": False, "fired": 0}

        def second() -> None:
            if state["fired"] == 1 and threading.get_ident() == main:
                state["fired"] = 2
                signal.raise_signal(signal.SIGINT)

        def decoder(name: str) -> Any:
            orig = decoders[name]

            def decoded(arg: Any) -> Any:
                second()  # the hand-over's decoding: the second Ctrl-C
                out = orig(arg)
                msgs = out if isinstance(out, list) else [out]
                mine = any(m and m["t"] == M.RESULTS and any(r.get("id") == f.key for r in m["results"]) for m in msgs)
                if state["armed"] and threading.get_ident() == main and mine:
                    state["armed"], state["fired"] = False, 1
                    signal.raise_signal(signal.SIGINT)  # the first: the answer taken, not handed over yet
                return out

            return decoded

        def ending(*args: Any) -> bool:
            second()  # or, with nothing decoded again, the end of the read
            return end_read(*args)

        for name in decoders:
            monkeypatch.setattr(client_mod, name, decoder(name))
        conn.end_read = ending  # type: ignore[method-assign]
        interrupted = 0
        submitted = [0]
        try:
            for attempt in range(20):
                f = _lone_direct(c, attempt, submitted)
                state.update(armed=True, fired=0)
                try:
                    assert f.result(timeout=10, cancel_on_interrupt=False) == attempt * attempt
                    continue  # a PONG came first: the loop read the answer
                except KeyboardInterrupt:
                    pass
                try:
                    assert f.result(timeout=10) == attempt * attempt  # the answer was not lost
                except KeyboardInterrupt:  # the second one came once the first had left ``result()``
                    assert f.result(timeout=10) == attempt * attempt
                interrupted += 1
                if state["fired"] == 2:
                    break
        finally:
            for name, orig in decoders.items():
                monkeypatch.setattr(client_mod, name, orig)
            conn.end_read = end_read  # type: ignore[method-assign]
        assert interrupted
        assert state["fired"] == 2
        wait_for(lambda: _settled(c), 10, what="settled")
        assert c.stats["duplicates"] == 0
        assert c.stats["results"] == results + submitted[0]
        assert not _reading(c)
        assert c.submit(funcs.square, 5).result(timeout=5) == 25


_AFTER = frozenset(dis.opmap[name] for name in ("CALL", "CALL_FUNCTION_EX", "JUMP_BACKWARD") if name in dis.opmap)


@pytest.mark.parametrize("second", [0, 1, 2, 3])
def test_ctrl_c_at_any_step_of_the_callers_read_delivers_every_answer_once(mesh: LocalMesh, second: int) -> None:
    """A KeyboardInterrupt raised at each point in turn where a signal handler can run in the caller's thread
    while it reads its own answer (``AsyncClient._read_own``: the entry of each Python function and the return of
    each call into C, counted by a profile hook, ``sys.setprofile``), from before its read begins to after it
    ended; and, with ``second`` > 0, a second one at the ``second``-th such point after the first (the entry of a
    Python function, or the instruction after a call or a backward jump, counted by a trace hook, ``sys.settrace``
    with opcode events: the profile hook is gone once it raised). At every one, the task's value comes from
    ``result()`` again, the loop gets each message once (no result counted twice, none missing: every task
    settled, ``duplicates`` 0), and the next task goes as before."""
    with mesh.client(0, heartbeat_timeout=60.0) as c:
        _warm(c)
        a = c._async
        results = c.stats["results"]
        read_own = a._read_own
        at = [0]
        seen = [0]
        after = [-1]  # points since the first interrupt (-1: not yet)
        armed = [False]

        def profile(frame: FrameType, event: str, arg: Any) -> None:
            if event in ("call", "c_return"):
                seen[0] += 1
                if seen[0] == at[0]:
                    after[0] = 0
                    raise KeyboardInterrupt

        def trace(frame: FrameType, event: str, arg: Any) -> Any:
            frame.f_trace_opcodes = True
            if after[0] < 0:
                return trace
            point = event == "call"
            if event == "opcode" and frame.f_lasti >= 2:
                point = frame.f_code.co_code[frame.f_lasti - 2] in _AFTER  # the instruction before this one
            if point:
                after[0] += 1
                if after[0] == second:
                    raise KeyboardInterrupt
            return trace

        def reading(fut: client_mod.Future, timeout: float | None) -> None:
            if not armed[0]:  # the ``result()`` after the interrupt: not interrupted again
                read_own(fut, timeout)
                return
            armed[0] = False
            seen[0], after[0] = 0, -1
            if second:
                sys.settrace(trace)
            sys.setprofile(profile)
            try:
                read_own(fut, timeout)
            finally:
                sys.setprofile(None)
                sys.settrace(None)

        a._read_own = reading  # type: ignore[method-assign]
        hit = missed = 0
        submitted = [0]
        try:
            while True:
                at[0] += 1
                f = _lone_direct(c, at[0], submitted)
                armed[0] = True
                try:
                    assert f.result(timeout=10, cancel_on_interrupt=False) == at[0] ** 2
                except KeyboardInterrupt:
                    hit += 1
                    try:
                        assert f.result(timeout=10) == at[0] ** 2
                    except KeyboardInterrupt:  # the second came after the first had left ``_read_own``
                        assert f.result(timeout=10) == at[0] ** 2
                missed = missed + 1 if seen[0] < at[0] else 0
                if missed == 3:
                    break  # past the last point of three reads in a row (a read may end sooner: a PONG came first)
        finally:
            a._read_own = read_own  # type: ignore[method-assign]
        assert hit >= 20
        wait_for(lambda: _settled(c), 10, what="settled")
        assert c.stats["duplicates"] == 0
        assert c.stats["results"] == results + submitted[0]
        assert not _reading(c)
        assert c.submit(funcs.square, 5).result(timeout=5) == 25


def _lone_task_inside(c: Client, step: Callable[[], None], submitted: list[int]) -> dict[str, object]:
    """Runs ``step`` in one callback on the loop's thread (no other ``_adopt``, a beat's, meets the hook) with the
    connection's ``recheck`` hooked -- which ``_adopt`` calls after it took the list of tasks sent and what the
    caller's thread read, before it records the tasks and reads the messages -- so that there another thread sends
    a lone task and reads its answer: ``direct`` (it went from its caller's thread), ``v`` (its value), ``kept``
    (messages kept for the loop once it had it). Each time after a lone task its caller read (not recorded by the
    loop yet), until the hook ran and its task went directly."""
    a = c._async
    conn = a._conns[0]
    lean_reader = conn._lean  # type: ignore[attr-defined]
    recheck = conn.recheck
    out: dict[str, object] = {}

    def caller() -> None:
        f = c.submit(funcs.square, 5)
        submitted[0] += 1
        out["direct"] = f._direct is not None
        out["v"] = f.result(timeout=10)
        out["kept"] = len(lean_reader._kept)

    def hook() -> None:  # on the loop's thread, inside ``_adopt``: the caller goes now
        del conn.recheck  # type: ignore[method-assign]
        t = threading.Thread(target=caller)
        t.start()
        t.join(15)
        recheck()

    def with_hook() -> None:
        conn.recheck = hook  # type: ignore[method-assign]
        try:
            step()
        finally:
            conn.__dict__.pop("recheck", None)
            out["ran"] = True

    for attempt in range(20):
        f = _lone_direct(c, attempt, submitted)
        assert f.result(timeout=10) == attempt * attempt  # read by the caller; not recorded by the loop yet
        out.clear()
        assert a._loop is not None
        a._loop.call_soon_threadsafe(with_hook)
        wait_for(lambda: "ran" in out, 20, what="the loop's callback")
        out.pop("ran")
        if out.get("direct"):
            break
    return out


def _taken_in_once(c: Client, out: dict[str, object], results: int) -> None:
    """After ``_lone_task_inside``: its task went directly and had its value, and then every task is recorded and
    its answer taken in once (``results`` in all), and lone tasks go directly again."""
    assert (out["direct"], out["v"]) == (True, 25), out
    wait_for(lambda: _settled(c), 10, what="every task recorded and its result taken in")
    assert c.stats["duplicates"] == 0
    assert c.stats["results"] == results
    assert c.submit(funcs.square, 6).result(timeout=5) == 36
    assert c.submit(funcs.square, 7)._direct is not None  # lone tasks go directly again


def test_a_lone_task_answered_while_the_loop_records_earlier_ones_is_recorded_once(mesh: LocalMesh) -> None:
    """The loop records what the caller's thread sent and read (``_adopt``); meanwhile -- after it took the list of
    tasks sent, before it took in what was read -- the caller sends a lone task and reads its answer. That answer
    must wait for the next ``_adopt``, which records its task first: taken now, it would be read before its task is
    recorded (counted a duplicate), and the task left pending for good (every later lone task then goes the
    ordinary way)."""
    with mesh.client(0, heartbeat_timeout=60.0) as c:
        _warm(c)
        submitted = [0]
        results = c.stats["results"]
        out = _lone_task_inside(c, c._async._adopt, submitted)
        _taken_in_once(c, out, results + submitted[0])


def test_an_answer_read_while_the_loops_reader_takes_in_an_earlier_one_is_taken_in_once(mesh: LocalMesh) -> None:
    """The loop's reader drains the socket after a caller's read: it takes the messages that caller read (its
    answer, kept in the connection) and, before reading them, records the tasks sent from the caller's thread
    (``_on_batch`` -> ``_adopt``), whose ``take_kept`` then finds nothing kept. Meanwhile -- after that
    ``take_kept``, before ``_adopt`` reads what it took -- the caller sends another lone task and reads its answer,
    kept in the connection for the loop. That answer must be taken in once, by a later ``_adopt`` that records its
    task first. A ``take_kept`` that handed out the connection's own (empty) list of kept messages, instead of a
    list of its own, let ``_adopt`` read the answer stored into that list meanwhile -- before its task was
    recorded, a duplicate -- and the next ``take_kept`` hand the same answer over again (seen as one duplicate in
    a stress of 200 lone tasks cancelled from another thread, where the cancels made the loop adopt at such
    instants)."""
    with mesh.client(0, heartbeat_timeout=60.0) as c:
        _warm(c)
        a = c._async
        lean_reader = a._conns[0]._lean  # type: ignore[attr-defined]
        submitted = [0]
        results = c.stats["results"]
        drained: list[bool] = []

        def drain() -> None:  # what the loop's reader does when it is woken
            # the preconditions, on the loop's thread: a lone task recorded by no ``_adopt`` yet, its answer read by
            # its caller and kept in the connection, with a notice for the loop
            if a._handover and a._handback and lean_reader._kept and not lean_reader.reading:
                drained.append(True)
                lean_reader._drain()  # takes what was kept, then ``_on_batch`` -> ``_adopt`` -> ``recheck``

        out = _lone_task_inside(c, drain, submitted)
        assert drained
        assert out["kept"] == 1, out  # its answer kept for the loop, which had taken in the earlier one
        _taken_in_once(c, out, results + submitted[0])
