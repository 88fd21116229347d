"""Produce throughput and p99 through a walproxy gateway vs straight to Kafka, with and
without TLS, in one run.

Starts a local KRaft cluster (one broker by default; its brokers advertise themselves, as in
gateway deployments) with a plaintext and a TLS listener, a test CA for the TLS listener,
and three gateways: plaintext with the WAL, plaintext with the WAL off (the proxy's own
cost), and TLS on both sides (clients -> gateway, gateway -> broker) with the WAL. Each
target gets Kafka's own ``ProducerPerformance`` at full speed (best of ``--rounds``) and at
a fixed half of direct's best rate for the latency percentiles. Prints a table.
Run: ``.venv/bin/python bench/gateway_bench.py``; a script, not a test.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from produce_bench import Result, create_topic, load_arguments, producer_perf

from proxy.dev.cluster import DevCluster

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' helpers below
from tests.integration.gateway_process import Gateway
from tests.integration.tls_ca import TestCA

BROKER_HOST = "127.0.0.2"


def main() -> None:
    ap = load_arguments(argparse.ArgumentParser(description=__doc__))
    ap.add_argument("--brokers", type=int, default=1)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="walproxy-gw-bench-", dir="/var/tmp"))
    ca = TestCA(work / "ca")
    broker = ca.issue("broker", ips=(BROKER_HOST,))
    gateway_cert = ca.issue("gateway", ips=("127.0.0.1",))
    cluster = DevCluster(
        work / "cluster",
        brokers=args.brokers,
        with_proxy=False,
        host=BROKER_HOST,
        heap="2g",
        extra_listeners={"SSL": "SSL"},
        broker_overrides={
            "listener.name.ssl.ssl.keystore.type": "PEM",
            "listener.name.ssl.ssl.keystore.location": str(broker.combined),
        },
    )
    tls_client = [
        "security.protocol=SSL",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={ca.cert}",
    ]
    quiet = {"WALPROXY_LOG_LEVEL": "warning"}
    with cluster:
        gateways = [
            Gateway(cluster, work / "gw", **quiet).start(),
            Gateway(cluster, work / "gw-nowal", WALPROXY_WAL_ENABLED="false", **quiet).start(),
            Gateway(
                cluster,
                work / "gw-tls",
                listener="SSL",
                WALPROXY_TLS_LISTEN_CERT=str(gateway_cert.cert),
                WALPROXY_TLS_LISTEN_KEY=str(gateway_cert.key),
                WALPROXY_TLS_UPSTREAM="true",
                WALPROXY_TLS_UPSTREAM_CA=str(ca.cert),
                **quiet,
            ).start(),
        ]
        try:
            plain, nowal, tls = gateways
            direct = cluster.listener_bootstrap("CLIENT")
            targets: list[tuple[str, str, list[str]]] = [
                ("direct", direct, []),
                ("gateway", plain.bootstrap, []),
                ("gateway wal.enabled=false", nowal.bootstrap, []),
                ("direct TLS", cluster.listener_bootstrap("SSL"), tls_client),
                ("gateway TLS both sides", tls.bootstrap, tls_client),
            ]
            rf = str(min(3, args.brokers))
            full: dict[str, list[Result]] = {name: [] for name, _, _ in targets}
            for rnd in range(args.rounds):
                for i, (name, bootstrap, extra) in enumerate(targets):
                    topic = f"bench-{i}-{rnd}"
                    create_topic(direct, topic, args.partitions, {}, rf)
                    full[name].append(
                        producer_perf(bootstrap, topic, args.records, args.record_size, -1, extra)
                    )
            best = {k: max(v, key=lambda r: r.records_per_s) for k, v in full.items()}
            # Latency at half of the matching direct target's best rate (TLS vs direct TLS).
            rates = {
                name: int(best["direct TLS" if "TLS" in name else "direct"].records_per_s / 2)
                for name, _, _ in targets
            }
            half: dict[str, Result] = {}
            for i, (name, bootstrap, extra) in enumerate(targets):
                topic = f"bench-{i}-half"
                create_topic(direct, topic, args.partitions, {}, rf)
                rate = rates[name]
                n = rate * args.half_seconds
                half[name] = producer_perf(bootstrap, topic, n, args.record_size, rate, extra)
        finally:
            for gw in gateways:
                gw.stop()
    print(
        f"\nProducerPerformance (kafka-tools) through a walproxy gateway, {args.brokers} "
        f"broker(s), {args.record_size} B records, {args.partitions} partitions, acks=all, "
        f"linger.ms=5; full load: best of {args.rounds} x {args.records} records; latency at a "
        f"fixed {rates['direct']} rec/s plaintext, {rates['direct TLS']} rec/s TLS (half of "
        f"the direct target's best) for {args.half_seconds} s"
    )
    print(
        f"{'target':<27} {'rec/s':>9} {'MB/s':>7} {'vs direct':>9} | "
        f"{'p50 ms':>6} {'p99 ms':>6} {'p999 ms':>7} (at half load)"
    )
    for name, _, _ in targets:
        b, h = best[name], half[name]
        base = best["direct TLS" if "TLS" in name else "direct"].records_per_s
        print(
            f"{name:<27} {b.records_per_s:>9.0f} {b.mb_per_s:>7.1f} {b.records_per_s / base:>9.2f}"
            f" | {h.p50:>6.0f} {h.p99:>6.0f} {h.p999:>7.0f}"
        )
    print("(vs direct: TLS rows are compared with direct TLS, the others with direct plaintext)")
    print(
        "all full-load runs (rec/s): "
        + "; ".join(f"{k}: {[round(r.records_per_s) for r in v]}" for k, v in full.items())
    )


if __name__ == "__main__":
    main()
