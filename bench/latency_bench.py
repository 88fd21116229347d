"""Produce latency and cost of durability: walproxy vs Kafka, and vs Kafka's own fsync.

One run, one broker, four targets, alternated in blocks so drift hits all of them alike:

- ``direct``: the broker's DIRECT listener (page-cache ack);
- ``flush=1``: the same broker, topics with ``flush.messages=1`` (Kafka fsyncs before the ack:
  the durability walproxy gives, the way Kafka gives it);
- ``proxy, WAL off``: a walproxy with ``wal.enabled = false`` (the proxy's own cost);
- ``walproxy``: the sidecar (Direct IO WAL, group commit).

Workloads (1 KiB records, acks=all, idempotent, confluent-kafka/librdkafka or Kafka's
ProducerPerformance):

1. closed loop: one record at a time (``linger.ms=0``), each waits for its ack: RTT;
2. N synchronous producers (N = 1, 8, 50) into one partition, each waiting for its ack before
   sending the next: wall time, records/s and per-record latency;
3. ProducerPerformance at full load, and at a fixed half of direct's rate.

For each row it samples the broker's and the proxy's CPU time (``/proc/PID/stat``) and prints
CPU-seconds per GB produced. With ``--plot FILE`` it writes the latency CDFs of the closed
loop and of N = 50 (matplotlib: ``.venv/bin/pip install -e '.[bench]'``). ``--compare-io``
adds walproxies with each fixed ``wal.io``; ``--baseline CHECKOUT`` adds the walproxy of
another source tree (``git worktree add /tmp/before <rev>``): before and after in one run.

A script that prints numbers, not a test: ``.venv/bin/python bench/latency_bench.py``. Run it
on a quiet machine; absolute times on shared machines are noise, the ratios from one run are not.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from confluent_kafka import KafkaException, Producer
from produce_bench import Result, create_topic, plain_proxy, producer_perf

from proxy.dev.cluster import DevCluster, free_port

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (fields 14 and 15 of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


@dataclass
class Target:
    name: str
    bootstrap: str
    topic_config: dict[str, str]
    proxy_pid: int | None  # the walproxy process this target's requests pass, if any
    metrics_url: str | None = None  # its /metrics, for the per-stage breakdown


@dataclass
class Row:
    """One workload on one target, over all its blocks."""

    latencies_ms: list[float] = field(default_factory=list)
    records: int = 0
    seconds: float = 0.0
    broker_cpu: float = 0.0
    proxy_cpu: float = 0.0
    stages: dict[str, tuple[float, float]] = field(default_factory=dict)  # (sum s, count)

    def add_stages(
        self, before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]
    ) -> None:
        for name, (total, count) in after.items():
            t0, c0 = before.get(name, (0.0, 0.0))
            t, c = self.stages.get(name, (0.0, 0.0))
            self.stages[name] = (t + total - t0, c + count - c0)

    def add(
        self,
        latencies_ms: list[float],
        seconds: float,
        cpu: tuple[float, float],
        stages: tuple[dict[str, tuple[float, float]], dict[str, tuple[float, float]]] = ({}, {}),
    ) -> None:
        self.add_stages(*stages)
        self.latencies_ms += latencies_ms
        self.records += len(latencies_ms)
        self.seconds += seconds
        self.broker_cpu += cpu[0]
        self.proxy_cpu += cpu[1]

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0


#: The produce path's stages, as walproxy's histograms time them (docs/benchmarks.md).
STAGES = {
    "wal": "walproxy_produce_wal_seconds",
    "forward": "walproxy_produce_forward_seconds",
    "broker": "walproxy_produce_upstream_seconds",
    "outcome": "walproxy_produce_outcome_seconds",
    "total": "walproxy_request_latency_seconds",  # api="produce": arrival to written
    "sync": "walproxy_wal_sync_latency_seconds",  # per group: the write + sync itself
}


def scrape_stages(url: str | None) -> dict[str, tuple[float, float]]:
    """(sum, count) of each stage histogram on a walproxy's /metrics."""
    if url is None:
        return {}
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    wanted = {v: k for k, v in STAGES.items()}
    out: dict[str, tuple[float, float]] = {}
    for family in text_string_to_metric_families(text):
        stage = wanted.get(family.name)
        if stage is None:
            continue
        total = count = 0.0
        for sample in family.samples:
            if stage == "total" and sample.labels.get("api") != "produce":
                continue
            if sample.name.endswith("_sum"):
                total += sample.value
            elif sample.name.endswith("_count"):
                count += sample.value
        out[stage] = (total, count)
    return out


