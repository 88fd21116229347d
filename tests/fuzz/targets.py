"""The fuzz targets: every parser of bytes from a client, a broker, S3 or the disk.

Each target takes one input and asserts the parser's contract: it returns a result that is
right (checked where a second opinion exists: kio, a round trip, the input's own lengths) or
raises the one exception type it documents. Any other exception, a hang (libFuzzer's
``-timeout``) or an abort is a finding. Inputs start with a selector byte where a target
covers several message kinds or versions, so the seed corpus (:mod:`tests.fuzz.seeds`)
and the mutations stay meaningful.
"""

from __future__ import annotations

import atexit
import datetime
import os
import shutil
import struct
import tempfile
from collections.abc import Callable
from typing import Any

import crc32c

from offload import kafka_logdir as kl
from offload import logdir_writer, node_files, segment_codec
from offload import manifest as mf
from offload.layout import LayoutError, parse_topic_id
from proxy.durable import wal_entries
from proxy.kafka import apiversions, endpoints, node_endpoints, produce_codec, record_batch
from proxy.kafka.codec import CodecError, decode_request, decode_response
from proxy.kafka.commit_codec import error_response as commit_error_response
from proxy.kafka.commit_codec import response_errors as commit_response_errors
from proxy.kafka.commit_skim import VERSION_RANGES as COMMIT_VERSIONS
from proxy.kafka.commit_skim import CommitSkimError, skim_commit
from proxy.kafka.framing import (
    FrameDecoder,
    FrameError,
    parse_request_header,
    parse_response_correlation_id,
)
from proxy.kafka.produce_skim import SkimError, produce_acks, skim_produce
from proxy.kafka.protocol import DESCRIBE_CLUSTER, FETCH, FIND_COORDINATOR, METADATA, PRODUCE
from wal import WalError, read_directory, s3_layout
from wal.file_backend import FileBackend
from wal.record import RECORD_HEADER, crc, make_salt
from wal.recovery import analyze, repair
from wal.segment import SegmentHeader, decode_segment_header, scan_segment
from wal.superblock import SLOT_SIZE

Target = Callable[[bytes], None]
TARGETS: dict[str, Target] = {}


def target(fn: Target) -> Target:
    TARGETS[fn.__name__.removeprefix("fuzz_")] = fn
    return fn


# -- framing ---------------------------------------------------------------------------------
@target
def fuzz_framing(data: bytes) -> None:
    """Any chunking of a byte stream: the frames found are exactly the stream's prefix."""
    if len(data) < 2:
        return
    limit = (data[0] << 4) + 16
    step = data[1] % 17 + 1
    stream = data[2:]
    dec = FrameDecoder(limit, check_tls=bool(data[0] & 1))
    frames: list[bytes] = []
    try:
        for pos in range(0, len(stream), step):
            dec.feed(stream[pos : pos + step])
            while (f := dec.next_frame()) is not None:
                frames.append(f)
    except FrameError:
        return
    joined = b"".join(frames)
    assert stream.startswith(joined), "frames are not the stream's prefix"
    assert dec.buffered == len(stream) - len(joined)
    for f in frames:
        (size,) = struct.unpack_from(">i", f)
        assert 0 <= size <= limit and len(f) == size + 4
        for parse in (parse_request_header, parse_response_correlation_id):
            try:
                parse(memoryview(f)[4:])
            except FrameError:
                pass


