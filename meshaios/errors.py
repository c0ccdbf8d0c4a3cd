"""One error root for the whole mesh, split by who is to blame.

Like h11's Local/RemoteProtocolError: a user catches ``MeshError`` for anything the mesh raises, and the
sub-class tells whether the fault lies with their own code (``TaskError``), a peer that sent garbage
(``WireError``), credentials (``AuthError``) or the mesh being unreachable (``MeshUnavailable``).
"""

from __future__ import annotations

import concurrent.futures


class MeshError(Exception):
    """Root of every error meshaios raises on purpose."""


class ConfigError(MeshError):
    """A setting is missing or contradictory (e.g. no token and no ``--insecure``)."""


class AuthError(MeshError):
    """The mesh did not accept our credentials (wrong token, or a node of another mesh)."""


class WireError(MeshError):
    """A frame or message broke the protocol: malformed, oversized, of an unknown type or dtype."""


class SerializationError(MeshError):
    """A value cannot travel on this mesh (e.g. arbitrary objects on an insecure mesh, where pickle is off)."""


class InvalidAddress(ConfigError, ValueError):
    """An address that names no node: not ``host:port`` (or ``tcp://host:port``), or an unknown scheme."""


class MeshUnavailable(MeshError):
    """No node could be reached, or every node that could run the work is gone."""


class MeshTimeoutError(MeshError, TimeoutError):
    """An operation did not finish within the caller's timeout."""


class TaskError(MeshError):
    """A task raised on a remote node; carries the remote exception's type, message and traceback.

    The original exception object is not re-raised directly: on an insecure mesh it cannot be unpickled, and
    even on a secure one its class may not exist on the client. ``remote_type`` and ``remote_traceback`` are
    always there; ``cause`` holds the original exception when it could be reconstructed.
    """

    def __init__(
        self,
        task_id: str,
        remote_type: str,
        message: str,
        remote_traceback: str,
        node: str = "",
        cause: BaseException | None = None,
    ) -> None:
        self.task_id = task_id
        self.remote_type = remote_type
        self.message = message
        self.remote_traceback = remote_traceback
        self.node = node
        self.cause = cause
        super().__init__(f"task {task_id} failed on node {node or '?'}: {remote_type}: {message}")

    def __str__(self) -> str:
        head = super().__str__()
        if self.remote_traceback:
            return f"{head}\n--- remote traceback ---\n{self.remote_traceback.rstrip()}"
        return head


class CancelledTaskError(MeshError, concurrent.futures.CancelledError):
    """The task was cancelled (``Future.cancel``, ``Client.cancel``, Ctrl-C in ``gather``, its client went away),
    or a task it depends on was. A ``concurrent.futures.CancelledError`` too, as executors raise."""


class FunctionRefused(WireError):
    """A function reference this node's fence does not allow (``tasks/allowlist.py``); ``ref`` is what was refused."""

    def __init__(self, ref: str, reason: str) -> None:
        super().__init__(f"function {ref!r} refused: {reason}")
        self.ref = ref
        self.reason = reason

    def __reduce__(self) -> tuple[type[FunctionRefused], tuple[str, str]]:
        return FunctionRefused, (self.ref, self.reason)


class LimitExceeded(WireError):
    """A message over one of the receiver's size limits (header bytes, fields, frames): refused before decoding."""


class RequestRefused(WireError):
    """A node refused a message of ours without acting on it -- malformed, over one of its limits (a header over its
    ``max_header_bytes``), or large while the node drops this client's large messages (throttled) -- and named it in
    its ``error`` reply. What that message asked for fails with this: each task of a refused ``submit`` (``task_id``),
    or a ``get`` / ``put``. ``reason`` is the node's own message. A task it refused never ran; submit it again once the
    cause is gone (a smaller argument: ``put`` large values)."""

    def __init__(self, reason: str, task_id: str = "", node: str = "") -> None:
        self.reason = reason
        self.task_id = task_id
        self.node = node
        what = f"task {task_id}" if task_id else "request"
        super().__init__(f"{what} refused by node {node or '?'}: {reason}")

    def __reduce__(self) -> tuple[type[RequestRefused], tuple[str, str, str]]:
        return RequestRefused, (self.reason, self.task_id, self.node)


class ObjectLost(MeshError):
    """Every node that held an object died, and it has no lineage to recompute it from (a ``put``'s data).

    Raised at once to whoever reads the object -- the put's own future, or a task that takes it as an input
    (``task_id``) -- instead of leaving them waiting. ``object_id`` names the object that was lost.
    """

    def __init__(self, object_id: str, message: str = "", task_id: str = "") -> None:
        self.object_id = object_id
        self.task_id = task_id
        what = f"task {task_id}: input " if task_id and task_id != object_id else ""
        super().__init__(f"{what}object {object_id} is lost: {message or 'every node holding it died'}")
