"""Same-host transfers through shared memory: objects handed to a node on this machine as a file in ``/dev/shm``.

Two nodes on one machine need not move an object through TCP loopback and CurveZMQ (64 MB/s for one 200 MB
message on the reference machine, against 13.7 GB/s for a memcpy). The holder writes the object's buffers once into
a new file of this user's shared-memory directory and answers the ``fetch`` with the file's name and the buffer
sizes over the usual authenticated link; the receiver opens the file, checks that this user made it (owner, mode
0600, a regular file of the announced size, a name of this mesh and of the node that answered), maps it read-only,
closes and unlinks it, and the arrays decode as zero-copy views of the mapping. The pages go back to the kernel
when the last array that uses them is gone.

Who knows what: nodes publish a host id (``host_id``) in their SWIM meta; a node asks for shared memory only from a
holder with its own host id, and a holder writes a file only for a node with its own. The host id hashes the
kernel's boot id, the user id and the device number of ``/dev/shm``: two network namespaces of one machine share
one (same kernel, same ``/dev/shm``), two containers with a ``/dev/shm`` each do not.

Nothing outlives its use for long:
- the receiver unlinks a file as soon as it has mapped it;
- the holder unlinks the files nobody claimed after ``CLAIM_TIMEOUT`` seconds, or at once when their receiver dies,
  and all of its own when it stops;
- every node holds an exclusive ``flock`` on a lock file of its own while it runs; any node of the same mesh (at
  start, then every ``SWEEP_EVERY`` seconds) removes the files of a node whose lock it can take: that node is
  dead (the kernel drops a process's locks when it dies, SIGKILL included). Files of another mesh are never
  touched (names begin with the mesh's tag), nor another user's (a directory per user, mode 0700).

Pure parts (``layout``, ``parse_ref``, ``check_file``) are unit-tested; ``ShmArea`` is the node's side.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import mmap
import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshaios.errors import WireError
from meshaios.wire.payload import Payload

if TYPE_CHECKING:
    from meshaios.wire.messages import ShmWire

log = logging.getLogger(__name__)

SHM_ROOT = Path("/dev/shm")
MIN_BYTES = 1 << 20  # buffers of at least this many bytes go through shared memory; smaller ones keep the socket
CLAIM_TIMEOUT = 30.0  # seconds a written file may wait for its receiver before its holder removes it
SWEEP_EVERY = 5.0  # seconds between looks for the files of dead nodes of this mesh
ALIGN = 64  # each buffer starts at a multiple of this many bytes in the file (numpy views stay aligned)
MAX_BUFFERS = 1 << 16  # buffers in one file (the codec's frame limit)
# <mesh tag>.<node or client id>.<instance>.<128 random bits>, and <mesh tag>.<id>.<instance>.lock: the instance
# (random per process) keeps two processes apart even if they share an id (tests seed their ids)
_NAME = re.compile(r"^([0-9a-f]{12})\.([0-9A-Za-z_-]{1,64})\.([0-9a-f]{8})\.([0-9a-f]{32})$")
_LOCK = re.compile(r"^([0-9a-f]{12})\.([0-9A-Za-z_-]{1,64})\.([0-9a-f]{8})\.lock$")


class ShmError(Exception):
    """A shared-memory file that cannot or must not be used; the fetch falls back to the socket."""


def host_id(root: Path = SHM_ROOT) -> str:
    """Same for every process of this user on this kernel that sees this ``root``; "" where there is none."""
    try:
        st = os.stat(root)
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""
    if not stat.S_ISDIR(st.st_mode):
        return ""
    raw = f"{boot}:{os.getuid()}:{st.st_dev}".encode()
    return hashlib.sha256(raw).hexdigest()[:16]


def mesh_tag(mesh_id: str) -> str:
    """The prefix of every file a mesh's nodes make: nodes never touch another mesh's files."""
    return hashlib.sha256(b"meshaios-shm:" + mesh_id.encode()).hexdigest()[:12]


def user_dir(root: Path = SHM_ROOT) -> Path:
    return root / f"meshaios-{os.getuid()}"


def layout(sizes: list[int]) -> tuple[list[int], int]:
    """Offsets of buffers of these sizes in one file, each aligned to ``ALIGN``, and the file's size."""
    offsets: list[int] = []
    pos = 0
    for s in sizes:
        pos = -(-pos // ALIGN) * ALIGN
        offsets.append(pos)
        pos += s
    return offsets, pos


def buffer_bytes(payload: Payload) -> int:
    return sum(memoryview(b).nbytes for b in payload.buffers)


@dataclass(frozen=True, slots=True)
class ShmRef:
    """What an ``obj`` answer carries instead of ``val``: ``{"name", "blob", "sizes"}``."""

    name: str
    blob: bytes
    sizes: list[int]

    def to_wire(self) -> ShmWire:
        return {"name": self.name, "blob": self.blob, "sizes": self.sizes}


def parse_ref(raw: Any, tag: str, src: str) -> ShmRef:
    """The ``shm`` field of an ``obj`` answer from node ``src`` of the mesh tagged ``tag``, checked."""
    if not isinstance(raw, dict) or set(raw) != {"name", "blob", "sizes"}:
        raise WireError("obj: shm must be a map of name, blob and sizes")
    name, blob, sizes = raw["name"], raw["blob"], raw["sizes"]
    if not isinstance(name, str) or not isinstance(blob, bytes) or not isinstance(sizes, list):
        raise WireError("obj: shm must be a map of name (str), blob (bytes) and sizes (list)")
    if len(sizes) > MAX_BUFFERS or not all(type(s) is int and s >= 0 for s in sizes):
        raise WireError("obj: shm sizes must be at most 65536 byte counts")
    m = _NAME.match(name)
    if m is None or m.group(1) != tag or m.group(2) != src:
        raise WireError(f"obj: {name!r} is not a shared-memory file of this mesh made by its sender")
    return ShmRef(name, blob, sizes)


def check_file(st: os.stat_result, size: int, uid: int) -> None:
    """Refuse anything but a regular file of ``uid``, mode 0600, of exactly ``size`` bytes."""
    if not stat.S_ISREG(st.st_mode):
        raise ShmError("not a regular file")
    if st.st_uid != uid:
        raise ShmError(f"owned by uid {st.st_uid}, not {uid}")
    mode = stat.S_IMODE(st.st_mode)
    if mode != 0o600:
        raise ShmError(f"mode {mode:04o}, not 0600")
    if st.st_size != size:
        raise ShmError(f"{st.st_size} bytes, not the announced {size}")


def open_ref(directory: Path, ref: ShmRef) -> Payload:
    """Map the file read-only, unlink it, and return the payload whose buffers are views of the mapping."""
    path = directory / ref.name
    offsets, total = layout(ref.sizes)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise ShmError(f"cannot open {path}: {exc.strerror}") from exc
    try:
        try:
            check_file(os.fstat(fd), total, os.getuid())
        except ShmError as exc:
            raise ShmError(f"refused {path}: {exc}") from None
        mapped = mmap.mmap(fd, total, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ) if total else None
    finally:
        os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # the pages live as long as the mapping; nothing is left in /dev/shm
    if mapped is None:
        return Payload(ref.blob, tuple(b"" for _ in ref.sizes))
    view = memoryview(mapped)
    return Payload(ref.blob, tuple(view[o : o + s] for o, s in zip(offsets, ref.sizes, strict=True)))


def write_file(path: Path, payload: Payload, mode: int = 0o600) -> list[int]:
    """Create ``path`` (O_EXCL, 0600) holding the payload's buffers at ``layout`` offsets; their sizes. (Another
    ``mode`` is for tests of the receiver's refusal.)"""
    views = [memoryview(b).cast("B") for b in payload.buffers]
    sizes = [v.nbytes for v in views]
    offsets, total = layout(sizes)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, mode)  # whatever the umask
        os.ftruncate(fd, total)
        for off, v in zip(offsets, views, strict=True):
            done = 0
            while done < v.nbytes:
                done += os.pwrite(fd, v[done:], off + done)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    os.close(fd)
    return sizes


