"""``walproxy rebuild`` against file:// and moto S3 targets and a real WAL, without Kafka.

The broker-level proof (Kafka starts on the result and serves every acknowledged record) is
tests/integration/test_rebuild.py; here: what lands on disk, refusals, and resuming.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
import trio

from offload import kafka_logdir as kl
from offload import layout
from offload.logdir_writer import STATE_FILE
from offload.rebuild import RebuildError, RebuildOptions, RebuildTransient, rebuild
from offload.store import FileStore, ObjectStore, S3Store, StoredObject, StoreError
from proxy.durable.wal_entries import BATCH, OUTCOME, BatchEntry, OutcomeEntry, Source
from proxy.durable.wal_entries import encode_batch as enc_batch
from proxy.durable.wal_entries import encode_outcome as enc_outcome
from proxy.kafka.record_batch import build_batch, iter_batches
from tests.offload.seed import make_batches, offload_partition, write_broker_info
from wal import WalConfig, open_wal

CLUSTER = "gW02qvDLQHCQI9FyIhMNdg"
T1 = uuid.UUID(int=0x11111111_2222_3333_4444_555555555555)
T2 = uuid.UUID(int=0x99999999_2222_3333_4444_555555555555)


def seed(store: ObjectStore, *, compression: str = "none") -> dict[tuple[str, int], bytes]:
    """Two topics, three partitions (one empty), several objects each."""
    logs = {
        ("orders", 0): make_batches(0, 40, 10, 100),
        ("orders", 1): make_batches(0, 25, 5, 300, leader_epoch=2),
        ("__consumer_offsets", 0): b"",
    }
    for (topic, p), log in logs.items():
        tid = T1 if topic == "orders" else T2
        offload_partition(
            store, CLUSTER, topic, tid, p, log, object_bytes=9000, compression=compression
        )
    write_broker_info(store, CLUSTER, 1, {"orders": (T1, [0, 1]), "__consumer_offsets": (T2, [0])})
    return logs


def read_partition(root: Path, topic: str, p: int) -> bytes:
    d = root / f"{topic}-{p}"
    return b"".join(f.read_bytes() for f in sorted(d.glob("*.log")))


def opts(tmp: Path, **kw) -> RebuildOptions:  # type: ignore[no-untyped-def]
    return RebuildOptions(log_dir=tmp / "data", node_id=1, metadata_log_dir=tmp / "meta", **kw)


def quiet() -> object:
    import io

    return io.StringIO()


@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_rebuild_from_file_target(tmp_path: Path, compression: str) -> None:
    store = FileStore(tmp_path / "target")
    logs = seed(store, compression=compression)
    report = rebuild(store, opts(tmp_path, segment_bytes=20_000), out=quiet())  # type: ignore[arg-type]
    root = tmp_path / "data"
    for (topic, p), log in logs.items():
        assert read_partition(root, topic, p) == log
        assert kl.parse_partition_metadata((root / f"{topic}-{p}/partition.metadata").read_text())
    assert len(list((root / "orders-0").glob("*.log"))) > 1  # rolled at --segment-bytes
    assert kl.parse_leader_epoch_checkpoint(
        (root / "orders-1" / kl.LEADER_EPOCH_CHECKPOINT).read_text()
    ) == [(2, 0)]
    hw = kl.parse_offset_checkpoint((root / kl.REPLICATION_OFFSET_CHECKPOINT).read_text())
    assert hw == {("orders", 0): 400, ("orders", 1): 125, ("__consumer_offsets", 0): 0}
    meta = kl.parse_meta_properties((root / "meta.properties").read_text())
    assert (meta.cluster_id, meta.node_id) == (CLUSTER, 1)
    assert (tmp_path / "meta" / "meta.properties").exists()
    assert report.s3_bytes == sum(len(v) for v in logs.values())
    assert report.partitions == 3 and report.segments > 3
    # a second run is a no-op (an init container runs it at every start)
    again = rebuild(store, opts(tmp_path), out=quiet())  # type: ignore[arg-type]
    assert again.already_complete


def test_rebuild_from_moto_s3(tmp_path: Path, s3_server, s3_bucket: str) -> None:  # type: ignore[no-untyped-def]
    store = S3Store(s3_bucket, "pre/fix/", endpoint_url=s3_server.endpoint_url)
    logs = seed(store, compression="zstd")
    rebuild(store, opts(tmp_path), out=quiet())  # type: ignore[arg-type]
    for (topic, p), log in logs.items():
        assert read_partition(tmp_path / "data", topic, p) == log


# -- the WAL tail --------------------------------------------------------------------------
Items = list[tuple[str, int, bytes, int | None]]


def fill_wal(opener: AbstractAsyncContextManager[Any], items: Items) -> None:
    """Write BATCH entries and, where the offset is not None, their OUTCOME into the WAL
    `opener` opens (either backend)."""

    async def main() -> None:
        async with opener as wal:
            for topic, p, records, offset in items:
                lsn = await wal.append(
                    enc_batch(BatchEntry(-1, p, topic, None, None, records)), type=BATCH
                )
                if offset is not None:
                    await wal.append(
                        enc_outcome(OutcomeEntry(lsn, Source.BROKER, 0, offset)), type=OUTCOME
                    )

    trio.run(main)


def wal_with(directory: Path, items: Items) -> None:
    """A WAL directory holding BATCH entries and, where the offset is not None, their OUTCOME."""
    fill_wal(open_wal(str(directory), WalConfig(segment_size=1 << 20)), items)


def client(n: int, tag: str) -> bytes:
    return build_batch([b"%s-%d" % (tag.encode(), i) for i in range(n)], timestamp_ms=5)


#: The tail test's WAL: one batch S3 already covers, two past it, one never acknowledged.
TAIL_ITEMS: Items = [
    ("orders", 0, client(10, "old"), 390),  # already in S3
    ("orders", 0, client(5, "a"), 400),
    ("orders", 0, client(3, "b"), 405),
    ("orders", 0, client(2, "doubt"), None),  # never acknowledged: not written
    ("__consumer_offsets", 0, client(1, "c"), 0),
]


def check_tail(root: Path, logs: dict[tuple[str, int], bytes]) -> None:
    """The log directory `root` holds the S3 copy and then TAIL_ITEMS' acknowledged tail."""
    got = read_partition(root, "orders", 0)
    assert got.startswith(logs[("orders", 0)])
    tail = list(iter_batches(got[len(logs[("orders", 0)]) :]))  # CRCs valid
    assert [(h.base_offset, h.record_count, h.partition_leader_epoch) for h in tail] == [
        (400, 5, 0),
        (405, 3, 0),
    ]
    hw = kl.parse_offset_checkpoint((root / kl.REPLICATION_OFFSET_CHECKPOINT).read_text())
    assert hw[("orders", 0)] == 408 and hw[("__consumer_offsets", 0)] == 1


