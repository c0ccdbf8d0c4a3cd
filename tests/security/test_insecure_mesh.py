"""Insecure meshes of their own (issue 14): every insecure node had the same mesh id, so two independent insecure
meshes on one LAN merged by mDNS; and binding one beyond loopback was silent. Now each insecure mesh has a name
(``--mesh-name``, or a random one, logged) from which its id comes, and a node bound off loopback warns."""

from __future__ import annotations

import time

import pytest

from meshaios.testing.localmesh import LocalMesh, wait_for

pytestmark = pytest.mark.system


def _members(c: object) -> set[str]:
    st = c.status()  # type: ignore[attr-defined]
    return {m["id"] for m in st["members"] if m["state"] == "alive"}


def test_two_insecure_meshes_on_one_lan_do_not_merge() -> None:
    with (
        LocalMesh(2, insecure=True, discovery=True, startup_timeout=60) as ours,
        LocalMesh(1, insecure=True, discovery=True, startup_timeout=60) as theirs,
    ):
        with ours.client(0) as c:
            # positive control: the two nodes of one mesh (one name) find each other by mDNS
            wait_for(lambda: _members(c) == {ours.by_index(1).node_id}, timeout=15, what="our two nodes meet")
            t0 = time.monotonic()
            while time.monotonic() - t0 < 3:  # and in the same time and more, the other mesh's node never appears
                assert theirs.by_index(0).node_id not in _members(c)
                time.sleep(0.2)
            ids = {c.status()["node"]["mesh"]}
        with theirs.client(0) as t:
            assert t.status()["node"]["mesh"] not in ids
            assert _members(t) == set()
        assert "start other nodes with --mesh-name" in ours.log(0)


def test_an_insecure_node_bound_beyond_loopback_warns() -> None:
    with LocalMesh(1, insecure=True, discovery=False, extra_args=["--bind", "0.0.0.0"]) as mesh:
        log = wait_for(lambda: "insecure node bound to" in mesh.log(0) and mesh.log(0), timeout=5, what="a warning")
    assert "every network interface" in log
    assert "submit tasks" in log
    with LocalMesh(1, insecure=True, discovery=False) as mesh:  # loopback: no warning
        assert "insecure node bound to" not in mesh.log(0)
