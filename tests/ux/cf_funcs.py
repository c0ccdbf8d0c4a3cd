"""Task functions for the tests adapted from CPython's ``test_concurrent_futures`` (imported by reference in the
node processes). Where CPython blocks a call on a ``threading.Event``, these block on a file: the nodes of a
LocalMesh share the test's file system."""

from __future__ import annotations

import os
import time


def mul(x: int, y: int) -> int:
    return x * y


def capture(*args: object, **kwargs: object) -> tuple[tuple[object, ...], dict[str, object]]:
    return args, kwargs


def wait_for_file(gate: str, limit: float = 120.0) -> None:
    """Hold a slot until ``gate`` exists (CPython's ``event.wait``); ``limit`` bounds a test that forgot to open it."""
    end = time.monotonic() + limit
    while not os.path.exists(gate) and time.monotonic() < end:
        time.sleep(0.005)


def wait_and_raise(gate: str) -> None:
    wait_for_file(gate)
    raise Exception("this is an exception")  # exactly what CPython's test raises


class MyObject:
    def my_method(self) -> None:
        pass


def make_dummy_object(_: object) -> MyObject:
    return MyObject()
