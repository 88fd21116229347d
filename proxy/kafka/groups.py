"""Which ``__consumer_offsets`` partition holds a group: Kafka's own mapping, sans-IO.

The group coordinator stores a group in partition ``Utils.abs(groupId.hashCode()) %
offsets.topic.num.partitions``, for classic and KIP-848 groups alike. Kafka's ``Utils.abs`` is
``Math.abs`` except that ``Integer.MIN_VALUE`` gives 0 (it is *not* ``toPositive``'s
``h & 0x7fffffff``, which the producer's partitioner uses: the two differ for every negative
hash); Java's ``String.hashCode`` runs over UTF-16 code units.
"""

from __future__ import annotations

CONSUMER_OFFSETS = "__consumer_offsets"


def java_string_hash(value: str) -> int:
    """Java's ``String.hashCode`` (a signed 32-bit int)."""
    h = 0
    raw = value.encode("utf-16-be")
    for i in range(0, len(raw), 2):
        h = (31 * h + (raw[i] << 8 | raw[i + 1])) & 0xFFFFFFFF
    return h - (1 << 32) if h & 0x80000000 else h


def group_partition(group_id: str, partitions: int) -> int:
    """The ``__consumer_offsets`` partition of ``group_id`` when the topic has ``partitions``."""
    if partitions <= 0:
        raise ValueError(f"{CONSUMER_OFFSETS} has no partitions ({partitions})")
    h = java_string_hash(group_id)
    return (0 if h == -(2**31) else abs(h)) % partitions
