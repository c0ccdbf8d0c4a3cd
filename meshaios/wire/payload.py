"""A serialised value: a msgpack blob plus the raw buffers (numpy arrays) it references.

Payloads are what travel inside messages. A node that only forwards a value (the owner passing a task's
arguments to the executor) never decodes it: the blob and the zero-copy frames are handed on as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from meshaios.fastinit import fast_init

Buffer = Any  # bytes, memoryview, or zmq.Frame: anything exposing the buffer protocol


@fast_init
@dataclass(frozen=True, slots=True)
class Payload:
    blob: bytes
    buffers: tuple[Buffer, ...] = field(default=())

    @property
    def nbytes(self) -> int:
        if not self.buffers:  # most payloads (a tiny task's arguments and result): no generator to run
            return len(self.blob)
        return len(self.blob) + sum(memoryview(b).nbytes for b in self.buffers)
