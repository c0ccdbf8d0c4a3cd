"""``PeerFeed``: what a node (and each simulated node) does with its peers' gossiped metadata and membership."""

from __future__ import annotations

import math
import random

from meshaios.membership.swim import MemberChanged, MemberState
from meshaios.sched.loadview import DeviceLoad, LoadView, make_summary
from meshaios.sched.model import RuntimeModel, task_features
from meshaios.sched.placement import LeastLoaded
from meshaios.tasks.owner import Owner, OwnerConfig
from meshaios.tasks.peers import PeerFeed

A, S, D = MemberState.ALIVE, MemberState.SUSPECT, MemberState.DEAD


def feed(owner: bool = True, share_load: bool = True) -> PeerFeed:
    o = Owner("me", OwnerConfig(), LeastLoaded(), random.Random(0)) if owner else None
    return PeerFeed(o, LoadView(), RuntimeModel(), share_load)


def summary(backlog: float) -> dict[str, object]:
    return make_summary({"cpu": DeviceLoad(2, 0, backlog, 1.0)}, queued=3)


def test_a_member_is_offered_to_the_owner_once_when_first_usable_suspect_included() -> None:
    f = feed()
    assert f.owner is not None
    f.member_changed(MemberChanged("n1", "", None, S, {"w": 3}), 0.0)  # first learned by gossip, as suspect
    assert f.owner.nodes["n1"].slots == 3
    f.owner.nodes["n1"].inflight = 2
    f.member_changed(MemberChanged("n1", "", S, A, {"w": 3}), 0.0)  # refuted: still the same entry
    assert f.owner.nodes["n1"].inflight == 2


def test_a_dead_member_leaves_the_owner_and_the_load_view() -> None:
    f = feed()
    assert f.owner is not None
    f.member_changed(MemberChanged("n1", "", None, A, {"w": 1}), 0.0)
    f.heard("n1", {"q": 4, "ld": summary(3.0)}, 10.0, 10.0)
    assert f.view.get("n1", 10.0) is not None
    f.member_changed(MemberChanged("n1", "", A, D, {}), 0.0)
    assert "n1" not in f.owner.nodes
    assert f.view.get("n1", 10.0) is None


def test_heard_gives_the_owner_the_task_count_and_files_the_summary_once_per_hearing() -> None:
    f = feed()
    assert f.owner is not None
    f.member_changed(MemberChanged("n1", "", None, A, {"w": 1}), 0.0)
    f.heard("n1", {"q": 5, "ld": summary(2.0)}, 10.0, 10.0)
    assert f.owner.nodes["n1"].reported == 5
    view = f.view.get("n1", 10.0)
    assert view is not None
    assert view.heard == 10.0
    f.heard("n1", {"q": 6, "ld": summary(9.0)}, 10.0, 10.0)  # the same hearing: the count moves, the summary stays
    assert f.owner.nodes["n1"].reported == 6
    f.heard("n1", {"q": 6, "ld": summary(9.0)}, math.inf, 10.0)  # known from gossip only: not filed
    again = f.view.get("n1", 10.0)
    assert again is not None
    assert again.heard == 10.0


def test_without_load_sharing_or_an_owner_only_what_is_used_is_read() -> None:
    f = feed(share_load=False)
    f.heard("n1", {"q": 5, "ld": summary(2.0)}, 10.0, 10.0)
    assert f.view.get("n1", 10.0) is None
    g = feed(owner=False)
    g.heard("n1", {"q": 5, "ld": summary(2.0)}, 10.0, 10.0)  # a node that owns nothing: the view only
    assert g.view.get("n1", 10.0) is not None
    assert g.member_changed(MemberChanged("n1", "", None, A, {}), 0.0) == []


def test_models_merges_a_peers_runtime_observations() -> None:
    peer = RuntimeModel()
    for _ in range(40):
        peer.learn_one(task_features("k", 1000, "cpu", node="p"), 2.0)
    f = feed()
    before = f.model.predict_one(task_features("k", 1000, "cpu"))
    f.models("p", {"rm": peer.summary(4)})
    after = f.model.predict_one(task_features("k", 1000, "cpu"))
    assert abs(after - 2.0) < abs(before - 2.0)
