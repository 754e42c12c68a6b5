"""CacheFuser: how much each incoming KV message counts, per layer, per edge and per kind of slot.

A node with several predecessors attends to the concatenation of their messages. The learned fuser adds an
attention bias on every received key: for a slot ``s`` of kind ``k(s)`` (prompt, latent or generated) sent by
source ``u`` to node ``v``, at layer ``l``,

.. math::
    \\mathrm{bias}(l, s) = \\log 2\\sigma(g_{\\rho l}) + \\log 2\\sigma(w_{uv}) + \\log 2\\sigma(c_{\\rho l, k(s)})
    \\; [+ \\log p_{uv}]

with one gate ``g_{ρl}`` per receiver kind ``ρ`` and layer, one weight ``w_uv`` per ordered role pair (so they
carry across questions) and one weight ``c_{ρl,k}`` per receiver kind, layer and slot kind (so a receiver can keep
a peer's question context while muting its latent thoughts). The receiver kinds are the decision node and the
agents: they have weights of their own, so that what the decision node's gradient teaches (the default
``--fuser-grad decision`` trains only its inputs) is not applied, untrained, to every agent-to-agent fusion,
which keep exact concatenation until they get a gradient of their own (``--fuser-grad graph``).

``log 2σ(x)`` is 0 at ``x = 0``, at most ``log 2`` and unbounded below, so every parameter starts at exactly zero
bias, i.e. plain concatenation. Each of the three terms can scale a slot's attention weight by up to 2 (``exp(log
2)``), so together by up to 8; below, a slot can be muted as far as its weights go (``log 2σ(-x) ≈ -x``), but a
finite weight never mutes it exactly: the exact "off" of a message is the topology's discrete choice (an edge not
drawn, an agent the decision node does not read). The optional ``log p_uv`` is the topology model's edge
probability (soft edges), which lets the fuser's gradient reach the GNN. ``mode="concat"`` never adds a bias.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gcache.choices import FUSER_MODES
from gcache.modules.kv_message import KVMessage, SlotKind

__all__ = ["CacheFuser", "FUSER_MODES", "log2sigmoid", "merge_messages"]

_LN2 = math.log(2.0)


def log2sigmoid(x: torch.Tensor) -> torch.Tensor:
    """``log(2 σ(x))``: exactly 0 at ``x = 0``, at most ``log 2``, ``≈ x`` for very negative ``x``."""
    return F.logsigmoid(x) + _LN2


def merge_messages(messages: Sequence[KVMessage]) -> tuple[KVMessage, torch.Tensor]:
    """Concatenate messages and say which source each slot came from.

    Returns:
        tuple: ``(context [P slots], source index [P])``.
    """
    ctx = KVMessage.concat(list(messages))
    source = torch.cat([torch.full((m.length,), i, dtype=torch.long) for i, m in enumerate(messages)])
    return ctx, source.to(ctx.valid.device)


class CacheFuser(nn.Module):
    """Per-layer gates, per-role-pair edge weights and per-layer slot-kind weights, as an additive key bias.

    Args:
        num_layers (int): layers of the LLM.
        role_names (Sequence[str]): the roles whose ordered pairs get a weight.
        mode (str): ``"bias"`` (learned) or ``"concat"`` (no bias: plain concatenation). Default is ``"bias"``.
        decision_role (str | None): the role of the decision node, whose gates and slot-kind weights are its own;
            None gives every receiver the agents' weights. Default is None.

    Shapes:
        - gates: ``[2, l]`` (receiver kind: 0 agents, 1 the decision node; layer)
        - edge_logits: ``[r, r]`` (source role, destination role)
        - kind_logits: ``[2, l, k]`` (receiver kind, layer, :class:`SlotKind`)
        - bias returned by :meth:`forward`: ``[l, b, P]``

    Example:
        >>> kv = tuple(torch.randn(1, 1, 3, 4) for _ in range(2))  # 2 layers of [b, n_kv, s, h_d]
        >>> msg_a = KVMessage(kv, kv, torch.ones(1, 3, dtype=torch.bool), torch.arange(3)[None],
        ...                   torch.zeros(1, 3, dtype=torch.long))
        >>> fuser = CacheFuser(num_layers=2, role_names=["A", "B"])
        >>> ctx, bias = fuser([msg_a], ["A"], "B")
        >>> ctx.length, tuple(bias.shape)  # [l, b, P]
        (3, (2, 1, 3))
        >>> bool((bias == 0).all())  # a new fuser is exactly concatenation
        True
    """

    def __init__(self, num_layers: int, role_names: Sequence[str], mode: str = "bias",
                 decision_role: str | None = None) -> None:
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
        if decision_role is not None and decision_role not in self._role_index:
            raise ValueError(f"decision_role {decision_role!r} is not one of the roles {list(self.role_names)}")
        self.decision_role = decision_role
        self.gates = nn.Parameter(torch.empty(2, num_layers))
        self.edge_logits = nn.Parameter(torch.empty(len(self.role_names), len(self.role_names)))
        self.kind_logits = nn.Parameter(torch.empty(2, num_layers, len(SlotKind)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Zero every parameter: zero bias everywhere, i.e. exactly plain concatenation."""
        for p in (self.gates, self.edge_logits, self.kind_logits):
            nn.init.zeros_(p)

    def role_index(self, name: str) -> int:
        if name not in self._role_index:
            raise KeyError(f"role {name!r} has no fuser weight; fuser roles are {', '.join(self.role_names)}")
        return self._role_index[name]

    def receiver(self, dst_role: str) -> int:
        """Receiver kind of ``dst_role``: 1 for the decision node, 0 for an agent."""
        return int(self.decision_role is not None and dst_role == self.decision_role)

    def edge_bias(self, src_roles: Sequence[str], dst_role: str) -> torch.Tensor:
        """``[l, k]`` gate + edge part of the bias of each of ``k`` sources at every layer."""
        dst = self.role_index(dst_role)
        src = torch.tensor([self.role_index(r) for r in src_roles], device=self.gates.device)
        gates = self.gates[self.receiver(dst_role)]  # [l]
        return log2sigmoid(gates)[:, None] + log2sigmoid(self.edge_logits[src, dst])[None, :]

    def forward(self, messages: Sequence[KVMessage], src_roles: Sequence[str], dst_role: str,
                edge_log_probs: Sequence[torch.Tensor] | None = None) -> tuple[KVMessage, torch.Tensor | None]:
        """Fuse incoming messages into one context for the node of role ``dst_role``.

        Args:
            messages (Sequence[KVMessage]): one message per incoming edge, each ``[b, ...]``.
            src_roles (Sequence[str]): role of each message's sender.
            dst_role (str): role of the receiving node.
            edge_log_probs (Sequence[torch.Tensor] | None): per edge ``log p_uv``, a scalar or ``[b]`` (one per
                row), added to the bias of that source's slots so gradients reach the topology model. Default is
                None.

        Returns:
            tuple: ``(context, bias [l, b, P] or None for concatenation)``.
        """
        if len(messages) != len(src_roles):
            raise ValueError(f"{len(messages)} messages but {len(src_roles)} source roles")
        ctx, source = merge_messages(messages)
        if self.mode == "concat" and edge_log_probs is None:
            return ctx, None
        device = self.gates.device
        source = source.to(device)
        b = ctx.batch_size
        bias = torch.zeros(self.num_layers, 1, ctx.length, device=device)  # [l, 1, P]
        if self.mode == "bias":
            per_source = self.edge_bias(src_roles, dst_role)  # [l, k]
            per_kind = log2sigmoid(self.kind_logits[self.receiver(dst_role)])  # [l, K]
            bias = bias + per_source[:, source][:, None, :] + per_kind[:, ctx.kinds.to(device)]  # [l, b, P]
        if edge_log_probs is not None:
            soft = torch.stack([lp.to(device).reshape(-1).expand(b) for lp in edge_log_probs])  # [k, b]
            bias = bias + soft[source].T[None]  # [l, b, P]
        return ctx, bias.expand(-1, b, -1)  # [l, b, P]

    def extra_repr(self) -> str:
        return (f"num_layers={self.num_layers}, roles={len(self.role_names)}, kinds={len(SlotKind)}, "
                f"mode={self.mode!r}, decision_role={self.decision_role!r}")
