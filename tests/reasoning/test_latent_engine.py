"""LatentEngine: realignment, latent steps against a no-cache recompute, and batch vs one-by-one.

The reference of every numerical check is independent of the engine: the realignment is solved as a float64
least-squares problem, and hidden states are recomputed by a twin of the model with transformers' stock eager
attention, no cache and the positions given explicitly.
"""

from __future__ import annotations

import pytest
import torch

from gcache.modules.kv_message import SlotKind
from gcache.reasoning import DecodeConfig, LatentEngine, realignment_matrix, render_chat

QUESTIONS = [
    "What is 2 + 3?",
    "A farmer has 17 sheep and buys 5 more. How many sheep are there now?",
    "Name a prime.",
]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-12))


def ridge_reference(w_in: torch.Tensor, w_out: torch.Tensor, lam: float) -> torch.Tensor:
    """argmin_X ||W_out X - W_in||² + lam ||X||², as least squares on the stacked system, in float64."""
    d = w_out.shape[1]
    a = torch.cat([w_out.double(), lam**0.5 * torch.eye(d, dtype=torch.float64)])  # [v + d, d]
    b = torch.cat([w_in.double(), torch.zeros(d, d, dtype=torch.float64)])  # [v + d, d]
    return torch.linalg.lstsq(a, b, driver="gelsd").solution


def prompt_ids(engine: LatentEngine, text: str) -> torch.Tensor:
    ids, valid = engine.tokenize([text])
    assert bool(valid.all())
    return ids  # [1, t]


def run_node(engine: LatentEngine, ctx, ids: torch.Tensor, steps: int):
    """Prefill ``ids [1, t]`` on ``ctx`` and take ``steps`` latent steps, keeping every input embedding.

    Returns:
        tuple: (context, input embeddings [1, t + steps, d], hidden state after each step [steps + 1, d]).
    """
    embeds = [engine.embed(ids)]
    ctx, h, _ = engine.extend(ctx, embeds[0], torch.ones_like(ids, dtype=torch.bool), SlotKind.PROMPT)
    hiddens = [h]
    for _ in range(steps):
        e = engine.latent_embedding(h)[:, None, :]  # [1, 1, d]
        embeds.append(e)
        ctx, h, _ = engine.extend(ctx, e, torch.ones(1, 1, dtype=torch.bool), SlotKind.LATENT)
        hiddens.append(h)
    return ctx, torch.cat(embeds, dim=1), torch.cat(hiddens)


# ---------------------------------------------------------------------------------------------- realignment
@pytest.mark.parametrize("lam", [1e-5, 1e-2])
def test_realignment_matches_float64_least_squares(lam):
    gen = torch.Generator().manual_seed(0)
    w_in = torch.randn(300, 16, generator=gen)
    w_out = torch.randn(300, 16, generator=gen) * 0.5 + 0.1 * w_in
    w_a, norm = realignment_matrix(w_in, w_out, lam)
    assert w_a.shape == (16, 16) and w_a.dtype == torch.float32
    torch.testing.assert_close(w_a.double(), ridge_reference(w_in, w_out, lam), rtol=1e-4, atol=1e-5)
    assert float(norm) == pytest.approx(float(w_in.double().norm(dim=1).mean()), rel=1e-5)


@pytest.mark.parametrize("fixture", ["tiny_qwen3", "tiny_llama"])
def test_realignment_on_tiny_model_weights(fixture, request):
    model, _ = request.getfixturevalue(fixture)
    assert not model.config.tie_word_embeddings  # otherwise W_a is (nearly) the identity and proves little
    w_in = model.get_input_embeddings().weight
    w_out = model.get_output_embeddings().weight
    w_a, norm = realignment_matrix(w_in, w_out)
    ref = ridge_reference(w_in, w_out, 1e-5)
    assert rel_err(w_a, ref) < 1e-4
    assert float(norm) == pytest.approx(float(w_in.double().norm(dim=1).mean()), rel=1e-5)


def test_engine_builds_realignment_once_and_uses_it(tiny_qwen3):
    model, tok = tiny_qwen3
    engine = LatentEngine(model, tok)
    first = engine.realignment()
    assert engine.realignment() is first
    assert first[0] is engine.realignment()[0]
    w_in = model.get_input_embeddings().weight
    ref = ridge_reference(w_in, model.get_output_embeddings().weight, engine.lam)
    assert rel_err(first[0], ref) < 1e-4
    # e = normalise(h W_a), rescaled to the mean row norm of W_in, computed here in float64.
    h = torch.randn(3, model.config.hidden_size, generator=torch.Generator().manual_seed(1))
    e_ref = h.double() @ ref
    e_ref = e_ref * (w_in.double().norm(dim=1).mean() / e_ref.norm(dim=-1, keepdim=True))
    assert rel_err(engine.latent_embedding(h), e_ref) < 1e-4


