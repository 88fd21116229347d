"""Writing a rebuilt Kafka log directory: the thin file-system shell of the rebuild.

Crash- and re-run-safe by construction:

* a partition is written under ``walproxy-rebuild.staging/<topic>-<partition>/`` and renamed
  into place only when complete and fsynced (same file system, so the rename is atomic);
* ``walproxy-rebuild.json`` records the partitions finished so far (rewritten atomically
  after each), so a re-run keeps them and redoes only the rest;
* the checkpoint files and ``meta.properties`` are written last, then the staging directory
  is removed and the state marked complete.

A broker started on an unfinished rebuild refuses to start ("No readable meta.properties
files found": they are written last), so a half-written directory is never served. A log
directory that holds anything else is refused (:class:`LogDirNotEmpty`).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import wal

from . import kafka_logdir as kl

STATE_FILE = "walproxy-rebuild.json"
STAGING_DIR = "walproxy-rebuild.staging"
#: Created by mkfs at a volume's root; harmless to Kafka.
_IGNORABLE = {"lost+found"}


class LogDirNotEmpty(RuntimeError):
    """The target log directory holds data that this rebuild did not write."""


def fsync_dir(path: Path) -> None:
    wal.fsync_dir(str(path))


def write_file_atomic(path: Path, data: bytes) -> None:
    """``path`` holds ``data`` or its old content, never a torn mix (temp, fsync, rename)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


@dataclass(frozen=True, slots=True)
class FinishedPartition:
    topic: str
    partition: int
    log_start_offset: int
    next_offset: int
    bytes: int
    #: What it was built from (manifest version, tail end); a re-run redoes it if different.
    source: str

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "log_start_offset": self.log_start_offset,
            "next_offset": self.next_offset,
            "bytes": self.bytes,
            "source": self.source,
        }


_FINISHED_FIELDS = {
    "topic": str,
    "partition": int,
    "log_start_offset": int,
    "next_offset": int,
    "bytes": int,
    "source": str,
}


@dataclass(frozen=True, slots=True)
class RebuildState:
    """What ``walproxy-rebuild.json`` says: whose rebuild, whether done, what is finished."""

    cluster_id: object
    node_id: object
    complete: bool
    partitions: tuple[FinishedPartition, ...]


