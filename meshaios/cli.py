"""The ``meshaios`` command. The only place that installs uvloop and configures logging handlers."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshaios.errors import ConfigError, MeshError

if TYPE_CHECKING:
    from meshaios.wire.messages import StatusData, StatusReply

log = logging.getLogger("meshaios.cli")


def _setup_logging(level: str, fmt: str = "text") -> None:
    from meshaios import logs

    try:
        logs.setup(level, fmt)
    except ValueError as exc:
        raise ConfigError(f"log_format: {exc}") from None


def cmd_init(args: argparse.Namespace) -> int:
    from meshaios.security import default_token_file, derive_keys, new_token, write_token

    path = Path(args.token_file) if args.token_file else default_token_file()
    token = new_token()
    write_token(path, token, overwrite=args.force)
    keys = derive_keys(token)
    print(f"mesh token written to {path} (mode 0600); mesh id {keys.mesh_id}")
    if args.print:
        print(token)
    else:
        print("copy this file to every machine of the mesh (or use --print to see the token)")
    return 0


def _size(text: str | None) -> int | None:
    if text is None:
        return None
    from meshaios.devices.detect import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise SystemExit(f"meshaios: bad size {text!r}: {exc}") from None


def _raise_open_files_limit() -> None:
    """Each peer is a socket: lift the soft open-files limit to the hard one, so the outbound cap can grow."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))
    except (ImportError, ValueError, OSError):
        pass


def _freeze_startup_objects(_node: object) -> None:
    """Once the node is up: every object alive now (modules, classes, functions, the node's own structures) goes to
    the collector's permanent generation, which it never traverses again. A full (generation-2) collection of a
    running node walked all of them each time: ~44 ms, in the middle of whatever task was running
    (docs/performance.md section 21)."""
    import gc

    gc.freeze()


def cmd_node(args: argparse.Namespace) -> int:
    from meshaios.config import load_node_config
    from meshaios.node import Node

    cli = {
        "name": args.name,
        "bind": args.bind,
        "port": args.port,
        "join": tuple(args.join or ()),
        "token_file": args.token_file,
        "insecure": True if args.insecure else None,
        "mesh_name": args.mesh_name,
        "workers": args.workers,
        "discovery": False if args.no_discovery else None,
        "log_level": args.log_level,
        "log_format": args.log_format,
        "placement": args.placement,
        "steal": False if args.no_steal else None,
        "late_binding": None if args.late_binding is None else args.late_binding == "on",
        "fake_gpus": tuple(args.fake_gpu or ()),
        "state_dir": args.state_dir,
        "allowed_modules": tuple(args.allow_module or ()),
        "allowed_functions": tuple(args.allow_function or ()),
        "memory_limit": _size(args.memory_limit),
        **({"memory_lease": args.memory_lease} if args.memory_lease is not None else {}),
        "spill_dir": args.spill_dir,
        "no_gpu": True if args.no_gpu else None,
        "gpu_slots": args.gpu_slots,
        "gpu_choice": True if args.gpu_choice else None,
        "http": False if args.no_http else None,
        "http_bind": args.http_bind,
        "http_port": args.http_port,
        "fault_injection": True if args.fault_injection else None,
        "shm": False if args.no_shm else None,
        "shm_fault": args.shm_fault,
    }
    config = load_node_config(cli, args.config)
    _setup_logging(config.log_level, config.log_format)
    _raise_open_files_limit()
    from meshaios.store.heap import one_arena, small_pages_for_arrays

    one_arena()  # before the node's threads start: free pages at the top of a thread's arena outlive malloc_trim
    if small_pages_for_arrays():  # a VM that hands free memory back to its host: fresh huge pages cost the most
        logging.getLogger("meshaios.node").info("numpy arrays on 4 KiB pages: this VM reports free memory to its host")
    node = Node(config)
    from meshaios import logs
    from meshaios.ids import short

    logs.set_node(f"{short(node.node_id)}/{node.name}")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, node.stop)
        watch = asyncio.create_task(_exit_with_parent(node.stop)) if os.environ.get(PARENT_ENV) else None
        try:
            await node.run(on_ready=_freeze_startup_objects)
        finally:
            if watch is not None:
                watch.cancel()

    import errno

    import uvloop
    import zmq

    try:
        uvloop.run(main())
    except zmq.ZMQError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        where = f"{config.bind or ('127.0.0.1' if config.insecure else '0.0.0.0')}:{config.port}"
        raise ConfigError(
            f"{where} is already in use (another meshaios node?): stop it, or give this one another port "
            "with --port N (--port 0 picks a free one)"
        ) from None
    return 0


