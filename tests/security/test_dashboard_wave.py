"""A wave of slow connections against the dashboard (issue 14): 70 connections that never finish their request
held all 64 slots and the dashboard answered 503 for ~10 s. Now a new connection takes the place of the oldest one
still sending its request, so a wave larger than the cap costs a legitimate request nothing."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.ux.test_metrics import SAMPLE_STATUS
from tests.ux.test_server import http, run, serving


def test_a_wave_of_slow_connections_does_not_deny_the_dashboard() -> None:
    async def main() -> None:
        async with serving(lambda: SAMPLE_STATUS, host="127.0.0.1", port=0) as url:
            host, port = url.removeprefix("http://").rsplit(":", 1)
            slow: list[Any] = []
            for _ in range(300):  # beyond the cap of 256: every slot held by a client that never finishes
                _reader, writer = await asyncio.open_connection(host, int(port))
                writer.write(b"GET /api/status HTTP/1.1\r\nHost: x\r\n")  # ...and never the blank line
                slow.append(writer)
            await asyncio.gather(*(w.drain() for w in slow))
            t0 = time.monotonic()
            code, _hdrs, body = await http(url, "/api/status")
            took = time.monotonic() - t0
            for w in slow:
                w.close()
            assert code == 200, body
            assert took < 1.0
            print(f"\n300 slow connections held: a legitimate request answered in {took * 1e3:.0f} ms")

    run(main)
