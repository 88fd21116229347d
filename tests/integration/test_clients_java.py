"""The Java client (Apache Kafka 4.1.1's own tools) through walproxy against the real Kafka.

JVM starts cost 1-2 s each, so work is batched: the five ConsoleProducers of the codec test
run in parallel into one topic and one ConsoleConsumer reads them all back. Transactions use
a twenty-line Java program (run by the JDK's source launcher) on the Kafka client jars, as no
stock tool produces a deterministic commit/abort sequence.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from proxy.dev.cluster import DevCluster

from . import clients as c

pytestmark = pytest.mark.kafka

CONSOLE_PRODUCER = "org.apache.kafka.tools.ConsoleProducer"
CONSOLE_CONSUMER = "org.apache.kafka.tools.consumer.ConsoleConsumer"
VERIFIABLE_PRODUCER = "org.apache.kafka.tools.VerifiableProducer"
VERIFIABLE_CONSUMER = "org.apache.kafka.tools.VerifiableConsumer"


def _console_line(m: c.Msg) -> str:
    headers = ",".join(f"{k}:{v.decode()}" for k, v in m.headers)
    key = "NULL" if m.key is None else m.key.decode()
    return f"{headers}\t{key}\t{m.value.decode()}\n"


def console_produce(bootstrap: str, topic: str, msgs: Sequence[c.Msg], codec: str) -> Any:
    """Start a ConsoleProducer fed with ``msgs`` (keys, null keys, headers); returns the Popen."""
    proc = subprocess.Popen(
        c.java_argv(
            CONSOLE_PRODUCER,
            "--bootstrap-server",
            bootstrap,
            "--topic",
            topic,
            "--compression-codec",
            codec,
            "--producer-property",
            "acks=all",
            "--property",
            "parse.key=true",
            "--property",
            "parse.headers=true",
            "--property",
            "key.separator=\t",
            "--property",
            "null.marker=NULL",
        ),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdin is not None
    proc.stdin.write("".join(_console_line(m) for m in msgs))
    proc.stdin.close()
    return proc


def _parse_console_record(line: str) -> c.Rec:
    ts, part, off, headers, key, value = line.rstrip("\n").split("\t", 5)
    hdrs = (
        ()
        if headers == "NO_HEADERS"
        else tuple((k, v.encode()) for k, v in (h.split(":", 1) for h in headers.split(",")))
    )
    return c.Rec(
        int(part.removeprefix("Partition:")),
        int(off.removeprefix("Offset:")),
        None if key == "null" else key.encode(),
        value.encode(),
        hdrs,
        int(ts.removeprefix("CreateTime:")),
    )


def console_consume(bootstrap: str, topic: str, n: int, *, committed: bool = False) -> list[c.Rec]:
    """ConsoleConsumer reads ``n`` records from the beginning, printing every field."""
    props = ["print.timestamp", "print.partition", "print.offset", "print.headers", "print.key"]
    args = ["--bootstrap-server", bootstrap, "--topic", topic, "--from-beginning"]
    args += ["--max-messages", str(n), "--timeout-ms", "30000"]
    args += ["--isolation-level", "read_committed" if committed else "read_uncommitted"]
    for p in props:
        args += ["--property", f"{p}=true"]
    out = c.run_java(CONSOLE_CONSUMER, *args).stdout
    records = [
        _parse_console_record(line) for line in out.splitlines() if line.startswith("Create")
    ]
    assert len(records) == n, f"ConsoleConsumer printed {len(records)} records, expected {n}"
    return c.by_position(records)


def test_console_producers_every_codec(kafka: DevCluster, new_topic: Callable[..., str]) -> None:
    """Five ConsoleProducers (one per codec) into one topic; one ConsoleConsumer reads all."""
    topic = new_topic(partitions=3)
    lots = {codec: c.messages(40, f"{codec}-{topic}", 1) for codec in c.CODECS}
    procs = {codec: console_produce(kafka.bootstrap, topic, lots[codec], codec) for codec in lots}
    for codec, proc in procs.items():
        proc.wait(90)
        out = proc.stdout.read()
        assert proc.returncode == 0, f"ConsoleProducer {codec} exited {proc.returncode}:\n{out}"
    every = [m for lot in lots.values() for m in lot]
    seen = console_consume(kafka.bootstrap, topic, len(every))
    c.assert_contents(seen, every, "ConsoleConsumer through walproxy", check_partition=False)
    c.assert_dense_offsets(seen, "console codecs")
    direct = c.read_all(kafka.direct_bootstrap, topic)
    c.assert_same_records(seen, direct, "proxy vs direct")
    batches = c.stored_batches(kafka.direct_bootstrap, topic)
    for codec, lot in lots.items():
        values = {m.value for m in lot}
        mine = [r for r in direct if r.value in values]
        stored = c.codec_of_records(batches, mine)
        assert set(stored) == {c.CODEC_IDS[codec]}, (
            f"records of the {codec} ConsoleProducer were stored with codecs "
            f"{sorted(c.CODECS[i] for i in stored)}"
        )


class JavaEvents:
    """A running Verifiable* tool whose JSON event lines are collected by a thread."""

    def __init__(self, main_class: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            c.java_argv(main_class, *args),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    continue
                with self._lock:
                    self.events.append(event)

    def named(self, name: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events if e.get("name") == name]

    def records(self) -> list[c.Rec]:
        return [
            c.Rec(e["partition"], e["offset"], _b(e.get("key")), _b(e.get("value")), (), 0)
            for e in self.named("record_data")
        ]

    def assignment(self) -> set[int]:
        owned: set[int] = set()
        with self._lock:
            events = list(self.events)
        for e in events:
            parts = {p["partition"] for p in e.get("partitions", ())}
            if e.get("name") == "partitions_assigned":
                owned |= parts
            elif e.get("name") == "partitions_revoked":
                owned -= parts
        return owned

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._thread.join(5)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _b(s: str | None) -> bytes | None:
    return None if s is None else s.encode()


def _strip(records: Sequence[c.Rec]) -> list[c.Rec]:
    """Only what VerifiableConsumer reports: position, key and value."""
    return [c.Rec(r.partition, r.offset, r.key, r.value, (), 0) for r in records]


def test_verifiable_idempotent_producer_and_group(
    kafka: DevCluster, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    """VerifiableProducer (idempotent, acks=all) then VerifiableConsumers sharing a group
    (KIP-848 protocol): split, one leaves, partitions move, a restarted member resumes."""
    topic = new_topic(partitions=4)
    config = c.write_properties(
        tmp_path / "producer.properties",
        {
            "enable.idempotence": "true",
            "retries": 2147483647,  # the tool sets 0, which idempotence refuses
            "compression.type": "snappy",
            "linger.ms": 5,
        },
    )
    out = c.run_java(
        VERIFIABLE_PRODUCER,
        *("--bootstrap-server", kafka.bootstrap, "--topic", topic, "--max-messages", "400"),
        *("--acks", "-1", "--repeating-keys", "23", "--value-prefix", "7"),
        *("--producer.config", str(config)),
    ).stdout
    acked = [e for e in c.json_lines(out) if e.get("name") == "producer_send_success"]
    assert len(acked) == 400, f"{len(acked)} of 400 sends acknowledged"
    direct = _strip(c.read_all(kafka.direct_bootstrap, topic))
    assert {(e["partition"], e["offset"], e["value"]) for e in acked} == {
        (r.partition, r.offset, (r.value or b"").decode()) for r in direct
    }, "acknowledged positions differ from what the broker stored"
    c.assert_dense_offsets(direct, "VerifiableProducer")
    c.assert_idempotent_batches(kafka.direct_bootstrap, topic)

    group = c.unique_tag("java-grp")
    args = ("--bootstrap-server", kafka.bootstrap, "--topic", topic, "--group-id", group)
    args += ("--group-protocol", "consumer", "--reset-policy", "earliest", "--verbose")
    members: list[JavaEvents] = []
    try:
        a = JavaEvents(VERIFIABLE_CONSUMER, *args)
        members.append(a)
        c.wait_until(lambda: len(a.records()) >= 400, 60, "consumer a to read 400 records")
        b = JavaEvents(VERIFIABLE_CONSUMER, *args)
        members.append(b)

        def split() -> bool:
            pa, pb = a.assignment(), b.assignment()
            return bool(pa) and bool(pb) and not pa & pb and pa | pb == set(range(4))

        c.wait_until(split, 60, f"{group} to split partitions between a and b")
        owned_by_a, owned_by_b = a.assignment(), b.assignment()
        b_mark = len(b.records())
        lot2 = c.messages(40, f"{topic}-2", 4, headers=False)
        c.confluent_produce(kafka.bootstrap, topic, lot2)
        c.wait_until(
            lambda: len(a.records()) + len(b.records()) >= 440, 60, "a and b to read lot 2"
        )
        assert {r.partition for r in b.records()[b_mark:]} == owned_by_b
        assert a.stop() in (0, 143), "VerifiableConsumer a failed on SIGTERM"  # 143: JVM
        assert a.named("shutdown_complete"), "a did not report shutdown_complete"
        c.wait_until(lambda: b.assignment() == set(range(4)), 60, f"b to take over {owned_by_a}")
        b_mark = len(b.records())
        lot3 = c.messages(40, f"{topic}-3", 4, headers=False)
        c.confluent_produce(kafka.bootstrap, topic, lot3)
        c.wait_until(lambda: len(b.records()) - b_mark >= 40, 60, "b to read lot 3")
        a_end = c.positions(a.records(), owned_by_a)
        resumed = {
            p: min(r.offset for r in b.records()[b_mark:] if r.partition == p) for p in owned_by_a
        }
        assert resumed == a_end, f"b resumed a's partitions at {resumed}, a stopped at {a_end}"
        assert b.stop() in (0, 143), "VerifiableConsumer b failed on SIGTERM"
        assert b.named("shutdown_complete"), "b did not report shutdown_complete"
        assert c.committed_offsets(kafka.direct_bootstrap, group, topic, 4) == c.end_offsets(
            kafka.direct_bootstrap, topic, 4
        ), "committed offsets after a and b left are not the end offsets"

        lot4 = c.messages(20, f"{topic}-4", 4, headers=False)
        c.confluent_produce(kafka.bootstrap, topic, lot4)
        restarted = JavaEvents(VERIFIABLE_CONSUMER, *args, "--max-messages", "20")
        members.append(restarted)
        assert restarted.proc.wait(60) == 0, "restarted VerifiableConsumer failed"
        restarted._thread.join(5)
        c.assert_contents(
            restarted.records(),
            [c.Msg(m.key, m.value, (), m.partition) for m in lot4],
            "restarted member reads only what came after the commits",
        )
        consumed = a.records() + b.records() + restarted.records()
        c.assert_same_records(
            consumed, _strip(c.read_all(kafka.direct_bootstrap, topic)), "group vs direct"
        )
    finally:
        for m in members:
            m.kill()


TXN_PROGRAM = r"""
import java.io.*;
import java.util.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.header.internals.RecordHeaders;

