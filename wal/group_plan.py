"""Group commit planning, sans-IO: which group an append joins, how far a group may grow, and
whether it still fits the active segment or goes to the next one.

The writer (`wal.writer.Wal`) owns the I/O: it issues the planned groups in order, one
aligned write and sync each. This module only does the arithmetic, so it can be tested
without trio or a disk:

* appends get consecutive LSNs in call order and join the *open* group while it has room
  (``limit`` record bytes, ``max_group_entries`` entries); otherwise a new group opens;
* a group's ``limit`` is fixed when it opens: the room its segment has left (``plan_room``),
  capped at ``max_group_bytes``; a first entry too big for that room sends the group to a
  fresh segment;
* closing a group fixes its block-aligned ``size`` and decides whether it fits the planned
  room of the current segment or needs a roll first (``roll``).
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Generic, TypeVar

from .record import align_up

__all__ = ["GroupPlan", "PlannedGroup"]


class PlannedGroup:
    """A group's plan: its LSNs, record bytes and where it goes. The writer subclasses it to
    add what the I/O needs (entries, buffer, waiters)."""

    __slots__ = ("closed", "count", "first_lsn", "limit", "rec", "roll", "size")

    def __init__(self, first_lsn: int) -> None:
        self.first_lsn = first_lsn
        self.rec = 0  # sum of record sizes
        self.count = 0  # entries
        self.limit = 0  # most record bytes it may hold (set when it opens)
        self.closed = False  # no more entries join (size and segment planned)
        self.roll = False  # does not fit the current segment: roll before writing it
        self.size = 0  # block-aligned bytes on disk (when closed)


G = TypeVar("G", bound=PlannedGroup)


class GroupPlan(Generic[G]):
    """The queue of groups not yet issued (FIFO; the last may still be open) and the room
    the active segment has left for them. ``make(first_lsn)`` builds a new group."""

    __slots__ = (
        "_block",
        "_fresh_room",
        "_make",
        "_max_group_bytes",
        "_max_group_entries",
        "assign_lsn",
        "open",
        "pending_bytes",
        "pending_entries",
        "plan_room",
        "queue",
    )

    def __init__(
        self,
        make: Callable[[int], G],
        *,
        block: int,
        fresh_room: int,
        max_group_bytes: int,
        max_group_entries: int,
    ) -> None:
        self._make = make
        self._block = block
        self._fresh_room = fresh_room  # record room of a new segment
        self._max_group_bytes = max_group_bytes // block * block
        self._max_group_entries = max_group_entries
        self.assign_lsn = 1  # next LSN handed to an append
        self.queue: collections.deque[G] = collections.deque()
        self.open: G | None = None
        self.plan_room = fresh_room  # room left in the segment the open group goes to
        self.pending_bytes = 0  # record bytes queued, not yet issued
        self.pending_entries = 0

    def add(self, rec: int, n: int) -> tuple[G, int]:
        """Reserve LSNs for ``n`` entries of ``rec`` record bytes in the open group (a new
        one if they do not fit); return the group and the first LSN. The caller adds the
        entries to the group right away, so group order, LSN order and call order agree."""
        g = self.open
        if g is None or g.rec + rec > g.limit or g.count + n > self._max_group_entries:
            g = self._new_group(rec)
        lsn = self.assign_lsn
        self.assign_lsn = lsn + n
        g.rec += rec
        g.count += n
        self.pending_bytes += rec
        self.pending_entries += n
        return g, lsn

    def _new_group(self, rec: int) -> G:
        if self.open is not None:
            self.close(self.open)
        g = self._make(self.assign_lsn)
        # Its limit is fixed now: the planned room of its segment does not change while it
        # is the open group. A first entry that does not fit that room goes to a fresh one.
        room = self.plan_room if align_up(rec, self._block) <= self.plan_room else self._fresh_room
        g.limit = max(min(room, self._max_group_bytes), rec)
        self.queue.append(g)
        self.open = g
        return g

    def close(self, g: G) -> None:
        """Freeze ``g`` and plan where it goes (this segment, or the next after a roll)."""
        g.closed = True
        g.size = align_up(g.rec, self._block)
        if g.size <= self.plan_room:
            self.plan_room -= g.size
        else:
            g.roll = True
            self.plan_room = self._fresh_room - g.size
        if self.open is g:
            self.open = None

    def next_to_issue(self) -> G:
        """The oldest queued group, closed (its size and segment decided)."""
        g = self.queue[0]
        if not g.closed:
            self.close(g)
        return g

    def issued(self, g: G) -> None:
        """``g`` (the oldest) left the queue for the disk."""
        assert self.queue[0] is g
        self.queue.popleft()
        self.pending_bytes -= g.rec
        self.pending_entries -= g.count

    def clear(self) -> list[G]:
        """Drop every queued group (the WAL failed or closed); return them."""
        dropped = list(self.queue)
        self.queue.clear()
        self.open = None
        self.pending_bytes = self.pending_entries = 0
        return dropped
