"""The proxy server: accepts clients, pairs each with an upstream connection, drains on stop."""

from __future__ import annotations

import errno
import functools
import importlib.metadata
from contextlib import AbstractAsyncContextManager

import structlog
import trio

from proxy.client.sasl_client import SaslCredentials
from proxy.client.tls import Tls
from proxy.client.upstream_client import ClusterClient, UpstreamClient, UpstreamError
from proxy.config import Config, ConfigError, parse_address
from proxy.durable.produce_path import DurableProduce
from proxy.durable.reconciler import Reconciler
from proxy.gateway import Address, Gateway, Targets
from proxy.kafka import apiversions, endpoints, node_endpoints
from proxy.kafka.protocol import PRODUCE
from proxy.net import metrics
from proxy.net.connection import ConnectionSettings, ProxyConnection, ResponseFilter
from proxy.ops import metrics as ops_metrics
from proxy.ops.admin import AdminServer
from proxy.ops.health import UpstreamProbe
from proxy.ops.status import offload_from_registry
from wal import Backend, Wal, WalConfig, open_wal
from wal.config import S3WalConfig
from wal.object_store import S3Store
from wal.s3_wal import S3Wal, open_s3_wal

log = structlog.get_logger("walproxy.server")

#: The APIs the proxy looks inside; ApiVersions advertises only versions it can decode.
DECODED_APIS = frozenset(
    {PRODUCE, node_endpoints.FETCH, apiversions.API_VERSIONS, *endpoints.REWRITTEN_APIS}
)

_ACCEPT_RETRY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


def build_response_filters(resolver: endpoints.Resolver) -> dict[int, ResponseFilter]:
    limits = apiversions.decoded_api_limits(DECODED_APIS)
    lo, hi = limits[node_endpoints.FETCH]
    limits[node_endpoints.FETCH] = (lo, min(hi, node_endpoints.LAST_VERSION[node_endpoints.FETCH]))

    def clamp_versions(version: int, payload: memoryview) -> bytes | memoryview:
        return apiversions.rewrite_response(version, payload, limits)

    def counted(api_key: int, version: int, payload: memoryview) -> bytes | memoryview:
        return endpoints.rewrite_response(api_key, version, payload, _counting(resolver))

    def kip951(api_key: int, version: int, payload: memoryview) -> bytes | memoryview:
        return node_endpoints.rewrite_response(api_key, version, payload, _counting(resolver))

    filters: dict[int, ResponseFilter] = {apiversions.API_VERSIONS: clamp_versions}
    for key in endpoints.REWRITTEN_APIS:
        filters[key] = functools.partial(counted, key)
    for key in (node_endpoints.PRODUCE, node_endpoints.FETCH):
        filters[key] = functools.partial(kip951, key)
    return filters


def _counting(resolver: endpoints.Resolver) -> endpoints.Resolver:
    def resolve(node_id: int, host: str, port: int) -> endpoints.Address | None:
        target = resolver(node_id, host, port)
        if target is None:
            metrics.ENDPOINTS_WITHHELD.inc()
            log.warning(
                "withholding broker endpoint with no walproxy address",
                node_id=node_id,
                host=host,
                port=port,
            )
        return target

    return resolve


def sidecar_resolver(config: Config) -> endpoints.SidecarEndpoints:
    p = config.proxy
    return endpoints.SidecarEndpoints(
        upstream=parse_address(p.upstream, "proxy.upstream"),
        advertised=parse_address(p.advertised or p.listen, "proxy.advertised"),
        node_id=p.node_id if p.node_id >= 0 else None,
        peers={int(k): parse_address(v, f"proxy.peers.{k}") for k, v in p.peers.items()},
    )


def wal_config_of(config: Config) -> WalConfig:
    w = config.wal
    return WalConfig(
        segment_size=w.segment_bytes,
        max_bytes=w.max_bytes,
        # Group commit needs a few MiB in the queue; more would only hold clients' bytes.
        max_pending_bytes=16 * 1024 * 1024,
        direct_io={"auto": None, "on": True, "off": False}[w.direct_io],
    )


def s3_wal_config_of(config: Config) -> S3WalConfig:
    w = config.wal
    return S3WalConfig(
        max_group_bytes=w.s3_max_group_bytes,
        max_group_delay_ms=w.s3_max_group_delay_ms,
        max_inflight_groups=w.s3_max_inflight,
        max_pending_bytes=16 * 1024 * 1024,
        max_bytes=w.max_bytes,
        request_timeout_s=w.s3_request_timeout_s,
        put_deadline_s=w.s3_put_deadline_s,
    )


