"""The group coordinator's requests the commit repair needs, over :class:`UpstreamClient`
(whose ``coordinator()`` finds the client of a group's coordinator).

OffsetFetch (v8) and OffsetCommit (v9, generation -1 and no member id:
the commit of a group that is not using group management, which the coordinator accepts for
a group with no members, classic or KIP-848, and which creates the group if it is gone).
Versions every Kafka 3.x/4.x broker serves. Errors come back as codes: which ones are worth
a retry is the caller's decision.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from kio.static.primitive import i32, i64

from proxy.client.upstream_client import UpstreamClient, _module
from proxy.kafka.protocol import OFFSET_COMMIT, OFFSET_FETCH


@dataclass(frozen=True, slots=True)
class Fetched:
    """A group's committed offsets as OffsetFetch answered them."""

    error_code: int  # group-level
    offsets: dict[tuple[str, int], int]  # (topic, partition) -> offset (-1: none)
    errors: dict[tuple[str, int], int]  # partition-level errors other than 0


@dataclass(frozen=True, slots=True)
class CommitOffset:
    offset: int
    leader_epoch: int = -1
    metadata: str | None = None


async def offset_fetch(
    client: UpstreamClient, group: str, partitions: Mapping[str, Iterable[int]]
) -> Fetched:
    """The committed offsets of ``group`` for ``partitions`` (topic -> partition indexes)."""
    schema, m = _module(OFFSET_FETCH)
    body = await client.request(
        OFFSET_FETCH,
        schema(
            groups=(
                m.OffsetFetchRequestGroup(
                    group_id=group,
                    topics=tuple(
                        m.OffsetFetchRequestTopics(
                            name=topic, partition_indexes=tuple(i32(p) for p in sorted(parts))
                        )
                        for topic, parts in sorted(partitions.items())
                    ),
                ),
            ),
            require_stable=False,
        ),
    )
    [g] = body.groups
    offsets: dict[tuple[str, int], int] = {}
    errors: dict[tuple[str, int], int] = {}
    for t in g.topics:
        for p in t.partitions:
            key = (t.name, int(p.partition_index))
            if p.error_code != 0:
                errors[key] = int(p.error_code)
            else:
                offsets[key] = int(p.committed_offset)
    return Fetched(int(g.error_code), offsets, errors)


async def offset_commit(
    client: UpstreamClient, group: str, offsets: Mapping[tuple[str, int], CommitOffset]
) -> dict[tuple[str, int], int]:
    """Commit ``offsets`` for ``group`` as a memberless client; error code per partition."""
    schema, m = _module(OFFSET_COMMIT)
    by_topic: dict[str, list[tuple[int, CommitOffset]]] = {}
    for (topic, partition), o in sorted(offsets.items()):
        by_topic.setdefault(topic, []).append((partition, o))
    body = await client.request(
        OFFSET_COMMIT,
        schema(
            group_id=group,
            generation_id_or_member_epoch=i32(-1),
            member_id="",
            group_instance_id=None,
            topics=tuple(
                m.OffsetCommitRequestTopic(
                    name=topic,
                    partitions=tuple(
                        m.OffsetCommitRequestPartition(
                            partition_index=i32(p),
                            committed_offset=i64(o.offset),
                            committed_leader_epoch=i32(o.leader_epoch),
                            committed_metadata=o.metadata,
                        )
                        for p, o in parts
                    ),
                )
                for topic, parts in by_topic.items()
            ),
        ),
    )
    return {
        (t.name, int(p.partition_index)): int(p.error_code)
        for t in body.topics
        for p in t.partitions
    }


__all__ = ["CommitOffset", "Fetched", "offset_commit", "offset_fetch"]
