"""The single agent inside the learned policy (issue 16): a G-cache team whose decision node reads nobody is
``single``, bit for bit; the read set is part of log π; agents nobody reads do not run; a decision node that reads
someone keeps ``single``'s prompt; the untrained policy answers alone with probability ``--alone-prob``.

Independent computations: ``single`` runs through its own registered plan, on its own executor, in its own
``gcache eval``; the log-probability of a draw is recomputed from the probabilities by hand.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from gcache.agents.pipelines import SOLVER
from gcache.agents.roles import load_prompt_set
from gcache.config import ConfigError, RunConfig
from gcache.graph import AgentGraph, preset_graph
from gcache.methods import get_method
from gcache.recipes import _components as C
from gcache.recipes.eval import EvalRecipe
from gcache.recipes.train import answer_target
from gcache.reasoning.plans import plan_from_graph

ASSETS = Path(__file__).parents[1] / "assets"
HELD_OUT = str(ASSETS / "tiny_gsm8k.jsonl")

pytestmark = pytest.mark.integration


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def run_eval(cfg: RunConfig, mute_reads: bool = False) -> tuple[EvalRecipe, list[dict]]:
    recipe = EvalRecipe(cfg)
    recipe.setup()
    if mute_reads:  # the policy's read head says "read nobody" for every question
        with torch.no_grad():
            recipe.team.policy.gnn.read_offset.fill_(-50.0)
    recipe.run()
    return recipe, records(Path(cfg.out))


def gold_nll(recipe: EvalRecipe, cfg: RunConfig) -> torch.Tensor:
    """The decision node's gold-answer NLL on every question, through the plan each question ran."""
    out = []
    with torch.no_grad():
        for ex in recipe.examples:
            draws = recipe._draws([ex])
            plan, soft = C.plan_for(cfg, recipe.team, draws if recipe.team is not None else None)
            out.append(recipe.executor.answer_nll(plan, [ex.question], [answer_target(recipe.task, ex)], soft))
    return torch.cat(out)


@pytest.mark.parametrize("model", ["tiny-random-qwen3", pytest.param("smollm2", marks=pytest.mark.real_model)])
def test_team_that_reads_nobody_is_single_bit_for_bit(tmp_path, model):
    common = dict(model=model, data=HELD_OUT, limit=3, max_new_tokens=6 if model == "smollm2" else 4, batch_size=3,
                  latent_steps=2)
    single_cfg = RunConfig(method="single", out=str(tmp_path / "single"), **common)
    team_cfg = RunConfig(method="gcache", out=str(tmp_path / "team"), **common)
    single, single_rows = run_eval(single_cfg)
    team, team_rows = run_eval(team_cfg, mute_reads=True)
    assert [r["alone"] for r in team_rows] == [True] * 3
    for s, t in zip(single_rows, team_rows, strict=True):
        assert t["output"] == s["output"]  # the same greedy text ...
        assert (t["prompt_tokens"], t["completion_tokens"]) == (s["prompt_tokens"], s["completion_tokens"])
        assert t["latent_steps"] == 0  # ... and no agent ran: nobody read them
    assert json.loads((tmp_path / "team" / "summary.json").read_text())["answered_alone"] == 1.0
    assert torch.equal(gold_nll(team, team_cfg), gold_nll(single, single_cfg))  # the same gold NLL, bit for bit
    # the check can fail: a team that reads its agents answers from another context
    with torch.no_grad():
        team.team.policy.gnn.read_offset.fill_(50.0)
    assert not torch.equal(gold_nll(team, team_cfg), gold_nll(single, single_cfg))


def test_reading_someone_keeps_single_prompt(engine):
    """The decision node's prompt is single's whatever it reads: only its context differs."""
    ps = load_prompt_set("gsm8k")
    agents = ps.role_names[:2]
    graph = AgentGraph(agents, torch.zeros(2, 2, dtype=torch.bool), torch.zeros(2, 2, dtype=torch.bool), reads=(1,))
    plan, _ = get_method("gcache").build_plan("local", graph=graph, roles={r.name: r for r in ps.roles})
    single = get_method("single").build_plan("local")[0]
    decision = plan.nodes[-1]
    assert decision.role == single.nodes[0].role == SOLVER
    ex = C.build_executor(RunConfig(method="gcache"), C.build_task(RunConfig()), engine, None)
    as_team = ex._prompts(decision, ["What is 2 + 3?"], [[]], latent_context=True, final=True)
    alone = ex._prompts(single.nodes[0], ["What is 2 + 3?"], [[]], latent_context=False, final=True)
    assert as_team == alone
    # LatentMAS's judger still hears that its context holds the team's thoughts (its own method, unchanged)
    judger = get_method("latentmas_seq").build_plan("local")[0].nodes[-1]
    assert ex._prompts(judger, ["What is 2 + 3?"], [[]], latent_context=True, final=True) != \
        ex._prompts(judger, ["What is 2 + 3?"], [[]], latent_context=False, final=True)