def test_wal_tail_lands_after_the_s3_copy(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "target")
    logs = seed(store)
    wal = tmp_path / "wal"
    wal_with(wal, TAIL_ITEMS)
    report = rebuild(store, opts(tmp_path, wal_dir=str(wal)), out=quiet())  # type: ignore[arg-type]
    check_tail(tmp_path / "data", logs)
    assert (report.tail_batches, report.wal_in_doubt) == (3, 1)
    assert kl.parse_leader_epoch_checkpoint(
        (tmp_path / "data/__consumer_offsets-0" / kl.LEADER_EPOCH_CHECKPOINT).read_text()
    ) == [(0, 0)]


def test_wal_tail_gap_is_refused(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "target")
    seed(store)
    wal = tmp_path / "wal"
    wal_with(wal, [("orders", 0, client(5, "a"), 402)])
    with pytest.raises(RebuildError, match=r"offsets 400\.\.401 are neither"):
        rebuild(store, opts(tmp_path, wal_dir=str(wal)), out=quiet())  # type: ignore[arg-type]
    assert not (tmp_path / "data" / "meta.properties").exists()


def _never_offloaded_partition(store: FileStore) -> None:
    """``seed``, plus a partition orders-2 this node hosts that S3 has no manifest for yet."""
    seed(store)
    write_broker_info(
        store, CLUSTER, 1, {"orders": (T1, [0, 1, 2]), "__consumer_offsets": (T2, [0])}
    )


