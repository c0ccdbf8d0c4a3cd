"""Importable task functions for the security tests (insecure nodes run functions only by import reference).

``touch`` is the canary: an attack that got a task run would make the file appear. Each test checks first that
a legitimate client *can* make it appear, so an absent file means "refused", not "the canary is broken".
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


def touch(path: str) -> str:
    Path(path).write_text("the task ran\n")
    return path


def noop(x: object = None) -> object:
    return x


def total(x: Any) -> float:
    return float(x.sum())


def slow(delay: float) -> None:
    time.sleep(delay)


class Boom:
    """Unpickling this runs ``touch``: a pickled *argument* is code just as a pickled function is."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return touch, (self.path,)


def loaded_modules() -> list[str]:
    """The modules imported in the process running this task: what the fence tests compare before and after."""
    import sys

    return sorted(sys.modules)
