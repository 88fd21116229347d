"""kcat (librdkafka 2.0.2, built with gzip, snappy, lz4 and zstd) through walproxy.

kcat sets the same ``-H`` headers on every message it produces and takes keys from each line
(``-K:``; a line without the delimiter has a null key). Its transactional producer commits
at the end of its input; it has no deterministic way to abort, so only commit is covered.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from proxy.dev.cluster import DevCluster

from . import clients as c

pytestmark = pytest.mark.kafka

KCAT = shutil.which("kcat") or "/usr/bin/kcat"
HEADERS: c.Headers = (("origin", b"kcat"), ("dup", b"a"), ("dup", b""))


def kcat_messages(n: int, tag: str) -> list[c.Msg]:
    """Messages kcat can send: the shared headers, the partition left to its partitioner."""
    return [c.Msg(m.key, m.value, HEADERS, 0) for m in c.messages(n, tag, headers=False)]


def kcat(*args: str, stdin: str | None = None, timeout: float = 60) -> str:
    proc = subprocess.run(
        [KCAT, *args], input=stdin, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"kcat {' '.join(args)} exited {proc.returncode}: {proc.stderr}"
    return proc.stdout


def kcat_produce(bootstrap: str, topic: str, msgs: Sequence[c.Msg], *extra: str) -> None:
    lines = "".join(
        (m.value.decode() if m.key is None else f"{m.key.decode()}:{m.value.decode()}") + "\n"
        for m in msgs
    )
    headers = [a for k, v in HEADERS for a in ("-H", f"{k}={v.decode()}")]
    kcat("-P", "-b", bootstrap, "-t", topic, "-K:", *headers, *extra, stdin=lines)


def _rec(event: dict[str, Any]) -> c.Rec:
    hdrs = event.get("headers") or []
    return c.Rec(
        event["partition"],
        event["offset"],
        None if event["key"] is None else event["key"].encode(),
        None if event["payload"] is None else event["payload"].encode(),
        tuple((hdrs[i], (hdrs[i + 1] or "").encode()) for i in range(0, len(hdrs), 2)),
        event["ts"],
    )


def kcat_read(bootstrap: str, topic: str, *extra: str) -> list[c.Rec]:
    """Every record of ``topic`` from the beginning to the end (``-e``), as JSON."""
    out = kcat("-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e", "-J", "-q", *extra)
    return c.by_position(_rec(json.loads(line)) for line in out.splitlines() if line.strip())


@pytest.mark.parametrize("codec", c.CODECS)
def test_produce_consume_every_codec(
    kafka: DevCluster, new_topic: Callable[..., str], codec: str
) -> None:
    topic = new_topic(partitions=3)
    msgs = kcat_messages(150, topic)
    kcat_produce(kafka.bootstrap, topic, msgs, "-z", codec, "-X", "acks=all")
    seen = kcat_read(kafka.bootstrap, topic)
    c.assert_contents(seen, msgs, f"kcat {codec}", check_partition=False)
    c.assert_dense_offsets(seen, f"kcat {codec}")
    c.assert_same_records(seen, c.read_all(kafka.direct_bootstrap, topic), "proxy vs direct")
    c.assert_stored_codec(kafka.direct_bootstrap, topic, codec)


def test_idempotent_and_transactional_producer(
    kafka: DevCluster, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=2)
    plain = kcat_messages(60, f"{topic}-idem")
    kcat_produce(kafka.bootstrap, topic, plain, "-X", "enable.idempotence=true", "-z", "lz4")
    c.assert_idempotent_batches(kafka.direct_bootstrap, topic)
    txn = kcat_messages(60, f"{topic}-txn")
    kcat_produce(kafka.bootstrap, topic, txn, "-X", f"transactional.id={c.unique_tag('kcat')}")
    c.wait_stable(kafka.direct_bootstrap, topic, 2)
    committed = kcat_read(kafka.bootstrap, topic, "-X", "isolation.level=read_committed")
    c.assert_contents(committed, plain + txn, "kcat read_committed", check_partition=False)
    direct = c.read_all(kafka.direct_bootstrap, topic, committed=True)
    c.assert_same_records(committed, direct, "read_committed: proxy vs direct")
    batches = c.stored_batches(kafka.direct_bootstrap, topic)
    txn_values = {m.value for m in txn}
    txn_offsets = {(r.partition, r.offset) for r in direct if r.value in txn_values}
    for b in batches:
        holds_txn = any(
            (b.partition, o) in txn_offsets for o in range(b.base_offset, b.last_offset + 1)
        )
        assert b.transactional == (holds_txn or b.control), f"unexpected batch flags {b}"
    touched = {p for p, _ in txn_offsets}
    assert sum(b.control for b in batches) == len(touched), "one commit marker per partition"


class KcatMember:
    """A ``kcat -G`` balanced consumer: records from stdout, assignment from stderr."""

    ASSIGN = re.compile(r"rebalanced \(memberid [^)]*\): (assigned|revoked): (.*)$")

    def __init__(self, bootstrap: str, group: str, topic: str, *extra: str) -> None:
        # no "-o": kcat would then seek every assigned partition there, ignoring commits
        extra = ("-X", "auto.offset.reset=earliest", *extra)
        self.topic = topic
        self.proc = subprocess.Popen(
            [KCAT, "-b", bootstrap, "-G", group, "-J", "-u", *extra, topic],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._records: list[c.Rec] = []
        self._owned: set[int] = set()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._out, daemon=True),
            threading.Thread(target=self._err, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{") and line.endswith("}\n"):  # -u: unbuffered, whole lines
                with self._lock:
                    self._records.append(_rec(json.loads(line)))

    def _err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            m = self.ASSIGN.search(line.strip())
            if m:
                parts = {int(p) for p in re.findall(r"\[(\d+)\]", m.group(2))}
                with self._lock:
                    if m.group(1) == "assigned":
                        self._owned |= parts
                    else:
                        self._owned -= parts

    def records(self) -> list[c.Rec]:
        with self._lock:
            return list(self._records)

    def assignment(self) -> set[int]:
        with self._lock:
            return set(self._owned)

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        for t in self._threads:
            t.join(5)
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_balanced_consumer_group(kafka: DevCluster, new_topic: Callable[..., str]) -> None:
    """Two ``kcat -G`` members split partitions; one leaves; a restarted member resumes."""
    topic = new_topic(partitions=4)
    group = c.unique_tag("kcat-grp")
    every = set(range(4))
    lot1, lot2, lot3, lot4 = (
        kcat_messages(n, f"{topic}-{i}") for i, n in enumerate((40, 40, 40, 20))
    )
    members: list[KcatMember] = []
    try:
        kcat_produce(kafka.bootstrap, topic, lot1)
        a = KcatMember(kafka.bootstrap, group, topic, "-X", "auto.commit.interval.ms=200")
        members.append(a)
        c.wait_until(lambda: len(a.records()) >= 40, 30, "kcat a to read lot 1")
        b = KcatMember(kafka.bootstrap, group, topic, "-X", "auto.commit.interval.ms=200")
        members.append(b)

        def split() -> bool:
            pa, pb = a.assignment(), b.assignment()
            return bool(pa) and bool(pb) and not pa & pb and pa | pb == every

        c.wait_until(split, 60, f"{group} to split partitions between two kcat members")
        owned_by_b = b.assignment()
        b_mark = len(b.records())
        kcat_produce(kafka.bootstrap, topic, lot2)
        c.wait_until(
            lambda: {r.value for r in a.records() + b.records()} >= {m.value for m in lot2},
            30,
            "kcat a and b to read lot 2",
        )
        assert {r.partition for r in b.records()[b_mark:]} <= owned_by_b
        assert a.stop() == 0, "kcat a did not exit 0 on SIGTERM"
        c.wait_until(lambda: b.assignment() == every, 60, "kcat b to own all partitions")
        kcat_produce(kafka.bootstrap, topic, lot3)
        c.wait_until(
            lambda: {r.value for r in b.records()} >= {m.value for m in lot3},
            30,
            "kcat b to read lot 3",
        )
        assert b.stop() == 0, "kcat b did not exit 0 on SIGTERM"
        consumed = a.records() + b.records()
        c.assert_contents(consumed, lot1 + lot2 + lot3, "kcat members", check_partition=False)
        assert c.committed_offsets(kafka.direct_bootstrap, group, topic, 4) == c.end_offsets(
            kafka.direct_bootstrap, topic, 4
        ), "kcat's final commits are not the end offsets"

        kcat_produce(kafka.bootstrap, topic, lot4)
        restarted = KcatMember(kafka.bootstrap, group, topic, "-e")
        members.append(restarted)
        assert restarted.proc.wait(60) == 0, "kcat -G -e did not reach the end and exit"
        restarted.stop()  # joins the reader threads
        c.assert_contents(
            restarted.records(), lot4, "restarted kcat resumes at commits", check_partition=False
        )
        c.assert_same_records(
            consumed + restarted.records(),
            c.read_all(kafka.direct_bootstrap, topic),
            "kcat group vs direct",
        )
    finally:
        for m in members:
            m.kill()


def test_metadata_and_offset_queries(kafka: DevCluster, new_topic: Callable[..., str]) -> None:
    """``kcat -L`` shows only walproxy addresses; ``-Q`` finds offsets by timestamp."""
    topic = new_topic(partitions=2)
    kcat_produce(kafka.bootstrap, topic, kcat_messages(20, topic))
    md = json.loads(kcat("-L", "-b", kafka.bootstrap, "-t", topic, "-J"))
    assert {b["name"] for b in md["brokers"]} == {
        f"{kafka.host}:{n.advertised_port}" for n in kafka.broker_nodes
    }
    (t,) = md["topics"]
    assert sorted(p["partition"] for p in t["partitions"]) == [0, 1]
    direct = c.read_all(kafka.direct_bootstrap, topic)
    target = direct[len(direct) // 2]
    out = kcat("-Q", "-b", kafka.bootstrap, "-t", f"{topic}:{target.partition}:{target.timestamp}")
    m = re.search(rf"{re.escape(topic)} \[{target.partition}\] offset (\d+)", out)
    assert m, out
    first_at_ts = min(
        r.offset
        for r in direct
        if r.partition == target.partition and r.timestamp >= target.timestamp
    )
    assert int(m.group(1)) == first_at_ts
