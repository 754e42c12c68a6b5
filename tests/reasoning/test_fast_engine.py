"""FastLatentEngine (static cache; CUDA graphs on CUDA) against the eager LatentEngine on the same tiny models.

The eager engine is itself checked against a no-cache recompute with stock attention (test_latent_engine.py), so
agreeing with it to 1e-4 (fp32) is agreeing with an independent reference. On CPU the fast engine runs its static
cache without graph capture; the capture precondition (a step never reads a device value on the host) is checked
by running the steps on the meta device, where any such read raises.
"""

from __future__ import annotations

import copy

import pytest
import torch

from gcache.modules.cache_fuser import CacheFuser
from gcache.modules.kv_message import MESSAGE_MODES, KVMessage, SlotKind
from gcache.reasoning import (
    DecodeConfig,
    FastLatentEngine,
    LatentEngine,
    StaticContext,
    make_engine,
    render_chat,
    resolve_engine,
)
from gcache.reasoning.executor import GraphExecutor
from gcache.reasoning.plans import baseline_plan

QUESTIONS = [
    "What is 2 + 3?",
    "A farmer has 17 sheep and buys 5 more. How many sheep are there now?",
    "Name a prime.",
]
ROLES = ["Planner", "Critic", "Judger"]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-12))


def assert_same_message(fast: KVMessage, eager: KVMessage) -> None:
    """Same slots, bookkeeping equal, keys and values equal to 1e-4 (the order of float sums may differ)."""
    assert fast.length == eager.length
    assert torch.equal(fast.valid, eager.valid)
    assert torch.equal(fast.positions, eager.positions)
    assert torch.equal(fast.kinds, eager.kinds)
    for a, b in zip((*fast.keys, *fast.values), (*eager.keys, *eager.values), strict=True):
        assert a.shape == b.shape
        # padding slots hold whatever the model computed for them (never attended): compare the real ones
        valid = eager.valid[:, None, :, None].expand_as(b)
        assert rel_err(a[valid], b[valid]) < 1e-4


def no_eager_extend(engine: LatentEngine, monkeypatch) -> None:
    """Make the eager per-step path unusable, so a passing fast call really ran on its static cache."""
    def refuse(*args, **kwargs):
        raise AssertionError("the fast engine fell back to LatentEngine.extend")

    monkeypatch.setattr(engine, "extend", refuse)


def chat(tok, question: str) -> str:
    return render_chat(tok, [{"role": "user", "content": question}])


def run_node(engine: LatentEngine, ctx: KVMessage, prompts: list[str], steps: int, tokens: int, bias=None):
    """Prefill on ``ctx``, think ``steps``, decode ``tokens`` from the thought context: everything one node does."""
    ctx_p, h_p, logits_p, n = engine.prefill(ctx, prompts, bias)
    ctx_l, h_l = engine.think(ctx_p, h_p, steps, bias)
    out = engine.decode(ctx_l, engine.model.get_output_embeddings()(h_l), DecodeConfig(max_new_tokens=tokens), bias)
    return dict(ctx_p=ctx_p, h_p=h_p, logits_p=logits_p, n=n, ctx_l=ctx_l, h_l=h_l, out=out)


def assert_same_node(fast: dict, eager: dict, own_start: int) -> None:
    assert torch.equal(fast["n"], eager["n"])
    assert rel_err(fast["h_p"], eager["h_p"]) < 1e-4
    assert rel_err(fast["logits_p"], eager["logits_p"]) < 1e-4
    assert rel_err(fast["h_l"], eager["h_l"]) < 1e-4
    assert_same_message(fast["ctx_p"], eager["ctx_p"])
    assert_same_message(fast["ctx_l"], eager["ctx_l"])
    for mode in MESSAGE_MODES:
        assert_same_message(fast["ctx_l"].message(mode, own_start), eager["ctx_l"].message(mode, own_start))
    assert fast["out"].token_ids == eager["out"].token_ids
    assert fast["out"].texts == eager["out"].texts
    assert_same_message(fast["out"].context, eager["out"].context)