# -- the offset commit skimmer, against kio -------------------------------------------------
@target
def fuzz_commit_skim(data: bytes) -> None:
    """OffsetCommit / TxnOffsetCommit: the skimmer refuses with CommitSkimError or reads the
    group and every partition's offset as kio does; the proxy's own refusal decodes and names
    every partition; reading the same bytes as a response gives CodecError or error codes."""
    try:
        skim: Any = skim_commit(data)
    except CommitSkimError as exc:
        skim = exc
    api_key, version = struct.unpack_from(">hh", data, 0) if len(data) >= 4 else (-1, -1)
    rng = COMMIT_VERSIONS.get(api_key)
    kio_body = None
    if rng is not None and rng[0] <= version <= rng[1]:
        try:
            _, kio_body = decode_request(api_key, version, data)
        except CodecError:
            pass
        try:
            commit_response_errors(api_key, version, data)
        except CodecError:
            pass
    if kio_body is not None:
        assert not isinstance(skim, CommitSkimError), (
            f"kio decodes what the skimmer refuses: {skim}"
        )
    if isinstance(skim, CommitSkimError):
        return
    answer = commit_error_response(skim, 15)
    errors = commit_response_errors(skim.api_key, skim.version, answer)
    assert set(errors) == {(p.topic, p.topic_id, p.partition) for p in skim.partitions}
    if kio_body is None:
        return
    assert skim.group_id == kio_body.group_id
    assert skim.transactional_id == getattr(kio_body, "transactional_id", None)
    expected = [
        (
            getattr(t, "name", None),
            getattr(t, "topic_id", None),
            int(p.partition_index),
            int(p.committed_offset),
            int(getattr(p, "committed_leader_epoch", -1)),
            p.committed_metadata,
        )
        for t in kio_body.topics
        for p in t.partitions
    ]
    got = [
        (p.topic, p.topic_id, p.partition, p.offset, p.leader_epoch, p.metadata)
        for p in skim.partitions
    ]
    assert got == expected, (got, expected)


# -- the Produce skimmer, against kio -------------------------------------------------------
@target
def fuzz_produce_skim(data: bytes) -> None:
    """The skimmer refuses with SkimError or finds every partition's records; whatever kio
    decodes, the skimmer reads alike (acks, timeout, transactional id, records)."""
    try:
        skim: object = skim_produce(data)
    except SkimError as exc:
        skim = exc
    try:
        acks: object = produce_acks(data)
    except SkimError as exc:
        acks = exc
    version = struct.unpack_from(">h", data, 2)[0] if len(data) >= 4 else -1
    kio_body = None
    if len(data) >= 4 and data[:2] == b"\x00\x00" and 3 <= version <= 13:
        try:
            _, kio_body = decode_request(PRODUCE, version, data)
        except CodecError:
            pass
    if kio_body is not None:
        assert not isinstance(skim, SkimError), f"kio decodes what the skimmer refuses: {skim}"
    if isinstance(skim, SkimError):
        return
    assert not isinstance(acks, SkimError) and acks == skim.acks  # type: ignore[attr-defined]
    prev = 0
    for p in skim.partitions:  # type: ignore[attr-defined]
        assert prev <= p.start <= p.end <= len(data)
        prev = p.end
    if kio_body is None:
        return
    assert skim.acks == kio_body.acks  # type: ignore[attr-defined]
    assert skim.transactional_id == getattr(kio_body, "transactional_id", None)  # type: ignore[attr-defined]
    timeout = kio_body.timeout
    assert skim.timeout_ms == timeout // datetime.timedelta(milliseconds=1)  # type: ignore[attr-defined]
    expected = [
        (getattr(t, "name", None), getattr(t, "topic_id", None), int(p.index), p.records or b"")
        for t in kio_body.topic_data
        for p in t.partition_data
    ]
    got = [
        (p.topic, p.topic_id, p.partition, data[p.start : p.end])
        for p in skim.partitions  # type: ignore[attr-defined]
    ]
    assert got == expected, (got, expected)
    if not got:
        return
    # A refused partition: the request is forwarded re-encoded without it.
    drop = got[0][:3]
    rest = skim_produce(produce_codec.request_without(version, data, [drop]))
    assert [(p.topic, p.topic_id, p.partition) for p in rest.partitions] == [
        g[:3] for g in got if g[:3] != drop
    ]


# -- record batches --------------------------------------------------------------------------
def fix_batch_crcs(blob: bytearray) -> None:
    """Give every length-delimited batch its right CRC32C, so mutations reach past it."""
    pos = 0
    while pos + record_batch.HEADER_SIZE <= len(blob):
        length = struct.unpack_from(">i", blob, pos + 8)[0] + 12
        end = pos + length
        if length < record_batch.HEADER_SIZE or end > len(blob):
            return
        struct.pack_into(">I", blob, pos + 17, crc32c.crc32c(bytes(blob[pos + 21 : end])))
        pos = end


