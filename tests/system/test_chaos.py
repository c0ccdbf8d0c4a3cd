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