def test_realignment_off_is_rescaled_identity(tiny_qwen3):
    model, tok = tiny_qwen3
    engine = LatentEngine(model, tok, realign=False)
    h = torch.randn(2, model.config.hidden_size, generator=torch.Generator().manual_seed(2))
    target = model.get_input_embeddings().weight.double().norm(dim=1).mean()
    e = engine.latent_embedding(h)
    torch.testing.assert_close(e.double(), h.double() * target / h.double().norm(dim=-1, keepdim=True))


# ---------------------------------------------------------------------------- latent steps vs no-cache recompute
@pytest.mark.parametrize("fixture", ["tiny_qwen3", "tiny_llama"])
@torch.no_grad()
def test_latent_steps_match_no_cache_recompute(fixture, request, eager_twin):
    model, tok = request.getfixturevalue(fixture)
    engine = LatentEngine(model, tok)
    steps = 4
    ids = prompt_ids(engine, render_chat(tok, [{"role": "user", "content": QUESTIONS[1]}]))
    ctx, embeds, hiddens = run_node(engine, engine.empty_context(1), ids, steps)
    t = ids.shape[1]
    assert ctx.length == t + steps
    assert ctx.positions[0].tolist() == list(range(t + steps))
    assert ctx.kinds[0].tolist() == [SlotKind.PROMPT] * t + [SlotKind.LATENT] * steps
    # One pass over every input embedding, no cache, stock attention and causal mask.
    ref = eager_twin(model).get_decoder()(inputs_embeds=embeds, use_cache=False).last_hidden_state[0]  # [t+steps, d]
    for k in range(steps + 1):
        assert rel_err(hiddens[k], ref[t - 1 + k]) < 1e-4, f"step {k}"
    # The cached keys are the recompute's keys too: the next step's logits agree.
    head = model.get_output_embeddings()
    assert rel_err(head(hiddens[-1]), head(ref[-1])) < 1e-4


@pytest.mark.parametrize("fixture", ["tiny_qwen3", "tiny_llama"])
@torch.no_grad()
def test_latent_steps_on_received_context_match_recompute(fixture, request, eager_twin):
    model, tok = request.getfixturevalue(fixture)
    engine = LatentEngine(model, tok)
    ids_a = prompt_ids(engine, "Plan: add the numbers.")
    ids_b = prompt_ids(engine, "Critique the plan, then refine it.")
    ctx_a, emb_a, _ = run_node(engine, engine.empty_context(1), ids_a, 3)
    received = ctx_a.message("full", own_start=0)
    ctx_b, emb_b, hiddens = run_node(engine, received, ids_b, 2)
    total = emb_a.shape[1] + emb_b.shape[1]
    assert ctx_b.positions[0].tolist() == list(range(total))
    positions = torch.arange(total)[None]  # [1, T]
    ref = eager_twin(model).get_decoder()(inputs_embeds=torch.cat([emb_a, emb_b], dim=1), position_ids=positions,
                                           use_cache=False).last_hidden_state[0]
    assert rel_err(hiddens[-1], ref[-1]) < 1e-4
    assert rel_err(hiddens[0], ref[total - 3]) < 1e-4  # after B's prompt, before its latent steps


# ---------------------------------------------------------------------------------------- batch vs one by one
def _prefill_think_decode(engine: LatentEngine, prompts: list[str], steps: int, max_new_tokens: int):
    ctx, h, _, _ = engine.prefill(engine.empty_context(len(prompts)), prompts)
    ctx, h = engine.think(ctx, h, steps)
    logits = engine.model.get_output_embeddings()(h)  # [b, v]
    out = engine.decode(ctx, logits, DecodeConfig(max_new_tokens=max_new_tokens))
    return h, out


