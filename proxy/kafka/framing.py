"""Kafka wire framing, sans-IO.

Every Kafka message is a 4-byte big-endian size followed by that many bytes. Requests start
with ``api_key:int16, api_version:int16, correlation_id:int32``; responses with
``correlation_id:int32``. This module only finds frame boundaries and reads those fixed
fields: everything else travels as opaque bytes, so unknown and vendor API keys pass through.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_SIZE = struct.Struct(">i")
_REQUEST_HEADER = struct.Struct(">hhi")
_CORRELATION = struct.Struct(">i")

#: A TLS record starts 0x16 0x03 (handshake, TLS major version 3); read as a frame size that is
#: 0x1603xxxx, so it would be caught by the size limit anyway, but a precise message helps users.
_TLS_HANDSHAKE_PREFIX = b"\x16\x03"


class FrameError(Exception):
    """The peer sent bytes that are not a valid Kafka frame; the connection must close."""


class FrameTooLarge(FrameError):
    """A frame announces more bytes than the decoder's limit (``proxy.max_frame_bytes``)."""


@dataclass(frozen=True, slots=True)
class RequestHeader:
    api_key: int
    api_version: int
    correlation_id: int


def parse_request_header(frame: bytes | memoryview) -> RequestHeader:
    """Read the fixed request header fields (the client id and tags are left alone)."""
    if len(frame) < _REQUEST_HEADER.size:
        raise FrameError(f"request frame of {len(frame)} bytes is shorter than its header")
    api_key, api_version, correlation_id = _REQUEST_HEADER.unpack_from(frame, 0)
    if api_version < 0:
        raise FrameError(f"negative api_version {api_version} for api_key {api_key}")
    return RequestHeader(api_key, api_version, correlation_id)


def parse_response_correlation_id(frame: bytes | memoryview) -> int:
    if len(frame) < _CORRELATION.size:
        raise FrameError(f"response frame of {len(frame)} bytes has no correlation id")
    correlation_id: int = _CORRELATION.unpack_from(frame, 0)[0]
    return correlation_id


def encode_frame(payload: bytes | bytearray | memoryview) -> bytes:
    return _SIZE.pack(len(payload)) + bytes(payload)


class FrameDecoder:
    """Incremental frame splitter with a size limit.

    Feed it whatever the socket returned; take complete frames (without their size prefix)
    with :meth:`next_frame`. ``pending`` tells whether a frame has started but not finished,
    which the connection uses for its partial-frame timeout.
    """

    __slots__ = ("_buf", "_check_tls", "_pos", "max_frame_bytes")

    def __init__(self, max_frame_bytes: int, *, check_tls: bool = False) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray()
        self._pos = 0
        # Only meaningful while no legal frame size can start with the TLS prefix bytes.
        self._check_tls = check_tls and max_frame_bytes < 0x16030000

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        elif self._pos > 65536 and self._pos * 2 > len(self._buf):
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    @property
    def pending(self) -> bool:
        return len(self._buf) > self._pos

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def next_frame(self) -> bytes | None:
        """Return the next complete frame *with* its size prefix, ``None`` if incomplete.

        The prefix stays so the frame can be forwarded as it is, without another copy;
        parse ``memoryview(frame)[4:]``.
        """
        buf, pos = self._buf, self._pos
        avail = len(buf) - pos
        if avail < 4:
            if self._check_tls and avail >= 2 and buf[pos : pos + 2] == _TLS_HANDSHAKE_PREFIX:
                raise FrameError("TLS handshake received on a plaintext listener")
            return None
        (size,) = _SIZE.unpack_from(buf, pos)
        if size < 0:
            raise FrameError(f"negative frame size {size}")
        if size > self.max_frame_bytes:
            if self._check_tls and buf[pos : pos + 2] == _TLS_HANDSHAKE_PREFIX:
                raise FrameError("TLS handshake received on a plaintext listener")
            raise FrameTooLarge(
                f"frame size {size} exceeds the limit of {self.max_frame_bytes} bytes "
                "(proxy.max_frame_bytes)"
            )
        end = pos + 4 + size
        if len(buf) < end:
            return None
        frame = bytes(memoryview(buf)[pos:end])  # one copy (a bytearray slice would be two)
        self._pos = end
        return frame
