"""KVMessage: bookkeeping ops, message slices, positions after a message, and immutability.

The engine-backed tests check what a receiver computes on top of a latent-only message against a recompute
by a twin with stock eager attention, no cache, explicit positions and a hand-written mask.
"""

from __future__ import annotations

import pytest
import torch

from gcache.modules.kv_message import MESSAGE_MODES, KVMessage, SlotKind

P, L, G = SlotKind.PROMPT, SlotKind.LATENT, SlotKind.GENERATED
R = P  # a slot the sender received: its kind is whatever produced it upstream


def make_message(kinds, positions, valid, *, layers: int = 2, n_kv: int = 2, head_dim: int = 4, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    valid = torch.tensor(valid, dtype=torch.bool)
    b, s = valid.shape
    return KVMessage(
        keys=tuple(torch.randn(b, n_kv, s, head_dim, generator=gen) for _ in range(layers)),
        values=tuple(torch.randn(b, n_kv, s, head_dim, generator=gen) for _ in range(layers)),
        valid=valid,
        positions=torch.tensor(positions, dtype=torch.long),
        kinds=torch.tensor([int(k) for k in kinds], dtype=torch.long).expand(b, s),  # the same for every row
    )


def snapshot(msg: KVMessage) -> list[torch.Tensor]:
    return [t.clone() for t in (*msg.keys, *msg.values, msg.valid, msg.positions, msg.kinds)]


def assert_unchanged(msg: KVMessage, snap: list[torch.Tensor]) -> None:
    now = [*msg.keys, *msg.values, msg.valid, msg.positions, msg.kinds]
    assert len(now) == len(snap)
    for a, b in zip(now, snap):
        assert torch.equal(a, b)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-12))


# ------------------------------------------------------------------------------------------------ pure ops
def test_empty_message():
    msg = KVMessage.empty(num_layers=3, batch=2, n_kv=1, head_dim=4)
    assert (msg.length, msg.batch_size, msg.num_layers) == (0, 2, 3)
    assert msg.next_position().tolist() == [0, 0]
    assert msg.keys[0].shape == (2, 1, 0, 4)
    assert "slots=0" in repr(msg)


def test_next_position_ignores_padding():
    # Row 0: left padding, then positions 5, 6. Row 1: real 2, 3, then a padded slot whose stale position is 9.
    msg = make_message([R, R, R], [[-1, 5, 6], [2, 3, 9]], [[False, True, True], [True, True, False]])
    assert msg.next_position().tolist() == [7, 4]
    assert msg.num_valid().tolist() == [2, 2]


def test_bookkeeping_shapes_are_validated():
    good = make_message([R, R], [[0, 1]], [[True, True]])
    with pytest.raises(ValueError, match="bookkeeping shapes disagree"):
        KVMessage(good.keys, good.values, good.valid, good.positions, good.kinds[:, :1])
    with pytest.raises(ValueError, match="does not match valid"):
        KVMessage(tuple(k[..., :1, :] for k in good.keys), good.values, good.valid, good.positions, good.kinds)
    with pytest.raises(ValueError, match="key layers but"):
        KVMessage(good.keys, good.values[:1], good.valid, good.positions, good.kinds)


def test_concat_keeps_each_source_and_positions():
    a = make_message([L, L], [[3, 4], [-1, 7]], [[True, True], [False, True]], seed=1)
    b = make_message([P, L, L], [[0, 1, 2]] * 2, [[True] * 3] * 2, seed=2)
    ab = KVMessage.concat([a, b])
    assert ab.length == 5
    assert ab.positions.tolist() == [[3, 4, 0, 1, 2], [-1, 7, 0, 1, 2]]
    assert ab.kinds[0].tolist() == [L, L, P, L, L]
    for layer in range(2):
        assert torch.equal(ab.keys[layer][:, :, :2], a.keys[layer])
        assert torch.equal(ab.values[layer][:, :, 2:], b.values[layer])
    assert ab.next_position().tolist() == [5, 8]
    assert KVMessage.concat([a]) is a
    with pytest.raises(ValueError, match="at least one"):
        KVMessage.concat([])
    with pytest.raises(ValueError, match="differ in batch size"):
        KVMessage.concat([a, make_message([R], [[0]], [[True]])])


