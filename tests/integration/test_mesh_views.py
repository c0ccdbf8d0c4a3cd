"""``Node.mesh_views``, what a node's dashboard sums the mesh's work from: every live member's view, and for one
that does not answer within PEEK_TIMEOUT its last view, marked stale -- so a member busy for a moment does not make
the page's totals drop by its share (with ownership spread, each member owns part of a client's job). Real Node
objects on the in-memory transport."""

from __future__ import annotations

import asyncio
from typing import Any

import uvloop

from meshaios.testing.inproc import InProcessMesh
from tests.integration import funcs


def run(fn: Any) -> Any:
    return uvloop.run(asyncio.wait_for(fn(), 60))


def test_a_member_that_does_not_answer_is_shown_by_its_last_view() -> None:
    async def main() -> None:
        async with InProcessMesh(2, workers=1) as mesh:
            a, b = mesh.nodes
            c = await mesh.client(1, spread=1)  # node b owns these
            assert await c.gather([c.submit(funcs.square, i) for i in range(5)]) == [i * i for i in range(5)]
            fresh = await a.mesh_views()
            assert [v["node"] for v in fresh] == [a.node_id, b.node_id]
            assert "stale" not in fresh[1]
            owned = {f["function"]: f["total"] for f in fresh[1]["functions"]}
            assert owned["tests.integration.funcs:square"] == 5
            mesh.partition([0], [1])  # b is still a member (not yet suspected), but its answer cannot come
            cut = await a.mesh_views(timeout=0.2)
            assert [v["node"] for v in cut] == [a.node_id, b.node_id]
            assert cut[1]["stale"] >= 0
            assert cut[1]["functions"] == fresh[1]["functions"]
            mesh.heal()

    run(main)
