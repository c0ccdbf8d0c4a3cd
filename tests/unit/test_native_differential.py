"""The compiled owner and executor core (setup.py, mypyc) behave exactly as their Python source.

A difference between the two is a correctness bug in production, and the simulator must run the code the node runs:
each test below runs the same thing in two child processes, one with the install's compiled modules and one with
``MESHAIOS_PURE=1``, and compares what came out. Skipped where this install compiled nothing (both would be Python).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from meshaios import native


def _built() -> bool:
    names = native._names()
    return all(native._has_extension(n) for n in names) and not native._stale(names)


pytestmark = pytest.mark.skipif(not _built(), reason="this install runs meshaios as Python (nothing compiled)")


def _child(code: str, *, pure: bool) -> Any:
    """``code`` prints one JSON document; run it compiled or as Python, and return that document."""
    env = {k: v for k, v in os.environ.items() if k != native.PURE_ENV}
    env[native.PURE_ENV] = "1" if pure else "0"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         timeout=60).stdout  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])


def _both(code: str) -> tuple[Any, Any]:
    compiled, pure = _child(code, pure=False), _child(code, pure=True)
    assert compiled["compiled"] == native.module_names()
    assert pure["compiled"] == []
    return compiled["out"], pure["out"]


# wall-clock measurements of the run itself, the only fields of ``meshaios sim --json`` that may differ
_TIMING = ("decision_us", "wall_s", "decisions_per_s", "command")

SIM = """
import contextlib, io, json, sys
import meshaios
from meshaios.sim.cli import main
runs = []
for argv in {argvs!r}:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        main(argv)
    runs.append(json.loads(buf.getvalue()))
print(json.dumps({{"compiled": meshaios.compiled(), "out": runs}}))
"""


def _strip(o: Any) -> Any:
    if isinstance(o, dict):
        return {k: _strip(v) for k, v in o.items() if k not in _TIMING}
    if isinstance(o, list):
        return [_strip(v) for v in o]
    return o


def test_the_simulator_gives_the_same_outcome_compiled_and_pure() -> None:
    """The simulator is deterministic per seed (bar the wall-clock fields): every policy's makespan, executions,
    steals, duplicates, lost tasks and bytes moved must be equal, with SWIM membership, kills and several owners."""
    common = ["--nodes", "6", "--tasks", "250", "--policy", "all", "--membership", "swim", "--owners", "2", "--json"]
    argvs = [
        [*common, "--workload", "mixed", "--kill", "1@0.5", "--liars", "0.3", "--seed", "1"],
        [*common, "--workload", "deadlines", "--seed", "2"],
        [*common, "--workload", "mapreduce", "--kill", "2@1", "--late-binding", "off", "--seed", "3"],
    ]
    compiled, pure = _both(SIM.format(argvs=argvs))
    assert len(compiled) == len(argvs)
    assert all(r["results"] for r in compiled)
    assert _strip(compiled) == _strip(pure)


FAULTS = """
import json
import meshaios
from meshaios.testing.faults import run_seed
out = []
for seed in {seeds!r}:
    r = run_seed(seed, puts=True, shuffle=True, gray=True)
    out.append([r.seed, r.nodes, r.tasks, r.faults, r.violations])
print(json.dumps({{"compiled": meshaios.compiled(), "out": out}}))
"""


def test_the_fault_harness_finds_nothing_wrong_compiled_and_pure() -> None:
    """The production node under the virtual-fault harness (kills, pauses, partitions, loss, a gray failover),
    compiled and pure. The harness is deterministic in what it draws, not in its timing (the client's task ids and
    the learned runtimes vary from run to run: testing/vtime.py), so what is compared is the drawn mesh, workload and
    faults, and that neither run breaks a promise."""
    compiled, pure = _both(FAULTS.format(seeds=[3, 9, 13, 19, 29]))
    assert [r[4] for r in compiled] == [[]] * 5
    assert compiled == pure


OWNER = """
import json, random
import meshaios
from meshaios.tasks.owner import Owner, OwnerConfig
from meshaios.wire.payload import Payload

FN, ARGS, C = Payload(b"fn"), Payload(b"args"), b"c1"
ODD = [None, "x", 1.5, True, -1, 2**70, [], {{}}, [1], {{"a": 1}}, {{"cpu": 1.5}}, {{"v": None}}, b"b"]


def outcome(owner_acts):
    return sorted(type(a).__name__ for a in owner_acts)


def trial(where, field, val):
    o = Owner("me", OwnerConfig(), rng=random.Random(0))
    try:
        o.node_up("n1", 2)
        o.node_up("n2", 2)
        spec = {{"id": "a", "fn": FN, "args": ARGS, "deps": []}}
        if where == "submit":
            spec[field] = val
        first = o.submit(C, [spec], now=1.0)
        res = {{"id": "a", "ok": where != "failed", "att": 0, "v": Payload(b"v")}}
        if where == "failed":
            res["err"] = {{"type": "E", "msg": "m", "tb": ""}}
        if where != "submit":
            res[field] = val
        t = o.tasks.get("a")
        done = o.completed((t.node if t is not None else None) or "n1", [res], now=2.0)
        return ["ok", outcome(first), outcome(done), outcome(o.tick(100.0)), o.pending]
    except Exception as e:  # compared, not hidden: a compiled TypeError where Python carries on is the bug
        return [type(e).__name__, str(e)]


out = {{}}
for field in {submit!r}:
    for v in ODD:
        out[f"submit {{field}}={{v!r}}"] = trial("submit", field, v)
for field in {result!r}:
    for v in ODD:
        out[f"done {{field}}={{v!r}}"] = trial("done", field, v)
        out[f"failed {{field}}={{v!r}}"] = trial("failed", field, v)
print(json.dumps({{"compiled": meshaios.compiled(), "out": out}}))
"""


def test_the_owner_reads_odd_optional_fields_alike_compiled_and_pure() -> None:
    """decode checks a SUBMIT task's and a result's required fields only (wire/messages.py): the optional ones reach
    the owner as the peer or client sent them. A compiled function checks the declared types at run time, so a
    field read into a typed variable would raise TypeError where Python carries on; every such value must give the
    owner's Python outcome, and the Python outcome is never an exception."""
    submit = ["pure", "retries", "resources", "parts", "timeout", "priority", "deadline", "rs", "kd", "dev", "ff",
              "cancel", "rc", "done", "rel"]  # fmt: skip
    result = ["att", "v", "size", "parts", "err", "fatal", "dt", "dev", "kdev", "node", "lost"]
    compiled, pure = _both(OWNER.format(submit=submit, result=result))
    assert len(compiled) == 13 * (len(submit) + 2 * len(result))
    assert {k: v for k, v in pure.items() if v[0] != "ok"} == {}
    assert {k: v for k, v in compiled.items() if v != pure[k]} == {}
