"""Trained teams as folders (safetensors + JSON + model card): a saved and reloaded team answers and scores exactly
as the trained one did, and a checkpoint crafted to run code on unpickling is refused by the loader, ``gcache
eval``, ``gcache plot`` and a resumed ``gcache train``, with one line and exit status 2, and nothing in it runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gcache.cli import main
from gcache.config import RunConfig
from gcache.recipes import _components as C
from gcache.recipes.eval import EvalRecipe
from gcache.recipes.train import TrainRecipe, answer_target, question_hash
from gcache.training import checkpointing
from gcache.training.checkpointing import CheckpointError, load_team
from gcache.training.team import eval_generator

from cli_assertions import one_line_exit_2 as _one_line_exit_2

ASSETS = Path(__file__).parents[1] / "assets"
TRAIN = str(ASSETS / "tiny_gsm8k_train.jsonl")
HELD_OUT = str(ASSETS / "tiny_gsm8k.jsonl")
# alone_prob 0.1: the decision node reads the agents, so the team's weights reach the answers and their NLL. At the
# default 0.75 the trained and the untrained team gave the same held-out NLL bit for bit (a decision node that
# reads nobody runs single's plan), so the check that a broken load would show failed.
FAST = dict(model="tiny-random-qwen3", latent_steps=1, max_new_tokens=6, agents=3, alone_prob=0.1)
FAST_FLAGS = ["--model", "tiny-random-qwen3", "--max-new-tokens", "2", "--latent-steps", "1"]

pytestmark = pytest.mark.integration


class _RunsCode:
    """Unpickling this calls ``exec``, which creates ``marker``: what a hostile checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def _hostile_checkpoint(path: Path, marker: Path) -> Path:
    """An old-style ``checkpoint.pt`` whose team entry runs code when fully unpickled."""
    path.parent.mkdir(parents=True, exist_ok=True)
    config = RunConfig(method="gcache", data=TRAIN, split="train", **FAST).to_dict()
    torch.save({"config": config, "team": _RunsCode(marker), "optimizer": {}, "step": 1, "history": []}, path)
    return path




def test_a_checkpoint_that_runs_code_is_refused_and_nothing_in_it_runs(tmp_path, capsys, caplog):
    marker = tmp_path / "payload-ran"
    hostile = _hostile_checkpoint(tmp_path / "hostile.pt", marker)
    run_folder = tmp_path / "old-run"  # an old train output folder: OUT/checkpoint.pt
    _hostile_checkpoint(run_folder / "checkpoint.pt", marker)

    with pytest.raises(CheckpointError, match="refusing .*hostile.pt.*could run code"):
        load_team(hostile)
    for source in (hostile, run_folder):
        _one_line_exit_2(["eval", "--method", "gcache", "--checkpoint", str(source), "--data", HELD_OUT, "--out",
                          str(tmp_path / "e"), *FAST_FLAGS], capsys, caplog, "refusing", "could run code")
        _one_line_exit_2(["plot", str(source), "--out", str(tmp_path / "p")], capsys, caplog, "refusing")
    # a resumed training run reads its state with weights_only too
    _one_line_exit_2(["train", "--method", "gcache", "--data", TRAIN, "--split", "train", "--out", str(run_folder),
                      "--steps", "2", *FAST_FLAGS], capsys, caplog, "refusing")
    resumable = tmp_path / "new-run"
    _hostile_checkpoint(resumable / checkpointing.TRAIN_STATE_NAME, marker)
    _one_line_exit_2(["train", "--method", "gcache", "--data", TRAIN, "--split", "train", "--out", str(resumable),
                      "--steps", "2", *FAST_FLAGS], capsys, caplog, "refusing", "train_state.pt")
    assert not marker.exists()

    # the payload is live: an unrestricted unpickler runs it (what torch.load(weights_only=False) used to do)
    torch.load(hostile, weights_only=False)
    assert marker.exists()


