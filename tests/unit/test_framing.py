"""Frame splitting: sizes, limits, partial frames and TLS detection, without sockets."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.kafka.framing import (
    FrameDecoder,
    FrameError,
    encode_frame,
    parse_request_header,
    parse_response_correlation_id,
)


@given(
    payloads=st.lists(st.binary(max_size=200), max_size=20),
    cuts=st.lists(st.integers(1, 50), min_size=1, max_size=30),
)
def test_any_chunking_yields_the_same_frames(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(p) for p in payloads)
    decoder = FrameDecoder(1024)
    frames = []
    pos, i = 0, 0
    while pos < len(stream):
        step = cuts[i % len(cuts)]
        decoder.feed(stream[pos : pos + step])
        pos += step
        i += 1
        while (f := decoder.next_frame()) is not None:
            frames.append(f[4:])
    assert frames == payloads
    assert not decoder.pending


def test_partial_frame_is_pending() -> None:
    decoder = FrameDecoder(100)
    decoder.feed(struct.pack(">i", 10) + b"abc")
    assert decoder.next_frame() is None
    assert decoder.pending
    decoder.feed(b"defghij")
    assert decoder.next_frame() == struct.pack(">i", 10) + b"abcdefghij"
    assert not decoder.pending


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (struct.pack(">i", -1), "negative frame size"),
        (struct.pack(">i", 101), "exceeds the limit"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "TLS handshake"),
        (b"\x16\x03", "TLS handshake"),
    ],
)
def test_bad_frames(data: bytes, message: str) -> None:
    decoder = FrameDecoder(100, check_tls=True)
    decoder.feed(data)
    with pytest.raises(FrameError, match=message):
        decoder.next_frame()


def test_header_fields() -> None:
    h = parse_request_header(struct.pack(">hhi", 0, 9, 1234) + b"rest")
    assert (h.api_key, h.api_version, h.correlation_id) == (0, 9, 1234)
    assert parse_response_correlation_id(struct.pack(">i", 77)) == 77
    with pytest.raises(FrameError):
        parse_request_header(b"\x00\x00")
    with pytest.raises(FrameError, match="negative api_version"):
        parse_request_header(struct.pack(">hhi", 0, -3, 1))