#: Set by ``LocalMesh`` (and anyone who starts nodes for a while): the node stops when the process with this pid has
#: ended. Nodes run in a session of their own, so a killed test run would otherwise leave them behind.
PARENT_ENV = "MESHAIOS_PARENT_PID"


async def _exit_with_parent(stop: Any) -> None:
    """Call ``stop`` when the process ``$MESHAIOS_PARENT_PID`` ends: a pidfd becomes readable then (Linux 5.3+)."""
    log = logging.getLogger("meshaios.node")
    parent = int(os.environ[PARENT_ENV])
    try:
        fd = os.pidfd_open(parent)
    except ProcessLookupError:
        fd = -1
    except OSError as exc:  # no pidfd here: the node runs on without the watch
        log.warning("cannot watch process %d (%s): this node will not stop with it", parent, exc)
        return
    if fd >= 0:
        ended = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_reader(fd, ended.set)
        try:
            await ended.wait()
        finally:
            loop.remove_reader(fd)
            os.close(fd)
    log.warning("process %d, which started this node, has ended: stopping", parent)
    stop()


def _status_data(args: argparse.Namespace) -> StatusReply:
    from meshaios.client import Client

    with Client(
        args.address, token_file=args.token_file, insecure=args.insecure, connect_timeout=args.timeout, spread=1
    ) as c:  # a status query owns no tasks: one connection
        return c.status(timeout=args.timeout)


def render_status(data: StatusData, width: int = 80) -> Any:
    """The status screen (see meshaios.status_view): fits ``width`` columns, 80 included."""
    from meshaios.status_view import render

    return render(data, width)


