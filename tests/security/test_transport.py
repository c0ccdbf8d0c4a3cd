"""``ZmqTransport`` on real loopback sockets, in this process: the ZAP policy, connection accounting, the outbound
socket cap, and ZMTP 1.0 refused on insecure nodes."""

from __future__ import annotations

import asyncio
import resource
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import zmq
from zmq.utils import z85
from zmq.utils.monitor import parse_monitor_message

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
            await _until(lambda: t._auth is not None)  # the auth thread is answering
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


async def _member_gets_nothing(t: ZmqTransport, received: list[Any], keys: MeshKeys | None) -> None:
    """A client holding the right key (or, insecure, a NULL client) connects and sends: its handshake must fail
    (at once when ZAP is absent, after ``handshake_ivl`` when it is silent) and nothing may arrive. Watched from
    the client's side: with the auth thread stopped, the node's own monitor counters stop too."""
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        d = ctx.socket(zmq.DEALER)
        d.setsockopt(zmq.LINGER, 0)
        if keys is not None:
            apply_client_curve(d, keys)
        mon = d.get_monitor_socket()
        d.connect(t.address)
        d.send_multipart(encode({"t": M.PING}))
        events: list[int] = []
        ended = {zmq.EVENT_DISCONNECTED, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, zmq.EVENT_HANDSHAKE_FAILED_AUTH,
                 zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL}  # fmt: skip
        async with asyncio.timeout(5):
            while not ended & set(events):
                while mon.poll(0):
                    events.append(parse_monitor_message(mon.recv_multipart())["event"])
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
    finally:
        ctx.destroy(linger=0)
    assert zmq.EVENT_HANDSHAKE_SUCCEEDED not in events, events
    assert received == []
    assert t.stats.auth_ok == 0


@pytest.mark.parametrize("secure", [True, False], ids=["token", "insecure"])
@pytest.mark.parametrize("how", ["silent", "absent", "raising"])
def test_zap_fails_closed(secure: bool, how: str) -> None:
    """The ZAP handler is what admits anyone: with it stopped (requests unanswered), gone (no ZAP socket: libzmq
    would admit by default, ``ZAP_ENFORCE_DOMAIN`` refuses), or raising on every request, nobody gets in --
    not even a peer that holds the mesh key."""
    keys = KEYS if secure else None

    async def body(t: ZmqTransport, received: list[Any]) -> None:
        auth = t._auth
        assert auth is not None
        assert auth.is_alive()
        if how == "raising":

            def broken(_msg: list[bytes]) -> bool | None:
                raise RuntimeError("bug in the ZAP decision")

            t.zap_decision = broken  # type: ignore[method-assign]
        else:
            auth.stop()
            assert not auth.is_alive()
            if how == "absent":
                assert t._zap is not None
                t._zap.close(linger=0)
                t._zap = None
        await _member_gets_nothing(t, received, keys)
        if how == "raising":
            assert auth.failed_requests >= 1
            assert auth.is_alive()

    _serve(keys, body, handshake_ivl=0.5)


def test_zap_and_monitor_do_not_run_on_the_event_loop() -> None:
    """Refused handshakes must not wake the node's loop: ZAP requests and monitor events are taken on the auth
    thread (a flood of them used to queue the node's real messages behind batches of refusals)."""

    async def body(t: ZmqTransport, _received: list[Any]) -> None:
        loop_thread = threading.get_ident()
        seen: list[int] = []
        decide = t.zap_decision

        def spy(msg: list[bytes]) -> bool | None:
            seen.append(threading.get_ident())
            return decide(msg)

        t.zap_decision = spy  # type: ignore[method-assign]
        ctx: zmq.Context[Any] = zmq.Context()
        try:
            socks = []  # kept: a collected socket closes before its handshake
            for _ in range(5):
                d = ctx.socket(zmq.DEALER)
                d.setsockopt(zmq.LINGER, 0)
                pub, sec = zmq.curve_keypair()
                d.curve_publickey, d.curve_secretkey, d.curve_serverkey = pub, sec, KEYS.public
                d.connect(t.address)
                socks.append(d)
            await _until(lambda: t.stats.zap_denied >= 5 and t.stats.accepted >= 5)  # (and their reconnects)
        finally:
            ctx.destroy(linger=0)
        assert len(seen) >= 5
        assert loop_thread not in seen

    _serve(KEYS, body)
