"""GraphExecutor over the tiny model (and once over SmolLM2): batch vs one by one, the chain/LatentMAS
equivalence the method rests on, and gradients into the CacheFuser through the frozen model."""

from __future__ import annotations

import json

import pytest
import torch

from gcache.agents.pipelines import DECISION_MAKER, SEQUENTIAL
from gcache.agents.roles import load_prompt_set
from gcache.graph import preset_graph
from gcache.modules.cache_fuser import CacheFuser
from gcache.reasoning import DecodeConfig, LatentEngine
from gcache.reasoning.executor import GraphExecutor, Plan
from gcache.reasoning.plans import baseline_plan, plan_from_graph

QUESTIONS = [
    "What is 2 + 3?",
    "A farmer has 17 sheep and buys 5 more. How many sheep are there now?",
    "Tom reads 12 pages a day. How many pages in a week?",
]
TARGETS = [" The answer is 5.", " 22", " He reads 84 pages. #### 84"]
INSTRUCTION = "End with '#### <number>'."


def executor(engine: LatentEngine, fuser: CacheFuser | None = None, steps: int = 2, tokens: int = 6) -> GraphExecutor:
    return GraphExecutor(engine=engine, latent_steps=steps, decode=DecodeConfig(max_new_tokens=tokens), fuser=fuser,
                         answer_instruction=INSTRUCTION)


def chain_plan() -> Plan:
    """Planner -> Critic -> Refiner as a learned-graph plan, with the Judger deciding."""
    planner, critic, refiner, judger = SEQUENTIAL
    graph = preset_graph("chain", [planner.name, critic.name, refiner.name])
    plan, _ = plan_from_graph(graph, {r.name: r for r in SEQUENTIAL[:3]}, kind="latent", decision_role=judger)
    return plan


def rel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.double() - b.double()).abs() / b.double().abs().clamp_min(1e-12)


# ---------------------------------------------------------------------------------------- batch vs one by one
@pytest.mark.parametrize("method", ["latentmas_seq", "text_chain"])
def test_executor_batch_equals_one_by_one(engine, method):
    plan = baseline_plan(method)
    ex = executor(engine)
    batch = ex.run(plan, QUESTIONS)
    singles = [ex.run(plan, [q])[0] for q in QUESTIONS]
    for r, (b, s) in enumerate(zip(batch, singles)):
        assert b.final_text == s.final_text, f"row {r}"
        assert b.node_texts == s.node_texts
        assert (b.prompt_tokens, b.completion_tokens, b.latent_steps) == (s.prompt_tokens, s.completion_tokens,
                                                                          s.latent_steps)
    assert len({t.final_text for t in batch}) > 1  # the questions make a difference
    if method == "latentmas_seq":
        assert batch[0].latent_steps == 3 * 2
        # The decision node's teacher-forced NLL is a number, so batch vs single is checked to 1e-4 too.
        nll_batch = ex.answer_nll(plan, QUESTIONS, TARGETS)
        nll_single = torch.cat([ex.answer_nll(plan, [q], [t]) for q, t in zip(QUESTIONS, TARGETS)])
        assert bool((rel(nll_batch, nll_single) < 1e-4).all())
    else:
        assert batch[0].latent_steps == 0 and len(batch[0].node_texts) == 4


@pytest.mark.parametrize("message", ["own", "latent"])
def test_fused_graph_batch_equals_one_by_one(engine, message):
    """Several incoming messages, each left-padded, concatenated (padding mid-context) under a bias fuser."""
    prompt_set = load_prompt_set("gsm8k")
    agents = prompt_set.role_names[:3]
    roles = {r.name: r for r in prompt_set.roles}
    plan, _ = plan_from_graph(preset_graph("complete", agents), roles, kind="latent", message=message)
    assert plan.nodes[-1].inputs == (0, 1, 2)  # not "full": the decision node reads every agent
    fuser = CacheFuser(engine.num_layers, [*prompt_set.role_names, DECISION_MAKER.name])
    with torch.no_grad():  # a non-trivial bias: different per layer, edge and slot kind
        for p in fuser.parameters():
            p.copy_(torch.linspace(-2.0, 1.0, p.numel()).reshape(p.shape))
    ex = executor(engine, fuser)
    with torch.no_grad():
        batch = ex.run(plan, QUESTIONS)
        singles = [ex.run(plan, [q])[0] for q in QUESTIONS]
        nll_batch = ex.answer_nll(plan, QUESTIONS, TARGETS)
        nll_single = torch.cat([ex.answer_nll(plan, [q], [t]) for q, t in zip(QUESTIONS, TARGETS)])
    assert [t.final_text for t in batch] == [t.final_text for t in singles]
    assert bool((rel(nll_batch, nll_single) < 1e-4).all())


