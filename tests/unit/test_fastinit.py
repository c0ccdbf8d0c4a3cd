"""``meshaios.fastinit.fast_init``: a frozen slotted dataclass's ``__init__`` replaced by one that stores the same
values in the same fields, with the same signature; what it cannot do exactly it leaves alone."""

from __future__ import annotations

import dataclasses
import pickle
from dataclasses import FrozenInstanceError, InitVar, dataclass, field
from typing import Any

import pytest

from meshaios.fastinit import fast_init
from meshaios.tasks.epochs import Run
from meshaios.tasks.execcore import Finished, RunTasks, SendResult, StartOnWorker
from meshaios.tasks.owner import ClientHeard, Completed, Deliver, Dispatch, LoadHeard, Release, SubmitTasks
from meshaios.wire.payload import Payload


def make() -> type:
    @dataclass(frozen=True, slots=True)
    class D:
        node: str
        tasks: list[int]
        n: int = 3
        placed: dict[str, int] = field(default_factory=dict, compare=False)

    return D


CALLS: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    (("a", [1]), {}),
    (("a", [1], 5), {}),
    (("a",), {"tasks": [2], "placed": {"x": 1}}),
    ((), {"node": "z", "tasks": [], "n": 0}),
    (("a", [1], 2, {"y": 2}), {}),
]
BAD_CALLS: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    ((), {}),
    (("a",), {}),
    (("a", [1], 1, {}, 5), {}),
    (("a", [1]), {"zz": 1}),
    (("a", [1]), {"node": "b"}),
]


def test_the_same_fields_from_the_same_arguments_and_still_frozen() -> None:
    plain, fast = make(), make()
    before = fast.__init__
    assert fast_init(fast) is fast
    assert fast.__init__ is not before
    for args, kwargs in CALLS:
        a, b = plain(*args, **kwargs), fast(*args, **kwargs)
        assert dataclasses.astuple(a) == dataclasses.astuple(b)
        assert repr(a).partition("(")[2] == repr(b).partition("(")[2]
    b1, b2 = fast("a", [1]), fast("a", [1])
    assert b1 == b2
    assert b1.placed == {}
    assert b1.placed is not b2.placed
    with pytest.raises(FrozenInstanceError):
        b1.node = "x"  # type: ignore[misc]
    for args, kwargs in BAD_CALLS:
        for cls in (plain, fast):
            with pytest.raises(TypeError):
                cls(*args, **kwargs)


def test_classes_it_cannot_do_exactly_are_left_as_they_were() -> None:
    @dataclass(frozen=True, slots=True)
    class OwnInit:
        a: int

        def __init__(self, a: int) -> None:
            object.__setattr__(self, "a", a * 2)

    @dataclass(frozen=True, slots=True)
    class PostInit:
        a: int

        def __post_init__(self) -> None:
            pass

    @dataclass(frozen=True, slots=True)
    class WithInitVar:
        a: int
        b: InitVar[int] = 0

    @dataclass(frozen=True, slots=True)
    class KwOnly:
        a: int = field(kw_only=True)

    @dataclass(frozen=True)
    class NoSlots:
        a: int

    for cls in (OwnInit, PostInit, WithInitVar, KwOnly, NoSlots):
        before = cls.__init__
        fast_init(cls)
        assert cls.__init__ is before, cls
    assert OwnInit(2).a == 4


def test_the_node_hot_path_classes_have_it_and_behave_as_before() -> None:
    for cls in (Payload, Run, RunTasks, Finished, StartOnWorker, SendResult, ClientHeard, SubmitTasks, Completed,
                Release, LoadHeard, Dispatch, Deliver):  # fmt: skip
        assert "_set0" in cls.__init__.__code__.co_names, cls
    p = Payload(b"x")
    assert p.buffers == ()
    assert p == Payload(b"x", ())
    assert hash(p) == hash(Payload(b"x"))
    assert pickle.loads(pickle.dumps(p)) == p
    d = Dispatch("n", [])
    assert d.placed == {}
    assert d == Dispatch("n", [], {"t": {}})
    f = Finished([])
    assert (f.threads, f.settle_later) == (True, False)
