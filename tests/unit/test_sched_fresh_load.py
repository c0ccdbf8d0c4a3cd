"""What an owner knows of a node's load between two of its reports (issue 17: placement read a peer's queue as of
its last report). A node's own count (``q``: every owner's tasks there) arrives on its DONEs and in its gossiped
metadata; ``NodeLoad.report`` keeps the freshest, and ``NodeLoad.tasks`` adds what this owner sent there since."""

from __future__ import annotations

import random
from typing import Any

from meshaios.sched.loadview import LoadView
from meshaios.sched.model import RuntimeModel
from meshaios.sched.placement import NodeLoad, make_policy
from meshaios.tasks.owner import Dispatch, LoadHeard, Owner, OwnerAction, OwnerConfig
from meshaios.tasks.peers import PeerFeed
from meshaios.wire.payload import Payload

FN = Payload(b"fn")
SMALL = Payload(b"args")


def _dispatched(actions: list[OwnerAction]) -> dict[str, str]:
    return {t["id"]: a.node for a in actions if isinstance(a, Dispatch) for t in a.tasks}


def _owner(nodes: tuple[str, ...] = ("owner", "x"), slots: int = 1) -> Owner:
    o = Owner("owner", OwnerConfig(), make_policy("least-loaded", node_id="owner"), random.Random(0))
    for n in nodes:
        o.node_up(n, slots)
    return o


def _tasks(n: int, prefix: str = "t") -> list[dict[str, Any]]:
    return [{"id": f"{prefix}{i}", "fn": FN, "args": SMALL, "deps": []} for i in range(n)]


def test_what_the_owner_sent_since_a_report_counts_on_top_of_it() -> None:
    nl = NodeLoad("x", 1)
    assert nl.report(2, at=1.0)  # two tasks there, of other owners
    nl.inflight += 1
    nl.inflight += 1
    assert nl.tasks == 4  # was max(inflight 2, reported 2) = 2: the node looked as full as before the two sends
    nl.inflight -= 1  # one of ours finished: not taken off until the node says so ...
    assert nl.tasks == 4
    assert nl.report(3, at=2.0)  # ... in the DONE that carries the finish
    assert nl.tasks == 3
    assert not nl.report(0, at=1.5)  # an older report changes nothing
    assert nl.tasks == 3


def test_a_burst_placed_between_reports_spreads_over_two_busy_nodes() -> None:
    """Both nodes run two tasks of another owner (the owner's own node says so through ``self_load``, the peer
    through its last DONE). Four new tasks: two each. Before, the owner's node stayed at ``max(in flight, 2)``
    while the owner sent its first two there, and took three of the four."""
    o = _owner()
    o.self_load = lambda: 2
    o.handle(LoadHeard("x", 2), 1.0)
    acts = o.submit(b"c", _tasks(4))
    placed = list(_dispatched(acts).values())
    assert sorted(placed) == ["owner", "owner", "x", "x"]


def test_gossip_heard_before_a_done_does_not_undo_its_count() -> None:
    """``PeerFeed`` reads every member's metadata every 0.1 s; a member's ``q`` there is as old as the last message
    heard from it directly. Before, that older count overwrote the one a DONE had just brought."""
    o = _owner()
    feed = PeerFeed(o, LoadView(), RuntimeModel())
    o.handle(LoadHeard("x", 3), 5.0)  # x's DONE, now: three tasks there
    feed.heard("x", {"q": 0}, 4.0, 5.1)  # its metadata, from a message heard at 4.0
    assert o.nodes["x"].reported == 3
    feed.heard("x", {"q": 1}, 5.2, 5.3)  # newer than the DONE: taken
    assert o.nodes["x"].reported == 1


def test_the_same_gossip_read_again_does_not_hide_what_was_sent_since() -> None:
    o = _owner()
    feed = PeerFeed(o, LoadView(), RuntimeModel())
    feed.heard("x", {"q": 2}, 1.0, 1.0)
    o.nodes["x"].inflight += 1  # the owner sends x a task
    feed.heard("x", {"q": 2}, 1.0, 1.1)  # the next look finds the same metadata, heard at the same time
    assert o.nodes["x"].tasks == 3