def print_stages(title: str, rows: dict[str, Row]) -> None:
    """Mean time per stage of each walproxy target: where a produce request's time goes."""
    lines = []
    for name, r in rows.items():
        if not r.stages:
            continue
        mean = {k: (t / c * 1000 if c else float("nan")) for k, (t, c) in r.stages.items()}
        parts = sum(mean.get(k, 0.0) for k in ("wal", "forward", "broker", "outcome"))
        rest = mean.get("total", float("nan")) - parts
        lines.append(
            f"  {name:<20} "
            + " ".join(
                f"{mean.get(k, float('nan')):>8.3f}"
                for k in ("wal", "forward", "broker", "outcome")
            )
            + f" {rest:>8.3f} {mean.get('total', float('nan')):>8.3f}"
            f" | {mean.get('sync', float('nan')):>6.3f}"
        )
    if lines:
        print(f"  stages of {title}, mean ms:")
        print(
            f"  {'':<20} {'wal':>8} {'forward':>8} {'broker':>8} {'outcome':>8} {'respond':>8} "
            f"{'total':>8} | {'sync':>6}"
        )
        print("\n".join(lines))


def _topic(t: Target) -> str:
    return "lat-" + re.sub(r"[^a-z0-9]+", "-", t.name)


def _producer(bootstrap: str) -> Producer:
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 0,
            "socket.nagle.disable": True,
            "log_level": 3,
        }
    )


def synchronous_sends(bootstrap: str, topic: str, count: int, value: bytes) -> list[float]:
    """``count`` records from one producer, each sent after the previous one's ack."""
    producer = _producer(bootstrap)
    errors: list[str] = []

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    producer.produce(topic, value, partition=0, on_delivery=delivered)  # connect, warm up
    producer.flush(30)
    out = []
    for _ in range(count):
        t0 = time.perf_counter()
        producer.produce(topic, value, partition=0, on_delivery=delivered)
        if producer.flush(30) != 0:
            raise KafkaException(f"a record was not acknowledged within 30 s on {topic}")
        out.append((time.perf_counter() - t0) * 1000)
    if errors:
        raise KafkaException(f"{len(errors)} delivery errors on {topic}: {errors[0]}")
    return out


def timed_sends(bootstrap: str, topic: str, count: int, value: bytes) -> tuple[list[float], float]:
    """The closed loop: its latencies and the time they add up to (not the client's start)."""
    latencies = synchronous_sends(bootstrap, topic, count, value)
    return latencies, sum(latencies) / 1000


def concurrent_synchronous(
    bootstrap: str, topic: str, producers: int, total: int, value: bytes
) -> tuple[list[float], float]:
    """``producers`` threads, one producer each, ``total`` records in all; wall time of the
    sends (connections are made and warmed before the clock starts)."""
    per = total // producers
    results: list[list[float]] = [[] for _ in range(producers)]
    failures: list[BaseException] = []
    start = threading.Barrier(producers + 1)

    def run(i: int) -> None:
        try:
            producer = _producer(bootstrap)
            producer.produce(topic, value, partition=0)
            producer.flush(30)
            start.wait()
            for _ in range(per):
                t0 = time.perf_counter()
                producer.produce(topic, value, partition=0)
                if producer.flush(30) != 0:
                    raise KafkaException("a record was not acknowledged within 30 s")
                results[i].append((time.perf_counter() - t0) * 1000)
        except BaseException as exc:  # reported by the caller, after join
            failures.append(exc)
            start.abort()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(producers)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if failures:
        raise failures[0]
    return [x for r in results for x in r], wall


