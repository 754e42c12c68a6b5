"""The explicit attention mask and the fusing SDPA that adds the CacheFuser's key bias.

References: a loop-built mask, and a twin of the model with transformers' stock eager attention run without
cache over the whole sequence.
"""

from __future__ import annotations

import pytest
import torch

from gcache.models import tiny_random_model
from gcache.modules.attention import FUSED_ATTENTION, build_attention_mask
from gcache.modules.kv_message import SlotKind
from gcache.reasoning import LatentEngine

MIN32 = torch.finfo(torch.float32).min


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-12))


def loop_mask(key_valid: torch.Tensor, q_len: int, q_start: int | None = None) -> torch.Tensor:
    """The rule written out one entry at a time: ``[b, q, kv]`` bool, True = may attend."""
    b, kv = key_valid.shape
    q_start = kv - q_len if q_start is None else q_start
    out = torch.zeros(b, q_len, kv, dtype=torch.bool)
    for r in range(b):
        for qi in range(q_len):
            q_slot = q_start + qi
            for k in range(kv):
                out[r, qi, k] = (k <= q_slot and bool(key_valid[r, k])) or k == q_slot
    return out


# ------------------------------------------------------------------------------------------------- the mask
@pytest.mark.parametrize("q_len", [1, 3, 7])
def test_build_attention_mask_matches_rule(q_len):
    # Row 0: left padding; row 1: padding in the middle (two concatenated messages); row 2: padded queries.
    key_valid = torch.tensor([
        [False, False, True, True, True, True, True],
        [True, False, True, False, True, True, True],
        [True, True, True, True, True, False, False],
    ])
    mask = build_attention_mask(key_valid, q_len, torch.float32)
    assert mask.shape == (3, 1, q_len, 7) and mask.dtype == torch.float32
    assert set(mask.unique().tolist()) <= {0.0, MIN32}
    allowed = mask[:, 0] == 0
    assert torch.equal(allowed, loop_mask(key_valid, q_len))
    assert bool(allowed.any(dim=-1).all())  # no fully masked row (SDPA would give NaN)
    # A padded key is never seen by any other query; a padded query sees itself.
    q0 = 7 - q_len
    for r, k in (key_valid == 0).nonzero().tolist():
        seen_by = allowed[r, :, k].nonzero().flatten().tolist()
        assert seen_by == ([k - q0] if k >= q0 else [])


@pytest.mark.parametrize("q_len", [1, 3])
def test_build_attention_mask_queries_inside_a_preallocated_cache(q_len):
    """Queries in the middle of the slots (a static cache): the unused tail is never attended, by any query."""
    key_valid = torch.tensor([
        [False, True, True, True, True, False, False, False, False],
        [True, False, True, True, False, True, False, False, False],
    ])
    for q_start in (2, 4):
        for start in (q_start, torch.tensor(q_start)):  # a host int, or a 0-d tensor as a CUDA graph feeds it
            mask = build_attention_mask(key_valid, q_len, torch.float32, q_start=start)
            allowed = mask[:, 0] == 0
            assert torch.equal(allowed, loop_mask(key_valid, q_len, q_start))
            assert not bool(allowed[:, :, q_start + q_len:].any())


def test_build_attention_mask_dtype_min():
    mask = build_attention_mask(torch.tensor([[False, True]]), 2, torch.bfloat16)
    assert mask.dtype == torch.bfloat16
    assert mask[0, 0].tolist() == [[0.0, torch.finfo(torch.bfloat16).min], [torch.finfo(torch.bfloat16).min, 0.0]]


# ------------------------------------------------------------------------------------- the fusing attention
def _two_segments(engine: LatentEngine):
    """Context: prefill A; then the ids of B to extend it with. Batch 1, no padding."""
    ids_a, valid_a = engine.tokenize(["The plan: add 17 and 5."])
    ids_b, valid_b = engine.tokenize(["Answer:"])
    ctx, _, _ = engine.extend(engine.empty_context(1), engine.embed(ids_a), valid_a, SlotKind.PROMPT)
    return ctx, ids_a, ids_b, valid_b


@torch.no_grad()
def test_zero_bias_equals_no_bias_and_eager_recompute(engine, eager_twin):
    ctx, ids_a, ids_b, valid_b = _two_segments(engine)
    l, p = engine.num_layers, ctx.length
    _, _, plain = engine.extend(ctx, engine.embed(ids_b), valid_b, SlotKind.PROMPT, logits="all")
    zero = torch.zeros(l, 1, p)
    _, _, biased = engine.extend(ctx, engine.embed(ids_b), valid_b, SlotKind.PROMPT, zero, logits="all")
    assert (biased - plain).abs().max() <= 1e-5
    # The causal mask still holds with a bias: the whole-sequence eager run (its own causal mask) agrees.
    ref = eager_twin(engine.model)(input_ids=torch.cat([ids_a, ids_b], dim=1), use_cache=False).logits
    assert rel_err(biased[0], ref[0, ids_a.shape[1]:]) < 1e-4


