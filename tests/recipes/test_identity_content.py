"""A resumed run's identity sees content, not only names: an edited ``--prompt-set`` file, changed weights in a
local ``--model`` folder and changed package source are each refused in one line naming what changed, before any
model loads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from gcache import provenance
from gcache.cli import build_parser, main
from gcache.config import config_from_args
from gcache.recipes import _components as C

ASSETS = Path(__file__).parents[1] / "assets"
TINY = str(ASSETS / "tiny_gsm8k.jsonl")
BUILTIN_SET = Path(__file__).parents[2] / "src" / "gcache" / "agents" / "prompt_sets" / "gsm8k.yaml"

pytestmark = pytest.mark.integration


def _started_run(argv: list[str], out: Path) -> None:
    """``out`` as a run of ``argv`` left it after one question: its results and its config.json identity."""
    cfg = config_from_args(build_parser().parse_args(argv))
    identity = cfg.identity(C.identity_facts(cfg, C.build_task(cfg)))
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"identity": identity, "config": {}}))
    (out / "results.jsonl").write_text(json.dumps({"id": "gsm8k-test-0", "correct": True, "error": None}) + "\n")


def _refused(argv: list[str], capsys, *expected: str) -> None:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds a different run" in err[0], err
    for text in expected:
        assert text in err[0], (text, err)


def test_an_edited_prompt_set_file_is_refused(tmp_path, capsys):
    prompts = tmp_path / "roles.yaml"
    shutil.copy(BUILTIN_SET, prompts)
    out = tmp_path / "run"
    argv = ["eval", "--method", "gdesigner", "--prompt-set", str(prompts), "--data", TINY, "--out", str(out),
            "--model", "tiny-random-qwen3"]
    _started_run(argv, out)
    prompts.write_text(prompts.read_text() + "\n# edited\n")
    _refused(argv, capsys, "prompt_set:", str(prompts))


def test_changed_weights_in_a_local_model_folder_are_refused(tmp_path, capsys):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "qwen3"}')
    (model / "model.safetensors").write_bytes(b"\x00" * 4096)
    out = tmp_path / "run"
    argv = ["eval", "--method", "single", "--data", TINY, "--out", str(out), "--model", str(model)]
    _started_run(argv, out)
    (model / "model.safetensors").write_bytes(b"\x01" * 4096)  # same name, same size, new weights
    _refused(argv, capsys, "model:", str(model))


def test_changed_package_source_is_refused(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    argv = ["eval", "--method", "single", "--data", TINY, "--out", str(out), "--model", "tiny-random-qwen3"]
    _started_run(argv, out)
    monkeypatch.setattr(provenance, "source_sha256", lambda: "0" * 64)  # the code as a later commit would hash
    _refused(argv, capsys, "package_version:", "+src.0000000000000000")


def test_source_hash_is_of_the_package_content():
    import gcache

    assert provenance.code_version().startswith(f"{gcache.__version__}+src.")
    assert provenance.source_sha256() == provenance.source_sha256.__wrapped__()