def measured(
    broker_pid: int, target: Target, work: Callable[[], tuple[list[float], float]]
) -> tuple[
    list[float],
    float,
    tuple[float, float],
    tuple[dict[str, tuple[float, float]], dict[str, tuple[float, float]]],
]:
    b0 = cpu_seconds(broker_pid)
    p0 = cpu_seconds(target.proxy_pid) if target.proxy_pid else 0.0
    s0 = scrape_stages(target.metrics_url)
    latencies, seconds = work()
    b1 = cpu_seconds(broker_pid)
    p1 = cpu_seconds(target.proxy_pid) if target.proxy_pid else 0.0
    stages = (s0, scrape_stages(target.metrics_url))
    return latencies, seconds, (b1 - b0, p1 - p0), stages


def _cpu_per_gb(cpu: float, records: int, size: int) -> str:
    gb = records * size / 1e9
    return f"{cpu / gb:7.1f}" if gb and cpu else "      -"


def _ratio(r: Row, base: Row | None) -> str:
    return f"{r.rate / base.rate:.2f}" if base is not None and base.rate else "-"


def print_rows(title: str, rows: dict[str, Row], size: int, base: str = "direct") -> None:
    print(f"\n{title}")
    print(
        f"  {'target':<16} {'rec/s':>8} {'vs direct':>9} {'vs flush=1':>10} | {'p50':>6} "
        f"{'p99':>6} {'p999':>7} ms | CPU-s/GB broker {'proxy':>7}"
    )
    for name, r in rows.items():
        print(
            f"  {name:<16} {r.rate:>8.0f} {_ratio(r, rows.get(base)):>9} "
            f"{_ratio(r, rows.get('flush=1')):>10} | {r.quantile(0.5):>6.2f} "
            f"{r.quantile(0.99):>6.2f} {r.quantile(0.999):>7.2f}    | "
            f"{_cpu_per_gb(r.broker_cpu, r.records, size)}       "
            f"{_cpu_per_gb(r.proxy_cpu, r.records, size)}"
        )


