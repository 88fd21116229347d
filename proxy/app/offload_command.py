"""``walproxy offload`` and ``walproxy offload verify`` (called from :mod:`proxy.app.cli`)."""

from __future__ import annotations

import sys
from collections.abc import Callable

import trio

from offload.manifest import FencedError
from offload.offloader import Offloader, OffloadStartError
from offload.store import StoreError, open_store
from offload.verify import BrokerPartition, compare, scrub
from proxy.app.wiring import own_clients
from proxy.client.errors import UpstreamError
from proxy.client.upstream_client import (
    EARLIEST,
    LATEST,
    ClusterClient,
    UpstreamClient,
)
from proxy.config import Config, parse_address


def _upstream(cfg: Config) -> tuple[str, int]:
    o = cfg.offload
    return parse_address(o.upstream or cfg.proxy.upstream, "offload.upstream")


def run(cfg: Config, stop_on_signals: Callable) -> int:
    if cfg.gateway.enabled:
        print(
            "walproxy offload: gateway.enabled: in gateway mode `walproxy run` runs one "
            "offloader per broker; `walproxy offload` follows one broker (proxy.upstream)",
            file=sys.stderr,
        )
        return 2
    node_id = cfg.proxy.node_id if cfg.proxy.node_id >= 0 else None
    off = Offloader(cfg.offload, _upstream(cfg), node_id)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stop_on_signals, nursery.cancel_scope.cancel)
            await off.run()

    try:
        trio.run(main)
    except FencedError as exc:
        print(f"walproxy offload: fenced: {exc}", file=sys.stderr)
        return 3
    except OffloadStartError as exc:
        print(f"walproxy offload: cannot start: {exc}", file=sys.stderr)
        return 2
    return 0


def verify(cfg: Config, *, read_objects: bool = True) -> int:
    """Print findings; 0 when there is no anomaly, 1 otherwise, 3 when unreachable."""
    o = cfg.offload
    store = open_store(
        o.target,
        endpoint_url=o.s3_endpoint_url,
        region=o.s3_region,
        request_timeout_s=o.request_timeout_s,
    )

    async def broker_view() -> tuple[str, int | None, dict]:
        if cfg.gateway.enabled:  # the whole cluster, reached as the gateway reaches it
            client: UpstreamClient | ClusterClient = own_clients(cfg)()
        else:
            client = await UpstreamClient.connect(*_upstream(cfg))
        async with client:
            info = await client.cluster()
            # gateway: every partition, whichever broker leads it
            node: int | None = None if cfg.gateway.enabled else cfg.proxy.node_id
            if node is not None and node < 0:
                if len(info.brokers) != 1:
                    raise UpstreamError("proxy.node_id: must be set for a multi-broker cluster")
                node = next(iter(info.brokers))
            parts = {}
            for name, t in info.topics.items():
                for p, leader in t.partitions.items():
                    if node is not None and leader != node:
                        continue
                    start = await client.list_offset(name, p, EARLIEST)
                    end = await client.list_offset(name, p, LATEST)
                    parts[(name, p)] = BrokerPartition(t.topic_id, leader, start, end)
            return info.cluster_id or "", node, parts

    try:
        cluster_id, node, parts = trio.run(broker_view)
    except (UpstreamError, OSError, trio.TooSlowError) as exc:
        print(f"walproxy offload verify: cannot read the broker: {exc}", file=sys.stderr)
        return 3
    try:
        res = scrub(store, cluster_id, read_objects=read_objects)
    except StoreError as exc:
        print(f"walproxy offload verify: cannot read {store.describe()}: {exc}", file=sys.stderr)
        return 3
    compare(res, parts, node)
    for f in res.findings:
        print(f.line())
    anomalies = res.anomalies
    print(
        f"{store.describe()} cluster {cluster_id} "
        f"{'all brokers' if node is None else f'node {node}'}: {len(res.manifests)} manifest(s), "
        f"{res.objects} object(s) verified ({res.bytes} bytes), {len(anomalies)} anomal"
        f"{'y' if len(anomalies) == 1 else 'ies'}"
    )
    return 1 if anomalies else 0
