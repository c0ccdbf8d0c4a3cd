"""Addresses a client is given: the ZeroMQ endpoint for a good one, a clear meshaios error naming a bad one."""

from __future__ import annotations

import pytest

from meshaios import Client, InvalidAddress, MeshError
from meshaios.client import node_endpoint


@pytest.mark.parametrize(
    ("given", "endpoint"),
    [
        ("127.0.0.1:5577", "tcp://127.0.0.1:5577"),
        ("tcp://10.0.0.2:1", "tcp://10.0.0.2:1"),
        ("node1.lan:65535", "tcp://node1.lan:65535"),
        ("[::1]:5577", "tcp://[::1]:5577"),
        (" 127.0.0.1:5577 ", "tcp://127.0.0.1:5577"),
        ("ipc:///tmp/mesh.sock", "ipc:///tmp/mesh.sock"),
    ],
)
def test_good_addresses_become_endpoints(given: str, endpoint: str) -> None:
    assert node_endpoint(given) == endpoint


@pytest.mark.parametrize(
    "bad",
    ["not-an-address", "", "127.0.0.1", "127.0.0.1:", ":5577", "host:0", "host:65536", "host:port", "http://h:80",
     "tcp://", "tcp://a b:5577", "host:5577/path", "ipc://"],
)  # fmt: skip
def test_bad_addresses_raise_invalid_address_naming_them(bad: str) -> None:
    with pytest.raises(InvalidAddress) as info:
        node_endpoint(bad)
    assert repr(bad) in str(info.value)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, MeshError)


def test_client_with_a_bad_address_raises_before_zeromq_sees_it() -> None:
    with pytest.raises(InvalidAddress, match="'not-an-address' is not a node address: expected host:port"):
        Client("not-an-address", insecure=True)
    with pytest.raises(ValueError, match="unknown scheme 'udp'"):
        Client("udp://127.0.0.1:5577", insecure=True)