@pytest.mark.parametrize("fixture", ["tiny_qwen3", "tiny_llama"])
@torch.no_grad()
def test_batch_equals_one_by_one(fixture, request):
    model, tok = request.getfixturevalue(fixture)
    engine = LatentEngine(model, tok)
    prompts = [render_chat(tok, [{"role": "user", "content": q}]) for q in QUESTIONS]
    lengths = {len(engine.tokenize([p])[0][0]) for p in prompts}
    assert len(lengths) == 3  # different lengths: the batch really is padded
    h_batch, batch = _prefill_think_decode(engine, prompts, steps=3, max_new_tokens=8)
    for r, prompt in enumerate(prompts):
        h_one, one = _prefill_think_decode(engine, [prompt], steps=3, max_new_tokens=8)
        assert batch.token_ids[r] == one.token_ids[0], f"row {r}"
        assert batch.texts[r] == one.texts[0]
        assert rel_err(h_batch[r], h_one[0]) < 1e-4
        # Same real slots at the same positions, whatever the padding around them.
        row = batch.context
        assert row.positions[r][row.valid[r]].tolist() == one.context.positions[0][one.context.valid[0]].tolist()
    assert len({tuple(ids) for ids in batch.token_ids}) > 1  # the questions do make a difference


@torch.no_grad()
def test_batch_equals_one_by_one_when_rows_stop_early(tiny_qwen3):
    """Rows that stop first keep stepping as padding; the others must not notice."""
    model, tok = tiny_qwen3
    engine = LatentEngine(model, tok)
    prompts = [render_chat(tok, [{"role": "user", "content": q}]) for q in QUESTIONS]
    _, free = _prefill_think_decode(engine, prompts, steps=2, max_new_tokens=8)
    stop = free.token_ids[0][2]  # make row 0's third token a stop token: row 0 ends after two tokens
    assert stop not in free.token_ids[0][:2]
    engine.stop_ids = {stop}
    rows_per_forward: list[int] = []
    hook = engine.model.get_decoder().register_forward_pre_hook(
        lambda module, args, kwargs: rows_per_forward.append(kwargs["inputs_embeds"].shape[0]), with_kwargs=True)
    try:
        _, batch = _prefill_think_decode(engine, prompts, steps=2, max_new_tokens=8)
    finally:
        hook.remove()
    lengths = [len(ids) for ids in batch.token_ids]
    assert lengths[0] == 2 and max(lengths) > 2  # rows really finish at different steps
    # a stopped row leaves the batch: after row 0's stop token the decoding forwards run the other rows only
    decoding = rows_per_forward[1 + 2:]  # after the prefill and the latent steps
    assert decoding[:2] == [3, 3] and decoding[2] == 2 and len(decoding) == max(lengths)
    for r, prompt in enumerate(prompts):
        _, one = _prefill_think_decode(engine, [prompt], steps=2, max_new_tokens=8)
        assert batch.token_ids[r] == one.token_ids[0], f"row {r}"
        assert batch.truncated[r] == one.truncated[0]
        # the row's real slots hold what one-by-one holds (keys and values of its generated tokens too)
        real, real_one = batch.context.valid[r], one.context.valid[0]
        for x, y in zip((*batch.context.keys, *batch.context.values), (*one.context.keys, *one.context.values)):
            assert rel_err(x[r][:, real], y[0][:, real_one]) < 1e-4
    # Finished rows add padding slots only: real slots = prompt + latent steps + tokens generated.
    n_real = batch.context.valid.sum(dim=1).tolist()
    n_prompt = [int(engine.tokenize([p])[1].sum()) for p in prompts]
    assert n_real == [n + 2 + k for n, k in zip(n_prompt, lengths)]


@torch.no_grad()
def test_prefill_ignores_tokenizer_padding_side(tiny_qwen3):
    """Regression: a right-padding tokenizer made short rows hand on the hidden state of a padding slot."""
    import copy

    model, tok = tiny_qwen3
    right = copy.deepcopy(tok)
    right.padding_side = "right"
    prompts = ["hello there, friend", "hi"]
    ref = LatentEngine(model, tok)
    eng = LatentEngine(model, right)
    _, h_ref, _, _ = ref.prefill(ref.empty_context(2), prompts)
    ctx, h, _, n = eng.prefill(eng.empty_context(2), prompts)
    assert n.tolist() == [len(p.encode()) for p in prompts]  # byte-level: one token per byte
    assert bool(ctx.valid[:, -1].all())
    torch.testing.assert_close(h, h_ref)


def test_think_rejects_negative_steps(engine):
    ctx = engine.empty_context(1)
    with pytest.raises(ValueError, match="latent steps must be >= 0"):
        engine.think(ctx, torch.zeros(1, engine.model.config.hidden_size), -1)


def test_decode_config_validates():
    with pytest.raises(ValueError, match="max_new_tokens"):
        DecodeConfig(max_new_tokens=0)
    with pytest.raises(ValueError, match="temperature"):
        DecodeConfig(temperature=-0.1)
    with pytest.raises(ValueError, match="top_p"):
        DecodeConfig(top_p=0.0)
