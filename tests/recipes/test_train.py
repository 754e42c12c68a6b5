"""``gcache train``: one step trains every trainable part and no LLM weight; a kill -9 resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gcache.cli import main
from gcache.config import RunConfig
from gcache.recipes.eval import EvalRecipe
from gcache.recipes.train import TrainRecipe

TINY = str(Path(__file__).parents[1] / "assets" / "tiny_gsm8k.jsonl")  # held-out questions
TINY_TRAIN = str(Path(__file__).parents[1] / "assets" / "tiny_gsm8k_train.jsonl")  # training questions
FAST = ["--model", "tiny-random-qwen3", "--max-new-tokens", "4", "--latent-steps", "1"]

pytestmark = pytest.mark.integration


def _checksum(model: torch.nn.Module) -> float:
    return float(sum(p.double().sum() for p in model.parameters()))


def test_one_step_trains_every_part_and_no_llm_weight(tmp_path):
    cfg = RunConfig(method="gcache", data=TINY_TRAIN, split="train", limit=2, out=str(tmp_path),
                    model="tiny-random-qwen3", max_new_tokens=4, latent_steps=1, batch_size=1, steps=1, rounds=2,
                    agents=3, soft_edges=True, baseline="none", samples_per_question=2, fuser_grad="graph")
    # Utility 1 for every graph: with the seed's plain -log π · U every edge draw gets a gradient.
    recipe = TrainRecipe(cfg, utility_fn=lambda outcome: 1.0)
    recipe.setup()
    model = recipe.engine.model
    assert not any(p.requires_grad for p in model.parameters())
    llm_before = _checksum(model)
    before = {n: p.detach().clone() for n, p in recipe.team.named_parameters()}
    groups = {"gcn": "policy.gnn.convs", "mlp": "policy.gnn.mlp", "spatial heads": "policy.gnn.spatial",
              "temporal heads": "policy.gnn.temporal", "fuser gates": "fuser.gates", "fuser edges": "fuser.edge_logits",
              "fuser slot kinds": "fuser.kind_logits"}
    names = dict(recipe.team.named_parameters())
    for label, prefix in groups.items():
        assert any(n.startswith(prefix) for n in names), f"no {label} parameters"
    entry = recipe.train_step(recipe._batch(0))
    assert entry["answer_nll"] > 0
    for n, p in recipe.team.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{n} got no gradient"
        assert not torch.equal(p.detach(), before[n]), f"{n} did not change"
    assert all(p.grad is None for p in model.parameters())
    assert _checksum(model) == llm_before


@pytest.mark.slow
def test_kill_9_during_train_resumes_from_last_step(tmp_path):
    out = tmp_path / "train"
    cmd = [sys.executable, "-m", "gcache", "train", "--method", "gdesigner", "--data", TINY_TRAIN, "--split", "train",
           "--batch-size", "1", "--steps", "4", "--agents", "2", "--samples-per-question", "2", "--out", str(out),
           *FAST]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    history = out / "history.json"
    deadline = time.time() + 300
    while time.time() < deadline:
        if history.is_file() and len(json.loads(history.read_text())) >= 1:
            break
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = json.loads(history.read_text())
    assert 1 <= len(done) < 4
    ckpt = torch.load(out / "train_state.pt", weights_only=True)
    assert ckpt["step"] == len(done)
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    final = json.loads(history.read_text())
    assert [e["step"] for e in final] == [1, 2, 3, 4]
    assert final[:len(done)] == done  # finished steps were neither lost nor redone
    assert torch.load(out / "train_state.pt", weights_only=True)["step"] == 4


def test_eval_from_checkpoint_and_plot(tmp_path):
    out = tmp_path / "train"
    assert main(["train", "--method", "gcache", "--data", TINY_TRAIN, "--split", "train", "--batch-size", "1",
                 "--steps", "1", "--agents", "2", "--out", str(out), *FAST]) == 0
    assert main(["eval", "--checkpoint", str(out), "--data", TINY, "--limit", "2", "--out",
                 str(tmp_path / "eval"), *FAST]) == 0
    rows = [json.loads(x) for x in (tmp_path / "eval" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all("graph" in r for r in rows)
    assert all(r["graph"]["agents"] == rows[0]["graph"]["agents"] for r in rows)
    # TensorBoard got the step's scalars (read back with TensorBoard's own reader).
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    history = json.loads((out / "history.json").read_text())
    for key in ("reward", "answer_nll", "reinforce_loss"):
        assert [(e.step, e.value) for e in events.Scalars(key)] == [(1, pytest.approx(history[0][key]))]
    assert main(["plot", str(out), "--data", TINY, "--limit", "2"]) == 0
    for name in ("topology.png", "training_curves.png"):
        png = out / name
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_question_whose_answer_does_not_fit_is_skipped_and_the_step_goes_on(tmp_path, caplog):
    """The long question fits every node before the decision node (headroom: one latent step) but not the decision
    node's answer (headroom: ``--max-new-tokens``): it is dropped when the answers decode as one stacked batch, the
    short question still answers, and the step trains on it alone (no gold-answer scoring: nothing fails earlier)."""
    from gcache.agents.prompts import agent_messages
    from gcache.reasoning._latent import render_chat

    short_q = "Ben has 5 marbles and finds 2 more. How many marbles?"
    probe = RunConfig(method="gcache", data=TINY_TRAIN, split="train", limit=1, out=str(tmp_path / "probe"),
                      model="tiny-random-qwen3", max_new_tokens=4, latent_steps=1, agents=2)
    recipe = TrainRecipe(probe)
    recipe.setup()
    tok, team, instruction = recipe.engine.tokenizer, recipe.team, recipe.task.answer_instruction

    def longest_prompt(question: str) -> int:  # over every role, answering or not, with a latent context or not
        return max(len(tok(render_chat(tok, agent_messages(role, question, answer_instruction=instruction,
                                                            latent_context=lc, final=final)))["input_ids"])
                   for role in team.roles.values() for lc in (False, True) for final in (False, True))

    answer = 200  # --max-new-tokens
    overhead = longest_prompt(short_q)
    # the short question's decision node holds its prompt, both agents' messages (prompt + 1 step) and its answer
    needed = 3 * overhead + 2 + answer + 50
    long_q = "Count the apples."
    while longest_prompt(long_q + " How many apples?") < needed:
        long_q += " An apple fell." * 20
    long_q += " How many apples?"
    context = longest_prompt(long_q) + 1  # the long question's agents fit; its answer cannot, whatever the graph
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"question": short_q, "answer": "5 + 2 = 7\n#### 7"}) + "\n"
                    + json.dumps({"question": long_q, "answer": "#### 60"}) + "\n")
    cfg = RunConfig(method="gcache", data=str(data), split="train", limit=2, out=str(tmp_path / "run"),
                    model="tiny-random-qwen3", max_new_tokens=answer, latent_steps=1, batch_size=2, steps=1, agents=2,
                    samples_per_question=2, utility="correct", fuser_loss_weight=0.0, max_context=context,
                    alone_prob=0.01)  # the team is read (a question answered alone would not reach the long context)
    recipe = TrainRecipe(cfg)
    recipe.setup()
    with caplog.at_level("WARNING", logger="gcache.recipes.train"):
        entry = recipe.train_step(recipe._batch(0))
    skipped = [r.getMessage() for r in caplog.records if "skipped this step" in r.getMessage()]
    assert skipped and all("gsm8k-train-1" in m for m in skipped), skipped
    assert entry["skipped"] == 1
    assert entry["accuracy"] is not None  # the short question's two graphs answered


def test_rows_that_share_a_graph_run_at_most_batch_size_at_a_time(tmp_path):
    """Every (question, draw) row of a step runs once, and no forward holds more than --batch-size rows, even when
    all 2 x 4 rows drew one graph (the scoring pass keeps its activations for the backward)."""
    cfg = RunConfig(method="gcache", data=TINY_TRAIN, split="train", limit=2, out=str(tmp_path), batch_size=2,
                    steps=1, agents=2, samples_per_question=4, model="tiny-random-qwen3", max_new_tokens=4,
                    latent_steps=1, alone_prob=0.01)  # map graph: both agents read
    recipe = TrainRecipe(cfg)
    recipe.setup()
    batch = recipe._batch(0)
    with torch.no_grad():
        draws = [recipe.team.draw(ex.question, [None] * 4, "map") for ex in batch]  # one graph for every row
    recipe.draw_graphs = lambda batch, step: draws
    sizes: list[int] = []
    start = recipe.executor.start
    recipe.executor.start = lambda plan, questions, *a, **k: sizes.append(len(questions)) or start(plan, questions,
                                                                                                   *a, **k)
    entry = recipe.train_step(batch)
    assert sorted(sizes) == [2, 2, 2, 2] and entry["skipped"] == 0


def test_rows_that_answer_alone_run_once_per_question_then_come_from_the_cache(tmp_path):
    """Under greedy decoding and the correct utility, every draw of a question that answers alone earns the single
    agent's outcome: the question runs once in its first step, never again, and each such draw gets that outcome."""
    cfg = RunConfig(method="gcache", data=TINY_TRAIN, split="train", limit=2, out=str(tmp_path), batch_size=2,
                    steps=2, agents=2, samples_per_question=4, model="tiny-random-qwen3", max_new_tokens=4,
                    latent_steps=1)
    recipe = TrainRecipe(cfg)
    recipe.setup()
    batch = recipe._batch(0)
    with torch.no_grad():
        recipe.team.policy.gnn.read_offset.fill_(-50.0)  # every draw answers alone
    ran: list[list[str]] = []
    start = recipe.executor.start
    recipe.executor.start = lambda plan, questions, *a, **k: ran.append(list(questions)) or start(plan, questions,
                                                                                                  *a, **k)
    first = recipe.train_step(batch)
    assert sorted(q for group in ran for q in group) == sorted(ex.question for ex in batch)  # once per question
    assert first["alone"] == 1.0 and first["reward"] in (0.0, 0.25, 0.5, 0.75, 1.0)
    # the cache holds each question's single-agent outcome, which gcache eval --method single reproduces
    from gcache.recipes.train import question_hash
    assert set(recipe.alone_outcomes) == {question_hash(ex.question) for ex in batch}
    ran.clear()
    second = recipe.train_step(batch)
    assert ran == [] and second["reward"] == first["reward"]  # nothing ran: every outcome came from the cache
    single = EvalRecipe(RunConfig(method="single", data=TINY_TRAIN, split="train", limit=2, max_new_tokens=4,
                                  model="tiny-random-qwen3", out=str(tmp_path / "single")))
    single.setup()
    single.run()
    by_q = {r["question"]: r["correct"] for r in single.store.records()}
    assert all(recipe.alone_outcomes[question_hash(q)] == c for q, c in by_q.items())
