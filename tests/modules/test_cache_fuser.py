"""CacheFuser: concatenation, the per-layer / per-edge bias recomputed by hand, soft edges, errors, repr."""

from __future__ import annotations

import math

import pytest
import torch

from gcache.modules.cache_fuser import CacheFuser, merge_messages
from gcache.modules.kv_message import KVMessage, SlotKind

ROLES = ["Planner", "Critic", "Refiner", "Judger"]


def message(length: int, *, batch: int = 2, layers: int = 3, seed: int = 0) -> KVMessage:
    gen = torch.Generator().manual_seed(seed)
    valid = torch.ones(batch, length, dtype=torch.bool)
    valid[0, 0] = False  # some left padding in row 0
    return KVMessage(
        keys=tuple(torch.randn(batch, 2, length, 4, generator=gen) for _ in range(layers)),
        values=tuple(torch.randn(batch, 2, length, 4, generator=gen) for _ in range(layers)),
        valid=valid,
        positions=torch.arange(length).expand(batch, -1).masked_fill(~valid, -1),
        kinds=torch.full((length,), int(SlotKind.RECEIVED)),
    )


def logsigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


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


def test_bias_mode_values_recomputed_by_hand():
    msgs = [message(3, seed=1), message(2, seed=2)]
    fuser = CacheFuser(num_layers=3, role_names=ROLES, mode="bias")
    with torch.no_grad():
        fuser.gates.copy_(torch.tensor([0.5, -1.0, 2.0]))
        fuser.edge_logits.copy_(torch.arange(16, dtype=torch.float32).reshape(4, 4) / 4 - 2)
    ctx, bias = fuser(msgs, ["Critic", "Planner"], "Refiner")
    assert_same_message(ctx, KVMessage.concat(msgs))
    assert bias.shape == (3, 2, 5)
    gates = [0.5, -1.0, 2.0]
    w = lambda u, v: ROLES.index(u) + ROLES.index(v) / 4 - 2  # noqa: E731  = edge_logits[u, v] set above
    for layer in range(3):
        for row in range(2):
            expect = [logsigmoid(gates[layer]) + logsigmoid(w("Critic", "Refiner"))] * 3
            expect += [logsigmoid(gates[layer]) + logsigmoid(w("Planner", "Refiner"))] * 2
            assert bias[layer, row].tolist() == pytest.approx(expect, rel=1e-6)


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


def test_bias_gradients_reach_gates_and_used_edges_only():
    fuser = CacheFuser(num_layers=3, role_names=ROLES)
    log_p = torch.tensor(-0.5, requires_grad=True)
    _, bias = fuser([message(2), message(1)], ["Planner", "Critic"], "Judger", edge_log_probs=[log_p, torch.zeros(())])
    (bias * torch.arange(1.0, 4.0)[:, None, None]).sum().backward()
    assert bool((fuser.gates.grad != 0).all())
    used = torch.zeros(4, 4, dtype=torch.bool)
    used[0, 3] = used[1, 3] = True
    assert bool((fuser.edge_logits.grad[used] != 0).all())
    assert bool((fuser.edge_logits.grad[~used] == 0).all())
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


def test_reset_parameters_and_repr():
    fuser = CacheFuser(num_layers=3, role_names=ROLES, init=1.5)
    with torch.no_grad():
        fuser.gates.zero_()
    fuser.reset_parameters()
    assert bool((fuser.gates == 1.5).all()) and bool((fuser.edge_logits == 1.5).all())
    assert fuser.gates.shape == (3,) and fuser.edge_logits.shape == (4, 4)
    assert "num_layers=3, roles=4, mode='bias'" in repr(fuser)
    assert sum(p.numel() for p in fuser.parameters()) == 3 + 16
