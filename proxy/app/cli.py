"""The ``walproxy`` command line."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import structlog
import trio

from proxy import config as config_mod
from proxy.config.flags import RUN_FLAGS
from proxy.ops import logs


def _flag_overrides(args: argparse.Namespace) -> dict[str, str]:
    """The given RUN_FLAGS as environment overrides, so they are parsed and checked alike."""
    out = {}
    for flag, setting in RUN_FLAGS.items():
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            out["WALPROXY_" + setting.replace(".", "_").upper()] = str(value)
    return out


def _run(args: argparse.Namespace) -> int:
    cfg = _load(args.config, {**os.environ, **_flag_overrides(args)})
    if cfg is None:
        return 2
    logs.configure(cfg.log.format, cfg.log.level)
    from proxy.app.server import ProxyServer

    server = ProxyServer(cfg)

    async def main() -> None:
        await server.preflight()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop_on_signals, server.shutdown)
            await server.run()  # returns once drained
            nursery.cancel_scope.cancel()

    from wal import WalError

    try:
        trio.run(main)
    except Exception as raised:
        # From inside the nursery an error comes wrapped in (nested) ExceptionGroups.
        exc = _sole_error(raised)
        if isinstance(exc, config_mod.ConfigError):  # e.g. a broker outside the ranges
            structlog.get_logger("walproxy").error("configuration error", error=str(exc))
            print(f"walproxy: configuration error: {exc}", file=sys.stderr)
            return 2
        if isinstance(exc, (OSError, WalError)):  # e.g. the WAL directory, wal.direct_io = on
            structlog.get_logger("walproxy").error("cannot start", error=str(exc))
            print(f"walproxy: cannot start: {exc}", file=sys.stderr)
            return 1
        raise
    return 0


def _sole_error(exc: BaseException) -> BaseException:
    """The one error inside nested single-member exception groups (else ``exc`` itself)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _load(path: str | None, env: dict[str, str] | None = None) -> config_mod.Config | None:
    """The validated configuration, or None after printing what is wrong (exit status 2)."""
    try:
        return config_mod.load(path, env)
    except config_mod.ConfigError as exc:
        print(f"walproxy: configuration error: {exc}", file=sys.stderr)
        return None


def _repair(args: argparse.Namespace) -> int:
    """Reconcile the WAL with the broker once (no proxying): produce batches, then committed
    offsets; print the report (JSON) and exit 0 if clean, 1 with problems (an acknowledged
    batch or commit not restored), 3 if the broker or the WAL cannot be reached."""
    cfg = _load(args.config)
    if cfg is None:
        return 2
    logs.configure(cfg.log.format, cfg.log.level)
    from proxy.app.wiring import open_configured_wal, own_clients
    from proxy.client.errors import UpstreamError
    from proxy.config import parse_address
    from proxy.durable.produce_path import DurableProduce
    from proxy.durable.reconciler import Reconciler
    from wal import WalError

    async def main() -> int:
        async with open_configured_wal(cfg) as wal, trio.open_nursery() as nursery:
            durable = DurableProduce(wal)
            durable.attach(nursery)
            sidecar = not cfg.gateway.enabled and cfg.proxy.node_id >= 0
            reconciler = Reconciler(
                durable,
                parse_address(cfg.proxy.upstream, "proxy.upstream"),
                node_id=cfg.proxy.node_id if sidecar else None,
                client=own_clients(cfg),  # the whole cluster in gateway mode
            )
            report = await reconciler.reconcile(startup=True)
            report.add_commits(await reconciler.check_commits())  # committed offsets too
        print(json.dumps({k: v for k, v in vars(report).items()}, indent=2))
        return 0 if report.clean else 1

    try:
        return trio.run(main)
    except (WalError, UpstreamError, OSError) as exc:
        print(f"walproxy repair: {exc}", file=sys.stderr)
        return 3