def test_sampling_is_seeded_on_the_logits_device(engine):
    plan = baseline_plan("single")
    sample = DecodeConfig(max_new_tokens=8, temperature=1.0, top_p=0.9)

    def texts(seed: int) -> list[str]:
        ex = GraphExecutor(engine=engine, decode=sample, seed=seed)
        assert ex.generator.device.type == engine.model.get_output_embeddings().weight.device.type
        return [t.final_text for t in ex.run(plan, QUESTIONS)]

    first = texts(0)
    assert texts(0) == first
    assert texts(1) != first


@pytest.mark.real_model
def test_smollm2_latentmas_batch_equals_one_by_one(smollm2, shared_data):
    model, tok = smollm2
    with open(shared_data / "gsm8k" / "test.jsonl") as f:
        questions = [json.loads(next(f))["question"] for _ in range(2)]
    ex = GraphExecutor(engine=LatentEngine(model, tok), latent_steps=2, decode=DecodeConfig(max_new_tokens=16),
                       answer_instruction=INSTRUCTION)
    plan = baseline_plan("latentmas_seq")
    batch = ex.run(plan, questions)
    singles = [ex.run(plan, [q])[0] for q in questions]
    assert [t.final_text for t in batch] == [t.final_text for t in singles]
    assert [t.completion_tokens for t in batch] == [t.completion_tokens for t in singles]
    assert all(t.final_text for t in batch)


# ------------------------------------------------------------------------- chain + neutral fuser == LatentMAS
def test_chain_with_neutral_fuser_is_latentmas_sequential(engine):
    baseline, chain = baseline_plan("latentmas_seq"), chain_plan()
    assert [n.role for n in chain.nodes] == [n.role for n in baseline.nodes]
    assert [n.inputs for n in chain.nodes] == [n.inputs for n in baseline.nodes]
    plain = executor(engine)
    fused = executor(engine, CacheFuser(engine.num_layers, [r.name for r in SEQUENTIAL], mode="concat"))
    assert [t.final_text for t in fused.run(chain, QUESTIONS)] == [t.final_text for t in plain.run(baseline, QUESTIONS)]
    with torch.no_grad():
        nll_base = plain.answer_nll(baseline, QUESTIONS, TARGETS)
        nll_chain = fused.answer_nll(chain, QUESTIONS, TARGETS)
    assert bool((rel(nll_chain, nll_base) < 1e-4).all())

    # A new bias fuser is exactly concatenation (every bias is 0.0, not merely small): the same texts, and the
    # same NLL bit for bit ...
    neutral = executor(engine, CacheFuser(engine.num_layers, [r.name for r in SEQUENTIAL], mode="bias"))
    assert [t.final_text for t in neutral.run(chain, QUESTIONS)] == [t.final_text for t in plain.run(baseline, QUESTIONS)]
    with torch.no_grad():
        nll_neutral = neutral.answer_nll(chain, QUESTIONS, TARGETS)
        nll_plain_chain = executor(engine).answer_nll(chain, QUESTIONS, TARGETS)
    assert torch.equal(nll_neutral, nll_plain_chain)
    # ... while a moved parameter is measurably not: the check can fail.
    moved = CacheFuser(engine.num_layers, [r.name for r in SEQUENTIAL], mode="bias")
    with torch.no_grad():
        moved.kind_logits[..., 1] = -3.0  # mute latent slots a little
        nll_moved = executor(engine, moved).answer_nll(chain, QUESTIONS, TARGETS)
    assert bool((rel(nll_moved, nll_base) > 1e-5).any())


