"""``meshaios status`` against a real 3-node mesh: ``--json`` for machines, the table for people."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshaios import cli
from meshaios.client import Client
from meshaios.testing.localmesh import LocalMesh
from tests.ux import funcs


def test_status_json_describes_the_whole_mesh(
    ux_mesh: LocalMesh, client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    with ux_mesh.client(0, spread=1) as c0:  # node 0 owns all ten: the session's client spreads over the mesh
        c0.gather(c0.map(funcs.square, range(10)))
    rc = cli.main(["status", ux_mesh.address(0), "--json", "--token-file", str(ux_mesh.token_file)])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    me = data["node"]
    assert me["name"] == "node0"
    assert me["addr"] == ux_mesh.address(0)
    assert me["secure"] is True
    assert me["workers"] == 2
    assert me["owner"]["done"] >= 10
    assert {"queued", "running", "uptime", "store", "transport", "counters", "pending"} <= set(me)
    members = {m["name"]: m for m in data["members"]}
    assert set(members) == {"node1", "node2"}
    for i in (1, 2):
        m = members[f"node{i}"]
        assert m["state"] == "alive"
        assert m["addr"] == ux_mesh.address(i)
        assert m["id"] == ux_mesh.by_index(i).node_id
    assert data == json.loads(json.dumps(data))  # plain JSON all the way down


def test_status_table(ux_mesh: LocalMesh, client: Client, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["status", ux_mesh.address(1), "--token-file", str(ux_mesh.token_file)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "seen by node1" in out
    for name in ("node0", "node1", "node2"):
        assert name in out
    assert "3 alive |" in out
    assert out.count("alive") == 4  # the three rows and the mesh line


def test_status_with_the_wrong_token_says_so(
    ux_mesh: LocalMesh, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from meshaios.security import new_token

    wrong = tmp_path / "token"
    wrong.write_text(new_token() + "\n")
    wrong.chmod(0o600)
    rc = cli.main(["status", ux_mesh.address(0), "--json", "--token-file", str(wrong), "--timeout", "3"])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("meshaios: error:")
    print(err)  # the guide quotes this text


def test_status_watch_outlives_the_node_it_asks(tmp_path: Path) -> None:
    """``meshaios status --watch --json`` keeps printing when its node is SIGKILLed: it asks another live member."""
    import signal
    import subprocess
    import sys
    import time

    from meshaios.testing.localmesh import wait_for

    with LocalMesh(2) as mesh, mesh.client(0) as c:
        wait_for(lambda: len(c.status()["members"]) == 1, 15, what="two nodes")
        out = tmp_path / "watch.out"
        with open(out, "wb") as fh:
            watch = subprocess.Popen(
                [sys.executable, "-m", "meshaios", "status", mesh.address(0), "--token-file", str(mesh.token_file),
                 "--json", "--watch", "0.3", "--timeout", "2"],
                stdout=fh, stderr=subprocess.STDOUT, env=mesh.client_env(),
            )  # fmt: skip
        try:

            def answered_by() -> list[str]:
                dec, text, ids = json.JSONDecoder(), out.read_text(errors="replace"), []
                i = text.find("{")
                while i >= 0:
                    try:
                        doc, end = dec.raw_decode(text, i)
                    except ValueError:
                        break
                    ids.append(doc["node"]["id"])
                    i = text.find("{", end)
                return ids

            wait_for(lambda: mesh.by_index(0).node_id in answered_by(), 20, what="node 0 answering")
            mesh.kill(0, signal.SIGKILL)
            t0 = time.monotonic()
            wait_for(lambda: mesh.by_index(1).node_id in answered_by(), 30, what="node 1 answering instead")
            assert watch.poll() is None  # still watching
            print(f"node 1 answered {time.monotonic() - t0:.1f} s after node 0 was killed")
            assert "asking" in out.read_text()  # it said whom it asked instead
        finally:
            watch.kill()
            watch.wait(10)
