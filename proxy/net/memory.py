"""The memory bound on client requests, sans-IO: bytes read from clients and not yet done
with, per connection and in total. The trio shell is :mod:`proxy.net.budget`.

A connection reads from its socket only as much as both bounds have room for (at most one
read), so when either is used up it stops reading and TCP pushes back on the client. Bytes
are counted from the moment they are read until their request has been forwarded to the
broker (or answered by the proxy), and, for the frame a connection is still receiving, until
it is complete or the connection closes. Nothing is reserved ahead of the bytes: a client
announcing a huge frame and sending a few bytes holds a few bytes.
"""

from __future__ import annotations


class MemoryLedger:
    """The process-wide count; each connection keeps its own ``held`` and passes it in."""

    def __init__(self, total_limit: int, per_connection_limit: int) -> None:
        self.total_limit = total_limit
        self.per_connection_limit = per_connection_limit
        self.used = 0

    def room(self, held: int, read_size: int) -> int:
        """How many bytes a connection holding ``held`` may read now (0: wait)."""
        return max(
            0, min(read_size, self.per_connection_limit - held, self.total_limit - self.used)
        )

    def take(self, n: int) -> None:
        self.used += n

    def give(self, n: int) -> None:
        self.used -= n
        assert self.used >= 0, "released more request bytes than were taken"
