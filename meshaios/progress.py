"""Progress bars for long client operations (``map``, ``gather``, ``mapreduce``), drawn with rich.

``progress(futures, desc=...)`` starts a bar that advances as the futures finish and closes itself when the last
one has; used as a context manager it also closes when the block ends (say, ``gather`` raised). It draws only
where a person is looking -- stdout is a terminal, or a Jupyter notebook -- unless told otherwise::

    with progress(futures, desc="gather"):          # doctest: +SKIP
        values = [f.result() for f in futures]

Turned off (``enabled=False``, ``MESHAIOS_PROGRESS=0``, or output that is not a terminal), ``progress`` returns a
shared do-nothing object without looking at the futures: no callbacks, no threads, no allocation per future.
``MESHAIOS_PROGRESS=1`` forces bars on (e.g. under a pager that is not a TTY).

All bars of a process share one live display: a terminal is one screen, and rich allows one live display at a
time. The display lives while at least one bar is open.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Protocol

ENV = "MESHAIOS_PROGRESS"


class FutureLike(Protocol):
    def done(self) -> bool: ...

    def add_done_callback(self, fn: Callable[[Any], Any], /) -> None: ...


class ProgressBar:
    """What ``progress`` returns: ``close()`` it, or use it as a context manager."""

    active = False
    completed = 0
    failed = 0
    total = 0

    def close(self) -> None:
        return None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


_OFF = ProgressBar()


def progress_enabled(enabled: bool | None = None) -> bool:
    """``enabled`` if given; else ``MESHAIOS_PROGRESS`` (0/1); else whether stdout is a terminal or a notebook."""
    if enabled is not None:
        return enabled
    env = os.environ.get(ENV, "").strip().lower()
    if env in ("0", "false", "no", "off"):
        return False
    if env in ("1", "true", "yes", "on"):
        return True
    return _stdout_is_tty() or _in_notebook()


def _stdout_is_tty() -> bool:
    try:
        return sys.stdout is not None and sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced or closed stdout
        return False


def _in_notebook() -> bool:
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    get = getattr(ipython, "get_ipython", None)
    shell = get() if callable(get) else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def progress(
    futures: Iterable[FutureLike],
    *,
    desc: str = "tasks",
    enabled: bool | None = None,
    delay: float = 0.0,
    console: Any = None,
) -> ProgressBar:
    """A bar over ``futures`` that advances as each finishes (a failure counts as finished, and is shown).

    ``delay``: draw nothing unless the work is still unfinished after this many seconds (so that quick calls do
    not flash a bar). ``console``: a ``rich.console.Console`` to draw on (tests); it gets a display of its own.
    """
    if not progress_enabled(enabled):
        return _OFF
    futs = list(futures)
    if not futs:
        return _OFF
    return _LiveBar(futs, desc, _display_for(console), delay)


class _Display:
    """One rich ``Progress`` (a live display) shared by every open bar that draws on the same console."""

    def __init__(self, console: Any) -> None:
        self.console = console
        self.lock = threading.Lock()
        self.progress: Any = None
        self.open = 0

    def add(self, desc: str, total: int, completed: int, failed: int) -> Any:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with self.lock:
            if self.progress is None:
                self.progress = Progress(
                    TextColumn("[bold]{task.description}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TextColumn("{task.fields[failed]}"),
                    TimeElapsedColumn(),
                    console=self.console,
                    transient=False,
                    refresh_per_second=8,
                )
                self.progress.start()
            self.open += 1
            return self.progress.add_task(desc, total=total, completed=completed, failed=_failed_text(failed))

    def update(self, task_id: Any, completed: int, failed: int) -> None:
        with self.lock:
            p = self.progress
            if p is not None and task_id in p.task_ids:
                p.update(task_id, completed=completed, failed=_failed_text(failed))

    def remove(self, task_id: Any) -> None:
        with self.lock:
            p = self.progress
            if p is None:
                return
            p.refresh()
            self.open -= 1
            if self.open == 0:
                self.progress = None
                p.stop()  # rich's refresh thread only sets a flag here: nothing waits on it


def _failed_text(failed: int) -> str:
    return f"[red]{failed} failed[/red]" if failed else ""


_shared: _Display | None = None
_shared_lock = threading.Lock()


def _display_for(console: Any) -> _Display:
    global _shared
    if console is not None:
        return _Display(console)
    with _shared_lock:
        if _shared is None:
            _shared = _Display(None)
        return _shared


class _LiveBar(ProgressBar):
    """Counts completions from the futures' callbacks (any thread); draws once shown, until closed.

    One lock guards the counts and every call into the display; the display never calls back, so the order
    (bar lock, then display lock) cannot deadlock.
    """

    def __init__(self, futures: list[FutureLike], desc: str, display: _Display, delay: float) -> None:
        self.total = len(futures)
        self.completed = 0
        self.failed = 0
        self.active = True
        self._desc = desc
        self._lock = threading.Lock()
        self._display = display
        self._task: Any = None
        self._timer: threading.Timer | None = None
        for f in futures:
            f.add_done_callback(self._one_done)  # runs at once for a future already done
        if delay > 0:
            timer = threading.Timer(delay, self._show)
            timer.daemon = True
            with self._lock:
                if self.active:
                    self._timer = timer
                    timer.start()
        else:
            self._show()

    def _show(self) -> None:
        with self._lock:
            if self.active and self._task is None:
                self._task = self._display.add(self._desc, self.total, self.completed, self.failed)

    def _one_done(self, fut: Any) -> None:
        failed = _failed(fut)
        with self._lock:
            if not self.active:
                return
            self.completed += 1
            self.failed += failed
            if self._task is not None:
                self._display.update(self._task, self.completed, self.failed)
            if self.completed < self.total:
                return
        self.close()

    def close(self) -> None:
        with self._lock:
            if not self.active:
                return
            self.active = False
            if self._timer is not None:
                self._timer.cancel()
            if self._task is not None:
                self._display.remove(self._task)


def _failed(fut: Any) -> int:
    """1 if a finished future holds an exception. Never blocks: ``exception(0)`` on a done future."""
    exception = getattr(fut, "exception", None)
    if exception is None:
        return 0
    try:
        return 1 if exception(0) is not None else 0
    except Exception:  # cancelled, or a future type with another signature: finished, not failed
        return 0
