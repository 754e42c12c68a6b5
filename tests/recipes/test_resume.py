"""Resume never mixes experiments and never blocks a corrected command: what changes results is compared (dtype as
resolved, the data file's hash, ...), a failed start leaves nothing behind, and a damaged config.json is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gcache.cli import main

ASSETS = Path(__file__).parents[1] / "assets"
TINY = ASSETS / "tiny_gsm8k.jsonl"
FAST = ["--model", "tiny-random-qwen3", "--max-new-tokens", "2", "--method", "single", "--limit", "1"]

pytestmark = pytest.mark.integration


def _eval(out: Path, *extra: str, data: Path = TINY) -> int:
    return main(["eval", "--data", str(data), "--out", str(out), *FAST, *extra])


def test_changed_dtype_is_refused_but_auto_equals_its_resolution(tmp_path, capsys):
    out = tmp_path / "run"
    assert _eval(out) == 0  # dtype auto: float32 on the CPU
    assert _eval(out, "--dtype", "float32") == 0  # the same dtype, spelled out: resumes
    config = (out / "config.json").read_text()
    assert _eval(out, "--dtype", "bfloat16") == 2
    err = capsys.readouterr().err
    assert "dtype: 'float32' -> 'bfloat16'" in err and "Traceback" not in err
    assert (out / "config.json").read_text() == config  # not rewritten by the refused run
    assert len((out / "results.jsonl").read_text().splitlines()) == 1


def test_changed_data_file_is_refused(tmp_path, capsys):
    data = tmp_path / "q.jsonl"
    data.write_bytes(TINY.read_bytes())
    out = tmp_path / "run"
    assert _eval(out, data=data) == 0
    lines = data.read_text().splitlines()
    first = json.loads(lines[0])
    first["question"] += " (edited)"
    data.write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    assert _eval(out, data=data) == 2
    assert "data_sha256" in capsys.readouterr().err


def test_failed_start_leaves_the_folder_free(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["eval", "--data", str(TINY), "--out", str(out), "--method", "single", "--model",
                 "/no/such/model_dir"]) == 2
    assert not (out / "config.json").exists()
    assert _eval(out) == 0  # the corrected command runs
    # a config.json without results (e.g. written by an older gcache before it failed) blocks nothing either
    (out / "results.jsonl").unlink()
    assert _eval(out, "--seed", "5") == 0


def test_damaged_config_json_is_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert _eval(out) == 0
    (out / "config.json").write_text('{"identity": {"method": "sin')
    capsys.readouterr()
    assert _eval(out) == 2
    err = capsys.readouterr().err
    assert "config.json is damaged" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
