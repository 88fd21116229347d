"""Leader epochs of restored batches, sans-IO: keep a client's position valid (KIP-320).

After a broker comes back without its page cache, the reconciler appends the acknowledged
batches it lost at their original offsets, but the broker stamps them with its *new* leader
epoch. A consumer that kept its position (offset N, read under the old epoch E) validates it
after the leader change with OffsetForLeaderEpoch(E); the broker's epoch cache now says E
ended where the restored batches begin (offset A), below N, and the client takes that as a
log truncation and seeks back to A: it reads the restored records a second time.

The records at A..B (B one past the last restored batch) are the ones it read before: the
repair put exactly those batches back at exactly those offsets, or registered nothing. So for
an answer "epoch X ended at A" of a partition restored from A, walproxy answers "ended at B"
instead. It only ever raises an end offset to where identical records end: a client whose
position is at or below A sees no difference; one between A and B keeps its position, as it
would have without the crash; one past B (records the WAL never acknowledged, lost) is still
told to truncate, to B. Answers with an error or an undefined epoch are left alone.

:class:`RestoredRanges` is what the reconciler registers (per partition the latest restored
range, bounded); :func:`rewrite_response` is the response filter, a no-op (no decode) while
nothing is registered.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import Any

from kio.static.primitive import i64

from proxy.kafka.codec import decode_response, encode
from proxy.kafka.protocol import OFFSET_FOR_LEADER_EPOCH

#: Partitions remembered (the oldest restored range is forgotten first).
MAX_PARTITIONS = 100_000


class RestoredRanges:
    """Per (topic, partition), the offsets ``[start, end)`` the reconciler last restored."""

    __slots__ = ("_max", "_ranges")

    def __init__(self, max_partitions: int = MAX_PARTITIONS) -> None:
        self._ranges: OrderedDict[tuple[str, int], tuple[int, int]] = OrderedDict()
        self._max = max_partitions

    def __bool__(self) -> bool:
        return bool(self._ranges)

    def __len__(self) -> int:
        return len(self._ranges)

    def note(self, topic: str, partition: int, start: int, end: int) -> None:
        """Batches identical to the acknowledged ones now fill ``[start, end)``, appended
        under a newer leader epoch (a range continuing the last one extends it)."""
        if end <= start:
            return
        key = (topic, partition)
        old = self._ranges.pop(key, None)
        if old is not None and old[1] == start:
            start = old[0]
        self._ranges[key] = (start, end)
        while len(self._ranges) > self._max:
            self._ranges.popitem(last=False)

    def epoch_end(self, topic: str, partition: int, end_offset: int) -> int:
        """The end offset to answer for an epoch the broker says ended at ``end_offset``."""
        r = self._ranges.get((topic, partition))
        return r[1] if r is not None and r[0] == end_offset else end_offset


def rewrite_response(
    version: int, frame: bytes | memoryview, ranges: RestoredRanges
) -> bytes | memoryview:
    """``frame`` with each epoch that ended where a restored range starts ending where the
    range ends; the same object when nothing changes (or nothing is registered)."""
    if not ranges:
        return frame
    header, body = decode_response(OFFSET_FOR_LEADER_EPOCH, version, frame)
    topics: list[Any] = []
    changed = False
    for t in body.topics:
        parts = []
        for p in t.partitions:
            if p.error_code == 0 and p.leader_epoch >= 0 and p.end_offset >= 0:
                end = ranges.epoch_end(t.topic, int(p.partition), int(p.end_offset))
                if end != p.end_offset:
                    p = dataclasses.replace(p, end_offset=i64(end))
                    changed = True
            parts.append(p)
        topics.append(dataclasses.replace(t, partitions=tuple(parts)))
    if not changed:
        return frame
    return encode(header, dataclasses.replace(body, topics=tuple(topics)))


__all__ = ["MAX_PARTITIONS", "RestoredRanges", "rewrite_response"]
