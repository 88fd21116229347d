"""Configuration loading: defaults, file, environment overrides, and precise errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config import Config, ConfigError, load


def test_defaults_are_valid() -> None:
    cfg = load(None, env={})
    assert cfg == Config()
    assert cfg.proxy.max_frame_bytes == 100 * 1024 * 1024


def test_file_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "w.toml"
    path.write_text(
        '[proxy]\nlisten = "0.0.0.0:9092"\nmax_in_flight = 8\n[proxy.peers]\n"2" = "b2:9092"\n'
    )
    cfg = load(path, env={"WALPROXY_PROXY_MAX_IN_FLIGHT": "16", "WALPROXY_LOG_FORMAT": "json"})
    assert cfg.proxy.listen == "0.0.0.0:9092"
    assert cfg.proxy.max_in_flight == 16  # the environment wins over the file
    assert cfg.proxy.peers == {"2": "b2:9092"}
    assert cfg.log.format == "json"


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        ('[proxy]\nlisten = "nohost"\n', {}, "proxy.listen: expected host:port"),
        ('[proxy]\nupstream = "h:99999"\n', {}, "proxy.upstream: expected host:port"),
        ("[proxy]\nmax_frame_bytes = -1\n", {}, "proxy.max_frame_bytes: must be positive"),
        ('[proxy]\nmax_in_flight = "many"\n', {}, "proxy.max_in_flight: expected an integer"),
        ("[proxy]\nmax_frame_bytes = 3000000000\n", {}, "proxy.max_frame_bytes: must fit"),
        ("[proxy]\nlisten_port = 1\n", {}, "proxy.listen_port: unknown setting"),
        ("[proxi]\n", {}, "proxi: unknown section"),
        ('[proxy.peers]\nx = "h:1"\n', {}, "proxy.peers: node id 'x' is not an integer"),
        ('[log]\nformat = "xml"\n', {}, "log.format: expected console or json"),
        ("", {"WALPROXY_PROXY_IDLE_TIMEOUT_S": "soon"}, "proxy.idle_timeout_s: expected a number"),
        ("", {"WALPROXY_ADMIN_LISTEN": "bad"}, "admin.listen: expected host:port"),
        ("[proxy\n", {}, "not valid TOML"),
    ],
)
def test_bad_configuration_names_the_setting(
    tmp_path: Path, toml: str, env: dict[str, str], message: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load(path, env=env)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load("/nonexistent/walproxy.toml", env={})
