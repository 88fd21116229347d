"""Operator commands: `verify` and `dump` a WAL directory that nobody has open.

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
from .record import TYPE_PAD, TYPE_SEAL, RecordError, RecordHeader
from .recovery import Analysis, SegmentState, analyze

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
        print(f"superblock: epoch={sb.epoch} seq={sb.seq} trim_lsn={sb.trim_lsn} "
              f"clean_shutdown={'yes' if sb.clean else 'no'} last_lsn={sb.last_lsn}", file=out)
    records = sum(s.scan.next_lsn - s.scan.header.first_lsn for s in a.segments
                  if s.scan is not None)
    print(f"segments: {len(a.segments)} live, {len(a.obsolete)} fully trimmed (would be deleted)",
          file=out)
    print(f"records: {records}  next_lsn: {a.next_lsn}", file=out)
    if a.corruption is not None:
        print(f"status: CORRUPT: {a.corruption}", file=out)
        return EXIT_CORRUPT
    if a.torn is not None:
        print(f"status: OK with torn tail: {a.torn.reason} at "
              f"{a.torn.name} offset {a.torn.bad_offset}; the log would be cut at offset "
              f"{a.torn.offset} ({len(a.torn.data)} non-zero bytes saved aside) on next open",
              file=out)
        return EXIT_OK
    print("status: OK", file=out)
    return EXIT_OK


def _check_dir(directory: str, out: TextIO) -> bool:
    if not os.path.isdir(directory):
        print(f"error: {directory} is not a directory", file=out)
        return False
    return True


def verify(directory: str, out: TextIO | None = None) -> int:
    """Scan every record and print a summary; exit code 1 on corruption, 2 on error."""
    out = out or sys.stdout
    if not _check_dir(directory, out):
        return EXIT_ERROR
    try:
        a = analyze(FileBackend(directory, read_only=True))
    except (OSError, WalError) as e:
        print(f"error: {e}", file=out)
        return EXIT_ERROR
    print(f"WAL {os.path.abspath(directory)}", file=out)
    return _summary(a, out)


def dump(directory: str, out: TextIO | None = None) -> int:
    """List superblock, segments and every record (LSN, type, length, CRC status)."""
    out = out or sys.stdout
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
                print(f"superblock slot {i}: seq={s.seq} epoch={s.epoch} trim_lsn={s.trim_lsn} "
                      f"clean={s.clean} last_lsn={s.last_lsn} version={s.version}", file=out)

        def on_segment(st: SegmentState) -> None:
            h = st.header
            assert h is not None
            print(f"segment {st.name}: segno={h.segno} epoch={h.epoch} first_lsn={h.first_lsn} "
                  f"block={h.block_size} size={st.size} data_offset={h.data_offset}", file=out)

        def on_record(off: int, hdr: RecordHeader, err: RecordError | None) -> None:
            status = "ok" if err is None else f"BAD ({err.value})"
            lsn = "-" if hdr.type in (TYPE_PAD,) else str(hdr.lsn)
            grp = f" group_start len={hdr.group_len}" if hdr.group_start else ""
            if hdr.back:  # written while the groups before it were still in flight
                grp += f" back={hdr.back}"
            print(f"  @{off:<10d} lsn={lsn:<8s} type={_type_name(hdr.type):<4s} "
                  f"length={hdr.length:<8d} crc={status}{grp}", file=out)

        a = analyze(backend, on_segment=on_segment, on_record=on_record)
        for st in a.segments:
            sc = st.scan
            if sc is not None:
                extra = ""
                if sc.bad_offset is not None:
                    reason = sc.bad_reason.value if sc.bad_reason else "?"
                    extra = f" bad_offset={sc.bad_offset} ({reason})"
                print(f"segment {st.name} end: {sc.end_kind.value} records={sc.records} "
                      f"lsn {st.header.first_lsn if st.header else '?'}..{sc.last_lsn}{extra}",
                      file=out)
        for st in a.obsolete:
            print(f"segment {st.name}: fully trimmed (not scanned)", file=out)
        for name in sorted(os.listdir(directory)):
            if name.startswith("torn-") or name.startswith("spare-"):
                print(f"other file: {name} ({os.path.getsize(os.path.join(directory, name))} "
                      "bytes)", file=out)
    except (OSError, WalError) as e:
        print(f"error: {e}", file=out)
        return EXIT_ERROR
    return _summary(a, out)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in ("verify", "dump"):
        print("usage: python -m wal {verify|dump} DIRECTORY", file=sys.stderr)
        return EXIT_ERROR
    return verify(args[1]) if args[0] == "verify" else dump(args[1])