def _offload(args: argparse.Namespace) -> int:
    """The offloader alone (no proxying, no WAL trimming), or ``verify``."""
    cfg = _load(args.config)
    if cfg is None:
        return 2
    logs.configure(cfg.log.format, cfg.log.level)
    from proxy.app import offload_command as offload_cli

    if getattr(args, "offload_command", None) == "verify":
        return offload_cli.verify(cfg, read_objects=not args.manifests_only)
    return offload_cli.run(cfg, _stop_on_signals)


async def _stop_on_signals(stop: Callable[[], None]) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            stop()


def _config_check(args: argparse.Namespace) -> int:
    """Validate FILE (environment applied) and print the effective configuration, masked."""
    from proxy.config.doc import render_toml

    cfg = _load(args.file)
    if cfg is None:
        return 2
    data = config_mod.masked(cfg)
    print(json.dumps(data, indent=2) if args.json else render_toml(data), end="\n")
    return 0


def _status(args: argparse.Namespace) -> int:
    """Print a running instance's /status; exit 0 when it is ready, 1 when not, 3 unreachable."""
    import urllib.error
    import urllib.request

    from proxy.ops.status import render

    url = args.admin
    if url is None:
        cfg = _load(args.config)
        if cfg is None:
            return 2
        if not cfg.admin.listen:
            print("walproxy status: admin.listen is empty (endpoint disabled)", file=sys.stderr)
            return 2
        host, port = config_mod.parse_address(cfg.admin.listen, "admin.listen")
        url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    elif "://" not in url:
        url = f"http://{url}"  # host:port, as admin.listen is written
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/status", timeout=args.timeout) as resp:
            status = json.load(resp)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"walproxy status: cannot read {url}/status: {exc}", file=sys.stderr)
        return 3
    print(json.dumps(status, indent=2) if args.json else render(status))
    return 0 if status.get("ready") else 1


def _dev_up(args: argparse.Namespace) -> int:
    from proxy.dev.cluster import ClusterError, DevCluster, find_repo_root

    repo_root = None  # outside any checkout, WALPROXY_KAFKA_LIBS must name the jars
    # The working directory's checkout, else the one this (editable) install comes from.
    for start in (None, Path(__file__).parent):
        try:
            repo_root = find_repo_root(start)
            break
        except ClusterError:
            continue
    workdir = (
        Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="walproxy-dev-"))
    )
    cluster = DevCluster(
        workdir,
        brokers=args.brokers,
        with_proxy=not args.no_proxy,
        proxy_base_port=args.port,
        admin_base_port=args.admin_port,
        repo_root=repo_root,
    )
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    print(f"starting Kafka ({args.brokers} broker(s)) in {workdir} ...", flush=True)
    try:
        cluster.start()
    except ClusterError as exc:
        print(f"walproxy dev up: {exc}", file=sys.stderr)
        cluster.stop()
        return 1
    print("\nwalproxy dev cluster is up")
    print(f"  bootstrap servers: {cluster.bootstrap}")
    if cluster.with_proxy:
        for node in cluster.broker_nodes:
            print(
                f"  broker {node.node_id}: walproxy {cluster.host}:{node.proxy_port} -> kafka "
                f"{cluster.host}:{node.client_port}; metrics "
                f"http://{cluster.host}:{node.admin_port}/metrics"
            )
            print(f"    write-ahead log: {node.directory / 'walproxy-wal'}")
            print(f"    offload target: {cluster.offload_target(node)}")
    print(f"  cluster id: {cluster.cluster_id}; logs under {workdir}")
    print("Press Ctrl-C to stop.", flush=True)
    try:
        while not stopping:
            for node in cluster.nodes:
                for proc in (node.process, node.proxy):
                    if proc is not None and not proc.alive:
                        print(f"{proc.name} exited:\n{proc.tail()}", file=sys.stderr)
                        stopping = True
            time.sleep(0.5)
    finally:
        print("stopping ...", flush=True)
        cluster.stop()
    return 0


