"""When a put is acknowledged (store/puts.py): only once its replica holds it, replacing replicas that fail."""

from __future__ import annotations

import random

from meshaios.store.puts import AckPut, PutTracker, Replicate


def test_a_put_is_acknowledged_only_when_the_replica_stored_it() -> None:
    p = PutTracker("me", rng=random.Random(1))
    (rep,) = p.begin(b"c", 3, "p1", ["me", "b"])
    assert rep == Replicate("p1", "b")
    assert p.pending == 1
    assert p.stored("p1", "x", ["b"]) == []  # not the node we asked
    assert p.stored("p1", "b", ["b"]) == [AckPut(b"c", 3, "p1", ["me", "b"])]
    assert p.pending == 0


def test_a_failed_replica_is_replaced_and_with_none_left_the_put_keeps_one_copy() -> None:
    p = PutTracker("me", rng=random.Random(1))
    (first,) = p.begin(b"c", 1, "p1", ["b", "c"])
    assert isinstance(first, Replicate)
    other = "c" if first.node == "b" else "b"
    assert p.node_down(first.node, [other]) == [Replicate("p1", other)]
    assert p.failed("p1", other, []) == [AckPut(b"c", 1, "p1", ["me"])]
    assert p.replaced == 2


def test_a_one_node_mesh_acknowledges_at_once() -> None:
    assert PutTracker("me").begin(b"c", 1, "p1", ["me"]) == [AckPut(b"c", 1, "p1", ["me"])]
