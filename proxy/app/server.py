"""The proxy server: the composition root of ``walproxy run``.

It builds the parts for the configured topology (:mod:`proxy.app.topology`: sidecar or
gateway), opens the WAL, starts the durable produce path, the reconciler, the probe, the
offloaders and the admin endpoint, accepts clients (:mod:`proxy.app.accept`) and drains on
stop. Readiness and ``/status`` are read from those parts.
"""

from __future__ import annotations

import functools
import importlib.metadata
from typing import Any

import structlog
import trio

from proxy.app.accept import Connections
from proxy.app.descriptors import fit_connection_limit
from proxy.app.supervise import trim_metrics
from proxy.app.topology import GatewayTopology, Sidecar, topology_of
from proxy.app.wiring import open_configured_wal
from proxy.client.dialer import dialer_of
from proxy.client.upstream_client import ClusterClient, UpstreamClient
from proxy.config import Config, parse_address
from proxy.durable.commit_path import DurableCommit
from proxy.durable.end_txn_path import DurableEndTxn
from proxy.durable.produce_path import DurableProduce
from proxy.durable.reconciler import Reconciler
from proxy.gateway import Gateway
from proxy.gateway.offload import GatewayOffload
from proxy.kafka.leader_epochs import RestoredRanges
from proxy.net.budget import MemoryBudget
from proxy.net.connection import ConnectionSettings
from proxy.net.filters import DECODED_APIS, build_response_filters
from proxy.net.limits import AUTO_MAX_CONNECTIONS, ConnectionLimits
from proxy.ops import metrics as ops_metrics
from proxy.ops.admin import AdminServer
from proxy.ops.health import UpstreamProbe
from proxy.ops.status import offload_status
from wal import Backend, Wal, WalError
from wal.s3_wal import S3Wal

__all__ = ["DECODED_APIS", "ProxyServer"]

