"""``meshaios.wait`` and ``meshaios.as_completed``: ``concurrent.futures.wait``/``as_completed`` for meshaios futures.

A ``meshaios.Future`` is not a ``concurrent.futures.Future`` (its ``result()`` may fetch a large value from the node
that holds it, which a ``concurrent.futures.Future`` never does once done), so the standard library's functions do
not take it. These two have their signatures and semantics, take any mix of meshaios futures and
``concurrent.futures`` futures (``client.executor()``'s included) and give back the very objects they were given:

>>> done, not_done = meshaios.wait(futures, timeout=10, return_when=meshaios.FIRST_COMPLETED)  # doctest: +SKIP
>>> for f in meshaios.as_completed(futures, timeout=60):                                         # doctest: +SKIP
...     print(f.result())

Duplicates count once; a cancelled future is done; ``FIRST_EXCEPTION`` returns at the first future that failed
(a task that raised, or was cancelled by the mesh); ``as_completed`` raises ``meshaios.MeshTimeoutError`` (a
``TimeoutError``) with the standard library's message, and keeps no reference to a future it has yielded.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterable, Iterator
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION
from typing import Any, NamedTuple

from meshaios.client import Future
from meshaios.errors import MeshTimeoutError

__all__ = ["ALL_COMPLETED", "FIRST_COMPLETED", "FIRST_EXCEPTION", "DoneAndNotDone", "as_completed", "wait"]


class DoneAndNotDone(NamedTuple):
    """What ``wait`` returns, as ``concurrent.futures.wait`` does: two sets of the futures it was given."""

    done: set[Any]
    not_done: set[Any]


def _by_state(fs: Iterable[Any]) -> dict[concurrent.futures.Future[Any], Any]:
    """Each distinct future given, keyed by the ``concurrent.futures.Future`` that holds its state."""
    out: dict[concurrent.futures.Future[Any], Any] = {}
    for f in fs:
        if isinstance(f, Future):
            out[f._cf] = f
        elif isinstance(f, concurrent.futures.Future):
            out[f] = f
        else:
            raise TypeError(f"expected meshaios or concurrent.futures futures, got {type(f).__name__}")
    return out


def wait(fs: Iterable[Any], timeout: float | None = None, return_when: str = ALL_COMPLETED) -> DoneAndNotDone:
    """``concurrent.futures.wait`` for meshaios futures: ``(done, not_done)`` once ``return_when``
    (``ALL_COMPLETED``, ``FIRST_COMPLETED``, ``FIRST_EXCEPTION``) holds or ``timeout`` seconds have passed."""
    if return_when not in (ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION):
        raise ValueError(f"return_when must be ALL_COMPLETED, FIRST_COMPLETED or FIRST_EXCEPTION, not {return_when!r}")
    by_state = _by_state(fs)
    done, not_done = concurrent.futures.wait(by_state, timeout, return_when)
    return DoneAndNotDone({by_state[f] for f in done}, {by_state[f] for f in not_done})


def as_completed(fs: Iterable[Any], timeout: float | None = None) -> Iterator[Any]:
    """``concurrent.futures.as_completed`` for meshaios futures: each future as it finishes (those already
    finished first); ``MeshTimeoutError`` if some have not finished ``timeout`` seconds after the first ``next()``."""
    by_state = _by_state(fs)
    try:
        for f in concurrent.futures.as_completed(by_state, timeout):
            yield by_state.pop(f)  # popped: no reference kept to what the caller has been given
    except TimeoutError as exc:
        raise MeshTimeoutError(str(exc)) from None
