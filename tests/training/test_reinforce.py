"""REINFORCE: the loss and its baselines, against hand-computed numbers."""

from __future__ import annotations

import pytest
import torch

from gcache.training.reinforce import MovingAverageBaseline, group_mean_baseline, reinforce_loss


def test_reinforce_loss_numbers_and_gradient():
    lp = torch.tensor([-1.0, -2.0, -0.5], requires_grad=True)
    u = [1.0, 0.0, 1.0]
    loss = reinforce_loss(lp, u, baseline=0.5)
    assert loss.item() == pytest.approx(-((0.5 * -1.0) + (-0.5 * -2.0) + (0.5 * -0.5)) / 3)
    loss.backward()
    torch.testing.assert_close(lp.grad, torch.tensor([-0.5, 0.5, -0.5]) / 3)

    plain = reinforce_loss(lp, u, baseline=None)  # the seed's -log_prob * utility
    assert plain.item() == pytest.approx(-(-1.0 - 0.5) / 3)
    per_sample = reinforce_loss([lp[0], lp[1]], [1.0, 0.0], torch.tensor([0.25, 0.75]))
    assert per_sample.item() == pytest.approx(-(0.75 * -1.0 + -0.75 * -2.0) / 2)
    with pytest.raises(ValueError, match="3 log-probs but 2 utilities"):
        reinforce_loss(lp, [1.0, 0.0])
    with pytest.raises(ValueError, match="baseline must be a scalar or"):
        reinforce_loss(lp, u, torch.zeros(2))


def test_baseline_is_detached():
    lp = torch.tensor([-1.0, -2.0], requires_grad=True)
    b = torch.tensor(0.3, requires_grad=True)
    reinforce_loss(lp, [1.0, 0.0], b).backward()
    assert b.grad is None


def test_group_mean_baseline():
    u = [1.0, 0.0, 0.0, 1.0]
    torch.testing.assert_close(group_mean_baseline(u), torch.full((4,), 0.5))
    torch.testing.assert_close(
        group_mean_baseline(u, leave_one_out=True), torch.tensor([1 / 3, 2 / 3, 2 / 3, 1 / 3])
    )
    with pytest.raises(ValueError, match="need >= 2 utilities"):
        group_mean_baseline([1.0], leave_one_out=True)


def test_moving_average_baseline():
    b = MovingAverageBaseline(momentum=0.75)
    assert b.update([1.0, 0.0]) == 0.0  # returns the value before the update
    assert b.value == pytest.approx(0.125)
    assert b.update(1.0) == pytest.approx(0.125)
    assert b.value == pytest.approx(0.75 * 0.125 + 0.25)
    state = b.state_dict()
    c = MovingAverageBaseline()
    c.load_state_dict(state)
    assert (c.momentum, c.value, c.num_updates) == (0.75, b.value, 2)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\)"):
        MovingAverageBaseline(1.0)


