"""What a node does with what it hears about its peers: gossiped metadata into the owner, the load view and the
runtime model; membership changes into the owner. ``node.py`` and the simulator both run it, so that the owner
and the thieves of a simulated mesh learn about their peers by the live node's rules.

Pure: no I/O, no clock (``heard`` is the time the caller last heard from the peer directly).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from meshaios.membership.swim import MemberChanged, MemberState
from meshaios.sched.loadview import LoadView
from meshaios.sched.model import RuntimeModel
from meshaios.tasks.owner import LoadHeard, NodeDown, NodeUp

if TYPE_CHECKING:
    from meshaios.tasks.owner import Owner, OwnerAction

__all__ = ["USABLE", "PeerFeed"]

USABLE = frozenset((MemberState.ALIVE, MemberState.SUSPECT))  # members an owner places on and reads load from


class PeerFeed:
    """One node's intake of peer news. ``owner`` is None on a node that owns nothing (a simulated executor);
    ``share_load``: load summaries (``ld``) are read (stealing or EFT is on)."""

    def __init__(self, owner: Owner | None, view: LoadView, model: RuntimeModel, share_load: bool = True) -> None:
        self.owner = owner
        self.view = view
        self.model = model
        self.share_load = share_load
        self._ld_heard: dict[str, float] = {}  # peer -> when the summary in the view was heard
        self._q_heard: dict[str, tuple[float, int]] = {}  # peer -> (when heard, task count) last given to the owner

    def heard(self, node_id: str, meta: Any, heard: float, now: float) -> None:
        """A usable peer's metadata as SWIM last carried it: its task count (``q``) for the owner's ledger, its
        load summary (``ld``) for the thieves and EFT, filed under when we last heard from it directly (not by
        gossip: a summary known only from gossip is as old as its last incarnation change)."""
        if not isinstance(meta, dict):
            return
        q = meta.get("q")
        if (self.owner is not None and isinstance(q, int) and not isinstance(q, bool) and math.isfinite(heard)
                and self._q_heard.get(node_id) != (heard, q)):
            # as of when it was last heard directly (the meta came with that message): a DONE heard since wins,
            # and the same count read again at the next look is not news (it would hide what was sent since)
            self._q_heard[node_id] = (heard, q)
            self.owner.handle(LoadHeard(node_id, q, heard), now)
        if not self.share_load or "ld" not in meta or not math.isfinite(heard):
            return
        if self._ld_heard.get(node_id) == heard:
            return  # nothing new since the last look
        self._ld_heard[node_id] = heard
        self.view.update(node_id, meta["ld"], heard)

    def models(self, node_id: str, meta: Any) -> None:
        """A peer's runtime observations (``rm``): this node predicts kernels it never ran."""
        rm = meta.get("rm") if isinstance(meta, dict) else None
        if rm:
            self.model.merge_gossip(rm, node_id)

    def member_changed(self, ev: MemberChanged, now: float) -> list[OwnerAction]:
        """A member usable for the first time is offered to the owner (first sight may be SUSPECT, learned by
        gossip: usable either way), with the slots its meta declares; a dead or departed one is taken from the
        owner (its tasks are re-placed) and from the load view."""
        if ev.new in USABLE:
            if self.owner is None or ev.node_id in self.owner.nodes:
                return []
            slots = ev.meta.get("w", 1) if isinstance(ev.meta, dict) else 1
            return self.owner.handle(NodeUp(ev.node_id, slots if isinstance(slots, int) else 1, ev.meta), now)
        if ev.new in (MemberState.DEAD, MemberState.LEFT):
            self.view.remove(ev.node_id)
            self._ld_heard.pop(ev.node_id, None)
            self._q_heard.pop(ev.node_id, None)
            return self.owner.handle(NodeDown(ev.node_id), now) if self.owner is not None else []
        return []
