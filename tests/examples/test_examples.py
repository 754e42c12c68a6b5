"""The scripts in ``examples/`` run (as their own processes, as a user runs them) on the tiny random model, and
the answering one also on the embedded SmolLM2 model; what they print is checked against the files the runs wrote
(``summary.json``, ``compare.json``, ``report.md``, the PNG plots)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
ASSETS = ROOT / "tests" / "assets"
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
FAST = ["--max-new-tokens", "4", "--latent-steps", "1"]

pytestmark = pytest.mark.integration


def _run(script: str, *args: str, cwd: Path = ROOT) -> str:
    done = subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True, env=ENV,
                          cwd=cwd, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _check_answer_output(stdout: str, model: str) -> dict:
    lines = dict(line.split(": ", 1) for line in stdout.splitlines() if ": " in line and not line.startswith(" "))
    assert lines["method"] == f"gcache (untrained) on {model}"
    tokens = re.fullmatch(r"(\d+) prompt, (\d+) generated; latent steps: (\d+); [\d.]+ s", lines["tokens"])
    assert tokens and int(tokens[1]) > 0 and 0 < int(tokens[2]) and int(tokens[3]) > 0
    graph = json.loads(lines["graph"])
    assert graph["reads"] and len(graph["agents"]) == len(graph["spatial"])  # the decision node read its team
    assert any(k.startswith("latent thoughts of ") for k in lines)
    return lines


def test_answer_with_latent_team_on_the_tiny_model():
    _check_answer_output(_run("answer_with_latent_team.py", "--model", "tiny-random-qwen3", *FAST),
                         "tiny-random-qwen3")


@pytest.mark.real_model
def test_answer_with_latent_team_on_the_embedded_model():
    lines = _check_answer_output(_run("answer_with_latent_team.py", "--max-new-tokens", "48"), "smollm2")
    assert lines["decision node wrote"].strip("'\"")  # SmolLM2 writes something


def test_train_and_evaluate(tmp_path):
    out = tmp_path / "run"
    stdout = _run("train_and_evaluate.py", "--model", "tiny-random-qwen3", "--train-data",
                  str(ASSETS / "tiny_gsm8k_train.jsonl"), "--test-data", str(ASSETS / "tiny_gsm8k.jsonl"),
                  "--steps", "2", "--batch-size", "2", "--out", str(out), *FAST)
    history = json.loads((out / "train" / "history.json").read_text())
    assert [line.split(":")[0] for line in stdout.splitlines() if line.startswith("step ")] == [
        f"step {e['step']}" for e in history] == ["step 1", "step 2"]
    assert f"trained team: {out / 'train' / 'team'} (2 steps)" in stdout
    assert (out / "train" / "team" / "model.safetensors").is_file()
    for name in ("untrained", "trained"):
        summary = json.loads((out / f"eval_{name}" / "summary.json").read_text())
        counts = summary["counts"]
        assert counts["answered"] == 5  # the 5 held-out questions of the tiny test file
        assert (f"{name}: accuracy {summary['accuracy']:.3f} ({counts['correct']}/{counts['answered']})" in stdout)
    trained = json.loads((out / "eval_trained" / "config.json").read_text())["config"]
    assert trained["checkpoint"] == str(out / "train" / "team")


def test_compare_and_plot(tmp_path):
    out = tmp_path / "cmp"
    stdout = _run("compare_and_plot.py", "--model", "tiny-random-qwen3", "--data", str(ASSETS / "tiny_gsm8k.jsonl"),
                  "--limit", "2", "--out", str(out), *FAST)
    state = json.loads((out / "compare.json").read_text())
    assert [c["method"] for c in state["cells"]] == ["single", "latentmas_seq"]
    for cell in state["cells"]:
        assert f"{cell['method']}: accuracy {cell['accuracy']:.3f} on 2 questions" in stdout
    assert (out / "report.md").read_text() in stdout
    plots = [Path(line.split(": ", 1)[1]) for line in stdout.splitlines() if line.startswith("plot: ")]
    assert plots and all(p.read_bytes().startswith(b"\x89PNG") for p in plots)
