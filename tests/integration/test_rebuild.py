"""A broker loses its disk and ``walproxy rebuild`` restores it from S3 plus the WAL tail.

One controller, one broker and its walproxy sidecar, whose offloader copies every partition
to moto's S3 server through a fault relay. Records are produced with Kafka's
VerifiableProducer through walproxy and a consumer group commits offsets; then the broker is
SIGKILLed and its whole state deleted (``log.dirs`` and ``metadata.log.dir``), ``walproxy
rebuild`` runs with the sidecar's config, and the unmodified broker starts again: every
acknowledged record must be read back at its original offset, no duplicates, the group's
committed offsets intact. The tests share the cluster and run in order (each one leaves it
rebuilt and running). The last one loses the whole node with the sidecar's WAL on S3
(``wal.backend = "s3"``): nothing local survives, the WAL tail comes from S3.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from offload import kafka_logdir as kl
from offload import layout
from offload.node_files import decode_broker_info
from offload.store import S3Store
from proxy.dev.cluster import DevCluster
from tests.offload.s3relay import S3Relay
from tests.s3server import S3Server, quick_offload_env

from . import clients as c
from . import rebuild_harness as h
from .durability import Acked, compare, consume_all, wait_leaders

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(900)]

PARTITIONS = 3


@dataclass
class Env:
    cluster: DevCluster
    store: S3Store  # straight to moto (the tests' view)
    relay: S3Relay  # what the sidecar and the rebuild go through
    bucket: str


@pytest.fixture(scope="module")
def env(s3_server: S3Server, artifacts_dir: Path) -> Iterator[Env]:
    bucket = s3_server.new_bucket()
    relay = S3Relay((s3_server.host, s3_server.port))
    cluster = DevCluster(
        artifacts_dir / "rebuild",
        brokers=1,
        separate_controller=True,
        heap="512m",
        offload_targets={1: f"s3://{bucket}/kafka"},
        proxy_env=quick_offload_env(relay.endpoint_url),
    )
    shutil.rmtree(cluster.workdir, ignore_errors=True)
    cluster.start()
    store = S3Store(bucket, "kafka/", endpoint_url=s3_server.endpoint_url, region="us-east-1")
    try:
        yield Env(cluster, store, relay, bucket)
    finally:
        cluster.stop()
        relay.close()


def _create_topic(cluster: DevCluster) -> str:
    from confluent_kafka.admin import AdminClient, NewTopic

    name = c.unique_tag("rebuild")
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    admin.create_topics([NewTopic(name, PARTITIONS, 1)])[name].result(60)
    wait_leaders(cluster.direct_bootstrap, name, PARTITIONS)
    return name


def _ends(acked: list[Acked]) -> dict[int, int]:
    return {
        p: max((a.offset + 1 for a in acked if a.partition == p), default=0)
        for p in range(PARTITIONS)
    }


def _check_restored(
    env: Env, topic: str, acked: list[Acked], group: str, committed: dict[int, int]
) -> None:
    consumed = consume_all(env.cluster.direct_bootstrap, topic, PARTITIONS, timeout=120)
    result = compare(acked, consumed)
    assert result.intact, result.summary()
    assert c.committed_offsets(env.cluster.bootstrap, group, topic, PARTITIONS) == committed


def test_headline_every_acked_record_back_at_its_offset(env: Env, tmp_path: Path) -> None:
    topic = _create_topic(env.cluster)
    acked = h.verifiable_produce(env.cluster, topic, 5000, tmp_path)
    group = c.unique_tag("grp")
    ends = _ends(acked)
    committed = {p: ends[p] // 2 for p in range(PARTITIONS)}
    h.commit_offsets(env.cluster.bootstrap, group, topic, committed)
    h.wait_offloaded(env.cluster, env.store, [topic])

    h.lose_disk(env.cluster)
    run = h.run_rebuild(env.cluster)
    report = h.report_of(run)
    assert report["s3_bytes"] > 0 and report["partitions"] >= PARTITIONS

    t0 = time.monotonic()
    h.start_again(env.cluster)
    print(
        f"rebuild {run.seconds:.1f} s ({report['mb_per_s']} MB/s); broker + sidecar ready "
        f"{time.monotonic() - t0:.1f} s later"
    )
    _check_restored(env, topic, acked, group, committed)
    consumed = consume_all(env.cluster.direct_bootstrap, topic, PARTITIONS)
    assert sum(len(v) for v in consumed.values()) == len(acked)  # not one extra
    more = h.verifiable_produce(env.cluster, topic, 30, tmp_path)  # it takes writes again,
    for p in {a.partition for a in more}:  # right after the restored offsets
        assert min(a.offset for a in more if a.partition == p) == ends[p]


def test_disk_lost_under_load_mid_offload(env: Env, tmp_path: Path) -> None:
    topic = _create_topic(env.cluster)
    group = c.unique_tag("grp")
    first = h.verifiable_produce(env.cluster, topic, 1000, tmp_path)
    committed = {p: e for p, e in _ends(first).items()}
    h.commit_offsets(env.cluster.bootstrap, group, topic, committed)
    h.wait_offloaded(env.cluster, env.store, [topic])
    producer = h.BackgroundProducer(env.cluster, topic, tmp_path, throughput=2000)
    c.wait_until(lambda: len(producer.acked()) >= 3000, 90, "3000 acks under load")
    h.lose_disk(env.cluster)  # while producing and offloading
    acked = first + producer.stop()

    report = h.report_of(h.run_rebuild(env.cluster))
    h.start_again(env.cluster)
    _check_restored(env, topic, acked, group, committed)
    print(
        f"under load: {len(acked)} acked; WAL tail {report['tail_batches']} batches, "
        f"{report['wal_in_doubt']} in doubt"
    )


def _kip848_commit(bootstrap: str, topic: str, group: str, records: int) -> dict[int, int]:
    """A KIP-848 consumer group member reads ``records`` records and commits its positions;
    returns what it was acknowledged."""
    member = c.ConfluentMember("k", group, bootstrap, topic, "consumer")
    try:
        deadline = time.monotonic() + 60
        while len(member.records) < records:
            assert time.monotonic() < deadline, f"KIP-848 member read {len(member.records)}"
            member.poll()
        member.commit()
        return c.positions(member.records, member.assignment())
    finally:
        member.close()


def test_tail_only_in_wal_missing_object_then_resume(env: Env, tmp_path: Path) -> None:
    """S3 becomes unreachable (offload stalls), more records are acknowledged and groups
    commit further (a classic group and a KIP-848 one): they exist only in the WAL. With S3
    back, the first rebuild meets a segment object that is gone and refuses; once it is
    back, a re-run keeps the partitions it finished and completes, and no group's committed
    offset is behind what the client was acknowledged."""
    topic = _create_topic(env.cluster)
    group = c.unique_tag("grp")
    group848 = c.unique_tag("grp848")
    first = h.verifiable_produce(env.cluster, topic, 1500, tmp_path)
    h.commit_offsets(env.cluster.bootstrap, group, topic, _ends(first))
    copied = h.wait_offloaded(env.cluster, env.store, [topic])
    env.relay.set_mode("stall")
    try:
        later = h.verifiable_produce(env.cluster, topic, 1500, tmp_path)
        committed = _ends(first + later)  # acknowledged while S3 sees nothing: WAL only
        h.commit_offsets(env.cluster.bootstrap, group, topic, committed)
        committed848 = _kip848_commit(env.cluster.bootstrap, topic, group848, 2000)
        h.lose_disk(env.cluster)
    finally:
        env.relay.set_mode("pass")
    acked = first + later
    assert all(copied[(topic, p)] < _ends(acked)[p] for p in range(PARTITIONS))

    # a segment of the partition rebuilt last, so the others finish before the refusal
    info = decode_broker_info(env.store.get(layout.broker_key(env.cluster.cluster_id, 1)).data)
    last = layout.partition_prefix(env.cluster.cluster_id, info.topics[topic].topic_id, 2)
    victim = next(o.key for o in env.store.list(last) if "/seg/" in o.key)
    saved = env.store.get(victim).data
    env.store.delete(victim)
    refused = h.run_rebuild(env.cluster)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "refused" in refused.stderr and victim in refused.stderr, refused.stderr
    data, _ = h.broker_dirs(env.cluster)
    assert not (data / "meta.properties").exists()  # nothing a broker would start on

    env.store.put(victim, saved)
    report = h.report_of(h.run_rebuild(env.cluster))
    assert report["skipped_finished"] > 0  # resumed, not restarted
    assert report["tail_batches"] > 0  # the records S3 never saw came from the WAL
    assert report["offset_commits_restored"] >= 2 * PARTITIONS  # so did the commits
    h.start_again(env.cluster)
    _check_restored(env, topic, acked, group, committed)
    restored848 = c.committed_offsets(env.cluster.bootstrap, group848, topic, PARTITIONS)
    assert restored848 == committed848  # not behind (nor ahead of) what was acknowledged
    print(
        f"commits only in the WAL: {report['offset_commits_acknowledged']} acknowledged "
        f"(latest per group and partition), {report['offset_commits_restored']} restored; "
        f"groups behind after the rebuild: 0 of 2"
    )


def test_transactions_only_in_the_wal_are_restored(env: Env, tmp_path: Path) -> None:
    """A transactional producer commits some transactions and aborts others through the
    single broker's sidecar while S3 is unreachable (the transactions are in the WAL only,
    their markers only in the broker's log); the disk is lost. The rebuild writes each
    transaction's marker from the EndTxn outcome the WAL recorded: afterwards a
    read_committed consumer reads every committed record once at its acknowledged offset
    and no aborted one, a read_uncommitted one reads both. Negative control: the same WAL
    without its END_TXN entries is refused."""
    import wal
    from offload import rebuild as rb
    from offload.wal_tail import collect
    from proxy.durable.wal_entries import END_TXN, END_TXN_OUTCOME

    t0 = time.monotonic()
    topic = _create_topic(env.cluster)
    tag = c.unique_tag("txn")
    first = h.plain_acked(env.cluster.bootstrap, topic, 3, tag, PARTITIONS)
    h.wait_offloaded(env.cluster, env.store, [topic])
    env.relay.set_mode("stall")
    try:
        outcomes = [True, False, True, True, False, True]
        txns = h.transactions(env.cluster.bootstrap, topic, outcomes, tag, PARTITIONS)
        h.lose_disk(env.cluster)
    finally:
        env.relay.set_mode("pass")
    produced_s = time.monotonic() - t0

    wal_dir = env.cluster.node(1).directory / "walproxy-wal"
    facts = collect(wal.read_directory(str(wal_dir)))
    ends = [e for e in facts.end_txns if e.entry.transactional_id == f"tx-{tag}"]
    assert len(ends) == len(outcomes) and all(e.outcome is not None for e in ends)
    epochs = sorted({a.producer[1] for a in facts.acked if a.transactional})
    print(
        "EndTxn as the client sent it: "
        + ", ".join(
            f"v{e.entry.api_version} epoch {e.entry.producer_epoch}"
            f"->{e.outcome.producer_epoch if e.outcome else '?'}"
            for e in ends
        )
        + f"; the transactional batches' epochs {epochs}"
    )

    # negative control: the same WAL without the EndTxn entries refuses, naming the batch
    opts = rb.RebuildOptions(log_dir=tmp_path / "unused", node_id=1)
    stripped = collect(
        e for e in wal.read_directory(str(wal_dir)) if e.type not in (END_TXN, END_TXN_OUTCOME)
    )
    with pytest.raises(rb.RebuildError, match="transactional WAL batch") as refused:
        rb.plan(env.store, opts, rb.Report(), stripped)
    assert topic in str(refused.value) and "producer id" in str(refused.value)

    run = h.run_rebuild(env.cluster)
    report = h.report_of(run)
    committed_n, aborted_n = outcomes.count(True), outcomes.count(False)
    assert report["txn_restored_committed"] == committed_n
    assert report["txn_restored_aborted"] == aborted_n
    assert report["txn_markers_written"] == len(outcomes) * PARTITIONS
    assert report["txn_batches_refused"] == 0
    t1 = time.monotonic()
    h.start_again(env.cluster)
    restarted_s = time.monotonic() - t1

    committed = consume_all(env.cluster.direct_bootstrap, topic, PARTITIONS, timeout=120)
    seen = {(p, o, v) for p, recs in committed.items() for o, v in recs}
    assert sum(len(r) for r in committed.values()) == len(seen)  # each once
    for a in first + txns.committed + txns.plain:
        assert (a.partition, a.offset, a.value) in seen, a
    aborted_values = {a.value for a in txns.aborted}
    assert not aborted_values & {v for _, _, v in seen}
    uncommitted = consume_all(
        env.cluster.direct_bootstrap, topic, PARTITIONS, isolation="read_uncommitted"
    )
    everything = {(p, o, v) for p, recs in uncommitted.items() for o, v in recs}
    for a in txns.committed + txns.aborted:
        assert (a.partition, a.offset, a.value) in everything, a
    print(
        f"transactions only in the WAL: {committed_n} committed + {aborted_n} aborted "
        f"({len(txns.committed)} + {len(txns.aborted)} records), {report['tail_batches']} "
        f"tail batches, {report['txn_markers_written']} markers written; read_committed "
        f"{len(seen)} records, aborted seen 0; produce {produced_s:.1f} s, rebuild "
        f"{run.seconds:.1f} s, broker + sidecar ready {restarted_s:.1f} s"
    )


def _open_in_s3(
    env: Env, topic: str, txn_records: list[list[Acked]], timeout: float = 60.0
) -> dict[int, tuple]:
    """Until every partition's manifest has ``next_offset`` past the transactions' records
    and lists one open transaction starting at each one's first record there (the offloader
    copies up to the high watermark, ``offload.max_lag_s`` after the write); returns the
    manifests' open transactions by partition."""
    from offload import commit
    from offload.node_files import decode_broker_info

    info = decode_broker_info(env.store.get(layout.broker_key(env.cluster.cluster_id, 1)).data)
    tid = info.topics[topic].topic_id
    want = {
        p: {min(a.offset for a in recs if a.partition == p) for recs in txn_records}
        for p in range(PARTITIONS)
    }
    past = {
        p: max(a.offset for recs in txn_records for a in recs if a.partition == p) for p in want
    }
    deadline = time.monotonic() + timeout
    seen: dict[int, tuple] = {}
    while time.monotonic() < deadline:
        for p in range(PARTITIONS):
            key = layout.manifest_key(env.cluster.cluster_id, tid, p)
            m = commit.read_manifest(env.store, key).manifest
            if m is not None and m.next_offset > past[p]:
                seen[p] = m.open_transactions
        if all({t.first_offset for t in seen.get(p, ())} == want[p] for p in want):
            return seen
        time.sleep(0.2)
    raise TimeoutError(f"manifests never listed the open transactions {want}: {seen}")


