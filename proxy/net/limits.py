"""How many client connections the proxy holds, sans-IO: the counts, the decisions and the
file-descriptor plan. The accept loop (:mod:`proxy.app.accept`) is the shell that asks.

A connection over a limit is refused at accept (closed at once, logged, counted by reason),
so the process never runs out of file descriptors: at start-up the limit is fitted to the
open-file limit (:func:`plan_descriptors`), each connection costing two descriptors (the
client's socket and, once it sends a request, its broker connection).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from proxy.config import ConfigError

#: Refusal reasons, the ``reason`` label of ``walproxy_connections_refused_total``.
MAX_CONNECTIONS = "max_connections"
MAX_PER_ADDRESS = "max_connections_per_address"

#: ``proxy.max_connections = 0`` (the default) means as many as the descriptors allow, up to this.
AUTO_MAX_CONNECTIONS = 10_000
#: Descriptors kept for everything but client connections (listeners, admin, walproxy's own
#: broker clients, the offloader's S3 pool), besides the WAL's segment files.
RESERVED_DESCRIPTORS = 256
DESCRIPTORS_PER_CONNECTION = 2


class ConnectionLimits:
    """Open connections in total and per client address (the host, without the port)."""

    def __init__(self, max_connections: int, per_address: int) -> None:
        """``per_address`` 0: no per-address limit."""
        self.max_connections = max_connections
        self.per_address = per_address
        self.open = 0
        self._by_address: Counter[str] = Counter()

    def admit(self, address: str) -> str | None:
        """Count a new connection from ``address``; or the reason it is refused (not counted)."""
        if self.open >= self.max_connections:
            return MAX_CONNECTIONS
        if self.per_address and self._by_address[address] >= self.per_address:
            return MAX_PER_ADDRESS
        self.open += 1
        self._by_address[address] += 1
        return None

    def release(self, address: str) -> None:
        """An admitted connection from ``address`` closed."""
        self.open -= 1
        self._by_address[address] -= 1
        if not self._by_address[address]:
            del self._by_address[address]

    def from_address(self, address: str) -> int:
        return self._by_address[address]


class RefusalLog:
    """At most one log line per reason and ``interval_s`` for refused connections, however
    many come: a flood of connections must not become a flood of log lines. A line counts
    the refusals since the previous line of its reason."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self._next: dict[str, float] = {}
        self._unlogged: Counter[str] = Counter()

    def refused(self, reason: str, now: float) -> int:
        """Note one refusal at ``now``; how many to report in a line now (0: stay quiet)."""
        self._unlogged[reason] += 1
        if now < self._next.get(reason, float("-inf")):
            return 0
        self._next[reason] = now + self.interval_s
        count = self._unlogged.pop(reason)
        return count


@dataclass(frozen=True)
class DescriptorPlan:
    #: The connection limit enforced.
    max_connections: int
    #: Descriptors the process needs at that limit.
    needed: int
    #: Raise the soft open-file limit to this (None: it is high enough).
    raise_soft_to: int | None


def plan_descriptors(max_connections: int, reserved: int, soft: int, hard: int) -> DescriptorPlan:
    """Fit the connection limit to the open-file limit (``soft``/``hard`` of RLIMIT_NOFILE,
    a negative value meaning unlimited).

    ``max_connections`` 0 takes as many as the hard limit allows, up to
    :data:`AUTO_MAX_CONNECTIONS`; a number the hard limit cannot hold is a
    :class:`ConfigError`. The soft limit is raised as far as needed (never lowered).
    """
    unlimited = 2**62
    hard = unlimited if hard < 0 else hard
    soft = unlimited if soft < 0 else soft
    if max_connections == 0:
        connections = min(AUTO_MAX_CONNECTIONS, (hard - reserved) // DESCRIPTORS_PER_CONNECTION)
        if connections < 1:
            raise ConfigError(
                f"proxy.max_connections: the open-file limit ({hard}, ulimit -Hn) leaves no "
                f"room for client connections beside the {reserved} descriptors walproxy "
                "keeps for itself; raise the limit"
            )
    else:
        connections = max_connections
    needed = connections * DESCRIPTORS_PER_CONNECTION + reserved
    if needed > hard:
        raise ConfigError(
            f"proxy.max_connections: {connections} connections need {needed} file "
            f"descriptors ({DESCRIPTORS_PER_CONNECTION} each and {reserved} for walproxy "
            f"itself) but the open-file limit is {hard} (ulimit -Hn); lower "
            "proxy.max_connections or raise the limit"
        )
    return DescriptorPlan(connections, needed, needed if needed > soft else None)
