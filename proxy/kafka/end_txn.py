"""EndTxn (API key 26, v0-v5), sans-IO: the skimmer, the answer's outcome, and the proxy's
own answer when the WAL cannot take the request.

The durable EndTxn path (:mod:`proxy.durable.end_txn_path`) needs, of an EndTxn request,
only which transaction ends and how: transactional id, producer id, producer epoch and the
committed flag (Kafka's ``EndTxnRequest.json``: those four fields in every version, flexible
from v3). The skimmer reads them in one pass over the frame, which is forwarded as the
client sent it. The response (``throttle_time_ms``, ``error_code``; from v5, with
transaction.version 2, the producer id and the *bumped* epoch the markers carry) is small
and decoded with kio.
"""

from __future__ import annotations

import datetime
import struct
from dataclasses import dataclass
from typing import Any

from kio.index import load_response_schema
from kio.schema.errors import ErrorCode
from kio.static.primitive import i16, i32, i64

from proxy.kafka.codec import decode_response, encode
from proxy.kafka.cursor import Cursor, WireError
from proxy.kafka.protocol import END_TXN

#: The versions the skimmer reads; ApiVersions advertises no others for EndTxn.
VERSION_RANGE = (0, 5)

_HEADER = struct.Struct(">hhi")


class EndTxnSkimError(ValueError):
    """The EndTxn request is malformed (truncated, null id, trailing bytes)."""


@dataclass(frozen=True, slots=True)
class SkimmedEndTxn:
    version: int
    correlation_id: int
    transactional_id: str
    producer_id: int
    producer_epoch: int
    committed: bool


@dataclass(frozen=True, slots=True)
class EndTxnAnswer:
    error_code: int
    producer_id: int = -1  # v5+ only
    producer_epoch: int = -1


def skim_end_txn(frame: bytes | memoryview) -> SkimmedEndTxn:
    """The transaction an EndTxn request frame (no size prefix) ends."""
    if len(frame) < 10:
        raise EndTxnSkimError("EndTxn request shorter than its header")
    api_key, version, correlation_id = _HEADER.unpack_from(frame, 0)
    if api_key != END_TXN:
        raise EndTxnSkimError(f"api_key {api_key} is not EndTxn")
    if not VERSION_RANGE[0] <= version <= VERSION_RANGE[1]:
        raise EndTxnSkimError(f"EndTxn v{version} is not supported by the skimmer")
    try:
        cur = Cursor(frame, 8, flexible=False)
        cur.string()  # client_id: a nullable int16 string in every header version
        cur.flexible = version >= 3
        cur.skip_tags()  # request header v2 tagged fields
        txn = cur.string()
        if txn is None:
            raise EndTxnSkimError("null transactional_id")
        producer_id = cur.int64()
        producer_epoch = cur.int16()
        cur.need(1)
        committed = frame[cur.pos] != 0
        cur.pos += 1
        cur.skip_tags()
        if cur.pos != len(frame):
            raise EndTxnSkimError(f"{len(frame) - cur.pos} trailing bytes after EndTxn request")
    except WireError as exc:
        raise EndTxnSkimError(f"malformed EndTxn request: {exc}") from None
    return SkimmedEndTxn(version, correlation_id, txn, producer_id, producer_epoch, committed)


def response_answer(version: int, payload: bytes | memoryview) -> EndTxnAnswer:
    """The error code (and from v5 the producer id and epoch) of an EndTxn response.

    Raises :class:`~proxy.kafka.codec.CodecError` on bytes that do not decode.
    """
    _, body = decode_response(END_TXN, version, payload)
    return EndTxnAnswer(
        int(body.error_code),
        int(getattr(body, "producer_id", -1)),
        int(getattr(body, "producer_epoch", -1)),
    )


def error_response(req: SkimmedEndTxn, error_code: int) -> bytes:
    """A complete EndTxn response payload (header included) with ``error_code``."""
    schema: Any = load_response_schema(END_TXN, req.version)
    extra = {"producer_id": i64(-1), "producer_epoch": i16(-1)} if req.version >= 5 else {}
    body = schema(throttle_time=datetime.timedelta(0), error_code=ErrorCode(error_code), **extra)
    header = schema.__header_schema__(correlation_id=i32(req.correlation_id))
    return encode(header, body)
