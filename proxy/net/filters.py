"""The response filters: which APIs the proxy looks inside, and what it changes in them.

Every API key registered here gets its responses decoded (only that one API, only where
needed) and rewritten; :data:`DECODED_APIS` is derived from the registry, so ApiVersions
advertises only versions the proxy can decode for exactly the APIs it filters:

* ApiVersions: versions clamped to what kio and the skimmer cover (KIP-511 both ways);
* Metadata, FindCoordinator, DescribeCluster: broker endpoints resolved to walproxy's;
* Produce, Fetch: KIP-951 node endpoints resolved likewise;
* OffsetForLeaderEpoch: an epoch that ended where the reconciler's restored batches begin
  ends where they end (KIP-320 positions stay valid, :mod:`proxy.kafka.leader_epochs`).

OffsetCommit and TxnOffsetCommit have no response filter, but their versions are clamped to
what the commit skimmer reads (:mod:`proxy.kafka.commit_skim`); EndTxn's likewise to what
its skimmer reads (:mod:`proxy.kafka.end_txn`).
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from proxy.kafka import apiversions, endpoints, leader_epochs, node_endpoints
from proxy.kafka.commit_skim import VERSION_RANGES as COMMIT_VERSIONS
from proxy.kafka.end_txn import VERSION_RANGE as END_TXN_VERSIONS
from proxy.kafka.protocol import API_VERSIONS, END_TXN, FETCH, OFFSET_FOR_LEADER_EPOCH, PRODUCE
from proxy.net import metrics
from proxy.net.connection import ResponseFilter

log = structlog.get_logger("walproxy.server")

Limits = dict[int, tuple[int, int]]
#: api key -> the filter, built from the endpoint resolver and the version limits.
FilterFactory = Callable[[int, endpoints.Resolver, Limits], ResponseFilter]


def _clamp_versions(key: int, resolve: endpoints.Resolver, limits: Limits) -> ResponseFilter:
    return lambda version, payload: apiversions.rewrite_response(version, payload, limits)


def _broker_endpoints(key: int, resolve: endpoints.Resolver, limits: Limits) -> ResponseFilter:
    return lambda version, payload: endpoints.rewrite_response(key, version, payload, resolve)


def _node_endpoints(key: int, resolve: endpoints.Resolver, limits: Limits) -> ResponseFilter:
    return lambda version, payload: node_endpoints.rewrite_response(key, version, payload, resolve)


FILTERS: dict[int, FilterFactory] = {
    API_VERSIONS: _clamp_versions,
    **dict.fromkeys(endpoints.REWRITTEN_APIS, _broker_endpoints),
    PRODUCE: _node_endpoints,
    FETCH: _node_endpoints,
}

#: The APIs the proxy looks inside; ApiVersions advertises only versions it can decode.
DECODED_APIS = frozenset(FILTERS) | {OFFSET_FOR_LEADER_EPOCH}


def build_response_filters(
    resolver: endpoints.Resolver, restored: leader_epochs.RestoredRanges | None = None
) -> dict[int, ResponseFilter]:
    """The filters by API key; ``restored``: the reconciler's restored ranges (none: the
    OffsetForLeaderEpoch filter changes nothing)."""
    limits = apiversions.decoded_api_limits(DECODED_APIS)
    # Fetch is decoded only as far as the KIP-951 walker knows its layout.
    lo, hi = limits[FETCH]
    limits[FETCH] = (lo, min(hi, node_endpoints.LAST_VERSION[FETCH]))
    # Offset commits go through the commit skimmer (the durable commit path): no filter, but
    # only the versions it reads are advertised.
    limits.update(COMMIT_VERSIONS)
    limits[END_TXN] = END_TXN_VERSIONS  # the durable EndTxn path reads these
    resolve = _counting(resolver)
    filters = {key: factory(key, resolve, limits) for key, factory in FILTERS.items()}
    ranges = restored if restored is not None else leader_epochs.RestoredRanges()
    filters[OFFSET_FOR_LEADER_EPOCH] = lambda version, payload: leader_epochs.rewrite_response(
        version, payload, ranges
    )
    return filters


def _counting(resolver: endpoints.Resolver) -> endpoints.Resolver:
    def resolve(node_id: int, host: str, port: int) -> endpoints.Address | None:
        target = resolver(node_id, host, port)
        if target is None:
            metrics.ENDPOINTS_WITHHELD.inc()
            log.warning(
                "withholding broker endpoint with no walproxy address",
                node_id=node_id,
                host=host,
                port=port,
            )
        return target

    return resolve
