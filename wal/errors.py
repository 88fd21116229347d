"""Exceptions raised by the WAL.

They are distinct classes so callers (the produce path) can tell "this append
will never be durable, fail the client request" (`WalFencedError`) from "the
directory on disk is damaged, an operator must look" (`WalCorruptionError`).
"""

from __future__ import annotations


class WalError(Exception):
    """Base class of every WAL error."""


class WalCorruptionError(WalError):
    """The on-disk log is damaged somewhere other than a torn tail.

    Raised on open (the WAL refuses to start) or by a reader.  `path` and
    `offset` name the file and byte offset of the first bad byte so an operator
    can inspect it with `python -m wal dump`.
    """

    def __init__(self, message: str, path: str | None = None, offset: int | None = None):
        where = ""
        if path is not None:
            where = f" (file {path}" + (f", offset {offset}" if offset is not None else "") + ")"
        super().__init__(message + where)
        self.path = path
        self.offset = offset


class WalFencedError(WalError):
    """A write or sync failed; the WAL accepts nothing more until it is reopened.

    After an fsync error the kernel may have dropped dirty pages, so retrying and
    then acking would be a lie (the "fsyncgate" lesson).  Every pending and later
    append raises this; nothing after the failure is acknowledged.
    """


class WalLockedError(WalError):
    """Another process (or another `open_wal` in this one) holds the directory lock."""


class WalDirectIoError(WalError):
    """``direct_io`` is required (``wal.direct_io = on``) and the directory refuses O_DIRECT."""


class WalClosedError(WalError):
    """The WAL was closed; appends and reads are no longer possible."""


class WalEntryTooLargeError(WalError, ValueError):
    """An entry does not fit in one segment (entries never span segments)."""


class WalTrimmedError(WalError):
    """A reader asked for (or was reading) entries that were trimmed away."""
