"""Produce throughput and latency: through walproxy vs straight to Kafka, in one run.

Starts a local single-broker KRaft cluster with a walproxy sidecar (``proxy.devcluster``),
then runs Kafka's own ``ProducerPerformance`` (kafka-tools) against the broker's DIRECT
listener and against walproxy, alternating, on fresh topics. Prints a table and the ratios.
A script that prints numbers, not a test: run ``.venv/bin/python bench/produce_bench.py``.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from proxy.devcluster import DevCluster, libs_dir

_RESULT = re.compile(
    r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, "
    r"([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99.9th"
)


@dataclass
class Result:
    records_per_s: float
    mb_per_s: float
    p50: float
    p99: float
    p999: float


def create_topic(bootstrap: str, topic: str, partitions: int, config: dict[str, str]) -> None:
    cmd = [
        "java",
        "-cp",
        f"{libs_dir()}/*",
        "org.apache.kafka.tools.TopicCommand",
        "--bootstrap-server",
        bootstrap,
        "--create",
        "--topic",
        topic,
        "--partitions",
        str(partitions),
        "--replication-factor",
        "1",
    ]
    for k, v in config.items():
        cmd += ["--config", f"{k}={v}"]
    subprocess.run(cmd, check=True, capture_output=True)


def producer_perf(
    bootstrap: str, topic: str, records: int, size: int, throughput: int, extra: list[str]
) -> Result:
    cmd = [
        "java",
        "-Xmx1g",
        "-cp",
        f"{libs_dir()}/*",
        "org.apache.kafka.tools.ProducerPerformance",
        "--topic",
        topic,
        "--num-records",
        str(records),
        "--record-size",
        str(size),
        "--throughput",
        str(throughput),
        "--producer-props",
        f"bootstrap.servers={bootstrap}",
        "acks=all",
        "linger.ms=5",
        "batch.size=65536",
        *extra,
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    m = _RESULT.search(out.strip().splitlines()[-1])
    if m is None:
        raise RuntimeError(f"cannot parse ProducerPerformance output:\n{out}")
    return Result(float(m[2]), float(m[3]), float(m[6]), float(m[8]), float(m[9]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--record-size", type=int, default=1024)
    ap.add_argument("--partitions", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="walproxy-bench-"))
    with DevCluster(work, brokers=1, heap="2g") as cluster:
        targets = {"direct": cluster.direct_bootstrap, "walproxy": cluster.bootstrap}
        full: dict[str, list[Result]] = {k: [] for k in targets}
        for rnd in range(args.rounds):
            for name, bootstrap in targets.items():
                topic = f"bench-{name}-{rnd}"
                create_topic(cluster.direct_bootstrap, topic, args.partitions, {})
                full[name].append(
                    producer_perf(bootstrap, topic, args.records, args.record_size, -1, [])
                )
        best = {k: max(v, key=lambda r: r.records_per_s) for k, v in full.items()}
        half_rate = int(best["direct"].records_per_s / 2)
        half: dict[str, Result] = {}
        for name, bootstrap in targets.items():
            topic = f"bench-{name}-half"
            create_topic(cluster.direct_bootstrap, topic, args.partitions, {})
            n = max(half_rate * 10, 10_000)  # ~10 s at the fixed rate
            half[name] = producer_perf(bootstrap, topic, n, args.record_size, half_rate, [])
    print(
        f"\nProducerPerformance, {args.record_size} B records, {args.partitions} partitions, "
        f"acks=all, best of {args.rounds} at full load; fixed rate {half_rate} rec/s for latency"
    )
    print(
        f"{'target':<10} {'rec/s':>10} {'MB/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'p999 ms':>8}"
        f" | {'@half p50':>9} {'p99':>6} {'p999':>6}"
    )
    for name in targets:
        b, h = best[name], half[name]
        print(
            f"{name:<10} {b.records_per_s:>10.0f} {b.mb_per_s:>8.1f} {b.p50:>7.0f} {b.p99:>7.0f}"
            f" {b.p999:>8.0f} | {h.p50:>9.0f} {h.p99:>6.0f} {h.p999:>6.0f}"
        )
    ratio = best["walproxy"].records_per_s / best["direct"].records_per_s
    print(
        f"\nthroughput walproxy/direct = {ratio:.2f}; "
        f"all full-load runs (rec/s): "
        + "; ".join(f"{k}: {[round(r.records_per_s) for r in v]}" for k, v in full.items())
    )
    print(
        f"p99 at half load: direct {half['direct'].p99:.0f} ms, walproxy "
        f"{half['walproxy'].p99:.0f} ms (median of runs not computed; "
        f"stdev of full-load rec/s direct "
        f"{statistics.pstdev(r.records_per_s for r in full['direct']):.0f})"
    )


if __name__ == "__main__":
    main()
