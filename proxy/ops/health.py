"""Is the upstream broker reachable? A periodic TCP connect, for ``/readyz`` and ``/status``.

A broker that accepts no connection makes every produce through this sidecar fail, so the
pod should leave the Service's endpoints until it is back. Connecting (and closing at once)
is the cheapest check that says so; it sends Kafka no request. A gateway probes its
bootstrap brokers in turn: it is reachable while any of them accepts a connection (clients
bootstrap through them; a single broker down is the cluster's business, not the gateway's).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import structlog
import trio

from proxy.ops import metrics

log = structlog.get_logger("walproxy.health")


class UpstreamProbe:
    def __init__(
        self,
        addresses: Callable[[], Sequence[tuple[str, int]]],
        interval_s: float,
        timeout_s: float,
        on_unreachable: Callable[[], None] | None = None,
    ) -> None:
        """``addresses()``: where to connect, in order; the first that accepts will do."""
        self.addresses = addresses
        #: Called when the broker stops answering (the reconciler then checks it for lost
        #: acknowledged data when it is back, even if no client noticed).
        self.on_unreachable = on_unreachable
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        #: None until the first check has finished.
        self.reachable: bool | None = None
        self.error = ""

    async def check(self) -> bool:
        tried = list(self.addresses())
        errors = []
        for address in tried:
            try:
                with trio.fail_after(self.timeout_s):
                    stream = await trio.open_tcp_stream(*address)
                await trio.aclose_forcefully(stream)
            except (OSError, trio.TooSlowError) as exc:
                errors.append("%s:%d: %s" % (*address, str(exc) or "connect timed out"))
            else:
                self._record(True, "", tried)
                return True
        self._record(False, "; ".join(errors) or "no broker address", tried)
        return False

    def _record(self, reachable: bool, error: str, tried: list[tuple[str, int]]) -> None:
        if reachable != self.reachable:
            (log.info if reachable else log.warning)(
                "upstream broker reachable" if reachable else "upstream broker unreachable",
                upstream=",".join("%s:%d" % a for a in tried),
                error=error or None,
            )
        was = self.reachable
        self.reachable, self.error = reachable, error
        if was and not reachable and self.on_unreachable is not None:
            self.on_unreachable()
        metrics.UPSTREAM_UP.set(1 if reachable else 0)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Check now, report started, then check every ``interval_s``."""
        await self.check()
        task_status.started()
        while True:
            await trio.sleep(self.interval_s)
            await self.check()
