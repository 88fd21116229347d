"""The OffsetForLeaderEpoch filter (proxy/kafka/leader_epochs.py): a partition the reconciler
restored keeps a client's KIP-320 position valid, on kio messages."""

from __future__ import annotations

import datetime

from kio.schema.errors import ErrorCode
from kio.schema.offset_for_leader_epoch.v4.response import (
    EpochEndOffset,
    OffsetForLeaderEpochResponse,
    OffsetForLeaderTopicResult,
)
from kio.schema.response_header.v1.header import ResponseHeader
from kio.static.primitive import i32, i64

from proxy.kafka.codec import decode_response
from proxy.kafka.codec import encode as encode_message
from proxy.kafka.leader_epochs import RestoredRanges, rewrite_response
from proxy.kafka.protocol import OFFSET_FOR_LEADER_EPOCH
from proxy.net.filters import DECODED_APIS, build_response_filters


def _answer(*parts: tuple[int, int, int, int]) -> bytes:
    """A v4 response for topic "t": (partition, error, leader epoch, end offset) each."""
    body = OffsetForLeaderEpochResponse(
        throttle_time=datetime.timedelta(0),
        topics=(
            OffsetForLeaderTopicResult(
                topic="t",
                partitions=tuple(
                    EpochEndOffset(
                        error_code=ErrorCode(e),
                        partition=i32(p),
                        leader_epoch=i32(le),
                        end_offset=i64(end),
                    )
                    for p, e, le, end in parts
                ),
            ),
        ),
    )
    return encode_message(ResponseHeader(correlation_id=i32(9)), body)


def _ends(frame: bytes | memoryview) -> list[int]:
    _, body = decode_response(OFFSET_FOR_LEADER_EPOCH, 4, frame)
    return [int(p.end_offset) for t in body.topics for p in t.partitions]


def test_an_epoch_ending_where_the_restored_batches_begin_ends_where_they_end() -> None:
    ranges = RestoredRanges()
    ranges.note("t", 0, 40, 120)  # the reconciler put 40..119 back under a new epoch
    frame = _answer((0, 0, 0, 40), (1, 0, 0, 40), (2, 0, 0, 7))
    assert _ends(rewrite_response(4, frame, ranges)) == [120, 40, 7]  # only partition 0
    # an epoch that ended elsewhere, an error, an undefined epoch: untouched, not re-encoded
    for other in ((0, 0, 0, 39), (0, 6, 0, 40), (0, 0, -1, 40)):
        f = _answer(other)
        assert rewrite_response(4, f, ranges) is f


def test_nothing_registered_means_nothing_decoded() -> None:
    garbage = b"\x00\x01not a response"
    assert rewrite_response(4, garbage, RestoredRanges()) is garbage
    filters = build_response_filters(lambda n, h, p: (h, p))
    assert filters[OFFSET_FOR_LEADER_EPOCH](4, garbage) is garbage
    assert OFFSET_FOR_LEADER_EPOCH in DECODED_APIS  # ApiVersions: only versions kio decodes


def test_ranges_extend_when_contiguous_and_stay_bounded() -> None:
    ranges = RestoredRanges(max_partitions=2)
    ranges.note("t", 0, 10, 20)
    ranges.note("t", 0, 20, 25)  # a later repair continuing it
    assert ranges.epoch_end("t", 0, 10) == 25
    ranges.note("t", 0, 30, 35)  # a new loss: the latest range only
    assert (ranges.epoch_end("t", 0, 10), ranges.epoch_end("t", 0, 30)) == (10, 35)
    ranges.note("t", 1, 0, 5)
    ranges.note("t", 2, 0, 5)  # the oldest partition is forgotten
    assert len(ranges) == 2 and ranges.epoch_end("t", 0, 30) == 30
    ranges.note("t", 3, 5, 5)  # nothing restored: nothing noted
    assert len(ranges) == 2
