"""CacheFuser: concatenation, the per-layer / per-edge bias recomputed by hand, soft edges, errors, repr."""

from __future__ import annotations

import math

import pytest
import torch

from gcache.modules.cache_fuser import CacheFuser, merge_messages
from gcache.modules.kv_message import KVMessage, SlotKind

ROLES = ["Planner", "Critic", "Refiner", "Judger"]


def message(length: int, *, batch: int = 2, layers: int = 3, seed: int = 0, kinds: list[int] | None = None
            ) -> KVMessage:
    gen = torch.Generator().manual_seed(seed)
    valid = torch.ones(batch, length, dtype=torch.bool)
    valid[0, 0] = False  # some left padding in row 0
    return KVMessage(
        keys=tuple(torch.randn(batch, 2, length, 4, generator=gen) for _ in range(layers)),
        values=tuple(torch.randn(batch, 2, length, 4, generator=gen) for _ in range(layers)),
        valid=valid,
        positions=torch.arange(length).expand(batch, -1).masked_fill(~valid, -1),
        kinds=(torch.tensor(kinds) if kinds is not None else torch.full((length,), int(SlotKind.PROMPT))).expand(
            batch, length),
    )


def log2sigmoid(x: float) -> float:
    """log(2 σ(x)), computed independently of the module."""
    return math.log(2.0 / (1.0 + math.exp(-x)))


def assert_same_message(a: KVMessage, b: KVMessage) -> None:
    fields = lambda m: (*m.keys, *m.values, m.valid, m.positions, m.kinds)  # noqa: E731
    for x, y in zip(fields(a), fields(b), strict=True):
        assert torch.equal(x, y)


def test_concat_mode_is_plain_concatenation():
    msgs = [message(3, seed=1), message(5, seed=2)]
    fuser = CacheFuser(num_layers=3, role_names=ROLES, mode="concat")
    ctx, bias = fuser(msgs, ["Planner", "Critic"], "Judger")
    assert bias is None
    assert_same_message(ctx, KVMessage.concat(msgs))


def test_merge_messages_source_index():
    ctx, source = merge_messages([message(2, seed=1), message(3, seed=2), message(1, seed=3)])
    assert ctx.length == 6
    assert source.tolist() == [0, 0, 1, 1, 1, 2]


def test_new_fuser_is_exactly_concatenation():
    msgs = [message(3, seed=1, kinds=[0, 1, 1]), message(2, seed=2, kinds=[0, 2])]
    ctx, bias = CacheFuser(num_layers=3, role_names=ROLES)(msgs, ["Critic", "Planner"], "Refiner")
    assert_same_message(ctx, KVMessage.concat(msgs))
    assert bias.shape == (3, 2, 5)
    assert bool((bias == 0).all())  # identity, not closeness: log 2σ(0) is exactly 0


def test_bias_mode_values_recomputed_by_hand():
    P, L, G = int(SlotKind.PROMPT), int(SlotKind.LATENT), int(SlotKind.GENERATED)
    msgs = [message(3, seed=1, kinds=[P, L, L]), message(2, seed=2, kinds=[P, G])]
    fuser = CacheFuser(num_layers=3, role_names=ROLES, mode="bias")
    kind_w = [[0.3, -4.0, 1.0], [0.0, -2.0, 0.5], [-1.0, 2.0, 0.0]]  # [layer][kind]
    with torch.no_grad():
        fuser.gates[0].copy_(torch.tensor([0.5, -1.0, 2.0]))  # receiver kind 0: an agent (no decision role given)
        fuser.edge_logits.copy_(torch.arange(16, dtype=torch.float32).reshape(4, 4) / 4 - 2)
        fuser.kind_logits[0].copy_(torch.tensor(kind_w))
        fuser.gates[1].fill_(-9.0)  # the decision node's own weights: unused here
        fuser.kind_logits[1].fill_(-9.0)
    ctx, bias = fuser(msgs, ["Critic", "Planner"], "Refiner")
    assert_same_message(ctx, KVMessage.concat(msgs))
    assert bias.shape == (3, 2, 5)
    gates = [0.5, -1.0, 2.0]
    w = lambda u, v: ROLES.index(u) + ROLES.index(v) / 4 - 2  # noqa: E731  = edge_logits[u, v] set above
    slots = [("Critic", P), ("Critic", L), ("Critic", L), ("Planner", P), ("Planner", G)]
    for layer in range(3):
        expect = [log2sigmoid(gates[layer]) + log2sigmoid(w(src, "Refiner")) + log2sigmoid(kind_w[layer][kind])
                  for src, kind in slots]
        for row in range(2):
            assert bias[layer, row].tolist() == pytest.approx(expect, rel=1e-6)


def test_kind_weights_can_mute_latent_slots_only():
    """A receiver can keep a peer's prompt while muting its latent thoughts: the attention weight of latent slots
    falls towards 0 and that of prompt slots does not."""
    P, L = int(SlotKind.PROMPT), int(SlotKind.LATENT)
    msgs = [message(4, seed=1, kinds=[P, P, L, L])]
    fuser = CacheFuser(num_layers=3, role_names=ROLES)
    with torch.no_grad():
        fuser.kind_logits[..., L] = -30.0
    _, bias = fuser(msgs, ["Planner"], "Judger")
    weights = torch.softmax(bias[0, 1], dim=-1)  # equal raw scores: the bias alone decides
    assert weights[2:].max() < 1e-10 and weights[:2].tolist() == pytest.approx([0.5, 0.5])


