"""How a node's log lines look: plain text for people, or one JSON object a line for log collectors.

Every line names the node it came from (``node=<short id>/<name>``), so that the logs of several nodes merged in one
place (a LocalMesh, journald, a collector) still say who said what.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_node = "-"


class _NodeField(logging.Filter):
    """Puts the node's label on every record as ``record.node``."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.node = _node
        return True


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "node", "msg"}`` plus ``exc`` with the traceback where there is one."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "node": getattr(record, "node", _node),
            "msg": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def setup(level: str, fmt: str = "text") -> None:
    """Configure the root logger once, for the ``meshaios`` command (libraries never call this)."""
    if fmt not in ("text", "json"):
        raise ValueError(f"log format must be text or json, not {fmt!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_NodeField())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s [%(node)s] %(name)s: %(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))


def set_node(label: str) -> None:
    """From now on, log lines carry ``label`` (the node's short id and name)."""
    global _node
    _node = label


class RateLimitedLog:
    """Say each key's message at most once per ``interval`` seconds, and at most ``budget`` messages per interval in
    all (``None``: no overall budget): a peer spraying garbage, or coming back under fresh identities for a fresh
    allowance, cannot flood the log. What is held back is counted in ``suppressed``; with a budget, the count is
    logged once per interval ("N similar messages suppressed"). Memory is bounded: the key table starts afresh past
    ``max_keys``. Time comes from ``clock`` (``time.monotonic`` unless given), so tests need not sleep.

    >>> t = [0.0]
    >>> rl = RateLimitedLog(logging.getLogger("doc"), interval=10.0, clock=lambda: t[0])
    >>> rl.warning("peer-a", "bad frame from %s", "a"), rl.warning("peer-a", "bad frame from %s", "a")
    (True, False)
    >>> t[0] = 10.0
    >>> rl.warning("peer-a", "bad frame from %s", "a"), rl.suppressed
    (True, 1)
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 10.0,
        budget: int | None = 20,
        max_keys: int = 10_000,
        clock: Any = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.budget = budget
        self.max_keys = max_keys
        self.clock = clock
        self.suppressed = 0
        self._last: dict[Any, float] = {}
        self._window_start = -float("inf")
        self._window_count = 0
        self._reported = 0

    def warning(self, key: Any, msg: str, *args: Any) -> bool:
        return self.log(logging.WARNING, key, msg, *args)

    def debug(self, key: Any, msg: str, *args: Any) -> bool:
        return self.log(logging.DEBUG, key, msg, *args)

    def log(self, level: int, key: Any, msg: str, *args: Any) -> bool:
        """Log ``msg % args`` at ``level`` unless ``key`` spoke within the interval or the budget is spent; True if
        it was logged. Nothing is counted or kept when the logger would not emit ``level`` anyway."""
        if not self.logger.isEnabledFor(level):
            return False
        now = self.clock()
        if now - self._window_start >= self.interval:
            if self.budget is not None and self.suppressed > self._reported:
                self.logger.log(
                    level, "%d similar messages suppressed in the last %.0f s", self.suppressed - self._reported,
                    self.interval,
                )
            self._reported = self.suppressed
            self._window_start, self._window_count = now, 0
        last = self._last.get(key)
        if (last is not None and now - last < self.interval) or (
            self.budget is not None and self._window_count >= self.budget
        ):
            self.suppressed += 1
            return False
        if len(self._last) >= self.max_keys:
            self._last.clear()
        self._last[key] = now
        self._window_count += 1
        self.logger.log(level, msg, *args)
        return True
