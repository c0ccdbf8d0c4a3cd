"""When a ``put`` may be acknowledged: once every copy it is meant to have is held (pure bookkeeping).

A put has no lineage, so its data must exist twice before the client is told it is safe: the entry node keeps it
and streams a second copy to a replica; the client's ``put`` returns only when the replica says ``STORED``. A
replica that dies or stalls is replaced by another live node; when there is none left to try, the put is
acknowledged with the copies it has (a one-node mesh still takes puts) and says so in ``loc``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Replicate:
    """Stream a copy of ``obj`` to ``node``."""

    obj: str
    node: str


@dataclass(frozen=True, slots=True)
class AckPut:
    """Tell the client its put is held by ``holders``."""

    client: bytes
    req: int
    obj: str
    holders: list[str]


PutAction = Replicate | AckPut


@dataclass(slots=True)
class _Put:
    client: bytes
    req: int
    obj: str
    holders: list[str]
    tried: list[str] = field(default_factory=list)
    target: str = ""


class PutTracker:
    def __init__(self, me: str, copies: int = 2, rng: random.Random | None = None) -> None:
        self.me = me
        self.copies = copies
        self.rng = rng or random.Random(0)
        self._puts: dict[str, _Put] = {}
        self.replaced = 0  # replicas that died or stalled and were replaced

    @property
    def pending(self) -> int:
        return len(self._puts)

    def begin(self, client: bytes, req: int, obj: str, candidates: Sequence[str]) -> list[PutAction]:
        """The entry node holds ``obj``; ``candidates``: live nodes that could hold a copy."""
        p = _Put(client, req, obj, [self.me])
        self._puts[obj] = p
        return self._next(p, candidates)

    def stored(self, obj: str, node: str, candidates: Sequence[str]) -> list[PutAction]:
        p = self._puts.get(obj)
        if p is None or node != p.target:
            return []
        p.holders.append(node)
        p.target = ""
        return self._next(p, candidates)

    def failed(self, obj: str, node: str, candidates: Sequence[str]) -> list[PutAction]:
        """The copy to ``node`` did not arrive (the stream failed, or the node died)."""
        p = self._puts.get(obj)
        if p is None or node != p.target:
            return []
        self.replaced += 1
        p.target = ""
        return self._next(p, candidates)

    def node_down(self, node: str, candidates: Sequence[str]) -> list[PutAction]:
        out: list[PutAction] = []
        for p in [p for p in self._puts.values() if p.target == node]:
            out.extend(self.failed(p.obj, node, candidates))
        return out

    def _next(self, p: _Put, candidates: Sequence[str]) -> list[PutAction]:
        if len(p.holders) < self.copies:
            left = [c for c in candidates if c not in p.holders and c not in p.tried and c != self.me]
            if left:
                p.target = self.rng.choice(sorted(left))
                p.tried.append(p.target)
                return [Replicate(p.obj, p.target)]
        del self._puts[p.obj]
        return [AckPut(p.client, p.req, p.obj, list(p.holders))]
