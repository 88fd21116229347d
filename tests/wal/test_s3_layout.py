"""The S3 WAL's sans-IO layout: keys, object and lease encodings, recovery planning."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wal.s3_layout import (
    OBJECT_HEADER_SIZE,
    Lease,
    ObjectFormatError,
    ObjectHeader,
    decode_object,
    encode_object,
    object_name,
    object_size,
    parse_object_name,
    plan_recovery,
)

entries_st = st.lists(st.tuples(st.integers(0, 239), st.binary(max_size=300)), max_size=8)


@given(
    slot=st.integers(0, 10**19),
    epoch=st.integers(0, 2**63),
    first=st.integers(1, 2**60),
    back=st.integers(0, 64),
    entries=entries_st,
)
def test_object_round_trip(slot: int, epoch: int, first: int, back: int, entries) -> None:  # type: ignore[no-untyped-def]
    data = encode_object(epoch=epoch, slot=slot, first_lsn=first, back=back, entries=entries)
    assert len(data) == object_size([len(p) for _, p in entries])
    d = decode_object(data, slot)
    assert d.header == ObjectHeader(
        epoch, slot, first, len(entries), back, len(data) - OBJECT_HEADER_SIZE
    )
    assert d.entries == [(first + i, t, p) for i, (t, p) in enumerate(entries)]
    assert parse_object_name(object_name(slot)) == slot


@given(entries=entries_st.filter(bool), data=st.data())
def test_any_flipped_bit_is_refused(entries, data) -> None:  # type: ignore[no-untyped-def]
    raw = bytearray(encode_object(epoch=3, slot=9, first_lsn=5, back=1, entries=entries))
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    raw[bit // 8] ^= 1 << (bit % 8)
    try:
        d = decode_object(bytes(raw), 9)
    except ObjectFormatError:
        return
    # only the zero padding after a payload is outside every CRC: the entries are intact
    assert d.entries == [(5 + i, t, p) for i, (t, p) in enumerate(entries)]


def test_object_under_another_slot_or_cut_is_refused() -> None:
    raw = encode_object(epoch=1, slot=4, first_lsn=1, back=1, entries=[(0, b"abc")])
    with pytest.raises(ObjectFormatError, match="slot"):
        decode_object(raw, 5)  # copied to another key: the salt differs too
    with pytest.raises(ObjectFormatError):
        decode_object(raw[:-1], 4)
    assert parse_object_name("LEASE") is None
    assert parse_object_name("0001.wal") is None


def test_lease_round_trip_and_garbage() -> None:
    lease = Lease(epoch=7, trim_slot=12, trim_slot_lsn=300, trim_lsn=299)
    assert Lease.decode(lease.encode()) == lease
    for bad in (
        b"",
        b"{}",
        b'{"format": 9}',
        b"[1]",
        b'{"format":1,"epoch":-1,"trim_slot":0,"trim_slot_lsn":1,"trim_lsn":0}',
    ):
        with pytest.raises(ObjectFormatError):
            Lease.decode(bad)


# -- planning -------------------------------------------------------------------------------
def H(slot: int, first: int, count: int, epoch: int = 1, back: int = 1) -> ObjectHeader:
    return ObjectHeader(epoch, slot, first, count, back, 0)


def listing(*hs: ObjectHeader) -> dict:  # type: ignore[type-arg]
    return {h.slot: (100, h) for h in hs}


def test_contiguous_run_is_the_log() -> None:
    p = plan_recovery(Lease(), listing(H(0, 1, 0), H(1, 1, 3), H(2, 4, 2, back=2)))
    assert [o.slot for o in p.run] == [0, 1, 2]
    assert (p.next_slot, p.next_lsn, p.torn, p.corruption) == (3, 6, [], None)


def test_hole_inside_the_window_is_a_torn_tail() -> None:
    # slot 2 never landed; 3 and 4 were issued while 2 was in flight (frontier 1)
    p = plan_recovery(
        Lease(), listing(H(0, 1, 0), H(1, 1, 3), H(3, 6, 1, back=2), H(4, 7, 1, back=3))
    )
    assert p.corruption is None
    assert (p.next_slot, p.next_lsn, p.torn) == (2, 4, [3, 4])
    assert "slot 2 is missing" in p.torn_reason


def test_hole_behind_the_window_is_corruption_naming_the_key() -> None:
    # 4 was issued after 2 was acknowledged (frontier 3 >= 2): 2 once existed
    p = plan_recovery(
        Lease(), listing(H(0, 1, 0), H(1, 1, 3), H(3, 6, 1, back=2), H(4, 7, 1, back=1))
    )
    assert p.corruption is not None and object_name(2) in p.corruption
    assert p.corrupt_slot == 2


def test_a_superseded_writers_late_upload_ends_the_run() -> None:
    # epoch 2 took slot 2 (its marker); epoch 1's stalled PUT landed in 3 afterwards
    p = plan_recovery(
        Lease(epoch=2),
        listing(H(0, 1, 0), H(1, 1, 3), H(2, 4, 0, epoch=2), H(3, 4, 5, epoch=1, back=2)),
    )
    assert p.corruption is None
    assert [o.slot for o in p.run] == [0, 1, 2] and p.torn == [3] and p.next_lsn == 4
    assert "superseded" in p.torn_reason and p.newest_epoch == 2


def test_trim_point_and_obsolete_leftovers() -> None:
    lease = Lease(epoch=1, trim_slot=3, trim_slot_lsn=10, trim_lsn=11)
    p = plan_recovery(lease, listing(H(1, 1, 4), H(3, 10, 5), H(4, 15, 1)))
    assert p.obsolete == [1] and [o.slot for o in p.run] == [3, 4] and p.next_lsn == 16
    # everything trimmed: the lease alone says where the log goes on
    p = plan_recovery(Lease(epoch=1, trim_slot=9, trim_slot_lsn=40, trim_lsn=39), {})
    assert (p.run, p.next_slot, p.next_lsn) == ([], 9, 40)


def test_missing_first_slot_after_trim_is_corruption() -> None:
    lease = Lease(epoch=1, trim_slot=3, trim_slot_lsn=10, trim_lsn=9)
    p = plan_recovery(lease, listing(H(4, 15, 1, back=1)))
    assert p.corruption is not None and object_name(3) in p.corruption


def test_damaged_object_or_lsn_gap_is_corruption() -> None:
    p = plan_recovery(Lease(), {0: (64, H(0, 1, 0)), 1: (70, ObjectFormatError("crc"))})
    assert p.corruption is not None and object_name(1) in p.corruption
    p = plan_recovery(Lease(), listing(H(0, 1, 0), H(1, 2, 3)))
    assert p.corruption is not None and "expected 1" in p.corruption


@given(st.lists(st.integers(1, 5), min_size=1, max_size=12), st.integers(1, 8), st.data())
def test_any_crash_of_a_window_keeps_every_acknowledged_object(sizes, window, data) -> None:  # type: ignore[no-untyped-def]
    """Simulate the writer: slot i issued with frontier = last acked slot; a crash drops
    any subset of the unacknowledged ones. The plan keeps every acked slot, never refuses."""
    acked = -1
    issued: list[ObjectHeader] = []
    lsn = 1
    landed: set[int] = set()
    for slot, n in enumerate(sizes):
        while slot - acked > window:  # the window is full: the oldest lands and is acked
            acked += 1
            landed.add(acked)
        issued.append(H(slot, lsn, n, back=slot - acked))
        lsn += n
        if data.draw(st.booleans()):
            landed.add(slot)
        while acked + 1 in landed:
            acked += 1
    # a crash: every acked slot is there; unacked ones landed or not
    present = {h.slot: (100, h) for h in issued if h.slot in landed}
    p = plan_recovery(Lease(), present)
    assert p.corruption is None
    assert [o.slot for o in p.run][: acked + 1] == list(range(acked + 1))
