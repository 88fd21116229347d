"""The durable commit path: offset commits are in the WAL before the client hears of them.

:class:`DurableCommit` is the handler the connection calls for OffsetCommit and
TxnOffsetCommit requests (the steps are :class:`~proxy.durable.request_path.DurableRequest`'s).
For each commit request it

1. skims the request (:mod:`proxy.kafka.commit_skim`: group, and per partition the topic,
   offset, leader epoch and metadata; the frame stays as the client sent it);
2. queues one COMMIT entry in the WAL (group commit shares its write and sync with produce
   batches), and lets the connection forward the frame once the entry is durable;
3. records the broker's answer (each partition's error code) as a COMMIT_OUTCOME entry, and
   lets the response go to the client only once that entry is durable.

A commit whose WAL append fails is answered COORDINATOR_NOT_AVAILABLE, which clients retry
(the coordinator answers so itself when it cannot append to ``__consumer_offsets``); once the
WAL is fenced every later commit is, so nothing is acknowledged that the WAL does not hold.

A commit whose connection dies before its answer was never acknowledged: its outcome is
recorded as abandoned, and nothing restores it (the client retries, or resumes from its
previous commit, as it would with Kafka alone).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from proxy.durable import metrics as pm
from proxy.durable.request_path import DurableRequest, PreparedRequest
from proxy.durable.wal_entries import (
    COMMIT,
    COMMIT_OUTCOME,
    CommitEntry,
    CommitOffset,
    CommitOutcomeEntry,
    Source,
    encode_commit,
    encode_commit_outcome,
)
from proxy.kafka.commit_codec import error_response, response_errors
from proxy.kafka.commit_skim import SkimmedCommit, skim_commit
from proxy.kafka.groups import CONSUMER_OFFSETS
from proxy.kafka.protocol import COORDINATOR_NOT_AVAILABLE

#: One commit request between the client reader and its acknowledgement.
PreparedCommit = PreparedRequest[SkimmedCommit]


class DurableCommit(DurableRequest[SkimmedCommit]):
    """Offset commits over the produce path's WAL (its trimming index guards them too)."""

    what = "offset commit"
    logger = "walproxy.commit"
    entry_type = COMMIT
    outcome_type = COMMIT_OUTCOME
    #: The group's ``__consumer_offsets`` partition is resolved by the S3 coverage (it knows
    #: the partition count).
    unresolved_key = (CONSUMER_OFFSETS, None, -1)

    def _skim(self, payload: memoryview) -> SkimmedCommit:
        return skim_commit(payload)

    def _entry(self, commit: SkimmedCommit) -> bytes | None:
        if not commit.partitions:
            return None  # nothing to commit: forwarded like any other request
        return encode_commit(
            CommitEntry(
                api_key=commit.api_key,
                api_version=commit.version,
                commit_time_ms=time.time_ns() // 1_000_000,
                group_id=commit.group_id,
                transactional_id=commit.transactional_id,
                producer_id=commit.producer_id,
                producer_epoch=commit.producer_epoch,
                offsets=tuple(
                    CommitOffset(
                        p.topic, p.topic_id, p.partition, p.offset, p.leader_epoch, p.metadata
                    )
                    for p in commit.partitions
                ),
            )
        )

    def _refusal(self, commit: SkimmedCommit) -> bytes:
        pm.COMMITS_REFUSED.inc()
        return error_response(commit, COORDINATOR_NOT_AVAILABLE)

    def _persisted(self) -> None:
        pm.COMMITS_PERSISTED.inc()

    def _log_fields(self, commit: SkimmedCommit) -> dict[str, object]:
        return {"group": commit.group_id}

    def _outcome(
        self, req: PreparedCommit, version: int, payload: memoryview
    ) -> tuple[bytes, Callable[[bool], None]]:
        commit = req.skim
        errors = response_errors(commit.api_key, version, payload)
        codes = tuple(errors.get((p.topic, p.topic_id, p.partition), -1) for p in commit.partitions)
        acked = sum(1 for code in codes if code == 0)
        lsn = req.lsn

        def on_durable(waited: bool) -> None:
            if waited:
                pm.COMMITTED_OFFSETS_ACKED.inc(acked)
            if acked:  # waits in the settled index until S3 has the group's partition
                self.produce.note_commit_settled(lsn, commit.group_id, commit.producer_id)

        return encode_commit_outcome(CommitOutcomeEntry(lsn, Source.BROKER, codes)), on_durable

    def _abandoned(self, req: PreparedCommit) -> bytes:
        n = len(req.skim.partitions)
        return encode_commit_outcome(CommitOutcomeEntry(req.lsn, Source.ABANDONED, (-1,) * n))


__all__ = ["DurableCommit", "PreparedCommit"]
