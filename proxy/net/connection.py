"""One client connection and its upstream connection: the proxy's hot path.

Four tasks share a connection, joined by bounded channels so that order is kept and memory
stays bounded. The upstream connection is opened by the forwarder when the first request
needs the broker, so a client that connects and sends nothing costs the broker nothing.

* ``_client_reader`` splits client bytes into frames. A Produce request goes to the
  :class:`ProduceHandler` first, which checks its batches and queues them in the WAL (in
  request order, so group commit batches them with other connections' appends).
* ``_forwarder`` takes requests in order, waits until a Produce request's WAL entries are
  durable (and until no repair is running), then sends the frame upstream unchanged.
* ``_upstream_reader`` matches each response to the oldest waiting request (Kafka answers a
  connection's requests in order), checks the correlation id and runs the API's response
  filter; a Produce response's outcome is queued in the WAL.
* ``_client_writer`` writes responses strictly in request order; a Produce response only once
  its outcome is durable, so an acknowledgement never outruns the WAL.

Offset commits (OffsetCommit, TxnOffsetCommit) go the same way through their own handler
(``commits``, the same contract): in the WAL before forwarding, answered once the broker's
outcome is durable. Only requests that are not Produce look it up, by API key. While the
``group_gate`` is closed (committed offsets are being restored), the forwarder holds every
group API (``GROUP_APIS``) before sending it, and the requests behind it on the connection;
while the ``repair_gate`` is closed (lost batches are being restored), it holds
OffsetForLeaderEpoch likewise, so the answer is filtered with the restored ranges known
(:mod:`proxy.kafka.leader_epochs`) instead of telling the client its log was truncated.

When the slot channels are full the reader stops reading and TCP back-pressures the client.
Requests with no answer (Produce with ``acks=0``) get no slot. Anything malformed, from
either side, closes this connection only.
"""

from __future__ import annotations

import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import structlog
import trio

from proxy.kafka.apiversions import (
    api_versions_v0_request,
    unsupported_version_response,
)
from proxy.kafka.codec import CodecError, kio_version_range
from proxy.kafka.commit_skim import CommitSkimError
from proxy.kafka.end_txn import EndTxnSkimError
from proxy.kafka.framing import (
    FrameDecoder,
    FrameError,
    FrameTooLarge,
    encode_frame,
    parse_request_header,
)
from proxy.kafka.framing import parse_response_correlation_id as response_correlation_id
from proxy.kafka.produce_skim import SkimError, produce_acks
from proxy.kafka.protocol import (
    API_VERSIONS,
    END_TXN,
    GROUP_APIS,
    OFFSET_COMMIT,
    OFFSET_FOR_LEADER_EPOCH,
    PRODUCE,
    TXN_OFFSET_COMMIT,
    api_name,
)
from proxy.net import metrics
from proxy.net.budget import MemoryBudget

log = structlog.get_logger("walproxy.connection")

#: A response filter takes the request's api version and the response payload (no size
#: prefix) and returns the payload to send on; the same object when nothing changes.
ResponseFilter = Callable[[int, memoryview], bytes | memoryview]

_READ_SIZE = 256 * 1024
#: A read whose room is not taken until its bytes arrive (TLS client streams).
_UNCHARGED_READ_SIZE = 16 * 1024
#: How many acks=0 produce requests may go unconfirmed before the proxy asks for a barrier.
_ACKS0_BARRIER_EVERY = 32
#: After the client has gone, how long requests already sent upstream may take to finish,
#: so their outcomes are recorded rather than left in doubt.
_FINISH_AFTER_CLIENT_GONE_S = 15.0
#: After the broker closed the connection, how long answers it sent may take to reach the client.
_FLUSH_AFTER_UPSTREAM_CLOSED_S = 5.0


class ProtocolViolation(Exception):
    """The upstream broker broke the protocol (wrong correlation id, unrequested response)."""


class UpstreamClosed(Exception):
    """The upstream broker closed the connection."""


class ClientRefused(Exception):
    """The client's request is refused in a way that must close the connection."""


class FrameTimeout(FrameError):
    """A client started a frame and did not finish it within ``partial_frame_timeout_s``."""


class UpstreamUnavailable(Exception):
    """No broker could be reached for this connection (the connector logged and counted it)."""