def test_soft_edge_log_probs_add_to_their_source():
    msgs = [message(2, seed=1), message(3, seed=2)]
    hard = CacheFuser(num_layers=3, role_names=ROLES, mode="bias")
    _, bias = hard(msgs, ["Planner", "Critic"], "Judger")
    log_p = [torch.tensor(math.log(0.8)), torch.tensor(math.log(0.3))]
    _, soft = hard(msgs, ["Planner", "Critic"], "Judger", edge_log_probs=log_p)
    diff = soft - bias  # [l, b, 5]
    torch.testing.assert_close(diff[..., :2], torch.full((3, 2, 2), math.log(0.8)))
    torch.testing.assert_close(diff[..., 2:], torch.full((3, 2, 3), math.log(0.3)))
    # In concat mode the soft-edge term is the whole bias.
    _, only_soft = CacheFuser(3, ROLES, mode="concat")(msgs, ["Planner", "Critic"], "Judger", edge_log_probs=log_p)
    torch.testing.assert_close(only_soft, diff)


def test_bias_gradients_reach_gates_used_edges_and_present_kinds_only():
    fuser = CacheFuser(num_layers=3, role_names=ROLES)
    log_p = torch.tensor(-0.5, requires_grad=True)
    _, bias = fuser([message(2, kinds=[0, 1]), message(1, kinds=[1])], ["Planner", "Critic"], "Judger",
                    edge_log_probs=[log_p, torch.zeros(())])
    (bias * torch.arange(1.0, 4.0)[:, None, None]).sum().backward()
    assert bool((fuser.gates.grad[0] != 0).all()) and bool((fuser.gates.grad[1] == 0).all())  # an agent receiver
    used = torch.zeros(4, 4, dtype=torch.bool)
    used[0, 3] = used[1, 3] = True
    assert bool((fuser.edge_logits.grad[used] != 0).all())
    assert bool((fuser.edge_logits.grad[~used] == 0).all())
    assert bool((fuser.kind_logits.grad[0, :, :2] != 0).all())  # prompt and latent slots were present
    assert bool((fuser.kind_logits.grad[0, :, 2] == 0).all())  # no generated slot
    assert bool((fuser.kind_logits.grad[1] == 0).all())
    assert float(log_p.grad) == pytest.approx(2 * (1 + 2 + 3) * 2)  # 2 rows x 2 slots, weighted by layer


def test_errors_name_the_problem():
    fuser = CacheFuser(num_layers=3, role_names=ROLES)
    with pytest.raises(KeyError, match="'Oracle'.*Planner, Critic, Refiner, Judger"):
        fuser([message(2)], ["Oracle"], "Judger")
    with pytest.raises(KeyError, match="'Boss'"):
        fuser([message(2)], ["Planner"], "Boss")
    with pytest.raises(ValueError, match="2 messages but 1 source roles"):
        fuser([message(2), message(2)], ["Planner"], "Judger")
    with pytest.raises(ValueError, match="unknown fuser mode 'mean'"):
        CacheFuser(3, ROLES, mode="mean")
    with pytest.raises(ValueError, match="num_layers"):
        CacheFuser(0, ROLES)
    with pytest.raises(ValueError, match="unique"):
        CacheFuser(3, ["A", "A"])


def test_per_row_soft_edge_terms():
    msgs = [message(2, seed=1), message(3, seed=2)]
    fuser = CacheFuser(num_layers=3, role_names=ROLES)
    log_p = [torch.tensor([math.log(0.8), math.log(0.5)]), torch.tensor(math.log(0.3))]  # [b] and a scalar
    _, bias = fuser(msgs, ["Planner", "Critic"], "Judger", edge_log_probs=log_p)
    torch.testing.assert_close(bias[:, 0, :2], torch.full((3, 2), math.log(0.8)))
    torch.testing.assert_close(bias[:, 1, :2], torch.full((3, 2), math.log(0.5)))
    torch.testing.assert_close(bias[:, :, 2:], torch.full((3, 2, 3), math.log(0.3)))


def test_reset_parameters_and_repr():
    fuser = CacheFuser(num_layers=3, role_names=ROLES)
    with torch.no_grad():
        for p in fuser.parameters():
            p.fill_(1.5)
    fuser.reset_parameters()
    assert all(bool((p == 0).all()) for p in fuser.parameters())
    assert fuser.gates.shape == (2, 3) and fuser.edge_logits.shape == (4, 4) and fuser.kind_logits.shape == (2, 3, 3)
    assert "num_layers=3, roles=4, kinds=3, mode='bias', decision_role=None" in repr(fuser)
    assert sum(p.numel() for p in fuser.parameters()) == 2 * 3 + 16 + 2 * 9


def test_decision_node_has_gates_and_kind_weights_of_its_own():
    """The decision node's bias reads receiver kind 1, every agent's kind 0: training the decision node's weights
    leaves agent-to-agent fusions at exact concatenation."""
    msgs = [message(2, seed=1, kinds=[0, 1])]
    fuser = CacheFuser(num_layers=3, role_names=ROLES, decision_role="Judger")
    with torch.no_grad():
        fuser.gates[1].fill_(-2.0)
        fuser.kind_logits[1].fill_(1.0)
    _, to_agent = fuser(msgs, ["Planner"], "Critic")
    _, to_judge = fuser(msgs, ["Planner"], "Judger")
    assert bool((to_agent == 0).all())
    expect = log2sigmoid(torch.tensor(-2.0)) + log2sigmoid(torch.tensor(1.0))
    torch.testing.assert_close(to_judge, torch.full_like(to_judge, float(expect)))
    with pytest.raises(ValueError, match="decision_role"):
        CacheFuser(num_layers=3, role_names=ROLES, decision_role="Nobody")
