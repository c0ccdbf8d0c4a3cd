"""Jepsen-style accounting of a run: every submitted task is ok, failed, lost, duplicated or wrong."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Account:
    submitted: int = 0
    ok: int = 0
    failed: int = 0  # completed with an error (not expected in a chaos run: counted, reported)
    lost: int = 0  # never completed before the deadline
    duplicated: int = 0  # a future that completed more than once, as the client saw it
    wrong: int = 0  # completed with a value other than the known answer
    examples: list[str] = field(default_factory=list)

    def record(self, key: str, expected: Any, outcome: str, value: Any = None, completions: int = 1) -> None:
        self.submitted += 1
        if completions > 1:
            self.duplicated += 1
            self._example(f"{key}: completed {completions} times")
        if outcome == "lost":
            self.lost += 1
            self._example(f"{key}: lost")
        elif outcome == "failed":
            self.failed += 1
            self._example(f"{key}: failed: {value}")
        elif value != expected:
            self.wrong += 1
            self._example(f"{key}: got {value!r}, expected {expected!r}")
        else:
            self.ok += 1

    def _example(self, text: str) -> None:
        if len(self.examples) < 10:
            self.examples.append(text)

    @property
    def valid(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.wrong == 0
