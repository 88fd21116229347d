"""Where a sidecar's CPU goes on the produce path: one broker, one walproxy under cProfile.

Runs one workload of ``bench/latency_bench.py`` (``--workload closed``: one record at a
time; ``concurrent``: ``--producers`` synchronous producers into one partition) through a
sidecar started under ``python -m cProfile``, then prints the proxy's CPU per record from
``/proc/PID/stat`` (with the profiler's own overhead, so compare runs of this script, not
with latency_bench), the share of the trio thread's time by area (trio's scheduler, sockets,
the WAL, metrics, the connection, the produce path, the Kafka codecs) and the top functions.

``.venv/bin/python bench/profile_produce.py --workload concurrent --producers 50``; add
``--wal off`` for the proxy's own cost. py-spy cannot attach to this machine's statically
linked CPython ("Failed to find python version"), hence cProfile: it sees the trio thread
only, which is where the proxy's Python runs (with ``wal.io = thread`` the writes run in
worker threads it does not see).
"""

from __future__ import annotations

import argparse
import os
import pstats
import sys
import tempfile
from pathlib import Path

from latency_bench import concurrent_synchronous, cpu_seconds, timed_sends
from produce_bench import create_topic

from proxy.dev.cluster import DevCluster

#: Areas of the profile, by where a function lives (first match wins).
AREAS = [
    ("idle (epoll wait)", ("'select.epoll' objects",)),
    ("disk (pwrite/fdatasync)", ("posix.pwrite", "posix.fdatasync", "posix.fsync")),
    ("socket syscalls", ("'_socket.socket' objects",)),
    ("start-up (imports)", ("builtins.compile", "marshal.loads", "<frozen", "builtins.exec")),
    ("metrics", ("prometheus_client",)),
    ("WAL", ("/wal/",)),
    ("connection", ("/proxy/net/",)),
    ("produce path", ("/proxy/durable/",)),
    ("Kafka codecs", ("/proxy/kafka/", "/kio/")),
    ("trio", ("/trio/", "/outcome/", "trio.", "outcome.", "random.py", "contextvars")),
]


def by_area(stats: pstats.Stats) -> dict[str, float]:
    """Self time per area (cProfile's tottime), seconds."""
    out: dict[str, float] = {}
    for (path, _line, name), row in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{path}:{name}"
        area = next((a for a, keys in AREAS if any(k in where for k in keys)), "other")
        out[area] = out.get(area, 0.0) + row[2]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workload", choices=["closed", "concurrent"], default="closed")
    ap.add_argument("--records", type=int, default=3000)
    ap.add_argument("--producers", type=int, default=50)
    ap.add_argument("--record-size", type=int, default=1024)
    ap.add_argument("--wal", choices=["on", "off"], default="on")
    ap.add_argument("--io", choices=["auto", "inline", "thread"], default="auto", help="wal.io")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="walproxy-profile-", dir="/var/tmp"))
    out = work / "walproxy.prof"
    value = os.urandom(args.record_size)
    env = {
        "WALPROXY_OFFLOAD_ENABLED": "false",
        "WALPROXY_WAL_ENABLED": "true" if args.wal == "on" else "false",
        "WALPROXY_WAL_IO": args.io,
    }
    command = [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "proxy"]
    with DevCluster(work, brokers=1, heap="1g", proxy_env=env, proxy_command=command) as cluster:
        node = cluster.broker_nodes[0]
        assert node.proxy is not None and node.proxy.pid is not None
        create_topic(cluster.direct_bootstrap, "profile", 1, {})
        c0 = cpu_seconds(node.proxy.pid)
        if args.workload == "closed":
            latencies, seconds = timed_sends(cluster.bootstrap, "profile", args.records, value)
        else:
            latencies, seconds = concurrent_synchronous(
                cluster.bootstrap, "profile", args.producers, args.records, value
            )
        cpu = cpu_seconds(node.proxy.pid) - c0
    latencies.sort()
    n = len(latencies)
    print(
        f"\n{args.workload} ({args.producers if args.workload == 'concurrent' else 1} "
        f"producer(s)), WAL {args.wal}, io {args.io}: {n} records in {seconds:.1f} s, "
        f"p50 {latencies[n // 2]:.2f} ms; proxy CPU {cpu / n * 1e6:.0f} us per record "
        "(under the profiler)"
    )
    stats = pstats.Stats(str(out))
    areas = by_area(stats)
    busy = sum(v for k, v in areas.items() if not k.startswith("idle"))
    print(f"\ntrio thread, self time by area (busy {busy:.2f} s = {busy / n * 1e6:.0f} us/record):")
    for area, secs in sorted(areas.items(), key=lambda kv: -kv[1]):
        share = f"{secs / busy * 100:5.1f} %" if not area.startswith("idle") else "      "
        print(f"  {area:<24} {secs:7.2f} s {share}  {secs / n * 1e6:7.1f} us/record")
    print()
    stats.sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