def test_a_partition_never_offloaded_is_rebuilt_from_the_wal_alone(tmp_path: Path) -> None:
    """Lost within its first seconds (or while S3 was down since it was created): no
    manifest, but the WAL holds every acknowledged batch from offset 0 (found by the nemesis
    run: the rebuild used to refuse it)."""
    store = FileStore(tmp_path / "target")
    _never_offloaded_partition(store)
    wal = tmp_path / "wal"
    wal_with(wal, [("orders", 2, client(4, "new"), 0), ("orders", 2, client(3, "more"), 4)])
    report = rebuild(store, opts(tmp_path, wal_dir=str(wal)), out=quiet())  # type: ignore[arg-type]
    got = list(iter_batches(read_partition(tmp_path / "data", "orders", 2)))
    assert [(h.base_offset, h.record_count) for h in got] == [(0, 4), (4, 3)]
    hw = kl.parse_offset_checkpoint(
        (tmp_path / "data" / kl.REPLICATION_OFFSET_CHECKPOINT).read_text()
    )
    assert hw[("orders", 2)] == 7
    assert report.tail_batches == 2


def test_a_never_offloaded_partition_whose_wal_starts_late_is_refused(tmp_path: Path) -> None:
    """Its first acknowledged batch is not at offset 0: records before it were written past
    the proxy (or never acknowledged), and S3 has none of them: a gap, refused as such."""
    store = FileStore(tmp_path / "target")
    _never_offloaded_partition(store)
    wal = tmp_path / "wal"
    wal_with(wal, [("orders", 2, client(4, "late"), 10)])
    with pytest.raises(RebuildError, match=r"orders-2: offsets 0\.\.9 are neither"):
        rebuild(store, opts(tmp_path, wal_dir=str(wal)), out=quiet())  # type: ignore[arg-type]


# -- refusals and resuming -------------------------------------------------------------------
def _segment_keys(store: FileStore) -> list[str]:
    return [o.key for o in store.list(layout.topics_prefix(CLUSTER)) if "/seg/" in o.key]


def test_missing_object_is_refused(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "target")
    seed(store)
    victim = _segment_keys(store)[3]
    (tmp_path / "target" / victim).unlink()
    with pytest.raises(RebuildError, match=f"{victim} is missing"):
        rebuild(store, opts(tmp_path), out=quiet())  # type: ignore[arg-type]
    assert not (tmp_path / "data" / "meta.properties").exists()


