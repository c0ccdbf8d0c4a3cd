"""Holder leases (store/leases.py): a silent client's holdings are released after the lease, a goodbye at once."""

from __future__ import annotations

from meshaios.store.leases import HolderLeases


def test_silence_past_the_lease_expires_a_client_once() -> None:
    h = HolderLeases(5.0)
    h.heard(b"c:a", 0.0)
    h.heard(b"c:b", 0.0)
    h.heard(b"c:b", 4.0)
    assert h.expired(5.0) == []
    assert h.expired(5.1) == [b"c:a"]
    assert h.expired(9.5) == [b"c:b"]
    assert h.expired(100.0) == []
    assert len(h) == 0


def test_a_goodbye_ends_the_lease_and_zero_means_never() -> None:
    h = HolderLeases(5.0)
    h.heard(b"c:a", 0.0)
    h.bye(b"c:a")
    assert h.expired(50.0) == []
    never = HolderLeases(0.0)
    never.heard(b"c:a", 0.0)
    assert never.expired(1e9) == []
