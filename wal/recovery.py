"""Recovery: judge a WAL directory's contents, then (for writers only) repair it.

`analyze` only reads (it backs `verify`/`dump` as well as `open_wal`); `repair`
applies the two repairs a crash can require: finishing an interrupted trim
(deleting fully-trimmed segments) and cutting a torn tail.

Decision rules (also in docs/wal-format.md):

* an invalid record in any segment but the last is corruption;
* an invalid record in the last segment followed by a valid group start of the
  same segment instance that was issued after the bad group was durable (its
  frontier, offset - back blocks, lies beyond the bad group) is corruption; a
  valid group inside the in-flight window proves nothing, a crash can leave a
  hole there;
* an invalid record at the tail after a *clean* shutdown is corruption;
* otherwise it is a torn tail: everything from its offset is cut (and saved).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import structlog

from . import metrics
from .backend import Backend
from .errors import WalCorruptionError
from .segment import (
    EndKind,
    RecordCallback,
    SegmentHeader,
    SegmentScan,
    decode_segment_header,
    parse_segment_name,
    scan_segment,
)
from .superblock import SB_READABLE_VERSIONS, Superblock, decode_superblock

log = structlog.get_logger("wal.recovery")


@dataclass
class SegmentState:
    name: str
    segno: int
    size: int
    header: SegmentHeader | None = None
    scan: SegmentScan | None = None


@dataclass
class TornTail:
    name: str
    offset: int  # start of the torn group; the segment is cut here
    bad_offset: int  # the first invalid record
    reason: str
    lsn: int  # LSN the torn record would have had
    data: bytes  # the non-zero bytes after `offset` (bounded), saved aside


@dataclass
class Analysis:
    superblock: Superblock | None
    slots: list[Superblock | None]
    segments: list[SegmentState] = field(default_factory=list)  # live, in order
    obsolete: list[SegmentState] = field(default_factory=list)  # fully trimmed leftovers
    next_lsn: int = 1
    torn: TornTail | None = None
    corruption: WalCorruptionError | None = None
    fresh: bool = False
    max_segno: int = 0


def _corrupt(
    a: Analysis, backend: Backend, msg: str, name: str | None, off: int | None
) -> Analysis:
    a.corruption = WalCorruptionError(msg, backend.describe(name) if name else None, off)
    return a


def analyze(
    backend: Backend,
    *,
    torn_save_max: int = 32 << 20,
    on_segment: object = None,
    on_record: RecordCallback | None = None,
) -> Analysis:
    """Read everything and classify; never writes.

    `on_segment(state)` / `on_record(offset, header, error)` let `dump` list
    what was found without a second pass.
    """
    raw = backend.read_superblock()
    sb, slots = decode_superblock(raw)
    a = Analysis(superblock=sb, slots=slots)
    names = []
    for n in backend.list_segments():
        segno = parse_segment_name(n)
        if segno is not None:
            names.append((segno, n))
    names.sort()
    for spare in backend.list_spares():
        # spare names carry the retired segno; new segnos must stay above them
        segno = parse_segment_name("seg-" + spare[len("spare-") :])
        if segno is not None:
            a.max_segno = max(a.max_segno, segno)
    if names:
        a.max_segno = max(a.max_segno, names[-1][0])
    if sb is None:
        # Segments are only created after a superblock is durable, so without
        # segments an unreadable superblock is an interrupted first open.
        if names:
            return _corrupt(
                a, backend, "superblock missing or both copies invalid", "superblock", 0
            )
        a.fresh = True
        return a
    if sb.version not in SB_READABLE_VERSIONS:
        return _corrupt(a, backend, f"unsupported superblock version {sb.version}", "superblock", 0)

    states: list[SegmentState] = []
    for segno, name in names:
        h = backend.open_segment(name, write=False)
        try:
            st = SegmentState(name=name, segno=segno, size=h.size())
            st.header = decode_segment_header(h.read_at(0, 64))
        finally:
            h.close()
        if st.header is None or st.header.segno != segno:
            return _corrupt(a, backend, "invalid segment header", name, 0)
        if st.header.epoch > sb.epoch:
            return _corrupt(
                a,
                backend,
                f"segment epoch {st.header.epoch} newer than superblock epoch {sb.epoch}",
                name,
                0,
            )
        states.append(st)

    # Segments whose every entry is <= trim_lsn: a trim was interrupted.
    i = 0
    while i + 1 < len(states) and states[i + 1].header.first_lsn - 1 <= sb.trim_lsn:  # type: ignore[union-attr]
        i += 1
    a.obsolete, live = states[:i], states[i:]
    a.segments = live

    expected: int | None = None
    for idx, st in enumerate(live):
        hdr = st.header
        assert hdr is not None
        if expected is None:
            if hdr.first_lsn > sb.trim_lsn + 1:
                return _corrupt(
                    a,
                    backend,
                    f"log starts at LSN {hdr.first_lsn} but trim point "
                    f"is {sb.trim_lsn}: entries are missing",
                    st.name,
                    0,
                )
        elif hdr.first_lsn != expected:
            return _corrupt(
                a,
                backend,
                f"segment starts at LSN {hdr.first_lsn}, expected "
                f"{expected} (missing or duplicated segment)",
                st.name,
                0,
            )
        h = backend.open_segment(st.name, write=False)
        try:
            data = h.read_at(0, st.size)
        finally:
            h.close()
        if on_segment is not None:
            on_segment(st)  # type: ignore[operator]
        scan = scan_segment(data, hdr, on_record=on_record)
        st.scan = scan
        expected = scan.next_lsn
        if scan.end_kind is not EndKind.BAD:
            continue
        off = scan.bad_offset
        reason = scan.bad_reason.value if scan.bad_reason else "?"
        is_last = idx == len(live) - 1
        if not is_last:
            return _corrupt(
                a, backend, f"invalid record ({reason}) in a non-final segment", st.name, off
            )
        if scan.later_group_offset is not None:
            return _corrupt(
                a,
                backend,
                f"invalid record ({reason}) followed by a valid group "
                f"at offset {scan.later_group_offset} that was written after it "
                "was durable",
                st.name,
                off,
            )
        if sb.clean:
            return _corrupt(
                a,
                backend,
                f"invalid record ({reason}) at the tail although the last shutdown was clean",
                st.name,
                off,
            )
        assert off is not None
        # Cut at the start of the torn group: a group is one write and is
        # acknowledged as a whole, so its valid-looking head was never acked.
        cut = scan.end_offset
        tail = bytes(memoryview(data)[cut : cut + torn_save_max]).rstrip(b"\0")
        a.torn = TornTail(
            name=st.name, offset=cut, bad_offset=off, reason=reason, lsn=scan.next_lsn, data=tail
        )

    if expected is None:
        a.next_lsn = max(sb.trim_lsn, sb.last_lsn) + 1
    else:
        a.next_lsn = expected
    if sb.clean and a.next_lsn - 1 != sb.last_lsn:
        return _corrupt(
            a,
            backend,
            f"clean shutdown recorded last LSN {sb.last_lsn} but the log "
            f"ends at LSN {a.next_lsn - 1}",
            live[-1].name if live else None,
            None,
        )
    return a


def repair(backend: Backend, a: Analysis) -> None:
    """Finish interrupted trims and cut a torn tail (saving the cut bytes first)."""
    for st in a.obsolete:
        log.info("wal_recovery_remove_trimmed_segment", segment=backend.describe(st.name))
        backend.retire_segment(st.name, None)
    a.obsolete = []
    t = a.torn
    if t is None:
        return
    last = a.segments[-1]
    if t.data:
        aside = f"torn-{t.lsn}-{time.strftime('%Y%m%dT%H%M%S')}-{time.time_ns() % 10**9}.bin"
        backend.save_aside(aside, t.data)
        metrics.TORN_TRUNCATIONS.inc()
        log.warning(
            "wal_torn_tail_truncated",
            segment=backend.describe(t.name),
            offset=t.offset,
            bad_record_offset=t.bad_offset,
            reason=t.reason,
            lsn=t.lsn,
            cut_bytes=len(t.data),
            saved_as=backend.describe(aside),
        )
    if t.offset < last.size:
        backend.truncate_segment(t.name, t.offset)
        last.size = t.offset
    if last.scan is not None:
        last.scan.end_kind = EndKind.EOF
