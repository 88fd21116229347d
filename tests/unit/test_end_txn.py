"""EndTxn through the durable path: the skimmer agrees with kio (Kafka's schemas) on every
version it reads, the END_TXN / END_TXN_OUTCOME WAL entries round-trip, and an EndTxn is
forwarded only once its entry is durable and answered only once its outcome is; a WAL that
fails its sync refuses it (COORDINATOR_NOT_AVAILABLE), never answering before durable."""

from __future__ import annotations

import datetime
import errno

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from kio.index import load_request_schema, load_response_schema
from kio.schema.errors import ErrorCode
from kio.static.primitive import i16, i32, i64

from proxy.durable.end_txn_path import DurableEndTxn
from proxy.durable.produce_path import DurableProduce
from proxy.durable.wal_entries import (
    END_TXN,
    END_TXN_OUTCOME,
    EndTxnEntry,
    EndTxnOutcomeEntry,
    EntryError,
    Source,
    decode_end_txn,
    decode_end_txn_outcome,
    encode_end_txn,
    encode_end_txn_outcome,
)
from proxy.kafka.codec import decode_request, encode, kio_version_range
from proxy.kafka.end_txn import (
    VERSION_RANGE,
    EndTxnSkimError,
    error_response,
    response_answer,
    skim_end_txn,
)
from proxy.kafka.protocol import COORDINATOR_NOT_AVAILABLE
from proxy.kafka.protocol import END_TXN as END_TXN_KEY
from wal import WalConfig, open_wal
from wal.testing import MemoryBackend

VERSIONS = list(range(VERSION_RANGE[0], VERSION_RANGE[1] + 1))
names = st.text(min_size=1, max_size=30)
int64 = st.integers(-(2**63), 2**63 - 1)
int16 = st.integers(-(2**15), 2**15 - 1)


def test_the_skimmer_covers_what_kio_knows() -> None:
    assert VERSION_RANGE == kio_version_range(END_TXN_KEY)


def end_txn_frame(
    version: int, txn: str, pid: int, epoch: int, committed: bool, corr: int = 1
) -> bytes:
    schema = load_request_schema(END_TXN_KEY, version)
    header = schema.__header_schema__(
        request_api_key=i16(END_TXN_KEY),
        request_api_version=i16(version),
        correlation_id=i32(corr),
        client_id="c",
    )
    body = schema(
        transactional_id=txn,
        producer_id=i64(pid),
        producer_epoch=i16(epoch),
        committed=committed,
    )
    return encode(header, body)


def end_txn_response(version: int, corr: int, error: int, pid: int = -1, epoch: int = -1) -> bytes:
    schema = load_response_schema(END_TXN_KEY, version)
    extra = {"producer_id": i64(pid), "producer_epoch": i16(epoch)} if version >= 5 else {}
    body = schema(throttle_time=datetime.timedelta(0), error_code=ErrorCode(error), **extra)
    return encode(schema.__header_schema__(correlation_id=i32(corr)), body)


@pytest.mark.parametrize("version", VERSIONS)
@settings(max_examples=40, deadline=None)
@given(txn=names, pid=int64, epoch=int16, committed=st.booleans(), corr=st.integers(0, 2**31 - 1))
def test_skimmer_agrees_with_kio(
    version: int, txn: str, pid: int, epoch: int, committed: bool, corr: int
) -> None:
    frame = end_txn_frame(version, txn, pid, epoch, committed, corr)
    skim = skim_end_txn(memoryview(frame))
    assert (skim.version, skim.correlation_id) == (version, corr)
    assert (skim.transactional_id, skim.producer_id, skim.producer_epoch) == (txn, pid, epoch)
    assert skim.committed is committed
    header, body = decode_request(END_TXN_KEY, version, frame)
    assert encode(header, body) == frame
    # The proxy's own refusal is a response kio reads.
    assert response_answer(version, error_response(skim, COORDINATOR_NOT_AVAILABLE)) == (
        response_answer(version, end_txn_response(version, corr, COORDINATOR_NOT_AVAILABLE))
    )


def test_response_answer_reads_the_bumped_epoch_of_v5() -> None:
    got = response_answer(5, end_txn_response(5, 3, 0, pid=7, epoch=12))
    assert (got.error_code, got.producer_id, got.producer_epoch) == (0, 7, 12)
    got = response_answer(4, end_txn_response(4, 3, 0))
    assert (got.error_code, got.producer_id, got.producer_epoch) == (0, -1, -1)


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda f: f[:-1], id="truncated"),
        pytest.param(lambda f: f + b"\x00", id="trailing-byte"),
        pytest.param(lambda f: f[:9], id="short-header"),
        pytest.param(lambda f: f[:2] + b"\x00\x63" + f[4:], id="unknown-version"),
        pytest.param(lambda f: b"\x00\x00" + f[2:], id="not-end-txn"),
    ],
)
@pytest.mark.parametrize("version", [2, 5])
def test_malformed_requests_are_refused(version: int, mutate) -> None:  # type: ignore[no-untyped-def]
    frame = end_txn_frame(version, "tx", 4, 2, True)
    assert skim_end_txn(frame).committed
    with pytest.raises(EndTxnSkimError):
        skim_end_txn(mutate(frame))


