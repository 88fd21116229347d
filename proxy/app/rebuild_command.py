"""``walproxy rebuild``: its flags and its report (the work is :func:`offload.rebuild.rebuild`)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import wal
from offload.kafka_logdir import DEFAULT_SEGMENT_BYTES
from offload.layout import LayoutError, parse_target
from offload.rebuild import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_TRANSIENT,
    RebuildError,
    RebuildOptions,
    rebuild,
)
from offload.store import open_store
from proxy.config import Config


def add_rebuild_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-dir", required=True, help="the broker's (empty) log directory")
    p.add_argument(
        "--metadata-log-dir",
        help="the broker's metadata.log.dir when it is not --log-dir (gets meta.properties)",
    )
    p.add_argument("--node-id", type=int, help="default: proxy.node_id")
    p.add_argument("--cluster-id", help="default: the target's only cluster with this node")
    p.add_argument(
        "--wal-dir",
        help="a WAL directory or an S3 WAL's s3://bucket/prefix; default: wal.dir, or "
        "wal.s3_target with wal.backend = s3",
    )
    p.add_argument(
        "--no-wal",
        action="store_true",
        help="rebuild from the target alone (acknowledged records not yet offloaded are lost)",
    )
    p.add_argument("--target", help="default: offload.target")
    p.add_argument("--s3-endpoint-url", help="default: offload.s3_endpoint_url")
    p.add_argument("--s3-region", help="default: offload.s3_region")
    p.add_argument(
        "--segment-bytes",
        type=int,
        default=DEFAULT_SEGMENT_BYTES,
        help="roll .log files at this size (the broker's log.segment.bytes; default 1 GiB)",
    )
    p.add_argument(
        "--allow-gaps",
        action="store_true",
        help="write the WAL tail even where offsets between it and the S3 copy are missing",
    )
    p.add_argument("--parallel", type=int, default=8, help="concurrent downloads")
    p.add_argument(
        "--offsets-topic-partitions",
        type=int,
        help="the cluster's offsets.topic.num.partitions: which __consumer_offsets partition "
        "holds a group's commits (default: the count the offloader recorded in broker.json)",
    )


def _configured_wal(cfg: Config) -> str:
    """Where the node's WAL is: ``wal.dir``, or the S3 WAL's prefix (a node with
    ``wal.backend = "s3"`` keeps no WAL on local disk)."""
    return cfg.wal.s3_target if cfg.wal.backend == "s3" else cfg.wal.dir


def _s3_wal_store(url: str, endpoint_url: str, region: str) -> wal.ObjectStore:
    """The S3 WAL at `url` (the endpoint and region are the offload target's, as for
    ``walproxy run``); botocore retries each GET, the reader retries on top."""
    t = parse_target(url, "--wal-dir")
    return wal.S3Store(t.bucket, t.prefix, endpoint_url=endpoint_url or None, region=region or None)


def rebuild_command(cfg: Config, args: argparse.Namespace) -> int:
    """``walproxy rebuild``: exit 0 done, 1 refused (data problem), 2 usage, 3 transient."""
    node_id = args.node_id if args.node_id is not None else cfg.proxy.node_id
    if node_id is None or node_id < 0:
        print("walproxy rebuild: proxy.node_id: set it (or pass --node-id)", file=sys.stderr)
        return 2
    target = args.target or cfg.offload.target
    if not target:
        print("walproxy rebuild: offload.target: set it (or pass --target)", file=sys.stderr)
        return 2
    wal_dir = None if args.no_wal else (args.wal_dir or _configured_wal(cfg))
    if not (args.no_wal or wal_dir):
        print(
            "walproxy rebuild: wal.s3_target: set it (or pass --wal-dir, or --no-wal)",
            file=sys.stderr,
        )
        return 2
    endpoint_url = args.s3_endpoint_url or cfg.offload.s3_endpoint_url
    region = args.s3_region or cfg.offload.s3_region
    try:
        store = open_store(target, endpoint_url=endpoint_url, region=region)
        wal_store = (
            _s3_wal_store(wal_dir, endpoint_url, region)
            if wal_dir and wal_dir.startswith("s3://")
            else None
        )
    except LayoutError as exc:
        print(f"walproxy rebuild: {exc}", file=sys.stderr)
        return 2
    opts = RebuildOptions(
        log_dir=Path(args.log_dir),
        node_id=node_id,
        cluster_id=args.cluster_id,
        metadata_log_dir=Path(args.metadata_log_dir) if args.metadata_log_dir else None,
        wal_dir=None if wal_store is not None else wal_dir,
        wal_store=wal_store,
        segment_bytes=args.segment_bytes,
        allow_gaps=args.allow_gaps,
        parallel=args.parallel,
        offsets_partitions=args.offsets_topic_partitions,
        gateway_wal=cfg.gateway.enabled,
    )
    print(
        f"rebuild: node {node_id} from {store.describe()} into {opts.log_dir}"
        + (f" + WAL {wal_dir}" if wal_dir else " (no WAL)"),
        flush=True,
    )
    try:
        report = rebuild(store, opts)
    except RebuildError as exc:
        print(
            f"walproxy rebuild: refused: {exc}"
            if exc.exit_code == EXIT_REFUSED
            else f"walproxy rebuild: {exc}; re-run to resume",
            file=sys.stderr,
        )
        return exc.exit_code
    except OSError as exc:
        print(f"walproxy rebuild: {exc}; re-run to resume", file=sys.stderr)
        return EXIT_TRANSIENT
    print(json.dumps({**asdict(report), "mb_per_s": round(report.mb_per_s, 1)}, indent=1))
    return EXIT_OK