def _rebuild(args: argparse.Namespace) -> int:
    """Restore a broker's log directory from the offload target plus the WAL tail."""
    cfg = _load(args.config)
    if cfg is None:
        return 2
    from proxy.app.rebuild_command import rebuild_command

    return rebuild_command(cfg, args)


def _wal(args: argparse.Namespace) -> int:
    from wal import cli as wal_cli

    return getattr(wal_cli, args.wal_command)(args.directory, endpoint_url=args.endpoint_url)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="walproxy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the proxy")
    run.add_argument("--config", help="TOML configuration file")
    for flag, setting in RUN_FLAGS.items():
        run.add_argument(flag, help=f"override {setting}")
    run.set_defaults(func=_run)

    repair = sub.add_parser(
        "repair",
        help="reconcile the WAL with the broker once; exit 1 if data could not be restored exactly",
    )
    repair.add_argument("--config", help="TOML configuration file")
    repair.set_defaults(func=_repair)

    off = sub.add_parser("offload", help="run the S3 offloader alone (or verify the copy)")
    off.add_argument("--config", help="TOML configuration file")
    off.set_defaults(func=_offload)
    off_sub = off.add_subparsers(dest="offload_command")
    ver = off_sub.add_parser(
        "verify", help="scrub the S3 copy and compare it with the broker; exit 1 on anomalies"
    )
    ver.add_argument("--config", help="TOML configuration file")
    ver.add_argument(
        "--manifests-only", action="store_true", help="check manifests, do not read objects"
    )
    ver.set_defaults(func=_offload)

    cfg = sub.add_parser("config", help="configuration tools")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    check = cfg_sub.add_parser("check", help="validate a file and print the effective config")
    check.add_argument("file")
    check.add_argument("--json", action="store_true", help="print JSON instead of TOML")
    check.set_defaults(func=_config_check)

    status = sub.add_parser("status", help="show a running instance's readiness, WAL, offload")
    status.add_argument("--admin", help="admin URL or host:port (default: from --config or env)")
    status.add_argument("--config", help="TOML configuration file (for admin.listen)")
    status.add_argument("--json", action="store_true", help="print the raw /status JSON")
    status.add_argument("--timeout", type=float, default=5.0)
    status.set_defaults(func=_status)

    dev = sub.add_parser("dev", help="local development cluster")
    dev_sub = dev.add_subparsers(dest="dev_command", required=True)
    up = dev_sub.add_parser("up", help="start Kafka (KRaft) with walproxy sidecars")
    up.add_argument("--brokers", type=int, default=1)
    up.add_argument("--no-proxy", action="store_true", help="clients talk to Kafka directly")
    up.add_argument("--data-dir", help="where Kafka keeps data and logs (default: a temp dir)")
    up.add_argument(
        "--port", type=int, default=None, help="first sidecar port (default: free ports)"
    )
    up.add_argument(
        "--admin-port",
        type=int,
        default=None,
        help="first sidecar metrics port (default: free ports)",
    )
    up.set_defaults(func=_dev_up)

    from proxy.app.rebuild_command import add_rebuild_arguments

    rebuild = sub.add_parser(
        "rebuild",
        help="restore a lost broker's log directory from the offload target plus the WAL tail",
    )
    rebuild.add_argument("--config", help="TOML configuration file (the sidecar's)")
    add_rebuild_arguments(rebuild)
    rebuild.set_defaults(func=_rebuild)

    wal = sub.add_parser(
        "wal", help="inspect a write-ahead log (a directory or s3://bucket/prefix)"
    )
    wal_sub = wal.add_subparsers(dest="wal_command", required=True)
    for name, text in (
        ("verify", "scan and report; non-zero exit on corruption"),
        ("dump", "human-readable listing"),
    ):
        p = wal_sub.add_parser(name, help=text)
        p.add_argument("directory", help="WAL directory, or s3://bucket/prefix of an S3 WAL")
        p.add_argument("--endpoint-url", help="S3 endpoint (MinIO, moto); default: the AWS chain's")
        p.set_defaults(func=_wal)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
