"""An input freed on its executor after the executing core found it there (``InputsReady``) and before a worker
read it: the task is reported lost and runs again after its input is recomputed (lineage), never fails with a
``WireError`` ("dependency ... was not sent with the task"). Real nodes on the in-process mesh, virtual time."""

from __future__ import annotations

from typing import Any

from meshaios.testing.inproc import InProcessMesh
from meshaios.testing.vtime import run_virtual
from tests.integration import funcs


def test_a_map_output_part_freed_before_its_reducer_starts_is_recomputed() -> None:
    async def scenario() -> tuple[list[Any], list[str], dict[str, int]]:
        async with InProcessMesh(1, virtual=True, workers=1) as mesh:
            await mesh.wait_converged()
            c = await mesh.client(0)
            node = mesh.nodes[0]
            assert node._pool is not None
            submit = node._pool.submit
            freed: list[str] = []

            def free_then_submit(ctx: Any, fn: Any, arg: Any, key: Any = None) -> None:
                # the owner's FREE of a map output's parts (another reader reported one lost, in the failure
                # seen) lands between the core's InputsReady, every part here, and the worker reading the store
                parts = [d for d in arg["deps"] if "#" in d] if isinstance(arg, dict) else []
                if parts and not freed:
                    freed.append(parts[0])
                    node.store.delete(parts[0])
                submit(ctx, fn, arg, key)

            node._pool.submit = free_then_submit  # type: ignore[method-assign]
            outs = c.mapreduce(funcs.equal_key, None, range(4), partitions=2)
            got = await c.gather(outs)
            counters = {k: node.owner.counters[k] for k in ("lost_inputs", "recomputed")}
            await c.close()
            return got, freed, counters

    got, freed, counters = run_virtual(scenario())
    assert freed  # the part really was gone when the reducer started
    out: dict[Any, Any] = {}
    for part in got:
        out.update(part)
    assert out == {1: [0, 1, 2], 2: [3]}
    assert counters["lost_inputs"] >= 1
    assert counters["recomputed"] >= 1
