"""A tiny blocking Kafka client for readiness checks and tooling (not for the data path)."""

from __future__ import annotations

import io
import socket
import struct
from typing import Any

from kio.schema.metadata.v12.request import MetadataRequest
from kio.schema.request_header.v2.header import RequestHeader
from kio.serial import entity_writer
from kio.static.primitive import i16, i32

from proxy.kafka.codec import decode_response


def request(host: str, port: int, header: Any, body: Any, timeout: float = 5.0) -> Any:
    buf = io.BytesIO()
    entity_writer(type(header))(buf, header)
    entity_writer(type(body))(buf, body)
    payload = buf.getvalue()
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(payload)) + payload)
        size = struct.unpack(">i", _read_exactly(sock, 4))[0]
        frame = _read_exactly(sock, size)
    _, response = decode_response(
        int(header.request_api_key), int(header.request_api_version), frame
    )
    return response


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed by the broker")
        chunks += chunk
    return bytes(chunks)


def metadata(host: str, port: int, timeout: float = 5.0) -> Any:
    """A Metadata v12 response for no topics: the brokers and the controller."""
    header = RequestHeader(
        request_api_key=i16(3),
        request_api_version=i16(12),
        correlation_id=i32(1),
        client_id="walproxy-probe",
    )
    return request(
        host,
        port,
        header,
        MetadataRequest(
            topics=(), allow_auto_topic_creation=False, include_topic_authorized_operations=False
        ),
        timeout,
    )
