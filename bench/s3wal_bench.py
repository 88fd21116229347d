"""The S3 WAL (``wal.backend = "s3"``) against the file WAL and direct Kafka, in one run.

One local broker; its sidecar with the file WAL (Direct IO); a second walproxy on the same
broker whose WAL is on moto's S3 server behind the fault relay (tests/offload/s3relay.py),
which holds every response for an injected round-trip delay (0, 10 and 30 ms by default:
moto on loopback, then roughly S3 Express One Zone and S3 Standard PUT latencies); and
clients straight to the broker. Each row runs Kafka's ProducerPerformance twice on a fresh
topic: at full load (throughput) and at a fixed rate (``--rate-mb``, 10 MB/s by default) for
the latency percentiles and the request counts. PUTs are the S3 WAL's group objects
(``walproxy_wal_s3_objects_total`` on its /metrics); the lease replacement a trim makes
and an opening epoch's marker are a handful more and not counted. The cost lines price
those PUTs per month (30 days) at 10 MB/s with published request prices (no storage: the
WAL's objects live seconds). Offloaders are off: this is the produce path alone.

A script that prints numbers, not a test: run it through ``/work/bin/heavy`` on a shared
machine, ``.venv/bin/python bench/s3wal_bench.py`` (about three minutes).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.produce_bench import Result, create_topic, plain_proxy, producer_perf
from proxy.dev.cluster import DevCluster, free_port
from tests.integration.scrape import metric
from tests.offload.s3relay import S3Relay
from tests.s3server import S3_ENV, S3Server

GIB = 1 << 30
MONTH_S = 30 * 86400
#: us-east-1 request prices. S3 Standard: $0.005 per 1000 PUT. S3 Express One Zone (after
#: the April 2025 reduction, AWS S3 FAQ): $0.00113 per 1000 PUT plus $0.0032 per GB uploaded.
STANDARD_PER_1000_PUT = 0.005
EXPRESS_PER_1000_PUT = 0.00113
EXPRESS_PER_GB_UPLOAD = 0.0032


@dataclass
class Puts:
    """A walproxy's WAL and produce counters over one ProducerPerformance run (the S3 WAL's
    group objects; zero for the file WAL)."""

    objects: float
    bytes: float
    put_seconds: float  # summed PUT latency (retries included)
    wal_seconds: float  # summed append-to-durable latency, once per group
    groups: float
    produce_seconds: float  # summed produce request latency at the proxy
    produces: float
    record_bytes: float = 0.0
    seconds: float = 0.0  # producing time: records / the run's rec/s (no JVM start)

    @property
    def per_s(self) -> float:
        return self.objects / self.seconds if self.seconds else 0.0

    @property
    def per_gib(self) -> float:
        return self.objects / (self.record_bytes / GIB)

    @property
    def put_ms(self) -> float:
        return 1000 * self.put_seconds / self.objects if self.objects else 0.0

    @property
    def wal_ms(self) -> float:
        return 1000 * self.wal_seconds / self.groups if self.groups else 0.0

    @property
    def produce_ms(self) -> float:
        return 1000 * self.produce_seconds / self.produces if self.produces else 0.0

    @property
    def bytes_per_object(self) -> float:
        return self.bytes / self.objects if self.objects else 0.0


@dataclass
class Run:
    result: Result
    puts: Puts | None


@dataclass
class Row:
    name: str
    full: Run  # as fast as it goes: throughput
    light: Run  # a fixed low rate: latency without queueing
    rate: Run  # the fixed cost rate (--rate-mb): PUTs for the cost line
    s3: bool = False


_COUNTERS = (
    "walproxy_wal_s3_objects_total",
    "walproxy_wal_s3_object_bytes_sum",
    "walproxy_wal_s3_put_latency_seconds_sum",
    "walproxy_wal_append_latency_seconds_sum",
    "walproxy_wal_append_latency_seconds_count",
    'walproxy_request_latency_seconds_sum{api="produce"}',
    'walproxy_request_latency_seconds_count{api="produce"}',
)


class ProxyCounters:
    """A walproxy's counters (its /metrics), read around a run."""

    def __init__(self, admin_port: int) -> None:
        self.port = admin_port

    def read(self) -> list[float]:
        return [metric(self.port, name) for name in _COUNTERS]

    def around(self, run: Callable[[], Result], records: int, size: int) -> Run:
        before = self.read()
        result = run()
        puts = Puts(*(b - a for a, b in zip(before, self.read(), strict=True)))
        puts.record_bytes = records * size
        puts.seconds = records / result.records_per_s
        return Run(result, puts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=60_000, help="records of the full-load run")
    ap.add_argument("--record-size", type=int, default=1000)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--light-mb", type=float, default=2.0, help="MB/s of the latency run")
    ap.add_argument("--rate-mb", type=float, default=10.0, help="MB/s of the cost run")
    ap.add_argument("--seconds", type=int, default=8, help="length of each fixed-rate run")
    ap.add_argument("--delays-ms", default="0,10,30")
    args = ap.parse_args()
    delays = [float(d) for d in args.delays_ms.split(",")]
    work = Path(tempfile.mkdtemp(prefix="walproxy-s3wal-bench-", dir="/var/tmp"))
    os.environ.update(S3_ENV)
    server = S3Server(work / "moto.log").start()
    relay = S3Relay((server.host, server.port))
    bucket = server.new_bucket()
    rows: list[Row] = []
    try:
        off = {"WALPROXY_OFFLOAD_ENABLED": "false"}
        with DevCluster(work / "cluster", brokers=1, heap="1g", proxy_env=off) as cluster:
            admin = free_port()
            s3_bootstrap, _ = plain_proxy(
                cluster,
                work,
                "walproxy-s3-wal",
                WALPROXY_WAL_ENABLED="true",
                WALPROXY_WAL_BACKEND="s3",
                WALPROXY_WAL_S3_TARGET=f"s3://{bucket}/wal/node-1",
                WALPROXY_OFFLOAD_S3_ENDPOINT_URL=relay.endpoint_url,
                WALPROXY_OFFLOAD_S3_REGION=S3_ENV["AWS_DEFAULT_REGION"],
                WALPROXY_ADMIN_LISTEN=f"127.0.0.1:{admin}",
            )
            s3 = ProxyCounters(admin)
            sidecar_admin = cluster.broker_nodes[0].admin_port
            assert sidecar_admin is not None
            sidecar = ProxyCounters(sidecar_admin)
            targets: list[tuple[str, str, ProxyCounters | None, float]] = [
                ("direct Kafka acks=all", cluster.direct_bootstrap, None, 0.0),
                ("file WAL (Direct IO)", cluster.bootstrap, sidecar, 0.0),
                *((f"S3 WAL +{d:g} ms", s3_bootstrap, s3, d) for d in delays),
            ]
            for i, (name, bootstrap, counters, delay) in enumerate(targets):
                relay.delay_s = delay / 1000
                relay.set_mode("pass")  # fresh connections for the new delay
                row = run_row(cluster, name, bootstrap, f"s3wal-bench-{i}", args, counters)
                row.s3 = counters is s3
                rows.append(row)
                print(f"done: {name}", flush=True)
    finally:
        relay.close()
        server.stop()
    report(rows, args)