# ------------------------------------------------------------------------------------------ one node, a batch
@pytest.mark.parametrize("fixture", ["tiny_qwen3", "tiny_llama"])
@torch.no_grad()
def test_fast_node_matches_eager(fixture, request, monkeypatch):
    model, tok = request.getfixturevalue(fixture)
    eager = LatentEngine(model, tok)
    fast = FastLatentEngine(model, tok, bucket=32, reserve=16)  # room for 5 steps + 10 tokens after the prompt
    prompts = [chat(tok, q) for q in QUESTIONS]  # three lengths: the batch is left-padded
    ref = run_node(eager, eager.empty_context(3), prompts, steps=5, tokens=10)
    no_eager_extend(fast, monkeypatch)
    got = run_node(fast, fast.empty_context(3), prompts, steps=5, tokens=10)
    assert_same_node(got, ref, own_start=0)
    assert ref["ctx_l"].kinds[0].tolist()[-5:] == [SlotKind.LATENT] * 5
    assert len({tuple(ids) for ids in ref["out"].token_ids}) > 1  # the rows do differ
    # prefill, think and decode went on in one static cache: prefill left room, later calls continued in place
    assert len(fast._caches) == 1


@torch.no_grad()
def test_fast_node_on_fused_messages_with_bias_matches_eager(tiny_qwen3, monkeypatch):
    """Two senders' messages (padding in mid-context), fused under a non-zero CacheFuser bias, then a third node."""
    model, tok = tiny_qwen3
    eager = LatentEngine(model, tok)
    fast = FastLatentEngine(model, tok, bucket=32, reserve=8)
    fuser = CacheFuser(eager.num_layers, ROLES)
    with torch.no_grad():  # a bias far from neutral, different per layer and per edge
        fuser.gates.copy_(torch.tensor([[-1.0, 0.5], [0.25, -2.0]]))
        fuser.edge_logits.copy_(torch.tensor([[0.0, 1.0, -2.0], [2.0, 0.0, 0.5], [0.0, 0.0, 0.0]]))
    results = {}
    for name, engine in (("eager", eager), ("fast", fast)):
        if name == "fast":
            no_eager_extend(fast, monkeypatch)
        senders = []
        for role, q in zip(ROLES[:2], (QUESTIONS[:2], QUESTIONS[1:])):
            node = run_node(engine, engine.empty_context(2), [chat(tok, f"{role}: {x}") for x in q], 3, 1)
            senders.append(node["ctx_l"].message("own", own_start=0))
        ctx, bias = fuser(senders, ROLES[:2], "Judger")
        assert bias is not None and float(bias.abs().min()) > 0.1
        results[name] = run_node(engine, ctx, [chat(tok, "Judge: give the answer.")] * 2, 4, 8, bias)
        results["received"] = ctx.length
        results[name + "_plain"] = engine.prefill(ctx, [chat(tok, "Judge: give the answer.")] * 2)[1]
    assert_same_node(results["fast"], results["eager"], own_start=results["received"])
    # the bias does reach the static path's attention (without it the hidden state is different)
    assert rel_err(results["fast"]["h_p"], results["fast_plain"]) > 1e-3


@torch.no_grad()
def test_fast_rows_that_stop_early_match_eager(tiny_qwen3):
    """Finished rows keep stepping as padding slots in the static cache too; the other rows must not notice."""
    model, tok = tiny_qwen3
    eager = LatentEngine(model, tok)
    fast = FastLatentEngine(model, tok, bucket=32)
    prompts = [chat(tok, q) for q in QUESTIONS]
    free = run_node(eager, eager.empty_context(3), prompts, 2, 8)["out"]
    stop = free.token_ids[0][2]  # row 0 stops after two tokens
    assert stop not in free.token_ids[0][:2]
    eager.stop_ids = fast.stop_ids = {stop}
    ref = run_node(eager, eager.empty_context(3), prompts, 2, 8)
    got = run_node(fast, fast.empty_context(3), prompts, 2, 8)
    lengths = [len(ids) for ids in ref["out"].token_ids]
    assert lengths[0] == 2 and max(lengths) > 2
    assert got["out"].token_ids == ref["out"].token_ids
    assert_same_message(got["out"].context, ref["out"].context)