def plot(path: Path, curves: dict[str, dict[str, Row]]) -> None:
    import matplotlib  # optional: the bench extra

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(6 * len(curves), 4.5), squeeze=False)
    for ax, (title, rows) in zip(axes[0], curves.items(), strict=True):
        for name, r in rows.items():
            xs = sorted(r.latencies_ms)
            ys = [(i + 1) / len(xs) for i in range(len(xs))]
            ax.plot(xs, ys, label=name)
        ax.set_xscale("log")
        ax.set_xlabel("latency (ms, log scale)")
        ax.set_ylabel("fraction of records")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"\nwrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--record-size", type=int, default=1024)
    ap.add_argument("--closed-loop", type=int, default=2000, help="records per target")
    ap.add_argument("--concurrent-records", type=int, default=20_000, help="per N and target")
    ap.add_argument("--concurrency", default="1,8,50")
    ap.add_argument("--blocks", type=int, default=2, help="alternations of the targets")
    ap.add_argument("--perf-records", type=int, default=200_000)
    ap.add_argument("--perf-partitions", type=int, default=16)
    ap.add_argument("--half-seconds", type=int, default=15)
    ap.add_argument("--plot", type=Path, help="write the latency CDFs here (PNG)")
    ap.add_argument(
        "--no-perf", action="store_true", help="skip the ProducerPerformance rows (quick runs)"
    )
    ap.add_argument(
        "--compare-io",
        action="store_true",
        help="also walproxies with wal.io = inline and = thread (the sidecar runs the default)",
    )
    ap.add_argument(
        "--baseline",
        type=Path,
        metavar="CHECKOUT",
        help="also a walproxy (WAL on, defaults) from another source tree, e.g. a git worktree "
        "of an older commit: a before/after comparison in one run",
    )
    ap.add_argument(
        "--targets",
        help="a subset to run: direct,flush=1,proxy,walproxy,baseline (quick comparisons)",
    )
    args = ap.parse_args()
    value = os.urandom(args.record_size)
    levels = [int(n) for n in args.concurrency.split(",")]
    work = Path(tempfile.mkdtemp(prefix="walproxy-latency-", dir="/var/tmp"))
    with DevCluster(
        work, brokers=1, heap="2g", proxy_env={"WALPROXY_OFFLOAD_ENABLED": "false"}
    ) as cluster:
        node = cluster.broker_nodes[0]
        assert node.process is not None and node.proxy is not None
        broker_pid = node.process.pid
        plain, plain_process = plain_proxy(cluster, work)
        targets = [
            Target("direct", cluster.direct_bootstrap, {}, None),
            Target("flush=1", cluster.direct_bootstrap, {"flush.messages": "1"}, None),
            Target("proxy, WAL off", plain, {}, plain_process.pid),
            Target(
                "walproxy",
                cluster.bootstrap,
                {},
                node.proxy.pid,
                f"http://127.0.0.1:{node.admin_port}/metrics" if node.admin_port else None,
            ),
        ]
        if args.compare_io:  # the same WAL with each fixed wal.io beside the default (auto)
            for io in ("inline", "thread"):
                admin = free_port()
                address, process = plain_proxy(
                    cluster,
                    work,
                    f"walproxy-io-{io}",
                    WALPROXY_WAL_ENABLED="true",
                    WALPROXY_WAL_DIR=str(work / f"wal-io-{io}"),
                    WALPROXY_WAL_IO=io,
                    WALPROXY_ADMIN_LISTEN=f"127.0.0.1:{admin}",
                )
                targets.append(
                    Target(
                        f"walproxy, io={io}",
                        address,
                        {},
                        process.pid,
                        f"http://127.0.0.1:{admin}/metrics",
                    )
                )
        if args.baseline:
            admin = free_port()
            address, process = plain_proxy(
                cluster,
                work,
                "walproxy-baseline",
                checkout=args.baseline,
                WALPROXY_WAL_ENABLED="true",
                WALPROXY_WAL_DIR=str(work / "wal-baseline"),
                WALPROXY_ADMIN_LISTEN=f"127.0.0.1:{admin}",
            )
            targets.append(
                Target(
                    "baseline",
                    address,
                    {},
                    process.pid,
                    f"http://127.0.0.1:{admin}/metrics",
                )
            )
        if args.targets:
            wanted = args.targets.split(",")
            targets = [t for t in targets if t.name.split(",")[0] in wanted]
        for t in targets:  # one single-partition topic per target, made once
            create_topic(cluster.direct_bootstrap, _topic(t), 1, t.topic_config)
        closed = {t.name: Row() for t in targets}
        concurrent = {n: {t.name: Row() for t in targets} for n in levels}
        for _ in range(args.blocks):
            for t in targets:
                topic = _topic(t)
                n = args.closed_loop // args.blocks
                closed[t.name].add(
                    *measured(broker_pid, t, partial(timed_sends, t.bootstrap, topic, n, value))
                )
                for level in levels:
                    count = args.concurrent_records // args.blocks
                    run = partial(concurrent_synchronous, t.bootstrap, topic, level, count, value)
                    concurrent[level][t.name].add(*measured(broker_pid, t, run))
        perf_full: dict[str, Row] = {}
        perf_half: dict[str, Row] = {}
        for i, t in enumerate([] if args.no_perf else targets):
            topic = f"perf-{i}"
            create_topic(cluster.direct_bootstrap, topic, args.perf_partitions, t.topic_config)
            r = Row()
            res, secs, cpu = _perf(broker_pid, t, topic, args.perf_records, args.record_size, -1)
            r.records, r.seconds, (r.broker_cpu, r.proxy_cpu) = args.perf_records, secs, cpu
            r.latencies_ms = [res.p50, res.p99, res.p999]  # ProducerPerformance's own quantiles
            perf_full[t.name] = r
        half_rate = int(perf_full["direct"].rate / 2) if perf_full else 0
        for i, t in enumerate([] if args.no_perf else targets):
            topic = f"perf-half-{i}"
            create_topic(cluster.direct_bootstrap, topic, args.perf_partitions, t.topic_config)
            n = half_rate * args.half_seconds
            res, secs, cpu = _perf(broker_pid, t, topic, n, args.record_size, half_rate)
            r = Row(records=n, seconds=secs, broker_cpu=cpu[0], proxy_cpu=cpu[1])
            r.latencies_ms = [res.p50, res.p99, res.p999]
            perf_half[t.name] = r
    size = args.record_size
    print(f"\n{size} B records, acks=all, idempotent, 1 broker, RF=1; {args.blocks} blocks")
    if args.baseline:
        print(f"baseline: the walproxy of {args.baseline.resolve()} (WAL on, defaults)")
    print_rows(f"closed loop, one record at a time ({args.closed_loop} per target)", closed, size)
    print_stages("the closed loop", closed)
    for n in levels:
        print_rows(f"{n} synchronous producer(s), one partition", concurrent[n], size)
        print_stages(f"{n} synchronous producer(s)", concurrent[n])
    if perf_full:
        print_perf("ProducerPerformance, full load", perf_full, size)
        print_perf(f"ProducerPerformance at {half_rate} rec/s (half of direct)", perf_half, size)
    if "direct" not in closed or "walproxy" not in closed or "flush=1" not in closed:
        return  # a subset run: no targets to judge
    direct, wal = closed["direct"], closed["walproxy"]
    print("\ntargets (issue 13):")
    print(
        f"  closed loop: walproxy adds {wal.quantile(0.5) - direct.quantile(0.5):+.2f} ms p50 "
        f"(<= +0.5), {wal.quantile(0.99) - direct.quantile(0.99):+.2f} ms p99 (<= +1.5)"
    )
    top = concurrent[max(levels)]
    wal_top = top["walproxy"].rate
    print(
        f"  {max(levels)} synchronous producers: walproxy {wal_top / top['direct'].rate:.2f}x "
        f"direct (>= 0.6), {wal_top / top['flush=1'].rate:.2f}x flush=1 (>= 3)"
    )
    if perf_full:
        wal_full = perf_full["walproxy"].rate
        print(
            f"  ProducerPerformance: walproxy {wal_full / perf_full['direct'].rate:.2f}x direct "
            f"at full load (>= 0.9); half-load p99 {perf_half['walproxy'].latencies_ms[1]:.0f} "
            f"ms vs direct {perf_half['direct'].latencies_ms[1]:.0f} ms (<= direct)"
        )
    if args.plot:
        plot(
            args.plot,
            {
                "closed loop (one record at a time)": closed,
                f"{max(levels)} synchronous producers, one partition": top,
            },
        )