# ------------------------------------------------------------------------------- gradients through the executor
def test_fuser_gets_gradients_through_frozen_model(engine):
    prompt_set = load_prompt_set("gsm8k")
    agents = prompt_set.role_names[:3]
    roles = {r.name: r for r in prompt_set.roles} | {DECISION_MAKER.name: DECISION_MAKER}
    plan, edges = plan_from_graph(preset_graph("complete", agents), roles, kind="latent")
    assert set(edges) == {(0, 1), (0, 2), (1, 2)}
    fuser = CacheFuser(engine.num_layers, [*prompt_set.role_names, DECISION_MAKER.name], mode="bias",
                       decision_role=DECISION_MAKER.name)
    model = engine.model
    before = [p.detach().clone() for p in model.parameters()]
    fuser_before = [p.detach().clone() for p in fuser.parameters()]

    loss = executor(engine, fuser).answer_nll(plan, QUESTIONS[:2], TARGETS[:2]).mean()
    assert loss.requires_grad and torch.isfinite(loss)
    loss.backward()

    assert bool((fuser.gates.grad != 0).all())  # both receiver kinds: agents (through the graph) and the decision
    idx = {name: i for i, name in enumerate(fuser.role_names)}
    used = torch.zeros_like(fuser.edge_logits, dtype=torch.bool)
    pairs = [(agents[0], agents[1]), (agents[0], agents[2]), (agents[1], agents[2]), (agents[2], DECISION_MAKER.name)]
    for u, v in pairs:  # the three DAG edges, and the sink -> decision node
        used[idx[u], idx[v]] = True
    assert bool((fuser.edge_logits.grad[used] != 0).all())
    assert bool((fuser.edge_logits.grad[~used] == 0).all())
    # latent messages hold prompt and latent slots, no generated ones
    assert bool((fuser.kind_logits.grad[..., :2] != 0).all()) and bool((fuser.kind_logits.grad[..., 2] == 0).all())
    assert all(not p.requires_grad and p.grad is None for p in model.parameters())

    torch.optim.Adam(fuser.parameters(), lr=0.1).step()
    assert all(not torch.equal(a, p) for a, p in zip(fuser_before, fuser.parameters()))
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))


def test_hybrid_decision_trains_the_fuser_through_the_verbaliser(engine, tmp_path):
    """An API decision node cannot be differentiated: the gold answer is scored where the local model reads the
    fused latent context, after the verbaliser's prompt (the text the API model would be sent), and the fuser
    gets a gradient. The API itself is never called when nothing is decoded."""
    from gcache.agents.prompts import verbalize_messages
    from gcache.api import ApiSettings, ChatClient
    from gcache.reasoning import render_chat

    api = ChatClient(ApiSettings.resolve(api_key="never-sent", base_url="http://127.0.0.1:9/v1", model="m",
                                         env_file=tmp_path / "none.env"))
    planner = SEQUENTIAL[0]
    plan, _ = plan_from_graph(preset_graph("chain", [planner.name]), {planner.name: planner}, kind="latent",
                              mode="hybrid", decision_role=DECISION_MAKER)
    assert plan.nodes[-1].backend == "api"
    fuser = CacheFuser(engine.num_layers, [planner.name, DECISION_MAKER.name])
    with torch.no_grad():
        fuser.kind_logits.copy_(torch.linspace(-2.0, 1.0, fuser.kind_logits.numel()).reshape(fuser.kind_logits.shape))
    ex = GraphExecutor(engine=engine, api=api, latent_steps=2, fuser=fuser, answer_instruction=INSTRUCTION)
    nll = ex.answer_nll(plan, QUESTIONS[:2], TARGETS[:2])
    nll.sum().backward()
    assert bool((fuser.kind_logits.grad[0, :, :2] != 0).all())  # no decision role given: receiver kind 0

    # the same number from the engine's own steps: the planner thinks, the verbaliser reads its fused message
    with torch.no_grad():
        prompts = ex._prompts(plan.nodes[0], QUESTIONS[:2], [[], []], False, False)
        ctx, hidden, _, _ = engine.prefill(engine.empty_context(2), prompts)
        ctx, _ = engine.think(ctx, hidden, 2)
        fused, bias = fuser([ctx], [planner.name], DECISION_MAKER.name)
        verbalize = [render_chat(engine.tokenizer, verbalize_messages())] * 2
        expected = engine.answer_nll(fused, verbalize, TARGETS[:2], bias)
    torch.testing.assert_close(nll.detach(), expected, rtol=1e-5, atol=1e-6)
