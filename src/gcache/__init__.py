"""G-cache: multi-agent LLM reasoning over learned graphs that pass KV-caches of latent thoughts."""

__version__ = "0.1.0"
