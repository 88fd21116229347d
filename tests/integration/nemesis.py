"""A nemesis run (Jepsen-style): mixed faults under load against a 3-broker cluster.

Three brokers behind walproxy sidecars (RF=1 topics, a separate controller, the offloader
on, copying to moto's S3 through a fault relay) take load from an idempotent producer
(confluent-kafka), a non-idempotent one (kafka-python) and a consumer group (two
confluent-kafka members committing as they read), while a seeded schedule
(nemesis_plan.py ``make_schedule``) breaks things one or two at a time:

=============  ==========================================================================
proxy_kill     SIGKILL a sidecar, start it again on the same WAL (durability.md: in doubt)
proxy_stop     SIGSTOP a sidecar past the clients' request timeout, then SIGCONT
relay_cut      cut every sidecar-broker connection (relay.py), refuse new ones a while
s3_down        S3 answers 503, resets or stalls (tests/offload/s3relay.py)
s3_slow        every S3 response held back
broker_crash   SIGKILL a broker and drop every write it did not fsync (the lossy FUSE log
               dir, tests/faultfs), sometimes its sidecar too (a machine crash); restart
disk_wipe      SIGKILL a broker, stop its sidecar, delete its log and metadata dirs, run
               ``walproxy rebuild`` (rebuild_harness.py), start both again
wal_full       fill the sidecar's WAL volume (its own small ext4, volume.py) until the WAL
               fences on ENOSPC (or the hold ends), free it, restart a fenced sidecar
=============  ==========================================================================

Afterwards everything is healed, the producers flush, the log is read back straight from
the brokers and nemesis_check.py ``check_history`` judges it: every acknowledged record at
its acknowledged offset, in send order, no idempotent duplicates.

The FUSE layer keeps un-fsynced writes forever; a real kernel writes dirty pages back within
``vm.dirty_expire_centisecs`` (30 s). The run plays the kernel: every ``writeback_s`` each
mount is written back, and walproxy keeps acknowledged WAL entries ``wal.retention_s``
(more than ``writeback_s``), as docs/durability.md asks ("WAL retention").

Run: ``python -m tests.integration.nemesis --minutes 30`` (``make nemesis MINUTES=30``)
writes a report to ``test-artifacts/nemesis-<seed>/``; tests/integration/test_nemesis.py
runs a bounded one in ``make test``. ``--seed`` / ``WALPROXY_NEMESIS_SEED`` replays a run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from offload.store import S3Store
from proxy.dev.cluster import DevCluster, ManagedProcess
from tests.faultfs import LossyMount
from tests.offload.s3relay import S3Relay
from tests.s3server import S3_ENV, S3Server, quick_offload_env

from . import clients as c
from . import rebuild_harness as rh
from .durability import consume_all, create_topic, wait_leaders
from .load import GroupConsumer, KafkaPythonLoad, LoadProducer
from .nemesis_check import ProducerHistory, Verdict, check_history
from .nemesis_plan import KINDS, Fault, describe_schedule, make_schedule, unavailability
from .relay import Relay
from .scrape import metric
from .volume import LoopVolume

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
PARTITIONS = 6
NODES = (1, 2, 3)


@dataclass
class Options:
    seed: int
    seconds: float  # the fault phase
    kinds: tuple[str, ...] = tuple(KINDS)
    workdir: Path = ARTIFACTS / "nemesis"
    report_dir: Path | None = None
    rate_idempotent: float = 300.0  # records/s
    rate_plain: float = 100.0
    writeback_s: float = 5.0
    retention_s: float = 20.0
    sample_s: float = 5.0
    settle_s: float = 10.0  # load keeps running this long after the last fault healed


@dataclass(eq=False)
class NemesisCluster(DevCluster):
    """A DevCluster whose sidecars reach their brokers through a :class:`Relay` each."""

    relays: dict[int, Relay] = field(default_factory=dict)

    def start_proxy(self, node_id: int) -> ManagedProcess:
        node = self.node(node_id)
        if node_id not in self.relays:
            assert node.client_port is not None
            self.relays[node_id] = Relay((self.host, node.client_port))
        return super().start_proxy(node_id)

    def _proxy_config(self, node: Any) -> str:
        text = super()._proxy_config(node)
        direct = f'upstream = "{self.host}:{node.client_port}"'
        assert direct in text, text
        relayed = f'upstream = "{self.host}:{self.relays[node.node_id].port}"'
        return text.replace(direct, relayed)


@dataclass
class Executed:
    fault: Fault
    start_s: float  # actual, from the start of the fault phase
    end_s: float = -1.0
    error: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


class Faults:
    """Applies and heals each kind of fault on the running cluster."""

    def __init__(
        self,
        cluster: NemesisCluster,
        s3: S3Relay,
        mounts: dict[int, LossyMount],
        volumes: dict[int, LoopVolume],
    ) -> None:
        self.cluster, self.s3, self.mounts, self.volumes = cluster, s3, mounts, volumes
        self.mount_locks = {n: threading.Lock() for n in mounts}

    def _wait_broker(self, node_id: int) -> None:
        port = self.cluster.node(node_id).client_port
        assert port is not None
        # A rebuilt broker recovers every segment (no index files) before it listens: 20-60 s
        # here, but past 120 s on a 2-core machine at load 17 (seed 364804310's disk wipe).
        self.cluster.wait_port(port, 300)

    def _start_proxy(self, node_id: int) -> None:
        self.cluster.start_proxy(node_id)
        port = self.cluster.node(node_id).proxy_port
        assert port is not None
        self.cluster.wait_port(port, 60)

    def apply(self, f: Fault, record: Executed) -> None:
        getattr(self, f.kind)(f, record.detail)

    def proxy_kill(self, f: Fault, detail: dict[str, Any]) -> None:
        assert f.node is not None
        proxy = self.cluster.node(f.node).proxy
        assert proxy is not None
        proxy.kill()
        time.sleep(f.hold_s)
        self._start_proxy(f.node)

    def proxy_stop(self, f: Fault, detail: dict[str, Any]) -> None:
        assert f.node is not None
        proxy = self.cluster.node(f.node).proxy
        assert proxy is not None
        proxy.signal(signal.SIGSTOP)
        try:
            time.sleep(f.hold_s)
        finally:
            proxy.signal(signal.SIGCONT)

    def relay_cut(self, f: Fault, detail: dict[str, Any]) -> None:
        assert f.node is not None
        relay = self.cluster.relays[f.node]
        relay.blocked = True
        try:
            detail["connections_cut"] = relay.cut_all()
            time.sleep(f.hold_s)
        finally:
            relay.blocked = False

    def s3_down(self, f: Fault, detail: dict[str, Any]) -> None:
        self.s3.set_mode(f.option("mode") or "503")
        try:
            time.sleep(f.hold_s)
        finally:
            self.s3.set_mode("pass")

    def s3_slow(self, f: Fault, detail: dict[str, Any]) -> None:
        self.s3.delay_s = float(f.option("delay_s") or 1.0)
        try:
            time.sleep(f.hold_s)
        finally:
            self.s3.delay_s = 0.0

    def broker_crash(self, f: Fault, detail: dict[str, Any]) -> None:
        assert f.node is not None
        node = self.cluster.node(f.node)
        assert node.process is not None and node.proxy is not None
        with_proxy = f.option("with_proxy") == "yes"
        with self.mount_locks[f.node]:
            if with_proxy:
                node.proxy.kill()
            node.process.kill()
            stats = self.mounts[f.node].crash()
        detail["unsynced_write_bytes"] = stats["unsynced_write_bytes"]
        detail["dirty_files"] = stats["dirty_files"]
        time.sleep(f.hold_s)
        self.cluster.start_broker(f.node)
        if with_proxy:
            self._start_proxy(f.node)
        self._wait_broker(f.node)

    def disk_wipe(self, f: Fault, detail: dict[str, Any]) -> None:
        assert f.node is not None
        node = self.cluster.node(f.node)
        assert node.process is not None and node.proxy is not None
        node.process.kill()
        node.proxy.stop(15)
        data, meta = rh.broker_dirs(self.cluster, f.node)
        with self.mount_locks.get(f.node) or contextlib.nullcontext():
            for child in data.iterdir():  # data may be a mount point: empty it, keep it
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        shutil.rmtree(meta, ignore_errors=True)
        time.sleep(f.hold_s)
        run = rh.run_rebuild(self.cluster, node_id=f.node)
        detail["rebuild_s"] = round(run.seconds, 1)
        if run.returncode != 0 and "--allow-gaps" in run.stderr:
            # The rebuild met offsets neither S3 nor the WAL's acknowledged entries hold (in
            # doubt when the sidecar stopped) and refused, naming --allow-gaps: do what its
            # message tells the operator, keep the refusal for the report (docs/durability.md)
            detail["refused"] = run.stderr.strip().splitlines()[-1][:300]
            print(f"nemesis: rebuild of node {f.node} refused: {detail['refused']}", flush=True)
            run = rh.run_rebuild(self.cluster, "--allow-gaps", node_id=f.node)
            detail["rebuild_s"] = round(detail["rebuild_s"] + run.seconds, 1)
        if run.returncode != 0:
            raise RuntimeError(
                f"walproxy rebuild of node {f.node} exited {run.returncode}:\n"
                f"{run.stdout[-2000:]}\n{run.stderr[-3000:]}"
            )
        with contextlib.suppress(ValueError):
            report = json.loads(run.stdout[run.stdout.index("\n{") :])
            detail |= {k: report.get(k) for k in ("tail_batches", "wal_in_doubt", "s3_bytes")}
        self.cluster.start_broker(f.node)
        self._wait_broker(f.node)
        self._start_proxy(f.node)

    def wal_full(self, f: Fault, detail: dict[str, Any]) -> None:
        assert f.node is not None
        node = self.cluster.node(f.node)
        volume = self.volumes[f.node]
        detail["ballast_mib"] = round(volume.fill() / 2**20, 1)
        t0 = time.monotonic()

        def fenced_within(seconds: float) -> bool:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                time.sleep(0.5)
                if node.proxy is None or not node.proxy.alive:
                    return True  # (walproxy before the reconciler's fix exited)
                with contextlib.suppress(OSError, ValueError):
                    if metric(node.admin_port or 0, "walproxy_wal_fenced") >= 1:
                        return True
            return False

        try:
            fenced = fenced_within(f.hold_s)
        finally:
            volume.drain()
        # a segment roll already failing when the space came back fences a moment later
        fenced = fenced or fenced_within(5.0)
        detail["fenced_after_s"] = round(time.monotonic() - t0, 1) if fenced else None
        if fenced:  # it stays fenced (its /readyz fails) until the pod is restarted
            assert node.proxy is not None
            node.proxy.stop(15)
            self._start_proxy(f.node)


def run_schedule(faults: Faults, schedule: list[Fault], t0: float) -> list[Executed]:
    """Each fault on its planned start (later if what it needs is still broken: a planned
    slot can run long), at most two at a time, each in its own worker until healed."""
    done: list[Executed] = []
    running: dict[Future[None], Executed] = {}

    def reap() -> None:
        for fut in [f for f in running if f.done()]:
            rec = running.pop(fut)
            rec.end_s = round(time.monotonic() - t0, 1)
            exc = fut.exception()
            if exc is not None:
                rec.error = f"{type(exc).__name__}: {exc}"
            done.append(rec)
            outcome = f"FAILED: {rec.error}" if rec.error else "healed"
            print(
                f"nemesis: {outcome} {rec.fault.describe()} at {rec.end_s}s {rec.detail}",
                flush=True,
            )

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="nemesis") as pool:
        for f in schedule:
            while (
                time.monotonic() - t0 < f.start_s
                or len(running) >= 2
                or any(r.fault.resources & f.resources for r in running.values())
            ):
                reap()
                time.sleep(0.05)
            rec = Executed(f, round(time.monotonic() - t0, 1))
            print(f"nemesis: {rec.start_s:7.1f}s {f.describe()}", flush=True)
            running[pool.submit(faults.apply, f, rec)] = rec
        while running:
            reap()
            time.sleep(0.05)
    errors = [r for r in done if r.error]
    if errors:
        raise RuntimeError(
            "faults could not be applied or healed:\n"
            + "\n".join(f"{r.fault.describe()}: {r.error}" for r in errors)
        )
    return sorted(done, key=lambda r: r.fault.index)


class Sampler(threading.Thread):
    """Every ``interval`` s: each sidecar's RSS and open descriptors; and, every
    ``writeback`` s, each lossy mount written back (the kernel's dirty-page expiry)."""

    def __init__(
        self,
        cluster: DevCluster,
        mounts: dict[int, LossyMount],
        locks: dict[int, threading.Lock],
        interval: float,
        writeback: float,
    ) -> None:
        super().__init__(daemon=True, name="nemesis-sampler")
        self.cluster, self.mounts, self.locks = cluster, mounts, locks
        self.interval, self.writeback = interval, writeback
        self.t0 = time.monotonic()
        self.samples: list[dict[str, Any]] = []
        self._halt = threading.Event()

    def _sample(self) -> None:
        t = round(time.monotonic() - self.t0, 1)
        for node in self.cluster.broker_nodes:
            proc = node.proxy
            if proc is None or not proc.alive:
                continue
            with contextlib.suppress(psutil.Error):
                p = psutil.Process(proc.pid)
                self.samples.append(
                    {
                        "t_s": t,
                        "node": node.node_id,
                        "rss_mib": round(p.memory_info().rss / 2**20, 1),
                        "fds": p.num_fds(),
                    }
                )

    def run(self) -> None:
        next_sample = next_writeback = time.monotonic()
        while not self._halt.wait(0.2):
            now = time.monotonic()
            if now >= next_sample:
                self._sample()
                next_sample = now + self.interval
            if self.mounts and now >= next_writeback:
                for n, mount in self.mounts.items():
                    with self.locks[n], contextlib.suppress(Exception):  # a crash is on
                        mount.writeback()
                next_writeback = now + self.writeback

    def stop(self) -> None:
        self._halt.set()
        self.join(30)


def _wait_first_manifests(
    cluster: DevCluster, store: S3Store, topic: str, timeout: float = 90.0
) -> None:
    """Until every partition of ``topic`` has a committed manifest in S3. The fault phase
    starts after it: `walproxy rebuild` refuses a partition that has acknowledged batches in
    the WAL but no manifest yet ("the offload target has no manifest for this partition",
    found by this run, see docs/durability.md), so a disk wipe in a topic's first seconds
    would stop the run on that known refusal instead of looking for new trouble."""
    from offload import commit, layout
    from offload.node_files import decode_broker_info

    deadline = time.monotonic() + timeout
    missing: set[int] = set(range(PARTITIONS))
    while time.monotonic() < deadline:
        for node in cluster.broker_nodes:
            with contextlib.suppress(Exception):  # broker.json not written yet
                raw = store.get(layout.broker_key(cluster.cluster_id, node.node_id)).data
                entry = decode_broker_info(raw).topics.get(topic)
                for p in list(entry.partitions if entry is not None else []):
                    key = layout.manifest_key(cluster.cluster_id, entry.topic_id, p)
                    if commit.read_manifest(store, key).manifest is not None:
                        missing.discard(p)
        if not missing:
            return
        time.sleep(0.5)
    raise TimeoutError(f"{topic}: no manifest in S3 for partitions {sorted(missing)}")


def _check_alive(cluster: DevCluster) -> None:
    """Every fault is healed: a broker or sidecar that is not running exited by itself."""
    dead = [p for n in cluster.nodes for p in (n.process, n.proxy) if p is not None and not p.alive]
    if dead:
        raise RuntimeError(
            "exited during the run: "
            + "; ".join(f"{p.name} (log {p.log_path}):\n{p.tail(15)}" for p in dead)
        )


def _sidecar_status(cluster: DevCluster) -> dict[int, Any]:
    """Each sidecar's ``/status`` document (or why it could not be read)."""
    import urllib.request

    out: dict[int, Any] = {}
    for node in cluster.broker_nodes:
        url = f"http://{cluster.host}:{node.admin_port}/status"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                out[node.node_id] = json.loads(resp.read())
        except (OSError, ValueError) as exc:
            out[node.node_id] = f"unreachable: {exc}"
    return out


def _print_sidecar_status(cluster: DevCluster) -> None:
    """Printed when records stayed unanswered, next to the clients' own view of the stall:
    readiness, connections, the WAL (a full one makes produce wait), in-doubt batches."""
    for node_id, status in _sidecar_status(cluster).items():
        print(f"nemesis: sidecar {node_id} status: {json.dumps(status)}", flush=True)


def _sidecars_at_end(cluster: DevCluster) -> dict[str, Any]:
    """For the report: each sidecar's WAL and offload state once the run is over."""
    out: dict[str, Any] = {}
    for node_id, st in _sidecar_status(cluster).items():
        if not isinstance(st, dict):
            out[f"node-{node_id}"] = st
            continue
        wal = st.get("wal") or {}
        offload = st.get("offload") or {}
        out[f"node-{node_id}"] = {
            "ready": st.get("ready_reason"),
            "connections": st.get("connections"),
            "wal_used_mib": round((wal.get("used_bytes") or 0) / 2**20, 1),
            "wal_full": wal.get("full"),
            "wal_entries": (wal.get("last_lsn") or 0) - (wal.get("first_lsn") or 0),
            "in_doubt_batches": wal.get("in_doubt_batches"),
            "offload_max_lag_s": offload.get("max_lag_seconds"),
        }
    return out


def _leaders(bootstrap: str, topic: str) -> dict[int, int]:
    from confluent_kafka.admin import AdminClient

    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return {p: m.leader for p, m in md.topics[topic].partitions.items()}


def _affected(rec: Executed, executed: list[Executed], leaders: dict[int, int]) -> list[int]:
    """The partitions whose acks measure ``rec``: those its node leads; for an S3 fault, those
    of nodes no overlapping fault touched (all if every node was touched)."""
    if rec.fault.node is not None:
        return [p for p, leader in leaders.items() if leader == rec.fault.node]
    busy = {
        o.fault.node
        for o in executed
        if o.fault.node is not None and o.start_s < rec.end_s and rec.start_s < o.end_s
    }
    return [p for p, leader in leaders.items() if leader not in busy] or list(leaders)


def _reconciliations(cluster: DevCluster) -> dict[str, int]:
    """Summed over every sidecar's ``reconciliation done`` log lines (restarts included)."""
    total: Counter[str] = Counter()
    for node in cluster.broker_nodes:
        log = node.directory / "walproxy.log"
        for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
            if '"reconciliation done"' in line:
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    total["runs"] += 1
                    for k, v in entry.items():
                        if isinstance(v, int) and not isinstance(v, bool):
                            total[k] += v
    return dict(total)


@dataclass
class Result:
    seed: int
    schedule: list[Fault]
    executed: list[Executed]
    verdict: Verdict
    report: dict[str, Any]


@dataclass
class Environment:
    cluster: NemesisCluster
    s3relay: S3Relay
    store: S3Store  # straight to moto: the harness's view of the offloaded copy
    mounts: dict[int, LossyMount]  # node -> its broker's lossy log dir
    volumes: dict[int, LoopVolume]  # node -> its sidecar's WAL volume


@contextlib.contextmanager
def _environment(opts: Options) -> Iterator[Environment]:
    """moto S3 behind a fault relay, lossy mounts for the brokers' log dirs (when broker
    crashes are scheduled), small WAL volumes (when full ones are), the cluster; all torn
    down on exit."""
    shutil.rmtree(opts.workdir, ignore_errors=True)
    opts.workdir.mkdir(parents=True)
    with contextlib.ExitStack() as stack:
        os.environ.update(S3_ENV)  # boto3 in the sidecars and the rebuild read them
        s3 = S3Server(opts.workdir / "moto-s3.log").start()
        stack.callback(s3.stop)
        bucket = s3.new_bucket()
        relay = S3Relay((s3.host, s3.port))
        stack.callback(relay.close)
        mounts: dict[int, LossyMount] = {}
        if "broker_crash" in opts.kinds:
            for n in NODES:  # DevCluster's broker directories; log.dirs = <dir>/data
                d = opts.workdir / "cluster" / f"broker-{n}"
                mount = LossyMount(d / "data-durable", d / "data", log_path=d / "faultfs.log")
                mounts[n] = stack.enter_context(mount)
        volumes: dict[int, LoopVolume] = {}
        wal_env: dict[str, str] = {}
        if "wal_full" in opts.kinds:
            for n in NODES:  # DevCluster's WAL directory: <dir>/walproxy-wal
                d = opts.workdir / "cluster" / f"broker-{n}"
                volume = LoopVolume(d / "wal-volume.img", d / "walproxy-wal", size_mib=64)
                volumes[n] = stack.enter_context(volume)
            # 1 MiB segments: a run rolls segments, and meets a full volume soon
            wal_env = {
                "WALPROXY_WAL_SEGMENT_BYTES": str(2**20),
                "WALPROXY_WAL_MAX_BYTES": str(40 * 2**20),
            }
        env = (
            wal_env
            | quick_offload_env(relay.endpoint_url)
            | {
                "WALPROXY_WAL_RETENTION_S": str(opts.retention_s),
                "WALPROXY_OFFLOAD_MAX_LAG_S": "1",
                "WALPROXY_OFFLOAD_METADATA_INTERVAL_S": "2",
                "WALPROXY_ADMIN_UPSTREAM_CHECK_INTERVAL_S": "1",
            }
        )
        cluster = NemesisCluster(
            opts.workdir / "cluster",
            brokers=len(NODES),
            heap="512m",
            offload_targets={n: f"s3://{bucket}/kafka" for n in NODES},
            proxy_env=env,
        )
        stack.callback(lambda: [r.close() for r in cluster.relays.values()])
        stack.callback(cluster.stop)  # first: sidecars drain while their relays are up
        cluster.start()
        rh.wait_proxy_ready(cluster)
        store = S3Store(bucket, "kafka/", endpoint_url=s3.endpoint_url, region="us-east-1")
        yield Environment(cluster, relay, store, mounts, volumes)


def run(opts: Options) -> Result:
    schedule = make_schedule(opts.seed, opts.seconds, opts.kinds, nodes=NODES)
    print(describe_schedule(opts.seed, schedule), flush=True)
    started = time.monotonic()
    with _environment(opts) as env:
        cluster, mounts = env.cluster, env.mounts
        boot_s = time.monotonic() - started
        topic = create_topic(cluster.bootstrap, PARTITIONS)
        wait_leaders(cluster.direct_bootstrap, topic, PARTITIONS)
        leaders = _leaders(cluster.direct_bootstrap, topic)
        faults = Faults(cluster, env.s3relay, mounts, env.volumes)
        sampler = Sampler(cluster, mounts, faults.mount_locks, opts.sample_s, opts.writeback_s)
        sampler.start()
        group = c.unique_tag("nemesis-group")
        consumers = [
            GroupConsumer(cluster.bootstrap, group, topic, name=f"member-{i}") for i in (1, 2)
        ]
        producers: list[LoadProducer | KafkaPythonLoad] = [
            LoadProducer(
                cluster.bootstrap,
                topic,
                PARTITIONS,
                name="confluent-idempotent",
                rate=opts.rate_idempotent,
                **{"message.timeout.ms": 600_000},
            ),
            KafkaPythonLoad(
                cluster.bootstrap,
                topic,
                PARTITIONS,
                name="kafka-python",
                rate=opts.rate_plain,
                delivery_timeout_ms=600_000,
            ),
        ]
        for w in [*producers, *consumers]:
            w.start()
        healed = False
        try:
            c.wait_until(lambda: all(p.acked for p in producers), 60, "first acks")
            _wait_first_manifests(cluster, env.store, topic)
            t0 = time.monotonic()
            executed = run_schedule(faults, schedule, t0)
            _check_alive(cluster)
            rh.wait_proxy_ready(cluster, 180)
            time.sleep(opts.settle_s)
            fault_phase_s = time.monotonic() - t0
            healed = True
        finally:
            unsettled: dict[str, int] = {}
            for p in producers:
                if healed:
                    unsettled[p.name] = p.finish(300)
                else:  # the run failed already: stop, do not wait out a dead partition
                    with contextlib.suppress(Exception):  # (kafka-python: KafkaTimeoutError)
                        p.finish(5)
            for m in consumers:
                m.finish()
            sampler.stop()
            if any(unsettled.values()):
                _print_sidecar_status(cluster)
        rh.wait_proxy_ready(cluster, 180)
        sidecars_at_end = _sidecars_at_end(cluster)
        consumed = consume_all(cluster.direct_bootstrap, topic, PARTITIONS, timeout=300)
        final_commits = c.committed_offsets(cluster.direct_bootstrap, group, topic, PARTITIONS)
        acked_commits: dict[int, int] = defaultdict(lambda: -1)
        for m in consumers:
            for p, o in m.committed.items():
                acked_commits[p] = max(acked_commits[p], o)
        verdict = check_history(
            [
                ProducerHistory(
                    p.name,
                    p.idempotent,
                    p.sent,
                    p.acked,
                    len(p.errors),
                    unsettled.get(p.name, 0),
                    [e for _, e in getattr(p, "fatal", [])],
                )
                for p in producers
            ],
            consumed,
            commits_acked=dict(acked_commits),
            commits_final=final_commits,
        )
        ack_times: dict[int, list[float]] = defaultdict(list)
        for p in producers:
            for a, t in zip(p.acked, p.ack_times, strict=True):
                ack_times[a.partition].append(t - t0)
        for times in ack_times.values():
            times.sort()
        horizon = max((t[-1] for t in ack_times.values() if t), default=0.0)
        unavail = {
            rec.fault.index: round(
                unavailability(
                    ack_times, rec.start_s, rec.end_s, _affected(rec, executed, leaders), horizon
                ),
                2,
            )
            for rec in executed
        }
        report = {
            "seed": opts.seed,
            "replay": f"WALPROXY_NEMESIS_SEED={opts.seed}",
            "fault_phase_planned_s": opts.seconds,
            "fault_phase_s": round(fault_phase_s, 1),
            "cluster_start_s": round(boot_s, 1),
            "total_s": round(time.monotonic() - started, 1),
            "faults_planned": len(schedule),
            "faults_by_kind": dict(Counter(r.fault.kind for r in executed)),
            "producers": [
                {
                    "name": v.name,
                    "idempotent": v.idempotent,
                    "sent": v.sent,
                    "acked": v.acked,
                    "failed": v.failed,
                    "lost": len(v.lost),
                    "offset_mismatches": len(v.moved),
                    "duplicates": len(v.duplicates),
                    "out_of_order": len(v.out_of_order),
                    "unsettled": v.unsettled,
                    "fatal_errors": list(v.fatal),
                }
                for v in verdict.producers
            ],
            "read_back": verdict.read,
            "read_unacknowledged": verdict.unacked_extras,
            "group": {
                "consumed": sum(m.consumed for m in consumers),
                "commits_acked": dict(acked_commits),
                "commits_final": final_commits,
                "regressions": verdict.commit_regressions,
            },
            "reconciliations": _reconciliations(cluster),
            "rebuild_refusals": [r.detail["refused"] for r in executed if "refused" in r.detail],
            "faults": [
                {
                    "index": r.fault.index,
                    "kind": r.fault.kind,
                    "node": r.fault.node,
                    "options": dict(r.fault.options),
                    "planned_start_s": r.fault.start_s,
                    "hold_s": r.fault.hold_s,
                    "start_s": r.start_s,
                    "end_s": r.end_s,
                    "ack_pause_s": unavail[r.fault.index],
                    **r.detail,
                }
                for r in executed
            ],
            "leaders": leaders,
            "resources": _resource_summary(sampler.samples),
            "sidecars_at_end": sidecars_at_end,
            "ok": verdict.ok,
        }
    out = opts.report_dir or ARTIFACTS / f"nemesis-{opts.seed}"
    write_report(out, report, schedule, sampler.samples, verdict)
    (out / "acks_per_second.csv").write_text(_acks_per_second(ack_times))
    return Result(opts.seed, schedule, executed, verdict, report)


def _acks_per_second(ack_times: dict[int, list[float]]) -> str:
    """Acknowledgements per partition per second of the fault phase (pauses show as 0s)."""
    counts: Counter[tuple[int, int]] = Counter(
        (int(t), p) for p, times in ack_times.items() for t in times if t >= 0
    )
    last = max((s for s, _ in counts), default=-1)
    rows = ["t_s," + ",".join(f"p{p}" for p in range(PARTITIONS))]
    rows += [
        f"{s}," + ",".join(str(counts[(s, p)]) for p in range(PARTITIONS)) for s in range(last + 1)
    ]
    return "\n".join(rows) + "\n"


def _resource_summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n in NODES:
        mine = [s for s in samples if s["node"] == n]
        if mine:
            out[f"node-{n}"] = {
                "samples": len(mine),
                "rss_mib_first": mine[0]["rss_mib"],
                "rss_mib_max": max(s["rss_mib"] for s in mine),
                "rss_mib_last": mine[-1]["rss_mib"],
                "fds_first": mine[0]["fds"],
                "fds_max": max(s["fds"] for s in mine),
                "fds_last": mine[-1]["fds"],
            }
    return out


def write_report(
    out: Path,
    report: dict[str, Any],
    schedule: list[Fault],
    samples: list[dict[str, Any]],
    verdict: Verdict,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "resources.csv").write_text(
        "t_s,node,rss_mib,fds\n"
        + "".join(f"{s['t_s']},{s['node']},{s['rss_mib']},{s['fds']}\n" for s in samples)
    )
    lines = [
        f"# nemesis run, seed {report['seed']} ({report['replay']})",
        "",
        f"fault phase {report['fault_phase_s']} s (planned {report['fault_phase_planned_s']} s), "
        f"cluster start {report['cluster_start_s']} s, total {report['total_s']} s; "
        f"verdict: {'OK' if report['ok'] else 'FAILED'}",
        "",
        "```",
        verdict.summary(),
        "```",
        "",
        f"faults by kind: {report['faults_by_kind']}; reconciliations: {report['reconciliations']}",
        "",
        "| # | kind | node | start s | end s | longest ack pause s | detail |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in report["faults"]:
        extra = {
            k: v
            for k, v in f.items()
            if k not in ("index", "kind", "node", "planned_start_s", "start_s", "end_s")
            and k != "ack_pause_s"
        }
        lines.append(
            f"| {f['index']} | {f['kind']} | {f['node'] or 's3'} | {f['start_s']} | "
            f"{f['end_s']} | {f['ack_pause_s']} | {extra} |"
        )
    lines += ["", "Sidecar RSS and descriptors (resources.csv has every sample):", ""]
    lines += [f"- {n}: {s}" for n, s in report["resources"].items()]
    lines += ["", "Sidecars at the end (WAL, offload):", ""]
    lines += [f"- {n}: {s}" for n, s in report["sidecars_at_end"].items()]
    lines += ["", "Schedule as planned:", "", "```", describe_schedule(report["seed"], schedule)]
    lines += ["```", ""]
    (out / "report.md").write_text("\n".join(lines))
    print(f"nemesis: report in {out}", flush=True)


def seed_from_env() -> int:
    raw = os.environ.get("WALPROXY_NEMESIS_SEED", "")
    try:
        return int(raw) if raw else random.SystemRandom().randrange(1, 2**31)
    except ValueError:
        raise SystemExit(f"WALPROXY_NEMESIS_SEED must be an integer, got {raw!r}") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.integration.nemesis", description=__doc__)
    ap.add_argument("--minutes", type=float, default=3.0, help="length of the fault phase")
    ap.add_argument("--seed", type=int, help="replay this seed (else WALPROXY_NEMESIS_SEED)")
    ap.add_argument("--kinds", default=",".join(KINDS), help="fault kinds, comma-separated")
    ap.add_argument("--out", type=Path, help="report directory (test-artifacts/nemesis-SEED)")
    args = ap.parse_args(argv)
    kinds = tuple(k for k in args.kinds.split(",") if k)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        ap.error(f"--kinds: unknown {unknown} (known: {', '.join(KINDS)})")
    seed = args.seed if args.seed is not None else seed_from_env()
    workdir = ARTIFACTS / f"nemesis-work-{uuid.uuid4().hex[:6]}"
    opts = Options(seed, args.minutes * 60, kinds, workdir=workdir, report_dir=args.out)
    result = run(opts)
    print(result.verdict.summary())
    if result.verdict.ok:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"nemesis: FAILED, seed {seed}; cluster files kept in {workdir}", file=sys.stderr)
    return 0 if result.verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