log = structlog.get_logger("walproxy.server")


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
        self._dialer = dialer_of(config)
        #: the reconciler's restored batches, for the OffsetForLeaderEpoch filter
        self.restored = RestoredRanges()
        self.topology: Sidecar | GatewayTopology = topology_of(config, self._dialer)
        settings = ConnectionSettings(
            max_frame_bytes=p.max_frame_bytes,
            max_in_flight=p.max_in_flight,
            idle_timeout_s=p.idle_timeout_s,
            partial_frame_timeout_s=p.partial_frame_timeout_s,
            response_filters=build_response_filters(self.topology.resolver, self.restored),
            memory=MemoryBudget(p.max_buffered_bytes, p.max_buffered_bytes_per_connection),
            storage_errors=(WalError,),
        )
        self.connections = Connections(
            settings,
            self._dialer,
            produce=lambda: self.durable,
            upstream_trouble=self._upstream_trouble,
            # fitted to the open-file limit by preflight()
            limits=ConnectionLimits(
                p.max_connections or AUTO_MAX_CONNECTIONS, p.max_connections_per_address
            ),
            commits=lambda: self.commits,
            end_txn=lambda: self.end_txn,
            group_gate=lambda: self.durable.group_gate if self.durable is not None else None,
            repair_gate=lambda: self.durable.epoch_gate if self.durable is not None else None,
        )
        self._stop = trio.Event()
        self._preflighted = False
        self.port: int | None = None
        self.admin_port: int | None = None
        self.durable: DurableProduce | None = None
        self.commits: DurableCommit | None = None
        self.end_txn: DurableEndTxn | None = None
        self.reconciler: Reconciler | None = None
        self.probe = UpstreamProbe(
            self.topology.targets,
            config.admin.upstream_check_interval_s,
            p.upstream_connect_timeout_s,
            on_unreachable=self._upstream_trouble,
        )
        ops_metrics.READY.set_function(lambda: float(self.ready()[0]))
        ops_metrics.DRAINING.set_function(lambda: float(self.draining))
        ops_metrics.BUILD.info({"version": _version()})

    # -- what the topology holds ---------------------------------------------------------
    @property
    def gateway(self) -> Gateway | None:
        return self.topology.gateway

    @property
    def draining(self) -> bool:
        return self.connections.draining

    @property
    def offloader(self) -> Any:  # offload.offloader.Offloader (sidecar), once started
        return self.topology.offloader if isinstance(self.topology, Sidecar) else None

    @property
    def gateway_offload(self) -> GatewayOffload | None:
        return self.topology.offload if isinstance(self.topology, GatewayTopology) else None

    def upstream_client(self) -> UpstreamClient | ClusterClient:
        """A client of the proxy's own (unconnected) for its talks with the cluster."""
        return self.topology.own_client()

    def _upstream_trouble(self) -> None:
        if self.reconciler is not None:
            self.reconciler.upstream_trouble()

    # -- readiness and status ----------------------------------------------------------
    def ready(self) -> tuple[bool, str]:
        if self.draining:
            return False, "draining"
        if self.durable is not None and self.durable.wal.fenced:
            return False, "WAL fenced after an I/O error"
        if self.probe.reachable is False:
            return False, f"upstream broker unreachable: {self.probe.error}"
        if self.durable is not None and not self.durable.gate.is_open:
            return False, "reconciling with the broker"
        if self.durable is not None and not self.durable.group_gate.is_open:
            return False, "restoring committed offsets"
        fenced = self.topology.offload_fenced()
        if fenced:
            return False, fenced
        return True, "ready"

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
                "in_doubt_batches": len(self.durable.ledger.in_doubt),
            }
        t = self.topology
        offload = self.config.offload.enabled
        return {
            "version": _version(),
            "node_id": self.config.proxy.node_id,
            "listen": t.listen,
            "upstream": t.upstream,
            "mode": t.mode,
            "ready": ok,
            "ready_reason": why,
            "draining": self.draining,
            "upstream_reachable": self.probe.reachable,
            "connections": len(self.connections.open),
            "wal": wal,
            "offload": offload_status(t.offloaders(), trio.current_time()) if offload else None,
        }

    # -- life cycle ------------------------------------------------------------------------
    async def preflight(self) -> None:
        """Start-up checks that need the cluster; call outside any nursery so that a
        :class:`ConfigError` stays one (gateway: every broker's node id is in the ranges;
        ``proxy.max_connections`` fits the open-file limit)."""
        plan = fit_connection_limit(self.config)
        self.connections.limits.max_connections = plan.max_connections
        await self.topology.preflight()
        self._preflighted = True

    def shutdown(self) -> None:
        """Begin a graceful drain (idempotent)."""
        self._stop.set()

    async def run(
        self, *, task_status: trio.TaskStatus[ProxyServer] = trio.TASK_STATUS_IGNORED
    ) -> None:
        if not self._preflighted:
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

    async def _serve(
        self, wal: Wal | S3Wal | None, task_status: trio.TaskStatus[ProxyServer]
    ) -> None:
        t = self.topology
        host, port = t.listen_address()
        listeners = await trio.open_tcp_listeners(port, host=host)
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            covered = t.start_offload(nursery)
            if wal is not None:
                await self._start_durable(wal, nursery, covered)
            await nursery.start(self.probe.run)
            if self.config.admin.listen:
                ahost, aport = parse_address(self.config.admin.listen, "admin.listen")
                admin = AdminServer(self.ready, self.status)
                self.admin_port = await nursery.start(admin.serve, ahost, aport)
            accept_scope = trio.CancelScope()

            async def serve(listener: trio.SocketListener, targets: Any) -> None:
                await self.connections.accept_loop(listener, nursery, targets)

            async def accept_all(task_status: trio.TaskStatus[None]) -> None:
                with accept_scope:
                    async with trio.open_nursery() as accepting:
                        for listener in listeners:
                            accepting.start_soon(serve, listener, t.targets)
                        t.start(nursery, accepting, serve)
                        task_status.started()

            await nursery.start(accept_all)
            log.info(
                "walproxy listening",
                mode=t.mode,
                listen=f"{host}:{self.port}",
                upstream=t.upstream
                if t.gateway is not None
                else "%s:%d" % parse_address(t.upstream, "proxy.upstream"),
                tls_clients=self._dialer.tls.for_clients is not None,
                tls_upstream=self._dialer.tls.to_brokers is not None,
                max_connections=self.connections.limits.max_connections,
                max_connections_per_address=self.connections.limits.per_address,
                max_buffered_bytes=self.config.proxy.max_buffered_bytes,
            )
            task_status.started(self)
            await self._stop.wait()
            self.connections.draining = True
            accept_scope.cancel()
            for listener in listeners:
                await listener.aclose()
            await t.aclose()
            await self.connections.drain(self.config.proxy.drain_timeout_s)
            nursery.cancel_scope.cancel()
        log.info("walproxy stopped")

    async def _start_durable(self, wal: Wal | S3Wal, nursery: trio.Nursery, covered: Any) -> None:
        """The produce path over ``wal``, its reconciler, and the WAL's trimming: by
        retention, or (offloading) once S3 covers each entry."""
        self.durable = durable = DurableProduce(wal)
        durable.attach(nursery)
        self.commits = DurableCommit(durable)
        self.end_txn = DurableEndTxn(durable)
        durable.track_settled = self.config.offload.enabled
        self.reconciler = Reconciler(
            durable,
            parse_address(self.config.proxy.upstream, "proxy.upstream"),
            node_id=self.topology.reconcile_node,
            client=self.upstream_client,
            restored=self.restored,
        )
        await nursery.start(self.reconciler.run)
        if covered is not None:
            nursery.start_soon(
                functools.partial(
                    durable.trim_after_offload,
                    covered.covers,
                    0.5,
                    trim_metrics,
                    retention_s=self.config.wal.retention_s,
                    hold=lambda: self.probe.reachable is False,
                )
            )
        else:
            nursery.start_soon(
                functools.partial(
                    durable.trim_loop,
                    self.config.wal.retention_s,
                    hold=lambda: self.probe.reachable is False,
                )
            )
