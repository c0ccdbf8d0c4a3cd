"""Node processes forked from one that has already imported meshaios: for test suites that start hundreds of nodes.

Why: ``python -m meshaios node`` spends about 1.3 s of CPU importing numpy, pyzmq, river and scipy before it binds
a socket, and a test suite on two cores starts several hundred nodes. A zygote pays that once: it imports the node's
modules, then forks a child per node that runs ``meshaios.cli.main(argv)`` -- the same entry point as ``python -m
meshaios node``, in a process of its own (its own pid and session, real signals, real sockets), with the log file as
its stdout and stderr, and the environment and working directory the caller gives.

The zygote starts no thread and opens no socket before it forks (checked at start: a fork copies only the thread that
calls it), so each child starts as ``python -m meshaios node`` would, minus the imports. Children are the zygote's,
not the caller's: the caller watches each through a pidfd (readable once the process has ended) and asks the zygote
for the exit status, which reaps it. A child that nobody asks about stays a zombie until the zygote exits, so its pid
is never reused while a test may still signal it.

The protocol is one JSON object per line each way over a pipe pair (``{"argv", "env", "cwd", "log"}`` -> ``{"pid"}``,
``{"wait": pid}`` -> ``{"code"}``); the zygote exits when its request pipe closes, so it never outlives its caller.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from typing import IO, TypedDict

PRELOAD = ("meshaios.cli", "meshaios.node", "meshaios.sched.model")


class SpawnRequest(TypedDict):
    argv: list[str]
    env: dict[str, str]
    cwd: str
    log: str


class Zygote:
    """One zygote process, started on first use; ``spawn`` forks a node from it. Thread-safe."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._to: IO[bytes] | None = None
        self._from: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self) -> None:
        """Start the zygote now (it starts on the first ``spawn`` otherwise)."""
        with self._lock:
            self._start()

    def _start(self) -> None:
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        self._proc = subprocess.Popen(
            [sys.executable, "-c", f"from meshaios.testing.zygote import serve; serve({req_r}, {rep_w})"],
            pass_fds=(req_r, rep_w),
            stdin=subprocess.DEVNULL,
        )
        os.close(req_r)
        os.close(rep_w)
        self._to = os.fdopen(req_w, "wb", buffering=0)
        self._from = os.fdopen(rep_r, "rb")

    def _ask(self, request: object) -> dict[str, int | str]:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._start()
            assert self._to is not None
            assert self._from is not None
            self._to.write(json.dumps(request).encode() + b"\n")
            line = self._from.readline()
        if not line:
            raise RuntimeError("the zygote ended")
        reply: dict[str, int | str] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"zygote: {reply['error']}")
        return reply

    def spawn(self, argv: list[str], env: dict[str, str], log: str) -> ForkedProcess:
        """Fork a child that runs ``meshaios <argv>`` in a new session, writing to ``log``."""
        request: SpawnRequest = {"argv": argv, "env": env, "cwd": os.getcwd(), "log": log}
        pid = int(self._ask(request)["pid"])
        return ForkedProcess(pid, self)

    def exit_code(self, pid: int) -> int:
        return int(self._ask({"wait": pid})["code"])

    def close(self) -> None:
        with self._lock:
            if self._to is not None:
                self._to.close()
                self._to = None
            if self._proc is not None:
                self._proc.wait(timeout=30)
                self._proc = None
            if self._from is not None:
                self._from.close()
                self._from = None


@dataclass
class ForkedProcess:
    """What ``LocalMesh`` uses of a ``subprocess.Popen``, for a zygote's child: pid, poll, wait, returncode."""

    pid: int
    zygote: Zygote
    returncode: int | None = None
    _fd: int = field(default=-1, repr=False)

    def __post_init__(self) -> None:
        self._fd = os.pidfd_open(self.pid)  # the child is a zombie until the zygote is asked: the pid is still its

    def poll(self) -> int | None:
        return self.wait(0.0) if self.returncode is None else self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        if self.returncode is not None:
            return self.returncode
        ready, _, _ = select.select([self._fd], [], [], timeout)
        if not ready:
            if timeout == 0.0:
                return None
            raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0.0)
        self.returncode = self.zygote.exit_code(self.pid)
        os.close(self._fd)
        return self.returncode


# ---- the zygote process -------------------------------------------------------------------------------------------


def _child(request: SpawnRequest, pipes: tuple[IO[bytes], ...]) -> None:
    """In the forked child: become ``meshaios <argv>`` and never return."""
    code = 1
    try:
        os.setsid()
        for pipe in pipes:  # the zygote's: a node holding them would keep its caller from seeing the zygote end
            pipe.close()
        log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        # what a fresh interpreter takes from its environment at start: PYTHONPATH's entries, after the working
        # directory ('' here, as for ``python -m``) and before the zygote's own (a benchmark's task modules, say)
        extra = [p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]
        sys.path[1:1] = extra
        sys.argv = ["meshaios", *request["argv"]]
        from meshaios.cli import main

        code = main(request["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve(req_fd: int, rep_fd: int) -> None:
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    if threading.active_count() != 1:  # a fork copies only the calling thread: the children would miss the others
        raise SystemExit(f"zygote: an import started a thread ({threading.enumerate()}); cannot fork safely")
    requests = os.fdopen(req_fd, "rb")
    replies = os.fdopen(rep_fd, "wb", buffering=0)
    for line in requests:
        msg = json.loads(line)
        try:
            if "wait" in msg:
                _, status = os.waitpid(int(msg["wait"]), 0)
                reply: dict[str, int | str] = {"code": os.waitstatus_to_exitcode(status)}
            else:
                pid = os.fork()
                if pid == 0:
                    _child(msg, (requests, replies))
                reply = {"pid": pid}
        except OSError as exc:
            reply = {"error": str(exc)}
        replies.write(json.dumps(reply).encode() + b"\n")