def _lock_free(path: Path) -> bool:
    """True if nobody holds ``path``'s lock: the node that made it is dead."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def sweep(directory: Path, tag: str, me: str = "") -> int:
    """Remove the files of dead nodes (and clients) of the mesh ``tag``, and their lock files; ``me``: the
    caller's own ``<id>.<instance>``. How many data files went."""
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    owners: dict[str, list[str]] = {}
    locks: set[str] = set()
    for n in names:
        m = _NAME.match(n)
        if m is not None and m.group(1) == tag:
            owners.setdefault(f"{m.group(2)}.{m.group(3)}", []).append(n)
            continue
        lm = _LOCK.match(n)
        if lm is not None and lm.group(1) == tag:
            locks.add(f"{lm.group(2)}.{lm.group(3)}")
    removed = 0
    for node in sorted(set(owners) | locks):
        if node == me:
            continue
        lock = directory / f"{tag}.{node}.lock"
        # data files without a lock file: their node removed its lock (it removes its files first, so it has
        # stopped) or another sweeper got there first; either way nobody owns them any more
        if node in locks and not _lock_free(lock):
            continue
        for n in owners.get(node, ()):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(directory / n)
                removed += 1
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
    return removed


def sweep_mesh(mesh_id: str) -> int:
    """After every node of mesh ``mesh_id`` on this machine is gone (a test, a benchmark): what they left here."""
    return sweep(user_dir(), mesh_tag(mesh_id))


