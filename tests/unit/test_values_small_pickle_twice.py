"""``loads``' shortcut for a small frameless value, given a resolver, once read until the first task reference, gave
up and read the whole blob again the counting way (2caa9b2, found by review): anything built before the reference was
built twice. A pickled argument before a future in a tiny task's arguments (an authenticated mesh allows pickle) was
unpickled twice on the executor, its ``__reduce__`` / ``__setstate__`` side effects run twice. References now resolve
as the shortcut reads them."""

from __future__ import annotations

import pickle
from typing import Any

import msgpack

from meshaios.wire import values as V
from meshaios.wire.payload import Payload
from meshaios.wire.values import EXT_PICKLE, EXT_REF, loads

CALLS: list[int] = []


def _made() -> str:
    CALLS.append(1)
    return "made"


class Counted:
    """Unpickling it calls ``_made`` once (what a class with a side-effecting ``__setstate__`` does)."""

    def __reduce__(self) -> Any:
        return (_made, ())


def test_a_pickled_argument_before_a_reference_is_unpickled_once() -> None:
    blob = msgpack.packb([[msgpack.ExtType(EXT_PICKLE, pickle.dumps(Counted())), msgpack.ExtType(EXT_REF, b"t1")], {}])
    assert len(blob) <= getattr(V, "SMALL_VALUE", 128)  # within the shortcut: ``f(obj, future)``'s arguments
    CALLS.clear()
    out = loads(Payload(blob), allow_pickle=True, resolve_ref=lambda task_id: 42)
    assert out == [["made", 42], {}]
    assert len(CALLS) == 1, f"unpickled {len(CALLS)} times"


class _Inputs:
    """Stands for a task's inputs (a 100 MiB array) that the executor's resolver holds."""

    def get(self, task_id: str) -> int:
        return 7


def test_a_small_value_with_a_reference_keeps_no_hold_on_its_resolver() -> None:
    import gc
    import weakref

    blob = msgpack.packb([[msgpack.ExtType(EXT_REF, b"t1")], {}])
    inputs = _Inputs()
    gone = weakref.ref(inputs)
    gc.disable()  # only reference counting: a cycle through the hook would keep the inputs
    try:
        assert loads(Payload(blob), allow_pickle=False, resolve_ref=inputs.get) == [[7], {}]
        del inputs
        assert gone() is None
    finally:
        gc.enable()
