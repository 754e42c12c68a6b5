"""The Python API (``gcache.load_agents`` / ``evaluate`` / ``train`` / ``compare`` / ``report``), checked against
what the ``gcache`` command writes: the answers of ``load_agents`` are the records of a ``gcache eval`` run (a
separate process) with the same settings, ``evaluate``'s records and summary are that run's files, ``train``'s
callback sees every entry of ``history.json``, ``report`` returns ``report.md``; the command calls these functions;
``import gcache`` stays free of torch; the docstrings' examples run."""

from __future__ import annotations

import doctest
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import gcache
from gcache import python_api
from gcache.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "tests" / "assets"
TINY = str(ASSETS / "tiny_gsm8k.jsonl")
TINY_TRAIN = str(ASSETS / "tiny_gsm8k_train.jsonl")
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
# A learned latent team whose untrained policy reads its team for some questions (each draws its own graph), in
# batches of 2
# (3 questions: a full batch and a short one).
SETTINGS = dict(method="gcache", model="tiny-random-qwen3", data=TINY, limit=3, batch_size=2, max_new_tokens=4,
                latent_steps=1, alone_prob=0.3, seed=3)


def _flags(settings: dict) -> list[str]:
    return [x for k, v in settings.items() for x in (f"--{k.replace('_', '-')}", str(v))]


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]


