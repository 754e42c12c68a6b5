"""Batching by depth: the local agents of one depth of a plan run as one batch, their rows stacked.

Agents at the same depth of the plan's DAG do not read each other, so their prefills, latent steps and decoding can
share forwards: node ``k`` of a group owns rows ``k*b .. (k+1)*b`` of the stacked batch (``b`` questions). Nodes of
several plans batch the same way (:meth:`GraphExecutor.run_many`), each owning its plan's rows in turn. Each
node's received context is left-padded to the longest one with masked slots (:meth:`KVMessage.stack`) and its fuser
bias shifted with it. Afterwards exactly the slots the stacking added are dropped again, so every node ends with
the message it would have had on its own: same slots, same positions, and values equal up to the order of float
sums.

Notation: l = layers, b = questions, k = nodes in the group, s = slots.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gcache.modules.kv_message import KVMessage

__all__ = ["depth_groups", "stack_contexts", "unstack_context"]


def depth_groups(plan, count: int | None = None, batch: bool = True) -> list[list[int]]:
    """The first ``count`` nodes of ``plan`` in an order they can run, grouped by what can share a forward.

    A node's depth is 0 without inputs, else one more than its deepest input. Local nodes of the same depth and
    kind form one group; an API node is a group of its own. Groups run by depth, then by their first node.

    Args:
        plan (Plan): the plan (its nodes' ``inputs``, ``backend`` and ``kind`` are read).
        count (int | None): only the first ``count`` nodes (they must not read later ones). Default is all.
        batch (bool): False gives one group per node, in plan order (node by node). Default is True.

    Returns:
        list[list[int]]: node indices, each inner list in increasing order.

    Example:
        Three local latent nodes where nodes 0 and 1 read nothing and node 2 reads both, then a local text node
        reading node 2, give ``[[0, 1], [2], [3]]``; node by node (``batch=False``) gives ``[[0], [1], [2], [3]]``.
    """
    nodes = plan.nodes[: len(plan.nodes) if count is None else count]
    if not batch:
        return [[i] for i in range(len(nodes))]
    depth: list[int] = []
    for node in nodes:
        depth.append(1 + max((depth[j] for j in node.inputs), default=-1))
    groups: dict[tuple, list[int]] = {}
    for i, node in enumerate(nodes):
        key = (depth[i], "api", i) if node.backend == "api" else (depth[i], node.kind, -1)
        groups.setdefault(key, []).append(i)
    return sorted(groups.values(), key=lambda g: (depth[g[0]], g[0]))


def stack_contexts(contexts: list[KVMessage], biases: list[torch.Tensor | None],
                   num_layers: int) -> tuple[KVMessage, torch.Tensor | None]:
    """Stack the received contexts of a group's nodes along the batch, and their fuser biases with them.

    Args:
        contexts (list[KVMessage]): one per node, each ``[b, s_k]`` slots.
        biases (list[torch.Tensor | None]): one per node, ``[l, b, p_k]`` over the first ``p_k <= s_k`` slots of
            its context, or None (no bias: plain concatenation).
        num_layers (int): ``l``, for nodes without a bias when another has one.

    Returns:
        tuple: ``(context [k*b, max s_k], bias [l, k*b, max s_k] or None when no node has one)``. A node's bias
        moves right with the padding in front of its context; padding slots get 0 (they are masked anyway).
    """
    if len(contexts) == 1:  # one node: nothing to stack (and the same objects, which a static cache recognises)
        return contexts[0], biases[0]
    ctx = KVMessage.stack(contexts)
    if all(bias is None for bias in biases):
        return ctx, None
    s = ctx.length
    device = next(bias for bias in biases if bias is not None).device
    rows = []
    for c, bias in zip(contexts, biases):
        if bias is None:
            bias = torch.zeros(num_layers, c.batch_size, 0, device=device)
        pad = s - c.length  # slots in front of this node's context
        rows.append(F.pad(bias.to(device), (pad, s - pad - bias.shape[-1])))  # [l, b, s], differentiable
    return ctx, torch.cat(rows, dim=1)  # [l, k*b, s]


def unstack_context(ctx: KVMessage, k: int, rows: slice, received: list[int], prompt: list[int]) -> KVMessage:
    """Node ``k``'s rows of a stacked context, without the slots the stacking added.

    The stacked context is ``[received (max_j received_j) | prompt (max_j prompt_j) | what followed]``; node ``k``
    had ``received[k]`` received slots and its rows' prompts were at most ``prompt[k]`` tokens. On its own, its
    context would have had those many of each, right-aligned within each segment (left padding); the rest is
    dropped.

    Args:
        ctx (KVMessage): the stacked context.
        k (int): which node.
        rows (slice): node ``k``'s rows of ``ctx``.
        received (list[int]): received slots of each node.
        prompt (list[int]): longest prompt (tokens) among each node's rows.
    """
    n_recv, n_prompt = max(received), max(prompt)
    slot = torch.arange(ctx.length, device=ctx.valid.device)
    added = (slot < n_recv - received[k]) | ((slot >= n_recv) & (slot < n_recv + n_prompt - prompt[k]))
    return ctx.rows(rows).select(~added)
