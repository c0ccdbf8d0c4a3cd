"""Running jobs, as the dashboard shows them: the tasks an owner holds, grouped by the client that submitted them.

A "job" is one client's work on this node: every task the owner still tracks for that client (finished tasks stay
tracked while the client holds their futures). Its progress is finished / tracked. Pure: it only reads the owner.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

_STATES = ("waiting", "ready", "dispatched", "done", "failed")


def jobs_view(tasks: Iterable[Any], now: float, limit: int = 20, max_scan: int = 200_000) -> list[dict[str, Any]]:
    """``tasks`` are ``Owner.tasks.values()`` (objects with ``client``, ``state`` and ``submitted_at``); ``now`` is
    the clock the owner was given times from (the node's ``clock.now()``).

    Returns up to ``limit`` jobs, unfinished ones first, then the most recently started:
    ``{"client", "total", "waiting", "ready", "dispatched", "done", "failed", "pending", "age"}`` (``age`` in
    seconds since the job's oldest tracked task was submitted). At most ``max_scan`` tasks are looked at (the view
    is for people, once a second: it must stay cheap on an owner holding millions of tasks); past that, every job
    carries ``"partial": True``.
    """
    jobs: dict[bytes, dict[str, Any]] = {}
    partial = False
    for i, t in enumerate(tasks):
        if i >= max_scan:
            partial = True
            break
        client = t.client
        j = jobs.get(client)
        if j is None:
            name = client_label(client)
            j = jobs[client] = {"client": name, "total": 0, "started": t.submitted_at, **dict.fromkeys(_STATES, 0)}
        state = str(getattr(t.state, "value", t.state))
        if state in j:
            j[state] += 1
        j["total"] += 1
        j["started"] = min(j["started"], t.submitted_at)
    out = list(jobs.values())
    for j in out:
        j["pending"] = j["waiting"] + j["ready"] + j["dispatched"]
        j["age"] = max(0.0, now - j.pop("started"))
        if partial:
            j["partial"] = True
    out.sort(key=lambda j: (j["pending"] == 0, j["age"]))
    return out[:limit]


def client_label(client: Any) -> str:
    """A stable label for a client that does not reveal its id: on an insecure node the routing id is all another
    local process would need to pose as that client."""
    raw = client if isinstance(client, bytes) else str(client).encode()
    return "c:" + hashlib.blake2b(raw, digest_size=6, person=b"meshaios/job").hexdigest()