def rebuild_cli(cfg: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """``walproxy rebuild`` of node 1 from the file:// target in `tmp_path` into its data/."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "proxy",
            "rebuild",
            "--config",
            str(cfg),
            "--log-dir",
            str(tmp_path / "data"),
            "--metadata-log-dir",
            str(tmp_path / "meta"),
            "--target",
            f"file://{tmp_path / 'target'}",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_corrupt_object_is_refused_by_the_cli(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "target")
    seed(store)
    victim = tmp_path / "target" / _segment_keys(store)[1]
    data = bytearray(victim.read_bytes())
    data[100] ^= 0x40
    victim.write_bytes(bytes(data))
    cfg = tmp_path / "walproxy.toml"
    cfg.write_text(f'[proxy]\nnode_id = 1\n[wal]\ndir = "{tmp_path / "nowal"}"\n')
    proc = rebuild_cli(cfg, tmp_path, "--no-wal")
    assert proc.returncode == 1, proc.stderr
    assert "refused" in proc.stderr and "CRC32C" in proc.stderr, proc.stderr
    assert not (tmp_path / "data" / "meta.properties").exists()


def test_missing_wal_dir_is_refused(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "target")
    seed(store)
    with pytest.raises(RebuildError, match="does not exist"):
        rebuild(store, opts(tmp_path, wal_dir=str(tmp_path / "nowal")), out=quiet())  # type: ignore[arg-type]


class FailingStore:
    """A store whose reads start failing after ``ok`` of them: the network going away."""

    def __init__(self, inner: ObjectStore, ok: int) -> None:
        self.inner, self.ok = inner, ok

    def get(self, key: str) -> StoredObject:
        if "/seg/" in key:
            self.ok -= 1
            if self.ok < 0:
                raise StoreError("connection reset", "connection")
        return self.inner.get(key)

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.inner, name)


def test_interrupted_rebuild_resumes(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "target")
    logs = seed(store)
    with pytest.raises(RebuildTransient):
        rebuild(FailingStore(store, ok=8), opts(tmp_path, parallel=1), out=quiet())  # type: ignore[arg-type]
    state = json.loads((tmp_path / "data" / STATE_FILE).read_text())
    done = len(state["partitions"])
    assert not state["complete"] and 1 <= done < 3
    report = rebuild(store, opts(tmp_path), out=quiet())  # type: ignore[arg-type]
    assert report.skipped_finished == done
    for (topic, p), log in logs.items():
        assert read_partition(tmp_path / "data", topic, p) == log


def test_foreign_log_dir_is_refused(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "target")
    seed(store)
    (tmp_path / "data" / "orders-0").mkdir(parents=True)
    with pytest.raises(RebuildError, match="not empty"):
        rebuild(store, opts(tmp_path), out=quiet())  # type: ignore[arg-type]


def test_unknown_node_is_refused(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "target")
    seed(store)
    with pytest.raises(RebuildError, match="nothing was offloaded for node 7"):
        rebuild(store, RebuildOptions(log_dir=tmp_path / "d", node_id=7), out=quiet())  # type: ignore[arg-type]
    shutil.rmtree(tmp_path / "d", ignore_errors=True)


# -- transactions ----------------------------------------------------------------------------
def _txn_wal(directory: Path, *, committed: bool, with_end: bool = True) -> None:
    """A gateway's WAL: a transactional batch of orders-0 (this node's), one of a partition
    another node hosts, and (``with_end``) the transaction's EndTxn with its outcome."""
    from proxy.durable.wal_entries import (
        END_TXN,
        END_TXN_OUTCOME,
        EndTxnEntry,
        EndTxnOutcomeEntry,
        encode_end_txn,
        encode_end_txn_outcome,
    )

    async def main() -> None:
        async with open_wal(str(directory), WalConfig(segment_size=1 << 20)) as wal:
            for topic, offset in (("orders", 400), ("elsewhere", 7)):
                lsn = await wal.append(
                    enc_batch(BatchEntry(-1, 0, topic, None, "tx", _txn(3))), type=BATCH
                )
                await wal.append(
                    enc_outcome(OutcomeEntry(lsn, Source.BROKER, 0, offset)), type=OUTCOME
                )
            if with_end:
                end = EndTxnEntry(5, 1_700_000_000_000, "tx", 42, 3, committed)
                lsn = await wal.append(encode_end_txn(end), type=END_TXN)
                outcome = EndTxnOutcomeEntry(lsn, Source.BROKER, 0, 42, 4)  # TV2: bumped
                await wal.append(encode_end_txn_outcome(outcome), type=END_TXN_OUTCOME)

    trio.run(main)