def s3_wal_store(config: Config) -> S3Store:
    """The S3 WAL's store: its own prefix; botocore does not retry (the WAL does, within
    ``wal.s3_put_deadline_s``)."""
    from offload.layout import parse_target

    w, o = config.wal, config.offload
    t = parse_target(w.s3_target, "wal.s3_target")
    return S3Store(
        t.bucket,
        t.prefix,
        endpoint_url=o.s3_endpoint_url or None,
        region=o.s3_region or None,
        connect_timeout_s=min(5.0, w.s3_request_timeout_s),
        read_timeout_s=w.s3_request_timeout_s,
        max_attempts=1,
        max_pool_connections=max(16, 2 * w.s3_max_inflight),
    )


def open_configured_wal(
    config: Config, backend: Backend | None = None
) -> AbstractAsyncContextManager[Wal | S3Wal]:
    """The WAL `config` names: the file backend in ``wal.dir`` (or `backend`, a test's
    injected storage) or the S3 backend under ``wal.s3_target``."""
    if config.wal.backend == "s3" and backend is None:
        return open_s3_wal(s3_wal_store(config), s3_wal_config_of(config))
    return open_wal(backend or config.wal.dir, wal_config_of(config))


@functools.cache
def _version() -> str:
    try:
        return importlib.metadata.version("walproxy")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class ProxyServer:
    def __init__(self, config: Config, *, wal_backend: Backend | None = None) -> None:
        """``wal_backend`` replaces the WAL directory (tests inject storage faults with it)."""
        self.config = config
        self._wal_backend = wal_backend
        p = config.proxy
        self._upstream = parse_address(p.upstream, "proxy.upstream")
        self.gateway = Gateway(config.gateway) if config.gateway.enabled else None
        self._tls = Tls(config.tls)
        resolver = self.gateway.directory if self.gateway else sidecar_resolver(config)
        self._settings = ConnectionSettings(
            max_frame_bytes=p.max_frame_bytes,
            max_in_flight=p.max_in_flight,
            idle_timeout_s=p.idle_timeout_s,
            partial_frame_timeout_s=p.partial_frame_timeout_s,
            response_filters=build_response_filters(resolver),
        )
        self._connections: set[ProxyConnection] = set()
        self._connection_ids = 0
        self._no_connections = trio.Event()
        self._no_connections.set()
        self._stop = trio.Event()
        self.draining = False
        self.port: int | None = None
        self.admin_port: int | None = None
        self.durable: DurableProduce | None = None
        self.reconciler: Reconciler | None = None
        self.probe = UpstreamProbe(
            self.gateway.bootstrap_targets if self.gateway else lambda: [self._upstream],
            config.admin.upstream_check_interval_s,
            p.upstream_connect_timeout_s,
            on_unreachable=self._upstream_trouble,
        )
        ops_metrics.READY.set_function(lambda: float(self.ready()[0]))
        ops_metrics.DRAINING.set_function(lambda: float(self.draining))
        ops_metrics.BUILD.info({"version": _version()})
        self.offloader = None  # offload.offloader.Offloader when offload.enabled (sidecar)
        self.gateway_offload = None  # proxy.gateway.offload.GatewayOffload (gateway mode)
        self._initial_brokers: dict[int, Address] | None = None

    def _upstream_trouble(self) -> None:
        if self.reconciler is not None:
            self.reconciler.upstream_trouble()

    def ready(self) -> tuple[bool, str]:
        if self.draining:
            return False, "draining"
        if self.durable is not None and self.durable.wal.fenced:
            return False, "WAL fenced after an I/O error"
        if self.probe.reachable is False:
            return False, f"upstream broker unreachable: {self.probe.error}"
        if self.durable is not None and not self.durable.gate.is_open:
            return False, "reconciling with the broker"
        if self.offloader is not None and self.offloader.fenced:
            return False, "offload fenced by a newer writer"
        if self.gateway_offload is not None and self.gateway_offload.fenced:
            return False, f"offload fenced by a newer writer ({self.gateway_offload.fenced})"
        return True, "ready"

    async def preflight(self) -> None:
        """Start-up checks that need the cluster; call outside any nursery so that a
        :class:`ConfigError` stays one (gateway: every broker's node id is in the ranges)."""
        if self.gateway is not None:
            self._initial_brokers = await self._fetch_brokers(startup=True)

    def status(self) -> dict[str, object]:
        """The ``/status`` document (see :mod:`proxy.ops.status`)."""
        ok, why = self.ready()
        wal: dict[str, object] = {"enabled": self.config.wal.enabled}
        if self.durable is not None:
            w = self.durable.wal
            wal |= {
                "dir": self.config.wal.dir,
                "used_bytes": w.used_bytes,
                "capacity_bytes": w.capacity_bytes,
                "segments": w.segment_count,
                "fenced": w.fenced,
                "full": w.waiting_for_space,
                "direct_io": w.direct_io,
                "first_lsn": w.first_lsn,
                "last_lsn": w.last_durable_lsn,
                "in_doubt_batches": len(self.durable.in_doubt),
            }
        p = self.config.proxy
        return {
            "version": _version(),
            "node_id": p.node_id,
            "listen": self.config.gateway.listen if self.gateway else p.listen,
            "upstream": self.config.gateway.bootstrap_servers if self.gateway else p.upstream,
            "mode": "gateway" if self.gateway else "sidecar",
            "ready": ok,
            "ready_reason": why,
            "draining": self.draining,
            "upstream_reachable": self.probe.reachable,
            "connections": len(self._connections),
            "wal": wal,
            "offload": offload_from_registry(),
        }

    def shutdown(self) -> None:
        """Begin a graceful drain (idempotent)."""
        self._stop.set()

    async def run(
        self, *, task_status: trio.TaskStatus[ProxyServer] = trio.TASK_STATUS_IGNORED
    ) -> None:
        if self.gateway is not None and self._initial_brokers is None:
            await self.preflight()
        w = self.config.wal
        if not w.enabled:
            log.warning(
                "running WITHOUT a write-ahead log: produce acknowledgements are only "
                "as durable as the broker's page cache (wal.enabled = false)"
            )
            await self._serve(None, task_status)
            return
        async with open_configured_wal(self.config, self._wal_backend) as wal:
            log.info(
                "WAL open",
                backend=w.backend,
                dir=w.s3_target if w.backend == "s3" else w.dir,
                direct_io=wal.direct_io,
                epoch=wal.epoch,
                first_lsn=wal.first_lsn,
                last_lsn=wal.last_durable_lsn,
            )
            await self._serve(wal, task_status)

    def _sasl(self) -> SaslCredentials | None:
        sa = self.config.sasl
        return SaslCredentials(sa.mechanism, sa.username, sa.password) if sa.mechanism else None

    def upstream_client(self) -> UpstreamClient | ClusterClient:
        """A client of the proxy's own (unconnected) for its talks with the cluster."""
        timeout = self.config.proxy.upstream_connect_timeout_s
        if self.gateway is not None:
            return ClusterClient(self.gateway.bootstrap, self._dial, timeout, self._sasl())
        return UpstreamClient.lazy(self._upstream, self._dial, self._sasl())

    def _broker_connector(self, node_id: int):  # -> offload.offloader.Connector
        """Connects (TLS, SASL) to broker ``node_id`` at its address as last learned."""
        assert self.gateway is not None
        directory = self.gateway.directory

        async def connect() -> UpstreamClient:
            address = directory.addresses.get(node_id)
            if address is None:
                raise UpstreamError(f"the address of broker {node_id} is not known")
            return await UpstreamClient.lazy(address, self._dial, self._sasl()).__aenter__()

        return connect

    async def _dial(self, address: Address) -> trio.abc.Stream:
        """TCP (and TLS when configured) to a broker, within the connect timeout."""
        timeout = self.config.proxy.upstream_connect_timeout_s
        with trio.fail_after(timeout):
            stream: trio.abc.Stream = await trio.open_tcp_stream(*address)
        try:
            return await self._tls.connect(stream, address[0], timeout)
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise

    async def _serve(self, wal: Wal | None, task_status: trio.TaskStatus[ProxyServer]) -> None:
        if self.gateway is not None:
            host, port = self.gateway.listen_host, self.gateway.listen_port
            targets: Targets = self.gateway.bootstrap_targets
        else:
            host, port = parse_address(self.config.proxy.listen, "proxy.listen")
            targets = lambda: [self._upstream]  # noqa: E731
        listeners = await trio.open_tcp_listeners(port, host=host)
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            if self.config.offload.enabled and self.gateway is not None:
                from proxy.gateway.offload import GatewayOffload

                self.gateway_offload = GatewayOffload(
                    self.config.offload, self._broker_connector, self._run_offloader
                )
            elif self.config.offload.enabled:
                from offload.offloader import Offloader

                node_id = self.config.proxy.node_id
                self.offloader = Offloader(
                    self.config.offload,
                    parse_address(
                        self.config.offload.upstream or self.config.proxy.upstream,
                        "offload.upstream",
                    ),
                    node_id if node_id >= 0 else None,
                )
                nursery.start_soon(self._run_offloader, self.offloader)
            if wal is not None:
                self.durable = DurableProduce(wal)
                self.durable.attach(nursery)
                self.durable.track_settled = self.config.offload.enabled
                node_id = self.config.proxy.node_id
                self.reconciler = Reconciler(
                    self.durable,
                    self._upstream,
                    # A gateway holds every broker's WAL entries: it checks every partition.
                    node_id=node_id if node_id >= 0 and self.gateway is None else None,
                    client=self.upstream_client,
                )
                await nursery.start(self.reconciler.run)
                covered = self.gateway_offload or self.offloader
                if covered is not None:
                    nursery.start_soon(
                        self.durable.trim_after_offload, covered.coverage.covers, 0.5, _trim_metrics
                    )
                else:
                    nursery.start_soon(
                        functools.partial(
                            self.durable.trim_loop,
                            self.config.wal.retention_s,
                            hold=lambda: self.probe.reachable is False,
                        )
                    )
            await nursery.start(self.probe.run)
            if self.config.admin.listen:
                ahost, aport = parse_address(self.config.admin.listen, "admin.listen")
                admin = AdminServer(self.ready, self.status)
                self.admin_port = await nursery.start(admin.serve, ahost, aport)
            accept_scope = trio.CancelScope()

            async def accept_all(task_status: trio.TaskStatus[None]) -> None:
                with accept_scope:
                    async with trio.open_nursery() as accepting:
                        for listener in listeners:
                            accepting.start_soon(self._accept_loop, listener, nursery, targets)
                        if self.gateway is not None:
                            self.gateway.attach(
                                lambda lst, tgt: accepting.start_soon(
                                    self._accept_loop, lst, nursery, tgt
                                )
                            )
                            self._learn_brokers(self._initial_brokers or {}, nursery)
                            accepting.start_soon(self._refresh_brokers, nursery)
                        task_status.started()

            await nursery.start(accept_all)
            log.info(
                "walproxy listening",
                mode="gateway" if self.gateway else "sidecar",
                listen=f"{host}:{self.port}",
                upstream=self.config.gateway.bootstrap_servers
                if self.gateway
                else "%s:%d" % self._upstream,
                tls_clients=self._tls.for_clients is not None,
                tls_upstream=self._tls.to_brokers is not None,
            )
            task_status.started(self)
            await self._stop.wait()
            self.draining = True
            accept_scope.cancel()
            for listener in listeners:
                await listener.aclose()
            if self.gateway is not None:
                await self.gateway.aclose()
            log.info(
                "draining",
                connections=len(self._connections),
                timeout_s=self.config.proxy.drain_timeout_s,
            )
            for conn in list(self._connections):
                conn.drain()
            with trio.move_on_after(self.config.proxy.drain_timeout_s) as scope:
                await self._no_connections.wait()
            if scope.cancelled_caught:
                log.warning(
                    "drain timed out; closing remaining connections",
                    connections=len(self._connections),
                )
            nursery.cancel_scope.cancel()
        log.info("walproxy stopped")

    async def _fetch_brokers(self, *, startup: bool = False) -> dict[int, Address]:
        """Ask the cluster for its brokers ({} when it cannot be reached yet).

        At start-up a broker outside ``gateway.node_id_ranges`` is a configuration error;
        later it is withheld from clients and logged. An unreachable cluster is not fatal:
        the next refresh (or the first client's Metadata) learns the brokers.
        """
        assert self.gateway is not None
        try:
            async with self.upstream_client() as client:
                brokers = await client.brokers()
        except (UpstreamError, OSError, trio.TooSlowError) as exc:
            log.warning("cannot learn the cluster's brokers yet", error=str(exc) or "timeout")
            return {}
        outside = self.gateway.directory.outside_ranges(brokers)
        if startup and outside:
            raise ConfigError(
                f"gateway.node_id_ranges: broker node id(s) {outside} are outside "
                f"{self.gateway.directory.ports.describe()}"
            )
        return brokers

    def _learn_brokers(self, brokers: dict[int, Address], nursery: trio.Nursery) -> None:
        assert self.gateway is not None
        self.gateway.learn(brokers)
        if self.gateway_offload is not None and brokers:  # {}: the cluster was unreachable
            ports = self.gateway.directory.ports
            fronted = {n for n in brokers if ports.port_of(n) is not None}
            self.gateway_offload.sync(nursery, fronted)

    async def _refresh_brokers(self, nursery: trio.Nursery) -> None:
        while True:
            await trio.sleep(self.config.gateway.metadata_refresh_s)
            self._learn_brokers(await self._fetch_brokers(), nursery)

    async def _run_offloader(self, offloader) -> None:  # offloader: offload.offloader.Offloader
        """An offloader beside the proxy. Fenced, it stops (loudly, /readyz fails) and the
        proxy goes on; the WAL is then not trimmed, so produce waits once it is full."""
        from offload.manifest import FencedError
        from offload.offloader import OffloadStartError

        delay = 1.0
        while True:
            try:
                await offloader.run()
                return
            except FencedError:
                return  # logged and exported by the offloader
            except OffloadStartError:
                raise  # a configuration matter: stop start-up, naming the setting
            except Exception as exc:
                # The produce path must outlive an offloader failure: the WAL keeps what S3
                # does not have yet (and back-pressures when full) while the offloader restarts.
                ops_metrics.OFFLOAD_RESTARTS.inc()
                log.error(
                    "offloader failed; restarting it",
                    error=repr(exc),
                    retry_in_s=delay,
                    exc_info=True,
                )
                offloader.reset()
                await trio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _accept_loop(
        self, listener: trio.SocketListener, nursery: trio.Nursery, targets: Targets
    ) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno in _ACCEPT_RETRY_ERRNOS:
                    log.error("accept failed; retrying", error=str(exc))
                    await trio.sleep(0.1)
                    continue
                raise
            nursery.start_soon(self._serve_client, stream, targets)

    async def _serve_client(self, socket_stream: trio.SocketStream, targets: Targets) -> None:
        try:
            peer = "%s:%d" % socket_stream.socket.getpeername()[:2]
        except OSError:
            peer = "?"
        metrics.CONNECTIONS_TOTAL.inc()
        # Every log line of this connection's tasks (trio gives each task a copy of its
        # parent's context) carries which connection it is about.
        self._connection_ids += 1
        structlog.contextvars.bind_contextvars(conn=self._connection_ids, peer=peer)
        client: trio.abc.Stream = socket_stream
        try:
            client = await self._tls.accept(
                socket_stream, self.config.proxy.upstream_connect_timeout_s
            )
        except (trio.BrokenResourceError, trio.TooSlowError, OSError) as exc:
            metrics.DECODE_ERRORS.labels("tls_handshake").inc()
            log.warning("TLS handshake with client failed", peer=peer, error=_cause(exc))
            await trio.aclose_forcefully(socket_stream)
            return
        upstream = None
        error = "no broker address known"
        tried = targets()
        for address in tried:
            try:
                upstream = await self._dial(address)
                break
            except (OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
                error = _cause(exc)
        if upstream is None:
            metrics.UPSTREAM_ERRORS.labels("connect").inc()
            if self.reconciler is not None:
                self.reconciler.upstream_trouble()
            log.warning(
                "cannot reach upstream broker; closing client",
                peer=peer,
                upstream=",".join("%s:%d" % a for a in tried),
                error=error,
            )
            await trio.aclose_forcefully(client)
            return
        conn = ProxyConnection(
            client,
            upstream,
            self._settings,
            produce=self.durable,
            peer=peer,
            on_upstream_lost=self.reconciler.upstream_trouble if self.reconciler else None,
        )
        self._connections.add(conn)
        self._no_connections = trio.Event() if len(self._connections) == 1 else self._no_connections
        metrics.CONNECTIONS.inc()
        try:
            if self.draining:
                conn.drain()
            await conn.run()
        finally:
            metrics.CONNECTIONS.dec()
            self._connections.discard(conn)
            if not self._connections:
                self._no_connections.set()


def _trim_metrics(trimmed: int, last: int) -> None:
    """The offloader's view of the WAL it trims (its metrics, set by the produce path)."""
    from offload import metrics as om

    om.WAL_TRIMMED_LSN.set(trimmed)
    om.WAL_LAST_LSN.set(last)


def _cause(exc: BaseException) -> str:
    """The useful part of a (TLS) connection error: trio wraps ssl errors."""
    cause = exc.__cause__ or exc.__context__
    return str(cause or exc) or type(exc).__name__
