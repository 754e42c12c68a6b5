"""Learning through the real recipes: ``TrainRecipe`` learns a rewarded directed graph that ``EvalRecipe`` then
runs; training the fuser lowers the held-out gold-answer NLL; training and evaluation use the same fuser bias;
evaluation refuses training questions.

Everything runs the 2-layer random Qwen3 end to end (embedder, GNN, executor, fuser, checkpoints).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gcache.config import ConfigError, RunConfig
from gcache.recipes import _components as C
from gcache.recipes.eval import EvalRecipe
from gcache.recipes.train import TrainRecipe, answer_target

ASSETS = Path(__file__).parents[1] / "assets"
TRAIN = str(ASSETS / "tiny_gsm8k_train.jsonl")
HELD_OUT = str(ASSETS / "tiny_gsm8k.jsonl")
# alone_prob 0.01: the untrained policy reads its agents (each with p 0.78), so these tests exercise the team
FAST = dict(model="tiny-random-qwen3", latent_steps=1, max_new_tokens=2, agents=3, alone_prob=0.01)

pytestmark = pytest.mark.integration

# Agents 0, 1, 2 are the gsm8k prompt set's first three roles. The rewarded graph runs against their order:
# Programming Expert -> Math Solver and Mathematical Analyst -> Math Solver, nothing else.
TARGET = torch.tensor([[0, 0, 0], [1, 0, 0], [1, 0, 0]], dtype=torch.bool)


def hamming_utility(outcome) -> float:
    """Dense synthetic reward: minus the number of ordered pairs on which the drawn graph differs from TARGET."""
    return -float((outcome.draw.graph.spatial != TARGET).sum())


@pytest.mark.slow
def test_rewarded_directed_graph_is_what_eval_runs(tmp_path):
    cfg = RunConfig(method="gcache", data=TRAIN, split="train", out=str(tmp_path / "train"), batch_size=3, steps=40,
                    samples_per_question=4, fuser_loss_weight=0.0, **FAST)
    recipe = TrainRecipe(cfg, utility_fn=hamming_utility)
    recipe.setup()
    ex = recipe.examples[0]
    with torch.no_grad():
        start = recipe.team.edge_probs([ex.question])[0].spatial
    assert float(start[2, 0]) < 0.9 or float(start[0, 2]) > 0.1  # not already there
    recipe.train()
    history = recipe.history
    assert history[-1]["reward"] > history[0]["reward"]

    for mode in ("sample", "map"):  # the seeded sample G-Designer evaluates with, and the most probable DAG
        out = tmp_path / f"eval-{mode}"
        ev = EvalRecipe(RunConfig(method="gcache", checkpoint=str(tmp_path / "train"), data=HELD_OUT,
                                  out=str(out), eval_graph=mode, batch_size=5, **FAST))
        ev.setup()
        summary = ev.run()
        rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
        assert len(rows) == 5
        for row in rows:  # direction included: 2 -> 0 and 1 -> 0, never 0 -> 2 or 0 -> 1
            assert row["graph"]["spatial"] == TARGET.int().tolist(), (mode, row["graph"])
        assert summary["config"]["eval_graph"] == mode


@pytest.mark.slow
def test_fuser_training_lowers_held_out_nll(tmp_path):
    cfg = RunConfig(method="gcache", data=TRAIN, split="train", out=str(tmp_path), batch_size=3, steps=12,
                    samples_per_question=2, topology="complete", **FAST)
    recipe = TrainRecipe(cfg)
    recipe.setup()
    held_out = recipe.task.load(HELD_OUT, split="test")

    def mean_nll() -> float:
        draws = recipe.team.draw(held_out[0].question, [None])  # a fixed topology: the same graph for all
        plan, soft = C.plan_for(cfg, recipe.team, draws * len(held_out))
        with torch.no_grad():
            nll = recipe.executor.answer_nll(plan, [e.question for e in held_out],
                                             [answer_target(recipe.task, e) for e in held_out], soft)
        return float(nll.mean())

    before = mean_nll()
    recipe.train()
    after = mean_nll()
    train_nll = [h["answer_nll"] for h in recipe.history]
    assert train_nll[-2] < train_nll[0] and train_nll[-1] < train_nll[1]  # the same two batches, 5 epochs apart
    # A random 2-layer model barely reads its context (muting every received slot moves its held-out NLL by only
    # +0.010), so the margin is small, but deterministic and 500x float noise: measured 5.5977 -> 5.5959.
    assert after < before - 5e-4, (before, after)


def test_train_and_eval_use_the_same_fuser_bias(tmp_path):
    """Soft edges included: the bias the fuser hands the model for a question and graph is the same in a training
    rollout and in evaluation (a fuser term used in only one of them fails this)."""
    out = tmp_path / "train"
    cfg = RunConfig(method="gcache", data=TRAIN, split="train", out=str(out), batch_size=2, steps=1, soft_edges=True,
                    baseline="ma", samples_per_question=1, **FAST)
    recipe = TrainRecipe(cfg, utility_fn=lambda outcome: 1.0)
    recipe.setup()
    recipe.train()  # moves every parameter, then writes the checkpoint evaluation loads

    def record_biases(team) -> list[torch.Tensor]:
        seen: list[torch.Tensor] = []
        team.fuser.register_forward_hook(lambda module, args, kwargs_out: seen.append(kwargs_out[1].detach().clone()))
        return seen

    ev = EvalRecipe(RunConfig(method="gcache", checkpoint=str(out), data=HELD_OUT, limit=1, out=str(tmp_path / "ev"),
                              eval_graph="map", **FAST))
    ev.setup()
    eval_biases = record_biases(ev.team)
    ev.run()

    question = ev.examples[0]
    train_biases = record_biases(recipe.team)
    with torch.no_grad():
        draw = recipe.team.draw(question.question, [None], "map")[0]  # the graph eval ran
    recipe.draw_graphs = lambda batch, step: [[draw]]
    recipe.train_step([question])
    # training scores the gold answer and decodes from the decision node's context, so it may fuse that context
    # twice; every bias either side hands the model is one the other hands it too
    assert eval_biases and train_biases
    assert all(any(torch.equal(a, b) for b in train_biases) for a in eval_biases)
    assert all(any(torch.equal(a, b) for b in eval_biases) for a in train_biases)
    assert any(bool((a != 0).any()) for a in eval_biases)  # trained, with soft edges: a real bias


def test_eval_refuses_questions_it_was_trained_on(tmp_path):
    out = tmp_path / "train"
    cfg = RunConfig(method="gcache", data=TRAIN, split="train", out=str(out), batch_size=2, steps=1, **FAST)
    recipe = TrainRecipe(cfg)
    recipe.setup()
    recipe.train()
    ev = EvalRecipe(RunConfig(method="gcache", checkpoint=str(out), data=TRAIN, split="test", out=str(tmp_path / "e"),
                              **FAST))
    with pytest.raises(ConfigError, match="6 of the 6 questions to evaluate were training questions"):
        ev.setup()
    with pytest.raises(ConfigError, match="training reads training questions only"):
        TrainRecipe(RunConfig(method="gcache", data=HELD_OUT, split="test", out=str(tmp_path / "t2"), **FAST)).setup()