@pytest.mark.parametrize("committed", [True, False])
def test_a_gateway_wal_restores_this_nodes_transaction_with_its_marker(
    tmp_path: Path, committed: bool
) -> None:
    from offload.txn_tail import ABORT, COMMIT

    store = FileStore(tmp_path / "target")
    logs = seed(store)
    wal = tmp_path / "wal"
    _txn_wal(wal, committed=committed)
    with pytest.raises(RebuildError, match="elsewhere-0: the WAL holds acknowledged batches"):
        rebuild(store, opts(tmp_path, wal_dir=str(wal)), out=quiet())  # type: ignore[arg-type]
    shutil.rmtree(tmp_path / "data", ignore_errors=True)
    report = rebuild(store, opts(tmp_path, wal_dir=str(wal), gateway_wal=True), out=quiet())  # type: ignore[arg-type]
    got = read_partition(tmp_path / "data", "orders", 0)[len(logs[("orders", 0)]) :]
    batch, marker = list(iter_batches(got))
    assert (batch.base_offset, batch.record_count, batch.is_transactional) == (400, 3, True)
    assert (marker.base_offset, marker.is_control, marker.is_transactional) == (403, True, True)
    assert (marker.producer_id, marker.producer_epoch) == (42, 4)  # the answer's (TV2) epoch
    from offload.txn_tail import decode_marker
    from tests.unit.test_txn_tail import _control_record

    kind, coordinator_epoch = decode_marker(*_control_record(got[batch.length :]))
    assert (kind, coordinator_epoch) == (COMMIT if committed else ABORT, 0)
    hw = kl.parse_offset_checkpoint(
        (tmp_path / "data" / kl.REPLICATION_OFFSET_CHECKPOINT).read_text()
    )
    assert hw[("orders", 0)] == 404
    assert report.wal_tail_elsewhere == 1 and report.txn_markers_written == 1
    assert (report.txn_restored_committed, report.txn_restored_aborted) == (
        (1, 0) if committed else (0, 1)
    )


def test_a_gateway_wal_without_the_end_refuses_then_allow_gaps_leaves_it_out(
    tmp_path: Path,
) -> None:
    store = FileStore(tmp_path / "target")
    seed(store)
    wal = tmp_path / "wal"
    _txn_wal(wal, committed=True, with_end=False)
    o = opts(tmp_path, wal_dir=str(wal), gateway_wal=True)
    with pytest.raises(
        RebuildError, match=r"orders-0: transactional WAL batch at LSN 1 \(offset 400,"
    ):
        rebuild(store, o, out=quiet())  # type: ignore[arg-type]
    assert not (tmp_path / "data" / "meta.properties").exists()
    o.allow_gaps = True
    report = rebuild(store, o, out=quiet())  # type: ignore[arg-type]
    assert report.txn_batches_refused == 1 and report.txn_markers_written == 0
    assert any("left out" in w and "producer id 42" in w for w in report.warnings)


# -- a transaction open at the end of the S3 copy (issue 17) --------------------------------
def _txn(n: int, base_offset: int = 0) -> bytes:
    from proxy.kafka.record_batch import TRANSACTIONAL_FLAG

    return build_batch(
        [b"t%d" % i for i in range(n)],
        timestamp_ms=5,
        producer_id=42,
        producer_epoch=3,
        base_sequence=0,
        attributes=TRANSACTIONAL_FLAG,
        base_offset=base_offset,
    )


def _s3_open_seed(store: ObjectStore) -> dict[tuple[str, int], bytes]:
    """Like ``seed`` (without __consumer_offsets), orders-0's copy ending after producer 42's
    transactional batch at 400..402 and before its marker: the manifest lists it as open."""
    logs = {
        ("orders", 0): make_batches(0, 40, 10, 100) + _txn(3, base_offset=400),
        ("orders", 1): make_batches(0, 25, 5, 300),
    }
    m = offload_partition(store, CLUSTER, "orders", T1, 0, logs[("orders", 0)], object_bytes=9000)
    offload_partition(store, CLUSTER, "orders", T1, 1, logs[("orders", 1)], object_bytes=9000)
    write_broker_info(store, CLUSTER, 1, {"orders": (T1, [0, 1])})
    assert [(t.producer_id, t.producer_epoch, t.first_offset) for t in m.open_transactions] == [
        (42, 3, 400)
    ]
    assert m.next_offset == 403
    return logs


