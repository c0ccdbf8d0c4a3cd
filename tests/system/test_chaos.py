"""`meshaios chaos` end to end: real processes, real SIGKILL (the client's entry node included), exact answers."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from meshaios.chaos.plan import make_plan
from meshaios.chaos.runner import add_arguments, chaos

pytestmark = pytest.mark.system


def args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args(list(argv))


def test_plan_is_a_pure_function_of_the_seed_and_keeps_a_node_up() -> None:
    a = make_plan(5, nodes=3, kills=6, window=10)
    assert a == make_plan(5, nodes=3, kills=6, window=10)
    assert a != make_plan(6, nodes=3, kills=6, window=10)
    assert make_plan(1, nodes=4, kills=2, window=8, entry_kill=True)[0].node == 0


def test_bounded_chaos_run_with_the_entry_node_killed_loses_nothing() -> None:
    report = chaos(args("--nodes", "4", "--tasks", "2000", "--kills", "2", "--seed", "1", "--no-baseline"))
    assert any("kill    node0" in f for f in report["faults"]), report["faults"]
    a = report["account"]
    assert a["submitted"] == 2002
    assert (a["lost"], a["duplicated"], a["wrong"], a["failed"]) == (0, 0, 0, 0), a["examples"]
    assert report["failovers"] >= 1
    assert report["valid"]


def test_chaos_cli_exit_status_and_json(tmp_path: pytest.TempPathFactory) -> None:
    out = tmp_path / "report.json"  # type: ignore[operator]
    cmd = [sys.executable, "-m", "meshaios", "chaos", "--nodes", "3", "--tasks", "600", "--kills", "1"]
    cmd += ["--pauses", "1", "--seed", "3", "--window", "5", "--no-baseline", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "VALID" in proc.stdout
    report = json.loads(out.read_text())
    assert report["account"]["lost"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(10))
def test_ten_seeds_of_five_nodes_and_four_kills(seed: int) -> None:
    report = chaos(args("--nodes", "5", "--tasks", "10000", "--kills", "4", "--seed", str(seed), "--no-baseline"))
    assert report["valid"], report["account"]["examples"]


_AFTER = {"kill": 1.0, "pause": 1.0, "pause_entry": 1.0, "partition_with": 3.0, "partition_away": 3.0}


def test_plan_postpones_a_fault_it_cannot_start_yet_and_drops_none() -> None:
    """rev19i: with the entry node killed first, ``--entry-pauses 1`` made no pause (the plan dropped it)."""
    for seed in range(40):
        for kw in ({"kills": 2, "entry_pauses": 1}, {"kills": 4, "partitions": 1}, {"kills": 3, "pauses": 2,
                   "entry_pauses": 2, "partitions": 2}):  # fmt: skip
            plan = make_plan(seed, nodes=4, window=8, **kw)  # type: ignore[arg-type]
            kinds = [f.kind.removeprefix("partition_").replace("with", "partition").replace("away", "partition")
                     for f in plan]  # fmt: skip
            assert sorted(kinds) == sorted(
                ["kill"] * kw.get("kills", 0) + ["pause"] * kw.get("pauses", 0)
                + ["pause_entry"] * kw.get("entry_pauses", 0) + ["partition"] * kw.get("partitions", 0)
            ), (seed, kw, plan)  # fmt: skip
            assert [f.at for f in plan] == sorted(f.at for f in plan)
            # never every node down or paused at once, a partition only of a whole mesh, the entry node paused only
            # while up
            for f in plan:
                # (the plan's times are rounded to ms: 2 ms of slack)
                busy = [g for g in plan if g is not f and g.at <= f.at < g.at + g.duration + _AFTER[g.kind] - 0.002]
                if f.kind.startswith("partition"):
                    assert not busy, (seed, f, busy)
                else:
                    assert f.node not in {g.node for g in busy if not g.kind.startswith("partition")}, (seed, f)
                    assert len({g.node for g in busy} | {f.node}) < 4
    assert make_plan(1, nodes=1, kills=3, window=8, partitions=1) == []
