"""Throttling peers that keep sending oversized messages (``LimitExceeded``). Pure: time is passed in.

A refused message already costs little (``codec.check_shape`` reads a few bytes before msgpack runs), but its bytes
still cross the network and libzmq, and each costs a reply and a log line. After ``strikes`` refusals within ``window``
seconds its messages are dropped unread for ``cooldown`` seconds, and counted: the node drops those over its small
header limit, and answers each with an ERROR naming its ``req`` (``Node._throttled``).

>>> t = Throttle(strikes=2, window=10.0, cooldown=5.0)
>>> t.refused(b"c:x", 0.0), t.refused(b"c:x", 1.0)
(False, True)
>>> t.cooling(b"c:x", 2.0), t.cooling(b"c:x", 6.5), t.cooling(b"c:other", 2.0)
(True, False, False)
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Throttle:
    strikes: int = 5
    window: float = 10.0
    cooldown: float = 10.0
    max_peers: int = 10_000  # peers remembered; beyond it the table starts afresh (an attacker's many identities)
    dropped: int = 0
    _hits: dict[bytes, tuple[float, int]] = field(default_factory=dict)  # ident -> (window start, refusals)
    _until: dict[bytes, float] = field(default_factory=dict)  # ident -> end of its cooldown

    def refused(self, ident: bytes, now: float) -> bool:
        """Count a refused message; True when this one starts the peer's cooldown."""
        start, n = self._hits.get(ident, (now, 0))
        if now - start > self.window:
            start, n = now, 0
        n += 1
        if len(self._hits) >= self.max_peers:
            self._hits.clear()
        self._hits[ident] = (start, n)
        if n >= self.strikes:
            if len(self._until) >= self.max_peers:
                self._until.clear()
            self._until[ident] = now + self.cooldown
            self._hits.pop(ident, None)
            return True
        return False

    def cooling(self, ident: bytes, now: float) -> bool:
        """Whether this peer is in its cooldown; the caller decides which of its messages to drop (and counts them in
        ``dropped``)."""
        until = self._until.get(ident)
        if until is None:
            return False
        if now >= until:
            del self._until[ident]
            return False
        return True

    @property
    def throttled(self) -> int:
        return len(self._until)
