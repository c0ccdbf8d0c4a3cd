"""A proposed change to ``Owner``, measured here before it is made there: late binding.

Why: today's ``Owner._pump`` offers a policy only the nodes whose in-flight window is open. Once the fast nodes'
windows are full, every further task *must* go to a slow node, whatever its estimated finish time -- the policy
cannot say "wait for the fast one". At saturation each node holds ``window x slots`` tasks whatever the policy,
so placement degenerates to the window. HEFT's rule needs the other answer to be possible.

The proposal: a policy that sets ``late_binding = True`` is offered *every* (resource-fitting) node; if it picks one
whose window is full, the task stays READY (skipped this pass, tried again on the next completion) and the owner
calls the policy's ``retract(node_id)`` so the decision it did not carry out is not counted as work there.
Baselines keep today's behaviour. ``LateBindingOwner`` implements exactly that on top of the real
``Owner._pump`` (it pins the decisions and lets the parent do the bookkeeping), so the simulator can measure it
with ``late_binding=True``; it goes away once ``Owner`` does this itself.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any

from meshaios.sched.placement import NodeLoad, PlacementPolicy
from meshaios.tasks.owner import Owner, OwnerAction, TaskState

__all__ = ["LateBindingOwner", "wants_late_binding"]

MAX_DEFERRED_PER_PASS = 256  # bounds the work of one pass when many ready tasks all want full nodes


def _innermost_with(policy: Any, attr: str) -> Any:
    """``policy`` or the first policy it wraps (via ``inner``) that has ``attr``; None if none has."""
    seen = 0
    while policy is not None and seen < 8:
        if getattr(policy, attr, None):
            return policy
        policy = getattr(policy, "inner", None)
        seen += 1
    return None


def wants_late_binding(policy: Any) -> bool:
    """True if ``policy`` (or a policy it wraps, via ``inner``) declares ``late_binding``."""
    return _innermost_with(policy, "late_binding") is not None


class _Pinned:
    """Replays decisions already taken, so the parent's ``_pump`` does the dispatch bookkeeping unchanged."""

    def __init__(self, decided: dict[str, NodeLoad], name: str) -> None:
        self.decided = decided
        self.name = name

    def choose(self, task: dict[str, Any], candidates: list[NodeLoad], rng: random.Random) -> NodeLoad:
        nl = self.decided.get(task["id"])
        return nl if nl is not None and nl in candidates else candidates[0]


class LateBindingOwner(Owner):
    def _pump(self) -> list[OwnerAction]:
        policy: PlacementPolicy = self.policy
        if not wants_late_binding(policy) or not self.ready or not self.nodes:
            return super()._pump()
        wps = self.config.window_per_slot
        everyone = list(self.nodes.values())
        room = {n.node_id: n.slots * wps - n.inflight for n in everyone}
        if all(r <= 0 for r in room.values()):
            return []
        retracting = _innermost_with(policy, "retract")
        decided: dict[str, NodeLoad] = {}
        order: list[str] = []
        deferred: list[str] = []
        while self.ready and len(deferred) < MAX_DEFERRED_PER_PASS and any(r > 0 for r in room.values()):
            tid = self.ready.popleft()
            t = self.tasks.get(tid)
            if t is None or t.state is not TaskState.READY:
                continue
            target = policy.choose({"id": tid, "resources": t.resources}, everyone, self.rng)
            if room.get(target.node_id, 0) <= 0:
                deferred.append(tid)  # its best node is busy: wait for it rather than go somewhere worse
                if retracting is not None:
                    retracting.retract(target.node_id)  # not sent: not queued work there
                continue
            room[target.node_id] -= 1
            decided[tid] = target
            order.append(tid)
        rest = self.ready
        self.ready = deque(order)
        self.policy = _Pinned(decided, policy.name)
        try:
            out = super()._pump()
        finally:
            self.policy = policy
            leftover = list(self.ready)
            self.ready = deque(deferred + leftover)
            self.ready.extend(rest)
        return out