@target
def fuzz_record_batch(data: bytes) -> None:
    """iter_batches yields batches that tile the blob exactly, or raises BatchError; the
    produce path's header checks name a problem or pass one consistent batch."""
    if not data:
        return
    blob = bytearray(data[1:])
    if data[0] & 1:
        fix_batch_crcs(blob)
    try:
        headers = list(record_batch.iter_batches(bytes(blob), check_crc=not data[0] & 2))
    except record_batch.BatchError:
        return
    assert sum(h.length for h in headers) == len(blob)
    for h in headers:
        assert h.magic == 2 and h.length >= record_batch.HEADER_SIZE
    problem = record_batch.produce_batch_problem(headers)
    if problem is None:  # what the produce path takes: one batch, a consistent count
        assert len(headers) == 1 and headers[0].record_count == headers[0].last_offset_delta + 1


# -- response walkers ------------------------------------------------------------------------
def _resolver(node_id: int, host: str, port: int) -> tuple[str, int] | None:
    """Node 1 moves to the proxy, nodes divisible by 3 are withheld, the rest stay."""
    if node_id == 1:
        return ("proxy.example", 19092)
    if node_id % 3 == 0:
        return None
    return (host, port)


_REWRITTEN = [METADATA, FIND_COORDINATOR, DESCRIBE_CLUSTER]


@target
def fuzz_endpoints(data: bytes) -> None:
    """Metadata, FindCoordinator, DescribeCluster: CodecError or a response that decodes."""
    if len(data) < 2:
        return
    api = _REWRITTEN[data[0] % len(_REWRITTEN)]
    version = data[1] % 16
    payload = memoryview(data[2:])
    body = _rewritten(
        lambda: endpoints.rewrite_response(api, version, payload, _resolver), payload, api, version
    )
    if body is None:  # refused or unchanged: then the payload itself must already comply
        try:
            body = decode_response(api, version, payload)[1]
        except CodecError:
            return
    # Every endpoint handed out is the resolver's: node 1 moved, nodes 3, 6, ... withheld.
    entries = list(getattr(body, "brokers", None) or getattr(body, "coordinators", None) or ())
    if body is not None and hasattr(body, "host"):
        entries.append(body)
    brokers = getattr(body, "endpoint_type", 1) == 1  # KIP-919 controllers are left alone
    for e in entries:
        node = int(getattr(e, "node_id", getattr(e, "broker_id", -1)))
        if brokers and getattr(e, "error_code", 0) == 0 and node >= 0:
            assert node % 3 != 0, f"withheld node {node} handed out"
            assert node != 1 or (e.host, int(e.port)) == ("proxy.example", 19092)


def _rewritten(
    rewrite: Callable[[], bytes | memoryview], payload: memoryview, api: int, version: int
) -> Any:
    """The body of what ``rewrite`` changed (it must decode again), or None when it refused
    (CodecError) or passed the payload on as it is."""
    try:
        out = rewrite()
    except CodecError:
        return None
    return None if out is payload else decode_response(api, version, out)[1]


@target
def fuzz_apiversions(data: bytes) -> None:
    """ApiVersions clamping: CodecError or a response that decodes."""
    if not data:
        return
    version = data[0] % 5
    payload = memoryview(data[1:])
    limits = {PRODUCE: (3, 11), FETCH: (4, 17), METADATA: (0, 12)}
    try:
        out = apiversions.rewrite_response(version, payload, limits)
    except CodecError:
        return
    if out is not payload:
        decode_response(18, 0 if version == 0 else version, out)


@target
def fuzz_node_endpoints(data: bytes) -> None:
    """Produce/Fetch KIP-951 walk: never raises but CodecError; whatever kio decodes the walk
    reads too, and finds the node endpoints kio finds."""
    if len(data) < 2:
        return
    api = (PRODUCE, FETCH)[data[0] & 1]
    lo, hi = node_endpoints.FIRST_VERSION[api], node_endpoints.LAST_VERSION[api]
    version = lo + data[1] % (hi - lo + 1)
    payload = memoryview(data[2:])
    try:
        _, body = decode_response(api, version, payload)
    except CodecError:
        body = None
    try:
        tags: object = node_endpoints.has_top_level_tags(api, version, payload)
    except CodecError as exc:
        tags = exc
    if body is not None:
        assert not isinstance(tags, CodecError), f"kio decodes what the walker refuses: {tags}"
        if getattr(body, "node_endpoints", ()):
            assert tags is True
    out = _rewritten(
        lambda: node_endpoints.rewrite_response(api, version, payload, _resolver),
        payload,
        api,
        version,
    )
    for ep in getattr(out, "node_endpoints", ()):
        assert int(ep.node_id) % 3 != 0, f"withheld node {ep.node_id} handed out"


