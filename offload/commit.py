"""The commit protocol over an :class:`~offload.store.ObjectStore`: lease, segments, manifest.

Steps for one partition commit (docs/offload-format.md, "Commit protocol")::

    put_segment(store, key, bytes)              # If-None-Match: *
    commit_manifest(store, key, new, etag)      # If-Match: etag (If-None-Match: * if first)

Every function is idempotent under retry: a request that timed out may still have been
applied, so a failed condition is checked against what is stored — our own earlier write
counts as success. Anything else is a conflict the caller must resolve by re-reading
(:class:`CommitConflict`) or a newer writer (:class:`~offload.manifest.FencedError`).
The functions are synchronous; :mod:`offload.s3_calls` runs them with deadlines and retries.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from . import layout
from . import manifest as mf
from .node_files import Lease, decode_lease, encode_lease, next_lease
from .store import ObjectNotFound, ObjectStore, PreconditionFailed


class CommitConflict(Exception):
    """The manifest changed under us (another writer committed); re-read and resync."""

    def __init__(self, message: str, current: mf.Manifest | None, etag: str | None) -> None:
        super().__init__(message)
        self.current = current
        self.etag = etag


class SegmentConflict(Exception):
    """A different object already has this segment's key (same epoch: two live writers)."""


@dataclass(frozen=True, slots=True)
class Versioned:
    manifest: mf.Manifest | None
    etag: str | None


# -- lease -----------------------------------------------------------------------------------
def read_lease(
    store: ObjectStore, cluster_id: str, node_id: int
) -> tuple[Lease | None, str | None]:
    try:
        obj = store.get(layout.lease_key(cluster_id, node_id))
    except ObjectNotFound:
        return None, None
    return decode_lease(obj.data), obj.etag


def acquire_lease(
    store: ObjectStore, cluster_id: str, node_id: int, owner: str | None = None, attempts: int = 10
) -> Lease:
    """Take the next writer epoch of ``node_id``; every earlier writer is fenced from now on."""
    owner = owner or f"walproxy:{uuid.uuid4()}"
    key = layout.lease_key(cluster_id, node_id)
    for _ in range(attempts):
        current, etag = read_lease(store, cluster_id, node_id)
        lease = next_lease(current, node_id, owner)
        try:
            if etag is None:
                store.put(key, encode_lease(lease), if_none_match=True)
            else:
                store.put(key, encode_lease(lease), if_match=etag)
            return lease
        except PreconditionFailed:
            # Another writer took it in between, or our own timed-out attempt landed.
            now, _ = read_lease(store, cluster_id, node_id)
            if now is not None and now.owner == owner:
                return now
    raise mf.FencedError(f"could not take the lease of node {node_id} in {attempts} attempts")


def check_lease(store: ObjectStore, cluster_id: str, lease: Lease) -> None:
    """Raise :class:`~offload.manifest.FencedError` if a newer writer took the lease."""
    current, _ = read_lease(store, cluster_id, lease.node_id)
    if current is None:
        raise mf.FencedError(f"lease of node {lease.node_id} disappeared from the store")
    mf.check_writer(current.node_id, current.epoch, lease.node_id, lease.epoch, "lease")
    if current.epoch == lease.epoch and current.owner != lease.owner:
        raise mf.FencedError(f"lease epoch {lease.epoch} is held by {current.owner}")


# -- manifest and segments -------------------------------------------------------------------
def read_manifest(store: ObjectStore, key: str) -> Versioned:
    try:
        obj = store.get(key)
    except ObjectNotFound:
        return Versioned(None, None)
    return Versioned(mf.decode(obj.data), obj.etag)


def put_segment(store: ObjectStore, key: str, data: bytes) -> None:
    """Create the segment object; an identical object already there is our own retry."""
    try:
        store.put(key, data, if_none_match=True)
    except PreconditionFailed:
        try:
            existing = store.get(key)
        except ObjectNotFound:  # deleted in between: try once more
            store.put(key, data, if_none_match=True)
            return
        if existing.data != data:
            raise SegmentConflict(f"{key} exists with different content") from None


def commit_manifest(store: ObjectStore, key: str, new: mf.Manifest, etag: str | None) -> str:
    """Write ``new`` if the stored manifest still has ``etag`` (None: none stored yet).

    Returns the new ETag. Raises :class:`CommitConflict` (with what is stored now) if another
    writer got there first, or FencedError if that writer is newer than ``new``'s."""
    data = mf.encode(new)
    try:
        if etag is None:
            return store.put(key, data, if_none_match=True)
        return store.put(key, data, if_match=etag)
    except PreconditionFailed:
        now = read_manifest(store, key)
        if now.manifest == new:  # our timed-out attempt was applied
            assert now.etag is not None
            return now.etag
        if now.manifest is not None:
            mf.check_writer(
                now.manifest.writer_node,
                now.manifest.writer_epoch,
                new.writer_node,
                new.writer_epoch,
                "manifest",
            )
        raise CommitConflict(
            f"{key} changed (now version "
            f"{now.manifest.version if now.manifest else 'none'}), expected {etag}",
            now.manifest,
            now.etag,
        ) from None