@torch.no_grad()
def test_fast_batch_equals_one_by_one(tiny_llama):
    model, tok = tiny_llama
    fast = FastLatentEngine(model, tok, bucket=16, reserve=0, max_caches=2)  # small caches: reloads and evictions
    prompts = [chat(tok, q) for q in QUESTIONS]
    batch = run_node(fast, fast.empty_context(3), prompts, 3, 8)
    for r, prompt in enumerate(prompts):
        one = run_node(fast, fast.empty_context(1), [prompt], 3, 8)
        assert batch["out"].token_ids[r] == one["out"].token_ids[0], f"row {r}"
        assert rel_err(batch["h_l"][r], one["h_l"][0]) < 1e-4
    assert len(fast._caches) <= 2


@torch.no_grad()
def test_context_outgrowing_its_cache_moves_to_a_bigger_one(tiny_qwen3):
    model, tok = tiny_qwen3
    eager = LatentEngine(model, tok)
    fast = FastLatentEngine(model, tok, bucket=16, reserve=0)
    prompts = [chat(tok, q) for q in QUESTIONS[:2]]
    ref = run_node(eager, eager.empty_context(2), prompts, 20, 20)
    got = run_node(fast, fast.empty_context(2), prompts, 20, 20)
    assert_same_node(got, ref, own_start=0)
    capacities = sorted(c for _, c in fast._caches)
    assert len(capacities) == 3 and capacities[-1] >= got["out"].context.length  # prefill, think, decode each grew


def test_with_gradients_the_fast_engine_is_the_eager_one(tiny_qwen3):
    """The gold-answer loss needs gradients into the fuser bias: that never takes the static path."""
    model, tok = tiny_qwen3
    eager, fast = LatentEngine(model, tok), FastLatentEngine(model, tok)
    with torch.no_grad():
        ctx = eager.prefill(eager.empty_context(2), [chat(tok, q) for q in QUESTIONS[:2]])[0]
    bias = torch.full((eager.num_layers, 2, ctx.length), -0.3, requires_grad=True)
    nll_e = eager.answer_nll(ctx, ["Q:", "Q:"], [" 5", " 22"], bias)
    nll_f = fast.answer_nll(ctx, ["Q:", "Q:"], [" 5", " 22"], bias)
    torch.testing.assert_close(nll_f, nll_e)
    (grad,) = torch.autograd.grad(nll_f.sum(), bias)
    assert float(grad.abs().sum()) > 0
    with torch.enable_grad():
        _, h = fast.think(ctx, torch.zeros(2, model.config.hidden_size), 2)
    assert not fast._caches  # the static caches were not touched


# ------------------------------------------------------------------------------------------- the executor
@pytest.mark.parametrize("method", ["latentmas_seq", "latentmas_hier"])
def test_executor_gives_the_same_answers_on_both_engines(tiny_qwen3, method):
    model, tok = tiny_qwen3
    plan = baseline_plan(method)
    traces = {}
    for name, engine in (("eager", LatentEngine(model, tok)), ("fast", FastLatentEngine(model, tok, bucket=64))):
        ex = GraphExecutor(engine=engine, latent_steps=3, decode=DecodeConfig(max_new_tokens=6),
                           answer_instruction="End with '#### <number>'.")
        traces[name] = ex.run(plan, QUESTIONS)
    for e, f in zip(traces["eager"], traces["fast"], strict=True):
        assert (f.final_text, f.node_texts, f.prompt_tokens, f.completion_tokens, f.latent_steps) == (
            e.final_text, e.node_texts, e.prompt_tokens, e.completion_tokens, e.latent_steps)


# ------------------------------------------------------------------------------ capture-ability, selection
@torch.no_grad()
def test_steps_never_read_device_values_on_the_host(tiny_qwen3):
    """A CUDA graph cannot hold a host read (``.item()``, ``bool(t)``, data-dependent shapes). On the meta device
    every such read raises, so running both steps there proves the precondition of capture without a GPU."""
    model, tok = tiny_qwen3
    engine = FastLatentEngine(copy.deepcopy(model).to("meta"), tok)
    engine.realignment()
    cache = StaticContext(num_layers=engine.num_layers, batch=2, n_kv=engine.n_kv, head_dim=engine.head_dim,
                          capacity=16, hidden_size=model.config.hidden_size, dtype=engine.dtype,
                          device=torch.device("meta"))
    cache.logits = torch.empty(2, model.config.vocab_size, device="meta")
    engine._latent_step(cache)
    engine._decode_step(cache)
    with pytest.raises(RuntimeError, match="meta"):  # the check does bite
        bool(cache.length > 0)


