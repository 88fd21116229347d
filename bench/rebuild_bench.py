#!/usr/bin/env python3
"""Rebuild benchmark: how fast ``walproxy rebuild`` restores a log directory.

Prints numbers; it is not a test. Seeds an offload target with ``--gib`` of Kafka record
batches (``--partitions`` partitions, ``--object-mib`` objects, random values so zstd has
nothing to win) through the offload package's own commit functions, then times
:func:`offload.rebuild.rebuild` into an empty log directory (broker start excluded):
download, verification (size, CRC32C of every object and every batch, offsets, epochs)
and the fsynced write. Targets: ``file`` (a local directory) and ``s3`` (moto's S3 server
on loopback, a real HTTP S3 API; it is single-process Python, so it is the slower side).

    .venv/bin/python bench/rebuild_bench.py                 # 1 GiB, file and s3
    .venv/bin/python bench/rebuild_bench.py --gib 0.25 --targets s3 --compression zstd
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from offload.rebuild import RebuildOptions, rebuild
from offload.store import FileStore, ObjectStore, S3Store
from offload.wal_tail import patch_batch
from proxy.kafka.record_batch import build_batch
from tests.offload.seed import offload_partition, write_broker_info
from tests.s3server import S3_ENV, S3Server

CLUSTER = "bEnChClUsTeRiD0000000A"


def partition_log(size: int, records_per_batch: int, value_bytes: int) -> bytes:
    """About ``size`` bytes of batches with random values, re-based copies of 64 distinct
    templates (64 x ~64 KiB apart is beyond zstd's match window: nothing to compress)."""
    templates = [
        build_batch(
            [os.urandom(value_bytes) for _ in range(records_per_batch)],
            timestamp_ms=int(time.time() * 1000),
            partition_leader_epoch=0,
        )
        for _ in range(64)
    ]
    n = max(1, size // len(templates[0]))
    out = bytearray()
    for i in range(n):
        out += patch_batch(templates[i % 64], i * records_per_batch, 0)
    return bytes(out)


def seed(store: ObjectStore, args: argparse.Namespace) -> int:
    per_partition = int(args.gib * (1 << 30)) // args.partitions
    topics = {}
    total = 0
    for p in range(args.partitions):
        log = partition_log(per_partition, args.records_per_batch, args.value_bytes)
        tid = uuid.uuid4()
        offload_partition(
            store,
            CLUSTER,
            f"bench-{p}",
            tid,
            0,
            log,
            object_bytes=args.object_mib << 20,
            compression=args.compression,
        )
        topics[f"bench-{p}"] = (tid, [0])
        total += len(log)
    write_broker_info(store, CLUSTER, 1, topics)
    return total


def run(name: str, store: ObjectStore, workdir: Path, args: argparse.Namespace) -> None:
    t0 = time.monotonic()
    total = seed(store, args)
    seeded = time.monotonic() - t0
    out = workdir / f"logdir-{name}"
    shutil.rmtree(out, ignore_errors=True)
    progress = io.StringIO()
    t0 = time.monotonic()
    report = rebuild(
        store,
        RebuildOptions(log_dir=out, node_id=1, cluster_id=CLUSTER, parallel=args.parallel),
        out=progress,
    )
    took = time.monotonic() - t0
    mb_s = total / 1e6 / took
    print(
        f"{name:5s} {args.compression:4s}: {total / 2**20:8.1f} MiB in {args.partitions} "
        f"partitions, {report.segments} objects ({report.stored_bytes / 2**20:.1f} MiB stored; "
        f"seeded in {seeded:.1f} s) -> rebuilt in {took:6.2f} s = {mb_s:7.1f} MB/s, "
        f"{took / (total / 2**30):6.2f} s per GiB",
        flush=True,
    )
    shutil.rmtree(out, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--object-mib", type=int, default=8)
    ap.add_argument("--records-per-batch", type=int, default=64)
    ap.add_argument("--value-bytes", type=int, default=1000)
    ap.add_argument("--compression", choices=["none", "zstd"], default="none")
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--targets", default="file,s3")
    ap.add_argument("--dir", default="/var/tmp", help="where the target and log dir go")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="rebuild-bench-", dir=args.dir))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"rebuild bench in {workdir}: {args.gib} GiB, {os.cpu_count()} CPUs, load {load}",
        flush=True,
    )
    try:
        for name in args.targets.split(","):
            if name == "file":
                run("file", FileStore(workdir / "target"), workdir, args)
                shutil.rmtree(workdir / "target", ignore_errors=True)
            elif name == "s3":
                os.environ.update(S3_ENV)
                server = S3Server(workdir / "moto.log").start()
                try:
                    bucket = server.new_bucket()
                    store = S3Store(bucket, "bench/", endpoint_url=server.endpoint_url)
                    run("s3", store, workdir, args)
                finally:
                    server.stop()
            else:
                ap.error(f"unknown target {name!r}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
