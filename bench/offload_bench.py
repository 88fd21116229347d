"""Offload cost and lag under sustained produce load: PUTs per GiB, object sizes, lag.

Starts moto's S3 server and a single-broker KRaft cluster whose walproxy sidecar offloads to
it, then runs Kafka's ``ProducerPerformance`` through walproxy at ``--mb-per-s`` for
``--seconds`` while sampling the sidecar's ``walproxy_offload_*`` metrics every 0.5 s.
Prints S3 requests per GiB (segment PUTs and all PUTs), mean object size, and the offload
lag (seconds, bytes) the S3 copy trailed the broker by. A script that prints numbers:
``.venv/bin/python bench/offload_bench.py [--mb-per-s 20] [--seconds 60]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.produce_bench import create_topic, producer_perf
from proxy.dev.cluster import DevCluster
from tests.s3server import S3_ENV, S3Server


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("walproxy_offload_") and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def total(sample: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in sample.items() if k.startswith(prefix))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mb-per-s", type=float, default=20.0)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--record-size", type=int, default=1024)
    ap.add_argument("--partitions", type=int, default=1)
    args = ap.parse_args()
    os.environ.update(S3_ENV)
    work = Path(tempfile.mkdtemp(prefix="walproxy-offload-bench-"))
    s3 = S3Server(work / "moto.log").start()
    bucket = s3.new_bucket()
    cluster = DevCluster(
        work / "kafka",
        brokers=1,
        offload_targets={1: f"s3://{bucket}/bench"},
        proxy_env={"WALPROXY_OFFLOAD_S3_ENDPOINT_URL": s3.endpoint_url},
    )
    try:
        cluster.start()
        port = cluster.broker_nodes[0].admin_port
        assert port is not None
        topic = "offload-bench"
        create_topic(cluster.bootstrap, topic, args.partitions, {})
        time.sleep(3)
        start = scrape(port)
        lag_s: list[float] = []
        lag_b: list[float] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                s = scrape(port)
                lag_s.append(
                    max(
                        (v for k, v in s.items() if k.startswith("walproxy_offload_lag_seconds{")),
                        default=0,
                    )
                )
                lag_b.append(total(s, "walproxy_offload_lag_bytes{"))
                time.sleep(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        rate = int(args.mb_per_s * 1e6 / args.record_size)
        records = rate * args.seconds
        t0 = time.monotonic()
        res = producer_perf(
            cluster.bootstrap,
            topic,
            records,
            args.record_size,
            rate,
            ["acks=all", "linger.ms=5", "batch.size=262144"],
        )
        produce_s = time.monotonic() - t0
        time.sleep(3)  # let the last partial objects go out
        stop.set()
        sampler.join()
        end = scrape(port)
    finally:
        cluster.stop()
        s3.stop()

    def delta(prefix: str) -> float:
        return total(end, prefix) - total(start, prefix)

    produced = records * args.record_size
    gib = produced / 2**30
    objects = delta("walproxy_offload_objects_uploaded_total")
    stored = delta("walproxy_offload_bytes_uploaded_total")
    puts = delta('walproxy_offload_s3_requests_total{op="put"}')
    gets = delta('walproxy_offload_s3_requests_total{op="get"}')
    commits = delta("walproxy_offload_commits_total")
    lag_s.sort()
    lag_b.sort()

    def pct(xs: list[float], q: float) -> float:
        return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")

    mib = 2**20
    seg_per_gib, other_per_gib = objects / gib, (puts - objects) / gib
    lines = [
        f"Offload under {args.mb_per_s} MB/s produce for {args.seconds} s "
        f"({args.partitions} partition(s), {args.record_size} B records)",
        f"  produced through walproxy: {res.mb_per_s:.1f} MB/s achieved, "
        f"{produced / 1e6:.0f} MB in {produce_s:.1f} s, p99 {res.p99:.0f} ms",
        f"  segment objects: {objects:.0f}, mean {produced / max(objects, 1) / mib:.2f} MiB "
        f"of Kafka log each, {stored / max(objects, 1) / mib:.2f} MiB stored",
        f"  manifest commits: {commits:.0f}",
        f"  PUTs per GiB produced: {puts / gib:.0f} total ({seg_per_gib:.0f} segment + "
        f"{other_per_gib:.0f} manifest/lease/broker.json); GETs per GiB: {gets / gib:.0f}",
        f"  offload lag seconds (max over partitions, sampled every 0.5 s): "
        f"p50 {pct(lag_s, 0.5):.2f}, p99 {pct(lag_s, 0.99):.2f}, "
        f"max {max(lag_s, default=float('nan')):.2f}",
        f"  offload lag bytes buffered: p50 {pct(lag_b, 0.5) / mib:.1f} MiB, "
        f"max {max(lag_b, default=0) / mib:.1f} MiB",
    ]
    print("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
