"""franz-go's own kgo integration suite, unchanged, through walproxy (issue 15, item 1).

Someone else's tests of a Kafka client, run three times with the same settings: against the
shared broker directly, through a walproxy sidecar in front of it (``OwnProxy``, its own WAL),
and through walproxy in gateway mode in front of 3 brokers. Every test that passes directly
must pass through walproxy (a test skipped through walproxy but not directly counts as not
passing); tests that cannot run against this Kafka (share groups need 4.2, SCRAM and OAUTH
need a second listener the suite is not given) are listed with franz-go's own reason; a
test whose own check races on several brokers (``MULTI_BROKER_RACES``) runs through the
gateway but is not judged there, with the reason printed.
Per-test durations are printed; a run through walproxy taking more than 3x the direct one
fails (a regression guard, not a benchmark: both modes are held to the direct run on the
single broker, so the gateway's ratio also holds its 3 brokers' share of the same 2 cores).
Afterwards every batch walproxy acknowledged must be in the brokers' log at its acknowledged
offset, once (``wal_vs_log``). franz-go's SASL tests run on their own, against the 3 brokers'
SASL listener directly and through a gateway.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.dev.cluster import DevCluster

from . import franz_go, wal_vs_log
from .gateway_process import Gateway
from .proxy_process import OwnProxy

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(900)]

MAX_SLOWDOWN = 3.0
#: v1.22.3 against Kafka 4.1.1: 147 pass, 9 skip (share groups, SCRAM, OAUTH, produce v2).
MIN_PASSED_DIRECTLY = 140
#: Tests whose own check races on a cluster of several brokers, so the gateway's 3 brokers
#: cannot judge them (they fail directly against those brokers too). Each still has to run.
MULTI_BROKER_RACES = {
    # It polls until it has seen records from as many topics as it wants, and the broker's
    # regex resolution also assigns it __consumer_offsets, which holds records once earlier
    # tests committed: when the fetch carrying __consumer_offsets and one wanted topic comes
    # back before the other broker's, it stops short. Directly against the 3 brokers after
    # a suite run it failed 1 of 6 tries (through the gateway 1 of 6); on one broker a
    # single fetch carries every topic.
    "Test848RegexBrokerResolves": "stops polling once it has seen len(want) topics, counting "
    "__consumer_offsets; races on several brokers, directly too",
}
#: WAL entries must outlive the run and the check (the default trims after 60 s).
KEEP_WAL = {"WALPROXY_WAL_RETENTION_S": "86400"}


def _dev(kafka: object) -> DevCluster:
    if not isinstance(kafka, DevCluster):
        # WALPROXY_TEST_KAFKA=testcontainers (not CI's mode): that broker keeps its log dirs
        # inside its container, and the WAL-vs-log check reads them from this host.
        pytest.skip("needs the jar-based cluster: the WAL-vs-log check reads its log dirs")
    return kafka


def _ids(cluster: DevCluster) -> list[int]:
    return [n.node_id for n in cluster.broker_nodes]


@pytest.fixture(scope="module")
def workdir(artifacts_dir: Path) -> Path:
    path = artifacts_dir / "franz-go"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


@pytest.fixture(scope="module")
def one_broker(kafka: object) -> Iterator[DevCluster]:
    cluster = _dev(kafka)
    with wal_vs_log.keep_deleted_logs(cluster.direct_bootstrap, _ids(cluster)):
        yield cluster


@pytest.fixture(scope="module")
def direct(one_broker: DevCluster, workdir: Path) -> franz_go.SuiteRun:
    run = franz_go.run_suite("direct", one_broker.direct_bootstrap, workdir)
    print(f"\nfranz-go direct: {run.counts()} in {run.wall_s:.1f}s")
    return run


#: franz-go's SASL tests (skipped in the runs above: they take their own seeds).
SASL_TESTS = "^(TestSCRAMAuth|TestSCRAMAuthBadCredentials|TestOAuthAuth)$"
SCRAM_USERS = {"franz": "franz-secret", "walproxy": "walproxy-secret"}


def _sasl_overrides() -> dict[str, str]:
    """A SASL_PLAINTEXT listener with SCRAM-SHA-256 and OAUTHBEARER (Kafka's default
    validator, which accepts unsecured tokens: what TestOAuthAuth sends)."""
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    oauth = "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;"
    return {
        "listener.name.sasl.sasl.enabled.mechanisms": "SCRAM-SHA-256,OAUTHBEARER",
        "listener.name.sasl.scram-sha-256.sasl.jaas.config": scram,
        "listener.name.sasl.oauthbearer.sasl.jaas.config": oauth,
    }


@pytest.fixture(scope="module")
def three_brokers(workdir: Path) -> Iterator[DevCluster]:
    scram = [
        arg
        for user, pw in SCRAM_USERS.items()
        for arg in ("--add-scram", f"SCRAM-SHA-256=[name={user},password={pw}]")
    ]
    cluster = DevCluster(
        workdir / "three-brokers",
        brokers=3,
        with_proxy=False,
        heap="512m",
        extra_listeners={"SASL": "SASL_PLAINTEXT"},
        format_args=scram,
        broker_overrides=_sasl_overrides(),
    )
    cluster.start()
    try:
        with wal_vs_log.keep_deleted_logs(cluster.direct_bootstrap, _ids(cluster)):
            yield cluster
    finally:
        cluster.stop()


def _status(run: franz_go.SuiteRun, name: str) -> str:
    test = run.tests.get(name)
    return test.status if test else "missing"


def _durations(direct: franz_go.SuiteRun, proxied: franz_go.SuiteRun) -> str:
    rows = [f"{'test':60s} {'direct':>8s} {proxied.mode:>8s}  status"]
    for name in sorted(direct.tests, key=lambda n: -direct.tests[n].elapsed):
        d = direct.tests[name]
        p = proxied.tests.get(name)
        rows.append(
            f"{name:60s} {d.elapsed:8.2f} {p.elapsed if p else float('nan'):8.2f}  "
            f"{d.status}/{p.status if p else 'missing'}"
        )
    rows.append(
        f"{'whole suite (wall clock)':60s} {direct.wall_s:8.1f} {proxied.wall_s:8.1f}  "
        f"{proxied.wall_s / direct.wall_s:.2f}x"
    )
    return "\n".join(rows)


def _not_passed(direct: franz_go.SuiteRun, proxied: franz_go.SuiteRun) -> list[str]:
    return [n for n in direct.named("pass") if _status(proxied, n) != "pass"]


def _races(run: franz_go.SuiteRun) -> dict[str, str]:
    return MULTI_BROKER_RACES if run.mode == "gateway" else {}


def _complaints(run: franz_go.SuiteRun, name: str, last: int = 6) -> str:
    """The test's own ``file.go:N: message`` lines (its failure reasons), the last few."""
    test = run.tests.get(name)
    lines = [ln.strip() for ln in (test.output if test else []) if ".go:" in ln]
    return " | ".join(lines[-last:]) or "no message"


