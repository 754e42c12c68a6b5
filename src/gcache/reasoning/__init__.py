"""Local latent reasoning: prefill, latent thoughts and decoding over explicit KV messages."""

from gcache.reasoning._latent import (
    DecodeConfig,
    Decoded,
    LatentEngine,
    realignment_matrix,
    render_chat,
    sample_next_token,
)

__all__ = ["DecodeConfig", "Decoded", "LatentEngine", "realignment_matrix", "render_chat", "sample_next_token"]
