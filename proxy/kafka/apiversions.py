"""ApiVersions: advertise only what the proxy can handle, and KIP-511 fallback both ways.

For the APIs the proxy decodes, the broker's version range is intersected with the proxy's
own, so a client never picks a version the proxy would have to pass blind. Every other API's
range passes through untouched. KIP-511: a client may send an ApiVersions version newer than
its peer knows; the peer answers in v0 form with UNSUPPORTED_VERSION and its own ApiVersions
range, and the client retries with a version from it. The proxy plays that peer when the
client is newer than kio, and understands that answer when the broker is older than the client.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

from kio.schema.api_versions.v0.response import ApiVersion as ApiVersionV0
from kio.schema.api_versions.v0.response import ApiVersionsResponse as ApiVersionsResponseV0
from kio.schema.errors import ErrorCode
from kio.schema.response_header.v0.header import ResponseHeader
from kio.static.primitive import i16, i32

from proxy.kafka.codec import decode_response, encode, kio_version_range
from proxy.kafka.produce_skim import MAX_SKIM_VERSION
from proxy.kafka.protocol import API_VERSIONS, UNSUPPORTED_VERSION


def decoded_api_limits(decoded_api_keys: frozenset[int]) -> dict[int, tuple[int, int]]:
    """Version ranges the proxy handles for the APIs it looks inside."""
    limits: dict[int, tuple[int, int]] = {}
    for key in decoded_api_keys:
        if key == 0:  # Produce goes through the skimmer, which covers v0 to v13
            limits[key] = (0, MAX_SKIM_VERSION)
            continue
        rng = kio_version_range(key)
        if rng is None:
            raise ValueError(f"api_key {key} is decoded but kio does not know it")
        limits[key] = rng
    return limits


def clamp(body: Any, limits: dict[int, tuple[int, int]]) -> Any:
    """Intersect each decoded API's range with the proxy's; drop an API left with none."""
    out = []
    changed = False
    for entry in body.api_keys:
        lim = limits.get(int(entry.api_key))
        if lim is None:
            out.append(entry)
            continue
        lo = max(int(entry.min_version), lim[0])
        hi = min(int(entry.max_version), lim[1])
        if lo > hi:
            changed = True
            continue
        if (lo, hi) != (entry.min_version, entry.max_version):
            entry = dataclasses.replace(entry, min_version=i16(lo), max_version=i16(hi))
            changed = True
        out.append(entry)
    return dataclasses.replace(body, api_keys=tuple(out)) if changed else body


def unsupported_version_response(correlation_id: int) -> bytes:
    """The v0-form answer to an ApiVersions request newer than the proxy understands."""
    lo, hi = kio_version_range(API_VERSIONS) or (0, 0)
    header = ResponseHeader(correlation_id=i32(correlation_id))
    body = ApiVersionsResponseV0(
        error_code=ErrorCode(UNSUPPORTED_VERSION),
        api_keys=(
            ApiVersionV0(api_key=i16(API_VERSIONS), min_version=i16(lo), max_version=i16(hi)),
        ),
    )
    return encode(header, body)


def api_versions_v0_request(correlation_id: int) -> bytes:
    """A complete ApiVersions v0 request frame (size prefix included), client id "walproxy"."""
    client_id = b"walproxy"
    payload = struct.pack(">hhih", API_VERSIONS, 0, correlation_id, len(client_id)) + client_id
    return struct.pack(">i", len(payload)) + payload


def rewrite_response(
    version: int, frame: bytes | memoryview, limits: dict[int, tuple[int, int]]
) -> bytes | memoryview:
    """Clamp a broker's ApiVersions response; returns the frame unchanged when nothing moved.

    The response header is always v0 (correlation id only). A broker that does not know the
    requested version answers in v0 form with UNSUPPORTED_VERSION, so decode that as v0.
    """
    if len(frame) < 6:
        return frame  # let the client see (and reject) what the broker sent
    (error_code,) = struct.unpack_from(">h", frame, 4)
    if error_code == UNSUPPORTED_VERSION:
        version = 0
    header, body = decode_response(API_VERSIONS, version, frame)
    clamped = clamp(body, limits)
    if clamped is body:
        return frame
    return encode(header, clamped)