@torch.no_grad()
def test_bias_changes_output_and_large_negative_bias_masks(engine, eager_twin):
    ctx, ids_a, ids_b, valid_b = _two_segments(engine)
    l, p = engine.num_layers, ctx.length
    _, _, plain = engine.extend(ctx, engine.embed(ids_b), valid_b, SlotKind.PROMPT, logits="all")
    _, _, damped = engine.extend(ctx, engine.embed(ids_b), valid_b, SlotKind.PROMPT, torch.full((l, 1, p), -2.0),
                                 logits="all")
    assert (damped - plain).abs().max() > 1e-3
    # A bias of -1e9 on every context key is a mask on them: B then sees only itself, at its continued positions.
    _, _, cut = engine.extend(ctx, engine.embed(ids_b), valid_b, SlotKind.PROMPT, torch.full((l, 1, p), -1e9),
                              logits="all")
    a, b = ids_a.shape[1], ids_b.shape[1]
    allowed = torch.ones(a + b, a + b, dtype=torch.bool).tril()
    allowed[a:, :a] = False
    mask = torch.zeros(1, 1, a + b, a + b).masked_fill(~allowed, MIN32)
    ref = eager_twin(engine.model)(input_ids=torch.cat([ids_a, ids_b], dim=1), attention_mask=mask,
                                   position_ids=torch.arange(a + b)[None], use_cache=False).logits
    assert rel_err(cut[0], ref[0, a:]) < 1e-4


def test_bias_without_mask_is_refused(engine):
    ids, _ = engine.tokenize(["hi there"])
    with pytest.raises(ValueError, match="explicit 4-D mask"):
        engine.model.get_decoder()(input_ids=ids, fuser_bias=torch.zeros(engine.num_layers, 1, 1))


@torch.no_grad()
def test_padding_mask_of_plain_forward_is_honoured(tiny_qwen3, eager_twin):
    """A plain ``model(ids, attention_mask=2-D)`` with the fusing attention must mask padding like stock SDPA.

    Regression: transformers builds no mask for an attention name without a registered mask function, so the
    left padding of a batch was silently attended.
    """
    model, tok = tiny_qwen3
    assert model.config._attn_implementation == FUSED_ATTENTION
    enc = tok(["hello there, friend", "hi"], return_tensors="pt", padding=True)
    assert not bool(enc["attention_mask"].all())
    ours = model(**enc).logits
    ref = eager_twin(model)(**enc).logits
    keep = enc["attention_mask"].bool()
    assert rel_err(ours[keep], ref[keep]) < 1e-4
    # ... and a zero bias on top of transformers' boolean mask changes nothing.
    with_bias = model(**enc, fuser_bias=torch.zeros(model.config.num_hidden_layers, 2, 3)).logits
    assert (with_bias[keep] - ours[keep]).abs().max() <= 1e-5


def test_bias_gradient_flows_and_matches_finite_differences():
    """``answer_nll`` is differentiable in the bias, and its gradient is the true one.

    In float64, the gradient of a loss written here (answer-token NLL from the engine's logits) is checked
    against central differences; ``answer_nll``'s gradient must equal it. The step is not tiny because the
    model's RMSNorm computes in float32 even in a float64 model, which limits the forward's precision.
    """
    model, tok = tiny_random_model("qwen3", seed=3, dtype=torch.float64)
    engine = LatentEngine(model, tok)
    with torch.no_grad():
        ctx, _, _, _ = engine.prefill(engine.empty_context(2), ["Plan: 2 + 3.", "Plan: add 17 and 5 sheep."])
    prompts, answers = ["Answer:", "So the answer is"], [" 5", " 22"]
    rows = [tok(p + a, add_special_tokens=False)["input_ids"] for p, a in zip(prompts, answers)]
    n_answer = [len(tok(a, add_special_tokens=False)["input_ids"]) for a in answers]
    t = max(map(len, rows))
    ids = torch.tensor([[tok.pad_token_id] * (t - len(r)) + r for r in rows])  # [2, t] left-padded
    valid = torch.tensor([[False] * (t - len(r)) + [True] * len(r) for r in rows])

    def loss(bias: torch.Tensor) -> torch.Tensor:
        _, _, logits = engine.extend(ctx, engine.embed(ids), valid, SlotKind.PROMPT, bias, logits="all")
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None])[..., 0]  # [2, t-1]
        return sum(-logp[r, t - 1 - n:].mean() for r, n in enumerate(n_answer))

    bias = torch.zeros(engine.num_layers, 2, ctx.length, dtype=torch.float64, requires_grad=True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(loss(bias), bias)
        engine.answer_nll(ctx, prompts, answers, bias).sum().backward()
    assert grad.abs().max() > 0
    assert all(p.grad is None for p in model.parameters())
    assert grad[:, 0][:, ~ctx.valid[0]].abs().max() == 0  # padded keys get no gradient
    assert rel_err(bias.grad, grad) < 1e-4
    eps = 1e-3
    for flat in grad.abs().flatten().topk(3).indices.tolist():  # the largest entries: FD noise is absolute
        layer, row, slot = torch.unravel_index(torch.tensor(flat), grad.shape)
        step = torch.zeros_like(bias)
        step[layer, row, slot] = eps
        with torch.no_grad():
            fd = (loss(bias + step) - loss(bias - step)) / (2 * eps)
        assert float(grad[layer, row, slot]) == pytest.approx(float(fd), rel=2e-3, abs=2e-5)
