"""Jepsen-style accounting of a run: every submitted task is ok, failed, lost, hung, duplicated or wrong."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Account:
    submitted: int = 0
    ok: int = 0
    failed: int = 0  # completed with an error of the task's own (not expected in a chaos run: counted, reported)
    lost: int = 0  # failed because the mesh lost it (MeshUnavailable, NodeLost, ObjectLost, LineageLost)
    hung: int = 0  # still pending at the deadline: a future that would have waited for ever
    duplicated: int = 0  # a future that completed more than once, as the client saw it
    wrong: int = 0  # completed with a value other than the known answer
    examples: list[str] = field(default_factory=list)

    def record(self, key: str, expected: Any, outcome: str, value: Any = None, completions: int = 1) -> None:
        self.submitted += 1
        if completions > 1:
            self.duplicated += 1
            self._example(f"{key}: completed {completions} times")
        if outcome == "hung":
            self.hung += 1
            self._example(f"{key}: still pending at the deadline")
        elif outcome == "lost":
            self.lost += 1
            self._example(f"{key}: lost: {value}")
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
        return self.lost == 0 and self.hung == 0 and self.duplicated == 0 and self.wrong == 0