def _s3_open_wal(
    directory: Path, *, end: bool | None, batch: bool = True, after: int | None = 404
) -> None:
    """The WAL of the sidecar: producer 42's batch (acknowledged at 400: S3 has it), its
    EndTxn (``end``: committed or not; None: none) answered under transaction.version 2,
    and a plain batch acknowledged at ``after`` (the real marker at 403 before it)."""
    from proxy.durable.wal_entries import (
        END_TXN,
        END_TXN_OUTCOME,
        EndTxnEntry,
        EndTxnOutcomeEntry,
        encode_end_txn,
        encode_end_txn_outcome,
    )

    async def main() -> None:
        async with open_wal(str(directory), WalConfig(segment_size=1 << 20)) as wal:

            async def produce(topic: str, p: int, records: bytes, offset: int) -> None:
                lsn = await wal.append(
                    enc_batch(BatchEntry(-1, p, topic, None, "tx", records)), type=BATCH
                )
                await wal.append(
                    enc_outcome(OutcomeEntry(lsn, Source.BROKER, 0, offset)), type=OUTCOME
                )

            if batch:
                await produce("orders", 0, _txn(3), 400)
            if end is not None:
                entry = EndTxnEntry(5, 1_700_000_000_000, "tx", 42, 3, end)
                lsn = await wal.append(encode_end_txn(entry), type=END_TXN)
                outcome = EndTxnOutcomeEntry(lsn, Source.BROKER, 0, 42, 4)  # TV2: bumped
                await wal.append(encode_end_txn_outcome(outcome), type=END_TXN_OUTCOME)
            if after is not None:
                await produce("orders", 0, client(2, "after"), after)
            await produce("orders", 1, client(1, "o1"), 125)

    trio.run(main)


@pytest.fixture
def moto_store(s3_server, s3_bucket: str) -> S3Store:  # type: ignore[no-untyped-def]
    return S3Store(s3_bucket, "pre/fix/", endpoint_url=s3_server.endpoint_url)


@pytest.mark.parametrize("committed", [True, False])
def test_a_transaction_open_at_the_s3_end_gets_its_marker_from_the_wal(
    tmp_path: Path, moto_store: S3Store, committed: bool
) -> None:
    """S3's copy of orders-0 ends between producer 42's batch and its marker (the manifest
    says so); the WAL still holds the batch and the EndTxn: the marker lands at 403, the
    first offset after the copy no acknowledged batch takes, before the plain batch at 404."""
    from offload.txn_tail import ABORT, COMMIT, decode_marker
    from tests.unit.test_txn_tail import _control_record

    logs = _s3_open_seed(moto_store)
    wal = tmp_path / "wal"
    _s3_open_wal(wal, end=committed)
    report = rebuild(moto_store, opts(tmp_path, wal_dir=str(wal)), out=quiet())  # type: ignore[arg-type]
    got = read_partition(tmp_path / "data", "orders", 0)
    assert got.startswith(logs[("orders", 0)])
    rest = got[len(logs[("orders", 0)]) :]
    marker, after = list(iter_batches(rest))
    assert (marker.base_offset, marker.is_control, marker.producer_id) == (403, True, 42)
    assert marker.producer_epoch == 4  # the EndTxn answer's (TV2) epoch
    kind, _ = decode_marker(*_control_record(rest[: marker.length]))
    assert kind == (COMMIT if committed else ABORT)
    assert (after.base_offset, after.record_count, after.is_transactional) == (404, 2, False)
    assert report.txn_markers_for_s3_open == 1 and report.txn_markers_written == 1
    assert report.txn_open_unresolved == 0 and report.txn_batches_refused == 0
    assert (report.txn_restored_committed, report.txn_restored_aborted) == (
        (1, 0) if committed else (0, 1)
    )
    assert not [w for w in report.warnings if "producer id 42" in w]


def test_a_transaction_open_at_the_s3_end_with_no_end_in_the_wal_is_refused(
    tmp_path: Path, moto_store: S3Store
) -> None:
    _s3_open_seed(moto_store)
    wal = tmp_path / "wal"
    _s3_open_wal(wal, end=None, after=None)
    with pytest.raises(RebuildError) as err:
        rebuild(moto_store, opts(tmp_path, wal_dir=str(wal)), out=quiet())  # type: ignore[arg-type]
    text = str(err.value)
    for part in (
        "orders-0: the transaction of producer id 42, epoch 3 is open at the S3 copy's end",
        "first offset 400",
        "its WAL batch at LSN 1, offset 400",
        "no EndTxn",
        "--allow-gaps",
        "find-hanging",
        "abort --topic orders --partition 0 --start-offset 400",
    ):
        assert part in text, (part, text)
    assert not (tmp_path / "data" / "meta.properties").exists()


