"""The Produce skimmer's cost per request, on the hot path's shapes (a script, not a test).

Builds Produce requests with kio (v9 and v13, 1 to 16 partitions, 16 KiB record blobs),
skims each ``--n`` times and prints microseconds per request. Wall time is noisy on a busy
machine; for a repeatable figure count instructions instead:
``valgrind --tool=callgrind .venv/bin/python bench/skim_bench.py --n 2000 --shape v9x4``
and compare the ``skim_produce`` inclusive count before and after a change.
"""

from __future__ import annotations

import argparse
import datetime
import time
import uuid

from kio.index import load_request_schema
from kio.static.primitive import i16, i32

from proxy.kafka.codec import encode
from proxy.kafka.produce_skim import skim_produce

#: name -> (produce version, partitions)
SHAPES = {"v9x1": (9, 1), "v9x4": (9, 4), "v9x16": (9, 16), "v13x4": (13, 4)}


def produce_frame(version: int, partitions: int, blob: bytes) -> bytes:
    schema = load_request_schema(0, version)
    module = __import__(schema.__module__, fromlist=["x"])
    parts = tuple(
        module.PartitionProduceData(index=i32(p), records=blob) for p in range(partitions)
    )
    key = {"topic_id": uuid.uuid4()} if version >= 13 else {"name": "bench-topic"}
    body = schema(
        transactional_id=None,
        acks=i16(-1),
        timeout=datetime.timedelta(milliseconds=30000),
        topic_data=(module.TopicProduceData(**key, partition_data=parts),),
    )
    header = schema.__header_schema__(
        request_api_key=i16(0),
        request_api_version=i16(version),
        correlation_id=i32(7),
        client_id="producer-1",
    )
    return encode(header, body)


def run(shape: str, n: int) -> float:
    version, partitions = SHAPES[shape]
    frame = memoryview(produce_frame(version, partitions, b"\0" * 16384))
    skim_produce(frame)
    start = time.perf_counter()
    for _ in range(n):
        skim_produce(frame)
    return (time.perf_counter() - start) / max(n, 1) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000, help="skims per shape")
    ap.add_argument("--shape", choices=sorted(SHAPES), action="append", help="default: all")
    ap.add_argument("--repeat", type=int, default=5, help="runs per shape; the best is shown")
    args = ap.parse_args()
    for shape in args.shape or list(SHAPES):
        best = min(run(shape, args.n) for _ in range(args.repeat))
        print(f"{shape:6} {best:7.2f} us/request")


if __name__ == "__main__":
    main()
