"""Progress bars: off by default where nobody looks (and then free), on in a terminal, closed when work ends."""

from __future__ import annotations

import concurrent.futures
import io
import threading
from collections.abc import Callable
from typing import Any

import pytest
from rich.console import Console

from meshaios.client import Client
from meshaios.progress import ProgressBar, progress, progress_enabled
from meshaios.testing.localmesh import wait_for
from tests.ux import funcs


class Untouchable:
    """A future that fails the test if the progress machinery so much as looks at it."""

    def done(self) -> bool:
        raise AssertionError("progress looked at a future while off")

    def add_done_callback(self, fn: Callable[[Any], Any], /) -> None:
        raise AssertionError("progress attached a callback while off")


def terminal() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=True, width=100, color_system=None), buf


def test_off_means_no_work_at_all(monkeypatch: pytest.MonkeyPatch) -> None:
    futs = [Untouchable() for _ in range(3)]
    bar = progress(futs, desc="x", enabled=False)
    assert not bar.active
    assert type(bar) is ProgressBar
    with bar:
        pass
    monkeypatch.setenv("MESHAIOS_PROGRESS", "0")
    assert progress(futs, desc="x") is bar  # one shared do-nothing object
    assert progress_enabled() is False
    monkeypatch.setenv("MESHAIOS_PROGRESS", "1")
    assert progress_enabled() is True
    assert progress_enabled(False) is False


def test_not_a_terminal_means_off(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("MESHAIOS_PROGRESS", raising=False)
    assert progress_enabled() is False  # pytest's captured stdout is no TTY
    assert not progress([Untouchable()], desc="x").active
    assert capsys.readouterr().out == ""


def test_bar_advances_counts_failures_and_closes_itself() -> None:
    console, buf = terminal()
    futs: list[concurrent.futures.Future[int]] = [concurrent.futures.Future() for _ in range(4)]
    futs[0].set_result(0)  # already done before the bar exists
    bar = progress(futs, desc="squares", enabled=True, console=console)
    assert bar.active
    assert bar.total == 4
    assert bar.completed == 1
    threads = [threading.Thread(target=f.set_result, args=(1,)) for f in futs[1:3]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bar.active
    assert bar.completed == 3
    futs[3].set_exception(ValueError("bad"))
    assert not bar.active
    assert bar.completed == 4
    assert bar.failed == 1
    out = buf.getvalue()
    assert "squares" in out
    assert "4/4" in out
    assert "1 failed" in out


def test_context_manager_closes_an_unfinished_bar() -> None:
    console, buf = terminal()
    fut: concurrent.futures.Future[int] = concurrent.futures.Future()
    with progress([fut], desc="never", enabled=True, console=console) as bar:
        assert bar.active
    assert not bar.active
    fut.set_result(1)  # a late completion after close is ignored
    assert bar.completed == 0
    assert "0/1" in buf.getvalue()
    assert not progress([], enabled=True, console=console).active


def test_delay_keeps_quick_work_silent() -> None:
    console, buf = terminal()
    quick: list[concurrent.futures.Future[int]] = [concurrent.futures.Future() for _ in range(3)]
    bar = progress(quick, desc="quick", enabled=True, delay=0.3, console=console)
    for f in quick:
        f.set_result(1)
    assert not bar.active
    assert buf.getvalue() == ""  # finished before the delay: never drawn

    slow: list[concurrent.futures.Future[int]] = [concurrent.futures.Future() for _ in range(2)]
    with progress(slow, desc="slow", enabled=True, delay=0.1, console=console) as bar:
        slow[0].set_result(1)
        assert buf.getvalue() == ""
        wait_for(lambda: "slow" in buf.getvalue(), 5, what="the bar after its delay")
        slow[1].set_result(1)
    assert "2/2" in buf.getvalue()


def test_bars_share_one_live_display() -> None:
    """rich allows one live display per console: a second bar joins the first instead of failing."""
    console, buf = terminal()
    from meshaios.progress import _Display, _LiveBar

    display = _Display(console)
    a: list[concurrent.futures.Future[int]] = [concurrent.futures.Future() for _ in range(2)]
    b: list[concurrent.futures.Future[int]] = [concurrent.futures.Future() for _ in range(2)]
    bar_a = _LiveBar(list(a), "first", display, 0.0)
    bar_b = _LiveBar(list(b), "second", display, 0.0)
    assert display.open == 2
    for f in a:
        f.set_result(1)
    assert not bar_a.active
    assert display.progress is not None
    for f in b:
        f.set_result(1)
    assert not bar_b.active
    assert display.progress is None
    assert display.open == 0
    out = buf.getvalue()
    assert "first" in out
    assert "second" in out


def test_with_real_mesh_futures(client: Client) -> None:
    console, buf = terminal()
    futs = client.map(funcs.slow_square, range(12), [0.05] * 12)
    with progress(futs, desc="slow squares", enabled=True, console=console) as bar:
        assert client.gather(futs) == [x * x for x in range(12)]
    assert bar.completed == 12
    assert bar.failed == 0
    failing = [client.submit(funcs.boom, "x"), client.submit(funcs.square, 3)]
    bar = progress(failing, desc="mixed", enabled=True, console=console)
    wait_for(lambda: not bar.active, 30, what="the bar closing itself")  # callbacks run after waiters wake
    assert not bar.active
    assert bar.completed == 2
    assert bar.failed == 1
    assert "slow squares" in buf.getvalue()
    assert "12/12" in buf.getvalue()
