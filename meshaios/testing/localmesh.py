"""Real ``meshaios node`` processes on loopback: for system tests, the demo, the benchmarks and chaos runs.

Each mesh gets its own token and state directory, every node binds 127.0.0.1 (its mDNS included), and every
process started here is ended here -- by PID, SIGKILL if it will not go -- even when the caller fails.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshaios.errors import MeshUnavailable
from meshaios.security import new_token
from meshaios.testing.managed import Managed
from meshaios.testing.zygote import ForkedProcess, Zygote

log = logging.getLogger(__name__)


#: Set by a test suite (tests/conftest.py): nodes are forked from this zygote instead of started with
#: ``python -m meshaios``, which saves each node its ~1.3 s of imports (``meshaios.testing.zygote``).
ZYGOTE: Zygote | None = None


def _zygote_build_fits(env: dict[str, str]) -> bool:
    """The zygote imported meshaios once, compiled or as Python as the suite's environment said (``MESHAIOS_PURE``,
    meshaios/native.py): a node asked for the other build is started as a process of its own (rev19m: forked, it
    ran the zygote's build whatever its environment said)."""
    from meshaios import native

    def pure(e: Mapping[str, str]) -> bool:
        return e.get(native.PURE_ENV, "") not in ("", "0")

    return pure(env) == pure(os.environ)


@dataclass
class NodeProc:
    index: int
    name: str
    proc: subprocess.Popen[bytes] | ForkedProcess
    log_path: Path
    address: str = ""
    node_id: str = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass
class LocalMesh(Managed):
    """``with LocalMesh(3) as mesh: Client(mesh.address(0), token=mesh.token)``."""

    nodes: int = 3
    insecure: bool = False
    discovery: bool = True
    workers: int = 2
    extra_args: list[str] = field(default_factory=list)
    per_node_args: dict[int, list[str]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    startup_timeout: float = 20.0
    fork: bool = True  # from ``ZYGOTE`` when one is set; False: always ``python -m meshaios node``
    token: str = field(default_factory=new_token)
    procs: list[NodeProc] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="meshaios-"))
        self.state = self.root / "state"
        self.token_file = self.root / "token"
        self.token_file.write_text(self.token + "\n")
        os.chmod(self.token_file, 0o600)

    def client_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["XDG_STATE_HOME"] = str(self.root / "xdg-state")
        env["MESHAIOS_PARENT_PID"] = str(os.getpid())  # nodes stop when this process dies (meshaios.cli.PARENT_ENV)
        env.update(self.env)
        return env

    def start(self) -> None:
        for i in range(self.nodes):
            self.spawn(i)
            if not self.discovery:
                self.wait_ready()  # later nodes need an earlier one's address as a seed
        self.wait_ready()

    def mesh_id(self) -> str:
        from meshaios.security import derive_keys, insecure_mesh_id

        return insecure_mesh_id(self._mesh_name()) if self.insecure else derive_keys(self.token).mesh_id

    def _mesh_name(self) -> str:
        return "local-" + hashlib.sha256(self.token.encode()).hexdigest()[:12]

    def _sweep_shm(self) -> None:
        """Every node is gone: what any of them left in /dev/shm (one SIGKILLed with a file unclaimed) goes too."""
        from meshaios.store import shm

        shm.sweep_mesh(self.mesh_id())

    def spawn(self, index: int, name: str | None = None) -> NodeProc:
        name = name or f"node{index}"
        cmd = [
            sys.executable, "-m", "meshaios", "node",
            "--bind", "127.0.0.1", "--port", "0",
            "--name", name,
            "--workers", str(self.workers),
            "--state-dir", str(self.state / name),
        ]  # fmt: skip
        if self.insecure:  # one name per LocalMesh: its nodes find each other by mDNS, and no other mesh's
            cmd += ["--insecure", "--mesh-name", self._mesh_name()]
        else:
            cmd += ["--token-file", str(self.token_file)]
        if not self.discovery:
            cmd.append("--no-discovery")
            seeds = [p.address for p in self.procs if p.alive() and p.address]
            for s in seeds[:2]:
                cmd += ["--join", s]
        cmd += self.extra_args
        cmd += self.per_node_args.get(index, [])
        log_path = self.root / f"{name}.log"
        proc: subprocess.Popen[bytes] | ForkedProcess
        if ZYGOTE is not None and self.fork and _zygote_build_fits(self.client_env()):
            proc = ZYGOTE.spawn(cmd[3:], self.client_env(), str(log_path))  # cmd[3:]: after "python -m meshaios"
        else:
            fh = open(log_path, "ab")  # noqa: SIM115 - the child owns it for its lifetime
            proc = subprocess.Popen(
                cmd, stdout=fh, stderr=subprocess.STDOUT, env=self.client_env(), start_new_session=True
            )
            fh.close()
        np = NodeProc(index, name, proc, log_path)
        existing = [p for p in self.procs if p.index == index]
        for p in existing:
            self.procs.remove(p)
        self.procs.append(np)
        self.procs.sort(key=lambda p: p.index)
        return np

    def wait_ready(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.startup_timeout)
        for p in self.procs:
            while not p.address:
                if not p.alive():
                    raise MeshUnavailable(f"{p.name} exited with {p.proc.returncode}:\n{self.log(p.index)[-3000:]}")
                for f in (self.state / p.name / "nodes").glob("*.json"):
                    with contextlib.suppress(OSError, ValueError):
                        info = json.loads(f.read_text())
                        if info.get("pid") == p.pid:
                            p.address, p.node_id = info["address"], info["node"]
                if not p.address:
                    if time.monotonic() > deadline:
                        raise MeshUnavailable(f"{p.name} did not start in time:\n{self.log(p.index)[-3000:]}")
                    time.sleep(0.05)

    def address(self, index: int = 0) -> str:
        return self.by_index(index).address

    def by_index(self, index: int) -> NodeProc:
        for p in self.procs:
            if p.index == index:
                return p
        raise KeyError(index)

    def log(self, index: int) -> str:
        with contextlib.suppress(OSError):
            return self.by_index(index).log_path.read_text(errors="replace")
        return ""

    def kill(self, index: int, sig: int = signal.SIGKILL) -> None:
        p = self.by_index(index)
        if p.alive():
            os.kill(p.pid, sig)
        if sig == signal.SIGKILL:
            p.proc.wait(timeout=10)

    def client(self, index: int = 0, **kwargs: Any) -> Any:
        from meshaios.client import Client

        if self.insecure:
            kwargs.setdefault("insecure", True)
        else:
            kwargs.setdefault("token", self.token)
        return Client(self.address(index), **kwargs)

    def close(self) -> None:
        for p in self.procs:
            if p.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            if p.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGKILL)
                p.proc.wait(timeout=10)
        self._sweep_shm()
        if os.environ.get("MESHAIOS_KEEP_LOGS"):
            log.warning("logs kept in %s", self.root)
        else:
            shutil.rmtree(self.root, ignore_errors=True)


def wait_for(cond: Any, timeout: float, interval: float = 0.05, what: str = "condition") -> Any:
    """Poll ``cond`` until it returns something truthy. Polling with a deadline, not a fixed sleep."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout} s")
        time.sleep(interval)


def pin_threads(pid: int | str, cpus: set[int]) -> None:
    """Put every thread of process ``pid`` (or ``"self"``) on ``cpus``: benchmarks and attack tests make the
    processes of one box stand in for separate machines. Threads started later inherit their creator's set."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except OSError:
            pass  # a thread that has just ended
