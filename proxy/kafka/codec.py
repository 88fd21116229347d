"""Full decode and encode of the messages the proxy must change, through kio.

kio's types are generated from Kafka's own JSON schemas, so header versions (v0/v1/v2),
flexible versions and tagged fields follow Kafka exactly. Only the handful of APIs the proxy
rewrites go through here; everything else stays opaque bytes (see :mod:`proxy.kafka.framing`).
"""

from __future__ import annotations

import io
from functools import cache
from typing import Any

from kio.index import load_request_schema, load_response_schema
from kio.schema.index import api_key_map, schema_name_map
from kio.serial import entity_reader, entity_writer
from kio.static.constants import EntityType

from proxy.kafka.cursor import WireError
from proxy.kafka.wire_guard import check


class CodecError(Exception):
    """A message could not be decoded with the schema its header names."""


@cache
def kio_version_range(api_key: int) -> tuple[int, int] | None:
    """The (min, max) versions kio can decode for ``api_key``, or ``None`` if unknown."""
    name = api_key_map.get(api_key)
    if name is None:
        return None
    versions = [v for v, kinds in schema_name_map[name].items() if EntityType.response in kinds]
    return (min(versions), max(versions)) if versions else None


def _decode(kind: str, schema: type, frame: bytes | memoryview, what: str) -> tuple[Any, Any]:
    header_schema: type = getattr(schema, "__header_schema__")  # noqa: B009
    try:  # before kio: its native reader aborts the process on a huge array length
        check(schema, frame, check(header_schema, frame, 0))
    except WireError as exc:
        raise CodecError(f"cannot decode {kind} {what}: {exc}") from exc
    header: Any
    body: Any
    try:
        header, offset = entity_reader(header_schema)(frame, 0)
        body, size = entity_reader(schema)(frame, offset)  # kio returns the size read
    except Exception as exc:  # kio raises a variety of errors on bad bytes
        raise CodecError(f"cannot decode {kind} {what}: {exc}") from exc
    if offset + size != len(frame):
        raise CodecError(f"{kind} {what}: {len(frame) - offset - size} trailing bytes")
    return header, body


def _schema(load: Any, api_key: int, version: int) -> type:
    try:
        schema: type = load(api_key, version)
        return schema
    except Exception as exc:
        raise CodecError(f"no schema for api_key={api_key} v{version}: {exc}") from exc


def decode_request(api_key: int, version: int, frame: bytes | memoryview) -> tuple[Any, Any]:
    """Decode a request frame (without its size prefix) into ``(header, body)``."""
    schema = _schema(load_request_schema, api_key, version)
    return _decode("request", schema, frame, f"api_key={api_key} v{version}")


def decode_response(api_key: int, version: int, frame: bytes | memoryview) -> tuple[Any, Any]:
    """Decode a response frame into ``(header, body)``; the request says which schema."""
    schema = _schema(load_response_schema, api_key, version)
    return _decode("response", schema, frame, f"api_key={api_key} v{version}")


def encode(header: Any, body: Any) -> bytes:
    """Encode ``header`` then ``body`` (a kio request or response) without the size prefix."""
    buf = io.BytesIO()
    entity_writer(type(header))(buf, header)
    entity_writer(type(body))(buf, body)
    return buf.getvalue()
