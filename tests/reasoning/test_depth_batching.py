"""Batching by depth: the local agents of one depth run as one batch and give what node-by-node gives.

The reference is the same executor with ``batch_by_depth=False`` (one forward per node, the path the other
executor tests check against LatentMAS and a no-cache recompute).
"""

from __future__ import annotations

import pytest
import torch

from gcache.agents.pipelines import DECISION_MAKER
from gcache.agents.roles import Role, load_prompt_set
from gcache.graph import preset_graph
from gcache.modules.cache_fuser import CacheFuser
from gcache.modules.kv_message import KVMessage, SlotKind
from gcache.reasoning import DecodeConfig, FastLatentEngine, LatentEngine
from gcache.reasoning._depth import depth_groups, stack_contexts, unstack_context
from gcache.reasoning.executor import GraphExecutor, NodeSpec, PendingRun, Plan, RowTrace
from gcache.reasoning.plans import plan_from_graph

QUESTIONS = [
    "What is 2 + 3?",
    "A farmer has 17 sheep and buys 5 more. How many sheep are there now?",
    "Tom reads 12 pages a day. How many pages in a week?",
]
TARGETS = [" The answer is 5.", " 22", " He reads 84 pages. #### 84"]
ROLE = Role("Solver", "You solve problems.")


def team():
    prompt_set = load_prompt_set("gsm8k")
    return prompt_set, {r.name: r for r in prompt_set.roles}


def graph_plan(preset: str, kind: str, message: str = "full", rounds: int = 1, decision: str = "refer") -> Plan:
    prompt_set, roles = team()
    graph = preset_graph(preset, prompt_set.role_names[:4], num_rounds=rounds, decision=decision)
    return plan_from_graph(graph, roles, kind=kind, message=message)[0]


def fuser_for(engine: LatentEngine) -> CacheFuser:
    prompt_set, _ = team()
    fuser = CacheFuser(engine.num_layers, [*prompt_set.role_names, DECISION_MAKER.name])
    with torch.no_grad():  # far from neutral, different per layer and per edge
        fuser.gates.copy_(torch.linspace(-1.0, 1.0, 2 * engine.num_layers).reshape(2, -1))
        fuser.edge_logits.copy_(torch.randn(fuser.edge_logits.shape, generator=torch.Generator().manual_seed(0)))
    return fuser


def executors(engine: LatentEngine, fuser: CacheFuser | None, steps: int = 3, tokens: int = 6):
    make = lambda batch: GraphExecutor(engine=engine, latent_steps=steps, decode=DecodeConfig(max_new_tokens=tokens),  # noqa: E731
                                       fuser=fuser, answer_instruction="End with '#### <number>'.",
                                       batch_by_depth=batch)
    return make(True), make(False)


def count_prefills(engine: LatentEngine, monkeypatch) -> list[int]:
    """Record the batch size of every prefill (to see that batching by depth did stack nodes)."""
    calls: list[int] = []
    original = engine.prefill

    def prefill(ctx, prompts, fuser_bias=None, **kwargs):
        calls.append(len(prompts))
        return original(ctx, prompts, fuser_bias, **kwargs)

    monkeypatch.setattr(engine, "prefill", prefill)
    return calls


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float(((a - b).abs() / b.abs().clamp_min(1e-12)).max())


def node_outputs(ex: GraphExecutor, plan: Plan) -> list:
    """Every node's output but the decision node's (its message, for latent nodes)."""
    run = PendingRun(plan, list(QUESTIONS), None, [RowTrace() for _ in QUESTIONS], [None] * len(plan.nodes))
    with torch.no_grad():
        ex._run_nodes([run], len(plan.nodes) - 1)
    return run.outputs[:-1]


# ------------------------------------------------------------------------------------------------ grouping
def test_depth_groups():
    n = lambda kind="latent", inputs=(), backend="local": NodeSpec(ROLE, kind=kind, inputs=inputs, backend=backend)  # noqa: E731
    plan = Plan((n(), n(), n(inputs=(0, 1)), n("text", (2,)), n(), n("text", (0,)), n("text", (0,), "api"),
                 n("text", (2, 3, 4, 5, 6))))
    # depths: 0, 0, 1, 2, 0, 1, 1, 3
    assert depth_groups(plan) == [[0, 1, 4], [2], [5], [6], [3], [7]]
    assert depth_groups(plan, count=3) == [[0, 1], [2]]
    assert depth_groups(plan, batch=False) == [[i] for i in range(8)]
    layered = graph_plan("layered", "latent")
    assert depth_groups(layered) == [[0, 1], [2, 3], [4]]


