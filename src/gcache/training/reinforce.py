"""REINFORCE for graph policies: the loss and its baselines.

The policy's action is a graph drawn for one question; its utility ``U`` is what the run earned (1 if correct,
or a dense score such as the gold answer's log-likelihood). The loss ``-(U - b) · log π`` has the policy
gradient as its gradient, with ``b`` a baseline that lowers the variance without biasing it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["MovingAverageBaseline", "group_mean_baseline", "reinforce_loss"]


def reinforce_loss(
    log_probs: Tensor | Sequence[Tensor],
    utilities: Tensor | Sequence[float],
    baseline: float | Tensor | None = None,
) -> Tensor:
    """REINFORCE loss ``-mean((U - b) * log pi(G))``.

    Args:
        log_probs (Tensor | Sequence[Tensor]): ``[k]`` log-probabilities of the sampled graphs (or ``k`` scalars).
        utilities (Tensor | Sequence[float]): ``[k]`` utilities (e.g. 1 if correct).
        baseline (float | Tensor | None): Scalar or ``[k]`` baseline ``b``; it is detached. ``None`` gives the
            seed's plain ``-mean(log pi * U)``. Default is None.

    Returns:
        Tensor: Scalar loss.

    Raises:
        ValueError: If the shapes of ``log_probs``, ``utilities`` and ``baseline`` disagree.

    Example:
        >>> lp = torch.tensor([-1.0, -2.0], requires_grad=True)
        >>> reinforce_loss(lp, [1.0, 0.0], baseline=0.5)
        tensor(-0.2500, grad_fn=<NegBackward0>)
    """
    lp = torch.stack(list(log_probs)) if not isinstance(log_probs, Tensor) else log_probs
    lp = lp.reshape(-1)
    u = torch.as_tensor(utilities, dtype=lp.dtype, device=lp.device).reshape(-1)
    if u.shape != lp.shape:
        raise ValueError(f"{lp.numel()} log-probs but {u.numel()} utilities")
    if baseline is None:
        advantage = u
    else:
        b = torch.as_tensor(baseline, dtype=lp.dtype, device=lp.device)
        if b.dim() > 0 and b.shape != u.shape:
            raise ValueError(f"baseline must be a scalar or [{u.numel()}], got {list(b.shape)}")
        advantage = u - b
    return -(advantage.detach() * lp).mean()


def group_mean_baseline(utilities: Tensor | Sequence[float], leave_one_out: bool = False) -> Tensor:
    """Baseline from ``k`` graphs sampled for the same question.

    Args:
        utilities (Tensor | Sequence[float]): ``[k]`` utilities of the samples.
        leave_one_out (bool): Use the mean of the *other* ``k - 1`` samples for each (unbiased); needs ``k >= 2``.
            Default is False (the plain group mean).

    Returns:
        Tensor: ``[k]`` baseline per sample.

    Raises:
        ValueError: If ``k`` is 0, or 1 with ``leave_one_out``.
    """
    u = torch.as_tensor(utilities, dtype=torch.float32).reshape(-1)
    k = u.numel()
    if k == 0 or (leave_one_out and k < 2):
        raise ValueError(f"need {'>= 2' if leave_one_out else '>= 1'} utilities, got {k}")
    if leave_one_out:
        return (u.sum() - u) / (k - 1)
    return u.mean().expand(k).clone()


class MovingAverageBaseline:
    """Exponential moving average of utilities: ``b <- m * b + (1 - m) * mean(U)``.

    Args:
        momentum (float): Weight of the old value, in [0, 1). Default is 0.9.
        initial (float): Starting value. Default is 0.0 (so the first advantages are the utilities themselves and
            the first step already has a gradient).

    Raises:
        ValueError: If ``momentum`` is outside [0, 1).

    Example:
        >>> b = MovingAverageBaseline(0.5)
        >>> b.update([1.0, 1.0]), b.value
        (0.0, 0.5)
    """

    def __init__(self, momentum: float = 0.9, initial: float = 0.0) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        self.value = float(initial)
        self.num_updates = 0

    def update(self, utilities: Tensor | Sequence[float] | float) -> float:
        """Fold in a batch of utilities.

        Returns:
            float: The baseline *before* this update (use it for this batch's advantages, so a sample never
            appears in its own baseline).
        """
        u = torch.as_tensor(utilities, dtype=torch.float64).reshape(-1)
        if u.numel() == 0:
            raise ValueError("update needs at least one utility")
        before = self.value
        self.value = self.momentum * self.value + (1.0 - self.momentum) * float(u.mean())
        self.num_updates += 1
        return before

    def state_dict(self) -> dict[str, Any]:
        """Checkpointable state."""
        return {"momentum": self.momentum, "value": self.value, "num_updates": self.num_updates}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.momentum = float(state["momentum"])
        self.value = float(state["value"])
        self.num_updates = int(state["num_updates"])

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(momentum={self.momentum}, value={self.value:.4f}, "
                f"num_updates={self.num_updates})")
