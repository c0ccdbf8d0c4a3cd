"""Wire hardening against a live node: every malformed message is refused cleanly (counted, answered, logged at
most once per peer per interval), bad values fail only their own task, frames over ``ZMQ_MAXMSGSIZE`` cost the
sender its connection, and 100,000 malformed frames from an authenticated peer leave a legitimate client working.

The codec's own unit and property tests are in ``tests/unit/test_codec.py`` and ``test_values.py``; the corpus
here (``malformed.py``) is generated from the schemas, so a new message type is covered the day it is added.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np
import pytest
import zmq
from zmq.utils.monitor import parse_monitor_message

from meshaios.io.connection import ZmqConnection
from meshaios.io.transport import ZmqOptions, ZmqTransport
from meshaios.security import derive_keys, new_token
from meshaios.testing.localmesh import LocalMesh
from meshaios.wire import messages as M
from meshaios.wire.codec import decode, encode
from meshaios.wire.values import dumps, loads
from tests.security import canary
from tests.security.conftest import authed_dealer, node_view, rss_mib, wait_until
from tests.security.malformed import bad_values, corpus, valid_examples

pytestmark = pytest.mark.system

# (cancel is a client's request since issue 13, not a wrong-direction message)
WRONG_DIRECTION = [M.WELCOME, M.RESULTS, M.STATUS_REPLY, M.PONG, M.ERROR, M.GOT, M.PUT_ACK]


def _replies(sock: zmq.Socket[Any], n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        if sock.poll(100):
            out.append(decode(sock.recv_multipart()))
    return out


def test_every_malformed_message_is_counted_and_answered(node1: LocalMesh, zctx: zmq.Context[Any]) -> None:
    """Each entry of the corpus, plus each node-bound message type sent the wrong way: one ``error`` reply each,
    one ``bad_frames`` each, and the node carries on."""
    msgs = [f for _name, f in corpus()]
    msgs += [[bytes(memoryview(f)) for f in encode(valid_examples()[t])] for t in WRONG_DIRECTION]
    with node1.client(0) as c:
        before = node_view(c)["counters"].get("bad_frames", 0)
        sock = authed_dealer(zctx, node1, ident=b"c:wire-test")
        for frames in msgs:
            sock.send_multipart(frames)
        replies = _replies(sock, len(msgs))
        assert len(replies) == len(msgs)
        assert {r["t"] for r in replies} == {M.ERROR}
        wait_until(lambda: node_view(c)["counters"]["bad_frames"] - before == len(msgs), 10, "all counted")
        # a peer node's identity gets no answer (node traffic is one-way), but is counted just the same
        peer = authed_dealer(zctx, node1, ident=b"n:not-a-member")
        for frames in msgs:
            peer.send_multipart(frames)
        wait_until(lambda: node_view(c)["counters"]["bad_frames"] - before == 2 * len(msgs), 10, "peer counted")
        assert peer.poll(200) == 0
        assert c.submit(canary.noop, 7).result(timeout=10) == 7
    assert node1.procs[0].alive()


def test_bad_values_fail_their_own_task_and_nothing_else(node1: LocalMesh, zctx: zmq.Context[Any]) -> None:
    """dtype object, unknown dtypes, shape/buffer mismatches, nesting that once crashed the process...: each task
    fails with a ``WireError`` that says so; the good task in the same ``submit`` succeeds."""
    fn = dumps({"ref": "tests.security.canary:noop"}, allow_pickle=False)[0]
    cases = [(name, p) for name, p in bad_values() if name != "pickled argument"]  # a token mesh allows pickle
    tasks = [{"id": f"tbad{i}", "fn": fn, "args": p, "deps": []} for i, (_n, p) in enumerate(cases)]
    tasks.append({"id": "tgood", "fn": fn, "args": dumps([[42], {}], allow_pickle=False)[0], "deps": []})
    sock = authed_dealer(zctx, node1, ident=b"c:values-test")
    sock.send_multipart(encode({"t": M.SUBMIT, "tasks": tasks}))
    results: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 20
    while len(results) < len(tasks) and time.monotonic() < deadline:
        if sock.poll(100):
            msg = decode(sock.recv_multipart())
            if msg["t"] == M.RESULTS:
                results.update({r["id"]: r for r in msg["results"]})
    assert len(results) == len(tasks)
    assert results["tgood"]["ok"]
    assert loads(results["tgood"]["v"], allow_pickle=False) == 42
    for i, (name, _p) in enumerate(cases):
        r = results[f"tbad{i}"]
        assert not r["ok"], name
        assert r["err"]["type"] == "meshaios.errors.WireError", (name, r["err"])
    assert node1.procs[0].alive()


def test_deeply_nested_value_is_refused_by_the_sender_too(node1: LocalMesh) -> None:
    """Tuples 200 deep once killed the receiving process (C stack); now the client refuses to send them."""
    from meshaios.errors import SerializationError

    deep: Any = None
    for _ in range(200):
        deep = (deep,)
    with node1.client(0) as c:
        with pytest.raises(SerializationError, match="nested"):
            c.submit(canary.noop, deep)
        assert c.submit(canary.noop, 1).result(timeout=10) == 1


# ---------------------------------------------------------------------------------------------- ZMQ_MAXMSGSIZE
def test_max_frame_size_is_set_on_router_dealers_and_client() -> None:
    keys = derive_keys(new_token())
    t = ZmqTransport(ZmqOptions(max_frame_bytes=3 << 20, handshake_ivl=2.0, max_dealers=8), keys)
    try:
        import asyncio

        asyncio.run(t.start())
        assert t.router is not None
        assert t.router.getsockopt(zmq.MAXMSGSIZE) == 3 << 20
        assert t.router.getsockopt(zmq.HANDSHAKE_IVL) == 2000
        d = t._dealer("tcp://127.0.0.1:9")
        # a node's DEALERs receive nothing legitimate: their limit is the smaller one
        assert d.getsockopt(zmq.MAXMSGSIZE) == 1 << 20
        assert d.getsockopt(zmq.HANDSHAKE_IVL) == 2000
    finally:
        asyncio.run(t.close())
    conn = ZmqConnection("tcp://127.0.0.1:9", keys, "c1", max_frame_bytes=5 << 20)
    try:
        assert conn.sock.getsockopt(zmq.MAXMSGSIZE) == 5 << 20
        assert conn.sock.getsockopt(zmq.HANDSHAKE_IVL) > 0
    finally:
        asyncio.run(conn.close())


def test_a_frame_over_the_limit_costs_the_sender_its_connection(zctx: zmq.Context[Any]) -> None:
    """``max_frame_bytes`` from the node's configuration (here its environment): a larger frame is dropped by
    libzmq with the connection; the node never sees it, stays up, and serves the next, smaller one."""
    limit = 1 << 20
    with LocalMesh(1, discovery=False, env={"MESHAIOS_MAX_FRAME_BYTES": str(limit)}) as mesh, mesh.client(0) as c:
        before = node_view(c)
        big = dumps(np.zeros(2 * limit, dtype=np.uint8), allow_pickle=False)[0]
        sock = authed_dealer(zctx, mesh, ident=b"c:big")
        mon = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
        sock.send_multipart(encode({"t": M.PUT, "req": 1, "id": "pbig", "val": big}), copy=False)
        events = []
        deadline = time.monotonic() + 10
        while zmq.EVENT_DISCONNECTED not in events and time.monotonic() < deadline:
            if mon.poll(100):
                events.append(parse_monitor_message(mon.recv_multipart())["event"])
        assert zmq.EVENT_DISCONNECTED in events, events
        assert sock.poll(200) == 0  # no put_ack
        after = node_view(c)
        assert after["counters"].get("bad_frames", 0) == before["counters"].get("bad_frames", 0)
        assert after["store"]["objects"] == before["store"]["objects"]  # the put never reached the node
        # under the limit: accepted
        small = dumps(np.zeros(limit // 2, dtype=np.uint8), allow_pickle=False)[0]
        ok = authed_dealer(zctx, mesh, ident=b"c:small")
        ok.send_multipart(encode({"t": M.PUT, "req": 2, "id": "psmall", "val": small}), copy=False)
        replies = _replies(ok, 1)
        assert [(r["t"], r["ok"]) for r in replies] == [(M.PUT_ACK, True)]
        assert c.submit(canary.noop, 3).result(timeout=10) == 3
        assert mesh.procs[0].alive()


# ---------------------------------------------------------------------------------------------- the flood
def _warnings(text: str) -> int:
    return sum(1 for line in text.splitlines() if " WARNING " in line)


def test_100k_malformed_frames_from_an_authenticated_peer(node1: LocalMesh) -> None:
    """Acceptance 2: 100,000 malformed frames over authenticated connections while a legitimate client keeps
    completing tasks: the node stays up, counts every one, its RSS stays bounded, every legitimate task is
    correct, and its log grows by a bounded number of warnings (one per sender per 10 s)."""
    n, idents = 100_000, 4
    pid = node1.procs[0].pid
    with node1.client(0) as c:
        before = node_view(c)
        warnings_before = _warnings(node1.log(0))
        rss_before = rss_mib(pid)
        stop = threading.Event()
        done: list[int] = []
        errors: list[BaseException] = []

        def legit() -> None:
            try:
                k = 0
                while not stop.is_set():
                    xs = list(range(k, k + 200))
                    assert c.gather(c.map(canary.noop, xs), timeout=60) == xs
                    done.append(len(xs))
                    k += 200
            except BaseException as exc:
                errors.append(exc)

        worker = threading.Thread(target=legit, name="legit-client")
        worker.start()
        t0 = time.monotonic()
        flood = subprocess.Popen(
            [sys.executable, "-m", "tests.security.attacks", "flood", node1.address(0), str(n),
             "--token-file", str(node1.token_file), "--idents", str(idents)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=node1.client_env(),
        )  # fmt: skip
        peak = rss_before
        try:
            while flood.poll() is None:
                peak = max(peak, rss_mib(pid))
                time.sleep(0.1)
            out, err = flood.communicate(timeout=120)
        finally:
            if flood.poll() is None:
                flood.kill()
                flood.wait()
            stop.set()
            worker.join(timeout=120)
        seconds = time.monotonic() - t0
        assert flood.returncode == 0, err
        result = json.loads(out)
        assert result["sent"] == n
        assert not errors, errors
        assert sum(done) > 0

        def refused_or_dropped(v: dict[str, Any]) -> int:  # a sender of oversized messages is throttled: dropped
            return int(v["counters"].get("bad_frames", 0)) + int(v["throttle"]["dropped"])

        wait_until(lambda: refused_or_dropped(node_view(c)) - refused_or_dropped(before) >= n, 30)
        assert node1.procs[0].alive()
        grew = _warnings(node1.log(0)) - warnings_before
        bound = idents * (int(seconds / 10) + 2)
        print(
            f"{n} malformed frames in {result['seconds']} s ({n / result['seconds']:.0f}/s), {result['errors_back']}"
            f" error replies; legitimate tasks done meanwhile: {sum(done)}; node RSS {rss_before:.0f} MiB before, "
            f"peak {peak:.0f} MiB; log +{grew} warnings (bound {bound})"
        )
        assert grew <= bound
        assert peak - rss_before < 200


def test_log_stays_bounded_when_the_sender_changes_identity(node1: LocalMesh, zctx: zmq.Context[Any]) -> None:
    before = _warnings(node1.log(0))
    bad = [b"\xc1"]
    for i in range(200):
        s = authed_dealer(zctx, node1, ident=f"c:rotate{i}".encode())
        s.send_multipart(bad)
        assert _replies(s, 1)  # answered: it was processed
        s.close(linger=0)
    time.sleep(0.5)
    assert _warnings(node1.log(0)) - before <= 50


def test_wire_limits_follow_the_configuration() -> None:
    from types import SimpleNamespace

    from meshaios.config import NodeConfig
    from meshaios.wire.codec import DEFAULT_LIMITS, WireLimits

    assert WireLimits.from_config(NodeConfig()) == DEFAULT_LIMITS
    small = WireLimits.from_config(NodeConfig(max_frame_bytes=1 << 20))
    assert small.max_header == DEFAULT_LIMITS.max_header  # a streamed header is put together from many frames
    custom = WireLimits.from_config(SimpleNamespace(max_header_bytes=4096, max_frames=8, max_items=100))
    assert custom == WireLimits(max_header=4096, max_frames=8, max_items=100)
    with pytest.raises(Exception, match="exceed"):
        decode([b"\x80", *[b""] * 8], custom)