def test_allow_gaps_leaves_an_unresolved_s3_open_transaction_open_with_a_warning(
    tmp_path: Path, moto_store: S3Store
) -> None:
    import io

    logs = _s3_open_seed(moto_store)
    wal = tmp_path / "wal"
    _s3_open_wal(wal, end=None, after=None)
    out = io.StringIO()
    report = rebuild(moto_store, opts(tmp_path, wal_dir=str(wal), allow_gaps=True), out=out)
    assert read_partition(tmp_path / "data", "orders", 0) == logs[("orders", 0)]  # no marker
    assert report.txn_open_unresolved == 1 and report.txn_markers_for_s3_open == 0
    (warning,) = [w for w in report.warnings if "producer id 42" in w]
    assert warning.startswith("left open (--allow-gaps): orders-0:")
    assert "start-offset 400" in warning and "never ended" in warning
    assert f"rebuild: warning: {warning}" in out.getvalue()


@pytest.mark.parametrize("wal_kind", ["trimmed", "no-wal"])
def test_an_s3_open_transaction_not_in_the_wal_is_warned_about(
    tmp_path: Path, moto_store: S3Store, wal_kind: str
) -> None:
    """The manifest lists the transaction as open, and the WAL holds none of its batches
    (trimmed by an older walproxy, or no WAL at all): nothing proves its end, so the rebuilt
    log keeps it open; the report says so loudly, with the remedy."""
    import io

    logs = _s3_open_seed(moto_store)
    o = opts(tmp_path)
    if wal_kind == "trimmed":
        _s3_open_wal(tmp_path / "wal", end=True, batch=False, after=None)
        o.wal_dir = str(tmp_path / "wal")
    out = io.StringIO()
    report = rebuild(moto_store, o, out=out)
    assert read_partition(tmp_path / "data", "orders", 0) == logs[("orders", 0)]
    assert report.txn_open_unresolved == 1 and report.txn_markers_for_s3_open == 0
    (warning,) = [w for w in report.warnings if "producer id 42" in w]
    for part in (
        "orders-0: the transaction of producer id 42, epoch 3 from offset 400",
        "no WAL was read (--no-wal)" if wal_kind == "no-wal" else "the WAL holds no batch of it",
        "kafka-transactions.sh --bootstrap-server HOST:PORT find-hanging --broker-id N",
        "abort --topic orders --partition 0 --start-offset 400",
        "aborted or never ended",
    ):
        assert part in warning, (part, warning)
    assert f"rebuild: warning: {warning}" in out.getvalue()


