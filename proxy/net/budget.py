"""The memory bound on client requests, trio shell over :class:`~proxy.net.memory.MemoryLedger`.

One :class:`MemoryBudget` per process (``proxy.max_buffered_bytes`` in total,
``proxy.max_buffered_bytes_per_connection`` each); every connection takes a
:class:`ConnectionBudget` from it, asks for a grant before each read of its client's socket
and gives bytes back once their request is forwarded. A grant waits while either bound is
used up: the connection stops reading and TCP back-pressures the client.
"""

from __future__ import annotations

import trio

from proxy.net import metrics
from proxy.net.memory import MemoryLedger


class MemoryBudget:
    def __init__(self, total_limit: int, per_connection_limit: int) -> None:
        self.ledger = MemoryLedger(total_limit, per_connection_limit)
        self._freed = trio.Event()

    @classmethod
    def unbounded(cls) -> MemoryBudget:
        return cls(2**62, 2**62)

    def connection(self) -> ConnectionBudget:
        return ConnectionBudget(self)

    def _take(self, n: int) -> None:
        self.ledger.take(n)
        metrics.BUFFERED_BYTES.set(self.ledger.used)

    def _give(self, n: int) -> None:
        if n:
            self.ledger.give(n)
            metrics.BUFFERED_BYTES.set(self.ledger.used)
            self._freed.set()
            self._freed = trio.Event()

    async def _wait_freed(self) -> None:
        await self._freed.wait()


class ConnectionBudget:
    """One connection's share: ``held`` bytes read and not yet given back."""

    def __init__(self, budget: MemoryBudget) -> None:
        self._budget = budget
        self.held = 0
        #: The last grant waited for room and has not got it yet (the connection's log line
        #: says so when a frame times out meanwhile).
        self.waiting = False

    async def grant(self, read_size: int) -> int:
        """Room for the next read, at most ``read_size``, taken now; waits while there is none."""
        room = await self.wait_room(read_size)
        self.charge(room)
        return room

    async def wait_room(self, read_size: int) -> int:
        """Room for the next read, at most ``read_size``, taken by nothing (see
        :meth:`charge`); waits while there is none."""
        ledger = self._budget.ledger
        self.waiting = False
        while not (room := ledger.room(self.held, read_size)):
            if not self.waiting:
                full = self.held >= ledger.per_connection_limit
                metrics.READ_WAITS.labels("connection" if full else "total").inc()
                self.waiting = True  # stays set if the wait is cancelled (a timeout)
            await self._budget._wait_freed()
        self.waiting = False
        return room

    def charge(self, n: int) -> None:
        """``n`` more bytes are held."""
        self._budget._take(n)
        self.held += n

    def release(self, n: int) -> None:
        """``n`` bytes are done with (forwarded, answered, or never read)."""
        self.held -= n
        self._budget._give(n)

    def close(self) -> None:
        """The connection ended: give back whatever it still held."""
        self.release(self.held)
