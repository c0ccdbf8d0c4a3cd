"""Acceptance of the fence (issue 14): an insecure node runs only what its operator allowed, whatever is installed.

The environment walk (``envwalk.py``, in a process of its own) names every importable top-level module of this
venv with its public callables, their attributes and its submodules' attributes; each name is submitted as an
import reference, from a raw NULL socket as an attacker on the same machine would, to an insecure node that allows
only two canary functions. Every one must come back refused by the fence, none may import a module in the node
(its ``sys.modules`` is read by an allowed task before and after), and the canary file must not appear.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import zmq

from meshaios.testing.localmesh import LocalMesh
from meshaios.wire import messages as M
from meshaios.wire.codec import decode, encode
from meshaios.wire.payload import Payload
from meshaios.wire.values import dumps, loads
from tests.security.conftest import canary_path, node_view
from tests.unit.test_allowlist import REGRESSIONS

pytestmark = pytest.mark.system

ALLOWED = ("tests.security.canary:loaded_modules", "tests.security.canary:touch")
REFUSED = "meshaios.errors.FunctionRefused"


@pytest.fixture(scope="module")
def fenced_insecure() -> Any:
    args = [a for f in ALLOWED for a in ("--allow-function", f)]
    with LocalMesh(1, insecure=True, discovery=False, extra_args=args) as mesh:
        yield mesh


def _payload(value: Any) -> Payload:
    return dumps(value, allow_pickle=False)[0]


def submit_refs(sock: zmq.Socket[Any], calls: list[tuple[str, tuple[Any, ...]]], timeout: float = 60) -> list[Any]:
    """Submit (reference, args) pairs as bare messages, in batches, pinging as a client does (an owner holds back
    a silent client's work); the result dicts in order."""
    stamp = time.monotonic_ns()
    ids = [f"f{stamp}x{i}" for i in range(len(calls))]
    got: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    pinged = 0.0
    sent = 0
    while len(got) < len(ids) and time.monotonic() < deadline:
        if sent < len(calls) and sent - len(got) < 1000:  # at most ~1,000 in flight
            specs = [
                {"id": ids[i], "fn": _payload({"ref": ref}), "args": _payload([list(a), {}]), "deps": []}
                for i, (ref, a) in enumerate(calls[sent : sent + 500], start=sent)
            ]
            sock.send_multipart(encode({"t": M.SUBMIT, "tasks": specs}))
            sent += len(specs)
        if time.monotonic() - pinged > 0.3:
            sock.send_multipart(encode({"t": M.PING}))
            pinged = time.monotonic()
        if sock.poll(50):
            while True:
                try:
                    msg = decode(sock.recv_multipart(zmq.NOBLOCK))
                except zmq.Again:
                    break
                if msg["t"] == M.RESULTS:
                    got.update({r["id"]: r for r in msg["results"]})
    assert len(got) == len(ids), f"{len(ids) - len(got)} results missing"
    return [got[i] for i in ids]


def modules_in_node(sock: zmq.Socket[Any]) -> set[str]:
    [r] = submit_refs(sock, [(ALLOWED[0], ())])
    assert r["ok"], r
    return set(loads(r["v"], allow_pickle=False))


@pytest.mark.parametrize(
    ("per_module", "per_class"), [(30, 3), pytest.param(120, 12, marks=pytest.mark.slow)], ids=["quick", "full"]
)
def test_an_environment_walk_runs_and_imports_nothing(
    fenced_insecure: LocalMesh, zctx: zmq.Context[Any], tmp_path: Path, per_module: int, per_class: int
) -> None:
    """Every importable top-level module; ``quick`` takes fewer attributes of each (about 5,000 references),
    ``full`` (``-m slow``) up to 120 per module and 12 per class (about 16,000)."""
    walk_file = tmp_path / "walk.json"
    subprocess.run(
        [sys.executable, "-m", "tests.security.envwalk", str(walk_file), str(per_module), str(per_class)],
        check=True, timeout=120, stdin=subprocess.DEVNULL, capture_output=True,
    )  # fmt: skip
    walk = json.loads(walk_file.read_text())
    refs = sorted(set(walk["refs"]) | set(REGRESSIONS) | {"tests.security.canary:noop", "meshaios:Client"})
    assert len(walk["modules"]) > 100
    assert len(refs) > 3_000

    sock = zctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(fenced_insecure.address(0))
    control = canary_path(tmp_path, "control")
    [ok] = submit_refs(sock, [(ALLOWED[1], (str(control),))])
    assert ok["ok"], ok  # the canary works: its absence below means refused
    assert control.exists()
    submit_refs(sock, [("json:dumps", ([1],))])  # warm the refusal path (traceback formatting) before the baseline
    with fenced_insecure.client(0) as c:
        refused_before = node_view(c)["counters"].get("functions_refused", 0)
    before = modules_in_node(sock)

    canary = canary_path(tmp_path, "walk")
    t0 = time.monotonic()
    results = submit_refs(sock, [(ref, (f"touch {canary}",)) for ref in refs])
    took = time.monotonic() - t0
    after = modules_in_node(sock)

    not_refused = [(ref, r.get("err", {}).get("type")) for ref, r in zip(refs, results, strict=True)
                   if r["ok"] or r["err"]["type"] != REFUSED]  # fmt: skip
    assert not_refused == []
    assert after - before == set()
    assert not canary.exists()
    assert fenced_insecure.procs[0].alive()
    with fenced_insecure.client(0) as c:
        view = node_view(c)
    assert view["counters"]["functions_refused"] - refused_before == len(refs)
    assert view["fence"] == {"fenced": True, "modules": [], "functions": sorted(ALLOWED)}
    warnings = fenced_insecure.log(0).count("refused to run a function")
    assert 1 <= warnings <= 20 * (took / 10 + 2)  # rate-limited: 20 per 10 s at most
    print(f"\n{len(refs)} references from {len(walk['modules'])} modules refused in {took:.1f} s; "
          f"{len(after)} modules loaded in the node, none new; {warnings} warnings logged")  # fmt: skip


def test_regressions_with_their_modules_allowed(zctx: zmq.Context[Any], tmp_path: Path) -> None:
    """``--allow-module numpy`` (and the other modules named) no longer admits submodules or attribute chains."""
    tops = sorted({r.split(":")[0].split(".")[0] for r in REGRESSIONS})
    args = [a for m in tops for a in ("--allow-module", m)] + ["--allow-function", ALLOWED[0]]
    with LocalMesh(1, insecure=True, discovery=False, extra_args=args) as mesh:
        sock = zctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(mesh.address(0))
        path = canary_path(tmp_path, "regress")
        before = modules_in_node(sock)
        calls = [(ref, (str(path),)) for ref in REGRESSIONS]
        results = submit_refs(sock, calls)
        assert [r["err"]["type"] if not r["ok"] else "ran" for r in results] == [REFUSED] * len(REGRESSIONS)
        assert not path.exists()
        assert modules_in_node(sock) - before == set()