@given(
    version=st.integers(0, 5),
    when=int64,
    txn=names,
    pid=int64,
    epoch=int16,
    committed=st.booleans(),
    lsn=st.integers(0, 2**64 - 1),
    error=int16,
    source=st.sampled_from(Source),
)
def test_end_txn_entries_round_trip(
    version: int,
    when: int,
    txn: str,
    pid: int,
    epoch: int,
    committed: bool,
    lsn: int,
    error: int,
    source: Source,
) -> None:
    entry = EndTxnEntry(version, when, txn, pid, epoch, committed)
    assert decode_end_txn(encode_end_txn(entry)) == entry
    outcome = EndTxnOutcomeEntry(lsn, source, error, pid, epoch)
    assert decode_end_txn_outcome(encode_end_txn_outcome(outcome)) == outcome


def test_damaged_end_txn_entries_are_refused() -> None:
    raw = encode_end_txn(EndTxnEntry(5, 1, "tx", 4, 2, True))
    for bad in (raw[:-1], raw + b"x", b"\x02" + raw[1:], raw[:5]):
        with pytest.raises(EntryError):
            decode_end_txn(bad)
    raw = encode_end_txn_outcome(EndTxnOutcomeEntry(1, Source.BROKER, 0))
    for bad in (raw[:-1], raw + b"\x00", b"\x02" + raw[1:], raw[:1] + b"\x09" + raw[2:]):
        with pytest.raises(EntryError):
            decode_end_txn_outcome(bad)


async def test_end_txn_is_durable_before_forwarding_and_its_outcome_before_the_answer() -> None:
    backend = MemoryBackend()
    async with open_wal(backend, WalConfig(segment_size=1 << 20)) as wal_:
        durable = DurableProduce(wal_)
        async with trio.open_nursery() as nursery:
            durable.attach(nursery)
            handler = DurableEndTxn(durable)
            frame = b"\x00\x00\x00\x00" + end_txn_frame(5, "tx-1", 9, 3, True, corr=11)
            req = await handler.prepare(5, 11, frame, memoryview(frame)[4:])
            assert req.local_response is None
            assert await handler.ready(req) is None  # durable: may be forwarded
            assert wal_.last_durable_lsn >= req.lsn > 0
            assert req.lsn in durable.ledger.unresolved  # holds the trim until its outcome
            handler.forwarded(req)
            answer = memoryview(end_txn_response(5, 11, 0, pid=9, epoch=4))
            payload, settlement = await handler.answered(req, 5, answer)
            assert payload is answer and settlement is not None
            await settlement  # the client's answer waits for this
            assert wal_.last_durable_lsn > req.lsn
            assert req.lsn not in durable.ledger.unresolved
            got = [(e.type, bytes(e.payload)) for e in wal_.read_from()]
            nursery.cancel_scope.cancel()
    got = [(t, p) for t, p in got if t in (END_TXN, END_TXN_OUTCOME)]
    assert [t for t, _ in got] == [END_TXN, END_TXN_OUTCOME]
    entry = decode_end_txn(got[0][1])
    assert (entry.transactional_id, entry.producer_id, entry.producer_epoch) == ("tx-1", 9, 3)
    assert entry.committed and entry.api_version == 5
    assert decode_end_txn_outcome(got[1][1]) == EndTxnOutcomeEntry(req.lsn, Source.BROKER, 0, 9, 4)


async def test_a_failed_sync_refuses_end_txn_and_fences() -> None:
    backend = MemoryBackend()
    async with open_wal(backend, WalConfig(segment_size=1 << 20)) as wal_:
        durable = DurableProduce(wal_)
        handler = DurableEndTxn(durable)
        backend.fail_next["sync"] = errno.EIO
        frame = b"\x00\x00\x00\x00" + end_txn_frame(3, "tx-2", 9, 3, False, corr=12)
        req = await handler.prepare(3, 12, frame, memoryview(frame)[4:])
        local = req.local_response or await handler.ready(req)
        assert local is not None  # answered by the proxy: never forwarded
        assert response_answer(3, local).error_code == COORDINATOR_NOT_AVAILABLE
        assert wal_.fenced
        again = await handler.prepare(3, 13, frame, memoryview(frame)[4:])
        assert again.local_response is not None  # every later one too
        assert response_answer(3, again.local_response).error_code == COORDINATOR_NOT_AVAILABLE