def decode_state(data: bytes) -> RebuildState:
    """Parse ``walproxy-rebuild.json``; :class:`~offload.kafka_logdir.LogDirFormatError`
    when it is not one this code wrote (not JSON, a field missing or of another type)."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise kl.LogDirFormatError(f"{STATE_FILE} is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != 1:
        raise kl.LogDirFormatError(f"{STATE_FILE}: expected a JSON object with format 1")
    parts = doc.get("partitions", [])
    if not isinstance(parts, list):
        raise kl.LogDirFormatError(f"{STATE_FILE}.partitions: expected a list")
    finished = []
    for i, p in enumerate(parts):
        if not (
            isinstance(p, dict)
            and set(p) == set(_FINISHED_FIELDS)
            and all(
                isinstance(p[k], t) and not isinstance(p[k], bool)
                for k, t in _FINISHED_FIELDS.items()
            )
        ):
            raise kl.LogDirFormatError(f"{STATE_FILE}.partitions[{i}]: not a finished partition")
        finished.append(FinishedPartition(**p))
    return RebuildState(
        doc.get("cluster_id"), doc.get("node_id"), bool(doc.get("complete")), tuple(finished)
    )


class PartitionWriter:
    """Appends verified record batches to one partition's segments, rolling like Kafka."""

    def __init__(self, directory: Path, segment_bytes: int) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self._fd: int | None = None
        self._base = 0
        self._size = 0
        self.bytes = 0
        self.next_offset: int | None = None
        directory.mkdir(parents=True)

    def append(self, blob: bytes | memoryview, batches: Sequence[tuple[int, int, int]]) -> None:
        """``batches`` are ``(base_offset, last_offset, length)`` of the whole batches that make
        up ``blob``, in order (the caller has checked them)."""
        view = memoryview(blob)
        pos = run_start = 0
        for base, last, length in batches:
            if self._fd is None or kl.should_roll(
                self._base, self._size, length, last, self.segment_bytes
            ):
                self._write(view[run_start:pos])
                run_start = pos
                self._roll(base)
            self._size += length
            pos += length
            self.next_offset = last + 1
        if pos != len(view):
            raise ValueError(f"batches cover {pos} of {len(view)} bytes")
        self._write(view[run_start:pos])

    def _write(self, data: memoryview) -> None:
        while data:
            assert self._fd is not None
            n = os.write(self._fd, data)
            data = data[n:]
            self.bytes += n

    def _roll(self, base: int) -> None:
        self._close_segment()
        path = self.directory / kl.segment_file_name(base)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self._base, self._size = base, 0

    def _close_segment(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None

    def finish(self, topic_id: Any, leader_epochs: Sequence[tuple[int, int]]) -> None:
        """Close the last segment, write partition.metadata and leader-epoch-checkpoint."""
        self._close_segment()
        write_file_atomic(
            self.directory / kl.PARTITION_METADATA, kl.encode_partition_metadata(topic_id)
        )
        write_file_atomic(
            self.directory / kl.LEADER_EPOCH_CHECKPOINT,
            kl.encode_leader_epoch_checkpoint(leader_epochs),
        )
        fsync_dir(self.directory)

    def abort(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class LogDirWriter:
    """One rebuild of one log directory (see the module docstring for the protocol)."""

    def __init__(self, root: Path, *, cluster_id: str, node_id: int) -> None:
        self.root = root
        self.cluster_id = cluster_id
        self.node_id = node_id
        self.finished: dict[tuple[str, int], FinishedPartition] = {}
        self.complete = False
        self.resumed = False

    @property
    def state_path(self) -> Path:
        return self.root / STATE_FILE

    @property
    def staging(self) -> Path:
        return self.root / STAGING_DIR

    # -- opening -----------------------------------------------------------------------------
    def open(self) -> None:
        """Check the directory is empty or this node's own rebuild; load what is finished."""
        self.root.mkdir(parents=True, exist_ok=True)
        names = {n for n in os.listdir(self.root) if n not in _IGNORABLE}
        if STATE_FILE not in names:
            if names:
                raise LogDirNotEmpty(
                    f"log directory {self.root} is not empty ({len(names)} entries, e.g. "
                    f"{sorted(names)[0]!r}) and holds no walproxy rebuild state; refusing to "
                    "write into it. Move its contents away (or point --log-dir at an empty "
                    "directory)"
                )
            self._save_state()
            return
        try:
            state = decode_state(self.state_path.read_bytes())
        except kl.LogDirFormatError as exc:
            raise LogDirNotEmpty(
                f"log directory {self.root} holds a walproxy rebuild state that does not "
                f"parse ({exc}); refusing to continue. Move its contents away"
            ) from None
        if (state.cluster_id, state.node_id) != (self.cluster_id, self.node_id):
            raise LogDirNotEmpty(
                f"log directory {self.root} holds a rebuild of cluster {state.cluster_id} "
                f"node {state.node_id}, not cluster {self.cluster_id} node {self.node_id}"
            )
        self.complete = state.complete
        self.resumed = True
        for fp in state.partitions:
            self.finished[(fp.topic, fp.partition)] = fp
        if self.complete:
            return
        # a run that stopped inside finish() leaves some of the files it writes
        own = {
            STATE_FILE,
            STAGING_DIR,
            kl.META_PROPERTIES,
            kl.LOG_START_OFFSET_CHECKPOINT,
            kl.RECOVERY_POINT_CHECKPOINT,
            kl.REPLICATION_OFFSET_CHECKPOINT,
        }
        allowed = (
            own
            | {n + ".tmp" for n in own}
            | {kl.partition_dir_name(t, p) for t, p in self.finished}
        )
        stray = sorted(names - allowed)
        if stray:
            raise LogDirNotEmpty(
                f"log directory {self.root} holds an unfinished walproxy rebuild and also "
                f"{stray[:3]} which the rebuild did not write; refusing to continue"
            )
        # whatever was half-written when the last run stopped is redone from scratch
        shutil.rmtree(self.staging, ignore_errors=True)

    def _save_state(self) -> None:
        state = {
            "format": 1,
            "cluster_id": self.cluster_id,
            "node_id": self.node_id,
            "complete": self.complete,
            "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "partitions": [fp.to_json() for fp in self.finished.values()],
        }
        write_file_atomic(self.state_path, json.dumps(state, indent=1).encode())

    # -- partitions ----------------------------------------------------------------------------
    def is_finished(self, topic: str, partition: int, source: str) -> bool:
        fp = self.finished.get((topic, partition))
        return fp is not None and fp.source == source

    def begin_partition(self, topic: str, partition: int, segment_bytes: int) -> PartitionWriter:
        name = kl.partition_dir_name(topic, partition)
        if (topic, partition) in self.finished:  # built from an older source: redo it
            shutil.rmtree(self.root / name)
            del self.finished[(topic, partition)]
            self._save_state()
        target = self.staging / name
        shutil.rmtree(target, ignore_errors=True)
        self.staging.mkdir(exist_ok=True)
        return PartitionWriter(target, segment_bytes)

    def commit_partition(self, writer: PartitionWriter, done: FinishedPartition) -> None:
        name = kl.partition_dir_name(done.topic, done.partition)
        os.rename(writer.directory, self.root / name)
        fsync_dir(self.staging)
        fsync_dir(self.root)
        self.finished[(done.topic, done.partition)] = done
        self._save_state()

    # -- the end -------------------------------------------------------------------------------
    def finish(
        self,
        meta: kl.MetaProperties,
        metadata_dir: Path | None = None,
        metadata_meta: kl.MetaProperties | None = None,
    ) -> None:
        """Checkpoints, meta.properties (the metadata log dir's too), then mark complete."""
        starts = {tp: fp.log_start_offset for tp, fp in self.finished.items()}
        ends = {tp: fp.next_offset for tp, fp in self.finished.items()}
        write_file_atomic(
            self.root / kl.LOG_START_OFFSET_CHECKPOINT, kl.encode_offset_checkpoint(starts)
        )
        # Everything is fsynced: Kafka need not re-scan (it still recovers each segment once
        # because the indexes are missing, which re-checks every batch CRC).
        write_file_atomic(
            self.root / kl.RECOVERY_POINT_CHECKPOINT, kl.encode_offset_checkpoint(ends)
        )
        # Every offset written was acknowledged, so committed: the high watermark is the end.
        write_file_atomic(
            self.root / kl.REPLICATION_OFFSET_CHECKPOINT, kl.encode_offset_checkpoint(ends)
        )
        if metadata_dir is not None and metadata_dir.resolve() != self.root.resolve():
            metadata_dir.mkdir(parents=True, exist_ok=True)
            other = set(os.listdir(metadata_dir)) - _IGNORABLE - {kl.META_PROPERTIES}
            if other:
                raise LogDirNotEmpty(
                    f"metadata log directory {metadata_dir} is not empty ({sorted(other)[:3]}); "
                    "the broker fetches the metadata log from the controllers, so it must be "
                    "empty"
                )
            assert metadata_meta is not None
            write_file_atomic(metadata_dir / kl.META_PROPERTIES, metadata_meta.encode())
        shutil.rmtree(self.staging, ignore_errors=True)
        # Last: without meta.properties a broker refuses to start ("No readable
        # meta.properties files found"), so it never serves a half-written directory.
        write_file_atomic(self.root / kl.META_PROPERTIES, meta.encode())
        self.complete = True
        self._save_state()
