"""The names each setting may take, in one torch-free place.

The CLI lists these as choices and :class:`gcache.config.RunConfig` validates against them before anything heavy is
imported; the modules that implement them (``modules.kv_message``, ``modules.cache_fuser``, ``graph``) import them
from here, so a list exists once.
"""

from __future__ import annotations

__all__ = [
    "BASELINES",
    "DECISIONS",
    "DTYPES",
    "ENGINES",
    "FUSER_GRAD",
    "FUSER_MODES",
    "GRAPH_MODES",
    "MESSAGE_MODES",
    "MODES",
    "MODE_ALIASES",
    "PRESETS",
    "TOPOLOGIES",
    "UTILITIES",
    "resolve_dtype_name",
    "resolve_engine",
    "resolve_mode",
]

#: Where agents run: all local (real KV messages), local latents + API answer, or text over the API.
MODES = ("local", "hybrid", "api")
#: The seed's deprecated name for mode 1.
MODE_ALIASES = {"local_cache": "local"}
#: What a latent agent sends on: the whole cache it ended with, its own prompt + latent slots, its latent slots.
MESSAGE_MODES = ("full", "own", "latent")
#: How several incoming messages are merged: plain concatenation, or the learned CacheFuser bias.
FUSER_MODES = ("concat", "bias")
#: Fixed topologies (see :mod:`gcache.graph.presets`).
PRESETS = ("chain", "sequential", "star", "hierarchical", "complete", "layered", "random", "debate", "empty")
#: ``--topology``: the GNN's learned graph or a fixed preset.
TOPOLOGIES = ("learned", *PRESETS)
#: How a graph's final answer is formed: a decision agent reads the sinks (``refer``), the last agent answers
#: (``direct``), or the final round votes (``majority``).
DECISIONS = ("refer", "direct", "majority")
#: REINFORCE baseline: the mean utility of the other graphs drawn for the same question (needs
#: ``--samples-per-question`` >= 2), a moving average, or none (the seed's plain ``-log_prob * utility``).
BASELINES = ("group", "ma", "none")
#: What a drawn graph earned in training: the gold answer's mean token log-likelihood at the decision node
#: (dense: it tells graphs apart even when none answers right), 1 if the answer is right, or their sum.
UTILITIES = ("loglik", "correct", "correct+loglik")
#: Where the fuser's gold-answer loss reaches: the decision node's inputs, or every fused edge (more memory).
FUSER_GRAD = ("decision", "graph")
#: How a learned method turns edge probabilities into its graph: a seeded sample (as G-Designer evaluates), or
#: the most probable DAG.
GRAPH_MODES = ("sample", "map")
#: ``--dtype`` values and the torch dtype names they stand for (``auto``: bf16 on CUDA, fp32 on CPU).
DTYPES = {"auto": "auto", "float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16"}

#: ``--engine``: the latent engine (``auto``: ``fast`` on CUDA, ``eager`` elsewhere; see :func:`resolve_engine`).
ENGINES = ("auto", "eager", "fast")


def resolve_mode(mode: str) -> str:
    """Canonical mode name (``local_cache`` is an alias of ``local``).

    Raises:
        ValueError: an unknown mode (the message lists the valid ones).
    """
    mode = MODE_ALIASES.get(mode, mode)
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES + tuple(MODE_ALIASES))}")
    return mode


def resolve_dtype_name(dtype: str, device: str = "cpu", device_map: str | None = None) -> str:
    """The torch dtype name a ``--dtype`` stands for on ``device``.

    ``auto`` is bfloat16 where the weights go to a GPU (``device`` cuda, a device-map strategy, or a map that
    names a GPU) and float32 on the CPU.

    Raises:
        ValueError: an unknown dtype (the message lists the valid ones).

    >>> resolve_dtype_name("auto", "cuda:1"), resolve_dtype_name("bf16"), resolve_dtype_name("auto")
    ('bfloat16', 'bfloat16', 'float32')
    """
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if DTYPES[dtype] != "auto":
        return DTYPES[dtype]
    from gcache.device_map import uses_gpu  # torch-free

    on_gpu = device.startswith("cuda") or uses_gpu(device_map)
    return "bfloat16" if on_gpu else "float32"


def resolve_engine(engine: str, device) -> str:
    """The engine ``--engine`` stands for where the model lives: ``auto`` is ``fast`` on CUDA, ``eager`` elsewhere.

    Args:
        engine (str): one of :data:`ENGINES`.
        device: where the model lives (``torch.device`` or a string such as ``"cuda:1"``).

    Raises:
        ValueError: an unknown engine (the message lists the valid ones).

    >>> resolve_engine("auto", "cuda:1"), resolve_engine("auto", "cpu"), resolve_engine("fast", "cpu")
    ('fast', 'eager', 'fast')
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine == "auto":
        return "fast" if str(device).startswith("cuda") else "eager"
    return engine
