"""One client connection and its upstream connection: the proxy's hot path.

Three tasks share a connection:

* ``_client_reader`` splits client bytes into frames, makes a *slot* for every request that
  expects an answer, and forwards the frame upstream as it is;
* ``_upstream_reader`` matches each upstream response to the oldest waiting slot (Kafka answers
  a connection's requests in order), checks the correlation id and runs the API's response
  filter (version clamping, endpoint rewriting);
* ``_client_writer`` writes slots to the client strictly in request order.

The slot channel is bounded (``max_in_flight``): when it is full the reader stops reading,
so TCP back-pressures the client instead of the proxy buffering without limit. Requests that
get no answer (Produce with ``acks=0``) get no slot. Anything malformed, from either side,
closes this connection only.
"""

from __future__ import annotations

import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
import trio

from . import metrics
from .apiversions import API_VERSIONS, unsupported_version_response
from .codec import CodecError, kio_version_range
from .framing import FrameDecoder, FrameError, encode_frame, parse_request_header
from .framing import parse_response_correlation_id as response_correlation_id
from .produce_skim import PRODUCE_API_KEY, SkimError, produce_acks

log = structlog.get_logger("walproxy.connection")

#: A response filter takes the request's api version and the response payload (no size
#: prefix) and returns the payload to send on; the same object when nothing changes.
ResponseFilter = Callable[[int, memoryview], bytes | memoryview]

_READ_SIZE = 256 * 1024


class ProtocolViolation(Exception):
    """The upstream broker broke the protocol (wrong correlation id, unrequested response)."""


class UpstreamClosed(Exception):
    """The upstream broker closed the connection."""


@dataclass(frozen=True)
class ConnectionSettings:
    max_frame_bytes: int
    max_in_flight: int
    idle_timeout_s: float
    partial_frame_timeout_s: float
    response_filters: dict[int, ResponseFilter] = field(default_factory=dict)


@dataclass(slots=True, eq=False)
class _Slot:
    api_key: int
    api_version: int
    correlation_id: int
    received_at: float
    done: trio.Event = field(default_factory=trio.Event)
    response: bytes | None = None


