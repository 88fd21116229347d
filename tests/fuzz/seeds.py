"""The seed corpus: valid inputs for every target, made with kio and the project's encoders.

``python -m tests.fuzz.seeds`` rewrites ``tests/fuzz/corpus/<target>/``; the files are
committed so a run starts from inputs that reach deep into each parser. Kafka messages are
built generically from kio's schemas (every field filled, one element per array), so every
version of every walked API has a seed.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import struct
import sys
import uuid
from pathlib import Path
from typing import Any

from kio.index import load_request_schema, load_response_schema
from kio.serial._implicit_defaults import get_implicit_default
from kio.serial._introspect import (
    EntityField,
    EntityTupleField,
    PrimitiveTupleField,
    classify_field,
    get_schema_field_type,
)
from kio.static.primitive import i16, i32

from offload import kafka_logdir as kl
from offload import manifest as mf
from offload import node_files, segment_codec
from offload.layout import segment_name
from proxy.durable import wal_entries
from proxy.kafka.codec import encode, kio_version_range
from proxy.kafka.framing import encode_frame
from proxy.kafka.protocol import DESCRIBE_CLUSTER, FETCH, FIND_COORDINATOR, METADATA, PRODUCE
from proxy.kafka.record_batch import build_batch
from wal import s3_layout
from wal.record import encode_group
from wal.segment import SegmentHeader, encode_segment_header

CORPUS = Path(__file__).parent / "corpus"
TID = uuid.UUID("5b6f5e1c-3c0b-4c2e-9a50-0d3d2b1f7a11")


def _value(f: dataclasses.Field[Any], depth: int, variant: int) -> Any:
    fc = classify_field(f)
    if isinstance(fc, EntityField):
        return sample(fc.type_, depth + 1, variant)
    if isinstance(fc, EntityTupleField):
        return tuple(sample(fc.type_, depth + 1, variant) for _ in range(1 + variant % 2))
    kafka_type = get_schema_field_type(f)
    if kafka_type == "records":
        return build_batch([b"v"], base_offset=variant)
    one = _primitive(kafka_type, fc.type_, variant)
    return (one,) if isinstance(fc, PrimitiveTupleField) else one


def _primitive(kafka_type: str, type_: type, variant: int) -> Any:
    if kafka_type == "string":
        return ("localhost", "t", "10.0.0.1")[variant % 3]
    if kafka_type == "bytes":
        return b"b"
    if kafka_type == "uuid":
        return TID
    if kafka_type == "bool":
        return bool(variant % 2)
    if kafka_type in ("int32", "int16", "int64", "int8") and variant:
        return type_(variant)  # node ids 1, 2, 3: moved, kept, withheld by the resolver
    if kafka_type == "error_code":
        return type_(0)
    if kafka_type == "datetime_i64":
        return datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    return get_implicit_default(type_)


def sample(schema: type, depth: int = 0, variant: int = 0) -> Any:
    """An instance of a kio entity with every field set (arrays of one or two items)."""
    kwargs = {}
    for f in dataclasses.fields(schema):
        has_default = f.default is not dataclasses.MISSING or (
            f.default_factory is not dataclasses.MISSING
        )
        if "tag" in f.metadata and variant == 0 and has_default:
            continue  # defaults; the variants fill tagged fields too
        kwargs[f.name] = _value(f, depth, variant)
    return schema(**kwargs)


def response_frame(api_key: int, version: int, variant: int) -> bytes:
    schema = load_response_schema(api_key, version)
    header = schema.__header_schema__(correlation_id=i32(7))
    return encode(header, sample(schema, variant=variant))


def request_frame(api_key: int, version: int, variant: int) -> bytes:
    schema = load_request_schema(api_key, version)
    header = schema.__header_schema__(
        request_api_key=i16(api_key),
        request_api_version=i16(version),
        correlation_id=i32(5),
        client_id="fuzz",
    )
    return encode(header, sample(schema, variant=variant))


def _versions(api_key: int, lo: int = 0, hi: int = 99) -> range:
    kio_lo, kio_hi = kio_version_range(api_key) or (0, -1)
    return range(max(lo, kio_lo), min(hi, kio_hi) + 1)


# -- per target ------------------------------------------------------------------------------
def seeds_framing() -> list[bytes]:
    frames = [encode_frame(request_frame(PRODUCE, v, 1)) for v in (3, 9, 11)]
    return [bytes([0xFF, 5]) + b"".join(frames), bytes([0x10, 1]) + frames[0]]


def seeds_produce_skim() -> list[bytes]:
    return [request_frame(PRODUCE, v, var) for v in _versions(PRODUCE, 3, 13) for var in (0, 1)]


def seeds_commit_skim() -> list[bytes]:
    from proxy.kafka.protocol import OFFSET_COMMIT, TXN_OFFSET_COMMIT

    return [
        request_frame(api, v, var)
        for api in (OFFSET_COMMIT, TXN_OFFSET_COMMIT)
        for v in _versions(api)
        for var in (0, 1)
    ]


def seeds_record_batch() -> list[bytes]:
    two = build_batch([b"a", b"bb"]) + build_batch([None], base_offset=2, producer_id=7)
    return [b"\x00" + two, b"\x01" + build_batch([b"x"] * 3, headers=[("h", b"v")])]


def seeds_endpoints() -> list[bytes]:
    out = []
    for i, api in enumerate((METADATA, FIND_COORDINATOR, DESCRIBE_CLUSTER)):
        for v in _versions(api, 0, 15):
            out += [bytes([i, v]) + response_frame(api, v, var) for var in (1, 2)]
    return out


def seeds_apiversions() -> list[bytes]:
    return [bytes([v]) + response_frame(18, v, 1) for v in _versions(18, 0, 4)]


def seeds_node_endpoints() -> list[bytes]:
    out = []
    for sel, api, lo, hi in ((0, PRODUCE, 10, 13), (1, FETCH, 16, 18)):
        for v in _versions(api, lo, hi):
            out += [bytes([sel, v - lo]) + response_frame(api, v, var) for var in (0, 1)]
    return out


def seeds_produce_outcomes() -> list[bytes]:
    return [bytes([v - 3]) + response_frame(PRODUCE, v, 1) for v in _versions(PRODUCE, 3, 13)]


_SEG = SegmentHeader(
    block_size=512, epoch=3, segno=7, first_lsn=11, segment_size=1 << 16, data_offset=512
)


def seeds_wal_records() -> list[bytes]:
    img = bytearray(4096)
    n = encode_group(
        memoryview(img),
        salt_crc=_SEG.salt_crc,
        first_lsn=11,
        entries=[(1, b"hello"), (2, b"x" * 100)],
        block=512,
    )
    n += encode_group(
        memoryview(img)[n:],
        salt_crc=_SEG.salt_crc,
        first_lsn=13,
        entries=[(1, b"z")],
        block=512,
        back=1,
    )
    batch = wal_entries.encode_batch_header(
        acks=-1, partition=3, topic="t", topic_id=None, transactional_id="tx"
    ) + build_batch([b"v"])
    outcome = wal_entries.encode_outcome(
        wal_entries.OutcomeEntry(9, wal_entries.Source.BROKER, 0, 41)
    )
    return [
        b"\x00" + bytes(img[:n]),
        b"\x01" + bytes(img[:n]),
        b"\x00" + batch,
        b"\x00" + outcome,
        b"\x00" + encode_segment_header(_SEG)[:64],
    ]


def seeds_s3_wal_objects() -> list[bytes]:
    obj = s3_layout.encode_object(
        epoch=2, slot=5, first_lsn=40, back=1, entries=[(1, b"alpha"), (2, b"b" * 70)]
    )
    marker = s3_layout.encode_object(epoch=3, slot=6, first_lsn=42, back=0, entries=[])
    lease = s3_layout.Lease(epoch=3, trim_slot=1, trim_slot_lsn=7, trim_lsn=6).encode()
    return [b"\x00" + obj, b"\x01" + obj, b"\x00" + marker, b"\x00" + lease]


def seeds_wal_recovery() -> list[bytes]:
    # garbling instructions: (file, offset, xor); 0 xor truncates
    return [
        b"\x00",
        b"\x00" + bytes([1]) + struct.pack("<I", 700) + b"\x01",
        b"\x01" + bytes([2]) + struct.pack("<I", 530) + b"\x40",
        b"\x00" + bytes([3]) + struct.pack("<I", 1100) + b"\x00",
    ]


def seeds_segment_codec() -> list[bytes]:
    log = build_batch([b"a"], base_offset=3, partition_leader_epoch=1) + build_batch(
        [b"b", b"c"], base_offset=4, partition_leader_epoch=2
    )
    stored = segment_codec.encode(log, "zstd")
    return [b"\x00\x03" + log, b"\x02\x03" + log, b"\x02\x00" + stored]


def _manifest() -> mf.Manifest:
    info = segment_codec.describe(build_batch([b"a", b"b"], base_offset=0), 0)
    key = "seg/" + segment_name(0, 1, 1, False)
    ref = segment_codec.segment_ref(key, info, b"x" * info.size, "none")
    return mf.Manifest(
        topic="t",
        topic_id=TID,
        partition=0,
        writer_node=1,
        writer_epoch=1,
        version=2,
        log_start_offset=0,
        next_offset=2,
        leader_epochs=((0, 0),),
        segments=(ref,),
    )


def seeds_manifest() -> list[bytes]:
    lease = node_files.encode_lease(node_files.Lease(1, 4, "host:1:u", "2024-01-01"))
    broker = node_files.encode_broker_info(
        node_files.BrokerInfo(
            cluster_id="c",
            node_id=1,
            directory_id=None,
            meta_properties={"version": "1"},
            topics={"t": node_files.TopicEntry(TID, (0, 1))},
            writer_epoch=4,
            updated_at="x",
        )
    )
    return [mf.encode(_manifest()), lease, broker]


def seeds_kafka_logdir() -> list[bytes]:
    cid = kl.kafka_uuid(TID)
    return [
        kl.MetaProperties(cid, 1, kl.kafka_uuid(uuid.UUID(int=12345 << 70))).encode(),
        kl.encode_partition_metadata(TID),
        kl.encode_leader_epoch_checkpoint([(0, 0), (3, 120)]),
        kl.encode_offset_checkpoint({("t", 0): 5, ("u", 2): 9}),
        json.dumps(
            {
                "format": 1,
                "cluster_id": cid,
                "node_id": 1,
                "complete": False,
                "partitions": [
                    {
                        "topic": "t",
                        "partition": 0,
                        "log_start_offset": 0,
                        "next_offset": 9,
                        "bytes": 700,
                        "source": "m2",
                    }
                ],
            }
        ).encode(),
    ]


def build_wal_dir(root: str) -> dict[int, bytes]:
    """Write a small WAL with the real writer: several segments, closed without sealing."""
    import trio

    from wal import WalConfig, open_wal

    cfg = WalConfig(segment_size=16384, direct_io=False, spare_segments=0, prepare_spares=False)
    written: dict[int, bytes] = {}

    async def main() -> None:
        async with open_wal(root, config=cfg) as wal:
            for i in range(24):
                payload = bytes([i]) * (37 * i % 700 + 1)
                written[await wal.append(payload, type=1 + i % 2)] = payload

    trio.run(main)
    return written


SEEDS = {
    name.removeprefix("seeds_"): fn
    for name, fn in list(globals().items())
    if name.startswith("seeds_") and callable(fn)
}


def write_corpus(root: Path = CORPUS) -> dict[str, int]:
    counts = {}
    for name, fn in SEEDS.items():
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for old in d.iterdir():
            old.unlink()
        for data in fn():
            (d / hashlib.sha1(data).hexdigest()).write_bytes(data)
        counts[name] = len(os.listdir(d))
    return counts


if __name__ == "__main__":
    for name, n in write_corpus(Path(sys.argv[1]) if len(sys.argv) > 1 else CORPUS).items():
        print(f"{name}: {n} seeds")