/** stdin: BEGIN | COMMIT | ABORT | SEND <partition> <key hex|-> <value hex> <k=hex,...|-> */
public class Txn {
  static byte[] hex(String s) { return s.equals("-") ? null : HexFormat.of().parseHex(s); }
  public static void main(String[] a) throws Exception {
    Properties p = new Properties();
    p.put("bootstrap.servers", a[0]);
    p.put("transactional.id", a[2]);
    p.put("compression.type", "gzip");
    p.put("key.serializer", "org.apache.kafka.common.serialization.ByteArraySerializer");
    p.put("value.serializer", "org.apache.kafka.common.serialization.ByteArraySerializer");
    try (KafkaProducer<byte[], byte[]> pr = new KafkaProducer<>(p)) {
      pr.initTransactions();
      BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
      for (String line; (line = in.readLine()) != null; ) {
        String[] f = line.split(" ");
        switch (f[0]) {
          case "BEGIN" -> pr.beginTransaction();
          case "COMMIT" -> pr.commitTransaction();
          case "ABORT" -> { pr.flush(); pr.abortTransaction(); }
          default -> {
            RecordHeaders h = new RecordHeaders();
            if (!f[4].equals("-"))
              for (String kv : f[4].split(",")) {
                String[] x = kv.split("=", -1);
                h.add(new String(hex(x[0])), x[1].isEmpty() ? new byte[0] : hex(x[1]));
              }
            pr.send(new ProducerRecord<>(a[1], Integer.parseInt(f[1]), null, hex(f[2]),
                hex(f[3]), h));
          }
        }
      }
    }
    System.out.println("DONE");
  }
}
"""


def _txn_line(m: c.Msg) -> str:
    headers = ",".join(f"{k.encode().hex()}={v.hex()}" for k, v in m.headers) or "-"
    key = "-" if m.key is None else m.key.hex()
    return f"SEND {m.partition} {key} {m.value.hex()} {headers}\n"


def java_txn_runner(workdir: Path, bootstrap: str, topic: str) -> Callable[[c.TxnPlan], None]:
    """Plays a transaction plan with the Java KafkaProducer (one JVM per plan)."""
    program = workdir / "Txn.java"
    program.write_text(TXN_PROGRAM)

    def run(plan: c.TxnPlan) -> None:
        script = "".join(
            "BEGIN\n" + "".join(_txn_line(m) for m in msgs) + ("COMMIT\n" if ok else "ABORT\n")
            for msgs, ok in plan
        )
        out = c.run_java(
            str(program), bootstrap, topic, c.unique_tag("java-txn"), stdin=script
        ).stdout
        assert "DONE" in out, out

    return run


def test_transactions_commit_and_abort(
    kafka: DevCluster, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    """KafkaProducer transactions (Java client) and ConsoleConsumer in both isolation levels."""
    topic = new_topic(partitions=2)
    run = java_txn_runner(tmp_path, kafka.bootstrap, topic)

    def consume(n: int, committed: bool) -> list[c.Rec]:
        return console_consume(kafka.bootstrap, topic, n, committed=committed)

    c.transaction_scenario(run, consume, kafka.direct_bootstrap, topic, 2, "java")


def test_admin_tools(kafka: DevCluster) -> None:
    """TopicCommand, ConsumerGroupCommand and ClusterTool through walproxy."""
    topic = c.unique_tag("java-admin")
    boot = ("--bootstrap-server", kafka.bootstrap)
    c.run_java(
        "org.apache.kafka.tools.TopicCommand",
        *boot,
        *("--create", "--topic", topic, "--partitions", "3", "--replication-factor", "1"),
        *("--config", "max.message.bytes=200000"),
    )
    described = c.run_java(
        "org.apache.kafka.tools.TopicCommand", *boot, "--describe", "--topic", topic
    ).stdout
    assert f"Topic: {topic}" in described and "PartitionCount: 3" in described, described
    assert "max.message.bytes=200000" in described, described
    assert described.count("Leader: 1") == 3, described

    group = c.unique_tag("java-admin-grp")
    c.confluent_produce(kafka.bootstrap, topic, c.messages(30, topic, 3))
    c.confluent_consume(kafka.bootstrap, topic, 30, group=group)
    groups = c.run_java(
        "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand", *boot, "--list"
    ).stdout.split()
    assert group in groups, f"{group} not in {groups}"
    offsets = c.run_java(
        "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
        *boot,
        *("--describe", "--group", group, "--offsets"),
    ).stdout
    rows = [line.split() for line in offsets.splitlines() if line.startswith(group)]
    assert sorted((int(r[2]), int(r[3]), int(r[4]), int(r[5])) for r in rows) == [
        (p, 10, 10, 0) for p in range(3)
    ], offsets  # partition, current offset, log end offset, lag

    cluster_id = c.run_java("org.apache.kafka.tools.ClusterTool", "cluster-id", *boot).stdout
    assert f"Cluster ID: {kafka.cluster_id}" in cluster_id, cluster_id

    c.run_java("org.apache.kafka.tools.TopicCommand", *boot, "--delete", "--topic", topic)
    c.wait_until(
        lambda: topic
        not in c.run_java("org.apache.kafka.tools.TopicCommand", *boot, "--list").stdout.split(),
        30,
        f"{topic} to disappear from --list",
    )