def test_engine_selection(tiny_qwen3):
    model, tok = tiny_qwen3
    assert resolve_engine("auto", "cpu") == "eager" and resolve_engine("auto", "cuda:0") == "fast"
    assert resolve_engine("fast", "cpu") == "fast"
    assert type(make_engine(model, tok)) is LatentEngine
    engine = make_engine(model, tok, engine="fast", realign=False)
    assert isinstance(engine, FastLatentEngine) and not engine.realign and not engine.cuda_graphs
    with pytest.raises(ValueError, match="unknown engine 'turbo'"):
        resolve_engine("turbo", "cpu")
    with pytest.raises(ValueError, match="CUDA graphs need the model on a CUDA device"):
        FastLatentEngine(model, tok, cuda_graphs=True)


def test_a_dispatched_model_runs_on_the_eager_engine(tiny_qwen3, tmp_path):
    """--device-map: accelerate's hooks move weights in at every forward; the fast engine refuses such a model."""
    import json

    from gcache.models import load_model

    model, tok = tiny_qwen3
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    split = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu",
             "model.layers.1": "disk", "model.norm": "cpu", "lm_head": "cpu"}
    dispatched, tok = load_model(str(tmp_path), dtype="float32", device_map=json.dumps(split))
    assert type(make_engine(dispatched, tok, engine="auto")) is LatentEngine
    with pytest.raises(ValueError, match="one device"):
        make_engine(dispatched, tok, engine="fast")
    with pytest.raises(ValueError, match="dispatched"):
        FastLatentEngine(dispatched, tok)
    assert isinstance(make_engine(model, tok, engine="fast"), FastLatentEngine)  # the same weights, not dispatched


@torch.no_grad()
def test_realignment_is_float32_in_a_bfloat16_model():
    from gcache.models import tiny_random_model

    model, tok = tiny_random_model("qwen3", dtype=torch.bfloat16)
    engine = LatentEngine(model, tok)
    w_a, norm = engine.realignment()
    assert w_a.dtype == norm.dtype == torch.float32
    h = torch.randn(2, model.config.hidden_size, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    ref = h.double() @ w_a.double()
    ref = ref * (norm.double() / ref.norm(dim=-1, keepdim=True))
    e = engine.latent_embedding(h)
    assert e.dtype == torch.bfloat16
    torch.testing.assert_close(e, ref.to(torch.bfloat16), rtol=0, atol=0)  # one rounding, at the very end


# ------------------------------------------------------------------------------------------- on a GPU only
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("fixture", ["tiny_qwen3", "tiny_llama"])
@torch.no_grad()
def test_cuda_graphs_match_eager(fixture, request):
    """The captured steps give what the eager engine gives, on fused messages with a bias, batch and rows padded."""
    model, tok = request.getfixturevalue(fixture)
    model = copy.deepcopy(model).to("cuda")
    eager = LatentEngine(model, tok)
    fast = FastLatentEngine(model, tok, bucket=64)
    assert fast.cuda_graphs
    prompts = [chat(tok, q) for q in QUESTIONS]
    ref = run_node(eager, eager.empty_context(3), prompts, steps=6, tokens=12)
    got = run_node(fast, fast.empty_context(3), prompts, steps=6, tokens=12)
    assert_same_node(got, ref, own_start=0)
    bias = torch.linspace(-2.0, -0.1, eager.num_layers * 3 * ref["ctx_l"].length, device="cuda")
    bias = bias.reshape(eager.num_layers, 3, -1)  # [l, b, p]
    received = ref["ctx_l"].message("full", own_start=0)
    ref2 = run_node(eager, received, [chat(tok, "Judge.")] * 3, steps=4, tokens=12, bias=bias)
    got2 = run_node(fast, received, [chat(tok, "Judge.")] * 3, steps=4, tokens=12, bias=bias)
    assert_same_node(got2, ref2, own_start=received.length)
    assert fast.cuda_graphs  # no capture failed and fell back
    assert any(set(c.graphs) == {"latent", "decode"} for c in fast._caches.values())