def cmd_status(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # a pipe or a file: never squeeze the table to 80 columns
    data: StatusReply | None = None
    tried: set[str] = set()
    while True:
        try:
            data = _status_data(args)
            tried.clear()
        except MeshError as exc:
            # --watch outlives the node it asks: the next live member it knew of answers instead
            tried.add(str(args.address or (data["node"].get("addr") if data is not None else None)))
            fallback = _another_member(data, tried) if args.watch else None
            if fallback is None:
                raise
            console.print(f"[yellow]{exc}; asking {fallback} instead[/yellow]")
            args.address = fallback
            continue
        if args.json:
            print(json.dumps(data, indent=2, default=str))
        else:
            if args.watch:
                console.clear()
            console.print(render_status(data, console.width))
        if not args.watch:
            return 0
        time.sleep(args.watch)


def _another_member(data: StatusData | None, tried: set[str]) -> str | None:
    """An alive member of the last status seen that has not failed to answer since."""
    if data is None:
        return None
    for m in data["members"]:
        if m.get("state") == "alive" and str(m.get("addr")) not in tried:
            return str(m.get("addr"))
    return None


def cmd_chaos(args: argparse.Namespace) -> int:
    from meshaios.chaos.runner import chaos, render

    report = chaos(args)
    print(render(report))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
    return 0 if report["valid"] else 1


def build_parser() -> argparse.ArgumentParser:
    from meshaios import __version__

    p = argparse.ArgumentParser(prog="meshaios", description="A leaderless compute mesh for AI workloads.")
    p.add_argument("--version", action="version", version=f"meshaios {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    sp = sub.add_parser("init", help="make a mesh token")
    sp.add_argument("--token-file", help="where to write it (default: ~/.config/meshaios/token)")
    sp.add_argument("--force", action="store_true", help="replace an existing token")
    sp.add_argument("--print", action="store_true", help="also print the token")
    sp.set_defaults(func=cmd_init)

    sp = sub.add_parser("node", help="run a node of the mesh")
    sp.add_argument("--name", help="human name (default: host name)")
    sp.add_argument("--bind", help="address to bind (default 0.0.0.0; 127.0.0.1 with --insecure)")
    sp.add_argument("--port", type=int, help="port (default 5577; 0 picks a free one)")
    sp.add_argument("--join", action="append", metavar="HOST:PORT", help="static seed (repeatable)")
    sp.add_argument("--token-file", help="mesh token file (default: ~/.config/meshaios/token or MESHAIOS_TOKEN)")
    sp.add_argument("--workers", type=int, help="task threads (default: one per core)")
    sp.add_argument("--insecure", action="store_true", help="no token, no encryption, no pickled code")
    sp.add_argument(
        "--mesh-name", help="insecure meshes: nodes with the same name find each other (default: a random name, logged)"
    )
    sp.add_argument("--no-discovery", action="store_true", help="no mDNS: static seeds only")
    sp.add_argument(
        "--placement", help="placement policy: least-loaded (default), eft (learned), power-of-two, round-robin, random"
    )
    sp.add_argument("--no-steal", action="store_true", help="idle nodes do not take queued work from busy ones")
    sp.add_argument("--late-binding", choices=("on", "off"),
                    help="eft may keep a task waiting for a busy node that finishes it much sooner (default on)")
    sp.add_argument("--fake-gpu", action="append", metavar="SPEC", help="fake accelerator, e.g. speed=8,memory=16GiB")
    sp.add_argument("--memory-limit", help="object store memory before spilling to disk, e.g. 4GiB (default: half RAM)")
    sp.add_argument(
        "--memory-lease", type=float, help="seconds a silent client keeps what it held before it is freed (30)"
    )
    sp.add_argument("--spill-dir", help="where objects beyond the memory limit go (default: under the state dir)")
    sp.add_argument("--no-gpu", action="store_true", help="do not look for GPUs (cupy)")
    sp.add_argument("--gpu-slots", type=int, help="GPU tasks each GPU runs at once, a CUDA stream each (default 1)")
    sp.add_argument("--gpu-choice", action="store_true",
                    help="with --placement eft: kernel tasks that do not ask for a GPU may run on one (EFT's pick)")
    sp.add_argument(
        "--allow-module", action="append", metavar="MOD",
        help="run top-level functions of this module (exactly; MOD.* adds its submodules); repeatable",
    )  # fmt: skip
    sp.add_argument(
        "--allow-function", action="append", metavar="MOD:QUALNAME", help="run exactly this function; repeatable"
    )
    sp.add_argument("--state-dir", help="where the node advertises itself to local clients")
    sp.add_argument("--http-bind", help="dashboard and /metrics address (default 127.0.0.1; else a token is needed)")
    sp.add_argument("--http-port", type=int, help="dashboard and /metrics port (default 0: a free port)")
    sp.add_argument("--fault-injection", action="store_true", help=argparse.SUPPRESS)  # meshaios chaos only
    sp.add_argument("--shm-fault", choices=("keep", "drop", "mode", "name"), help=argparse.SUPPRESS)  # tests
    sp.add_argument(
        "--no-shm", action="store_true", help="move objects to nodes of this machine over the socket, not /dev/shm"
    )
    sp.add_argument("--no-http", action="store_true", help="no dashboard, no /api/status, no /metrics")
    sp.add_argument("--config", help="config file (TOML, [node] table)")
    sp.add_argument("--log-level", help="debug, info, warning, error")
    sp.add_argument("--log-format", choices=("text", "json"),
                    help="text (default) or json: one JSON object a line, for log collectors")
    sp.set_defaults(func=cmd_node)

    sp = sub.add_parser("status", help="the mesh as a node sees it")
    sp.add_argument("address", nargs="?", help="tcp://host:port of a node (default: a local node)")
    sp.add_argument("--token-file")
    sp.add_argument("--insecure", action="store_true")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.add_argument("--watch", type=float, nargs="?", const=2.0, help="refresh every N seconds")
    sp.add_argument("--timeout", type=float, default=5.0)
    sp.set_defaults(func=cmd_status)

    sub.add_parser("sim", help="discrete-event simulation of a large mesh (see `meshaios sim --help`)")

    sp = sub.add_parser("chaos", help="kill nodes of a local mesh during a job with a known answer; account for it")
    from meshaios.chaos.runner import add_arguments

    add_arguments(sp)
    sp.set_defaults(func=cmd_chaos)
    return p


def _whole_writes() -> None:
    """``PYTHONUNBUFFERED=1`` puts ``sys.stdout`` straight on the file descriptor, and a write to a pipe that is
    full may be cut short (a signal, a reader that is slow): the raw file reports it, ``print`` drops the rest.
    ``meshaios status --json`` lost everything past 64 KiB that way. A buffered writer loops until all is out."""
    out = sys.stdout
    if isinstance(out, io.TextIOWrapper) and isinstance(out.buffer, io.RawIOBase):
        sys.stdout = io.TextIOWrapper(
            io.BufferedWriter(out.buffer), encoding=out.encoding, errors=out.errors, line_buffering=True
        )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _whole_writes()
    if argv[:1] == ["sim"]:  # the simulator has its own argument parser
        from meshaios.sim.cli import main as sim_main

        return sim_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        rc: int = args.func(args)
        return rc
    except MeshError as exc:
        print(f"meshaios: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
