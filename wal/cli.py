"""Operator commands: `verify` and `dump` a WAL directory (or an ``s3://bucket/prefix`` S3
WAL) that nobody has open.

Both are strictly read-only: they never take the writer lock, never truncate a
torn tail and never finish an interrupted trim -- they only report what
`open_wal` would find (and would do).
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

from .errors import WalError
from .file_backend import FileBackend
from .object_store import ObjectStore, S3Store, StoreError
from .record import TYPE_PAD, TYPE_SEAL, RecordError, RecordHeader
from .recovery import Analysis, SegmentState, analyze
from .s3_layout import object_name
from .s3_wal import judge, list_slots, read_all, read_lease

EXIT_OK = 0
EXIT_CORRUPT = 1
EXIT_ERROR = 2


def _type_name(t: int) -> str:
    return {TYPE_PAD: "PAD", TYPE_SEAL: "SEAL"}.get(t, str(t))


def _summary(a: Analysis, out: TextIO) -> int:
    sb = a.superblock
    if a.fresh:
        print("status: EMPTY (no superblock, no segments)", file=out)
        return EXIT_OK
    if sb is not None:
        print(
            f"superblock: epoch={sb.epoch} seq={sb.seq} trim_lsn={sb.trim_lsn} "
            f"clean_shutdown={'yes' if sb.clean else 'no'} last_lsn={sb.last_lsn}",
            file=out,
        )
    records = sum(
        s.scan.next_lsn - s.scan.header.first_lsn for s in a.segments if s.scan is not None
    )
    print(
        f"segments: {len(a.segments)} live, {len(a.obsolete)} fully trimmed (would be deleted)",
        file=out,
    )
    print(f"records: {records}  next_lsn: {a.next_lsn}", file=out)
    if a.corruption is not None:
        print(f"status: CORRUPT: {a.corruption}", file=out)
        return EXIT_CORRUPT
    if a.torn is not None:
        print(
            f"status: OK with torn tail: {a.torn.reason} at "
            f"{a.torn.name} offset {a.torn.bad_offset}; the log would be cut at offset "
            f"{a.torn.offset} ({len(a.torn.data)} non-zero bytes saved aside) on next open",
            file=out,
        )
        return EXIT_OK
    print("status: OK", file=out)
    return EXIT_OK


def _check_dir(directory: str, out: TextIO) -> bool:
    if not os.path.isdir(directory):
        print(f"error: {directory} is not a directory", file=out)
        return False
    return True


# -- the S3 backend: the same two commands over s3://bucket/prefix ---------------------------
def s3_store_of(url: str, endpoint_url: str | None = None) -> ObjectStore:
    """The store of an ``s3://bucket/prefix`` WAL location (credentials, region and endpoint
    from the standard AWS chain, ``AWS_ENDPOINT_URL`` included, unless `endpoint_url`)."""
    bucket, _, prefix = url[len("s3://") :].partition("/")
    prefix = prefix.strip("/")
    return S3Store(bucket, prefix + "/" if prefix else "", endpoint_url=endpoint_url)


def _s3_report(store: ObjectStore, out: TextIO, listing: bool) -> int:
    """Judge an S3 WAL the way open_s3_wal would (read-only: nothing is deleted or claimed)."""
    lease, etag = read_lease(store)
    sizes = list_slots(store)
    print(f"WAL {store.describe()}", file=out)
    if etag is None and not sizes:
        print("status: EMPTY (no lease, no objects)", file=out)
        return EXIT_OK
    print(
        f"lease: epoch={lease.epoch} trim_slot={lease.trim_slot} "
        f"trim_slot_lsn={lease.trim_slot_lsn} trim_lsn={lease.trim_lsn}",
        file=out,
    )
    objects = read_all(store, lease, sizes)
    plan, decoded = judge(lease, sizes, objects)
    if listing:
        for slot in sorted(sizes):
            name = object_name(slot)
            d = decoded.get(slot)
            if slot < lease.trim_slot:
                print(f"object {name}: below the trim slot (would be deleted)", file=out)
            elif d is None:
                print(f"object {name}: size={sizes[slot]} BAD", file=out)
            else:
                h = d.header
                last = h.first_lsn + h.count - 1
                print(
                    f"object {name}: epoch={h.epoch} lsn {h.first_lsn}..{last} "
                    f"entries={h.count} back={h.back} bytes={sizes[slot]}",
                    file=out,
                )
                for lsn, typ, payload in d.entries:
                    print(f"  lsn={lsn:<8d} type={typ:<4d} length={len(payload)}", file=out)
    first = max(lease.trim_lsn + 1, plan.run[0].first_lsn if plan.run else plan.next_lsn)
    records = plan.next_lsn - first
    print(
        f"objects: {len(plan.run)} live, {len(plan.obsolete)} below the trim slot, "
        f"{len(plan.torn)} past the end",
        file=out,
    )
    print(f"records: {records}  next_lsn: {plan.next_lsn}  next_slot: {plan.next_slot}", file=out)
    if plan.corruption is not None:
        print(f"status: CORRUPT: {plan.corruption}", file=out)
        return EXIT_CORRUPT
    if plan.torn:
        print(
            f"status: OK with torn tail: {plan.torn_reason}; objects "
            f"{', '.join(object_name(s) for s in plan.torn)} were never acknowledged and "
            "would be deleted on next open",
            file=out,
        )
        return EXIT_OK
    print("status: OK", file=out)
    return EXIT_OK


def _s3_command(url: str, out: TextIO, listing: bool, endpoint_url: str | None) -> int:
    try:
        return _s3_report(s3_store_of(url, endpoint_url), out, listing)
    except (OSError, WalError, StoreError, ValueError) as e:
        print(f"error: {e}", file=out)
        return EXIT_ERROR


def verify(directory: str, out: TextIO | None = None, *, endpoint_url: str | None = None) -> int:
    """Scan every record and print a summary; exit code 1 on corruption, 2 on error."""
    out = out or sys.stdout
    if directory.startswith("s3://"):
        return _s3_command(directory, out, False, endpoint_url)
    if not _check_dir(directory, out):
        return EXIT_ERROR
    try:
        a = analyze(FileBackend(directory, read_only=True))
    except (OSError, WalError) as e:
        print(f"error: {e}", file=out)
        return EXIT_ERROR
    print(f"WAL {os.path.abspath(directory)}", file=out)
    return _summary(a, out)


def dump(directory: str, out: TextIO | None = None, *, endpoint_url: str | None = None) -> int:
    """List superblock, segments and every record (LSN, type, length, CRC status)."""
    out = out or sys.stdout
    if directory.startswith("s3://"):
        return _s3_command(directory, out, True, endpoint_url)
    if not _check_dir(directory, out):
        return EXIT_ERROR
    backend = FileBackend(directory, read_only=True)
    try:
        raw = backend.read_superblock()
        from .superblock import decode_superblock

        _, slots = decode_superblock(raw)
        print(f"WAL {os.path.abspath(directory)}", file=out)
        for i, s in enumerate(slots):
            if s is None:
                print(f"superblock slot {i}: invalid/empty", file=out)
            else:
                print(
                    f"superblock slot {i}: seq={s.seq} epoch={s.epoch} trim_lsn={s.trim_lsn} "
                    f"clean={s.clean} last_lsn={s.last_lsn} version={s.version}",
                    file=out,
                )

        def on_segment(st: SegmentState) -> None:
            h = st.header
            assert h is not None
            print(
                f"segment {st.name}: segno={h.segno} epoch={h.epoch} first_lsn={h.first_lsn} "
                f"block={h.block_size} size={st.size} data_offset={h.data_offset}",
                file=out,
            )

        def on_record(off: int, hdr: RecordHeader, err: RecordError | None) -> None:
            status = "ok" if err is None else f"BAD ({err.value})"
            lsn = "-" if hdr.type in (TYPE_PAD,) else str(hdr.lsn)
            grp = f" group_start len={hdr.group_len}" if hdr.group_start else ""
            if hdr.back:  # written while the groups before it were still in flight
                grp += f" back={hdr.back}"
            print(
                f"  @{off:<10d} lsn={lsn:<8s} type={_type_name(hdr.type):<4s} "
                f"length={hdr.length:<8d} crc={status}{grp}",
                file=out,
            )

        a = analyze(backend, on_segment=on_segment, on_record=on_record)
        for st in a.segments:
            sc = st.scan
            if sc is not None:
                extra = ""
                if sc.bad_offset is not None:
                    reason = sc.bad_reason.value if sc.bad_reason else "?"
                    extra = f" bad_offset={sc.bad_offset} ({reason})"
                print(
                    f"segment {st.name} end: {sc.end_kind.value} records={sc.records} "
                    f"lsn {st.header.first_lsn if st.header else '?'}..{sc.last_lsn}{extra}",
                    file=out,
                )
        for st in a.obsolete:
            print(f"segment {st.name}: fully trimmed (not scanned)", file=out)
        for name in sorted(os.listdir(directory)):
            if name.startswith("torn-") or name.startswith("spare-"):
                print(
                    f"other file: {name} ({os.path.getsize(os.path.join(directory, name))} bytes)",
                    file=out,
                )
    except (OSError, WalError) as e:
        print(f"error: {e}", file=out)
        return EXIT_ERROR
    return _summary(a, out)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in ("verify", "dump"):
        print("usage: python -m wal {verify|dump} DIRECTORY|s3://BUCKET/PREFIX", file=sys.stderr)
        return EXIT_ERROR
    return verify(args[1]) if args[0] == "verify" else dump(args[1])
