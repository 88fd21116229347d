"""Producers and consumers that run while a test breaks things, recording what they were told.

Every value is unique (``name-run-counter``), every acknowledgement is kept with its
(partition, offset) and when it came, so the checkers (durability.py ``compare``,
nemesis_check.py) can tell what was lost, moved, duplicated or reordered:

* :class:`LoadProducer`: confluent-kafka (librdkafka), idempotent by default;
* :class:`KafkaPythonLoad`: kafka-python, non-idempotent (``max_in_flight=1``, so its send
  order is a checkable claim);
* :class:`GroupConsumer`: a confluent-kafka consumer group member that commits as it reads
  and keeps the highest committed offset the broker acknowledged, per partition.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections import defaultdict
from typing import Any

from .durability import Acked


class _Load(threading.Thread):
    """The bookkeeping both producers share; subclasses ``_send`` one value."""

    idempotent = True

    def __init__(self, name: str, topic: str, partitions: int, rate: float | None) -> None:
        super().__init__(daemon=True, name=name)
        self.topic, self.partitions, self.rate = topic, partitions, rate
        self.acked: list[Acked] = []
        self.ack_times: list[float] = []  # time.monotonic() of each ack, as self.acked
        self.sent: dict[int, list[bytes]] = {p: [] for p in range(partitions)}
        self.errors: list[str] = []
        self._halt = threading.Event()
        self._run_id = f"{name}-{uuid.uuid4().hex[:6]}"

    def _ok(self, partition: int, offset: int, value: bytes) -> None:
        self.acked.append(Acked(partition, offset, value))
        self.ack_times.append(time.monotonic())

    def _send(self, partition: int, value: bytes) -> bool:
        raise NotImplementedError

    def _idle(self) -> None:
        """Between sends: serve callbacks."""

    def run(self) -> None:
        i = 0
        started = time.monotonic()
        while not self._halt.is_set():
            p = i % self.partitions
            value = f"{self._run_id}-{i:08d}".encode()
            if self._send(p, value):
                self.sent[p].append(value)
                i += 1
            self._idle()
            if self.rate is not None:  # paced: i records by i / rate seconds
                ahead = started + i / self.rate - time.monotonic()
                if ahead > 0:
                    self._halt.wait(ahead)
            elif i % 50 == 0:
                time.sleep(0.005)  # a steady load, not a flood

    def halt(self) -> None:
        self._halt.set()
        self.join(30)


class LoadProducer(_Load):
    """confluent-kafka (librdkafka), acks=all, idempotent unless ``enable.idempotence`` is
    given False in ``conf``, unique values, until stopped."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        partitions: int,
        *,
        name: str = "confluent",
        rate: float | None = None,
        **conf: Any,
    ) -> None:
        super().__init__(name, topic, partitions, rate)
        from confluent_kafka import Producer

        settings = {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 2,
            "message.timeout.ms": 120_000,
            "request.timeout.ms": 5000,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 500,
            "statistics.interval.ms": 5000,
            **conf,
        }
        self.idempotent = bool(settings["enable.idempotence"])
        self._settings = {**settings, "error_cb": self._error, "stats_cb": self._stats}
        #: librdkafka's latest statistics document (``stats_cb``): where a stall sits
        self.last_stats: dict[str, Any] = {}
        self._fatal: str | None = None
        #: (time.monotonic(), error) of each fatal error; the producer was replaced after it
        self.fatal: list[tuple[float, str]] = []
        self.producer = Producer(self._settings)

    def _report(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.errors.append(f"{msg.value()!r}: {err}")
        else:
            self._ok(msg.partition(), msg.offset(), msg.value())

    def _error(self, err: Any) -> None:
        if err.fatal():
            self._fatal = str(err)

    def _stats(self, raw: str) -> None:
        self.last_stats = json.loads(raw)

    def stall_report(self) -> str:
        """From the latest statistics: each broker connection's state and queues, and each
        partition with records queued or in flight (what a stuck flush waits on)."""
        st = self.last_stats
        if not st:
            return "no statistics yet"
        lines = []
        for name, b in sorted(st.get("brokers", {}).items()):
            lines.append(
                f"broker {name}: {b.get('state')} since {b.get('stateage', 0) / 1e6:.1f}s, "
                f"outbuf {b.get('outbuf_msg_cnt')}, waitresp {b.get('waitresp_msg_cnt')}, "
                f"req_timeouts {b.get('req_timeouts')}, disconnects {b.get('disconnects')}, "
                f"toppars {sorted(b.get('toppars', {}))}"
            )
        for p, tp in sorted(st.get("topics", {}).get(self.topic, {}).get("partitions", {}).items()):
            queued = tp.get("msgq_cnt", 0) + tp.get("xmit_msgq_cnt", 0)
            if queued or tp.get("msgs_inflight", 0):
                lines.append(
                    f"partition {p}: leader {tp.get('leader')} broker {tp.get('broker')}, "
                    f"msgq {tp.get('msgq_cnt')}, xmit {tp.get('xmit_msgq_cnt')}, "
                    f"inflight {tp.get('msgs_inflight')}, next_ack_seq {tp.get('next_ack_seq')}, "
                    f"next_err_seq {tp.get('next_err_seq')}, acked_msgid {tp.get('acked_msgid')}"
                )
        eos = st.get("eos")
        if eos:
            lines.append(f"idempotence: {eos}")
        return "\n".join(lines)

    def _replace_if_fatal(self) -> None:
        """A fatal error (e.g. OUT_OF_ORDER_SEQUENCE_NUMBER) ends a librdkafka producer: its
        queued records fail and it accepts no more. Do what an application does: note it,
        let the old one report its failures, go on with a new producer (a new producer id)."""
        if self._fatal is None:
            return
        from confluent_kafka import Producer

        self.fatal.append((time.monotonic(), self._fatal))
        print(f"load: {self.name}: fatal error, new producer: {self._fatal}", flush=True)
        self._fatal = None
        old, self.producer = self.producer, Producer(self._settings)
        old.flush(10)

    def _send(self, partition: int, value: bytes) -> bool:
        from confluent_kafka import KafkaException

        try:
            self.producer.produce(self.topic, value, partition=partition, on_delivery=self._report)
            return True
        except BufferError:
            self.producer.poll(0.05)
            return False
        except KafkaException as exc:  # fatal before error_cb was served: replace it now
            if not _is_fatal(exc.args[0]):
                raise
            self.producer.poll(0)  # error_cb names the error behind a local _FATAL
            self._fatal = self._fatal or str(exc.args[0])
            self._replace_if_fatal()
            return False

    def _idle(self) -> None:
        self.producer.poll(0)
        self._replace_if_fatal()

    def finish(self, timeout: float = 120.0) -> int:
        """Wait up to ``timeout`` for every record to be answered; return how many were not.
        A producer that goes fatal while flushing fails the rest (counted in ``errors``)."""
        from confluent_kafka import KafkaException

        self.halt()
        deadline = time.monotonic() + timeout
        left = 1
        while left and time.monotonic() < deadline:
            try:
                left = self.producer.flush(min(5.0, max(0.0, deadline - time.monotonic())))
            except KafkaException as exc:  # flush raises a fatal error error_cb has not seen
                if not _is_fatal(exc.args[0]):
                    raise
                self._fatal = self._fatal or str(exc.args[0])
            if self._fatal is not None:  # nothing more will be answered: fail the rest
                print(f"load: {self.name}: fatal error while flushing: {self._fatal}", flush=True)
                self.fatal.append((time.monotonic(), self._fatal))
                self.producer.purge()
                try:
                    left = self.producer.flush(10)  # the purged ones are reported as failed
                except KafkaException:
                    left = len(self.producer)
                break
        if left:
            print(
                f"load: {self.name}: {left} unanswered; librdkafka says:\n{self.stall_report()}",
                flush=True,
            )
        return left


def _is_fatal(err: Any) -> bool:
    """A fatal error, or the local ``_FATAL`` a fatal producer raises from ``produce()``
    afterwards (that one's ``fatal()`` is False: it refers to the error that made it fatal)."""
    from confluent_kafka import KafkaError

    return bool(err.fatal()) or err.code() == KafkaError._FATAL


class KafkaPythonLoad(_Load):
    """kafka-python, acks=all, not idempotent, one request in flight per connection."""

    idempotent = False

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        partitions: int,
        *,
        name: str = "kafka-python",
        rate: float | None = None,
        delivery_timeout_ms: int = 120_000,
    ) -> None:
        super().__init__(name, topic, partitions, rate)
        from kafka import KafkaProducer

        self.failed_values: set[bytes] = set()

        self.producer = KafkaProducer(
            bootstrap_servers=bootstrap.split(","),
            acks="all",
            enable_idempotence=False,
            max_in_flight_requests_per_connection=1,
            linger_ms=5,
            request_timeout_ms=5000,
            delivery_timeout_ms=delivery_timeout_ms,
            retry_backoff_ms=100,
            reconnect_backoff_ms=50,
            reconnect_backoff_max_ms=1000,
            max_block_ms=5000,
        )

    def _send(self, partition: int, value: bytes) -> bool:
        from kafka.errors import KafkaTimeoutError

        try:
            future = self.producer.send(self.topic, value, partition=partition)
        except KafkaTimeoutError:  # no metadata or no buffer within max_block_ms: again
            return False
        future.add_callback(lambda md, v=value: self._ok(md.partition, md.offset, v))
        future.add_errback(lambda exc, v=value: self._failed(v, exc))
        return True

    def _failed(self, value: bytes, exc: BaseException) -> None:
        self.errors.append(f"{value!r}: {exc!r}")
        self.failed_values.add(value)

    def unanswered_by_partition(self) -> dict[int, int]:
        """Per partition, how many sent records got neither an ack nor an error."""
        answered = {a.value for a in self.acked} | self.failed_values
        counts = {p: sum(1 for v in sent if v not in answered) for p, sent in self.sent.items()}
        return {p: n for p, n in counts.items() if n}

    def stall_report(self) -> str:
        """kafka-python's own state (private attributes, for a stall's diagnosis only): each
        broker connection with its requests in flight, each partition's leader and queue."""
        lines = []
        with contextlib.suppress(Exception):
            client = self.producer._client
            for node, conn in sorted(client._conns.items(), key=lambda kv: str(kv[0])):
                lines.append(
                    f"node {node}: {conn.host}:{conn.port} {conn.state}, "
                    f"in flight {len(conn.in_flight_requests)}"
                )
            acc, meta = self.producer._accumulator, self.producer._metadata
            for tp, batches in sorted(acc._batches.items()):
                if batches:
                    lines.append(
                        f"partition {tp.partition}: leader {meta.leader_for_partition(tp)}, "
                        f"{len(batches)} batches queued, muted {tp in acc.muted}"
                    )
        return "\n".join(lines) or "nothing to report"

    def finish(self, timeout: float = 120.0) -> int:
        """Wait up to ``timeout`` for every record to be answered; return how many were not.
        kafka-python's flush raises when records are still unanswered at the deadline: those
        are exactly what the count reports, so the verdict sees them instead of a traceback."""
        from kafka.errors import KafkaTimeoutError

        self.halt()
        try:
            self.producer.flush(timeout)
        except KafkaTimeoutError:
            print(
                f"load: {self.name}: records unanswered after {timeout:.0f} s, by partition "
                f"{self.unanswered_by_partition()}; its client says:\n{self.stall_report()}",
                flush=True,
            )
        try:
            self.producer.close(10)  # flushes again, and raises again if still stuck
        except KafkaTimeoutError:
            # kafka-python's close() cannot give up on unsent records (it flushes first,
            # even with timeout 0): stop its sender thread directly
            self.producer._sender.force_close()
        return sum(len(v) for v in self.sent.values()) - len(self.acked) - len(self.errors)


