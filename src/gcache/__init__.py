"""G-cache: multi-agent LLM reasoning over learned graphs that pass KV-caches of latent thoughts."""

# Bumped with each release; a run's identity adds a hash of the package's source (gcache.provenance.code_version),
# so a resume after any code change between releases is noticed too.
__version__ = "0.2.0"
