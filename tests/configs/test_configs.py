"""Every shipped YAML config parses into a valid RunConfig and names its launch command."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from gcache.config import ConfigError, config_from_args

CONFIGS = sorted((Path(__file__).parents[2] / "src" / "gcache" / "configs").glob("*.yaml"))


def test_there_are_configs():
    assert len(CONFIGS) >= 3


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_is_valid(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# gcache ") and str(path.name) in first
    cfg = config_from_args(argparse.Namespace(config=str(path), out="runs/x"))
    assert cfg.out == "runs/x"


def test_flags_override_yaml_and_bad_values_are_named(tmp_path):
    cfg = config_from_args(argparse.Namespace(config=str(CONFIGS[0]), limit=3))
    assert cfg.limit == 3
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: latentmas_seq\nlatent_stepz: 4\n")
    with pytest.raises(ConfigError, match="latent_stepz"):
        config_from_args(argparse.Namespace(config=str(bad)))


def test_engine_setting_is_validated(tmp_path):
    path = tmp_path / "fast.yaml"
    path.write_text("method: latentmas_seq\nengine: fast\n")
    assert config_from_args(argparse.Namespace(config=str(path))).engine == "fast"
    path.write_text("method: latentmas_seq\nengine: turbo\n")
    with pytest.raises(ConfigError, match="--engine: unknown value 'turbo'; choose one of auto, eager, fast"):
        config_from_args(argparse.Namespace(config=str(path)))