def test_a_transaction_open_at_the_end_of_the_s3_copy_is_restored(env: Env, tmp_path: Path) -> None:
    """Issue 17: two transactional producers (confluent-kafka) write their transactions'
    batches through the sidecar and the offloader copies them: the S3 copy ends between the
    batches and their markers, and each manifest lists both transactions in
    ``open_transactions``. Then S3 stalls, one transaction commits and the other aborts (the
    markers are in the broker's log only), plain records follow, the disk is lost. The
    rebuild writes both markers from the EndTxn outcomes the WAL kept (it holds a
    transactional batch until S3 has its marker): a read_committed consumer reads the
    committed records once at their acknowledged offsets, none of the aborted ones, and the
    last stable offset reaches the high watermark (no hanging transaction). Negative
    control: the same WAL and manifests planned without the open transactions leave the
    markers' offsets a hole (refused) or, with --allow-gaps, no marker: both would hang."""
    from confluent_kafka import IsolationLevel, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, OffsetSpec

    import wal
    from offload import rebuild as rb
    from offload.wal_tail import TailError, collect, plan_tail

    topic = _create_topic(env.cluster)
    tag = c.unique_tag("s3open")
    first = h.plain_acked(env.cluster.bootstrap, topic, 3, tag, PARTITIONS)
    h.wait_offloaded(env.cluster, env.store, [topic])
    records: dict[bool, list[Acked]] = {True: [], False: []}
    producers: dict[bool, Producer] = {}
    for committed in (True, False):

        def on_delivery(err: object, msg: object, out: list[Acked] = records[committed]) -> None:
            assert err is None, err
            out.append(Acked(msg.partition(), msg.offset(), msg.value()))  # type: ignore[attr-defined]

        prod = Producer(
            {
                "bootstrap.servers": env.cluster.bootstrap,
                "transactional.id": f"tx-{tag}-{committed}",
            }
        )
        prod.init_transactions(60)
        prod.begin_transaction()
        for j in range(2 * PARTITIONS):
            value = f"{tag}-{committed}-{j}".encode()
            prod.produce(topic, value=value, partition=j % PARTITIONS, on_delivery=on_delivery)
        assert prod.flush(60) == 0
        producers[committed] = prod
    del prod
    t0 = time.monotonic()
    open_at_s3_end = _open_in_s3(env, topic, list(records.values()))
    copied_s = time.monotonic() - t0
    env.relay.set_mode("stall")
    try:
        producers[True].commit_transaction(60)
        producers[False].abort_transaction(60)
        for prod in producers.values():
            prod.flush(10)
        del prod
        producers.clear()  # rd_kafka_destroy: a clean close
        after = h.plain_acked(
            env.cluster.bootstrap, topic, 2 * PARTITIONS, f"{tag}-after", PARTITIONS
        )
        h.lose_disk(env.cluster)
    finally:
        env.relay.set_mode("pass")

    # S3 still ends inside both transactions: the rebuild must end them
    assert _open_in_s3(env, topic, list(records.values()), timeout=5) == open_at_s3_end
    facts = collect(wal.read_directory(str(env.cluster.node(1).directory / "walproxy-wal")))
    opts = rb.RebuildOptions(log_dir=tmp_path / "unused", node_id=1)
    _, plans = rb.plan(env.store, opts, rb.Report(), facts)
    tails = {p.partition: p.tail for p in plans if p.topic == topic}
    for part, tail in tails.items():
        assert tail is not None and len(tail.s3_open) == 2, (part, tail and tail.s3_open)
        assert all(not isinstance(e, str) for e in tail.s3_open.values())
    # negative control: the same WAL and manifests, the open transactions not passed
    info = rb.read_broker_info(env.store, env.cluster.cluster_id, 1)
    manifests = rb.read_manifests(env.store, info, rb.Report())
    names = {t.topic_id: n for n, t in info.topics.items()}
    covered = {tp: m.next_offset for tp, (m, _) in manifests.items()}
    try:  # the markers' offsets are a hole unless they landed after every other batch
        plan_tail(facts, covered, {}, names)
        strict = "planned with no marker"
    except TailError as exc:
        assert "are neither in the S3 copy" in str(exc), exc
        strict = "refused (a hole at the markers' offsets)"
    unaware = plan_tail(facts, covered, {}, names, allow_gaps=True)
    pids = {t.producer_id for txns in open_at_s3_end.values() for t in txns}
    for part in range(PARTITIONS):
        markers = unaware[(topic, part)].markers.values()
        assert not [e for e in markers if e.producer_id in pids]  # both would hang

    run = h.run_rebuild(env.cluster)
    report = h.report_of(run)
    assert report["txn_markers_for_s3_open"] == 2 * PARTITIONS
    assert report["txn_open_unresolved"] == 0 and report["txn_batches_refused"] == 0
    assert not [w for w in report["warnings"] if "is open at" in w], report["warnings"]
    t1 = time.monotonic()
    h.start_again(env.cluster)
    restarted_s = time.monotonic() - t1

    t2 = time.monotonic()
    consumed = consume_all(env.cluster.direct_bootstrap, topic, PARTITIONS, timeout=60)
    read_s = time.monotonic() - t2
    seen = {(p, o, v) for p, recs in consumed.items() for o, v in recs}
    assert sum(len(r) for r in consumed.values()) == len(seen)  # each once
    for a in first + records[True] + after:
        assert (a.partition, a.offset, a.value) in seen, a
    assert not {a.value for a in records[False]} & {v for _, _, v in seen}
    uncommitted = consume_all(
        env.cluster.direct_bootstrap, topic, PARTITIONS, isolation="read_uncommitted"
    )
    everything = {(p, o, v) for p, recs in uncommitted.items() for o, v in recs}
    for a in records[True] + records[False]:  # both at their offsets, the markers decide
        assert (a.partition, a.offset, a.value) in everything, a
    admin = AdminClient({"bootstrap.servers": env.cluster.direct_bootstrap})
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]

    def ends(level: IsolationLevel) -> dict[int, int]:
        got = admin.list_offsets({tp: OffsetSpec.latest() for tp in tps}, isolation_level=level)
        return {tp.partition: f.result(30).offset for tp, f in got.items()}

    lso, hw = ends(IsolationLevel.READ_COMMITTED), ends(IsolationLevel.READ_UNCOMMITTED)
    assert lso == hw, (lso, hw)  # nothing hangs
    print(
        f"transactions open at the S3 end: {len(pids)} producers x {PARTITIONS} partitions, "
        f"in the manifests {copied_s:.1f} s after the last batch; "
        f"{report['txn_markers_for_s3_open']} markers for them from the WAL "
        f"({report['txn_markers_written']} in all), rebuild {run.seconds:.1f} s, broker + "
        f"sidecar ready {restarted_s:.1f} s; read_committed {len(seen)} records in "
        f"{read_s:.1f} s, aborted seen 0, LSO = HW {hw}; without the open set: {strict}"
    )


