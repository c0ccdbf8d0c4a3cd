"""Past the schema: messages that decode fine but carry surprises in their optional fields, fed straight into a
real ``Node``'s handler on the in-process mesh. A token holder can send these; none may raise anything but a
``WireError`` (which the node counts and answers), and the node must go on serving.

This found a RUN task whose ``resources`` was a float: the executor had already counted it as queued when it
failed, so the task stayed "queued" for ever. The schema now types the optional fields an executor reads.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

from meshaios.errors import WireError
from meshaios.testing.inproc import InProcessMesh
from meshaios.wire.codec import encode
from meshaios.wire.payload import Payload
from tests.integration import funcs
from tests.security.malformed import valid_examples

KEYS = [
    "id", "att", "fn", "args", "deps", "pure", "retries", "resources", "parts", "device", "timeout", "q", "loc",
    "size", "src", "req", "ok", "v", "err", "val", "node", "owner", "ids", "m", "k", "seq", "from", "addr", "inc",
    "meta", "gossip", "key", "client", "dt", "fatal", "vparts",
]  # fmt: skip
REQUIRED = {"id", "fn", "args", "deps", "ok", "att", "pure"}  # the schema keeps these typed; mutate the rest


def _junk(rng: random.Random, depth: int = 0) -> Any:
    makers: list[Callable[[], Any]] = [
        lambda: None, lambda: True, lambda: -1, lambda: 2**63 - 1, lambda: 0.5, lambda: "", lambda: "x" * 300,
        lambda: b"b", lambda: Payload(b"\xc0"), lambda: Payload(b"\xc1"),
    ]  # fmt: skip
    if depth < 2:
        makers.append(lambda: [_junk(rng, depth + 1)])
        makers.append(lambda: {"loc": _junk(rng, depth + 1), "size": _junk(rng, depth + 1)})
    return rng.choice(makers)()


def _mutate(msg: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    msg = dict(msg)
    for _ in range(rng.randrange(4)):
        key = rng.choice(KEYS)
        if key not in ("t", "v"):
            msg[key] = _junk(rng)
    for key in ("tasks", "results"):
        if key in msg and isinstance(msg[key], list):
            items = []
            for item in msg[key]:
                item = dict(item)
                for _ in range(rng.randrange(5)):
                    k = rng.choice(KEYS)
                    if k not in REQUIRED:
                        item[k] = _junk(rng)
                items.append(item)
            msg[key] = items * rng.randrange(1, 3)
    return msg


def test_schema_valid_surprises_never_break_a_handler() -> None:
    async def main() -> None:
        async with InProcessMesh(2) as mesh:
            node, other = mesh.nodes
            rng = random.Random(8)
            examples = valid_examples()
            unexpected: Counter[tuple[str, str]] = Counter()
            for i in range(3000):
                mtype = rng.choice(list(examples))
                ident = rng.choice([b"c:fuzz", b"n:" + other.node_id.encode(), b"n:ghost"])
                try:
                    frames = [bytes(memoryview(f)) for f in encode(_mutate(examples[mtype], rng))]
                    node._handle(ident, frames)
                except WireError:
                    pass
                except Exception as exc:
                    unexpected[(mtype, f"{type(exc).__name__}: {exc}"[:80])] += 1
                if i % 100 == 0:
                    await asyncio.sleep(0.01)  # let timers, executors and replies run in between
            await asyncio.sleep(0.3)
            assert not unexpected, unexpected.most_common(10)
            assert node.counters.get("handler_errors", 0) == 0
            assert node.counters.get("tick_errors", 0) == 0
            client = await mesh.client(0)
            assert await client.submit(funcs.square, 9) == 81

    asyncio.run(main())