def test_stack_and_unstack_give_back_each_nodes_context():
    gen = torch.Generator().manual_seed(0)

    def msg(s: int, pad: int) -> KVMessage:
        valid = torch.ones(2, s, dtype=torch.bool)
        valid[1, :pad] = False  # row 1 left-padded
        return KVMessage(keys=(torch.randn(2, 1, s, 3, generator=gen),), values=(torch.randn(2, 1, s, 3, generator=gen),),
                         valid=valid, positions=torch.arange(s).expand(2, s).masked_fill(~valid, -1),
                         kinds=torch.full((2, s), int(SlotKind.PROMPT)))

    a, b, empty = msg(5, 2), msg(2, 1), msg(0, 0)
    stacked, bias = stack_contexts([a, b, empty], [torch.full((1, 2, 3), -1.0), None, None], num_layers=1)
    assert stacked.batch_size == 6 and stacked.length == 5
    assert not bool(stacked.valid[2:4, :3].any()) and not bool(stacked.valid[4:].any())  # the padding is masked
    assert bias.shape == (1, 6, 5)
    assert bias[0, :2].tolist() == [[-1.0, -1.0, -1.0, 0.0, 0.0]] * 2 and not bool(bias[0, 2:].any())
    for k, m in enumerate([a, b, empty]):
        # no prompt segment yet (prompt lengths 0): unstacking drops the front padding only
        back = unstack_context(stacked, k, slice(2 * k, 2 * k + 2), [5, 2, 0], [0, 0, 0])
        for x, y in zip((*back.keys, *back.values, back.valid, back.positions, back.kinds),
                        (*m.keys, *m.values, m.valid, m.positions, m.kinds)):
            assert torch.equal(x, y)
    # agents stacked together may have received contexts of different kinds: each row keeps its own
    latent_a = KVMessage(a.keys, a.values, a.valid, a.positions, torch.full((2, 5), int(SlotKind.LATENT)))
    mixed = KVMessage.stack([latent_a, b])
    assert torch.equal(mixed.kinds[:2], latent_a.kinds) and torch.equal(mixed.kinds[2:, 3:], b.kinds)


# ------------------------------------------------------------------------------- batch by depth == node by node
@pytest.mark.parametrize("preset, message", [("layered", "full"), ("star", "own"), ("layered", "latent")])
def test_latent_graph_by_depth_equals_node_by_node(engine, preset, message, monkeypatch):
    plan = graph_plan(preset, "latent", message=message)
    assert any(len(g) > 1 for g in depth_groups(plan))  # there is something to batch
    by_depth, by_node = executors(engine, fuser_for(engine))
    calls = count_prefills(engine, monkeypatch)
    with torch.no_grad():
        got = by_depth.run(plan, QUESTIONS)
        n_batched = len(calls)
        ref = by_node.run(plan, QUESTIONS)
    assert n_batched == len(depth_groups(plan)) < len(calls) - n_batched == len(plan.nodes)
    assert max(calls[:n_batched]) > len(QUESTIONS)  # a prefill of several nodes' rows
    for g, r in zip(got, ref, strict=True):
        assert (g.final_text, g.node_texts, g.prompt_tokens, g.completion_tokens, g.latent_steps) == (
            r.final_text, r.node_texts, r.prompt_tokens, r.completion_tokens, r.latent_steps)
    # every node's message: the same slots with the same positions, values to 1e-4
    for g, r in zip(node_outputs(by_depth, plan), node_outputs(by_node, plan), strict=True):
        m, n = g.message, r.message
        assert torch.equal(m.valid, n.valid) and torch.equal(m.positions, n.positions) and torch.equal(m.kinds, n.kinds)
        for x, y in zip((*m.keys, *m.values), (*n.keys, *n.values), strict=True):
            real = n.valid[:, None, :, None].expand_as(y)
            assert rel(x[real].norm(), y[real].norm()) < 1e-4 and float((x - y)[real].abs().max()) < 1e-4
    # the decision node's gold-answer NLL reads every message: equal to 1e-4, and so are the fuser's gradients
    nll = {}
    for name, ex in (("depth", by_depth), ("node", by_node)):
        ex.fuser.zero_grad()
        nll[name] = ex.answer_nll(plan, QUESTIONS, TARGETS)
        nll[name].sum().backward()
        nll[name + "_grad"] = torch.cat([ex.fuser.gates.grad.flatten().clone(), ex.fuser.edge_logits.grad.flatten().clone()])
    assert rel(nll["depth"], nll["node"]) < 1e-4
    assert float(nll["node_grad"].abs().sum()) > 0
    torch.testing.assert_close(nll["depth_grad"], nll["node_grad"], rtol=1e-4, atol=1e-7)


