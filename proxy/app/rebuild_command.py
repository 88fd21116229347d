"""``walproxy rebuild``: its flags and its report (the work is :func:`offload.rebuild.rebuild`)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from offload.kafka_logdir import DEFAULT_SEGMENT_BYTES
from offload.layout import LayoutError
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
    p.add_argument("--wal-dir", help="default: wal.dir")
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
    if cfg.wal.backend == "s3" and not (args.no_wal or args.wal_dir):
        # Reading wal.dir here would find no WAL and rebuild without the acknowledged tail.
        print(
            "walproxy rebuild: wal.backend = s3: rebuild does not read an S3 WAL yet, so the "
            "acknowledged records not yet offloaded would be missing; pass --no-wal to "
            "rebuild from the offload target alone (and lose them), or --wal-dir DIR",
            file=sys.stderr,
        )
        return 2
    wal_dir = None if args.no_wal else (args.wal_dir or cfg.wal.dir)
    try:
        store = open_store(
            target,
            endpoint_url=args.s3_endpoint_url or cfg.offload.s3_endpoint_url,
            region=args.s3_region or cfg.offload.s3_region,
        )
    except LayoutError as exc:
        print(f"walproxy rebuild: {exc}", file=sys.stderr)
        return 2
    opts = RebuildOptions(
        log_dir=Path(args.log_dir),
        node_id=node_id,
        cluster_id=args.cluster_id,
        metadata_log_dir=Path(args.metadata_log_dir) if args.metadata_log_dir else None,
        wal_dir=wal_dir,
        segment_bytes=args.segment_bytes,
        allow_gaps=args.allow_gaps,
        parallel=args.parallel,
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
