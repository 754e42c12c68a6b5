"""Local latent reasoning: prefill, latent thoughts and decoding over explicit KV messages."""

from gcache.reasoning._latent import (
    ContextOverflowError,
    DecodeConfig,
    Decoded,
    LatentEngine,
    realignment_matrix,
    render_chat,
    sample_next_token,
)
from gcache.reasoning._fast import FastLatentEngine, StaticContext, make_engine
from gcache.choices import ENGINES, resolve_engine

__all__ = ["ContextOverflowError", "DecodeConfig", "Decoded", "LatentEngine", "realignment_matrix", "render_chat",
           "sample_next_token", "ENGINES", "FastLatentEngine", "StaticContext", "make_engine", "resolve_engine"]