#: Opens this connection's upstream (broker) stream. Called once, on the client's first
#: request that needs the broker, so an idle or slow client costs the broker nothing; raises
#: :class:`UpstreamUnavailable` when no broker can be reached.
ConnectUpstream = Callable[[], Awaitable[trio.abc.Stream]]


class Gate(Protocol):
    """Held closed while a repair runs (:class:`proxy.durable.produce_path.DurableProduce`)."""

    @property
    def is_open(self) -> bool: ...

    async def wait(self) -> None: ...


class PreparedProduce(Protocol):
    """A Produce request after the handler looked at it (see :mod:`proxy.durable.produce_path`)."""

    acks: int
    #: Answer the client with this payload and forward nothing.
    local_response: bytes | None
    #: The frame to forward (the original one unless partitions were refused).
    frame: bytes


#: The handler's own type of prepared request: what ``prepare`` returns comes back to it.
P = TypeVar("P", bound=PreparedProduce)


class ProduceHandler(Protocol[P]):
    async def prepare(
        self, version: int, correlation_id: int, frame: bytes, payload: memoryview
    ) -> P: ...

    async def ready(self, prepared: P) -> bytes | None:
        """Wait until ``prepared`` may be forwarded; or return a local error response."""

    def forwarded(self, prepared: P) -> None:
        """``prepared`` was sent upstream (so it may be in the log)."""

    async def answered(
        self, prepared: P, version: int, payload: memoryview
    ) -> tuple[bytes | memoryview, Awaitable[None] | None]:
        """The payload to answer with, and the wait for the outcome's durability."""

    def proven_processed(self, prepared: list[P]) -> None:
        """acks=0 requests the broker has processed: a later response on this connection."""

    def abandoned(self, prepared: list[P]) -> None:
        """Requests sent upstream whose fate this connection will never learn."""


@dataclass(frozen=True)
class ConnectionSettings:
    max_frame_bytes: int
    max_in_flight: int
    idle_timeout_s: float
    partial_frame_timeout_s: float
    response_filters: dict[int, ResponseFilter] = field(default_factory=dict)
    #: The process-wide bound on request bytes read from clients and not yet forwarded.
    memory: MemoryBudget = field(default_factory=MemoryBudget.unbounded)
    #: What a handler raises when it can no longer make an answer durable (the WAL failed or
    #: is fenced): the connection closes without answering, a warning, not a bug's traceback.
    storage_errors: tuple[type[Exception], ...] = ()


@dataclass(slots=True, eq=False)
class _Slot(Generic[P]):
    api_key: int
    api_version: int
    correlation_id: int
    received_at: float
    done: trio.Event = field(default_factory=trio.Event)
    response: bytes | None = None
    produce: P | None = None  # prepared by ``handler`` (a Produce or an offset commit)
    handler: ProduceHandler[P] | None = None
    outcome: Awaitable[None] | None = None  # the produce outcome's WAL write
    acks0_before: list[P] = field(default_factory=list)
    internal: bool = False  # the proxy's own request: the answer is not the client's
    unwritten: bool = False  # answered by upstream, not yet written to the client

    def answer(self, payload: bytes) -> None:
        self.response = encode_frame(payload)
        self.done.set()


@dataclass(slots=True)
class _Forward(Generic[P]):
    frame: bytes
    slot: _Slot[P] | None
    produce: P | None
    size: int  # bytes read for it, given back to the memory budget once it is done
    handler: ProduceHandler[P] | None = None


