"""Start on ``with``, close on the way out -- and close when the start fails half way."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Managed:
    """Every harness here (node processes, network namespaces, benchmark engines) owns things that must not
    outlive a failed test or a start that broke after its first process: one place gets that path right."""

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