@target
def fuzz_produce_outcomes(data: bytes) -> None:
    """The durable path's reading of a Produce response: CodecError or outcomes; whatever
    kio decodes, the same outcomes as kio's."""
    if not data:
        return
    version = 3 + data[0] % 11
    payload = data[1:]
    try:
        outcomes: object = produce_codec.response_outcomes(version, payload)
    except CodecError as exc:
        outcomes = exc
    try:
        _, body = decode_response(PRODUCE, version, payload)
    except CodecError:
        return
    assert outcomes == _kio_outcomes(body), (outcomes, body)


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def _kio_outcomes(body: Any) -> list[produce_codec.PartitionOutcome]:
    """What kio reads as each partition's outcome (how the produce path once read them)."""
    out = []
    for t in body.responses:
        key = getattr(t, "name", None), getattr(t, "topic_id", None)
        for p in t.partition_responses:
            lat = p.log_append_time
            # kio builds the datetime from a float of seconds (2267-11-23 19:16:34.431999 for
            # ...594432 ms): round to the millisecond, do not truncate
            ms = -1 if lat is None else round((lat - _EPOCH) / datetime.timedelta(milliseconds=1))
            out.append(
                produce_codec.PartitionOutcome(
                    (*key, int(p.index)), int(p.error_code), int(p.base_offset), ms
                )
            )
    return out


# -- the WAL ---------------------------------------------------------------------------------
_SEG = SegmentHeader(
    block_size=512, epoch=3, segno=7, first_lsn=11, segment_size=1 << 16, data_offset=512
)


def fix_record_crcs(img: bytearray, salt_crc: int) -> None:
    """Recompute the header CRC of every 32-byte-aligned record header with the magic."""
    for pos in range(0, len(img) - 31, 32):
        if img[pos : pos + 4] == b"WLWR":
            struct.pack_into("<I", img, pos + 28, crc(bytes(img[pos : pos + 28]), salt_crc))


@target
def fuzz_wal_records(data: bytes) -> None:
    """Scanning a segment image stops at the first bad record, inside the image; the produce
    path's entries decode or raise EntryError."""
    if not data:
        return
    img = bytearray(512) + bytearray(data[1:])
    if data[0] & 1:
        fix_record_crcs(img, _SEG.salt_crc)
    scan = scan_segment(bytes(img), _SEG)
    assert _SEG.data_offset <= scan.end_offset <= len(img)
    assert scan.next_lsn >= _SEG.first_lsn
    if scan.bad_offset is not None:
        assert scan.bad_offset >= scan.end_offset
    decode_segment_header(data[1:65])
    for decode in (
        wal_entries.decode_batch,
        wal_entries.decode_outcome,
        wal_entries.decode_commit,
        wal_entries.decode_commit_outcome,
    ):
        try:
            decode(data[1:])
        except wal_entries.EntryError:
            pass


@target
def fuzz_s3_wal_objects(data: bytes) -> None:
    """The S3 WAL's objects and lease as S3 hands them back: ObjectFormatError or entries
    in LSN order inside the object."""
    if not data:
        return
    obj = bytearray(data[1:])
    if data[0] & 1 and len(obj) >= s3_layout.OBJECT_HEADER_SIZE:  # let mutations past CRCs
        end = s3_layout.OBJECT_HEADER_SIZE - 4
        struct.pack_into("<I", obj, end, crc(bytes(obj[:end])))
        try:
            h = s3_layout.decode_object_header(bytes(obj))
        except s3_layout.ObjectFormatError:
            pass
        else:
            body = obj[s3_layout.OBJECT_HEADER_SIZE :]
            fix_record_crcs(body, crc(make_salt(h.epoch, h.slot)))
            obj[s3_layout.OBJECT_HEADER_SIZE :] = body
    try:
        slot = s3_layout.decode_object_header(bytes(obj)).slot
        decoded = s3_layout.decode_object(bytes(obj), slot)
    except s3_layout.ObjectFormatError:
        pass
    else:
        lsns = [lsn for lsn, _, _ in decoded.entries]
        assert lsns == list(range(decoded.header.first_lsn, decoded.header.next_lsn))
    try:
        lease = s3_layout.Lease.decode(bytes(data[1:]))
    except s3_layout.ObjectFormatError:
        pass
    else:
        assert s3_layout.Lease.decode(lease.encode()) == lease


