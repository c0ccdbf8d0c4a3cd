"""A module an operator might allow that re-exports functions of modules it does not own (test_allowlist.py)."""

from os import getcwd  # noqa: F401 - re-exported on purpose
from posixpath import join  # noqa: F401 - re-exported on purpose


def mine(x: int) -> int:
    return x + 1


def total(key: object, values: list[float]) -> float:
    return sum(values)
