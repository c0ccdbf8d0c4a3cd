"""A RUN task's ``fr`` (inputs it is the last user of) holding an id that is not a str (rev19m's review): decode
checked only that it was a list, and ``ExecCore._drop_last_used(ids: list[str])`` -- compiled by the opt-in mypyc
build -- raised TypeError when the task succeeded, before the core emitted its SendResult: the result never went to
the owner (pure Python skipped such an id). Decode now refuses it, and the core still sends the result of a task
whose ``fr`` it is handed in odd shape (the compiled build runs this file too: .ci/run)."""

from __future__ import annotations

from typing import Any, cast

import pytest

from meshaios.devices.registry import default_registry
from meshaios.errors import WireError
from meshaios.sched.loadview import LoadView
from meshaios.sched.model import RuntimeModel
from meshaios.tasks.execcore import ExecCore, Finished, RunTasks, SendResult, StartOnWorker
from meshaios.tasks.functions import encode_function
from meshaios.wire import messages as M
from meshaios.wire.codec import decode_message, encode
from meshaios.wire.payload import Payload

FN = encode_function(default_registry().get("meshaios.add"), allow_pickle=False)


def test_a_run_whose_fr_holds_a_non_str_id_still_sends_its_result() -> None:
    msg: dict[str, Any] = {"t": M.RUN, "owner": "o", "tasks": [
        {"id": "a", "att": 0, "fn": FN, "args": Payload(b"x"), "deps": {}, "pure": False, "fr": ["in", 1]}]}
    with pytest.raises(WireError, match="fr must list task ids"):
        decode_message([bytes(memoryview(f)) for f in encode(msg)])
    run = cast(M.Run, msg)  # as if it had come through: the core must still answer
    core = ExecCore("me", {"cpu": 2}, model=RuntimeModel(), view=LoadView())
    starts = [i for i in core.handle(RunTasks("o", run["tasks"]), 0.0) if isinstance(i, StartOnWorker)]
    assert [s.key for s in starts] == [("a", 0)]
    out = core.handle(Finished([("o", ("a", 0), {"id": "a", "att": 0, "ok": True, "v": None, "dt": 0.01})]), 1.0)
    assert [i.result["id"] for i in out if isinstance(i, SendResult)] == ["a"]
