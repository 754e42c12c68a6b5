"""Putting a loaded model in the state G-cache uses every model in: eval mode, frozen, left-padding tokenizer."""

from __future__ import annotations

__all__ = ["prepare_frozen"]


def prepare_frozen(model, tokenizer):
    """Put a model in eval mode with every parameter frozen, and give the tokenizer a pad token.

    Returns:
        tuple: ``(model, tokenizer)``, the same objects.
    """
    model.eval()
    model.requires_grad_(False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model, tokenizer