def test_text_agents_of_one_depth_decode_together(engine, monkeypatch):
    """G-Designer-style text agents over two debate rounds, majority vote: each round is one batch."""
    plan = graph_plan("debate", "text", rounds=2, decision="majority")
    assert depth_groups(plan) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    by_depth, by_node = executors(engine, None, tokens=5)
    by_depth.extract = by_node.extract = lambda text: text.strip()[:1] or None
    calls = count_prefills(engine, monkeypatch)
    with torch.no_grad():
        got, ref = by_depth.run(plan, QUESTIONS[:2]), by_node.run(plan, QUESTIONS[:2])
    assert calls[:2] == [8, 8]
    for g, r in zip(got, ref, strict=True):
        assert (g.final_text, g.node_texts, g.prompt_tokens, g.completion_tokens) == (
            r.final_text, r.node_texts, r.prompt_tokens, r.completion_tokens)
        assert len(g.node_texts) == 8


def test_fast_engine_by_depth_equals_eager_node_by_node(tiny_qwen3):
    model, tok = tiny_qwen3
    plan = graph_plan("layered", "latent", message="own")
    eager, fast = LatentEngine(model, tok), FastLatentEngine(model, tok, bucket=64)
    fuser = fuser_for(eager)
    got = executors(fast, fuser)[0].run(plan, QUESTIONS)
    ref = executors(eager, fuser)[1].run(plan, QUESTIONS)
    for g, r in zip(got, ref, strict=True):
        assert (g.final_text, g.node_texts, g.prompt_tokens, g.completion_tokens) == (
            r.final_text, r.node_texts, r.prompt_tokens, r.completion_tokens)


# ------------------------------------------------------------------------------- several graphs, one batch
def test_plans_of_different_graphs_run_together(engine, monkeypatch):
    """run_many: the agents of different graphs share forwards, and every question gets what its graph alone gives."""
    jobs = [(graph_plan("layered", "latent", message="full"), QUESTIONS[:2], None),
            (graph_plan("star", "latent", message="own"), QUESTIONS[2:], None),
            (graph_plan("chain", "text"), QUESTIONS[1:], None)]
    ex = executors(engine, fuser_for(engine))[0]
    calls = count_prefills(engine, monkeypatch)
    with torch.no_grad():
        got = ex.run_many(jobs)
        together = len(calls)
        ref = [ex.run(plan, questions, soft) for plan, questions, soft in jobs]
    alone = len(calls) - together
    # waves (rows): latent layered [0, 1] x 2 + star [0] x 1, text chain [0] x 2; latent layered [2, 3] x 2 + star
    # [1, 2, 3] x 1, text chain [1] x 2; text: both deciders (2 + 1) and chain [2] x 2; then chain [3], chain [4]
    assert calls[:together] == [5, 2, 7, 2, 5, 2, 2]
    assert alone == 3 + 3 + 5
    for g_job, r_job in zip(got, ref, strict=True):
        for g, r in zip(g_job, r_job, strict=True):
            assert (g.final_text, g.node_texts, g.prompt_tokens, g.completion_tokens, g.latent_steps) == (
                r.final_text, r.node_texts, r.prompt_tokens, r.completion_tokens, r.latent_steps)
