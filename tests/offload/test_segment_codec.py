import pytest
from hypothesis import given
from hypothesis import strategies as st

from offload import segment_codec as sc

from .helpers import batches, segment


@given(st.lists(st.integers(1, 20), min_size=1, max_size=10), st.sampled_from(["none", "zstd"]))
def test_encode_decode_round_trip_verifies(counts, compression) -> None:
    ref, stored, info = segment(100, counts, compression=compression)
    assert (info.base_offset, info.last_offset, info.batches) == (
        100,
        99 + sum(counts),
        len(counts),
    )
    assert sc.decode(stored, ref) == batches(100, counts)


@given(st.lists(st.integers(1, 5), min_size=1, max_size=6), st.data())
def test_whole_batches_cuts_a_fetch_at_the_last_complete_batch(counts, data) -> None:
    log = batches(0, counts)
    cut = data.draw(st.integers(0, len(log)))
    n = sc.whole_batches(log[:cut])
    assert n <= cut
    if n:
        sc.describe(log[:n], 0)  # whole, valid batches
    # nothing complete was dropped: the next batch (if any) does not fit in the cut
    if n < len(log):
        nxt = int.from_bytes(log[n + 8 : n + 12], "big") + 12
        assert n + nxt > cut


@given(st.lists(st.integers(1, 5), min_size=1, max_size=6), st.data())
def test_fetched_span_agrees_with_describe_on_any_fetch(counts, data) -> None:
    log = batches(10, counts)
    cut = data.draw(st.integers(0, len(log)))
    covers_from = data.draw(st.integers(10, 10 + counts[0] - 1))  # inside the first batch
    n, base, last = sc.fetched_span(log[:cut], covers_from)
    assert n == sc.whole_batches(log[:cut])
    if n:
        info = sc.describe(log[:n], covers_from)
        assert (base, last) == (info.base_offset, info.last_offset)


def test_corruption_is_detected_and_named() -> None:
    ref, stored, _ = segment(0, [3, 3])
    flipped = bytearray(stored)
    flipped[-1] ^= 1
    with pytest.raises(sc.SegmentError, match="CRC32C"):
        sc.decode(bytes(flipped), ref)
    with pytest.raises(sc.SegmentError, match="bytes stored"):
        sc.decode(stored[:-1], ref)
    zref, zstored, _ = segment(0, [3, 3], compression="zstd")
    with pytest.raises(sc.SegmentError, match=r"zstd|CRC32C|bytes"):
        sc.decode(zstored[:-2] + b"\0\0", zref)


def test_describe_refuses_out_of_order_and_garbage() -> None:
    with pytest.raises(sc.SegmentError, match="does not follow"):
        sc.describe(batches(5, [2]) + batches(0, [2]), 0)
    with pytest.raises(sc.SegmentError):
        sc.describe(b"\0" * 70, 0)
    with pytest.raises(sc.SegmentError, match="at least one"):
        sc.describe(b"", 0)


def test_range_starts_at_the_fetch_offset_or_the_batch_containing_it() -> None:
    log = batches(10, [5])
    assert sc.describe(log, 12).base_offset == 10  # fetch inside the batch
    assert sc.describe(log, 7).base_offset == 7  # compaction gap 7..9 before it


@given(st.lists(st.integers(1, 5), min_size=1, max_size=6), st.integers(0, 3), st.data())
def test_first_difference_accepts_the_same_batches_under_a_new_leader_epoch(
    counts, epoch, data
) -> None:
    stored = batches(10, counts)
    # a repair appends the same client batches again: a newer epoch, more behind, maybe cut
    fetched = batches(10, counts, leader_epoch=epoch + 1) + batches(10 + sum(counts), [2])
    cut = data.draw(st.integers(len(stored), len(fetched)))
    assert sc.first_difference(stored, fetched[:cut]) is None


def test_first_difference_names_a_missing_or_other_batch() -> None:
    stored = batches(10, [2, 3])
    assert "no batch at offset 12" in (sc.first_difference(stored, batches(10, [2])) or "")
    # other records at the same offsets (a different history after an unrepaired loss)
    other = batches(10, [2]) + batches(12, [3], ts=1)
    assert "at offset 12 differs" in (sc.first_difference(stored, other) or "")
    # the same offsets split into other batches
    assert sc.first_difference(stored, batches(10, [5])) is not None


def test_first_difference_ignores_the_append_time_a_re_append_stamps() -> None:
    """Under LogAppendTime the broker sets each batch's max timestamp (and so its CRC) when it
    appends: a batch restored by a repair is the same batch."""
    import struct

    import crc32c

    stored = batches(10, [3])
    restamped = bytearray(batches(10, [3], leader_epoch=4))
    struct.pack_into(">q", restamped, 35, 1_800_000_000_000)  # maxTimestamp
    struct.pack_into(">I", restamped, 17, crc32c.crc32c(bytes(restamped[21:])))
    assert restamped != bytearray(stored)
    assert sc.first_difference(stored, bytes(restamped)) is None