def test_a_commit_transaction_left_open_by_the_s3_copy_gets_its_marker(tmp_path: Path) -> None:
    """__consumer_offsets-0's S3 copy ends with a transactional offset commit record and no
    marker (its manifest lists the transaction as open); the WAL holds the TxnOffsetCommit and
    the EndTxn that committed it: the rebuilt log has the marker right after the copy, then
    the commit restored as a plain record, and the coordinator would load it as committed."""
    from offload.node_files import BrokerInfo, TopicEntry, encode_broker_info
    from offload.offsets_tail import commit_key, commit_value, decode_commit_record
    from offload.txn_tail import COMMIT, decode_marker
    from proxy.durable.wal_entries import (
        COMMIT as COMMIT_ENTRY,
    )
    from proxy.durable.wal_entries import (
        COMMIT_OUTCOME,
        END_TXN,
        END_TXN_OUTCOME,
        CommitEntry,
        CommitOffset,
        CommitOutcomeEntry,
        EndTxnEntry,
        EndTxnOutcomeEntry,
        encode_commit,
        encode_commit_outcome,
        encode_end_txn,
        encode_end_txn_outcome,
    )
    from proxy.kafka.record_batch import TRANSACTIONAL_FLAG
    from tests.unit.test_txn_tail import _control_record

    store = FileStore(tmp_path / "target")
    pending = build_batch(  # what the coordinator wrote for the TxnOffsetCommit
        [commit_value(20, -1, None, 1_700_000_000_000)],
        keys=[commit_key("g", "orders", 0)],
        timestamp_ms=1_700_000_000_000,
        producer_id=5,
        producer_epoch=0,
        base_sequence=0,
        attributes=TRANSACTIONAL_FLAG,
    )
    m = offload_partition(store, CLUSTER, "__consumer_offsets", T2, 0, pending)
    assert [(t.producer_id, t.first_offset) for t in m.open_transactions] == [(5, 0)]
    offload_partition(store, CLUSTER, "orders", T1, 0, make_batches(0, 3, 10, 100))
    info = BrokerInfo(
        CLUSTER,
        1,
        None,
        None,
        {
            "orders": TopicEntry(T1, (0,), 1),
            "__consumer_offsets": TopicEntry(T2, (0,), 1),
        },
        1,
    )
    store.put(layout.broker_key(CLUSTER, 1), encode_broker_info(info))

    async def main(directory: Path, with_end: bool) -> None:
        async with open_wal(str(directory), WalConfig(segment_size=1 << 20)) as wal:
            txn = CommitEntry(
                28,
                3,
                1_700_000_000_000,
                "g",
                "tx",
                5,
                0,
                (CommitOffset("orders", None, 0, 20, -1, None),),
            )
            lsn = await wal.append(encode_commit(txn), type=COMMIT_ENTRY)
            o = CommitOutcomeEntry(lsn, Source.BROKER, (0,))
            await wal.append(encode_commit_outcome(o), type=COMMIT_OUTCOME)
            if not with_end:
                return
            lsn = await wal.append(
                encode_end_txn(EndTxnEntry(3, 1_700_000_000_001, "tx", 5, 0, True)), type=END_TXN
            )
            end = EndTxnOutcomeEntry(lsn, Source.BROKER, 0)
            await wal.append(encode_end_txn_outcome(end), type=END_TXN_OUTCOME)

    trio.run(main, tmp_path / "wal", True)
    report = rebuild(store, opts(tmp_path, wal_dir=str(tmp_path / "wal")), out=quiet())  # type: ignore[arg-type]
    log = read_partition(tmp_path / "data", "__consumer_offsets", 0)
    first, marker, restored = list(iter_batches(log))
    assert (first.base_offset, first.is_transactional, first.is_control) == (0, True, False)
    assert (marker.base_offset, marker.is_control, marker.producer_id) == (1, True, 5)
    kind, _ = decode_marker(*_control_record(log[first.length : first.length + marker.length]))
    assert kind == COMMIT
    assert (restored.base_offset, restored.is_transactional) == (2, False)
    key, value = _control_record(log[first.length + marker.length :])
    assert decode_commit_record(key, value)[:4] == ("g", "orders", 0, 20)
    assert report.offset_commit_txn_markers == 1 and not report.warnings
    # negative control: the same copy, the WAL without the EndTxn: no marker (the commit stays
    # pending), and a warning naming the transaction and the operator's remedy
    shutil.rmtree(tmp_path / "data")
    shutil.rmtree(tmp_path / "meta", ignore_errors=True)
    trio.run(main, tmp_path / "wal2", False)
    report = rebuild(store, opts(tmp_path, wal_dir=str(tmp_path / "wal2")), out=quiet())  # type: ignore[arg-type]
    log = read_partition(tmp_path / "data", "__consumer_offsets", 0)
    assert [b.is_control for b in iter_batches(log)] == [False]
    assert report.offset_commit_txn_markers == 0
    assert report.offset_commit_txns_open_undecided == 1
    [warning] = [w for w in report.warnings if "open at the end of the S3 copy" in w]
    assert "producer 5 (epoch 0) from offset 0" in warning and "--start-offset 0" in warning
