"""Settings as frozen dataclasses, filled from (in rising precedence) a config file, environment, command line.

No global mutable state: a Node gets its whole configuration in one object, so several nodes with different
settings can run in one process (tests, the simulator).
"""

from __future__ import annotations

import os
import socket
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from meshaios.errors import ConfigError
from meshaios.membership.swim import SwimConfig
from meshaios.store.stream import MAX_FRAME_BYTES
from meshaios.tasks.owner import OwnerConfig

DEFAULT_PORT = 5577


@dataclass(frozen=True)
class NodeConfig:
    name: str = ""
    bind: str | None = None  # None: 127.0.0.1 when insecure, 0.0.0.0 otherwise
    port: int = DEFAULT_PORT
    join: tuple[str, ...] = ()
    token_file: str | None = None
    token: str | None = field(default=None, repr=False)
    insecure: bool = False
    mesh_name: str = ""  # insecure meshes: nodes with the same name form one mesh by mDNS; empty: a random name
    workers: int = 0  # 0: one per core
    process_workers: int = 0  # 0: as many as workers, started on first use
    discovery: bool = True
    http: bool = True  # serve the dashboard, /api/status and /metrics
    http_bind: str = "127.0.0.1"  # off loopback, the dashboard token is required
    http_port: int = 0  # 0: a free port, written to the node file and shown by `meshaios status`
    log_level: str = "info"
    log_format: str = "text"  # text or json (one object a line)
    max_frame_bytes: int = MAX_FRAME_BYTES  # twice a stream chunk: larger messages travel as streams (store/stream.py)
    max_header_bytes: int = 64 << 20  # msgpack header of one message
    max_frames: int = 1 << 16  # frames in one message
    max_items: int = 1 << 20  # longest array or map in a header
    slowdown: float = 1.0  # testing aid: >1 makes every task take that many times as long (a slower machine)
    handshake_ivl: float = 5.0  # seconds a CURVE handshake may take before the connection is dropped
    max_unproven: int = 0  # connections not yet authenticated; beyond it the oldest is closed (0: from open files)
    local_ipc: bool = True  # also listen on a unix socket of this user's alone, for local clients (docs/protocol.md)
    # The fence (tasks/allowlist.py). Insecure: registered kernels, meshaios's own task functions and these only. With a
    # token, empty both: anything (token holders may send pickles anyway); set either: the same fence as insecure.
    allowed_modules: tuple[str, ...] = ()  # "pkg" exactly, "pkg.sub" exactly, "pkg.*" for pkg and its submodules
    allowed_functions: tuple[str, ...] = ()  # "module:qualname" exactly (attribute chains and private names too)
    placement: str = "least-loaded"
    steal: bool = True  # idle nodes take queued work from busy ones (sched/stealing.py); --no-steal turns it off
    late_binding: bool = OwnerConfig().late_binding  # eft may keep a task waiting for a busy, faster node
    # seconds a client with work here may be silent (it pings every 0.25 s) before its work is held back: one cut
    # off by a partition, or failed over elsewhere, gets little run that nobody will collect; 0: no leases
    client_lease: float = 1.0
    fault_injection: bool = False  # testing aid (meshaios chaos): obey FAULT messages that cut links on loopback
    # seconds a client may be silent before everything it held here is released (its futures and puts): one that
    # crashed or was killed never says goodbye; 0: never
    memory_lease: float = 30.0
    fake_gpus: tuple[str, ...] = ()
    no_gpu: bool = False  # skip looking for real GPUs (cupy)
    gpu_slots: int = 1  # GPU tasks each GPU runs at once: a task thread and a CUDA stream each
    # --placement eft: a kernel task that does not ask for a GPU may run on one where EFT predicts it finishes sooner
    gpu_choice: bool = False
    memory_limit: int = 0  # object store bytes before spilling; 0: half of RAM
    spill_dir: str | None = None
    inline_bytes: int = 64 << 10  # results up to this size travel inline to the owner; larger stay put
    fetch_bytes_in_flight: int = 64 << 20
    shm: bool = True  # objects >= 1 MiB move between nodes of one machine through /dev/shm (store/shm.py)
    # testing aid, obeyed only with fault_injection: "keep" (write a file for a fetch, never answer), "drop" (ignore
    # shared-memory answers), "mode" (write files 0644): the crash and refusal paths of store/shm.py, on demand
    shm_fault: str = ""
    state_dir: str | None = None
    swim: SwimConfig = field(default_factory=SwimConfig)
    owner: OwnerConfig = field(default_factory=OwnerConfig)

    @property
    def bind_address(self) -> str:
        if self.bind:
            return self.bind
        return "127.0.0.1" if self.insecure else "0.0.0.0"

    @property
    def worker_count(self) -> int:
        return self.workers or len(os.sched_getaffinity(0)) or 1

    @property
    def display_name(self) -> str:
        return self.name or socket.gethostname()


_ENV_PREFIX = "MESHAIOS_"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})
_SCALARS = {f.name: f for f in fields(NodeConfig) if f.name not in ("swim", "owner")}


def _coerce(name: str, value: Any) -> Any:
    f = _SCALARS[name]
    kind = str(f.type)
    if "tuple" in kind:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"setting {name} wants a list, got {value!r}")
        return tuple(str(v) for v in value)
    if kind.startswith("bool"):
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        # a typo ("ture", "enabled") silently meaning False could turn security off: refuse it
        raise ConfigError(f"setting {name} wants true or false, got {value!r}")
    if kind.startswith("int"):
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ConfigError(f"setting {name} wants an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"setting {name} wants an integer, got {value!r}") from None
    if kind.startswith("float"):
        if isinstance(value, bool):
            raise ConfigError(f"setting {name} wants a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"setting {name} wants a number, got {value!r}") from None
    return value if value is None else str(value)


def state_dir(config: NodeConfig | None = None) -> Path:
    if config is not None and config.state_dir:
        return Path(config.state_dir)
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "meshaios"


def load_node_config(cli: dict[str, Any], config_file: str | None = None) -> NodeConfig:
    """File ``[node]`` table < ``MESHAIOS_*`` environment < explicit command-line values (non-None)."""
    values: dict[str, Any] = {}
    path = Path(config_file) if config_file else None
    if path is None:
        env_file = os.environ.get("MESHAIOS_CONFIG")
        default = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "meshaios" / "config.toml"
        path = Path(env_file) if env_file else (default if default.exists() else None)
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        table = data.get("node", {})
        if not isinstance(table, dict):
            raise ConfigError(f"[node] in {path} must be a table")
        for k, v in table.items():
            key = k.replace("-", "_")
            if key not in _SCALARS:
                raise ConfigError(f"unknown setting {k!r} in {path}")
            values[key] = _coerce(key, v)
    for key in _SCALARS:
        if key == "token":
            continue  # the token itself comes from MESHAIOS_TOKEN via security.read_token
        env = os.environ.get(_ENV_PREFIX + key.upper())
        if env is not None:
            values[key] = _coerce(key, env)
    for key, v in cli.items():
        if v is None or key not in _SCALARS:
            continue
        if isinstance(v, (list, tuple)) and not v:
            continue
        values[key] = _coerce(key, v)
    return replace(NodeConfig(), **values)
