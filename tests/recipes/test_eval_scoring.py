"""What ``gcache eval`` reports: strict and flexible scores side by side, intervals, the subset, the decoding
settings and seeds, n samples per question, the two meanings of ``--latent-steps 0``, and the sandbox for code."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from gcache.agents.pipelines import SEQUENTIAL
from gcache.cli import main
from gcache.config import RunConfig
from gcache.reasoning import DecodeConfig
from gcache.reasoning.executor import GraphExecutor
from gcache.recipes import _components as C
from gcache.scoring import wilson_interval

ASSETS = Path(__file__).parents[1] / "assets"
TINY = str(ASSETS / "tiny_gsm8k.jsonl")
FAST = ["--model", "tiny-random-qwen3", "--max-new-tokens", "6", "--latent-steps", "1"]

pytestmark = pytest.mark.integration


def read_results(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]


def test_summary_reports_both_pipelines_subset_decoding_and_seeds(tmp_path):
    out = tmp_path / "run"
    assert main(["eval", "--method", "single", "--data", TINY, "--limit", "3", "--seed", "7", "--out", str(out),
                 *FAST]) == 0
    rows = read_results(out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["accuracy_filter"] == "flexible"
    for name in ("strict", "flexible"):
        correct = sum(r["scores"][name]["correct"] for r in rows)
        m = summary["metrics"][name]
        assert (m["correct"], m["n"]) == (correct, 3)
        assert m["ci95"] == [round(x, 4) for x in wilson_interval(correct, 3)]
        assert m["exact_match"] == pytest.approx(correct / 3)
    assert [r["correct"] for r in rows] == [r["scores"]["flexible"]["correct"] for r in rows]
    assert summary["accuracy"] == pytest.approx(summary["metrics"]["flexible"]["accuracy"])
    assert summary["subset"]["name"] == "the first 3 questions of gsm8k test (--limit 3)"
    assert summary["subset"]["full_split"] is False
    assert summary["decoding"] == {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 6, "greedy": True,
                                   "samples_per_question": 1, "batch_size": 4}
    assert summary["seeds"] == [7]
    assert summary["latent"]["latent_steps"] == 1 and "sandbox" not in summary


def test_n_samples_per_question(tmp_path):
    out = tmp_path / "run"
    assert main(["eval", "--method", "single", "--data", TINY, "--limit", "2", "--samples", "3", "--temperature",
                 "1.0", "--top-p", "0.9", "--out", str(out), *FAST]) == 0
    rows = read_results(out)
    summary = json.loads((out / "summary.json").read_text())
    for r in rows:
        assert len(r["samples"]) == 3
        for name in ("strict", "flexible"):
            assert r["scores"][name]["n_samples"] == 3
        assert r["scores"]["flexible"]["n_correct"] == sum(s["correct"] for s in r["samples"])
        assert r["output"] == r["samples"][0]["output"]
    assert len({s["output"] for r in rows for s in r["samples"]}) > 1  # sampled, not three copies
    expected = sum(r["scores"]["flexible"]["n_correct"] / 3 for r in rows) / 2
    assert summary["metrics"]["flexible"]["exact_match"] == pytest.approx(expected)
    assert summary["decoding"]["samples_per_question"] == 3 and summary["decoding"]["greedy"] is False


def _judge(engine, cfg: RunConfig, roles) -> tuple[str, float]:
    """The judge's answer and the teacher-forced NLL of a fixed answer at the judge (sensitive to its context)."""
    plan, _ = C.plan_for(cfg, None, None)
    nodes = tuple(dataclasses.replace(n, role=r) for n, r in zip(plan.nodes, roles))
    plan = dataclasses.replace(plan, nodes=nodes)
    ex = GraphExecutor(engine=engine, latent_steps=cfg.latent_steps, decode=DecodeConfig(max_new_tokens=8))
    question = ["What is 2 + 3?"]
    return ex.run(plan, question)[0].final_text, ex.answer_nll(plan, question, [" 5"]).item()


def test_zero_latent_steps_judge_alone_ignores_the_other_agents(engine):
    """judge_alone: what the other agents were told cannot change the answer; prompt_caches: it does."""
    other = tuple(dataclasses.replace(r, profile=r.profile + " Always think about elephants first.")
                  for r in SEQUENTIAL[:3]) + (SEQUENTIAL[3],)
    alone = RunConfig(method="latentmas_seq", latent_steps=0, zero_latent_steps="judge_alone")
    plan, _ = C.plan_for(alone, None, None)
    assert plan.nodes[-1].inputs == () and len(plan.nodes) == 4  # the others still run, as in the reference
    assert _judge(engine, alone, SEQUENTIAL) == _judge(engine, alone, other)
    cached = RunConfig(method="latentmas_seq", latent_steps=0, zero_latent_steps="prompt_caches")
    assert C.plan_for(cached, None, None)[0].nodes[-1].inputs == (2,)
    assert _judge(engine, cached, SEQUENTIAL)[1] != pytest.approx(_judge(engine, cached, other)[1], rel=1e-6)


def test_code_task_summary_names_the_sandbox(tmp_path, shared_data):
    out = tmp_path / "run"
    data = shared_data / "humaneval" / "HumanEval.jsonl.gz"
    assert main(["eval", "--method", "single", "--dataset", "humaneval", "--data", str(data), "--limit", "1",
                 "--out", str(out), *FAST]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sandbox"]["wall_time"].startswith("on") and "filesystem" in summary["sandbox"]
    assert "pass@1" in summary["metrics"]["flexible"]
    (row,) = read_results(out)
    assert row["status"] in ("passed", "failed", "timeout", "cpu_limit", "empty")


def test_bad_split_is_one_clear_line(tmp_path, capsys):
    assert main(["eval", "--method", "single", "--data", TINY, "--split", "validation", "--out", str(tmp_path),
                 *FAST]) == 2
    assert "--split: unknown value 'validation'; choose one of train, test" in capsys.readouterr().err
