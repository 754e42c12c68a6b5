"""Property tests (hypothesis) of KVMessage select/concat and of the attention mask, against direct indexing."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gcache.modules.attention import build_attention_mask
from gcache.modules.kv_message import KVMessage

SETTINGS = settings(max_examples=60, deadline=None)
LAYERS, N_KV, HEAD_DIM = 2, 2, 3


def _message(batch: int, slots: int, seed: int) -> KVMessage:
    g = torch.Generator().manual_seed(seed)
    keys = tuple(torch.randn(batch, N_KV, slots, HEAD_DIM, generator=g) for _ in range(LAYERS))
    values = tuple(torch.randn(batch, N_KV, slots, HEAD_DIM, generator=g) for _ in range(LAYERS))
    valid = torch.rand(batch, slots, generator=g) < 0.8
    positions = torch.randint(0, 100, (batch, slots), generator=g).masked_fill(~valid, -1)
    kinds = torch.randint(0, 3, (batch, slots), generator=g)  # per row: stacked agents keep their own
    return KVMessage(keys, values, valid, positions, kinds)


def _snapshot(m: KVMessage) -> list[torch.Tensor]:
    return [t.clone() for t in (*m.keys, *m.values, m.valid, m.positions, m.kinds)]


def _same(m: KVMessage, snapshot: list[torch.Tensor]) -> bool:
    return all(torch.equal(a, b) for a, b in zip((*m.keys, *m.values, m.valid, m.positions, m.kinds), snapshot))


@SETTINGS
@given(st.integers(1, 3), st.lists(st.integers(0, 5), min_size=1, max_size=4), st.integers(0, 10_000))
def test_concat_then_slice_gives_back_each_part_untouched(batch, lengths, seed):
    parts = [_message(batch, n, seed + i) for i, n in enumerate(lengths)]
    before = [_snapshot(m) for m in parts]
    whole = KVMessage.concat(parts)
    assert whole.length == sum(lengths) and whole.batch_size == batch and whole.num_layers == LAYERS
    start = 0
    for part, snap in zip(parts, before):
        piece = whole.slice(start, start + part.length)
        assert _same(piece, snap)  # slots, positions, validity and kinds all come back as they were
        assert _same(part, snap)  # and no part was written to
        start += part.length
    # a continuation starts one past the largest real position any part holds in that row (0 if none)
    for row in range(batch):
        held = [int(p) for m in parts for p, ok in zip(m.positions[row], m.valid[row]) if ok]
        assert int(whole.next_position()[row]) == max(held, default=-1) + 1


@SETTINGS
@given(st.integers(1, 3), st.integers(0, 8), st.integers(0, 10_000), st.data())
def test_select_keeps_exactly_the_chosen_slots(batch, slots, seed, data):
    msg = _message(batch, slots, seed)
    snap = _snapshot(msg)
    keep = data.draw(st.lists(st.booleans(), min_size=slots, max_size=slots))
    mask = torch.tensor(keep, dtype=torch.bool)
    idx = [i for i, k in enumerate(keep) if k]
    out = msg.select(mask)
    assert out.length == len(idx)
    for layer in range(LAYERS):
        assert torch.equal(out.keys[layer], msg.keys[layer][:, :, idx])  # [b, n_kv, s', h_d]
        assert torch.equal(out.values[layer], msg.values[layer][:, :, idx])
    assert torch.equal(out.valid, msg.valid[:, idx]) and torch.equal(out.positions, msg.positions[:, idx])
    assert torch.equal(out.kinds, msg.kinds[:, idx])
    assert _same(msg, snap)


@SETTINGS
@given(st.integers(1, 3), st.integers(1, 8), st.data())
def test_attention_mask_is_causal_over_valid_keys_and_never_empty(batch, kv, data):
    q_len = data.draw(st.integers(1, kv))
    valid = torch.tensor(data.draw(st.lists(st.lists(st.booleans(), min_size=kv, max_size=kv), min_size=batch,
                                            max_size=batch)), dtype=torch.bool)
    mask = build_attention_mask(valid, q_len, torch.float32)
    assert mask.shape == (batch, 1, q_len, kv)
    for b in range(batch):
        for i in range(q_len):
            query_slot = kv - q_len + i
            for j in range(kv):
                allowed = (j <= query_slot and bool(valid[b, j])) or j == query_slot
                assert (mask[b, 0, i, j] == 0) == allowed
            assert (mask[b, 0, i] == 0).any()
    assert set(mask.unique().tolist()) <= {0.0, torch.finfo(torch.float32).min}
