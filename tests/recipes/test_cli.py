"""End-to-end runs of the ``gcache`` CLI on real files with a tiny random-weight model, and its bad-input paths."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gcache.cli import main

ASSETS = Path(__file__).parents[1] / "assets"
TINY = str(ASSETS / "tiny_gsm8k.jsonl")
FAST = ["--model", "tiny-random-qwen3", "--max-new-tokens", "6", "--latent-steps", "2"]

pytestmark = pytest.mark.integration


def read_results(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]


def test_eval_writes_results_and_summary(tmp_path):
    out = tmp_path / "run"
    assert main(["eval", "--method", "latentmas_seq", "--data", TINY, "--limit", "3", "--batch-size", "2",
                 "--out", str(out), *FAST]) == 0
    rows = read_results(out)
    assert [r["id"] for r in rows] == ["gsm8k-test-0", "gsm8k-test-1", "gsm8k-test-2"]
    fields = {"id", "question", "gold", "prediction", "correct", "prompt_tokens", "completion_tokens",
              "latent_steps", "seconds", "error"}
    for r in rows:
        assert fields <= r.keys()
        assert r["latent_steps"] == 3 * 2  # planner, critic, refiner think 2 steps each
        assert r["prompt_tokens"] > 0 and 0 < r["completion_tokens"] <= 6
        assert r["gold"] in {"7", "12"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"questions": 3, "answered": 3, "correct": sum(r["correct"] for r in rows),
                                 "errors": 0}
    assert summary["totals"]["latent_steps"] == 18
    assert summary["config"]["method"] == "latentmas_seq"


def test_engine_flag_fast_and_eager_give_the_same_answers(tmp_path):
    keep = ("id", "prediction", "correct", "prompt_tokens", "completion_tokens", "latent_steps")
    rows = {}
    for engine in ("eager", "fast"):
        out = tmp_path / engine
        assert main(["eval", "--method", "latentmas_seq", "--data", TINY, "--limit", "3", "--batch-size", "2",
                     "--engine", engine, "--out", str(out), *FAST]) == 0
        rows[engine] = [{k: r[k] for k in keep} for r in read_results(out)]
        assert json.loads((out / "summary.json").read_text())["config"]["engine"] == engine
    assert rows["fast"] == rows["eager"] and len(rows["fast"]) == 3


def test_rerun_resumes_without_redoing(tmp_path):
    out = tmp_path / "run"
    args = ["eval", "--method", "single", "--data", TINY, "--batch-size", "2", "--out", str(out), *FAST]
    assert main([*args, "--limit", "2"]) == 0
    first = read_results(out)
    assert main([*args, "--limit", "4"]) == 0  # two more questions; the first two are not redone
    rows = read_results(out)
    assert [r["id"] for r in rows] == [f"gsm8k-test-{i}" for i in range(4)]
    assert rows[:2] == first
    mtime = (out / "results.jsonl").stat().st_mtime_ns
    assert main([*args, "--limit", "4"]) == 0  # nothing left to do: the file is untouched
    assert (out / "results.jsonl").stat().st_mtime_ns == mtime


def test_resume_refuses_a_different_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["eval", "--method", "single", "--data", TINY, "--limit", "1", "--out", str(out), *FAST]) == 0
    assert main(["eval", "--method", "text_chain", "--data", TINY, "--limit", "1", "--out", str(out), *FAST]) == 2
    assert "different run" in capsys.readouterr().err


def _wait_for_lines(path: Path, n: int, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.is_file() and len([x for x in path.read_text().splitlines() if x.strip()]) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"process ended early: {proc.stderr.read()}")
        time.sleep(0.02)
    raise AssertionError("timed out waiting for results")


@pytest.mark.slow
def test_kill_9_then_resume_loses_and_repeats_nothing(tmp_path):
    # 40 questions, one per batch: far more than finish between two polls, so the kill lands mid-run.
    lines = Path(TINY).read_text().splitlines()
    data = tmp_path / "many.jsonl"
    data.write_text("\n".join(lines[i % len(lines)] for i in range(40)) + "\n")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "gcache", "eval", "--method", "single", "--data", str(data), "--batch-size", "1",
           "--out", str(out), *FAST]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    _wait_for_lines(out / "results.jsonl", 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = read_results(out)
    assert 2 <= len(done_before) < 40
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    rows = read_results(out)
    ids = [r["id"] for r in rows]
    assert sorted(ids) == sorted(f"gsm8k-test-{i}" for i in range(40)) and len(ids) == len(set(ids))
    assert rows[:len(done_before)] == done_before


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--limit", "0"], "--limit must be at least 1"),
        (["--model", "/no/such/model_dir"], "model path not found"),
        (["--dataset", "mnist"], "mnist"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
    ],
)
def test_bad_input_gives_one_clear_line(tmp_path, capsys, argv, message):
    base = ["eval", "--method", "single", "--data", TINY, "--out", str(tmp_path / "o"), *FAST]
    assert main(base + argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_missing_out_and_unknown_method(tmp_path, capsys):
    assert main(["eval", "--method", "single", "--data", TINY, *FAST]) == 2
    assert "--out DIR is required" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", "--method", "telepathy", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert "latentmas_seq" in err and "gcache" in err  # the valid methods are listed


def test_malformed_dataset_line_names_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    good = Path(TINY).read_text().splitlines()
    bad.write_text("\n".join([good[0], good[1], '{"question": "broken', good[2]]) + "\n")
    assert main(["eval", "--method", "single", "--data", str(bad), "--out", str(tmp_path / "o"), *FAST]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "line 3" in err


def test_empty_dataset_is_a_clear_error(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["eval", "--method", "single", "--data", str(empty), "--out", str(tmp_path / "o"), *FAST]) == 2
    assert "no examples" in capsys.readouterr().err
