"""What fuzzing the parsers found (tests/fuzz), one regression test per finding.

Each input here once made a parser raise something other than its documented error (or,
for kio, abort the whole process); each now gets that error, or the right answer.
"""

from __future__ import annotations

import datetime
import struct
import subprocess
import sys
import uuid

import pytest
import zstandard
from kio.schema.metadata.v12.response import MetadataResponse
from kio.schema.response_header.v1.header import ResponseHeader as Header1
from kio.schema.types import BrokerId
from kio.static.primitive import i32

from offload import kafka_logdir as kl
from offload import logdir_writer, node_files, segment_codec
from offload import manifest as mf
from offload.layout import LayoutError, parse_topic_id, segment_name, topic_id_text
from proxy.kafka import endpoints, node_endpoints, produce_codec
from proxy.kafka.codec import CodecError, decode_response, encode
from proxy.kafka.produce_skim import SkimError, produce_acks
from proxy.kafka.protocol import METADATA, PRODUCE
from proxy.kafka.record_batch import build_batch
from tests.fuzz.seeds import response_frame
from wal import s3_layout

_HEADER_V1 = struct.pack(">i", 7) + b"\x00"  # correlation id, no header tags
_THROTTLE = struct.pack(">i", 0)


def _keep(node_id: int, host: str, port: int) -> tuple[str, int]:
    return (host, port)


