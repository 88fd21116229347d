"""Is a Kafka listener really serving? One ApiVersions request and its answer.

A TCP connect is no readiness signal behind Docker's port forwarder: docker-proxy accepts on
the host before anything listens in the container, then drops the connection. Only a Kafka
answer (here ApiVersions v0, which every broker and walproxy answers before any other
request) says the listener is up. Standard library only.
"""

from __future__ import annotations

import socket
import struct
import time

_API_VERSIONS = 18
_CORRELATION_ID = 0x57A1


def _request() -> bytes:
    client_id = b"walproxy-probe"
    # request header v1: api key, api version, correlation id, client id; v0 has no body
    body = struct.pack(">hhih", _API_VERSIONS, 0, _CORRELATION_ID, len(client_id)) + client_id
    return struct.pack(">i", len(body)) + body


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed before a full answer")
        data += chunk
    return data


def kafka_answers(host: str, port: int, timeout: float = 5.0) -> bool:
    """True when ``host:port`` answers ApiVersions without error."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(_request())
            (size,) = struct.unpack(">i", _recv_exactly(sock, 4))
            if size < 6:
                return False
            correlation, error = struct.unpack(">ih", _recv_exactly(sock, 6))
            return bool(correlation == _CORRELATION_ID and error == 0)
    except (OSError, struct.error):
        return False


def wait_for_kafka(host: str, port: int, timeout: float = 120.0) -> None:
    """Block until :func:`kafka_answers`; ``TimeoutError`` past ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not kafka_answers(host, port):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no Kafka ApiVersions answer from {host}:{port} in {timeout}s")
        time.sleep(0.5)