def _answers_and_nll(cfg: RunConfig, team, executor, task, examples) -> tuple[list[str], torch.Tensor]:
    """Greedy answers and gold-answer NLL of ``team`` on ``examples``, one question at a time, on the graph
    evaluation runs (the seeded sample)."""
    texts, nlls = [], []
    with torch.no_grad():
        for ex in examples:
            draws = team.draw(ex.question, [eval_generator(cfg.seed, ex.question)], cfg.eval_graph)
            plan, soft = C.plan_for(cfg, team, draws)
            texts.append(executor.run(plan, [ex.question], soft)[0].final_text)
            nlls.append(executor.answer_nll(plan, [ex.question], [answer_target(task, ex)], soft))
    return texts, torch.cat(nlls)


def test_a_saved_team_loads_back_to_the_same_answers_and_nll(tmp_path):
    out = tmp_path / "train"
    cfg = RunConfig(method="gcache", data=TRAIN, split="train", out=str(out), batch_size=2, steps=2, soft_edges=True,
                    samples_per_question=2, baseline="none", **FAST)
    # utility 1 without a baseline: every parameter gets a gradient (policy and fuser alike)
    recipe = TrainRecipe(cfg, utility_fn=lambda outcome: 1.0)
    recipe.setup()
    untrained = {k: v.clone() for k, v in recipe.team.state_dict().items()}
    recipe.train()
    recipe.team.eval()
    held_out = recipe.task.load(HELD_OUT, split="test", limit=3)
    eval_cfg = RunConfig(method="gcache", data=HELD_OUT, limit=3, out=str(tmp_path / "eval"), batch_size=1,
                         soft_edges=True, **FAST)
    texts, nll = _answers_and_nll(eval_cfg, recipe.team, recipe.executor, recipe.task, held_out)

    folder = out / checkpointing.TEAM_DIR
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "history.json",
                                                        "model.safetensors"]
    # the team's state dict, whatever keys it has, round-trips exactly
    loaded = load_team(folder)
    assert loaded.state_dict.keys() == recipe.team.state_dict().keys()
    assert all(torch.equal(loaded.state_dict[k], v) for k, v in recipe.team.state_dict().items())
    assert all(not torch.equal(untrained[k], v) for k, v in loaded.state_dict.items()
               if k.startswith(("policy.gnn.mlp", "fuser.")))  # training moved the policy and the fuser

    # evaluation rebuilds the team from the folder alone (settings from config.json) and runs the same answers
    ev = EvalRecipe(RunConfig(method="gcache", checkpoint=str(folder), data=HELD_OUT, limit=3, batch_size=1,
                              out=str(tmp_path / "eval"), **{**FAST, "agents": None}))
    ev.setup()
    assert (ev.cfg.agents, ev.cfg.soft_edges) == (3, True)  # taken from the folder, not from the command
    ev_texts, ev_nll = _answers_and_nll(ev.cfg, ev.team, ev.executor, ev.task, held_out)
    assert ev_texts == texts
    assert torch.equal(ev_nll, nll)
    summary = ev.run()
    rows = [json.loads(line) for line in (tmp_path / "eval" / "results.jsonl").read_text().splitlines()]
    assert [r["output"] for r in rows] == texts

    # a broken load would show: the untrained team scores the gold answers differently
    fresh = C.build_team(ev.cfg, recipe.engine.num_layers)
    fresh.load_state_dict(untrained)
    fresh.eval()
    fresh_executor = C.build_executor(ev.cfg, ev.task, ev.engine, None, fresh.fuser)
    _, untrained_nll = _answers_and_nll(ev.cfg, fresh, fresh_executor, ev.task, held_out)
    assert not torch.equal(untrained_nll, nll), (untrained_nll - nll)  # the check above is exact, so is this one

    # the settings, the provenance and the model card
    info = json.loads((folder / "config.json").read_text())
    assert info["base_model"] == "tiny-random-qwen3" and info["method"] == "gcache"
    assert info["prompt_set"] == "gsm8k" and info["team"]["soft_edges"] is True
    training = info["training"]
    assert training["steps"] == 2 and training["seed"] == 0 and training["split"] == "train"
    assert training["questions"]["count"] == 6
    assert training["questions"]["hashes"] == sorted(question_hash(ex.question) for ex in recipe.examples)
    assert info["gcache_version"] == __import__("gcache").__version__
    card = (folder / "README.md").read_text()  # rewritten by the evaluation above
    for text in ("tiny-random-qwen3", "gcache", "gsm8k", "| steps | 2 |", "| seed | 0 |", "6 from gsm8k split train",
                 *training["questions"]["hashes"]):
        assert text in card, text
    # the finished evaluation is recorded in the card
    recorded = json.loads((folder / "evaluations.json").read_text())
    assert [(e["questions"], e["accuracy"]) for e in recorded] == [(3, summary["accuracy"])]
    assert "the first 3 questions of gsm8k test" in card.split("## Evaluation results")[1]

    # the run folder, the team folder and config.json all name the same team
    assert load_team(out).weights_sha256 == load_team(folder / "config.json").weights_sha256 == loaded.weights_sha256