def _rerun(
    direct: franz_go.SuiteRun, proxied: franz_go.SuiteRun, seeds: str, workdir: Path
) -> franz_go.SuiteRun | None:
    """Run once more, alone, what passed directly but not through walproxy. franz-go's group
    ETL tests are timing-sensitive on 2 shared cores (a commit refused with
    REBALANCE_IN_PROGRESS, then its strict "saw double offset" check; seen once in 4 sidecar
    runs, TestGroupETL/range/848). A test that passes on the rerun is printed as flaky; one
    that fails twice fails this test."""
    names = [n for n in _not_passed(direct, proxied) if n not in _races(proxied)]
    if not names:
        return None
    only = "^(" + "|".join(names) + ")$"
    return franz_go.run_suite(f"{proxied.mode}-rerun", seeds, workdir, only=only)


def _judge(
    direct: franz_go.SuiteRun,
    proxied: franz_go.SuiteRun,
    rerun: franz_go.SuiteRun | None,
    wal_dir: Path,
    log_dirs: list[Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    table = _durations(direct, proxied)
    (direct.log.parent / f"durations-{proxied.mode}.txt").write_text(table + "\n")
    skipped = {n: direct.tests[n].skip_reason for n in direct.named("skip")}
    with capsys.disabled():
        print(f"\nfranz-go direct:  {direct.counts()} in {direct.wall_s:.1f}s")
        print(f"franz-go {proxied.mode}: {proxied.counts()} in {proxied.wall_s:.1f}s")
        print("skipped directly (franz-go's reason):")
        for name, reason in sorted(skipped.items()):
            print(f"  {name}: {reason}")
        print(table)
        if direct.named("fail"):
            print(f"failed directly (not judged): {direct.named('fail')}")
    # A test that fails directly (a flaky one, or this broker) says nothing about walproxy:
    # it is printed, not judged. The suite must still have run for real.
    assert len(direct.named("pass")) >= MIN_PASSED_DIRECTLY, f"direct run: see {direct.log}"
    races = _races(proxied)
    unfinished = [n for n in races if _status(proxied, n) not in ("pass", "fail")]
    assert not unfinished, f"{proxied.mode}: did not run {unfinished}; events in {proxied.log}"
    first = [n for n in _not_passed(direct, proxied) if n not in races]
    lost = [n for n in first if rerun is None or _status(rerun, n) != "pass"]
    flaky = [n for n in first if n not in lost]
    with capsys.disabled():
        for name, why in races.items():
            print(f"not judged through {proxied.mode}: {name} ({_status(proxied, name)}): {why}")
        if flaky:
            print(f"FLAKY through walproxy ({proxied.mode}), passed on a rerun: {flaky}")
    assert not lost, (
        f"passed directly, not through walproxy ({proxied.mode}), twice: "
        + "; ".join(
            f"{n} ({_status(proxied, n)}): {_complaints(rerun or proxied, n)}" for n in lost
        )
        + f"; events in {proxied.log}"
    )
    ratio = proxied.wall_s / direct.wall_s
    assert ratio <= MAX_SLOWDOWN, f"{proxied.mode} took {ratio:.2f}x the direct run:\n{table}"
    result = wal_vs_log.check(wal_dir, log_dirs)
    with capsys.disabled():
        print(f"WAL vs log ({proxied.mode}): {result.summary()}")
    assert result.acked_batches > 1000, result.summary()  # the suite really went through it
    assert not result.missing_topics, result.summary()
    assert not result.bad, result.summary()


def _start(mode: str, request: pytest.FixtureRequest, workdir: Path) -> OwnProxy | Gateway:
    if mode == "sidecar":  # its own sidecar in front of the shared broker: its own WAL
        proxy = OwnProxy(request.getfixturevalue("one_broker"), workdir / mode, **KEEP_WAL)
        proxy.start().wait_ready()
        return proxy
    return Gateway(request.getfixturevalue("three_brokers"), workdir / mode, **KEEP_WAL).start()


@pytest.mark.parametrize("mode", ["sidecar", "gateway"])
def test_suite_through_walproxy(
    mode: str,
    direct: franz_go.SuiteRun,
    workdir: Path,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
) -> None:
    proxy = _start(mode, request, workdir)
    try:
        run = franz_go.run_suite(mode, proxy.bootstrap, workdir)
        rerun = _rerun(direct, run, proxy.bootstrap, workdir)
    finally:
        proxy.stop()  # the WAL is read after, as a rebuild would
    log_dirs = [n.directory / "data" for n in proxy.cluster.broker_nodes]
    _judge(direct, run, rerun, proxy.wal_dir, log_dirs, capsys)


def _sasl_env(seeds: str) -> dict[str, str]:
    user = "franz"
    return {
        "KGO_TEST_SCRAM_SEEDS": seeds,
        "KGO_TEST_SCRAM": f"{user}:{SCRAM_USERS[user]}",
        "KGO_TEST_OAUTH_SEEDS": seeds,
    }


def test_sasl_tests_through_gateway(
    three_brokers: DevCluster, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The three tests the big runs skip for want of a SASL listener: SCRAM-SHA-256 (good and
    bad credentials) and OAUTHBEARER (a valid and an expired token), directly against the
    brokers' SASL listener and through a gateway in front of it (the client's SASL exchange
    passes through; the gateway authenticates its own connections as ``walproxy``). A
    sidecar here sits in front of the shared broker's PLAINTEXT listener only."""
    sasl = three_brokers.listener_bootstrap("SASL")
    direct = franz_go.run_suite(
        "direct-sasl",
        three_brokers.direct_bootstrap,
        workdir,
        only=SASL_TESTS,
        env=_sasl_env(sasl),
    )
    gateway = Gateway(
        three_brokers,
        workdir / "gateway-sasl",
        listener="SASL",
        WALPROXY_SASL_MECHANISM="SCRAM-SHA-256",
        WALPROXY_SASL_USERNAME="walproxy",
        WALPROXY_SASL_PASSWORD=SCRAM_USERS["walproxy"],
    ).start()
    try:
        through = franz_go.run_suite(
            "gateway-sasl",
            three_brokers.direct_bootstrap,
            workdir,
            only=SASL_TESTS,
            env=_sasl_env(gateway.bootstrap),
        )
    finally:
        gateway.stop()
    with capsys.disabled():
        print(f"\nfranz-go SASL tests direct: {direct.counts()}; gateway: {through.counts()}")
    want = ["TestOAuthAuth", "TestSCRAMAuth", "TestSCRAMAuthBadCredentials"]
    assert direct.named("pass") == want, f"direct: {direct.counts()}, see {direct.log}"
    assert through.named("pass") == want, f"gateway: {through.counts()}, see {through.log}"
