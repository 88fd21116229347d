"""``walproxy config check``: a table of broken configurations, each rejected with a message
naming the setting; the effective configuration printed with secrets masked; run flags."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from proxy import config
from proxy.app import cli
from proxy.config.doc import render_toml

#: (file text, extra environment, the exact start of the error after "configuration error: ")
BAD_CONFIGS = [
    ('[offload]\ntarget = "ftp://x"\n', {}, "offload.target: expected s3://bucket/prefix or"),
    ("[offload]\nobject_bytes = 0\n", {}, "offload.object_bytes: must be positive, got 0"),
    ('[offload]\ncompression = "lz4"\n', {}, "offload.compression: expected zstd or none"),
    ("[offload]\nmax_buffer_bytes = 1024\n", {}, "offload.max_buffer_bytes: must hold two objects"),
    (
        '[offload]\ns3_endpoint_url = "localhost:9000"\n',
        {},
        "offload.s3_endpoint_url: expected http(s)://host:port",
    ),
    (
        '[gateway]\nenabled = true\nlisten = "127.0.0.1:19000"\nbootstrap_servers = "b:9092"\n'
        'node_id_ranges = "0-2,2-3"\n[offload]\nenabled = false\n',
        {},
        "gateway.node_id_ranges: 0-2 and 2-3 overlap",
    ),
    ('[tls]\nlisten_cert = "/nonexistent.pem"\n', {}, "tls.listen_cert: file /nonexistent.pem"),
    ('[sasl]\nmechanism = "GSSAPI"\n', {}, "sasl.mechanism: expected PLAIN, SCRAM-SHA-256"),
    ('[proxy]\nlisten = "nohost"\n', {}, "proxy.listen: expected host:port, got 'nohost'"),
    ('[proxy]\nlisten = "h:port"\n', {}, "proxy.listen: expected host:port"),
    ('[proxy]\nupstream = "h:99999"\n', {}, "proxy.upstream: expected host:port"),
    ("[proxy]\nmax_frame_bytes = -1\n", {}, "proxy.max_frame_bytes: must be positive, got -1"),
    ("[proxy]\nmax_frame_bytes = 3000000000\n", {}, "proxy.max_frame_bytes: must fit"),
    ("[proxy]\nmax_in_flight = 0\n", {}, "proxy.max_in_flight: must be positive, got 0"),
    ('[proxy]\nmax_in_flight = "many"\n', {}, "proxy.max_in_flight: expected an integer"),
    ("[proxy]\nmax_in_flight = true\n", {}, "proxy.max_in_flight: expected an integer"),
    ("[proxy]\nidle_timeout_s = 0\n", {}, "proxy.idle_timeout_s: must be positive, got 0.0"),
    ('[proxy]\nidle_timeout_s = "nan"\n', {}, "proxy.idle_timeout_s: expected a finite number"),
    ("[proxy]\nidle_timeout_s = inf\n", {}, "proxy.idle_timeout_s: expected a finite number"),
    ("[proxy]\ndrain_timeout_s = -1\n", {}, "proxy.drain_timeout_s: must not be negative"),
    ("[proxy]\nupstream_connect_timeout_s = -5\n", {}, "proxy.upstream_connect_timeout_s: must be"),
    ("[proxy]\npartial_frame_timeout_s = 0\n", {}, "proxy.partial_frame_timeout_s: must be"),
    ("[proxy]\nnode_id = -2\n", {}, "proxy.node_id: must be -1 (unknown) or a node id >= 0"),
    ('[proxy]\nnode_id = "one"\n', {}, "proxy.node_id: expected an integer"),
    ('[proxy]\nlisten = "0.0.0.0:9092"\n', {}, "proxy.advertised: must be set when proxy.listen"),
    ('[proxy]\nlisten = ":9092"\n', {}, "proxy.advertised: must be set when proxy.listen"),
    ('[proxy]\nadvertised = "0.0.0.0:9092"\n', {}, "proxy.advertised: '0.0.0.0:9092' is not"),
    ('[proxy]\nadvertised = "b1:0"\n', {}, "proxy.advertised: 'b1:0' is not an address"),
    ('[proxy]\nadvertised = "b1"\n', {}, "proxy.advertised: expected host:port"),
    (
        '[proxy]\nlisten = "127.0.0.1:9092"\nupstream = "127.0.0.1:9092"\n',
        {},
        "proxy.upstream: '127.0.0.1:9092' is proxy.listen itself",
    ),
    (
        '[proxy]\nlisten = "0.0.0.0:9092"\nadvertised = "b:9092"\nupstream = "localhost:9092"\n',
        {},
        "proxy.upstream: 'localhost:9092' is proxy.listen itself",
    ),
    ("[proxy]\nlisten_port = 1\n", {}, "proxy.listen_port: unknown setting"),
    ("[proxi]\n", {}, "proxi: unknown section"),
    ('proxy = "x"\n', {}, "proxy: expected a table"),
    ("[proxy]\npeers = 5\n", {}, "proxy.peers: expected a table, got 5"),
    ('[proxy.peers]\nx = "h:1"\n', {}, "proxy.peers: node id 'x' is not an integer"),
    ('[proxy.peers]\n"2" = "nohost"\n', {}, "proxy.peers.2: expected host:port"),
    (
        '[proxy]\nnode_id = 1\nadvertised = "b1:9092"\n[proxy.peers]\n"1" = "b0:9092"\n',
        {},
        "proxy.peers.1: is this broker's own node id (proxy.node_id) but 'b0:9092' is not",
    ),
    ('[wal]\nenabled = "maybe"\n', {}, "wal.enabled: expected true or false, got 'maybe'"),
    ('[wal]\ndir = ""\n', {}, "wal.dir: must name a directory when wal.enabled is true"),
    ("[wal]\nsegment_bytes = 1000\n", {}, "wal.segment_bytes: must be a multiple of 4096"),
    ("[wal]\nsegment_bytes = 1052673\n", {}, "wal.segment_bytes: must be a multiple of 4096"),
    ("[wal]\nmax_bytes = 67108864\n", {}, "wal.max_bytes: must hold at least two segments"),
    ("[wal]\nretention_s = -1\n", {}, "wal.retention_s: must not be negative"),
    ('[wal]\ndirect_io = "yes"\n', {}, "wal.direct_io: expected auto, on or off, got 'yes'"),
    ('[admin]\nlisten = "9644"\n', {}, "admin.listen: expected host:port"),
    ('[admin]\nlisten = "127.0.0.1:9092"\n', {}, "admin.listen: '127.0.0.1:9092' collides"),
    ('[log]\nformat = "xml"\n', {}, "log.format: expected console or json, got 'xml'"),
    ('[log]\nlevel = "loud"\n', {}, "log.level: expected debug/info/warning/error"),
    ("", {"WALPROXY_PROXY_IDLE_TIMEOUT_S": "soon"}, "proxy.idle_timeout_s: expected a number"),
    ("", {"WALPROXY_ADMIN_LISTEN": "bad"}, "admin.listen: expected host:port, got 'bad'"),
    ("", {"WALPROXY_PROXY_PEERS": "1:h:1"}, "proxy.peers: expected id=host:port"),
    ("", {"WALPROXY_WAL_SIZE": "1"}, "wal.size: unknown setting"),
    ("[proxy\n", {}, "config file {path} is not valid TOML"),
]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    import os

    for key in list(os.environ):
        if key.startswith("WALPROXY_"):
            monkeypatch.delenv(key)
    return monkeypatch


@pytest.mark.parametrize(("toml", "env", "message"), BAD_CONFIGS)
def test_config_check_rejects_with_a_precise_message(
    tmp_path: Path,
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    toml: str,
    env: dict[str, str],
    message: str,
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    for key, value in env.items():
        clean_env.setenv(key, value)
    assert cli.main(["config", "check", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    expected = "walproxy: configuration error: " + message.format(path=path)
    assert err.startswith(expected), err


def test_a_peers_table_may_list_this_broker_at_its_advertised_address(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ok.toml"
    path.write_text(
        '[proxy]\nnode_id = 1\nadvertised = "b1:9092"\n'
        '[proxy.peers]\n"1" = "b1:9092"\n"2" = "b2:9092"\n'
    )
    assert config.load(path, env={}).proxy.peers == {"1": "b1:9092", "2": "b2:9092"}


def test_every_section_has_a_rejected_example() -> None:
    sections = {f.name for f in dataclasses.fields(config.Config)}
    covered = {msg.split(".", 1)[0].split(":", 1)[0] for _, _, msg in BAD_CONFIGS}
    assert sections <= covered, f"no bad example for {sorted(sections - covered)}"


def test_config_check_prints_the_effective_config_as_toml(
    tmp_path: Path, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ok.toml"
    path.write_text('[proxy]\nupstream = "127.0.0.1:29092"\n[proxy.peers]\n"2" = "b2:9092"\n')
    clean_env.setenv("WALPROXY_WAL_MAX_BYTES", str(1 << 30))
    assert cli.main(["config", "check", str(path)]) == 0
    printed = tomllib.loads(capsys.readouterr().out)
    assert printed["proxy"]["upstream"] == "127.0.0.1:29092"
    assert printed["proxy"]["peers"] == {"2": "b2:9092"}
    assert printed["wal"]["max_bytes"] == 1 << 30  # the environment is applied
    assert printed["admin"]["listen"] == "127.0.0.1:9644"  # loopback unless configured
    # What it prints is itself a valid configuration that loads to the same thing.
    again = tmp_path / "again.toml"
    again.write_text(render_toml(printed))
    assert config.load(again, env={}) == config.load(
        path, env={"WALPROXY_WAL_MAX_BYTES": str(1 << 30)}
    )


@dataclasses.dataclass(frozen=True)
class _Credentials:
    user: str = config.setting("user", default="")
    password: str = config.setting("password", secret=True, default="")


@dataclasses.dataclass(frozen=True)
class _ConfigWithSecret:
    sasl: _Credentials = dataclasses.field(default_factory=_Credentials)


def test_secret_settings_are_masked() -> None:
    """Any field declared ``setting(..., secret=True)`` prints as *** when set."""
    shown = config.masked(_ConfigWithSecret(_Credentials(user="u", password="hunter2")))  # type: ignore[arg-type]
    assert shown == {"sasl": {"user": "u", "password": "***"}}
    empty = config.masked(_ConfigWithSecret())  # type: ignore[arg-type]
    assert empty == {"sasl": {"user": "", "password": ""}}  # unset secrets show as unset


def test_run_flags_override_file_and_environment(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "w.toml"
    path.write_text('[proxy]\nlisten = "127.0.0.1:1"\nnode_id = 3\n')
    clean_env.setenv("WALPROXY_PROXY_UPSTREAM", "127.0.0.1:2")
    args = cli.build_parser().parse_args(
        [
            "run",
            "--config",
            str(path),
            "--listen",
            "0.0.0.0:9092",
            "--advertised",
            "b0.kafka:9092",
            "--upstream",
            "127.0.0.1:19092",
            "--node-id",
            "0",
            "--wal-dir",
            "/var/lib/walproxy/wal",
            "--admin-listen",
            "0.0.0.0:9644",
        ]
    )
    import os

    cfg = config.load(path, {**os.environ, **cli._flag_overrides(args)})
    assert (cfg.proxy.listen, cfg.proxy.advertised, cfg.proxy.upstream) == (
        "0.0.0.0:9092",
        "b0.kafka:9092",
        "127.0.0.1:19092",
    )
    assert cfg.proxy.node_id == 0
    assert cfg.wal.dir == "/var/lib/walproxy/wal"
    assert cfg.admin.listen == "0.0.0.0:9644"


def test_run_flag_errors_name_the_setting(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["run", "--node-id", "x"]) == 2
    assert "proxy.node_id: expected an integer, got 'x'" in capsys.readouterr().err


def test_run_that_cannot_open_its_wal_exits_1_with_the_reason(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """An error opening the WAL comes out of the server's nursery inside exception groups:
    still one line naming the setting and exit 1, no traceback (found in a container run,
    tests/containers/test_image.py: wal.direct_io = on on a file system without O_DIRECT)."""
    from wal import file_backend

    refused = (False, 4096, "open(O_DIRECT) refused with EINVAL")
    clean_env.setattr(file_backend, "probe_direct_io", lambda _d: refused)
    # structlog stays as the tests have it (run would bind it to capsys' stderr for good)
    clean_env.setattr(cli.logs, "configure", lambda *_a, **_k: None)
    for key, value in {
        "WALPROXY_WAL_DIR": str(tmp_path / "wal"),
        "WALPROXY_WAL_DIRECT_IO": "on",
        "WALPROXY_PROXY_LISTEN": "127.0.0.1:0",
        "WALPROXY_PROXY_UPSTREAM": "127.0.0.1:1",
        "WALPROXY_ADMIN_LISTEN": "",
        "WALPROXY_OFFLOAD_ENABLED": "false",
    }.items():
        clean_env.setenv(key, value)
    assert cli.main(["run"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("walproxy: cannot start: wal.direct_io = on, but "), err
    assert "Traceback" not in err