_TEMPLATE: dict[str, object] = {}


def _wal_template() -> tuple[str, dict[int, bytes]]:
    """A small WAL directory written by the real writer (several segments, closed cleanly;
    the garbling may clear the clean flag: the superblock's CRC is fixed with the rest)."""
    if "dir" not in _TEMPLATE:
        from tests.fuzz.seeds import build_wal_dir

        root = tempfile.mkdtemp(prefix="fuzz-wal-", dir=_tmp_root())
        atexit.register(shutil.rmtree, root, True)  # libFuzzer's exit skips it: see run.py
        _TEMPLATE["entries"] = build_wal_dir(root)
        _TEMPLATE["dir"] = root
    return str(_TEMPLATE["dir"]), _TEMPLATE["entries"]  # type: ignore[return-value]


def _tmp_root() -> str | None:
    """Where the WAL target's files go: the runner's scratch directory (removed when the
    fuzzing process ends, however it ends), else memory-backed /dev/shm."""
    scratch = os.environ.get("WALPROXY_FUZZ_SCRATCH")
    if scratch:
        return scratch
    return "/dev/shm" if os.path.isdir("/dev/shm") else None


@target
def fuzz_wal_recovery(data: bytes) -> None:
    """A garbled WAL directory: reading it raises WalError or yields entries the writer wrote
    (same LSN, same bytes); repair then leaves a directory that reads cleanly."""
    template, written = _wal_template()
    work = tempfile.mkdtemp(prefix="fuzz-walrun-", dir=_tmp_root())
    try:
        names = sorted(os.listdir(template))
        for n in names:
            shutil.copyfile(os.path.join(template, n), os.path.join(work, n))
        fix = bool(data[:1] and data[0] & 1)
        # Each 6 bytes: file index, u32 offset, xor byte (0: truncate the file there).
        for i in range(1, len(data) - 5, 6):
            path = os.path.join(work, names[data[i] % len(names)])
            size = os.path.getsize(path)
            off = struct.unpack_from("<I", data, i + 1)[0] % max(size, 1)
            with open(path, "r+b") as f:
                if data[i + 5] == 0:
                    f.truncate(off)
                    continue
                f.seek(off)
                b = f.read(1)
                f.seek(off)
                f.write(bytes([(b[0] if b else 0) ^ data[i + 5]]))
        if fix:
            _fix_segment_crcs(work)
        try:
            got = list(read_directory(work))
        except WalError:
            got = None
        if got is not None:
            lsns = [e.lsn for e in got]
            assert lsns == sorted(set(lsns))
            if not fix:
                for e in got:
                    assert written.get(e.lsn) == e.payload, f"entry {e.lsn} changed"
        backend = FileBackend(work, direct_io=False)
        a = analyze(backend)
        if a.corruption is None and not a.fresh:
            repair(backend, a)
            again = analyze(backend)
            assert again.corruption is None and again.torn is None, "repair left damage"
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _fix_segment_crcs(work: str) -> None:
    """Recompute every CRC (superblock slots, segment headers, records) after garbling."""
    for n in os.listdir(work):
        path = os.path.join(work, n)
        with open(path, "rb") as f:
            img = bytearray(f.read())
        if n == "superblock":
            for slot in range(0, len(img) - 63, SLOT_SIZE):
                struct.pack_into("<I", img, slot + 60, crc(bytes(img[slot : slot + 60])))
        elif n.startswith("seg-") and len(img) >= 64:
            struct.pack_into("<I", img, 60, crc(bytes(img[:60])))
            hdr = decode_segment_header(bytes(img[:64]))
            if hdr is not None:
                fix_record_crcs(img, hdr.salt_crc)
        with open(path, "wb") as f:
            f.write(img)


