"""A quicker ``__init__`` for the frozen, slotted dataclasses that the node makes for every task.

The owner's and the executing node's events and instructions (``SubmitTasks``, ``Dispatch``, ``RunTasks``,
``StartOnWorker``, ``Finished``, ``SendResult``, ``Completed``, ``Deliver``, ...), and every ``Payload``, are
``@dataclass(frozen=True, slots=True)``: a frozen dataclass's generated ``__init__`` assigns each field through
``object.__setattr__`` (a global lookup, an attribute lookup and a call per field), about 2.5x the time of a plain
one: ~1 µs for a class of four fields, some ten of them per tiny task. ``fast_init`` gives such a class an
``__init__`` that stores each field through its slot's descriptor instead: the same signature, defaults and default
factories, the same values stored; the class stays frozen (assigning to a field still raises
``FrozenInstanceError``), hashable and equal as before -- nothing but ``__init__`` is replaced.

A class this cannot do exactly (not a slotted dataclass, a ``__post_init__``, ``InitVar``s, fields left out of
``__init__`` or keyword-only) keeps the ``__init__`` it had.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")

_NO_ARG = object()  # a default factory's parameter not given


def fast_init(cls: type[T]) -> type[T]:
    """``cls`` with the quicker ``__init__`` (see the module), or as it was where that would not be the same."""
    if (
        not dataclasses.is_dataclass(cls)
        or "__slots__" not in cls.__dict__
        or hasattr(cls, "__post_init__")
        # the dataclass made its __init__ (from source text: "<string>"), not the class itself
        or getattr(getattr(cls.__init__, "__code__", None), "co_filename", "") != "<string>"
    ):
        return cls
    initvar = getattr(dataclasses, "_FIELD_INITVAR", None)
    if any(getattr(f, "_field_type", None) is initvar for f in getattr(cls, "__dataclass_fields__", {}).values()):
        return cls
    fields = dataclasses.fields(cls)
    names: dict[str, Any] = {"_NO_ARG": _NO_ARG}
    params: list[str] = []
    body: list[str] = []
    for i, f in enumerate(fields):
        if not f.init or f.kw_only:
            return cls
        setter = getattr(cls, f.name, None)
        if setter is None or not hasattr(setter, "__set__"):
            return cls
        names[f"_set{i}"] = setter.__set__
        if f.default_factory is not dataclasses.MISSING:
            names[f"_factory{i}"] = f.default_factory
            params.append(f"{f.name}=_NO_ARG")
            body.append(f"_set{i}(self, _factory{i}() if {f.name} is _NO_ARG else {f.name})")
        elif f.default is not dataclasses.MISSING:
            names[f"_default{i}"] = f.default
            params.append(f"{f.name}=_default{i}")
            body.append(f"_set{i}(self, {f.name})")
        else:
            params.append(f.name)
            body.append(f"_set{i}(self, {f.name})")
    src = f"def __init__(self, {', '.join(params)}):\n    " + "\n    ".join(body or ["pass"]) + "\n"
    exec(src, names)
    init = names["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init  # type: ignore[method-assign]
    return cls

