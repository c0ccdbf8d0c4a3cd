"""``ZmqTransport`` on real loopback sockets, in this process: the ZAP policy, connection accounting, the outbound
socket cap, and ZMTP 1.0 refused on insecure nodes."""

from __future__ import annotations

import asyncio
import resource
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import zmq
from zmq.utils import z85

from meshaios.io.transport import ZmqOptions, ZmqTransport, apply_client_curve, default_max_dealers
from meshaios.security import MeshKeys, derive_keys, new_token
from meshaios.wire import messages as M
from meshaios.wire.codec import decode, encode
from tests.security.attacks import _zmtp1

KEYS = derive_keys(new_token())


def _zap(mechanism: bytes, *creds: bytes) -> list[bytes]:
    return [b"id", b"", b"1.0", b"1", b"meshaios", b"127.0.0.1", b"", mechanism, *creds]


def test_zap_policy() -> None:
    secure = ZmqTransport(ZmqOptions(), KEYS)
    insecure = ZmqTransport(ZmqOptions(), None)
    other = zmq.curve_keypair()[0]
    try:
        assert secure.zap_decision(_zap(b"CURVE", z85.decode(KEYS.public))) is True
        assert secure.zap_decision(_zap(b"CURVE", z85.decode(other))) is False
        assert secure.zap_decision(_zap(b"NULL")) is False
        assert secure.zap_decision(_zap(b"PLAIN", b"admin", b"admin")) is False
        assert secure.zap_decision([b"short"]) is None
        assert insecure.zap_decision(_zap(b"NULL")) is True
        assert insecure.zap_decision(_zap(b"CURVE", z85.decode(KEYS.public))) is False
        assert insecure.zap_decision(_zap(b"PLAIN", b"a", b"b")) is False
    finally:
        secure.ctx.term()
        insecure.ctx.term()


def _serve(keys: MeshKeys | None, body: Callable[[ZmqTransport, list[Any]], Awaitable[None]], **opts: Any) -> None:
    """Run ``body`` against a started transport whose ZAP/monitor loop and receive loop are running."""

    async def main() -> None:
        t = ZmqTransport(ZmqOptions(**opts), keys)
        await t.start()
        received: list[Any] = []

        async def recv() -> None:
            while True:
                received.extend(await t.recv_batch())

        tasks = [asyncio.create_task(t.serve_zap()), asyncio.create_task(recv())]
        try:
            await body(t, received)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await t.close()

    asyncio.run(main())


async def _until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():  # noqa: ASYNC110 - counters, not events: nothing to wait on but time
            await asyncio.sleep(0.02)


def test_a_member_connection_is_not_counted_as_refused() -> None:
    async def body(t: ZmqTransport, received: list[Any]) -> None:
        ctx: zmq.Context[Any] = zmq.Context()
        try:
            d = ctx.socket(zmq.DEALER)
            d.setsockopt(zmq.LINGER, 0)
            apply_client_curve(d, KEYS)
            d.connect(t.address)
            for _ in range(3):
                d.send_multipart(encode({"t": M.PING}))
            await _until(lambda: len(received) == 3)
            d.close()
            await _until(lambda: t.stats.disconnected == 1)
        finally:
            ctx.destroy(linger=0)
        assert [decode(f)["t"] for _i, f in received] == [M.PING] * 3
        st = t.stats
        assert (st.accepted, st.auth_ok, st.auth_rejected, st.unproven_open) == (1, 1, 0, 0)

    _serve(KEYS, body)


def test_insecure_node_refuses_zmtp1_and_admits_null() -> None:
    """A bare ZMTP 1.0 peer (no greeting) used to be a full client of an insecure node."""

    async def body(t: ZmqTransport, received: list[Any]) -> None:
        host, port = t.address.removeprefix("tcp://").rsplit(":", 1)
        with socket.create_connection((host, int(port))) as s:
            s.sendall(_zmtp1([b"c:old-peer"]) + _zmtp1([bytes(f) for f in encode({"t": M.PING})]))
            await _until(lambda: t.stats.auth_rejected == 1)
        assert received == []
        ctx: zmq.Context[Any] = zmq.Context()
        try:
            d = ctx.socket(zmq.DEALER)
            d.setsockopt(zmq.LINGER, 0)
            d.connect(t.address)
            d.send_multipart(encode({"t": M.PING}))
            await _until(lambda: len(received) == 1)
        finally:
            ctx.destroy(linger=0)
        assert t.stats.auth_ok == 1

    _serve(None, body)


def test_outbound_sockets_are_capped_least_recently_used_first() -> None:
    async def body(t: ZmqTransport, _received: list[Any]) -> None:
        addrs = [f"tcp://127.0.0.1:{p}" for p in range(9, 14)]  # nobody listens: sends queue, nothing connects
        for a in addrs:
            assert t.send(a, encode({"t": M.PING}))
        assert len(t._dealers) == 3
        assert t.stats.dealers_evicted == 2
        assert list(t._dealers) == addrs[2:]
        t.send(addrs[2], encode({"t": M.PING}))  # used again: now the most recent
        t.send(addrs[0], encode({"t": M.PING}))  # re-created, evicting the least recently used (addrs[3])
        assert list(t._dealers) == [addrs[4], addrs[2], addrs[0]]

    _serve(KEYS, body, max_dealers=3)


def test_default_dealer_cap_follows_the_open_files_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _r: (1024, 4096))
    assert default_max_dealers() == (1024 - 128) // 2
    monkeypatch.setattr(resource, "getrlimit", lambda _r: (1 << 20, 1 << 20))
    assert default_max_dealers() == 4096


def test_handshake_timeout_hangs_up_on_a_silent_connection() -> None:
    async def body(t: ZmqTransport, _received: list[Any]) -> None:
        host, port = t.address.removeprefix("tcp://").rsplit(":", 1)
        t0 = time.monotonic()
        with socket.create_connection((host, int(port))):
            await _until(lambda: t.stats.auth_rejected == 1, timeout=5)
        assert 0.4 < time.monotonic() - t0 < 3

    _serve(KEYS, body, handshake_ivl=0.5)