COPIER = "org.apache.kafka.tools.TransactionalMessageCopier"


def test_java_transactions_under_transaction_version_2_are_restored(env: Env) -> None:
    """The same with Kafka's Java client (4.1), which ends transactions with EndTxn v5:
    transaction.version 2 bumps the producer epoch at every end, and the markers carry the
    bumped epoch. Kafka's TransactionalMessageCopier copies a partition transactionally
    (offsets committed in each transaction, random aborts, whose records it copies again),
    entirely while S3 is unreachable; after the disk loss and the rebuild a read_committed
    consumer reads every input record exactly once in the output, and the copier's group has
    the offset its last committed transaction committed (TxnOffsetCommit, restored from the
    WAL because the same WAL proves the transaction committed). Negative control: without
    the EndTxn entries the plan leaves that offset out."""
    import wal
    from offload.offsets_tail import plan_offsets_tail
    from offload.wal_tail import collect
    from proxy.durable.wal_entries import END_TXN, END_TXN_OUTCOME

    source = _create_topic(env.cluster)
    out = _create_topic(env.cluster)
    tag = c.unique_tag("copy")
    inputs = h.plain_acked(env.cluster.bootstrap, source, 3 * 60, tag, PARTITIONS)
    want = sorted(a.value for a in inputs if a.partition == 0)
    h.wait_offloaded(env.cluster, env.store, [source, out])
    env.relay.set_mode("stall")
    try:
        t0 = time.monotonic()
        c.run_java(
            COPIER,
            *("--broker-list", env.cluster.bootstrap, "--input-topic", source),
            *("--input-partition", "0", "--output-topic", out, "--max-messages", str(len(want))),
            *("--transaction-size", "6", "--transactional-id", f"tx-{tag}"),
            *("--consumer-group", f"grp-{tag}", "--enable-random-aborts"),
            timeout=180,
        )
        copied_s = time.monotonic() - t0
        h.lose_disk(env.cluster)
    finally:
        env.relay.set_mode("pass")
    facts = collect(wal.read_directory(str(env.cluster.node(1).directory / "walproxy-wal")))
    ends = [e for e in facts.end_txns if e.entry.transactional_id == f"tx-{tag}"]
    assert ends and all(e.outcome is not None and e.outcome.error_code == 0 for e in ends)
    bumped = [
        (e.entry.producer_epoch, e.outcome.producer_epoch) for e in ends if e.outcome is not None
    ]
    print(f"Java EndTxn: v{ends[0].entry.api_version}, epochs (request -> answer) {bumped}")
    assert ends[0].entry.api_version == 5 and all(b == a + 1 for a, b in bumped)  # TV2

    group = f"grp-{tag}"
    stripped = collect(
        e
        for e in wal.read_directory(str(env.cluster.node(1).directory / "walproxy-wal"))
        if e.type not in (END_TXN, END_TXN_OUTCOME)
    )
    every_partition = set(range(10))  # hosted or not: what the plan would write
    unproven = plan_offsets_tail(stripped, every_partition, {}, 10)
    assert not [c for cs in unproven.commits.values() for c in cs if c.group_id == group]
    assert unproven.transactional_unresolved >= 1

    report = h.report_of(h.run_rebuild(env.cluster))
    assert report["offset_commits_transactional_committed"] >= 1
    commits, aborts = sum(e.entry.committed for e in ends), sum(not e.entry.committed for e in ends)
    assert report["txn_restored_committed"] == commits
    # an abort before any record was sent has no batch, so no marker (the copier aborts at
    # random points, some before its first send of the transaction)
    assert report["txn_restored_aborted"] <= aborts and report["txn_batches_refused"] == 0
    h.start_again(env.cluster)
    committed = consume_all(env.cluster.direct_bootstrap, out, PARTITIONS, timeout=120)
    assert sorted(v for recs in committed.values() for _, v in recs) == want  # each once
    uncommitted = consume_all(
        env.cluster.direct_bootstrap, out, PARTITIONS, isolation="read_uncommitted"
    )
    extra = sum(len(r) for r in uncommitted.values()) - len(want)
    # the copier's last committed transaction committed its position after every input
    assert c.committed_offsets(env.cluster.direct_bootstrap, group, source, 1) == {0: len(want)}
    print(
        f"TV2 (Java copier): group {group} at {len(want)} on {source}-0 after the rebuild "
        f"({report['offset_commits_transactional_committed']} transactional commit offsets "
        f"proven committed by the WAL, {report['offset_commits_transactional']} not written); "
        f"{commits} committed + {aborts} aborted transactions "
        f"({report['txn_restored_aborted']} aborted with batches), "
        f"{report['txn_markers_written']} markers written, {len(want)} records copied once "
        f"(read_committed), {extra} aborted copies seen by read_uncommitted only; copy "
        f"{copied_s:.1f} s"
    )