def test_old_checkpoint_files_still_load_and_damaged_folders_say_so(tmp_path, capsys, caplog):
    out = tmp_path / "train"
    recipe = TrainRecipe(RunConfig(method="gdesigner", data=TRAIN, split="train", out=str(out), batch_size=1,
                                   steps=1, samples_per_question=2, **{**FAST, "agents": 2}))
    recipe.setup()
    recipe.train()
    # the single file older versions wrote (tensors and plain data only) loads with weights_only
    old = tmp_path / "old" / "checkpoint.pt"
    old.parent.mkdir()
    torch.save(recipe._state(), old)
    team = load_team(old.parent)
    assert all(torch.equal(team.state_dict[k], v) for k, v in recipe.team.state_dict().items())
    assert team.train_question_hashes == recipe._state()["train_question_hashes"] and team.step == 1
    assert main(["eval", "--checkpoint", str(old), "--data", HELD_OUT, "--limit", "1", "--out",
                 str(tmp_path / "e"), *FAST_FLAGS]) == 0
    # converted once into a team folder: the same weights and provenance, no pickle left to read
    assert main(["convert-checkpoint", str(old.parent)]) == 0
    converted = load_team(old.parent / "team")
    assert converted.folder == old.parent / "team" and converted.step == 1
    assert converted.state_dict.keys() == team.state_dict.keys()
    assert all(torch.equal(converted.state_dict[k], v) for k, v in team.state_dict.items())
    assert converted.train_question_hashes == team.train_question_hashes
    assert converted.info["prompt_set"] == "gsm8k" and converted.num_layers == 0  # a text team: no fuser
    assert load_team(old.parent).folder == old.parent / "team"  # the folder now wins over the old file

    # weights that are not the ones config.json describes (a copy cut short, a hand edit) are refused
    weights = out / "team" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])
    _one_line_exit_2(["eval", "--checkpoint", str(out), "--data", HELD_OUT, "--out", str(tmp_path / "e2"),
                      *FAST_FLAGS], capsys, caplog, "model.safetensors does not match config.json")
    (out / "team" / "config.json").unlink()
    _one_line_exit_2(["plot", str(out / "team")], capsys, caplog, "config.json is missing")
    _one_line_exit_2(["eval", "--checkpoint", str(tmp_path / "nowhere"), "--data", HELD_OUT, "--out",
                      str(tmp_path / "e3"), *FAST_FLAGS], capsys, caplog, "checkpoint not found")
    # a hub id that the hub does not give (here: offline, as every test is) is one line too
    _one_line_exit_2(["eval", "--checkpoint", "nobody/no-such-team", "--data", HELD_OUT, "--out",
                      str(tmp_path / "e4"), *FAST_FLAGS], capsys, caplog,
                     "checkpoint not found: nobody/no-such-team is not a local path, and the hub did not give it")
    marker = tmp_path / "payload-ran"
    _one_line_exit_2(["convert-checkpoint", str(_hostile_checkpoint(tmp_path / "bad" / "checkpoint.pt", marker))],
                     capsys, caplog, "refusing")
    assert not marker.exists() and not (tmp_path / "bad" / "team").exists()
