"""A token holder's oversized headers (issue 14): ten ``ping``s of 1,048,574 fields, 9 MB each, used to hold a
node's event loop about 5 s apiece -- legitimate clients timed out or were told "wrong mesh token", and a peer
declared the node dead. Now the header's field count and its type's size limit are read from its first bytes
before msgpack runs (``wire/codec.py``), and a peer that keeps sending such messages is throttled
(``wire/guard.py``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import zmq

from meshaios.testing.localmesh import LocalMesh, wait_for
from meshaios.wire import messages as M
from tests.security import canary
from tests.security.conftest import authed_dealer, node_view, percentile, thread_cpu

pytestmark = pytest.mark.system

FIELDS = 1_048_574


@pytest.fixture(scope="module")
def pair() -> Iterator[LocalMesh]:
    with LocalMesh(2, discovery=False, workers=2) as m:
        yield m


def _huge_ping() -> bytes:
    header: dict[str, Any] = {"v": M.PROTOCOL_VERSION, "t": M.PING}
    header.update((f"f{i}", i) for i in range(FIELDS - 2))
    return bytes(msgpack.packb(header))


def _latencies(c: Any, n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        assert c.submit(canary.noop, i).result(timeout=10) == i
        out.append(time.perf_counter() - t0)
    return out


def _suspicions(c: Any) -> int:
    counters = node_view(c)["counters"]
    return int(counters.get("member_suspect", 0)) + int(counters.get("member_dead", 0))


def test_nine_megabyte_pings_are_refused_cheaply(pair: LocalMesh, zctx: zmq.Context[Any]) -> None:
    huge = _huge_ping()
    assert len(huge) > 9_000_000
    pid = pair.procs[0].pid
    with pair.client(0) as c, pair.client(1) as watcher:
        wait_for(lambda: len(c.status()["members"]) == 1, timeout=10, what="the two nodes meet")
        _latencies(c, 20)  # warm up
        quiet = _latencies(c, 100)
        suspect_before = _suspicions(c) + _suspicions(watcher)
        bad_before = node_view(c)["counters"].get("bad_frames", 0)

        # the attack alone: what it costs the node's event loop (it cost ~5 s of loop per message before)
        attacker = authed_dealer(zctx, pair, 0, ident=b"c:attacker")
        loop_before = thread_cpu(pid)["loop"]
        for _ in range(10):
            attacker.send(huge, copy=False)

        def absorbed() -> Any:
            v = node_view(c)
            return v if v["counters"].get("bad_frames", 0) - bad_before + v["throttle"]["dropped"] >= 10 else None

        view = wait_for(absorbed, timeout=30, what="the ten pings arrive")
        loop_cpu = thread_cpu(pid)["loop"] - loop_before
        # the reply names what was wrong
        assert attacker.poll(5000)
        reply = msgpack.unpackb(attacker.recv())
        assert reply["t"] == M.ERROR
        assert f"{FIELDS} fields" in reply["msg"]

        # and again while a legitimate client works
        for _ in range(10):
            attacker.send(huge, copy=False)
        during = _latencies(c, 100)
        assert _suspicions(c) + _suspicions(watcher) == suspect_before
        assert all(m["state"] == "alive" for m in watcher.status()["members"])
    refused = view["counters"]["bad_frames"] - bad_before
    dropped = view["throttle"]["dropped"]
    assert refused + dropped == 10
    assert dropped >= 1  # five strikes, then dropped unread
    assert loop_cpu < 0.5  # status polls included; the decoder alone took ~5 s per message
    q50, d50 = percentile(quiet, 0.5), percentile(during, 0.5)
    q99, d99 = percentile(quiet, 0.99), percentile(during, 0.99)
    print(f"\n10 x {len(huge) / 1e6:.1f} MB pings: node loop CPU {loop_cpu * 1e3:.0f} ms (polls included), "
          f"{refused} refused, {dropped} dropped unread; legitimate p50 {q50 * 1e3:.2f} -> {d50 * 1e3:.2f} ms, "
          f"p99 {q99 * 1e3:.2f} -> {d99 * 1e3:.2f} ms ({d99 / q99:.2f}x)")  # fmt: skip
    # the median within 2x (plus scheduling noise: the 134 MB the attacker sends are copied by the kernel and libzmq
    # on the same two shared cores); p99 is printed, and docs/security.md has it from a quiet machine
    assert d50 <= 2 * q50 + 0.010
