"""Every optional field of a SUBMIT task, a DONE result and a RUN task, one at a time, with values of every
wrong type, fed into a real ``Node``'s handler (the in-process mesh, so the owner and the executor core run as
this install built them: compiled where it compiled them, meshaios/native.py).

decode leaves a SUBMIT task's and a result's optional fields unchecked, so they reach the owner as a token holder
sent them; compiled code checks declared types at run time (a ``TypeError`` where Python carried on), and the
node's loop turns one into a dropped message: the other tasks of that SUBMIT or DONE would be lost. Nothing but a
``WireError`` may come out, and the node must serve afterwards.

A RUN task's ``fr`` holding a non-str id (``[1]``) once passed decode (a list was all it checked) and, compiled,
``ExecCore._drop_last_used`` raised TypeError when the task succeeded (before its SendResult), where Python skipped
the id (rev19m); decode now refuses it and the core takes any iterable of objects.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from meshaios import native
from meshaios.errors import WireError
from meshaios.testing.inproc import InProcessMesh
from meshaios.wire import messages as M
from meshaios.wire.codec import encode
from meshaios.wire.payload import Payload
from tests.integration import funcs
from tests.security.malformed import valid_examples

ODD: list[Any] = [None, True, False, -1, 0, 2**63 - 1, 0.5, -0.5, "", "x", b"b", Payload(b"\xc0"), [], [1], ["a"],
                  {}, {"a": 1}, {"cpu": 0.5}, {"cpu": True}, {"v": None}, {"loc": [1], "size": "x"},
                  {"loc": ["n"], "size": 1}]  # fmt: skip


def _optional(td: Any) -> list[str]:
    return sorted(M._fields(td)[1])


def test_odd_optional_fields_of_tasks_and_results_never_break_the_node() -> None:
    async def main() -> None:
        async with InProcessMesh(2) as mesh:
            node, other = mesh.nodes
            examples = valid_examples()
            cases: list[tuple[str, bytes, str, str, Any]] = []
            for mtype, key, td in ((M.SUBMIT, "tasks", M.SubmitTask), (M.DONE, "results", M.Result),
                                   (M.RESULTS, "results", M.Result), (M.RUN, "tasks", M.RunTask)):  # fmt: skip
                ident = b"c:odd" if mtype == M.SUBMIT else b"n:" + other.node_id.encode()
                cases += [(mtype, ident, key, f, v) for f in _optional(td) for v in ODD]
            unexpected: Counter[str] = Counter()
            for i, (mtype, ident, key, field, val) in enumerate(cases):
                msg = dict(examples[mtype])
                item = dict(msg[key][0])
                item["id"] = f"odd{i}"
                item[field] = val
                msg[key] = [item]
                try:
                    node._handle(ident, [bytes(memoryview(f)) for f in encode(msg)])
                except WireError:
                    pass
                except Exception as exc:
                    unexpected[f"{mtype} {field}={val!r}: {type(exc).__name__}: {exc}"[:120]] += 1
                if i % 50 == 0:
                    await asyncio.sleep(0.01)  # timers, executors and replies run in between
            await asyncio.sleep(0.3)
            assert not unexpected, (native.compiled(), unexpected.most_common(10))
            assert node.counters.get("handler_errors", 0) == 0
            assert node.counters.get("tick_errors", 0) == 0
            client = await mesh.client(0)
            assert await client.submit(funcs.square, 9) == 81

    asyncio.run(main())