def test_select_and_slice():
    msg = make_message([R, P, P, L], [[0, 1, 2, 3]], [[True] * 4])
    sl = msg.slice(1, 3)
    assert sl.positions.tolist() == [[1, 2]] and sl.kinds[0].tolist() == [P, P]
    assert torch.equal(sl.keys[1], msg.keys[1][:, :, 1:3])
    sel = msg.select(torch.tensor([True, False, False, True]))
    assert sel.positions.tolist() == [[0, 3]]
    assert torch.equal(sel.values[0], msg.values[0][:, :, [0, 3]])


def test_message_modes_on_synthetic_cache():
    # Received context (2 slots, one a latent of the sender), own prompt (2), own latents (2), a generated token.
    msg = make_message([R, L, P, P, L, L, G], [[0, 1, 2, 3, 4, 5, 6]], [[True] * 7])
    full, own, latent = (msg.message(m, own_start=2) for m in MESSAGE_MODES)
    assert full.length == 7 and own.length == 5 and latent.length == 2
    assert latent.positions.tolist() == [[4, 5]]  # the sender's latent slot in the context is not re-sent
    assert torch.equal(latent.keys[0], msg.keys[0][:, :, 4:6])
    # slots keep the kind that produced them, so a receiver can tell prompts from latent thoughts
    assert full.kinds[0].tolist() == [R, L, P, P, L, L, G]
    assert own.kinds[0].tolist() == [P, P, L, L, G]
    assert latent.kinds[0].tolist() == [L, L]
    with pytest.raises(ValueError, match="unknown message mode 'tokens'"):
        msg.message("tokens", own_start=0)


def test_pure_ops_never_mutate():
    msg = make_message([R, P, L], [[0, 1, 2], [-1, 0, 1]], [[True] * 3, [False, True, True]])
    snap = snapshot(msg)
    outs = [msg.message("full", 1), msg.message("own", 1), msg.message("latent", 1), msg.slice(1),
            KVMessage.concat([msg, msg]), msg.detach()]
    assert [o.length for o in outs] == [3, 2, 1, 2, 6, 3]
    assert_unchanged(msg, snap)


def test_layers_stay_on_their_own_devices():
    # A model spread over devices keeps each layer's cache where that layer computes. Torch has one CPU device,
    # so "meta" (shapes only) stands in for a second one here; the bookkeeping stays on the first device.
    empty = KVMessage.empty(num_layers=2, batch=1, n_kv=2, head_dim=4, layer_devices=["cpu", "meta"])
    assert [k.device.type for k in empty.keys] == ["cpu", "meta"] and empty.valid.device.type == "cpu"
    with pytest.raises(ValueError, match="2 layer devices for 3 layers"):
        KVMessage.empty(num_layers=3, batch=1, n_kv=2, head_dim=4, layer_devices=["cpu", "meta"])
    cpu = make_message([R, P, L, L], [[0, 1, 2, 3]], [[True] * 4])
    split = KVMessage(tuple(k.to(d) for k, d in zip(cpu.keys, ("cpu", "meta"))),
                      tuple(v.to(d) for v, d in zip(cpu.values, ("cpu", "meta"))), cpu.valid, cpu.positions, cpu.kinds)
    outs = [split.message("own", 1), split.message("latent", 1), split.slice(2), KVMessage.concat([split, split])]
    assert [o.length for o in outs] == [3, 2, 2, 8]
    for out in outs:
        assert [k.device.type for k in out.keys] == [v.device.type for v in out.values] == ["cpu", "meta"]
        assert out.valid.device.type == out.positions.device.type == "cpu"
    assert torch.equal(outs[1].keys[0], cpu.keys[0][:, :, 2:4])
    assert [k.device.type for k in split.to("meta").keys] == ["meta", "meta"]  # .to() gathers them on one


# --------------------------------------------------------------------------------- messages from real runs
@torch.no_grad()
def test_message_slices_from_engine_run(engine):
    """full / own / latent lengths and the positions each slot claims, for a batch with padding."""
    prompts_a = ["Plan the sum.", "Plan the sum of 17 and 5, carefully."]
    ctx, h, _, _ = engine.prefill(engine.empty_context(2), prompts_a)
    ctx, h = engine.think(ctx, h, 2)
    received = ctx.message("full", own_start=0)
    prompts_b = ["Check it.", "Check the plan."]
    ctx_b, h_b, _, n_prompt = engine.prefill(received, prompts_b)
    ctx_b, _ = engine.think(ctx_b, h_b, 3)
    own_start = received.length
    t_b = ctx_b.length - own_start - 3  # padded prompt width of B
    assert ctx_b.message("full", own_start).length == received.length + t_b + 3
    assert ctx_b.message("own", own_start).length == t_b + 3
    latent = ctx_b.message("latent", own_start)
    assert latent.length == 3
    start = received.next_position()  # [b]
    for r in range(2):
        own_valid = ctx_b.valid[r, own_start:]
        own_pos = ctx_b.positions[r, own_start:][own_valid].tolist()
        n = int(n_prompt[r])
        assert own_pos == list(range(int(start[r]), int(start[r]) + n + 3))  # prompt, then consecutive latents
        assert latent.positions[r].tolist() == own_pos[n:]
        assert bool(latent.valid[r].all())
    assert torch.equal(ctx_b.kinds[:, own_start:], torch.tensor([int(P)] * t_b + [int(L)] * 3).expand(2, -1))


