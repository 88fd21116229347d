"""The offloader in gateway mode: one :class:`~offload.offloader.Offloader` per broker node.

The offload layout is per broker (a node's lease, its ``broker.json``, the partitions it
leads), so a gateway in front of a cluster runs one offloader for each broker node it
fronts, all in the gateway's process and over the gateway's one WAL:

* an offloader starts when its node is first seen in the cluster's Metadata and stops when
  the node leaves it (a broker that is down long enough to be fenced by the controller); it
  starts again, with the next writer epoch, when the node comes back;
* it reaches its broker the way the gateway does (TLS, SASL), at the address last learned;
* a partition whose leader moved is let go by the old leader's offloader as soon as the new
  leader's offloader adopts it, so one copy is written at a time;
* the WAL is trimmed by :class:`~offload.coverage.AnyCoverage` over them all; a partition
  led by a node no offloader follows (yet) is not covered, so its WAL entries are kept.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
import trio

from offload import metrics as offload_metrics
from offload.coverage import AnyCoverage, Coverage
from offload.offloader import TP, Connector, Offloader
from proxy.config import OffloadSection

log = structlog.get_logger("walproxy.gateway.offload")


class GatewayOffload:
    def __init__(
        self,
        cfg: OffloadSection,
        connector_for: Callable[[int], Connector],
        supervise: Callable[[Offloader], Awaitable[None]],
    ) -> None:
        """``connector_for(node_id)`` opens a client to that broker; ``supervise(off)`` runs
        one offloader (restarting it after failures) until it is cancelled."""
        self.cfg = cfg
        self._connector_for = connector_for
        self._supervise = supervise
        self.offloaders: dict[int, Offloader] = {}
        self._scopes: dict[int, trio.CancelScope] = {}
        self.coverage = AnyCoverage(lambda: [o.coverage for o in self.offloaders.values()])
        # One gauge for all: fenced while any node's offloader is.
        offload_metrics.FENCED.set_function(lambda: float(bool(self.fenced)))

    @property
    def fenced(self) -> str:
        return next((f"node {n}: {o.fenced}" for n, o in self.offloaders.items() if o.fenced), "")

    def sync(self, nursery: trio.Nursery, node_ids: set[int]) -> None:
        """Start an offloader for each new node; stop those of nodes no longer in the cluster.

        Call only with a Metadata answer: an unreachable cluster says nothing of its nodes.
        """
        for node_id in sorted(node_ids - self.offloaders.keys()):
            off = Offloader(
                self.cfg,
                ("", 0),  # unused: the connector dials the broker's current address
                node_id,
                connector=self._connector_for(node_id),
                coverage=Coverage(led_elsewhere_covered=False),
                on_adopt=self._adopted,
            )
            scope = trio.CancelScope()
            self.offloaders[node_id] = off
            self._scopes[node_id] = scope
            nursery.start_soon(self._run, off, scope)
            log.info("offloading for broker", node_id=node_id)
        for node_id in sorted(self.offloaders.keys() - node_ids):
            self._scopes.pop(node_id).cancel()
            # Its coverage goes with it: the WAL keeps what it had not committed for others.
            self.offloaders.pop(node_id)
            log.info("broker left the cluster; its offloader stops", node_id=node_id)

    async def _run(self, off: Offloader, scope: trio.CancelScope) -> None:
        with scope:
            await self._supervise(off)

    def _adopted(self, owner: Offloader, tp: TP) -> None:
        for other in self.offloaders.values():
            if other is not owner and tp in other.partitions:
                log.info(
                    "partition leader moved; handing its offload over",
                    topic=tp[0],
                    partition=tp[1],
                    from_node=other.node_id,
                    to_node=owner.node_id,
                )
                other.release(tp)
