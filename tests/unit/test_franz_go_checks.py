"""The two judges of the franz-go suite test, on inputs made here: test2json events, and a WAL
against a broker log directory (tests/integration/franz_go.py, wal_vs_log.py)."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

from offload.kafka_logdir import encode_partition_metadata, segment_file_name
from offload.wal_tail import patch_batch
from proxy.durable import wal_entries as we
from proxy.kafka.record_batch import CONTROL_FLAG, build_batch
from tests.integration.franz_go import parse_events
from tests.integration.wal_vs_log import check
from tests.wal.helpers import new_dir
from wal import WalConfig, open_wal

TOPIC_ID = uuid.UUID(int=0xF00D)


def _events(*events: dict[str, object]) -> list[str]:
    return [json.dumps(e) + "\n" for e in events] + ["not json: the binary's own stderr\n"]


def test_events_give_status_elapsed_and_franz_gos_skip_reason() -> None:
    reason = "broker does not support share groups (requires ShareFetch v2, Kafka 4.2+)"
    tests = parse_events(
        _events(
            {"Action": "run", "Test": "TestA"},
            {"Action": "run", "Test": "TestA/sub"},
            {"Action": "fail", "Test": "TestA/sub", "Elapsed": 0.5},
            {"Action": "pass", "Test": "TestA", "Elapsed": 1.25},
            {"Action": "run", "Test": "TestShare"},
            {"Action": "output", "Test": "TestShare", "Output": "=== RUN   TestShare\n"},
            {
                "Action": "output",
                "Test": "TestShare",
                "Output": f"    share_test.go:38: {reason}\n",
            },
            {"Action": "skip", "Test": "TestShare", "Elapsed": 0},
            {"Action": "run", "Test": "TestHung"},
            {"Action": "output", "Output": "FAIL\n"},
        )
    )
    assert {n: (t.status, t.elapsed) for n, t in tests.items()} == {
        "TestA": ("pass", 1.25),  # a subtest's result does not override its parent's
        "TestShare": ("skip", 0.0),
        "TestHung": ("run", 0.0),  # never finished (the binary died or timed out)
    }
    assert tests["TestShare"].skip_reason == reason


# -- WAL against log -------------------------------------------------------------------------
def _client_batch(i: int, *, idempotent: bool) -> bytes:
    pid = {"producer_id": 7, "producer_epoch": 0, "base_sequence": 3 * i} if idempotent else {}
    return build_batch([b"a%d" % i, b"b%d" % i, b"c%d" % i], timestamp_ms=1_700_000_000_000, **pid)


async def _wal(directory: str, batches: list[bytes]) -> None:
    """Acknowledged produces of ``batches`` to partition 0, at offsets 0, 3, 6, ..."""
    async with open_wal(directory, WalConfig(segment_size=256 * 1024)) as wal:
        for i, raw in enumerate(batches):
            entry = we.BatchEntry(-1, 0, None, TOPIC_ID, None, raw)
            lsn = await wal.append(we.encode_batch(entry), type=we.BATCH)
            outcome = we.OutcomeEntry(lsn, we.Source.BROKER, 0, 3 * i)
            await wal.append(we.encode_outcome(outcome), type=we.OUTCOME)


def _log_dir(root: Path, stored: list[tuple[int, bytes]], *, deleted: bool = True) -> Path:
    """A broker log dir holding partition 0 of the topic, as Kafka leaves a deleted one."""
    suffix = f".{uuid.uuid4().hex}-delete" if deleted else ""
    part = root / f"franz-topic-0{suffix}"
    part.mkdir(parents=True)
    (part / "partition.metadata").write_bytes(encode_partition_metadata(TOPIC_ID))
    data = b"".join(patch_batch(raw, offset, 0) for offset, raw in stored)
    (part / segment_file_name(0)).write_bytes(data)
    return root


async def test_every_acknowledged_batch_found_once_at_its_offset(tmp_path: Path) -> None:
    d = new_dir()
    try:
        batches = [_client_batch(i, idempotent=i % 2 == 0) for i in range(6)]
        await _wal(d, batches)
        marker = build_batch([b"\0"], attributes=CONTROL_FLAG)  # the broker's, not acked
        log = _log_dir(tmp_path, [(3 * i, b) for i, b in enumerate(batches)] + [(18, marker)])
        result = check(Path(d), [log])
        assert (result.topics, result.acked_batches, result.read_batches) == (1, 6, 6)
        assert not result.bad and not result.missing_topics, result.summary()
    finally:
        shutil.rmtree(d, ignore_errors=True)


async def test_lost_moved_and_duplicated_batches_are_reported(tmp_path: Path) -> None:
    d = new_dir()
    try:
        batches = [_client_batch(i, idempotent=True) for i in range(4)]
        await _wal(d, batches)
        # batch 1 lost, batch 2 written one offset later, batch 3 twice
        stored = [(0, batches[0]), (4, batches[2]), (9, batches[3]), (12, batches[3])]
        report = check(Path(d), [_log_dir(tmp_path, stored)]).bad[str(TOPIC_ID)]
        assert [a.offset for a in report.lost] == [3]
        assert [(a.offset, got) for a, got in report.moved] == [(6, 4)]
        assert len(report.duplicates) == 1
    finally:
        shutil.rmtree(d, ignore_errors=True)


async def test_a_topic_missing_from_the_log_dirs_is_named(tmp_path: Path) -> None:
    d = new_dir()
    try:
        await _wal(d, [_client_batch(0, idempotent=False)])
        (tmp_path / "empty").mkdir()
        assert check(Path(d), [tmp_path / "empty"]).missing_topics == [str(TOPIC_ID)]
    finally:
        shutil.rmtree(d, ignore_errors=True)
