"""One real 3-node mesh (node processes on loopback, one token) shared by the UX tests of a session."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from meshaios.client import Client
from meshaios.testing.localmesh import LocalMesh, wait_for


@pytest.fixture(scope="session")
def ux_mesh() -> Iterator[LocalMesh]:
    with LocalMesh(3, workers=2) as mesh:
        yield mesh


@pytest.fixture(scope="session")
def client(ux_mesh: LocalMesh) -> Iterator[Client]:
    c: Client = ux_mesh.client(0)
    try:
        wait_for(
            lambda: sum(m["state"] == "alive" for m in c.status()["members"]) == 2,
            30,
            interval=0.1,
            what="three nodes alive",
        )
        yield c
    finally:
        c.close()


class ServerThread:
    """``serve_http`` on a private event loop thread, for tests that drive it from synchronous code."""

    def __init__(self, get_status: Callable[[], Any], **kwargs: Any) -> None:
        from meshaios.dashboard.server import serve_http

        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._task: asyncio.Task[None] | None = None

        async def main() -> None:
            ready = asyncio.Event()

            def listening(url: str) -> None:
                self.url = url

            self._task = asyncio.create_task(serve_http(get_status, ready=ready, on_listen=listening, **kwargs))
            waiter = asyncio.create_task(ready.wait())
            await asyncio.wait([self._task, waiter], return_when=asyncio.FIRST_COMPLETED)
            self._started.set()
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

        def run() -> None:
            try:
                self._loop.run_until_complete(main())
            except BaseException as exc:  # reported to the test by start()
                self._error = exc
                self._started.set()
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=run, name="test-http", daemon=True)

    def start(self) -> ServerThread:
        self._thread.start()
        self._started.wait(10)
        if self._error is not None:
            raise self._error
        assert self.url, "server did not start"
        return self

    def stop(self) -> None:
        if self._task is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(10)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def mesh_status_source(client: Client) -> Callable[[], Any]:
    """A ``get_status`` that asks a real mesh node (through a client) without blocking the server's loop."""

    async def get() -> Mapping[str, Any]:
        return await asyncio.to_thread(client.status)

    return get