def _perf(
    broker_pid: int, t: Target, topic: str, records: int, size: int, rate: int
) -> tuple[Result, float, tuple[float, float]]:
    """One ProducerPerformance run: its result, its duration, (broker, proxy) CPU seconds."""
    b0 = cpu_seconds(broker_pid)
    p0 = cpu_seconds(t.proxy_pid) if t.proxy_pid else 0.0
    res = producer_perf(t.bootstrap, topic, records, size, rate, ["enable.idempotence=true"])
    secs = records / res.records_per_s  # its own clock: JVM start-up is not the target's
    b1 = cpu_seconds(broker_pid)
    p1 = cpu_seconds(t.proxy_pid) if t.proxy_pid else 0.0
    return res, secs, (b1 - b0, p1 - p0)


def print_perf(title: str, rows: dict[str, Row], size: int) -> None:
    print(f"\n{title}")
    print(
        f"  {'target':<16} {'rec/s':>8} {'vs direct':>9} {'vs flush=1':>10} | {'p50':>6} "
        f"{'p99':>6} {'p999':>7} ms | CPU-s/GB broker {'proxy':>7}"
    )
    for name, r in rows.items():
        p50, p99, p999 = r.latencies_ms
        print(
            f"  {name:<16} {r.rate:>8.0f} {_ratio(r, rows.get('direct')):>9} "
            f"{_ratio(r, rows.get('flush=1')):>10} | {p50:>6.0f} {p99:>6.0f} {p999:>7.0f}    | "
            f"{_cpu_per_gb(r.broker_cpu, r.records, size)}       "
            f"{_cpu_per_gb(r.proxy_cpu, r.records, size)}"
        )


if __name__ == "__main__":
    main()
