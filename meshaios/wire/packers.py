"""``packb``: ``msgpack.packb`` on a ``Packer`` reused by each thread, for the hot path's many small messages.

A ``msgpack.Packer`` allocates a 256 KiB buffer when it is made. One made and dropped at a time is cheap (the
allocator hands the same block back), but the codecs nest them -- a message header packs its payload references,
a value packs its tuples -- and two such buffers alive at once cost the allocator a fresh mapping and its page
faults each time: 25 us to encode a one-result RESULTS message, 10 us per argument tuple, where a reused packer
takes 1-3 us. Here each thread keeps a few idle packers and takes one per (possibly nested) call; a packer whose
buffer grew past ``KEEP_BYTES`` is dropped rather than kept, so a thread never holds a large buffer for good.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import msgpack

KEEP_BYTES = 1 << 20  # a packer that produced more than this is not kept: its buffer grew to that size
IDLE_MAX = 6  # idle packers kept per thread and kind (nesting deeper than this makes fresh ones)

Default = Callable[[Any], Any]


class _Hook:
    """A packer's ``default``: the callable of the call it is serving now (a packer is made once, its ``default``
    fixed then)."""

    __slots__ = ("fn",)

    def __init__(self) -> None:
        self.fn: Default | None = None

    def __call__(self, obj: Any) -> Any:
        fn = self.fn
        if fn is None:
            raise TypeError(f"can not serialize {type(obj).__name__!r} object")
        return fn(obj)


class _Idle(threading.local):
    def __init__(self) -> None:
        self.loose: list[tuple[msgpack.Packer, _Hook]] = []  # strict_types=False
        self.strict: list[tuple[msgpack.Packer, _Hook]] = []  # strict_types=True


_idle = _Idle()


def packb(obj: Any, default: Default | None = None, *, strict_types: bool = False) -> bytes:
    """``msgpack.packb(obj, default=default, strict_types=strict_types, use_bin_type=True)``, on a reused packer.
    Reentrant: a ``default`` that packs something itself gets another packer."""
    idle = _idle.strict if strict_types else _idle.loose
    if idle:
        packer, hook = idle.pop()
    else:
        hook = _Hook()
        packer = msgpack.Packer(default=hook, strict_types=strict_types, use_bin_type=True)
    hook.fn = default
    try:
        blob: bytes = packer.pack(obj)  # autoreset: the packer is empty again (a failed one is not kept)
    finally:
        hook.fn = None  # nothing of this call stays referenced from the thread
    if len(blob) <= KEEP_BYTES and len(idle) < IDLE_MAX:
        idle.append((packer, hook))
    return blob
