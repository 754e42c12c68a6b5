"""Attention masks built explicitly, and the fusing SDPA that adds the CacheFuser's per-layer bias.

Every forward pass in G-cache passes a 4-D additive mask that transformers uses as is: causal over the
physical order of the cache, with padded and absent keys masked. Building it ourselves keeps left padding,
concatenated messages (padding in the middle) and continued rotary positions exact.

The fusing attention function is registered once with transformers' ``AttentionInterface``. It receives the
``fuser_bias`` keyword given to the model's forward and the layer's ``layer_idx``, adds
``fuser_bias[layer_idx]`` to the keys it covers (a prefix of the cache), then calls the stock SDPA path.
Without ``fuser_bias`` it *is* the stock SDPA path, so a model can always run with it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["FUSED_ATTENTION", "register_fused_attention", "build_attention_mask", "fused_sdpa_attention"]

FUSED_ATTENTION = "gcache_fused_sdpa"


def build_attention_mask(key_valid: torch.Tensor, q_len: int, dtype: torch.dtype,
                         q_start: int | torch.Tensor | None = None) -> torch.Tensor:
    """Additive causal mask over the physical order of the cache.

    The queries are the ``q_len`` key slots from ``q_start`` on (by default the last ``q_len``). A query may
    attend key ``j`` when ``j`` is not after it and ``key_valid[:, j]``; a padded query also attends itself, so no
    row is fully masked (a fully masked row gives NaN in SDPA, which would then leak through the zero-weighted
    padded values). Slots after the queries (the unused tail of a preallocated cache) are never attended.

    Args:
        key_valid (torch.Tensor): ``[b, kv]`` bool, True where the key is a real position.
        q_len (int): number of query positions.
        dtype (torch.dtype): dtype of the mask (the model's compute dtype).
        q_start (int | torch.Tensor | None): slot of the first query; a 0-d device tensor keeps the mask free of
            host synchronisation (what a captured CUDA graph needs). Default is ``kv - q_len``.

    Returns:
        torch.Tensor: ``[b, 1, q_len, kv]`` with 0 where attention is allowed and the dtype's min elsewhere.
    """
    b, kv = key_valid.shape
    device = key_valid.device
    if q_start is None:
        q_start = kv - q_len
    q_pos = torch.arange(q_len, device=device) + q_start  # [q] physical slot of each query
    k_pos = torch.arange(kv, device=device)  # [kv]
    causal = k_pos[None, :] <= q_pos[:, None]  # [q, kv]
    allowed = causal[None] & key_valid[:, None, :]  # [b, q, kv]
    allowed = allowed | (k_pos[None, :] == q_pos[:, None])[None]  # every query sees at least itself
    mask = torch.zeros(b, 1, q_len, kv, dtype=dtype, device=device)
    return mask.masked_fill(~allowed[:, None], torch.finfo(dtype).min)


def fused_sdpa_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    fuser_bias: torch.Tensor | None = None,
    **kwargs,
):
    """SDPA with the CacheFuser's additive key bias.

    Args:
        module (torch.nn.Module): the attention layer (gives ``layer_idx``).
        query (torch.Tensor): ``[b, n_heads, q, h_d]``.
        key (torch.Tensor): ``[b, n_kv, kv, h_d]``.
        value (torch.Tensor): ``[b, n_kv, kv, h_d]``.
        attention_mask (torch.Tensor | None): ``[b, 1, q, kv]`` additive mask from :func:`build_attention_mask`.
        fuser_bias (torch.Tensor | None): ``[l, b, p]`` additive bias on the first ``p <= kv`` keys of each
            layer (the received messages); 0 means plain concatenation. Default is None.

    Returns:
        tuple: ``(attn_output [b, q, n_heads, h_d], None)`` as transformers expects.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if fuser_bias is not None:
        if attention_mask is None:
            raise ValueError("the fusing attention needs an explicit 4-D mask (see build_attention_mask)")
        if attention_mask.dtype == torch.bool:  # transformers' own masks are boolean (True = attend): make additive
            attention_mask = torch.zeros_like(attention_mask, dtype=query.dtype).masked_fill(
                ~attention_mask, torch.finfo(query.dtype).min)
        bias = fuser_bias[module.layer_idx]  # [b, p]
        bias = F.pad(bias, (0, key.shape[2] - bias.shape[-1]))  # [b, kv]: own and new keys get no bias
        # the fuser may live on another device than the model (its parameters are tiny): move, keeping the graph
        attention_mask = attention_mask + bias[:, None, None, :].to(attention_mask.device, attention_mask.dtype)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def register_fused_attention() -> None:
    """Register :func:`fused_sdpa_attention` with transformers under :data:`FUSED_ATTENTION` (idempotent).

    The SDPA mask builder is registered under the same name: transformers skips building any mask for an
    attention name it has no mask function for, so a 2-D padding mask (``model(ids, attention_mask=...)``,
    ``generate``) would otherwise be dropped silently and padded rows would attend their padding.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(FUSED_ATTENTION, fused_sdpa_attention)
    AttentionMaskInterface.register(FUSED_ATTENTION, sdpa_mask)