class ProxyConnection:
    def __init__(
        self,
        client: trio.abc.Stream,
        upstream: trio.abc.Stream,
        settings: ConnectionSettings,
        *,
        peer: str = "?",
    ) -> None:
        self._client = client
        self._upstream = upstream
        self._settings = settings
        self._awaiting: deque[_Slot] = deque()
        self._outstanding = 0
        self._draining = False
        self._receive_scope: trio.CancelScope | None = None
        self._log = log.bind(peer=peer)
        max_api_versions = (kio_version_range(API_VERSIONS) or (0, 0))[1]
        self._max_api_versions = max_api_versions

    def drain(self) -> None:
        """Stop reading requests; answered ones still go out, then the connection closes."""
        self._draining = True
        if self._receive_scope is not None:
            self._receive_scope.cancel()

    async def run(self) -> None:
        send_slots, recv_slots = trio.open_memory_channel[_Slot](self._settings.max_in_flight)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._client_reader, send_slots)
                nursery.start_soon(self._upstream_reader)
                await self._client_writer(recv_slots)
                nursery.cancel_scope.cancel()
        except* FrameError as group:
            self._closed_for("malformed_frame", group.exceptions[0])
        except* (SkimError, CodecError) as group:
            self._closed_for("malformed_message", group.exceptions[0])
        except* ProtocolViolation as group:
            metrics.UPSTREAM_ERRORS.labels("protocol").inc()
            self._closed_for("upstream_protocol", group.exceptions[0])
        except* UpstreamClosed:
            metrics.UPSTREAM_ERRORS.labels("closed").inc()
            self._log.info("upstream closed the connection")
        except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as group:
            self._log.debug("connection reset", error=str(group.exceptions[0]))
        finally:
            metrics.IN_FLIGHT.dec(self._outstanding)
            self._outstanding = 0
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(self._upstream)
                await trio.aclose_forcefully(self._client)

    def _closed_for(self, reason: str, exc: BaseException) -> None:
        if reason != "upstream_protocol":
            metrics.DECODE_ERRORS.labels(reason).inc()
        self._log.warning("closing connection", reason=reason, error=str(exc))

    async def _receive(self, decoder: FrameDecoder) -> bytes | None:
        """Next chunk from the client; ``None`` on EOF, idle timeout or drain."""
        if decoder.pending:
            timeout = self._settings.partial_frame_timeout_s
        elif self._outstanding == 0:
            timeout = self._settings.idle_timeout_s
        else:
            timeout = float("inf")
        with trio.CancelScope(deadline=trio.current_time() + timeout) as scope:
            self._receive_scope = scope
            if self._draining:
                scope.cancel()
            data = await self._client.receive_some(_READ_SIZE)
            self._receive_scope = None
            return data or None
        self._receive_scope = None
        if self._draining:
            return None
        if decoder.pending:
            raise FrameError(
                f"partial frame not completed within {self._settings.partial_frame_timeout_s}s"
            )
        self._log.info("closing idle connection", idle_s=self._settings.idle_timeout_s)
        return None

    async def _client_reader(self, send_slots: trio.MemorySendChannel[_Slot]) -> None:
        decoder = FrameDecoder(self._settings.max_frame_bytes, check_tls=True)
        async with send_slots:
            while True:
                data = await self._receive(decoder)
                if data is None:
                    return
                metrics.BYTES_IN.inc(len(data))
                decoder.feed(data)
                while (frame := decoder.next_frame()) is not None:
                    await self._handle_request(frame, send_slots)

    async def _handle_request(
        self, frame: bytes, send_slots: trio.MemorySendChannel[_Slot]
    ) -> None:
        payload = memoryview(frame)[4:]
        header = parse_request_header(payload)
        metrics.REQUESTS.labels(metrics.api_label(header.api_key)).inc()
        if header.api_key == PRODUCE_API_KEY and _acks(payload) == 0:
            await self._upstream.send_all(frame)  # acks=0: the broker will not answer
            return
        slot = _Slot(header.api_key, header.api_version, header.correlation_id, time.perf_counter())
        await send_slots.send(slot)  # blocks when max_in_flight requests are outstanding
        self._outstanding += 1
        metrics.IN_FLIGHT.inc()
        if header.api_key == API_VERSIONS and header.api_version > self._max_api_versions:
            # KIP-511: answer in v0 form so the client retries with a version we know.
            slot.response = encode_frame(unsupported_version_response(header.correlation_id))
            slot.done.set()
            return
        self._awaiting.append(slot)
        await self._upstream.send_all(frame)

    async def _upstream_reader(self) -> None:
        decoder = FrameDecoder(self._settings.max_frame_bytes)
        filters = self._settings.response_filters
        while True:
            data = await self._upstream.receive_some(_READ_SIZE)
            if not data:
                raise UpstreamClosed
            decoder.feed(data)
            while (frame := decoder.next_frame()) is not None:
                payload = memoryview(frame)[4:]
                correlation_id = response_correlation_id(payload)
                if not self._awaiting:
                    raise ProtocolViolation(
                        f"unrequested response, correlation id {correlation_id}"
                    )
                slot = self._awaiting.popleft()
                if correlation_id != slot.correlation_id:
                    raise ProtocolViolation(
                        f"response correlation id {correlation_id} does not match request "
                        f"{slot.correlation_id} (api_key {slot.api_key})"
                    )
                response_filter = filters.get(slot.api_key)
                if response_filter is not None:
                    new = response_filter(slot.api_version, payload)
                    if new is not payload:
                        frame = encode_frame(new)
                slot.response = frame
                slot.done.set()

    async def _client_writer(self, recv_slots: trio.MemoryReceiveChannel[_Slot]) -> None:
        async with recv_slots:
            async for slot in recv_slots:
                await slot.done.wait()
                response = slot.response
                assert response is not None
                await self._client.send_all(response)
                self._outstanding -= 1
                metrics.IN_FLIGHT.dec()
                metrics.BYTES_OUT.inc(len(response))
                metrics.REQUEST_LATENCY.labels(metrics.api_label(slot.api_key)).observe(
                    time.perf_counter() - slot.received_at
                )


def _acks(payload: memoryview) -> int:
    try:
        return produce_acks(payload)
    except (IndexError, ValueError, struct.error) as exc:
        raise SkimError(f"cannot read acks of a produce request: {exc}") from exc