def _without(record: dict, *keys: str) -> dict:
    return {k: v for k, v in record.items() if k not in keys}


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> Path:
    """A ``gcache eval`` run of SETTINGS, in its own process."""
    out = tmp_path_factory.mktemp("cli") / "eval"
    done = subprocess.run([sys.executable, "-m", "gcache", "-q", "eval", *_flags(SETTINGS), "--no-progress",
                           "--out", str(out)], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def test_import_gcache_loads_no_torch_and_exports_the_api_lazily():
    code = ("import sys, gcache\n"
            "assert 'torch' not in sys.modules and 'gcache.python_api' not in sys.modules\n"
            "import gcache.python_api as api\n"
            "assert 'torch' not in sys.modules\n"
            "for name in ('load_agents', 'Agents', 'Answer', 'evaluate', 'Evaluation', 'train', 'Training',\n"
            "             'compare', 'report', 'Report', 'make_config'):\n"
            "    assert getattr(gcache, name) is getattr(api, name), name\n"
            "    assert name in gcache.__all__ and name in dir(gcache)\n"
            "assert gcache.RunConfig.__module__ == 'gcache.config'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    with pytest.raises(AttributeError, match="no attribute 'nonesuch'"):
        gcache.nonesuch  # noqa: B018


def test_answers_are_the_records_of_gcache_eval(cli_run):
    expected = _records(cli_run)
    assert len(expected) == 3 and not all(r["alone"] for r in expected)  # some decision node read the team
    with gcache.load_agents(**{k: v for k, v in SETTINGS.items() if k not in ("data", "limit")},
                            progress=False) as agents:
        answers = agents.answer([r["question"] for r in expected], golds=[r["gold"] for r in expected])
        ungraded = agents.answer(expected[0]["question"])
    assert [_without(a.record, "id", "seconds") for a in answers] == [_without(r, "id", "seconds") for r in expected]
    for a, r in zip(answers, expected):
        assert (a.text, a.prediction, a.correct, a.graph, a.alone) == (r["output"], r["prediction"], r["correct"],
                                                                      r["graph"], r["alone"])
        assert (a.prompt_tokens, a.completion_tokens, a.latent_steps) == (
            r["prompt_tokens"], r["completion_tokens"], r["latent_steps"])
        assert a.diagnostics == r["diagnostics"] and a.agent_outputs == r.get("agent_outputs", {})
    assert ungraded[0].correct is None and ungraded[0].text == expected[0]["output"]
    assert sum(a.latent_steps for a in answers) > 0


def test_evaluate_returns_the_cli_runs_records_and_summary_and_resumes_in_its_folder(cli_run):
    in_memory = gcache.evaluate(**SETTINGS, progress=False)
    expected = _records(cli_run)
    assert in_memory.out is None
    assert [_without(r, "seconds") for r in in_memory.records] == [_without(r, "seconds") for r in expected]
    summary = json.loads((cli_run / "summary.json").read_text())
    for key in ("accuracy", "accuracy_strict", "counts", "metrics", "answered_alone", "identity"):
        assert in_memory.summary[key] == summary[key], key
    assert [a.text for a in in_memory.answers] == [r["output"] for r in expected]

    before = (cli_run / "results.jsonl").read_bytes()
    resumed = gcache.evaluate(gcache.make_config(SETTINGS), out=cli_run, progress=False)  # all done: runs nothing
    assert (cli_run / "results.jsonl").read_bytes() == before
    assert resumed.out == cli_run and resumed.records == expected


def test_train_calls_on_step_with_each_history_entry_and_resumes(tmp_path):
    seen: list[dict] = []
    settings = dict(method="gdesigner", model="tiny-random-qwen3", data=TINY_TRAIN, batch_size=1, agents=2,
                    samples_per_question=2, max_new_tokens=2, latent_steps=1, tensorboard=False, progress=False)
    run = gcache.train(steps=2, out=tmp_path / "train", on_step=seen.append, **settings)
    history = json.loads((tmp_path / "train" / "history.json").read_text())
    assert seen == history == run.history and [e["step"] for e in seen] == [1, 2]
    assert run.result["steps"] == 2 and run.team == tmp_path / "train" / "team"
    assert (run.team / "model.safetensors").is_file()
    more = gcache.train(steps=3, out=tmp_path / "train", on_step=seen.append, **settings)  # resumes at step 2
    assert [e["step"] for e in seen] == [1, 2, 3] and more.history[:2] == history


def test_train_defaults_to_gcache_on_the_train_split():
    cfg = gcache.make_config({"method": "gcache", "split": "train"})
    with pytest.raises(ConfigError, match="--out DIR is required"):
        gcache.train(model="tiny-random-qwen3", data=TINY_TRAIN)
    assert (cfg.method, cfg.split) == ("gcache", "train")


def test_compare_and_report_return_what_they_write(tmp_path):
    out = tmp_path / "cmp"
    state = gcache.compare({"methods": ["single", "latentmas_seq"], "tasks": {"gsm8k": {"data": TINY}}}, out,
                           model="tiny-random-qwen3", limit=2, max_new_tokens=2, latent_steps=1, progress=False)
    assert state == json.loads((out / "compare.json").read_text())
    assert [(c["method"], c["status"], c["answered"]) for c in state["cells"]] == [
        ("single", "done", 2), ("latentmas_seq", "done", 2)]
    for cell in state["cells"]:
        records = _records(out / cell["out"])
        assert cell["accuracy"] == sum(r["correct"] for r in records) / len(records)
    done = gcache.report(out)
    assert done.path == out / "report.md" and done.markdown == done.path.read_text()
    assert "| single |" in done.markdown and "| latentmas_seq |" in done.markdown
    assert done.plots and all(p.read_bytes().startswith(b"\x89PNG") for p in done.plots)


def test_make_config_names_a_bad_setting():
    with pytest.raises(ConfigError, match="unknown setting 'latent_step'.*latent_steps"):
        gcache.make_config(latent_step=3)
    with pytest.raises(ConfigError, match="--latent-steps"):
        gcache.make_config(latent_steps=-1)
    base = gcache.make_config(method="single")
    assert gcache.make_config(base, limit=2).limit == 2 and base.limit is None  # a copy, not the same object
    with pytest.raises(ValueError, match="2 gold answers for 1 questions"):
        python_api.Agents.answer(object(), ["q"], golds=["1", "2"])  # checked before anything runs


def test_the_command_is_a_layer_over_the_api(tmp_path, monkeypatch, capsys):
    calls = []

    def fake_evaluate(cfg):
        calls.append(cfg)
        return python_api.Evaluation(summary={"method": cfg.method, "accuracy": 0.5, "accuracy_filter": "flexible",
                                              "accuracy_strict": 0.5, "counts": {"errors": 0, "questions": 2},
                                              "per_question": {"seconds": 1.0}}, records=[], out=tmp_path)

    monkeypatch.setattr(python_api, "evaluate", fake_evaluate)
    from gcache.cli import main

    assert main(["eval", "--method", "single", "--limit", "2", "--out", str(tmp_path)]) == 0
    assert [(c.method, c.limit) for c in calls] == [("single", 2)]
    assert json.loads(capsys.readouterr().out)["accuracy"] == 0.5


def test_docstring_examples_run(monkeypatch):
    monkeypatch.chdir(ROOT)  # the examples name tests/assets/... from the repository root
    result = doctest.testmod(python_api, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 8 and result.failed == 0
