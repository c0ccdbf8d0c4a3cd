"""meshaios: a leaderless compute mesh for AI workloads.

Start ``meshaios node`` on each machine (they find each other by mDNS), then from anywhere::

    from meshaios import Client
    with Client() as c:
        print(sum(c.gather(c.map(pow, range(1000), [2] * 1000))))

``MESHAIOS_PURE=1`` runs the modules an install compiled as Python; ``meshaios.compiled()`` lists those that run
compiled (meshaios/native.py).
"""

from meshaios import native as _native

_native.install()  # before anything imports the compiled modules: their .py source where it must run as Python

from meshaios.client import AsyncClient, Client, Future
from meshaios.compat.futures import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION, as_completed, wait
from meshaios.errors import (
    AuthError,
    CancelledTaskError,
    ConfigError,
    InvalidAddress,
    MeshError,
    MeshTimeoutError,
    MeshUnavailable,
    ObjectLost,
    RequestRefused,
    SerializationError,
    TaskError,
    WireError,
)
from meshaios.native import compiled
from meshaios.testing.localmesh import LocalMesh

__version__ = "0.1.0"

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "AsyncClient",
    "AuthError",
    "CancelledTaskError",
    "Client",
    "ConfigError",
    "Future",
    "InvalidAddress",
    "LocalMesh",
    "MeshError",
    "MeshTimeoutError",
    "MeshUnavailable",
    "ObjectLost",
    "RequestRefused",
    "SerializationError",
    "TaskError",
    "WireError",
    "__version__",
    "as_completed",
    "compiled",
    "wait",
]
