"""Damaged, foreign or unfinished inputs of ``gcache report`` / ``compare`` / ``plot`` / ``serve``: one line and exit
status 2 through the real CLI, a report that never writes into a run, and a ``compare.json`` without API keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gcache.cli import main
from gcache.recipes.compare import CompareConfig, CompareRecipe

ASSETS = Path(__file__).parents[1] / "assets"
TINY = str(ASSETS / "tiny_gsm8k.jsonl")

pytestmark = pytest.mark.integration


def _one_line_exit_2(argv: list[str], capsys, *expected: str) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    # The last line is the error and the only one of gcache (a library's progress bar may come before it).
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err) and err[-1].startswith("gcache ") and \
        sum(line.startswith("gcache ") for line in err) == 1, err
    err = err[-1]
    for text in expected:
        assert text in err, (text, err)
    return err


def _write_run(folder: Path, method: str = "single", seed: int = 0, outcomes=(True, False)) -> None:
    folder.mkdir(parents=True)
    lines = [json.dumps({"id": f"gsm8k-test-{i}", "correct": ok, "completion_tokens": 3, "seconds": 1.0})
             for i, ok in enumerate(outcomes)]
    (folder / "results.jsonl").write_text("".join(line + "\n" for line in lines))
    summary = {"method": method, "dataset": "gsm8k", "seeds": [seed], "counts": {"questions": len(outcomes)},
               "config": {"method": method, "model": "m", "mode": "local", "max_new_tokens": 8}}
    (folder / "summary.json").write_text(json.dumps(summary))


def _compare_folder(root: Path, done: int, total: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    cells = []
    for seed in range(total):
        out = f"gsm8k/single/seed{seed}"
        if seed < done:
            _write_run(root / out, seed=seed)
        cells.append({"task": "gsm8k", "method": "single", "seed": seed, "out": out,
                      "status": "done" if seed < done else "pending"})
    (root / "compare.json").write_text(json.dumps({"matrix": {"baseline": "single"}, "cells": cells}))


@pytest.mark.parametrize("name, content, expected", [
    ("compare.json", "{not json", "compare.json: not a readable gcache compare state"),
    ("compare.json", "[1, 2]", "compare.json: not a gcache compare state"),
    ("compare.json", '{"cells": 3}', "compare.json: not a gcache compare state"),
    ("compare.json", '{"cells": [{"task": "gsm8k"}]}', "expected 'cells'"),
    ("summary.json", "{trunc", "summary.json: not a readable gcache eval summary"),
    ("summary.json", '{"method": "single", "dataset": "gsm8k"}', "missing or malformed: counts.questions"),
    ("summary.json", '"a string"', "not a gcache eval summary"),
])
def test_report_on_damaged_or_foreign_files(tmp_path, capsys, name, content, expected):
    _write_run(tmp_path / "run")
    (tmp_path / ("run" if name == "summary.json" else ".") / name).write_text(content)
    _one_line_exit_2(["report", str(tmp_path)], capsys, expected)


def test_report_and_compare_out_that_cannot_be_written(tmp_path, capsys):
    _write_run(tmp_path / "runs" / "a")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    _one_line_exit_2(["report", str(tmp_path / "runs"), "--out", str(a_file)], capsys, "is a file, not a folder")
    _one_line_exit_2(["report", str(tmp_path / "runs"), "--out", "/proc/nope"], capsys, "cannot write there")
    matrix = tmp_path / "m.yaml"
    matrix.write_text(f"methods: [single]\ntasks: {{gsm8k: {{data: {TINY}}}}}\n")
    _one_line_exit_2(["compare", "--config", str(matrix), "--out", str(a_file)], capsys, "is a file, not a folder")
    _one_line_exit_2(["compare", "--config", str(matrix), "--out", "/proc/nope"], capsys, "cannot write there")


def test_report_skips_a_torn_line_without_touching_the_file(tmp_path, capsys):
    _write_run(tmp_path / "run", outcomes=(True, True, False))
    results = tmp_path / "run" / "results.jsonl"
    results.write_bytes(results.read_bytes() + b'{"id": "gsm8k-test-3", "corr')  # a writer cut off mid-line
    before = results.read_bytes(), results.stat().st_mtime_ns
    assert main(["report", str(tmp_path)]) == 0
    assert (results.read_bytes(), results.stat().st_mtime_ns) == before
    assert "| single | 3 × 1 | 0.667 (2/3)" in (tmp_path / "report.md").read_text()


def test_report_marks_unfinished_cells(tmp_path, capsys):
    _compare_folder(tmp_path, done=4, total=12)
    assert main(["report", str(tmp_path)]) == 0
    text = (tmp_path / "report.md").read_text()
    assert "**Incomplete: 8 of 12 cells have not finished**" in text
    assert "| single (unfinished: seed 4, 5, 6, 7, 8, 9, 10, 11) | 2 × 4 |" in text
    _compare_folder(tmp_path / "none", done=0, total=2)
    assert main(["report", str(tmp_path / "none")]) == 2  # nothing finished: still one line
    finished = tmp_path / "all"
    _compare_folder(finished, done=2, total=2)
    assert main(["report", str(finished)]) == 0
    assert "Incomplete" not in (finished / "report.md").read_text()


def test_compare_json_has_no_api_key(tmp_path):
    key, short = "sk-compare-secret-123456", "k1"
    matrix = tmp_path / "m.yaml"
    matrix.write_text(f"settings: {{api_key: {key}, mode: api, model: m, base_url: 'http://127.0.0.1:9/v1'}}\n"
                      f"methods: {{single: {{api_key: {short}}}}}\ntasks: {{gsm8k: {{data: {TINY}}}}}\n")
    recipe = CompareRecipe(CompareConfig.from_yaml(matrix), tmp_path / "out")
    recipe.setup()
    text = (tmp_path / "out" / "compare.json").read_text()
    assert key not in text and f'"api_key": "{short}"' not in text
    state = json.loads(text)
    assert state["matrix"]["settings"]["api_key"] == "***" and state["matrix"]["methods"]["single"]["api_key"] == "***"


def test_plot_with_a_checkpoint_that_does_not_fit(tmp_path, capsys):
    ckpt = tmp_path / "bad.pt"
    torch.save({"config": {"method": "gcache", "model": "tiny-random-qwen3", "dataset": "gsm8k"},
                "team": {"fuser.gates": torch.zeros(3, 2), "bogus": torch.zeros(1)}}, ckpt)
    _one_line_exit_2(["plot", str(ckpt), "--out", str(tmp_path / "p")], capsys,
                     f"checkpoint {ckpt} does not fit the team")


def test_serve_on_a_device_this_machine_lacks(capsys, caplog):
    device = f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"
    _one_line_exit_2(["serve", "--model", "tiny-random-qwen3", "--device", device], capsys, f"--device {device}")
    assert "loading" not in caplog.text.lower()  # refused before the model loads


def test_config_error_path_imports_neither_torch_nor_openai(tmp_path):
    import subprocess
    import sys

    code = ("import sys\nfrom gcache.cli import main\n"
            f"rc = main(['eval', '--method', 'single', '--data', {TINY!r}, '--split', 'validation', '--out', "
            f"{str(tmp_path / 'o')!r}])\nprint(rc, sorted(m for m in ('torch', 'openai', 'httpx') if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.split("\n")[0] == "2 []", (proc.stdout, proc.stderr)
    assert proc.stderr.strip().splitlines() == ["gcache eval: error: --split: unknown value 'validation'; "
                                                "choose one of train, test"]
