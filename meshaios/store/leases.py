"""Which clients still hold objects on this node: a lease per client, renewed by anything it sends.

A client that closes says so (``BYE``); one that crashes, is killed or goes silent says nothing, so what it held
is released once it has been silent for ``lease`` seconds (clients ping every 0.5 s). Pure bookkeeping: the node
feeds it messages and ticks, and releases what ``expired`` returns.
"""

from __future__ import annotations


class HolderLeases:
    def __init__(self, lease: float) -> None:
        self.lease = lease
        self._heard: dict[bytes, float] = {}
        self.expired_total = 0
        self.byes = 0

    def __len__(self) -> int:
        return len(self._heard)

    def heard(self, client: bytes, now: float) -> None:
        self._heard[client] = now

    def bye(self, client: bytes) -> None:
        self._heard.pop(client, None)
        self.byes += 1

    def expired(self, now: float) -> list[bytes]:
        """Clients silent for longer than the lease, forgotten from now on (a later message starts a new lease)."""
        if self.lease <= 0:
            return []
        gone = [c for c, t in self._heard.items() if now - t > self.lease]
        for c in gone:
            del self._heard[c]
        self.expired_total += len(gone)
        return gone
