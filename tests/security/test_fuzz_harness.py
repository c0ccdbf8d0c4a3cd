"""The atheris harness (``tools/fuzz/fuzz_decode.py``) in bounded form, as CI runs it: without atheris, the seeds
and a few thousand deterministic mutations, in a subprocess so that a crash (a segfault in a C extension, as deep
nesting once caused) fails this test instead of killing the test run."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from meshaios.errors import WireError

HARNESS = Path(__file__).resolve().parents[2] / "tools" / "fuzz" / "fuzz_decode.py"


def _harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_decode", HARNESS)
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_harness_replays_seeds_and_mutations_without_a_crash() -> None:
    out = subprocess.run(
        [sys.executable, str(HARNESS), "--replay", "5000"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "no crash" in out.stdout


def test_frames_split_and_join_round_trip() -> None:
    h = _harness()
    for frames in ([b""], [b"a"], [b"head", b"", b"x" * 300], [b"1", b"2", b"3", b"4"]):
        assert h.split_frames(h.join_frames(frames)) == frames
    assert h.split_frames(b"") == [b""]
    assert len(h.split_frames(b"\x03\xff\xff")) >= 1  # lengths past the end are clipped, never an error


def test_harness_catches_any_exception_but_wire_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """The harness itself must not swallow what it is there to find."""
    h = _harness()

    def broken(frames: object) -> None:
        raise ValueError("a bug")

    monkeypatch.setattr(h, "decode", broken)
    with pytest.raises(ValueError, match="a bug"):
        h.one_input(b"\x00abc")

    def refusing(frames: object) -> None:
        raise WireError("fine")

    monkeypatch.setattr(h, "decode", refusing)
    h.one_input(b"\x00abc")
