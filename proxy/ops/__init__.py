"""Operations: what an operator and the orchestrator see of a running walproxy.

What this package owns: the admin HTTP endpoint (:mod:`.admin`: /metrics, /healthz,
/readyz, /status), the upstream reachability probe (:mod:`.health`), the ``/status``
document's rendering (:mod:`.status`), the process-wide metrics (:mod:`.metrics`) and the
log set-up (:mod:`.logs`). Nothing here imports the connection or produce runtime: it is
handed what it reports.
"""

from .admin import AdminServer
from .health import UpstreamProbe
from .logs import configure as configure_logs
from .status import offload_from_registry, render

__all__ = ["AdminServer", "UpstreamProbe", "configure_logs", "offload_from_registry", "render"]