class ProxyConnection(Generic[P]):
    def __init__(
        self,
        client: trio.abc.Stream,
        connect_upstream: ConnectUpstream,
        settings: ConnectionSettings,
        *,
        produce: ProduceHandler[P] | None = None,
        commits: ProduceHandler[P] | None = None,
        end_txn: ProduceHandler[P] | None = None,
        on_upstream_lost: Callable[[], None] | None = None,
        group_gate: Gate | None = None,
        repair_gate: Gate | None = None,
        peer: str = "?",
    ) -> None:
        self._group_gate = group_gate
        self._repair_gate = repair_gate
        self._on_upstream_lost = on_upstream_lost
        self._client = client
        self._connect_upstream = connect_upstream
        self._upstream: trio.abc.Stream | None = None
        self._upstream_open = trio.Event()
        self._settings = settings
        self._produce = produce
        #: The other APIs that take the durable path (offset commits, EndTxn), by API key; a
        #: Produce request never looks here.
        self._durable_apis: dict[int, ProduceHandler[P]] = (
            dict.fromkeys((OFFSET_COMMIT, TXN_OFFSET_COMMIT), commits) if commits else {}
        )
        if end_txn is not None:
            self._durable_apis[END_TXN] = end_txn
        self._awaiting: deque[_Slot[P]] = deque()
        self._acks0_forwarded: list[P] = []
        self._barrier_ids = 0  # the proxy's own requests use negative correlation ids
        #: In the WAL, outcome not yet known, and the handler that prepared it.
        self._unfinished: dict[P, ProduceHandler[P]] = {}
        self._outstanding = 0
        self._draining = False
        self._client_gone = False
        #: Responses read from upstream and not yet written to the client; when the broker
        #: closes the connection (as it does after a failed SaslAuthenticate), these still go
        #: out first, so the client sees the broker's answer and then the close, as directly.
        self._unwritten = 0
        self._unwritten_bytes = 0  # held to the per-connection memory bound
        self._written = trio.Event()
        self._receive_scope: trio.CancelScope | None = None
        self._budget = settings.memory.connection()
        #: When the frame being received must be complete (from its first byte, so bytes
        #: trickling in one at a time do not keep a started frame alive).
        self._frame_deadline: float | None = None
        self._log = log.bind(peer=peer)
        self._last_request: tuple[str, int] | None = None  # (api, correlation id), for logs
        self._max_api_versions = (kio_version_range(API_VERSIONS) or (0, 0))[1]

    def drain(self) -> None:
        """Stop reading requests; answered ones still go out, then the connection closes."""
        self._draining = True
        if self._receive_scope is not None:
            self._receive_scope.cancel()

    async def run(self) -> None:
        capacity = self._settings.max_in_flight
        fwd_send, fwd_recv = trio.open_memory_channel[_Forward[P]](capacity)
        out_send, out_recv = trio.open_memory_channel[_Slot[P]](capacity)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._client_reader, fwd_send)
                nursery.start_soon(self._forwarder, fwd_recv, out_send)
                nursery.start_soon(self._upstream_reader)
                await self._client_writer(out_recv)
                nursery.cancel_scope.cancel()
        except* FrameTooLarge as group:
            self._closed_for("frame_too_large", group.exceptions[0])
        except* FrameTimeout as group:
            self._closed_for("partial_frame_timeout", group.exceptions[0])
        except* FrameError as group:
            self._closed_for("malformed_frame", group.exceptions[0])
        except* (SkimError, CommitSkimError, EndTxnSkimError, CodecError) as group:
            self._closed_for("malformed_message", group.exceptions[0])
        except* ClientRefused as group:
            self._closed_for("refused", group.exceptions[0])
        except* ProtocolViolation as group:
            metrics.UPSTREAM_ERRORS.labels("protocol").inc()
            self._closed_for("upstream_protocol", group.exceptions[0])
        except* UpstreamUnavailable:
            pass  # logged and counted where the broker was dialled
        except* UpstreamClosed:
            metrics.UPSTREAM_ERRORS.labels("closed").inc()
            self._log.info("upstream closed the connection")
            if self._on_upstream_lost is not None:
                self._on_upstream_lost()
        except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as group:
            self._log.debug("connection reset", error=str(group.exceptions[0]))
        except* self._settings.storage_errors as group:
            self._closed_for("storage_failed", group.exceptions[0])
        except* Exception as group:
            # Anything else (a bug a parser let through) ends this connection only: what
            # was not answered is not acked, and the other connections and the server go on.
            metrics.DECODE_ERRORS.labels("internal_error").inc()
            exc = group.exceptions[0]
            api, correlation_id = self._last_request or (None, None)
            self._log.error(
                "closing connection after an unexpected error",
                error=f"{type(exc).__name__}: {exc}",
                last_api=api,
                last_correlation_id=correlation_id,
                exc_info=exc,
            )
        finally:
            metrics.IN_FLIGHT.dec(self._outstanding)
            self._outstanding = 0
            self._abandon_unanswered()
            self._budget.close()
            with trio.CancelScope(shield=True):
                if self._upstream is not None:
                    await trio.aclose_forcefully(self._upstream)
                await trio.aclose_forcefully(self._client)

    def _abandon_unanswered(self) -> None:
        by_handler: dict[int, tuple[ProduceHandler[P], list[P]]] = {}
        for prepared, handler in self._unfinished.items():
            by_handler.setdefault(id(handler), (handler, []))[1].append(prepared)
        for handler, prepared_list in by_handler.values():
            handler.abandoned(prepared_list)
        self._unfinished.clear()
        self._awaiting.clear()
        self._acks0_forwarded = []

    def _closed_for(self, reason: str, exc: BaseException) -> None:
        if reason not in ("upstream_protocol", "refused", "storage_failed"):
            metrics.DECODE_ERRORS.labels(reason).inc()
        api, correlation_id = self._last_request or (None, None)
        self._log.warning(
            "closing connection",
            reason=reason,
            error=str(exc),
            last_api=api,
            last_correlation_id=correlation_id,
        )

    # -- client -> upstream -------------------------------------------------------------
    async def _receive(self, decoder: FrameDecoder) -> bytes | bytearray | None:
        """Next chunk from the client; ``None`` on EOF, idle timeout or drain.

        Reads only what the memory budget has room for, waiting (not reading: TCP
        back-pressure) while it has none; a started frame must complete by its deadline,
        waiting included.
        """
        if decoder.pending:
            if self._frame_deadline is None:
                self._frame_deadline = trio.current_time() + self._settings.partial_frame_timeout_s
            deadline = self._frame_deadline
        elif self._outstanding == 0:
            deadline = trio.current_time() + self._settings.idle_timeout_s
        else:
            deadline = float("inf")
        with trio.CancelScope(deadline=deadline) as scope:
            self._receive_scope = scope
            if self._draining:
                scope.cancel()
            data = await self._receive_within_budget()
            self._receive_scope = None
            return data or None
        self._receive_scope = None
        if self._draining:
            return None
        if decoder.pending:
            waiting = " (reads held back: proxy.max_buffered_bytes used up)"
            raise FrameTimeout(
                f"partial frame not completed within {self._settings.partial_frame_timeout_s}s"
                + (waiting if self._budget.waiting else "")
            )
        self._log.info("closing idle connection", idle_s=self._settings.idle_timeout_s)
        return None

    async def _receive_within_budget(self) -> bytes | bytearray:
        """One read of what the memory budget has room for.

        Plain TCP waits for the client's bytes before taking room for them, so an idle
        connection holds none. A TLS stream may hold decrypted bytes its socket no longer
        shows, so it reads at once, at most :data:`_UNCHARGED_READ_SIZE`, and its bytes are
        charged as they arrive (many TLS clients sending at the same instant may pass the
        total by that much each).
        """
        if isinstance(self._client, trio.SocketStream):
            await trio.lowlevel.wait_readable(self._client.socket)
            grant = await self._budget.grant(_READ_SIZE)
            got = 0
            try:
                data = await self._client.receive_some(grant)
                got = len(data)
            finally:
                self._budget.release(grant - got)
            return data
        room = await self._budget.wait_room(_UNCHARGED_READ_SIZE)
        tls_data = await self._client.receive_some(room)
        self._budget.charge(len(tls_data))
        return tls_data

    async def _client_reader(self, fwd: trio.MemorySendChannel[_Forward[P]]) -> None:
        decoder = FrameDecoder(self._settings.max_frame_bytes, check_tls=True)
        async with fwd:
            while True:
                try:
                    data = await self._receive(decoder)
                except (trio.BrokenResourceError, OSError):
                    data = None  # a reset client: finish what is in flight, then close
                if data is None:
                    self._client_gone = not self._draining
                    return
                metrics.BYTES_IN.inc(len(data))
                decoder.feed(data)
                while (frame := decoder.next_frame()) is not None:
                    self._frame_deadline = None
                    await self._handle_request(frame, fwd)

    async def _handle_request(self, frame: bytes, fwd: trio.MemorySendChannel[_Forward[P]]) -> None:
        payload = memoryview(frame)[4:]
        header = parse_request_header(payload)
        api = api_name(header.api_key)
        metrics.REQUESTS.labels(api).inc()
        self._last_request = (api, header.correlation_id)
        now = time.perf_counter()
        if header.api_key == PRODUCE:
            prepared = None
            if self._produce is not None:
                prepared = await self._produce.prepare(
                    header.api_version, header.correlation_id, frame, payload
                )
                acks = prepared.acks
                if prepared.local_response is None:
                    self._unfinished[prepared] = self._produce
            else:
                acks = _acks(payload)
            if acks == 0:  # the broker will not answer: no slot
                await fwd.send(_Forward(frame, None, prepared, len(frame), self._produce))
                return
            slot = self._new_slot(header.api_key, header.api_version, header.correlation_id, now)
            slot.produce, slot.handler = prepared, self._produce
            if prepared is not None and prepared.local_response is not None:
                slot.answer(prepared.local_response)
            await fwd.send(_Forward(frame, slot, prepared, len(frame), self._produce))
            return
        slot = self._new_slot(header.api_key, header.api_version, header.correlation_id, now)
        durable = self._durable_apis.get(header.api_key) if self._durable_apis else None
        if durable is not None:
            prepared = await durable.prepare(
                header.api_version, header.correlation_id, frame, payload
            )
            slot.produce, slot.handler = prepared, durable
            if prepared.local_response is not None:
                slot.answer(prepared.local_response)
            else:
                self._unfinished[prepared] = durable
            await fwd.send(_Forward(frame, slot, prepared, len(frame), durable))
            return
        if header.api_key == API_VERSIONS and header.api_version > self._max_api_versions:
            # KIP-511: answer in v0 form so the client retries with a version we know.
            slot.answer(unsupported_version_response(header.correlation_id))
        await fwd.send(_Forward(frame, slot, None, len(frame)))

    def _new_slot(self, api_key: int, version: int, correlation_id: int, now: float) -> _Slot[P]:
        self._outstanding += 1
        metrics.IN_FLIGHT.inc()
        return _Slot(api_key, version, correlation_id, now)

    async def _forwarder(
        self, fwd: trio.MemoryReceiveChannel[_Forward[P]], out: trio.MemorySendChannel[_Slot[P]]
    ) -> None:
        async with fwd, out:
            async for item in fwd:
                slot, prepared = item.slot, item.produce
                if slot is not None and slot.done.is_set():  # answered locally
                    self._budget.release(item.size)
                    await out.send(slot)
                    continue
                frame = item.frame
                handler = item.handler
                if prepared is not None:
                    assert handler is not None
                    local = await handler.ready(prepared)
                    if local is not None:
                        if slot is None:
                            raise ClientRefused("acks=0 produce refused (WAL unavailable)")
                        slot.answer(local)
                        self._budget.release(item.size)
                        await out.send(slot)
                        continue
                    frame = prepared.frame
                if slot is not None and slot.api_key in GROUP_APIS:
                    gate = self._group_gate  # committed offsets are being restored
                elif slot is not None and slot.api_key == OFFSET_FOR_LEADER_EPOCH:
                    gate = self._repair_gate  # lost batches are being restored
                else:
                    gate = None
                if gate is not None and not gate.is_open:
                    await gate.wait()
                if slot is not None:
                    slot.acks0_before, self._acks0_forwarded = self._acks0_forwarded, []
                    self._awaiting.append(slot)
                elif prepared is not None:
                    self._acks0_forwarded.append(prepared)
                if prepared is not None:
                    # Before sending: its answer may be read before this task resumes, and
                    # a send that fails halfway still leaves the batch possibly in the log.
                    assert handler is not None
                    handler.forwarded(prepared)
                await (await self._upstream_stream()).send_all(frame)
                self._budget.release(item.size)
                if prepared is not None:
                    prepared.frame = b""  # the WAL has the bytes; do not hold them any longer
                if slot is not None:
                    await out.send(slot)
                elif (
                    len(self._acks0_forwarded) >= _ACKS0_BARRIER_EVERY
                    or fwd.statistics().current_buffer_used == 0
                ):
                    await self._send_barrier()  # every so often, and when a burst ends

    async def _send_barrier(self) -> None:
        """An ApiVersions request of the proxy's own after a run of acks=0 produce requests.

        Its answer proves the broker processed (and, since Kafka closes the connection on
        an acks=0 error, appended) everything sent before it, which keeps the set of
        acks=0 batches still to settle small however long the client floods.
        """
        self._barrier_ids -= 1
        slot: _Slot[P] = _Slot(
            API_VERSIONS, 0, self._barrier_ids, time.perf_counter(), internal=True
        )
        slot.acks0_before, self._acks0_forwarded = self._acks0_forwarded, []
        self._awaiting.append(slot)
        await (await self._upstream_stream()).send_all(api_versions_v0_request(self._barrier_ids))

    async def _upstream_stream(self) -> trio.abc.Stream:
        """The broker connection, opened on first use (only the forwarder sends upstream)."""
        if self._upstream is None:
            self._upstream = await self._connect_upstream()
            self._upstream_open.set()
        return self._upstream

    # -- upstream -> client -------------------------------------------------------------
    async def _upstream_reader(self) -> None:
        decoder = FrameDecoder(self._settings.max_frame_bytes)
        filters = self._settings.response_filters
        await self._upstream_open.wait()
        upstream = self._upstream
        assert upstream is not None
        bound = self._settings.memory.ledger.per_connection_limit
        while True:
            if self._unwritten_bytes >= bound:
                # The client is not reading its answers: stop reading the broker's (it then
                # stops reading this connection's requests) rather than buffer them.
                metrics.READ_WAITS.labels("responses").inc()
                while self._unwritten_bytes >= bound:
                    await self._written.wait()
                    self._written = trio.Event()
            data = await upstream.receive_some(_READ_SIZE)
            if not data:
                with trio.move_on_after(_FLUSH_AFTER_UPSTREAM_CLOSED_S):
                    while self._unwritten:
                        await self._written.wait()
                        self._written = trio.Event()
                raise UpstreamClosed
            decoder.feed(data)
            while (frame := decoder.next_frame()) is not None:
                payload = memoryview(frame)[4:]
                correlation_id = response_correlation_id(payload)
                if not self._awaiting:
                    raise ProtocolViolation(
                        f"unrequested response, correlation id {correlation_id}"
                    )
                slot = self._awaiting[0]
                if correlation_id != slot.correlation_id:
                    raise ProtocolViolation(
                        f"response correlation id {correlation_id} does not match request "
                        f"{slot.correlation_id} (api_key {slot.api_key})"
                    )
                self._awaiting.popleft()
                if slot.acks0_before:
                    assert self._produce is not None
                    self._produce.proven_processed(slot.acks0_before)
                    for done in slot.acks0_before:
                        self._unfinished.pop(done, None)
                    slot.acks0_before = []
                if slot.internal:
                    continue
                new: bytes | memoryview = payload
                if slot.produce is not None:
                    assert slot.handler is not None
                    new, slot.outcome = await slot.handler.answered(
                        slot.produce, slot.api_version, payload
                    )
                    self._unfinished.pop(slot.produce, None)
                response_filter = filters.get(slot.api_key)
                if response_filter is not None:  # after the WAL outcome: the filter may copy
                    view = new if isinstance(new, memoryview) else memoryview(new)
                    new = response_filter(slot.api_version, view)
                if new is not payload:
                    frame = encode_frame(new)
                slot.response = frame
                self._unwritten += 1
                self._unwritten_bytes += len(frame)
                slot.unwritten = True
                slot.done.set()

    async def _client_writer(self, out: trio.MemoryReceiveChannel[_Slot[P]]) -> None:
        async with out:
            async for slot in out:
                if self._client_gone:
                    # Nobody will read the answers; let outcomes be recorded, for a while.
                    with trio.move_on_after(_FINISH_AFTER_CLIENT_GONE_S):
                        await slot.done.wait()
                        if slot.outcome is not None:
                            await slot.outcome
                    self._finish(slot, 0)
                    continue
                await slot.done.wait()
                if slot.outcome is not None:
                    await slot.outcome  # WAL failure here closes the connection: no ack
                response = slot.response
                assert response is not None
                try:
                    await self._client.send_all(response)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self._client_gone = True  # finish the rest without writing
                    response = b""
                self._finish(slot, len(response))

    def _finish(self, slot: _Slot[P], sent: int) -> None:
        if slot.unwritten:
            slot.unwritten = False
            self._unwritten -= 1
            self._unwritten_bytes -= len(slot.response or b"")
            self._written.set()
        self._outstanding -= 1
        metrics.IN_FLIGHT.dec()
        if sent:
            metrics.BYTES_OUT.inc(sent)
            metrics.REQUEST_LATENCY.labels(api_name(slot.api_key)).observe(
                time.perf_counter() - slot.received_at
            )


def _acks(payload: memoryview) -> int:
    try:
        return produce_acks(payload)
    except (IndexError, ValueError, struct.error) as exc:
        raise SkimError(f"cannot read acks of a produce request: {exc}") from exc
