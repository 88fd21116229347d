"""Produce throughput and latency: through walproxy vs straight to Kafka, in one run.

Starts a local single-broker KRaft cluster with a walproxy sidecar (``proxy.dev.cluster``),
then runs Kafka's own ``ProducerPerformance`` (kafka-tools) against the broker's DIRECT
listener and against walproxy, alternating, on fresh topics. Prints a table and the ratios.
The sidecar's S3 offloader is off unless ``--offload on``: it copies every partition of the
broker, the direct rows' topics too, so with it on every row also pays for the copy (and
walproxy's rows share their process with it); ``bench/offload_bench.py`` measures it.
A script that prints numbers, not a test: run ``.venv/bin/python bench/produce_bench.py``.
"""

from __future__ import annotations

import argparse
import atexit
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from proxy.dev.cluster import DevCluster, ManagedProcess, free_port, libs_dir

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


def create_topic(
    bootstrap: str, topic: str, partitions: int, config: dict[str, str], replication: str = "1"
) -> None:
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
        replication,
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


def plain_proxy(
    cluster: DevCluster,
    work: Path,
    name: str = "walproxy-no-wal",
    *,
    checkout: Path | None = None,
    **settings: str,
) -> tuple[str, ManagedProcess]:
    """A second walproxy on the same broker, by default with the WAL off: the proxy's own
    overhead. ``settings`` (``WALPROXY_*`` variables) override that, e.g. a WAL with other
    knobs; ``checkout`` runs the walproxy of another source tree (an A/B of two commits in
    one run; it shares this virtualenv's libraries). Returns its bootstrap address and its
    process."""
    node = cluster.broker_nodes[0]
    port = free_port()
    # -P: the working directory must not shadow the other checkout on sys.path.
    command = [sys.executable, *(["-P"] if checkout else []), "-m", "proxy", "run"]
    proc = ManagedProcess(
        name,
        command,
        work / f"{name}.log",
        env={
            **os.environ,
            **({"PYTHONPATH": str(checkout.resolve())} if checkout else {}),
            "WALPROXY_PROXY_LISTEN": f"127.0.0.1:{port}",
            "WALPROXY_PROXY_UPSTREAM": f"127.0.0.1:{node.client_port}",
            "WALPROXY_PROXY_NODE_ID": str(node.node_id),
            "WALPROXY_WAL_ENABLED": "false",
            "WALPROXY_OFFLOAD_ENABLED": "false",  # copying is the sidecar's job (--offload)
            "WALPROXY_ADMIN_LISTEN": "",
            "WALPROXY_LOG_LEVEL": "warning",
            **settings,
        },
    )
    proc.start()
    atexit.register(proc.kill)
    cluster.wait_port(port)
    return f"127.0.0.1:{port}", proc


def load_arguments(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The load options every produce benchmark takes."""
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--record-size", type=int, default=1024)
    ap.add_argument("--partitions", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--half-seconds", type=int, default=15, help="length of the fixed-rate runs")
    return ap


def main() -> None:
    ap = load_arguments(argparse.ArgumentParser(description=__doc__))
    ap.add_argument("--offload", choices=("on", "off"), default="off")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="walproxy-bench-", dir="/var/tmp"))
    offload = {"WALPROXY_OFFLOAD_ENABLED": "true" if args.offload == "on" else "false"}
    with DevCluster(work, brokers=1, heap="2g", proxy_env=offload) as cluster:
        # (name, bootstrap, topic config): Kafka's page-cache ack, Kafka's own fsync-before-ack
        # (flush.messages=1), and walproxy (Direct IO WAL, group commit, then Kafka).
        plain, _ = plain_proxy(cluster, work)
        targets = [
            ("direct acks=all", cluster.direct_bootstrap, {}),
            ("direct flush.messages=1", cluster.direct_bootstrap, {"flush.messages": "1"}),
            ("walproxy", cluster.bootstrap, {}),
            ("walproxy wal.enabled=false", plain, {}),
        ]
        full: dict[str, list[Result]] = {name: [] for name, _, _ in targets}
        for rnd in range(args.rounds):
            for i, (name, bootstrap, config) in enumerate(targets):
                topic = f"bench-{i}-{rnd}"
                create_topic(cluster.direct_bootstrap, topic, args.partitions, config)
                full[name].append(
                    producer_perf(bootstrap, topic, args.records, args.record_size, -1, [])
                )
        best = {k: max(v, key=lambda r: r.records_per_s) for k, v in full.items()}
        half_rate = int(best["direct acks=all"].records_per_s / 2)
        half: dict[str, Result] = {}
        for i, (name, bootstrap, config) in enumerate(targets):
            topic = f"bench-{i}-half"
            create_topic(cluster.direct_bootstrap, topic, args.partitions, config)
            n = half_rate * args.half_seconds
            half[name] = producer_perf(bootstrap, topic, n, args.record_size, half_rate, [])
    print(
        f"\nProducerPerformance (kafka-tools), {args.record_size} B records, "
        f"{args.partitions} partitions, RF=1, acks=all, linger.ms=5; full load: best of "
        f"{args.rounds} x {args.records} records; latency at a fixed {half_rate} rec/s "
        f"(half of direct's best) for {args.half_seconds} s; sidecar offloader {args.offload}"
    )
    print(
        f"{'target':<25} {'rec/s':>9} {'MB/s':>7} {'vs direct':>9} | "
        f"{'p50 ms':>6} {'p99 ms':>6} {'p999 ms':>7} (at half load)"
    )
    base = best["direct acks=all"].records_per_s
    for name, _, _ in targets:
        b, h = best[name], half[name]
        print(
            f"{name:<25} {b.records_per_s:>9.0f} {b.mb_per_s:>7.1f} {b.records_per_s / base:>9.2f}"
            f" | {h.p50:>6.0f} {h.p99:>6.0f} {h.p999:>7.0f}"
        )
    print(
        "all full-load runs (rec/s): "
        + "; ".join(f"{k}: {[round(r.records_per_s) for r in v]}" for k, v in full.items())
    )
    wal = best["walproxy"].records_per_s
    print(
        f"walproxy / direct = {wal / base:.2f} (target >= 0.7); walproxy / flush.messages=1 = "
        f"{wal / best['direct flush.messages=1'].records_per_s:.2f} (target >= 2); "
        f"p99 at half load: walproxy {half['walproxy'].p99:.0f} ms vs direct "
        f"{half['direct acks=all'].p99:.0f} ms (target <= direct + 2 ms); proxy alone "
        f"(WAL off) / direct = "
        f"{best['walproxy wal.enabled=false'].records_per_s / base:.2f}"
    )


if __name__ == "__main__":
    main()