class ShmArea:
    """A node's files in this user's shared-memory directory: written for peers, claimed or expired."""

    def __init__(self, mesh_id: str, node_id: str, root: Path = SHM_ROOT) -> None:
        self.root = root
        self.dir = user_dir(root)
        self.tag = mesh_tag(mesh_id)
        self.node_id = node_id
        self.me = f"{node_id}.{secrets.token_hex(4)}"  # this process's instance of that id
        self.prefix = f"{self.tag}.{self.me}"
        self.enabled = False
        self._lock_fd = -1
        self.pending: dict[str, tuple[float, str, int]] = {}  # file name -> (written at, receiver, its request)
        self.expired = 0  # files removed because nobody claimed them in time (or their receiver died)
        self.swept = 0  # files of dead nodes removed
        self._next_sweep = 0.0

    def open(self) -> bool:
        """Make (or check) the directory, take this node's lock, remove dead nodes' files. False: shm is off."""
        try:
            with contextlib.suppress(FileExistsError):
                os.mkdir(self.dir, 0o700)
            st = os.lstat(self.dir)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) & 0o077:
                log.warning(
                    "shared memory off: %s is not a private directory of this user (uid %d, mode %04o)",
                    self.dir, st.st_uid, stat.S_IMODE(st.st_mode),
                )  # fmt: skip
                return False
            # the lock is taken under a temporary name, then renamed into place: a sweeper never sees it unlocked
            tmp = self.dir / f"tmp-{secrets.token_hex(16)}"
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(tmp, self.dir / f"{self.prefix}.lock")
        except OSError as exc:
            log.warning("shared memory off: cannot use %s: %s", self.dir, exc)
            return False
        self._lock_fd = fd
        self.enabled = True
        self.swept += sweep(self.dir, self.tag, self.me)
        return True

    def new_path(self) -> Path:
        """A fresh, unguessable name for a file of this node."""
        return self.dir / f"{self.prefix}.{secrets.token_hex(16)}"

    def track(self, name: str, receiver: str, req: int, now: float) -> None:
        """A file written for ``receiver``'s request ``req``: removed if still there after the claim timeout."""
        self.pending[name] = (now, receiver, req)

    def asked_again(self, receiver: str, req: int) -> None:
        """``receiver`` asks again for ``req`` (over the socket): it refused the file we wrote for it."""
        for name, (_, rcv, r) in list(self.pending.items()):
            if rcv == receiver and r == req:
                self._remove(name)

    def tick(self, now: float, timeout: float = CLAIM_TIMEOUT) -> None:
        """Remove our files nobody claimed in ``timeout`` s; now and then, dead nodes' files too."""
        if self.pending:
            for name, (t, _, _) in list(self.pending.items()):
                if now - t > timeout:
                    self._remove(name)
                elif not os.path.lexists(self.dir / name):
                    del self.pending[name]  # claimed: its receiver unlinked it
        if self.enabled and now >= self._next_sweep:
            self._next_sweep = now + SWEEP_EVERY
            self.swept += sweep(self.dir, self.tag, self.me)

    def receiver_gone(self, node_id: str) -> None:
        for name, (_, rcv, _) in list(self.pending.items()):
            if rcv == node_id:
                self._remove(name)

    def _remove(self, name: str) -> None:
        del self.pending[name]
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.dir / name)
            self.expired += 1  # still there: nobody claimed it

    def close(self) -> None:
        for name in list(self.pending):
            self._remove(name)
        mine = f"{self.prefix}."
        with contextlib.suppress(OSError):
            for name in os.listdir(self.dir):  # written but never answered with (a write cut short by the stop)
                if name.startswith(mine) and _NAME.match(name):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.dir / name)
        if self._lock_fd >= 0:
            with contextlib.suppress(OSError):
                os.unlink(self.dir / f"{self.prefix}.lock")
            os.close(self._lock_fd)
            self._lock_fd = -1
        self.enabled = False