def test_whole_node_loss_with_the_wal_on_s3(env: Env, tmp_path: Path) -> None:
    """The node is lost with everything on it (broker disk, WAL, instance): with
    ``wal.backend = "s3"`` the sidecar kept no durable local state, so the acknowledged
    records the offloader had not copied yet are in the S3 WAL, and the rebuild puts them
    back. Broker and sidecar are SIGKILLed under load and every local byte of both is
    deleted; a rebuild with ``--no-wal`` first shows what S3's segments alone would lose.
    Runs last: it leaves the sidecar on the S3 WAL."""
    node = env.cluster.node(1)
    assert node.proxy is not None
    node.proxy.stop(15)  # the same node, reconfigured: its WAL on S3 from now on
    env.cluster.proxy_env.update(
        WALPROXY_WAL_BACKEND="s3", WALPROXY_WAL_S3_TARGET=f"s3://{env.bucket}/wal/node-1"
    )
    env.cluster.start_proxy(1)
    h.wait_proxy_ready(env.cluster)
    topic = _create_topic(env.cluster)
    group = c.unique_tag("grp")
    first = h.verifiable_produce(env.cluster, topic, 500, tmp_path)
    committed = _ends(first)
    h.commit_offsets(env.cluster.bootstrap, group, topic, committed)
    h.wait_offloaded(env.cluster, env.store, [topic])  # group commits are not in the WAL
    producer = h.BackgroundProducer(env.cluster, topic, tmp_path, throughput=2000)
    c.wait_until(lambda: len(producer.acked()) >= 3000, 90, "3000 acks under load")
    assert node.process is not None and node.proxy is not None
    node.process.kill()  # the whole node at once: SIGKILL both, then every local byte goes
    node.proxy.kill()
    acked = first + producer.stop()
    for local in (*h.broker_dirs(env.cluster), node.directory / "walproxy-wal"):
        shutil.rmtree(local, ignore_errors=True)

    s3_only = h.report_of(h.run_rebuild(env.cluster, "--no-wal"))
    data, _ = h.broker_dirs(env.cluster)
    hw = kl.parse_offset_checkpoint((data / kl.REPLICATION_OFFSET_CHECKPOINT).read_text())
    short = sum(e - min(e, hw.get((topic, p), 0)) for p, e in _ends(acked).items())
    assert short > 0, "the offloader had copied everything: no tail for the S3 WAL to carry"
    for d in h.broker_dirs(env.cluster):
        shutil.rmtree(d)

    run = h.run_rebuild(env.cluster)
    assert f"+ WAL s3://{env.bucket}/wal/node-1" in run.stdout, run.stdout
    report = h.report_of(run)
    assert report["tail_batches"] > 0
    h.start_again(env.cluster)
    consumed = consume_all(env.cluster.direct_bootstrap, topic, PARTITIONS, timeout=120)
    result = compare(acked, consumed)
    recovered = len(acked) - len(result.lost) - len(result.moved)
    print(
        f"whole node lost (WAL on S3): {len(acked)} records acknowledged, {recovered} "
        f"recovered at their offsets; S3 segments alone were {short} records short; WAL tail "
        f"{report['tail_batches']} batches ({s3_only['s3_bytes']} bytes from segments), "
        f"{report['wal_in_doubt']} in doubt"
    )
    assert result.intact, result.summary()
    assert c.committed_offsets(env.cluster.bootstrap, group, topic, PARTITIONS) == committed
