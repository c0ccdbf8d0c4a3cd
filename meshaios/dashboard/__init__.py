"""A node's read-only HTTP face: the live dashboard page, ``/api/status`` (JSON) and ``/metrics`` (Prometheus).

Everything here is derived from the node's status dict (``Node.status()``): the server never reaches into the
node, so it can serve any source of that dict -- a node's own ``status``, or a client's view of a remote node.
"""

from meshaios.dashboard.jobs import jobs_view
from meshaios.dashboard.metrics import render_metrics
from meshaios.dashboard.server import HttpLimits, dashboard_token, serve_http
from meshaios.dashboard.views import duration_histogram, mesh_view, work_view

__all__ = [
    "HttpLimits",
    "dashboard_token",
    "duration_histogram",
    "jobs_view",
    "mesh_view",
    "render_metrics",
    "serve_http",
    "work_view",
]