assert RECORD_HEADER.size == 32


# -- offload: segments, manifests, node files, log directories ------------------------------
@target
def fuzz_segment_codec(data: bytes) -> None:
    """Segment objects from S3: SegmentError or the bytes the manifest entry describes."""
    if len(data) < 2:
        return
    blob = bytearray(data[2:])
    if data[0] & 1:
        fix_batch_crcs(blob)
    log = bytes(blob)
    covers_from = data[1]
    try:
        n = segment_codec.whole_batches(log)
        assert 0 <= n <= len(log)
        segment_codec.fetched_span(log, covers_from)
    except segment_codec.SegmentError:
        pass
    try:
        info = segment_codec.describe(log, covers_from)
    except segment_codec.SegmentError:
        info = None
    compression = "zstd" if data[0] & 2 else "none"
    if info is not None:
        stored = segment_codec.encode(log, compression)
        ref = segment_codec.segment_ref(_key(info, compression), info, stored, compression)
        assert segment_codec.decode(stored, ref) == log
    # The object as S3 might hand it back: any bytes, against a plausible manifest entry.
    ref = mf.SegmentRef(
        key="seg/x",
        base_offset=covers_from,
        last_offset=covers_from + 5,
        size=max(len(log), 1),
        stored_size=len(log),
        crc32c=crc32c.crc32c(log),
        compression=compression,
        max_timestamp=-1,
        batches=1,
    )
    try:
        assert len(segment_codec.decode(log, ref)) == ref.size
    except segment_codec.SegmentError:
        pass


def _key(info: segment_codec.LogInfo, compression: str) -> str:
    from offload.layout import segment_name

    return "seg/" + segment_name(info.base_offset, info.last_offset, 1, compression == "zstd")


def _round_trip(
    parse: Callable[[Any], object], encode: Callable[[Any], bytes], raw: Any, error: type[Exception]
) -> None:
    """``parse(raw)`` raises ``error`` or gives a value that, when it can be written back,
    parses again to itself (``raw`` is text for the text formats, bytes for JSON)."""
    try:
        value = parse(raw)
    except error:
        return
    try:
        again = encode(value)
    except error:
        return  # parsed but not writable (e.g. a malformed id): the encoder refuses it
    assert parse(again.decode() if isinstance(raw, str) else again) == value


@target
def fuzz_manifest(data: bytes) -> None:
    """manifest.json, lease.json, broker.json: their error type or a document that
    encodes back to an equal one."""
    _round_trip(mf.decode, mf.encode, data, mf.ManifestError)
    _round_trip(node_files.decode_lease, node_files.encode_lease, data, node_files.NodeFileError)
    _round_trip(
        node_files.decode_broker_info, node_files.encode_broker_info, data, node_files.NodeFileError
    )
    text = data.decode("utf-8", "replace")
    try:
        u = parse_topic_id(text.strip()[:22])
    except LayoutError:
        pass
    else:
        from offload.layout import topic_id_text

        assert topic_id_text(u) == text.strip()[:22], "topic id text is not canonical"


@target
def fuzz_kafka_logdir(data: bytes) -> None:
    """The log-directory files a rebuild reads and writes: LogDirFormatError or values that
    encode back to what was parsed."""
    text = data.decode("utf-8", "replace")
    err = kl.LogDirFormatError
    _round_trip(kl.parse_meta_properties, kl.MetaProperties.encode, text, err)
    _round_trip(kl.parse_partition_metadata, kl.encode_partition_metadata, text, err)
    _round_trip(kl.parse_leader_epoch_checkpoint, kl.encode_leader_epoch_checkpoint, text, err)
    _round_trip(kl.parse_offset_checkpoint, kl.encode_offset_checkpoint, text, err)
    try:  # the rebuild's own state file in the log directory
        state = logdir_writer.decode_state(data)
    except err:
        pass
    else:
        assert all(isinstance(fp.partition, int) for fp in state.partitions)