def run_row(
    cluster: DevCluster,
    name: str,
    bootstrap: str,
    topic: str,
    args: argparse.Namespace,
    counters: ProxyCounters | None,
) -> Row:
    size = args.record_size

    def one(suffix: str, records: int, rate: int) -> Run:
        create_topic(cluster.direct_bootstrap, topic + suffix, args.partitions, {})

        def go() -> Result:
            return producer_perf(bootstrap, topic + suffix, records, size, rate, [])

        return Run(go(), None) if counters is None else counters.around(go, records, size)

    light = int(args.light_mb * 1e6 / size)
    rate = int(args.rate_mb * 1e6 / size)
    return Row(
        name,
        one("-full", args.records, -1),
        one("-light", light * args.seconds, light),
        one("-rate", rate * args.seconds, rate),
    )


def report(rows: list[Row], args: argparse.Namespace) -> None:
    print(
        f"\nProducerPerformance (kafka-tools), {args.record_size} B records, {args.partitions} "
        f"partitions, RF=1, acks=all, linger.ms=5; full load: {args.records} records; fixed "
        f"rates {args.light_mb:g} and {args.rate_mb:g} MB/s for {args.seconds} s each; S3 WAL "
        "on moto behind the relay (+N ms on every response it relays), wal.s3_max_inflight 8, "
        "max_group_delay_ms 0; offloaders off. WAL ms: a group's append to durable (mean); "
        "req ms: produce request at the proxy (mean); PUT ms: one object's PUT (mean)"
    )
    print(
        f"{'':<20} {'full load':^25} | {f'at {args.light_mb:g} MB/s':^27} | "
        f"{f'at {args.rate_mb:g} MB/s':^49}"
    )
    print(
        f"{'target':<20} {'rec/s':>8} {'MB/s':>6} {'vs direct':>9} | {'p50 ms':>6} "
        f"{'p99 ms':>6} {'WAL ms':>6} {'req ms':>6} | {'MB/s':>5} {'p50 ms':>6} {'p99 ms':>6} "
        f"{'PUT/s':>6} {'PUT/GiB':>8} {'KiB/PUT':>7} {'PUT ms':>6} | {'PUT/GiB full':>12}"
    )
    base = rows[0].full.result.records_per_s

    def mb(res: Result) -> float:
        return res.records_per_s * args.record_size / 1e6

    for r in rows:
        f, li, ra = r.full.result, r.light.result, r.rate.result
        line = (
            f"{r.name:<20} {f.records_per_s:>8.0f} {mb(f):>6.1f} {f.records_per_s / base:>9.2f}"
            f" | {li.p50:>6.0f} {li.p99:>6.0f}"
        )
        pl = r.light.puts
        line += f" {pl.wal_ms:>6.1f} {pl.produce_ms:>6.1f}" if pl else f" {'':>6} {'':>6}"
        line += f" | {mb(ra):>5.1f} {ra.p50:>6.0f} {ra.p99:>6.0f}"
        p, pf = r.rate.puts, r.full.puts
        if r.s3 and p is not None and pf is not None:
            line += (
                f" {p.per_s:>6.0f} {p.per_gib:>8.0f} {p.bytes_per_object / 1024:>7.1f}"
                f" {p.put_ms:>6.1f} | {pf.per_gib:>12.0f}"
            )
        print(line)
    print(
        f"\nRequest cost per month at {args.rate_mb:g} MB/s (30 days; PUTs per byte of the "
        f"{args.rate_mb:g} MB/s run; S3 Standard $0.005/1000 PUT; Express One Zone $0.00113/1000 "
        "PUT + $0.0032/GB uploaded; no storage, the objects live seconds):"
    )
    for r in rows:
        p = r.rate.puts
        if p is None or not r.s3:
            continue
        puts_month = p.objects / p.record_bytes * args.rate_mb * 1e6 * MONTH_S
        gb_month = args.rate_mb * MONTH_S / 1000 * (p.bytes / p.record_bytes)
        standard = puts_month / 1000 * STANDARD_PER_1000_PUT
        express = puts_month / 1000 * EXPRESS_PER_1000_PUT + gb_month * EXPRESS_PER_GB_UPLOAD
        print(
            f"  {r.name:<20} {puts_month / 1e6:>7.1f} M PUT/month: S3 Standard "
            f"${standard:>8,.0f}/month, Express One Zone ${express:>7,.0f}/month "
            f"(of which upload ${gb_month * EXPRESS_PER_GB_UPLOAD:,.0f})"
        )


if __name__ == "__main__":
    main()
