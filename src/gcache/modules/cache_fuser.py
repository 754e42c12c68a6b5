"""CacheFuser: how much each incoming KV message counts, per layer and per edge.

A node with several predecessors attends to the concatenation of their messages. The learned fuser adds an
attention bias on the keys of each source ``u`` at every layer ``l`` of the receiving node ``v``:

.. math::
    \\mathrm{bias}(l, u \\to v) = \\log\\sigma(g_l) + \\log\\sigma(w_{uv}) \\; [+ \\log p_{uv}]

with one gate ``g_l`` per layer and one weight ``w_uv`` per ordered role pair (so they carry across questions);
the optional ``log p_uv`` term is the topology model's edge probability (soft edges), which lets the fuser's
gradient reach the GNN. A bias of 0 everywhere is plain concatenation; ``mode="concat"`` is exactly that.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gcache.choices import FUSER_MODES
from gcache.modules.kv_message import KVMessage

__all__ = ["CacheFuser", "FUSER_MODES", "merge_messages"]


def merge_messages(messages: Sequence[KVMessage]) -> tuple[KVMessage, torch.Tensor]:
    """Concatenate messages and say which source each slot came from.

    Returns:
        tuple: ``(context [P slots], source index [P])``.
    """
    ctx = KVMessage.concat(list(messages))
    source = torch.cat([torch.full((m.length,), i, dtype=torch.long) for i, m in enumerate(messages)])
    return ctx, source.to(ctx.valid.device)


class CacheFuser(nn.Module):
    """Per-layer gates and per-role-pair edge weights acting as an additive key bias.

    Args:
        num_layers (int): layers of the LLM.
        role_names (Sequence[str]): the roles whose ordered pairs get a weight.
        mode (str): ``"bias"`` (learned) or ``"concat"`` (no bias: plain concatenation). Default is ``"bias"``.
        init (float): initial value of gates and weights; ``log σ(3) ≈ -0.049``, close to neutral while keeping
            a useful gradient. Default is 3.0.

    Shapes:
        - gates: ``[l]``
        - edge_logits: ``[r, r]`` (source role, destination role)
        - bias returned by :meth:`forward`: ``[l, b, P]``

    Example:
        >>> fuser = CacheFuser(num_layers=2, role_names=["A", "B"])
        >>> ctx, bias = fuser([msg_a], ["A"], "B")
    """

    def __init__(self, num_layers: int, role_names: Sequence[str], mode: str = "bias", init: float = 3.0) -> None:
        super().__init__()
        if mode not in FUSER_MODES:
            raise ValueError(f"unknown fuser mode {mode!r}; choose one of {', '.join(FUSER_MODES)}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if len(set(role_names)) != len(role_names) or not role_names:
            raise ValueError(f"role_names must be non-empty and unique, got {list(role_names)}")
        self.num_layers = num_layers
        self.role_names = tuple(role_names)
        self._role_index = {name: i for i, name in enumerate(self.role_names)}
        self.mode = mode
        self.init = init
        self.gates = nn.Parameter(torch.empty(num_layers))
        self.edge_logits = nn.Parameter(torch.empty(len(self.role_names), len(self.role_names)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.constant_(self.gates, self.init)
        nn.init.constant_(self.edge_logits, self.init)

    def role_index(self, name: str) -> int:
        if name not in self._role_index:
            raise KeyError(f"role {name!r} has no fuser weight; fuser roles are {', '.join(self.role_names)}")
        return self._role_index[name]

    def edge_bias(self, src_roles: Sequence[str], dst_role: str) -> torch.Tensor:
        """``[l, k]`` bias of each of ``k`` sources at every layer (before soft-edge terms)."""
        dst = self.role_index(dst_role)
        src = torch.tensor([self.role_index(r) for r in src_roles], device=self.gates.device)
        return F.logsigmoid(self.gates)[:, None] + F.logsigmoid(self.edge_logits[src, dst])[None, :]

    def forward(self, messages: Sequence[KVMessage], src_roles: Sequence[str], dst_role: str,
                edge_log_probs: Sequence[torch.Tensor] | None = None) -> tuple[KVMessage, torch.Tensor | None]:
        """Fuse incoming messages into one context for the node of role ``dst_role``.

        Args:
            messages (Sequence[KVMessage]): one message per incoming edge, each ``[b, ...]``.
            src_roles (Sequence[str]): role of each message's sender.
            dst_role (str): role of the receiving node.
            edge_log_probs (Sequence[torch.Tensor] | None): per edge ``log p_uv`` (scalar), added to the bias of
                that source's slots so gradients reach the topology model. Default is None.

        Returns:
            tuple: ``(context, bias [l, b, P] or None for concatenation)``.
        """
        if len(messages) != len(src_roles):
            raise ValueError(f"{len(messages)} messages but {len(src_roles)} source roles")
        ctx, source = merge_messages(messages)
        if self.mode == "concat" and edge_log_probs is None:
            return ctx, None
        per_source = torch.zeros(self.num_layers, len(messages), device=self.gates.device)  # [l, k]
        if self.mode == "bias":
            per_source = per_source + self.edge_bias(src_roles, dst_role)
        if edge_log_probs is not None:
            per_source = per_source + torch.stack([lp.reshape(()) for lp in edge_log_probs])[None, :].to(per_source.device)
        bias = per_source[:, source.to(per_source.device)]  # [l, P]
        return ctx, bias[:, None, :].expand(-1, ctx.batch_size, -1)  # [l, b, P]

    def extra_repr(self) -> str:
        return f"num_layers={self.num_layers}, roles={len(self.role_names)}, mode={self.mode!r}"