def test_only_read_agents_and_their_ancestors_run():
    ps = load_prompt_set("gsm8k")
    roles = {r.name: r for r in ps.roles}
    names = ps.role_names[:4]
    chain = preset_graph("chain", names)  # 0 -> 1 -> 2 -> 3

    def with_reads(reads, message="full"):
        g = AgentGraph(names, chain.spatial, chain.temporal, reads=reads)
        return plan_from_graph(g, roles, kind="latent", message=message, decision_role=SOLVER, decision_note=False)[0]

    plan = with_reads((1,))
    assert [n.label for n in plan.nodes] == [f"{names[0]}#0@r0", f"{names[1]}#1@r0", SOLVER.name]
    assert plan.nodes[-1].inputs == (1,) and plan.nodes[1].inputs == (0,)
    assert with_reads((0, 2)).nodes[-1].inputs == (2,)  # a full cache of agent 2 already holds agent 0's
    own = with_reads((0, 2), message="own")
    assert len(own.nodes) == 4 and own.nodes[-1].inputs == (0, 2)  # own messages: both are read
    assert with_reads(()) == get_method("single").build_plan("local")[0]
    empty = preset_graph("empty", names)
    assert empty.alone and plan_from_graph(empty, roles, kind="latent")[0] == get_method("single").build_plan("local")[0]


def test_read_set_is_part_of_the_policy(tmp_path):
    """P(read nobody) is --alone-prob at init for any question; the read draws enter log π exactly."""
    cfg = RunConfig(method="gcache", model="tiny-random-qwen3", alone_prob=0.6, out=str(tmp_path))
    team = C.build_team(cfg, num_layers=2)
    n = len(team.agents)
    probs = team.edge_probs(["What is 2 + 3?", "A train leaves at noon; when does it arrive?"])
    for p in probs:
        assert float(torch.prod(1 - p.read.detach())) == pytest.approx(0.6, abs=1e-6)
    gen = torch.Generator().manual_seed(3)
    seen_alone = 0
    for _ in range(200):
        draw = team.draw("What is 2 + 3?", [gen])[0]
        seen_alone += draw.graph.alone
    assert 0.45 < seen_alone / 200 < 0.75  # Bernoulli(0.6), 200 draws
    # log π of a draw = its spatial DAG's term + the read set's independent Bernoulli terms
    graph, log_prob = team.policy.draw(probs[0], torch.Generator().manual_seed(5), "sample", agents=team.agents)
    spatial_only, log_spatial = team.policy.draw(probs[0]._replace(read=None), torch.Generator().manual_seed(5),
                                                 "sample", agents=team.agents)
    assert torch.equal(graph.spatial, spatial_only.spatial)
    read = probs[0].read.detach()
    expect = sum(math.log(float(read[i])) if i in graph.reads else math.log(1 - float(read[i])) for i in range(n))
    assert float(log_prob - log_spatial) == pytest.approx(expect, rel=1e-5)
    (-log_prob).backward()
    gnn = team.policy.gnn
    assert gnn.read_offset.grad is not None and float(gnn.read_offset.grad) != 0.0


def test_alone_from_reuses_single_records_exactly_and_refuses_another_run(tmp_path):
    common = dict(model="tiny-random-qwen3", data=HELD_OUT, limit=3, max_new_tokens=4, batch_size=3, latent_steps=1)
    _, single_rows = run_eval(RunConfig(method="single", out=str(tmp_path / "single"), **common))
    _, ran = run_eval(RunConfig(method="gcache", out=str(tmp_path / "ran"), **common), mute_reads=True)
    _, reused = run_eval(RunConfig(method="gcache", out=str(tmp_path / "reused"), alone_from=str(tmp_path / "single"),
                                   **common), mute_reads=True)
    assert all(r["reused_from"] == str(tmp_path / "single") for r in reused)
    for a, b in zip(ran, reused, strict=True):  # the same record whether run again or taken from single
        assert (a["output"], a["correct"], a["completion_tokens"], a["graph"]) == (
            b["output"], b["correct"], b["completion_tokens"], b["graph"])
    with pytest.raises(ConfigError, match="max_new_tokens"):
        EvalRecipe(RunConfig(method="gcache", out=str(tmp_path / "other"), alone_from=str(tmp_path / "single"),
                             **{**common, "max_new_tokens": 5})).setup()


def test_eval_draws_each_question_independently(tmp_path):
    """--eval-graph sample: each question's graph comes from its own seeded draw, so a policy that answers alone
    with probability 1/2 answers some questions alone and reads its team on others (one shared draw would give
    all or none), and the same question draws the same graph in another run, batch or order."""
    common = dict(model="tiny-random-qwen3", data=HELD_OUT, max_new_tokens=2, latent_steps=1, alone_prob=0.5)
    _, rows = run_eval(RunConfig(method="gcache", out=str(tmp_path / "a"), batch_size=5, **common))
    assert 0 < sum(r["alone"] for r in rows) < len(rows)
    _, again = run_eval(RunConfig(method="gcache", out=str(tmp_path / "b"), batch_size=1, limit=3, **common))
    assert [r["graph"] for r in again] == [r["graph"] for r in rows[:3]]
