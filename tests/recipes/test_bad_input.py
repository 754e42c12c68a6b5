"""Every class of user mistake gets one line naming the flag, file (and line) or value, exit status 2, no traceback,
and is found before any model loads (the recipes log "loading model" as their first slow step)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from gcache.cli import main

from cli_assertions import one_line_exit_2 as _one_line_exit_2

ASSETS = Path(__file__).parents[1] / "assets"
TINY = str(ASSETS / "tiny_gsm8k.jsonl")
FAST = ["--model", "tiny-random-qwen3", "--max-new-tokens", "2", "--latent-steps", "1"]

pytestmark = pytest.mark.integration




def _eval(tmp_path: Path, *extra: str, data: str = TINY) -> list[str]:
    return ["eval", "--method", "single", "--data", data, "--out", str(tmp_path / "o"), *FAST, *extra]


@pytest.mark.parametrize("extra, expected", [
    (["--split", "validation"], ["--split: unknown value 'validation'", "train, test"]),
    (["--device", "gpu0"], ["--device: 'gpu0' is not a device"]),
    (["--method", "gdesigner", "--prompt-set", "no-such-set"], ["--prompt-set: unknown prompt set 'no-such-set'"]),
    (["--mode", "api", "--api-timeout", "0"], ["--api-timeout must be positive, got 0.0"]),
    (["--mode", "api", "--api-retries", "-1"], ["--api-retries must be >= 0, got -1"]),
    (["--mode", "api", "--base-url", "localhost:8000"], ["--base-url: 'localhost:8000' is not an http://"]),
    (["--method", "gcache", "--mode", "api"], ["--method gcache passes KV-caches", "gdesigner"]),
    (["--model", "/no/such/model_dir"], ["model path not found: /no/such/model_dir"]),
])
def test_bad_flag_values(tmp_path, capsys, caplog, extra, expected):
    _one_line_exit_2(_eval(tmp_path, *extra), capsys, caplog, *expected)


def test_bad_dtype_is_refused_by_the_parser(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(_eval(tmp_path, "--dtype", "fp64"))
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--dtype: invalid choice: 'fp64'" in err and "Traceback" not in err


def test_bad_data_files(tmp_path, capsys, caplog):
    lines = Path(TINY).read_bytes().splitlines(keepends=True)
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(lines[0] + json.dumps({"question": "caf\u00e9 costs 3", "answer": "#### 3"}).encode()
                       .replace(b"\\u00e9", b"\xe9") + b"\n")
    _one_line_exit_2(_eval(tmp_path, data=str(latin1)), capsys, caplog, str(latin1), "line 2: not UTF-8 text",
                     "0xe9")
    # offline (conftest sets HF_HUB_OFFLINE=1) and no --data
    _one_line_exit_2(["eval", "--method", "single", "--out", str(tmp_path / "o2"), *FAST], capsys, caplog,
                     "cannot load openai/gsm8k from the Hugging Face hub", "--data")


def test_bad_yaml_configs(tmp_path, capsys, caplog):
    broken = tmp_path / "broken.yaml"
    broken.write_text("method: single\nlimit: [1\n")
    _one_line_exit_2(_eval(tmp_path, "--config", str(broken)), capsys, caplog, str(broken), "not valid YAML")
    typed = tmp_path / "typed.yaml"
    typed.write_text("method: single\n\nbatch_size: four\n")
    _one_line_exit_2(_eval(tmp_path, "--config", str(typed)), capsys, caplog,
                     f"{typed}, line 3: batch_size: --batch-size must be an integer, got 'four'")
    ranged = tmp_path / "ranged.yaml"
    ranged.write_text("top_p: 2.5\n")
    _one_line_exit_2(_eval(tmp_path, "--config", str(ranged)), capsys, caplog, f"{ranged}, line 1: top_p:")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("method: single\nlatent_stepz: 4\n")
    _one_line_exit_2(_eval(tmp_path, "--config", str(unknown)), capsys, caplog,
                     f"{unknown}, line 2: unknown setting 'latent_stepz'")


def test_bad_out_folders(tmp_path, capsys, caplog):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    argv = ["eval", "--method", "single", "--data", TINY, *FAST, "--out"]
    _one_line_exit_2([*argv, str(a_file)], capsys, caplog, f"--out {a_file}: is a file, not a folder")
    _one_line_exit_2([*argv, str(a_file / "sub")], capsys, caplog, f"--out {a_file / 'sub'}: cannot write there")
    unwritable = _unwritable_folder()  # chmod does not stop root: use a folder nobody can write to
    if unwritable is not None:
        _one_line_exit_2([*argv, unwritable], capsys, caplog, f"--out {unwritable}: cannot write there")


def _unwritable_folder() -> str | None:
    for folder in ("/sys", "/proc"):
        try:
            tempfile.TemporaryFile(dir=folder).close()
        except OSError:
            return folder
    return None


def test_damaged_checkpoints_in_train_eval_and_plot(tmp_path, capsys, caplog):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(b"PK\x03\x04" + b"\x00" * 40)  # the start of a zip (torch.save's format), cut off
    for ckpt in (empty, truncated):
        _one_line_exit_2(["eval", "--method", "gcache", "--checkpoint", str(ckpt), "--data", TINY, "--out",
                          str(tmp_path / "e"), *FAST], capsys, caplog, f"checkpoint {ckpt} is damaged")
        _one_line_exit_2(["plot", str(ckpt), "--out", str(tmp_path / "p")], capsys, caplog,
                         f"checkpoint {ckpt} is damaged")
    train_out = tmp_path / "train"
    train_out.mkdir()
    (train_out / "checkpoint.pt").write_bytes(truncated.read_bytes())
    _one_line_exit_2(["train", "--method", "gcache", "--data", TINY, "--out", str(train_out), "--steps", "1", *FAST],
                     capsys, caplog, "checkpoint.pt is damaged")


@pytest.mark.parametrize("extra, expected", [
    (["--port", "99999"], "--port must be in 0..65535, got 99999"),
    (["--max-batch-size", "0"], "--max-batch-size must be at least 1, got 0"),
    (["--device", "cuda:x"], "--device: 'cuda:x' is not a device"),
])
def test_bad_serve_flags(capsys, caplog, extra, expected):
    _one_line_exit_2(["serve", "--model", "tiny-random-qwen3", *extra], capsys, caplog, expected)


def test_a_real_process_exits_2_with_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "gcache", "eval", "--method", "latentmas_seq", "--mode", "api",
                           "--data", TINY, "--out", str(tmp_path / "o")], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "gcache eval: error: --method latentmas_seq passes KV-caches, which an API model cannot read: --mode api "
        "is not available (choose local or hybrid)"]