def test_huge_compact_array_length_is_a_codec_error_not_an_abort() -> None:
    # Metadata v12 whose broker array announces 2^32 - 2 entries: kio's native reader
    # reserved them up front and the failed allocation aborted the interpreter.
    frame = _HEADER_V1 + _THROTTLE + b"\xff\xff\xff\xff\x0f"
    code = (
        "from proxy.kafka.codec import CodecError, decode_response\n"
        f"try:\n    decode_response(3, 12, {frame!r})\n"
        "except CodecError as e:\n    print('refused:', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "refused:" in out.stdout and "exceeds the message" in out.stdout


@pytest.mark.parametrize("count", [2**28 - 2, 2**31 - 1])
def test_array_longer_than_the_message_is_refused(count: int) -> None:
    compact = _HEADER_V1 + _THROTTLE + _uvarint(count + 1)
    with pytest.raises(CodecError, match="exceeds the message"):
        decode_response(METADATA, 12, compact)
    legacy = struct.pack(">ii", 7, count)  # Metadata v1: correlation id, broker count
    with pytest.raises(CodecError, match="exceeds the message"):
        decode_response(METADATA, 1, legacy)


def test_null_array_where_the_schema_allows_none_is_refused() -> None:
    # kio decoded brokers=None; the endpoint rewriter then failed iterating it (TypeError).
    frame = _HEADER_V1 + _THROTTLE + b"\x00" + b"\x00" + struct.pack(">i", -1) + b"\x01\x00"
    with pytest.raises(CodecError, match="null"):
        endpoints.rewrite_response(METADATA, 12, frame, _keep)
    legacy = struct.pack(">iiii", 7, -1, -1, 0)
    with pytest.raises(CodecError, match="null"):
        endpoints.rewrite_response(METADATA, 1, legacy, _keep)


def test_null_produce_responses_array_is_refused() -> None:
    # Produce v9 response with a null `responses` array: response_outcomes iterated None.
    frame = _HEADER_V1 + b"\x00" + _THROTTLE + b"\x00"
    with pytest.raises(CodecError, match="null"):
        produce_codec.response_outcomes(9, frame)


def test_valid_messages_still_decode_after_the_bounds_check() -> None:
    body = MetadataResponse(
        throttle_time=datetime.timedelta(0),
        brokers=(),
        cluster_id=None,
        controller_id=BrokerId(-1),
        topics=(),
    )
    frame = encode(Header1(correlation_id=i32(7)), body)
    assert decode_response(METADATA, 12, frame)[1] == body


def test_produce_acks_of_a_short_frame_is_a_skim_error() -> None:
    for frame in (b"", b"\x00\x00\x00", struct.pack(">hhi", PRODUCE, 9, 1)):
        with pytest.raises(SkimError):
            produce_acks(frame)


@pytest.mark.parametrize(
    "text",
    [
        "AAAAAAAAAAAAAAAAAAA!!A",  # not base64: urlsafe_b64decode dropped '!' -> 14 bytes
        "AAAAAAAAAAAAAAAAAAAA+/",  # standard, not URL-safe, alphabet
        "AAAAAAAAAAAAAAAAAAAAAB",  # unused low bits set: a second text for the id of "...AA"
        "ÀAAAAAAAAAAAAAAAAAAAAA",  # non-ASCII
    ],
)
def test_topic_id_text_must_be_canonical_url_safe_base64(text: str) -> None:
    with pytest.raises(LayoutError):
        parse_topic_id(text)
    with pytest.raises(kl.LogDirFormatError):
        kl.parse_kafka_uuid(text)


def test_meta_properties_with_a_malformed_id_is_a_format_error() -> None:
    # Parsed, then encode() checked the ids and let uuid's ValueError escape.
    mp = kl.parse_meta_properties(
        "node.id=1\ndirectory.id=AAAAAA\x00\x00AAAAAAAAAAAAAA\n"
        "version=1\ncluster.id=" + topic_id_text(uuid.uuid4()) + "\n"
    )
    with pytest.raises(kl.LogDirFormatError):
        mp.encode()


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


@pytest.mark.parametrize("doc", [b"[" * 100_000, b'{"format": 1, "node_id": ' + b"1" * 5000 + b"}"])
def test_json_documents_nested_too_deep_or_with_huge_integers_are_refused(doc: bytes) -> None:
    # json.loads raised RecursionError / ValueError (int digit limit), neither JSONDecodeError.
    with pytest.raises(mf.ManifestError):
        mf.decode(doc)
    with pytest.raises(node_files.NodeFileError):
        node_files.decode_lease(doc)
    with pytest.raises(node_files.NodeFileError):
        node_files.decode_broker_info(doc)


def test_zstd_segment_announcing_a_huge_size_is_refused_before_allocating() -> None:
    # python-zstandard allocates the frame's announced content size, whatever
    # max_output_size says: a garbled 1 TiB claim was a MemoryError.
    log = build_batch([b"a"])
    stored = segment_codec.encode(log, "zstd")
    assert stored[4] & 0xC0 == 0  # a 1-byte content size field; swap in an 8-byte one
    bomb = stored[:4] + bytes([stored[4] | 0xC0]) + struct.pack("<Q", 1 << 40) + stored[6:]
    assert zstandard.frame_content_size(bomb) == 1 << 40
    info = segment_codec.describe(log, 0)
    ref = segment_codec.segment_ref("seg/" + segment_name(0, 0, 1, True), info, bomb, "zstd")
    with pytest.raises(segment_codec.SegmentError, match="announces"):
        segment_codec.decode(bomb, ref)
    good = segment_codec.segment_ref(ref.key, info, stored, "zstd")
    assert segment_codec.decode(stored, good) == log


@pytest.mark.parametrize("text", ["{", '{"format": 1, "partitions": [{"topic": "t"}]}', "[1]"])
def test_garbled_rebuild_state_is_refused_not_a_crash(tmp_path, text: str) -> None:  # type: ignore[no-untyped-def]
    # The rebuild's state file was read with json.loads and FinishedPartition(**p): a garbled
    # one raised JSONDecodeError or TypeError instead of refusing the directory.
    (tmp_path / logdir_writer.STATE_FILE).write_text(text)
    writer = logdir_writer.LogDirWriter(tmp_path, cluster_id="c", node_id=1)
    with pytest.raises(logdir_writer.LogDirNotEmpty, match="does not parse"):
        writer.open()


def test_s3_wal_lease_nested_too_deep_is_a_format_error() -> None:
    # json.loads' RecursionError was not among the errors Lease.decode turned into its own.
    with pytest.raises(s3_layout.ObjectFormatError):
        s3_layout.Lease.decode(b"[" * 100_000)


def test_segment_batch_at_a_negative_offset_is_a_segment_error() -> None:
    # describe() took it; the segment key then raised LayoutError in the uploader.
    log = build_batch([b"a"], base_offset=-(2**48))
    with pytest.raises(segment_codec.SegmentError, match="negative offset"):
        segment_codec.describe(log, 0)


def test_produce_outcome_with_an_error_code_kio_does_not_know_is_read() -> None:
    # Outcomes were read through kio, whose ErrorCode enum refuses codes newer than it:
    # a newer broker's error closed the connection instead of being recorded.
    frame = bytearray(response_frame(PRODUCE, 9, 0))
    pos = 4 + 1 + 1  # correlation id, header tags, topic count
    pos += 1 + frame[pos] - 1 + 1 + 4  # topic name, partition count, index
    struct.pack_into(">h", frame, pos, 999)
    with pytest.raises(CodecError, match="not a valid ErrorCode"):
        decode_response(PRODUCE, 9, bytes(frame))
    [outcome] = produce_codec.response_outcomes(9, bytes(frame))
    assert outcome.error_code == 999 and outcome.key == ("localhost", None, 0)


def _produce_v10_response(leader_tag: bytes) -> bytes:
    """Produce v10 response, one topic "t", one partition whose tagged fields are given."""
    partition = struct.pack(">ihqqq", 0, 0, 5, -1, 0) + b"\x01\x00"  # no record errors/message
    return (
        _HEADER_V1
        + b"\x02"
        + b"\x02t"
        + b"\x02"
        + partition
        + leader_tag
        + b"\x00"
        + _THROTTLE
        + b"\x00"
    )


def test_known_tag_whose_size_disagrees_with_its_struct_is_refused() -> None:
    # The KIP-951 walker skipped a partition's tagged fields by their declared size while
    # kio (like Kafka's own reader) parses a known tag's struct and goes on from its end:
    # on such bytes the walker found no node endpoints where kio (and the client) did, and
    # the broker's own address would have gone to the client unrewritten.
    leader = struct.pack(">ii", 2, 7) + b"\x00"  # LeaderIdAndEpoch and its (empty) tags
    good = _produce_v10_response(b"\x01\x00" + bytes([len(leader)]) + leader)
    assert node_endpoints.has_top_level_tags(PRODUCE, 10, good) is False
    assert decode_response(PRODUCE, 10, good)[1].responses[0].partition_responses
    padded = leader + b"\x00\x00\x00\x00"  # declared 4 bytes longer than the struct
    bad = _produce_v10_response(b"\x01\x00" + bytes([len(padded)]) + padded)
    with pytest.raises(CodecError, match="declared"):
        node_endpoints.has_top_level_tags(PRODUCE, 10, bad)
    with pytest.raises(CodecError, match="declared"):
        decode_response(PRODUCE, 10, bad)
