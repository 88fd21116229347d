"""walproxy's own Kafka client: the connections the proxy opens for itself.

What this package owns: :class:`UpstreamClient` (one broker: Metadata, ListOffsets, Fetch,
Produce) and :class:`ClusterClient` (the same over a whole cluster, by partition leader),
the SASL exchange (:mod:`.sasl_client`: PLAIN, SCRAM), TLS on both sides with reloading
(:mod:`.tls`). Clients' own connections never go through here: they are relayed by
:mod:`proxy.net`.
"""

from .errors import UpstreamError
from .sasl_client import SaslCredentials, SaslError
from .tls import Tls
from .upstream_client import (
    EARLIEST,
    LATEST,
    ClusterClient,
    ClusterInfo,
    Dial,
    FetchResult,
    TopicInfo,
    UpstreamClient,
)

__all__ = [
    "EARLIEST",
    "LATEST",
    "ClusterClient",
    "ClusterInfo",
    "Dial",
    "FetchResult",
    "SaslCredentials",
    "SaslError",
    "Tls",
    "TopicInfo",
    "UpstreamClient",
    "UpstreamError",
]
