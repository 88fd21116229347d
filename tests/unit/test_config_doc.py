"""docs/configuration.md is generated from the config dataclasses and must be up to date."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from proxy import config
from proxy.config import doc as config_doc

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_committed_reference_is_up_to_date() -> None:
    assert REFERENCE.read_text() == config_doc.markdown(), (
        "docs/configuration.md is out of date: run "
        "`.venv/bin/python -m proxy.config.doc > docs/configuration.md`"
    )


def test_every_setting_is_documented_with_its_variable() -> None:
    text = config_doc.markdown()
    for section in dataclasses.fields(config.Config):
        for f in dataclasses.fields(section.default_factory):  # type: ignore[arg-type]
            assert f.metadata.get("doc"), f"{section.name}.{f.name} has no description"
            assert f"`{section.name}.{f.name}`" in text
            assert f"`WALPROXY_{section.name.upper()}_{f.name.upper()}`" in text


def test_documented_defaults_load_as_the_defaults(tmp_path: Path) -> None:
    """The defaults column, pasted into a file, is the default configuration."""
    path = tmp_path / "defaults.toml"
    path.write_text(config_doc.render_toml(config.masked(config.Config())))
    assert config.load(path, env={}) == config.Config()


def test_the_readmes_example_configuration_is_valid(tmp_path: Path) -> None:
    readme = (REFERENCE.parents[1] / "README.md").read_text()
    block = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "readme.toml"
    path.write_text(block)
    cfg = config.load(path, env={})
    assert cfg.proxy.advertised == "broker-0.kafka:9092" and cfg.admin.listen.startswith("127.")
