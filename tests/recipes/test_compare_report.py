"""``gcache compare`` (a resumable matrix of eval runs sharing loaded models) and ``gcache report`` (tables with
intervals and paired counts, PNG plots), checked against counts made independently from the runs' results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gcache.cli import main
from gcache.recipes.compare import CompareConfig, CompareRecipe
from gcache.recipes.report import collect_runs, summarize, write_report
from gcache.scoring import sign_test, wilson_interval

ASSETS = Path(__file__).parents[1] / "assets"
TINY = str(ASSETS / "tiny_gsm8k.jsonl")
PNG = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.integration


def read_results(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]


def test_compare_runs_the_matrix_shares_models_and_resumes(tmp_path):
    config = tmp_path / "matrix.yaml"
    config.write_text(
        "baseline: single\nseeds: [0, 1]\n"
        "settings: {model: tiny-random-qwen3, limit: 3, max_new_tokens: 4, latent_steps: 1, temperature: 0.7}\n"
        f"methods: {{single: {{}}, latentmas_seq: {{}}}}\ntasks: {{gsm8k: {{data: {TINY}}}}}\n")
    out = tmp_path / "cmp"
    recipe = CompareRecipe(CompareConfig.from_yaml(config), out)
    recipe.setup()
    recipe.run()
    assert len(recipe.models) == 1  # one model load for four cells
    state = json.loads((out / "compare.json").read_text())
    assert [(c["task"], c["method"], c["seed"], c["status"]) for c in state["cells"]] == [
        ("gsm8k", m, s, "done") for m in ("single", "latentmas_seq") for s in (0, 1)]
    for cell in state["cells"]:
        summary = json.loads((out / cell["out"] / "summary.json").read_text())
        assert summary["seeds"] == [cell["seed"]] and summary["method"] == cell["method"]
        assert summary["counts"]["answered"] == 3 and summary["decoding"]["temperature"] == 0.7
    first = read_results(out / "gsm8k/single/seed0")
    seed1 = read_results(out / "gsm8k/single/seed1")
    assert [r["output"] for r in first] != [r["output"] for r in seed1]  # seeds sample differently
    mtimes = {c["out"]: (out / c["out"] / "results.jsonl").stat().st_mtime_ns for c in state["cells"]}
    assert main(["compare", "--config", str(config), "--out", str(out)]) == 0  # rerun: resumes, redoes nothing
    assert {c["out"]: (out / c["out"] / "results.jsonl").stat().st_mtime_ns for c in state["cells"]} == mtimes

    # The report over it, against counts made here from the results files.
    report, plots = write_report(out)
    text = report.read_text()
    rows = {m: [r for s in (0, 1) for r in read_results(out / f"gsm8k/{m}/seed{s}")] for m in ("single",
                                                                                              "latentmas_seq")}
    for method, records in rows.items():
        correct = sum(r["scores"]["flexible"]["correct"] for r in records)
        low, high = wilson_interval(correct, 6)
        assert f"| {method} | 3 × 2 | {correct / 6:.3f} ({correct}/6) [{low:.3f}, {high:.3f}]" in text
    assert {p.name for p in plots} == {"accuracy_vs_tokens.png", "accuracy_vs_seconds.png"}
    assert all(p.read_bytes().startswith(PNG) for p in plots)
    assert "seeds: 0, 1" in text and "the first 3 questions of gsm8k test (--limit 3)" in text


def _write_run(folder: Path, method: str, seed: int, outcomes: list[bool], tokens: int, seconds: float,
               graphs: list[dict] | None = None, checkpoint: str | None = None) -> None:
    folder.mkdir(parents=True)
    records = []
    for i, ok in enumerate(outcomes):
        record = {"id": f"gsm8k-test-{i}", "correct": ok, "completion_tokens": tokens, "latent_steps": 0,
                  "seconds": seconds, "scores": {"strict": {"prediction": None, "correct": False},
                                                 "flexible": {"prediction": "1", "correct": ok}}}
        if graphs:
            record["graph"] = graphs[i % len(graphs)]
        records.append(record)
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = {"method": method, "dataset": "gsm8k", "seeds": [seed], "task_version": 2,
               "counts": {"questions": len(outcomes)}, "subset": {"name": f"{len(outcomes)} questions"},
               "config": {"method": method, "model": "m", "mode": "local", "temperature": 0.0, "top_p": 1.0,
                          "max_new_tokens": 8, "samples": 1, "latent_steps": 4, "realign": True,
                          "topology": "learned", "checkpoint": checkpoint}}
    (folder / "summary.json").write_text(json.dumps(summary))


def test_report_numbers_on_runs_with_known_outcomes(tmp_path):
    base = [True, False, True, False, False, True]
    mine = [True, True, False, True, True, True]   # vs base: wins 3 (q1, q3, q4), losses 1 (q2), ties 2
    _write_run(tmp_path / "single", "single", 0, base, tokens=100, seconds=2.0)
    chain = {"agents": ["A", "B", "C"], "spatial": [[0, 1, 0], [0, 0, 1], [0, 0, 0]],
             "temporal": [[0] * 3] * 3, "num_rounds": 1, "decision": "refer"}
    star = {"agents": ["A", "B", "C"], "spatial": [[0, 1, 1], [0, 0, 0], [0, 0, 0]],
            "temporal": [[0] * 3] * 3, "num_rounds": 1, "decision": "refer"}
    ckpt = tmp_path / "train"
    ckpt.mkdir()
    (ckpt / "history.json").write_text(json.dumps([{"step": i, "loss": 1.0 / i, "reward": 0.1 * i} for i in (1, 2, 3)]))
    _write_run(tmp_path / "gcache", "gcache", 0, mine, tokens=25, seconds=1.0, graphs=[chain, chain, star],
               checkpoint=str(ckpt))
    runs = collect_runs(tmp_path)
    rows = {r.method: r for r in summarize(runs, "single")}
    g = rows["gcache"]
    assert (g.wins, g.losses, g.ties) == (3, 1, 2) and g.p_value == pytest.approx(sign_test(3, 1))
    assert g.accuracy == pytest.approx(5 / 6) and (g.low, g.high) == pytest.approx(wilson_interval(5, 6))
    assert g.other_accuracy == 0.0  # strict found nothing
    assert g.token_ratio == pytest.approx(0.25) and g.time_ratio == pytest.approx(0.5)
    assert rows["single"].wins is None
    assert main(["report", str(tmp_path), "--baseline", "single"]) == 0
    text = (tmp_path / "report.md").read_text()
    assert "| gcache | 6 × 1 | 0.833 (5/6)" in text and "| 3/1/2 |" in text and "| 0.25x | 0.50x |" in text
    names = {p.name for p in tmp_path.glob("*.png")}
    assert names == {"accuracy_vs_tokens.png", "accuracy_vs_seconds.png", "training_curves_gcache.png",
                     "topology_gsm8k_gcache.png"}


def test_report_strict_filter_and_bad_input(tmp_path, capsys):
    _write_run(tmp_path / "a", "single", 0, [True, False], tokens=10, seconds=1.0)
    rows = summarize(collect_runs(tmp_path), None, "strict")
    assert rows[0].accuracy == 0.0 and rows[0].other_accuracy == 0.5
    assert main(["report", str(tmp_path), "--baseline", "nope"]) == 2
    assert "--baseline: 'nope' is not among the methods here (single)" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "is not a folder" in capsys.readouterr().err


@pytest.mark.parametrize("yaml_text, message", [
    ("methods: [single]\ntasks: [gsm8k]\nmodels: [x]\n", "unknown keys ['models']"),
    ("methods: [single]\ntasks: [gsm8k]\nbaseline: text_chain\n", "baseline 'text_chain' is not one of the methods"),
    ("methods: [telepathy]\ntasks: [gsm8k]\n", "methods.telepathy: 'telepathy' is not a method"),
    ("methods: {x: {method: telepathy}}\ntasks: [gsm8k]\n", "cell gsm8k/x/seed0: unknown method 'telepathy'"),
    ("methods: [single]\ntasks: [gsm8k]\nsettings: {latent_stepz: 3}\n", "latent_stepz"),
    ("methods: [single]\ntasks: [gsm8k]\nsettings: {seed: 3}\n", "set by compare for each cell"),
    ("methods: [single]\ntasks: [gsm8k]\nseeds: [1, 1]\n", "seeds repeat"),
    ("methods: [single]\ntasks: {gsm8k: {data: /no/such.jsonl}}\n", "--data /no/such.jsonl not found"),
    ("methods: [single]\ntasks: [gsm8k]\nsettings: {preset: nope}\n", "preset 'nope' not found"),
])
def test_compare_bad_matrix_is_one_clear_line(tmp_path, capsys, yaml_text, message):
    config = tmp_path / "m.yaml"
    config.write_text(yaml_text)
    assert main(["compare", "--config", str(config), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_compare_without_config_needs_methods_and_tasks(tmp_path, capsys):
    assert main(["compare", "--out", str(tmp_path), "--methods", "single"]) == 2
    assert "needs --config FILE, or --methods and --tasks" in capsys.readouterr().err
    assert main(["compare", "--out", str(tmp_path), "--methods", "single,text_chain", "--tasks", "gsm8k",
                 "--seeds", "3,4", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["gsm8k/single/seed3", "gsm8k/single/seed4",
                                                       "gsm8k/text_chain/seed3", "gsm8k/text_chain/seed4"]


def test_flags_narrow_a_matrix_file(capsys):
    config = Path(__file__).parents[2] / "src" / "gcache" / "configs" / "compare" / "smollm2_three_tasks.yaml"
    assert main(["compare", "--config", str(config), "--out", "/tmp/unused", "--methods", "latentmas_seq,single",
                 "--tasks", "svamp", "--seeds", "5", "--limit", "2", "--dry-run"]) == 0
    cells = [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()]
    assert cells == ["svamp/latentmas_seq/seed5", "svamp/single/seed5"]
    matrix = CompareConfig.from_yaml(config, {"limit": 2})
    (cell, *_) = matrix.cells("/tmp/unused")
    assert cell.config.limit == 2 and cell.config.max_new_tokens == 160 and cell.config.temperature == 0.6