class GroupConsumer(threading.Thread):
    """A member of ``group`` reading ``topic`` and committing every ``commit_every_s``.
    ``committed`` is the highest offset per partition whose commit the broker acknowledged
    (for this member; merge the members' for the group)."""

    def __init__(
        self, bootstrap: str, group: str, topic: str, *, name: str, commit_every_s: float = 1.0
    ) -> None:
        super().__init__(daemon=True, name=name)
        from confluent_kafka import Consumer

        self.topic, self.commit_every_s = topic, commit_every_s
        self.consumed = 0
        self.errors: list[str] = []
        self.committed: dict[int, int] = defaultdict(lambda: -1)
        self._halt = threading.Event()
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "client.id": name,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 10000,
                "heartbeat.interval.ms": 1000,
                "reconnect.backoff.max.ms": 1000,
            }
        )
        self.consumer.subscribe([topic])

    def _commit(self) -> None:
        from confluent_kafka import KafkaException

        try:
            done = self.consumer.commit(asynchronous=False)
        except KafkaException as exc:  # nothing to commit, rebalancing, coordinator moving
            self.errors.append(str(exc))
            return
        for tp in done or []:
            if tp.error is None and tp.offset >= 0:
                self.committed[tp.partition] = max(self.committed[tp.partition], tp.offset)

    def run(self) -> None:
        last = time.monotonic()
        while not self._halt.is_set():
            for msg in self.consumer.consume(200, 0.3):
                if msg.error() is not None:
                    self.errors.append(str(msg.error()))
                else:
                    self.consumed += 1
            if time.monotonic() - last >= self.commit_every_s:
                self._commit()
                last = time.monotonic()
        self._commit()
        self.consumer.close()

    def finish(self) -> None:
        self._halt.set()
        self.join(60)
