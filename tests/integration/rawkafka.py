"""A raw-socket Kafka peer for protocol tests: exact bytes in, exact frames out."""

from __future__ import annotations

import datetime
import socket
import struct
import time
from typing import Any

from kio.index import load_request_schema
from kio.static.primitive import i16, i32

from proxy.kafka.codec import decode_response, encode
from proxy.kafka.record_batch import build_batch


def now_ms() -> int:
    return int(time.time() * 1000)


def host_port(bootstrap: str) -> tuple[str, int]:
    host, port = bootstrap.split(",")[0].rsplit(":", 1)
    return host, int(port)


def request_frame(api_key: int, version: int, correlation_id: int, **fields: Any) -> bytes:
    schema = load_request_schema(api_key, version)
    header = schema.__header_schema__(
        request_api_key=i16(api_key),
        request_api_version=i16(version),
        correlation_id=i32(correlation_id),
        client_id="raw-test",
    )
    payload = encode(header, schema(**fields))
    return struct.pack(">i", len(payload)) + payload


def metadata_frame(correlation_id: int, topics: tuple = ()) -> bytes:
    return request_frame(
        3,
        12,
        correlation_id,
        topics=topics,
        allow_auto_topic_creation=False,
        include_topic_authorized_operations=False,
    )


def api_versions_frame(correlation_id: int, version: int = 3) -> bytes:
    return request_frame(
        18, version, correlation_id, client_software_name="raw", client_software_version="1"
    )


def produce_frame(
    topic: str,
    partition: int,
    values: list[bytes],
    *,
    acks: int,
    correlation_id: int,
    version: int = 9,
    batch: bytes | None = None,
) -> bytes:
    # Real timestamps: a record from 1970 is past any retention and its segment rolls at once.
    records = batch if batch is not None else build_batch(values, timestamp_ms=now_ms())
    return produce_frame_multi(
        topic, {partition: records}, acks=acks, correlation_id=correlation_id, version=version
    )


def produce_frame_multi(
    topic: str, batches: dict[int, bytes], *, acks: int, correlation_id: int, version: int = 9
) -> bytes:
    """One Produce request with a records blob for each of several partitions of a topic."""
    schema = load_request_schema(0, version)
    module = __import__(schema.__module__, fromlist=["x"])
    data = module.TopicProduceData(
        name=topic,
        partition_data=tuple(
            module.PartitionProduceData(index=i32(p), records=blob) for p, blob in batches.items()
        ),
    )
    return request_frame(
        0,
        version,
        correlation_id,
        transactional_id=None,
        acks=i16(acks),
        timeout=datetime.timedelta(seconds=30),
        topic_data=(data,),
    )


class RawConnection:
    def __init__(self, bootstrap: str, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(host_port(bootstrap), timeout=timeout)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _exactly(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed by peer")
            buf += chunk
        return bytes(buf)

    def recv_frame(self) -> bytes:
        (size,) = struct.unpack(">i", self._exactly(4))
        return self._exactly(size)

    def recv_response(self, api_key: int, version: int) -> tuple[Any, Any]:
        return decode_response(api_key, version, self.recv_frame())

    def closed_by_peer(self, timeout: float) -> bool:
        """True once the peer closes (EOF or reset) within ``timeout`` seconds."""
        self.sock.settimeout(timeout)
        try:
            while True:
                if not self.sock.recv(65536):
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
