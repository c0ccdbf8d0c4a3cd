"""mDNS discovery with real python-zeroconf, confined to loopback.

Every zeroconf instance here runs on ``interfaces=["127.0.0.1"]``, IPv4 only: nothing leaves the host. Each test
uses fresh random mesh ids, so concurrent runs on one machine cannot see each other's nodes as peers.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest
import uvloop
from zeroconf import IPVersion, ServiceInfo
from zeroconf.asyncio import AsyncZeroconf

from meshaios.errors import ConfigError
from meshaios.ids import new_id
from meshaios.io.discovery import (
    SERVICE_TYPE,
    Announcement,
    ZeroconfDiscovery,
    announcement_from_txt,
    browse,
    interfaces_for_bind,
    txt_for,
)
from tests.integration.polling import wait_for

LOOPBACK = "127.0.0.1"
VERSION = 1
LOOPS = ["asyncio", "uvloop"]


# -- helpers ------------------------------------------------------------------------------------------------


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@functools.cache
def _warm_uvloop() -> None:
    """uvloop opens a process-wide pipe with its first loop; open it before counting descriptors."""
    uvloop.new_event_loop().close()


def run(main: Callable[[], Coroutine[Any, Any, None]], loop: str = "asyncio") -> None:
    """Run ``main()`` on a fresh event loop and fail if it leaked threads or file descriptors."""
    if loop == "uvloop":
        _warm_uvloop()
    threads, fds = threading.active_count(), _open_fds()
    factory = uvloop.new_event_loop if loop == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())
    assert threading.active_count() == threads, "discovery leaked a thread"
    assert _open_fds() <= fds, "discovery leaked a file descriptor"


class Node:
    """A ZeroconfDiscovery plus a record of its on_peer calls."""

    def __init__(self, mesh_id: str, port: int, version: int = VERSION, name: str = "") -> None:
        self.me = Announcement(
            node_id=new_id("n"),
            mesh_id=mesh_id,
            version=version,
            host=LOOPBACK,
            port=port,
            name=name or f"node-{port}",
            devices="cpu:2",
        )
        self.calls: list[Announcement] = []
        self.wrong_thread = False
        self.disc = ZeroconfDiscovery(self.me, LOOPBACK, self._on_peer)

    def _on_peer(self, ann: Announcement) -> None:
        if threading.current_thread() is not threading.main_thread():
            self.wrong_thread = True
        self.calls.append(ann)

    def sees(self) -> set[str]:
        return {a.node_id for a in self.disc.snapshot()}


async def stop_all(nodes: list[Node]) -> None:
    await asyncio.gather(*(n.disc.stop() for n in nodes))


async def with_nodes(nodes: list[Node], body: Callable[[], Awaitable[None]]) -> None:
    """Start ``nodes``, run ``body``, and stop every node whatever happens."""
    try:
        for n in nodes:
            await n.disc.start()
        await body()
    finally:
        await stop_all(nodes)


# -- pure helpers -------------------------------------------------------------------------------------------


def test_txt_round_trip() -> None:
    me = Announcement("n1", "m1", 3, LOOPBACK, 7400, "bóx", "cpu:8,gpu:1")
    props = {k.encode(): v.encode() for k, v in txt_for(me).items()}
    assert announcement_from_txt(props, LOOPBACK) == me
    assert me.address == "tcp://127.0.0.1:7400"


@pytest.mark.parametrize(
    "props",
    [
        {b"mesh": b"m", b"v": b"1", b"port": b"1"},  # no id
        {b"id": b"n", b"mesh": b"", b"v": b"1", b"port": b"1"},  # empty mesh
        {b"id": b"n", b"mesh": b"m", b"v": b"x", b"port": b"1"},  # bad version
        {b"id": b"n", b"mesh": b"m", b"v": b"1", b"port": b"70000"},  # bad port
        {b"id": b"n", b"mesh": b"m", b"v": b"-1", b"port": b"1"},
        {b"id": b"\xff", b"mesh": b"m", b"v": b"1", b"port": b"1"},  # not utf-8
        {b"id": b"n", b"mesh": b"m", b"v": b"1", b"port": None},
    ],
)
def test_malformed_txt_is_rejected(props: dict[bytes, bytes | None]) -> None:
    with pytest.raises(ValueError):
        announcement_from_txt(props, LOOPBACK)


def test_interfaces_for_bind() -> None:
    assert interfaces_for_bind("127.0.0.1") == ["127.0.0.1"]
    assert interfaces_for_bind("127.3.2.1") == ["127.0.0.1"]
    assert interfaces_for_bind("10.77.0.2") == ["10.77.0.2"]
    assert interfaces_for_bind("0.0.0.0").name == "All"  # type: ignore[union-attr]
    with pytest.raises(ConfigError):
        interfaces_for_bind("::1")


# -- real mDNS on loopback ----------------------------------------------------------------------------------


@pytest.mark.parametrize("loop", LOOPS)
def test_three_nodes_see_each_other(loop: str) -> None:
    mesh = new_id("m")
    nodes = [Node(mesh, 7400 + i) for i in range(3)]
    ids = {n.me.node_id for n in nodes}

    async def body() -> None:
        took = await wait_for(
            lambda: all(n.sees() == ids - {n.me.node_id} for n in nodes), 3.0, "3 nodes see each other"
        )
        print(f"\n[{loop}] 3 nodes saw each other {took * 1000:.0f} ms after the last start")
        for n in nodes:
            assert not n.wrong_thread
            # each peer reported exactly once, with what it announced
            assert sorted(n.calls, key=lambda a: a.node_id) == sorted(
                (m.me for m in nodes if m is not n), key=lambda a: a.node_id
            )

        # a changed announcement is reported once more, to everybody
        new = Announcement(**{**nodes[0].me.__dict__, "devices": "cpu:2,gpu:1"})
        await nodes[0].disc.update(new)
        await nodes[0].disc.update(new)  # same again: nothing new to say
        took = await wait_for(
            lambda: all(new in n.disc.snapshot() for n in nodes[1:]), 3.0, "update reaches the others"
        )
        print(f"[{loop}] updated TXT seen by both peers in {took * 1000:.0f} ms")
        for n in nodes[1:]:
            assert [a for a in n.calls if a.node_id == new.node_id] == [nodes[0].me, new]
            assert len(n.calls) == 3

    run(lambda: with_nodes(nodes, body), loop)


def test_other_mesh_other_version_and_garbage_are_invisible() -> None:
    mesh, other_mesh = new_id("m"), new_id("m")
    foreign = [Node(other_mesh, 7500), Node(mesh, 7501, version=VERSION + 1)]
    nodes = [Node(mesh, 7400 + i) for i in range(3)]
    ids = {n.me.node_id for n in nodes}
    foreign_ids = {n.me.node_id for n in foreign}

    async def body() -> None:
        # A raw service of our type whose TXT claims our mesh but has neither version nor port.
        raw = AsyncZeroconf(interfaces=[LOOPBACK], ip_version=IPVersion.V4Only)
        try:
            junk = ServiceInfo(
                SERVICE_TYPE,
                f"junk-{new_id()}.{SERVICE_TYPE}",
                port=9,
                properties={"id": new_id("n"), "mesh": mesh},
                parsed_addresses=[LOOPBACK],
            )
            await raw.async_register_service(junk, cooperating_responders=True)

            # Positive control: every node of ours heard, resolved and turned away each intruder.
            def all_rejected() -> bool:
                stats = [n.disc.statistics() for n in nodes]
                return all(s.other_mesh and s.other_version and s.malformed for s in stats)

            took = await wait_for(all_rejected, 3.0, "every node rejects the 3 intruders")
            print(f"\nintruders heard and rejected by all 3 nodes after {took * 1000:.0f} ms")
            await wait_for(lambda: all(n.sees() == ids - {n.me.node_id} for n in nodes), 3.0, "peers")

            # The intruders are announced and found by their own kind, and browse() filters like the nodes.
            assert [a.node_id for a in await browse(other_mesh, VERSION, timeout=3.0)] == [foreign[0].me.node_id]
            assert [a.node_id for a in await browse(mesh, VERSION + 1, timeout=3.0)] == [foreign[1].me.node_id]
            found = await browse(mesh, VERSION, timeout=3.0, want=3)
            assert {a.node_id for a in found} == ids
        finally:
            await raw.async_close()
        for n in nodes:
            assert n.sees() == ids - {n.me.node_id}
            assert not foreign_ids & {a.node_id for a in n.calls}
            assert len(n.calls) == 2
        for f in foreign:
            assert f.sees() == set()
            assert f.calls == []

    run(lambda: with_nodes(foreign + nodes, body))


def test_browse_finds_a_running_node() -> None:
    mesh = new_id("m")
    node = Node(mesh, 7600, name="alpha")

    async def body() -> None:
        start = time.monotonic()
        found = await browse(mesh, VERSION, timeout=3.0)
        took = time.monotonic() - start
        print(f"\nbrowse() returned the node in {took * 1000:.0f} ms")
        assert found == [node.me]
        assert took < 3.0
        # nothing of an unknown mesh: returns empty after the timeout, no error
        assert await browse(new_id("m"), VERSION, timeout=0.3) == []

    run(lambda: with_nodes([node], body))


def test_stop_is_clean_and_idempotent() -> None:
    mesh = new_id("m")
    a, b = Node(mesh, 7700), Node(mesh, 7701)

    async def body() -> None:
        await wait_for(lambda: a.sees() == {b.me.node_id}, 3.0, "a sees b")
        await asyncio.gather(b.disc.stop(), b.disc.stop())  # concurrent stops
        await b.disc.stop()  # and once more
        assert not b.disc.running
        await b.disc.update(Announcement(**{**b.me.__dict__, "devices": "x"}))  # no-op after stop
        with pytest.raises(RuntimeError):
            await b.disc.start()
        # b's goodbye makes it leave a's snapshot (records expire 1 s after a goodbye), unreported
        took = await wait_for(lambda: a.sees() == set(), 3.0, "goodbye removes b")
        print(f"\ngoodbye took {took * 1000:.0f} ms to clear the peer")
        assert [x.node_id for x in a.calls] == [b.me.node_id]

    run(lambda: with_nodes([a, b], body))


def test_stop_without_start_and_failed_start() -> None:
    async def main() -> None:
        never = ZeroconfDiscovery(Announcement("n", "m", 1, LOOPBACK, 1), LOOPBACK, lambda a: None)
        await never.stop()
        await never.stop()
        assert never.snapshot() == []

    run(main)
    with pytest.raises(ConfigError):
        ZeroconfDiscovery(Announcement("n", "m", 1, LOOPBACK, 1), "not-an-ip", lambda a: None)
    with pytest.raises(ConfigError):
        ZeroconfDiscovery(Announcement("n", "m", 1, "my-laptop.local", 1), LOOPBACK, lambda a: None)


def test_shutdown_races() -> None:
    mesh = new_id("m")

    async def main() -> None:
        # stop() while start() is still registering: both return, nothing leaks (checked by run()).
        a = Node(mesh, 7800)
        try:
            await asyncio.gather(a.disc.start(), a.disc.stop())
            assert not a.disc.running
        finally:
            await a.disc.stop()

        # start() cancelled half-way cleans up and lets the cancellation through.
        b = Node(mesh, 7801)
        task = asyncio.ensure_future(b.disc.start())
        try:
            await asyncio.sleep(0)  # let start() begin
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            await b.disc.stop()

        # browse() cancelled by the caller's timeout still closes its zeroconf (checked by run()).
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await browse(mesh, VERSION, timeout=5.0)

        # update() racing stop(), and update() before start() (start publishes the latest one).
        c, d = Node(mesh, 7802), Node(mesh, 7803)
        try:
            newer = Announcement(**{**c.me.__dict__, "devices": "cpu:2,gpu:4"})
            await c.disc.update(newer)
            await c.disc.start()
            await d.disc.start()
            await wait_for(lambda: newer in d.disc.snapshot(), 3.0, "d sees c's latest announcement")
            assert d.calls == [newer]
            newest = Announcement(**{**newer.__dict__, "devices": "cpu:2"})
            await asyncio.gather(c.disc.update(newest), c.disc.stop(), c.disc.update(c.me))
        finally:
            await stop_all([c, d])

    run(main)
