"""The mesh token and everything derived from it.

One shared secret (the token) makes a mesh. From it every member derives the same CurveZMQ key pair; a node's ZAP
handler admits only that public key, so only token holders complete the handshake. The *mesh id*, which is
advertised in mDNS so that two meshes on one LAN never mix, is a hash of the public key: it identifies the mesh
without revealing anything that would let someone join it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

import zmq
from zmq.utils import z85

from meshaios.errors import ConfigError

log = logging.getLogger(__name__)

_KDF_CONTEXT = b"meshaios/curve/v1"
TOKEN_BYTES = 32


@dataclass(frozen=True)
class MeshKeys:
    """CURVE keys (Z85 bytes) and the public mesh id. ``repr`` never shows the secret."""

    public: bytes
    secret: bytes
    mesh_id: str

    def __repr__(self) -> str:
        return f"MeshKeys(mesh_id={self.mesh_id!r})"


def new_token() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(TOKEN_BYTES)).decode().rstrip("=")


def derive_keys(token: str) -> MeshKeys:
    """Derive the mesh key pair deterministically, so that no key material needs distributing besides the token."""
    token = token.strip()
    if len(token) < 16:
        raise ConfigError("mesh token is too short (at least 16 characters); make one with `meshaios init`")
    seed = hashlib.blake2b(token.encode(), key=_KDF_CONTEXT, digest_size=32).digest()
    secret = z85.encode(seed)
    public = zmq.curve_public(secret)
    mesh_id = hashlib.sha256(b"meshaios/mesh-id/v1" + public).hexdigest()[:16]
    return MeshKeys(public=public, secret=secret, mesh_id=mesh_id)


def insecure_mesh_id(name: str = "") -> str:
    """The id of the insecure mesh called ``name``: never like a secure one's, and one per name, so that two
    insecure meshes on one LAN never merge by accident (mDNS matches ids). A node started without a name makes up
    a random one (:func:`new_mesh_name`) and logs it."""
    return "insecure" + hashlib.sha256(b"meshaios/insecure" + name.encode()).hexdigest()[:8]


def new_mesh_name() -> str:
    return secrets.token_hex(6)


def exposure_warning(bind: str) -> str | None:
    """What an insecure node bound to ``bind`` exposes, if it is reachable from other machines; None on loopback."""
    host = bind.strip("[]")
    if host == "localhost" or host.startswith("127.") or host == "::1":
        return None
    where = "every network interface" if host in ("0.0.0.0", "*", "::", "") else host
    return (
        f"insecure node bound to {where}: anyone who can reach its port can submit tasks that run the functions "
        "it allows as this user, read every result and object, and see all traffic in clear text (no token, no "
        "encryption); use a mesh token (`meshaios init`) anywhere but loopback"
    )


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "meshaios"


def private_runtime_dir(create: bool = False) -> Path | None:
    """This user's directory for local sockets (a node's ipc endpoint, docs/protocol.md): ``$XDG_RUNTIME_DIR/meshaios``,
    else ``/tmp/meshaios-<uid>``. None unless it is a real directory (not a link) owned by this user that no other
    user may enter (no group or other bits): only then is a socket in it reachable by this user alone. ``create``
    makes it (0700) if it is missing; an existing one with looser rights is refused, never changed."""
    if not hasattr(os, "getuid"):  # pragma: no cover - no unix sockets to place
        return None
    base = os.environ.get("XDG_RUNTIME_DIR") or ""
    path = Path(base) / "meshaios" if base.startswith("/") else Path(f"/tmp/meshaios-{os.getuid()}")
    try:
        if create:
            with contextlib.suppress(FileExistsError):
                path.mkdir(mode=0o700)
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        if create:
            log.warning(
                "%s is not a directory of this user's alone (owner %d, mode %03o): no local socket for clients here",
                path, st.st_uid, stat.S_IMODE(st.st_mode),
            )  # fmt: skip
        return None
    return path


def default_token_file() -> Path:
    return config_dir() / "token"


def write_token(path: Path, token: str, *, overwrite: bool = False) -> None:
    """Write with 0600 from the first byte: the file is never world-readable, not even for an instant."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError as exc:
        raise ConfigError(
            f"{path} exists already; use --force to replace it (every node then needs the new one)"
        ) from exc
    # before the first byte: with overwrite=True an existing file keeps its old (maybe 0644) mode through O_TRUNC
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")


def read_token(path: Path | None = None) -> str | None:
    """The token from ``MESHAIOS_TOKEN``, else from the file; ``None`` when there is none."""
    env = (os.environ.get("MESHAIOS_TOKEN") or "").strip()
    if env:  # set but blank counts as unset, rather than as an empty token
        return env
    if path is None:
        env_path = os.environ.get("MESHAIOS_TOKEN_FILE")
        path = Path(env_path) if env_path else default_token_file()
    try:
        text = path.read_text().strip()
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read token file {path}: {exc}") from exc
    if text and mode & (stat.S_IRWXG | stat.S_IRWXO):
        # like ssh with a private key, but a warning: a secret mounted read-only by a container runtime is 0444
        log.warning(
            "token file %s can be read by other users (mode %03o): anyone who reads it can run code on every node "
            "of the mesh; chmod 600 it",
            path,
            stat.S_IMODE(mode),
        )
    return text or None
