"""The ``meshaios`` command. The only place that installs uvloop and configures logging handlers."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

from meshaios.errors import MeshError

log = logging.getLogger("meshaios.cli")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


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


def _return_freed_memory() -> None:
    """Make glibc hand large freed buffers back to the OS at once.

    By default glibc raises its mmap threshold after the first large free, so later array-sized buffers come from
    the heap and stay in RSS after they are freed: a node that shuffled 1 GB would keep ~1 GB resident. Fixing
    the threshold keeps every buffer over 64 KiB in its own mapping, unmapped on free (Dask documents the same
    problem and the same knob).
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_mmap_threshold = -3
        libc.mallopt(m_mmap_threshold, 64 * 1024)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


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
        "workers": args.workers,
        "discovery": False if args.no_discovery else None,
        "log_level": args.log_level,
        "placement": args.placement,
        "steal": False if args.no_steal else None,
        "late_binding": None if args.late_binding is None else args.late_binding == "on",
        "fake_gpus": tuple(args.fake_gpu or ()),
        "state_dir": args.state_dir,
        "allowed_modules": tuple(args.allow_module or ()),
        "memory_limit": _size(args.memory_limit),
        "spill_dir": args.spill_dir,
        "no_gpu": True if args.no_gpu else None,
        "http": False if args.no_http else None,
        "http_bind": args.http_bind,
        "http_port": args.http_port,
    }
    config = load_node_config(cli, args.config)
    _setup_logging(config.log_level)
    _return_freed_memory()
    _raise_open_files_limit()
    node = Node(config)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, node.stop)
        await node.run()

    import uvloop

    uvloop.run(main())
    return 0


def _status_data(args: argparse.Namespace) -> dict[str, Any]:
    from meshaios.client import Client

    with Client(args.address, token_file=args.token_file, insecure=args.insecure, connect_timeout=args.timeout) as c:
        return c.status(timeout=args.timeout)


def render_status(data: dict[str, Any]) -> Any:
    from rich.table import Table

    me = data["node"]
    table = Table(
        title=f"meshaios mesh {me['mesh']} as seen by {me['name']} ({me['id'][:8]})"
        + ("" if me.get("secure") else "  [red]INSECURE[/red]"),
        title_justify="left",
    )
    if me.get("http"):
        table.caption = f"dashboard of {me['name']}: {me['http']}/ (on its machine)"
        table.caption_justify = "left"
    cols = ("node", "name", "address", "state", "devices", "workers", "running", "queued", "store", "since/uptime")
    for col in cols:
        table.add_column(col, justify="left" if col in cols[:5] else "right", no_wrap=True)
    colors = {"alive": "green", "suspect": "yellow", "dead": "red", "left": "dim"}
    mine = (me["store"]["bytes_in_memory"] if isinstance(me.get("store"), dict) else 0,)
    rows = [
        (
            me["id"],
            me["name"],
            me["addr"],
            "alive",
            me["devices"],
            me["workers"],
            me.get("running", 0),
            me["queued"],
            *mine,
            me["uptime"],
            True,
        )
    ]
    rows += [
        (
            m["id"],
            m["name"],
            m["addr"],
            m["state"],
            m["devices"],
            m["workers"],
            m.get("running", 0),
            m["queued"],
            m.get("store_bytes", 0),
            m["since"],
            False,
        )
        for m in sorted(data["members"], key=lambda m: (m["state"], m["name"]))
    ]
    for nid, name, addr, state, dev, w, r, q, mem, since, self_ in rows:
        c = colors.get(state, "white")
        table.add_row(
            nid[:8] + ("*" if self_ else ""),
            name,
            addr.split("://", 1)[-1],
            f"[{c}]{state}[/{c}]",
            dev or "cpu",
            str(w),
            str(r),
            str(q),
            _bytes(mem),
            _duration(since),
        )
    return table


def _bytes(n: Any) -> str:
    n = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _duration(s: float) -> str:
    s = max(0.0, float(s))
    if s < 120:
        return f"{s:.0f}s"
    if s < 7200:
        return f"{s / 60:.0f}m"
    return f"{s / 3600:.1f}h"


def cmd_status(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # a pipe or a file: never squeeze the table to 80 columns
    while True:
        data = _status_data(args)
        if args.json:
            print(json.dumps(data, indent=2, default=str))
        else:
            if args.watch:
                console.clear()
            console.print(render_status(data))
        if not args.watch:
            return 0
        time.sleep(args.watch)


def cmd_chaos(args: argparse.Namespace) -> int:
    from meshaios.chaos.runner import chaos, render

    report = chaos(args)
    print(render(report))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
    return 0 if report["valid"] else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="meshaios", description="A leaderless compute mesh for AI workloads.")
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
    sp.add_argument("--no-discovery", action="store_true", help="no mDNS: static seeds only")
    sp.add_argument(
        "--placement", help="placement policy: least-loaded (default), eft (learned), power-of-two, round-robin, random"
    )
    sp.add_argument("--no-steal", action="store_true", help="idle nodes do not take queued work from busy ones")
    sp.add_argument("--late-binding", choices=("on", "off"),
                    help="eft may keep a task waiting for a busy node that finishes it much sooner (default on)")
    sp.add_argument("--fake-gpu", action="append", metavar="SPEC", help="fake accelerator, e.g. speed=8,memory=16GiB")
    sp.add_argument("--memory-limit", help="object store memory before spilling to disk, e.g. 4GiB (default: half RAM)")
    sp.add_argument("--spill-dir", help="where objects beyond the memory limit go (default: under the state dir)")
    sp.add_argument("--no-gpu", action="store_true", help="do not look for GPUs (cupy)")
    sp.add_argument("--allow-module", action="append", metavar="MOD", help="only run functions from these modules")
    sp.add_argument("--state-dir", help="where the node advertises itself to local clients")
    sp.add_argument("--http-bind", help="dashboard and /metrics address (default 127.0.0.1; else a token is needed)")
    sp.add_argument("--http-port", type=int, help="dashboard and /metrics port (default 0: a free port)")
    sp.add_argument("--no-http", action="store_true", help="no dashboard, no /api/status, no /metrics")
    sp.add_argument("--config", help="config file (TOML, [node] table)")
    sp.add_argument("--log-level", help="debug, info, warning, error")
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
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
