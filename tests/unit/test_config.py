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
        '[proxy]\nlisten = "0.0.0.0:9092"\nadvertised = "b1:9092"\nmax_in_flight = 8\n'
        '[proxy.peers]\n"2" = "b2:9092"\n'
    )
    cfg = load(path, env={"WALPROXY_PROXY_MAX_IN_FLIGHT": "16", "WALPROXY_LOG_FORMAT": "json"})
    assert cfg.proxy.listen == "0.0.0.0:9092"
    assert cfg.proxy.max_in_flight == 16  # the environment wins over the file
    assert cfg.proxy.peers == {"2": "b2:9092"}
    assert cfg.log.format == "json"


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load("/nonexistent/walproxy.toml", env={})