@torch.no_grad()
def test_receiver_continues_after_latent_only_message(engine, eager_twin):
    """A receiver of latent slots only starts at max(position) + 1 and computes what a recompute computes.

    Independent computation: the stock eager twin runs once, without cache, over
    [prompt A embeddings, latent embeddings, prompt B embeddings] at positions 0 .. T-1 with a hand-built 4-D
    mask: causal, except that B's queries may not see A's columns. The latent keys therefore keep exactly the
    values they had when A's node computed them (they did see A), while B sees only the latents and itself,
    which is what receiving a latent-only message means.
    """
    tok_a, valid_a = engine.tokenize(["Plan: 17 + 5 sheep."])
    tok_b, valid_b = engine.tokenize(["Refine the plan."])
    steps = 3
    emb_a = engine.embed(tok_a)
    ctx, h, _ = engine.extend(engine.empty_context(1), emb_a, valid_a, P)
    latents = []
    for _ in range(steps):
        e = engine.latent_embedding(h)[:, None]  # [1, 1, d]
        latents.append(e)
        ctx, h, _ = engine.extend(ctx, e, torch.ones(1, 1, dtype=torch.bool), L)
    msg = ctx.message("latent", own_start=0)
    a = tok_a.shape[1]
    assert msg.positions.tolist() == [list(range(a, a + steps))]
    snap = snapshot(msg)

    out_ctx, h_b, _ = engine.extend(msg, engine.embed(tok_b), valid_b, P)
    b = tok_b.shape[1]
    assert out_ctx.positions[0].tolist() == list(range(a, a + steps + b))  # continues at max + 1
    assert_unchanged(msg, snap)  # the received message is bit-identical after the node ran on it

    total = a + steps + b
    allowed = torch.ones(total, total, dtype=torch.bool).tril()
    allowed[a + steps:, :a] = False  # B's queries do not see prompt A
    mask = torch.zeros(1, 1, total, total).masked_fill(~allowed, torch.finfo(torch.float32).min)
    embeds = torch.cat([emb_a, *latents, engine.embed(tok_b)], dim=1)  # [1, T, d]
    ref = eager_twin(engine.model).get_decoder()(inputs_embeds=embeds, attention_mask=mask,
                                                  position_ids=torch.arange(total)[None],
                                                  use_cache=False).last_hidden_state[0]
    assert rel_err(h_b[0], ref[-1]) < 1e-4
    # Not vacuous: restarting B's positions at 0 (the reported bug) gives something else.
    ref_restart = eager_twin(engine.model).get_decoder()(
        inputs_embeds=embeds, attention_mask=mask,
        position_ids=torch.cat([torch.arange(a + steps), torch.arange(b)])[None], use_cache=False,
    ).last_hidden_state[0]
    assert rel_err(ref_restart[-1], ref[-1]) > 1e-3


@torch.no_grad()
def test_latent_only_message_batch_positions(engine):
    """With left padding, each row of the receiver continues after its own largest latent position."""
    ctx, h, _, n_a = engine.prefill(engine.empty_context(2), ["Short.", "A much longer first prompt here."])
    ctx, h = engine.think(ctx, h, 2)
    msg = ctx.message("latent", own_start=0)
    assert msg.positions.tolist() == [[int(n) + 0, int(n) + 1] for n in n_a]
    snap = snapshot(msg)
    out, h_b, _, n_b = engine.prefill(msg, ["Go on.", "Go on, please."])
    out, _ = engine.think(out, h_b, 1)
    assert_unchanged(msg, snap)
    for r in range(2):
        real = out.positions[r, msg.length:][out.valid[r, msg.length:]].tolist()
        first = int(n_a[r]) + 2
        assert real == list(range(first, first + int(n_b[r]) + 1))
