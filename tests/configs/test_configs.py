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


CONFIG_DIR = Path(__file__).parents[2] / "src" / "gcache" / "configs"
PRESETS = sorted((CONFIG_DIR / "presets").glob("*.yaml"))
MATRICES = sorted((CONFIG_DIR / "compare").glob("*.yaml"))


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_preset_is_valid_and_names_its_command(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# gcache ") and f"configs/presets/{path.name}" in first
    cfg = config_from_args(argparse.Namespace(config=str(path), out="runs/x"))
    assert cfg.out == "runs/x"


def test_latentmas_preset_holds_the_reference_settings():
    cfg = config_from_args(argparse.Namespace(config=str(CONFIG_DIR / "presets" / "latentmas_reference.yaml")))
    assert (cfg.temperature, cfg.top_p, cfg.max_new_tokens, cfg.realign, cfg.seed) == (0.6, 0.95, 2048, False, 42)
    assert cfg.zero_latent_steps == "judge_alone" and cfg.latent_steps > 0 and cfg.message == "full"
    text = (CONFIG_DIR / "presets" / "latentmas_reference.yaml").read_text()
    for key in ("temperature", "top_p", "max_new_tokens", "latent_steps", "zero_latent_steps", "realign", "seed"):
        line = next(x for x in text.splitlines() if x.startswith(f"{key}:"))
        assert "# " in line and (".py:" in line or ".md:" in line), f"{key} does not cite its source: {line}"


def test_gdesigner_preset_holds_the_reference_settings():
    cfg = config_from_args(argparse.Namespace(config=str(CONFIG_DIR / "presets" / "gdesigner_reference.yaml")))
    assert (cfg.method, cfg.mode, cfg.agents, cfg.rounds, cfg.decision) == ("gdesigner", "api", 4, 1, "refer")
    assert (cfg.lr, cfg.batch_size, cfg.steps, cfg.baseline) == (0.1, 4, 10, "none")
    assert cfg.optimize_spatial and not cfg.optimize_temporal


@pytest.mark.parametrize("path", MATRICES, ids=lambda p: p.name)
def test_compare_matrix_is_valid_and_names_its_command(path, tmp_path):
    from gcache.recipes.compare import CompareConfig

    first = path.read_text().splitlines()[0]
    assert first.startswith(f"# gcache compare --config src/gcache/configs/compare/{path.name}")
    config = CompareConfig.from_yaml(path, overrides={"device": "cpu"})  # GPU matrices validate on a CPU too
    cells = config.cells(tmp_path)
    assert len(cells) == len(config.methods) * len(config.tasks) * len(config.seeds)
    assert config.baseline in config.methods and len({c.out for c in cells}) == len(cells)


def test_latentmas_matrix_covers_its_tasks_and_seeds(tmp_path):
    from gcache.recipes.compare import CompareConfig

    config = CompareConfig.from_yaml(CONFIG_DIR / "compare" / "latentmas_reference.yaml", {"device": "cpu"})
    assert set(config.tasks) == {"gsm8k", "aime2024", "aime2025", "gpqa_diamond", "arc_easy", "arc_challenge",
                                 "mbppplus", "humanevalplus", "medqa"}  # LatentMAS run.py:94
    assert len(config.seeds) >= 3
    for cell in config.cells(tmp_path):
        assert (cell.config.temperature, cell.config.top_p, cell.config.realign) == (0.6, 0.95, False)
        assert cell.config.seed == cell.seed
