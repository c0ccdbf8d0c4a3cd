"""Interrupting a user's function that overstays its inline run on the node's event loop.

A user's function measured tiny many times in a row may run inline, on the loop (``ExecCore``, INLINE_USER_STREAK),
but nothing measured says that the next call will not wait on a file, a lock or a socket -- and on the loop that
stops the node: no SWIM answers, no results, no client requests. ``OverrunGuard.call`` runs it under a real-time
interval timer (``setitimer``, SIGALRM, every ``limit`` seconds): when it fires during the call, the handler raises
``InlineOverrun`` in the loop's thread, which interrupts Python code and the waits the interpreter can interrupt
(``time.sleep``, lock and event waits, socket calls, ``select``) -- time the garbage collector took during the
call does not count (a full collection of a node's heap took 40 ms inside a tiny call). The node then runs the
task again on a worker thread and never inline again. The run is abandoned midway, as a run on a node presumed dead
is (its side effects so far happened once more; the result counted is the worker's). What it cannot interrupt: a
long call inside a C extension that does not check for signals holds the loop until it returns, once; and a call
whose thread the machine did not run for ``limit`` (a very loaded machine) is interrupted as if it had waited.

Only in the main thread (where Python runs signal handlers), and only while nobody else's SIGALRM handler or timer
could be disturbed: the previous handler and timer (pytest-timeout's, say) are put back after each call, the timer
with what was left of it.
"""

from __future__ import annotations

import gc
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

# ``signal.getsignal`` turns what it finds into a ``Handlers`` enum member, raising and catching a ValueError on the
# way for a Python handler: the C function's answer is all ``call`` needs (0 is SIG_DFL)
_getsignal: Callable[[int], Any] = getattr(signal, "_signal", signal).getsignal
_SIGALRM = int(signal.SIGALRM)

# Seconds the garbage collector has run in this process (all threads), kept by ``gc.callbacks`` once a guard
# exists: a full collection started inside a tiny call (40 ms on a node, seen) is not the call's doing, and does
# not count towards its limit.
_gc = [0.0, 0.0, 0.0]  # total, start of the collection under way, 1.0 while one is


def _gc_timer(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _gc[1] = time.perf_counter()
        _gc[2] = 1.0
    else:
        _gc[0] += time.perf_counter() - _gc[1]
        _gc[2] = 0.0


class InlineOverrun(BaseException):
    """Raised in a user's function that ran inline for longer than its limit (a ``BaseException``, as
    ``KeyboardInterrupt``: ``except Exception`` in the function does not swallow it)."""


class OverrunGuard:
    def __init__(self, limit: float) -> None:
        self.limit = limit
        self._armed = False
        self._handler = self._alarm  # one bound method: what ``signal.getsignal`` returns while it is installed
        self._main = threading.main_thread().ident
        # what ``call`` replaced: (a handler to put back or None, the timer found: seconds left and interval,
        # when it was read)
        self._saved: tuple[Any, float, float, float] | None = None
        self.fired = 0  # interruptions
        self._since = (0.0, 0.0)  # when the call began, and the collector's total then
        if _gc_timer not in gc.callbacks:
            gc.callbacks.append(_gc_timer)

    def usable(self) -> bool:
        """The calling thread can take a SIGALRM handler (the main thread), and the current one can be put back."""
        return threading.get_ident() == self._main and _getsignal(_SIGALRM) is not None

    def _alarm(self, signum: int, frame: Any) -> None:
        # installed for good where SIGALRM had its default action (ending the process): a stray one is ignored
        if self._armed and not _gc[2]:  # never inside a collection (its callbacks run Python code)
            t0, gc0 = self._since
            if time.perf_counter() - t0 - (_gc[0] - gc0) < self.limit:
                return  # the collector took the time (the timer fires again after another ``limit``)
            self.fired += 1
            raise InlineOverrun

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``, interrupted by ``InlineOverrun`` every ``limit`` seconds until it returns. A caller that
        catches ``InlineOverrun`` calls ``disarm`` (the exception may come in this function's own clean-up)."""
        found = _getsignal(_SIGALRM)
        prev = None
        if found is not self._handler:
            signal.signal(signal.SIGALRM, self._handler)
            if found != signal.SIG_DFL:  # someone else's (pytest-timeout's, say): theirs again afterwards
                prev = found
        left, interval = signal.setitimer(signal.ITIMER_REAL, self.limit, self.limit)
        now = time.perf_counter()
        self._saved = (prev, left, interval, now)
        self._since = (now, _gc[0])
        self._armed = True
        try:
            return fn(*args)
        finally:
            self.disarm()

    def disarm(self) -> None:
        """Stop the timer and put back a handler and a timer found running. Idempotent."""
        self._armed = False
        saved, self._saved = self._saved, None
        if saved is None:
            return
        signal.setitimer(signal.ITIMER_REAL, 0)
        prev, left, interval, t0 = saved
        if prev is not None:
            signal.signal(signal.SIGALRM, prev)
        if left > 0:  # someone else's timer was running: what is left of it
            signal.setitimer(signal.ITIMER_REAL, max(1e-6, left - (time.perf_counter() - t0)), interval)
