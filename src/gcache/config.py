"""Run configuration: one validated dataclass shared by ``gcache eval`` and ``gcache train``.

Values come from (lowest to highest) the dataclass defaults, a YAML file given with ``--config``, and command-line
flags. Validation happens once, here at the edge, with messages that list the valid choices.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gcache.modules.cache_fuser import FUSER_MODES
from gcache.modules.kv_message import MESSAGE_MODES
from gcache.reasoning.plans import METHODS, MODE_ALIASES, MODES, resolve_mode

__all__ = ["RunConfig", "add_run_arguments", "config_from_args", "ConfigError", "LEARNED_METHODS",
           "TOPOLOGIES", "BASELINE_OPTIONS"]

LEARNED_METHODS = ("gdesigner", "gcache")
TOPOLOGIES = ("learned", "chain", "star", "complete", "layered", "random", "debate")
BASELINE_OPTIONS = ("ma", "none")  # REINFORCE baseline: moving average, or the seed's plain -log_prob * utility


class ConfigError(ValueError):
    """A configuration value is invalid; the message says which and what is allowed."""


@dataclass
class RunConfig:
    """Everything a run needs. See ``gcache eval --help`` for each field."""

    method: str = "latentmas_seq"
    dataset: str = "gsm8k"
    data: str | None = None
    split: str = "test"
    limit: int | None = None
    out: str | None = None
    model: str = "smollm2"
    dtype: str = "auto"
    device: str = "cpu"
    device_map: str | None = None
    mode: str = "local"
    latent_steps: int = 4
    realign: bool = True
    batch_size: int = 4
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    message: str = "full"
    fuser: str = "bias"
    # graphs (gdesigner / gcache)
    prompt_set: str | None = None
    agents: int | None = None
    rounds: int = 1
    topology: str = "learned"
    decision: str = "refer"
    checkpoint: str | None = None
    embedder: str | None = None
    gnn_temperature: float = 0.25
    # training
    steps: int = 10
    lr: float = 0.1
    baseline: str = "ma"
    samples_per_question: int = 1
    fuser_loss_weight: float = 1.0
    soft_edges: bool = False
    optimize_spatial: bool = True
    optimize_temporal: bool = True
    # API
    api_key: str | None = field(default=None, repr=False)
    base_url: str | None = None
    api_model: str | None = None
    api_concurrency: int = 8
    api_timeout: float = 60.0
    api_retries: int = 4
    retry_errors: bool = False
    prices: str | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def choice(name: str, value: Any, options) -> None:
            if value not in options:
                raise ConfigError(f"unknown {name} {value!r}; choose one of {', '.join(map(str, options))}")

        from gcache.tasks import list_tasks

        choice("method", self.method, METHODS)
        choice("dataset", self.dataset, list_tasks())
        choice("mode", self.mode, MODES + tuple(MODE_ALIASES))
        self.mode = resolve_mode(self.mode)
        choice("message mode", self.message, MESSAGE_MODES)
        choice("fuser", self.fuser, FUSER_MODES)
        choice("topology", self.topology, TOPOLOGIES)
        choice("decision", self.decision, ("refer", "direct", "majority"))
        choice("baseline", self.baseline, BASELINE_OPTIONS)
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit must be at least 1 (got {self.limit}); leave it out to run every question")
        positive = {"batch_size": self.batch_size, "max_new_tokens": self.max_new_tokens, "rounds": self.rounds,
                    "steps": self.steps, "samples_per_question": self.samples_per_question,
                    "api_concurrency": self.api_concurrency}
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if self.agents is not None and self.agents < 1:
            raise ConfigError(f"--agents must be at least 1, got {self.agents}")
        if self.latent_steps < 0:
            raise ConfigError(f"--latent-steps must be >= 0, got {self.latent_steps}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ConfigError("--temperature must be >= 0 and --top-p in (0, 1]")
        if self.gnn_temperature <= 0:
            raise ConfigError(f"--gnn-temperature must be positive, got {self.gnn_temperature}")
        if self.lr <= 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}")
        if self.device.startswith("cuda") and self.mode != "api":
            import torch

            if not torch.cuda.is_available():
                raise ConfigError(f"--device {self.device}: no CUDA device is visible to torch here; use --device cpu")
        if self.mode == "api" and self.method in ("latentmas_seq", "latentmas_hier"):
            raise ConfigError(f"{self.method} passes KV-caches and needs a local model: use --mode local or hybrid")

    @property
    def learned(self) -> bool:
        return self.method in LEARNED_METHODS

    def to_dict(self) -> dict[str, Any]:
        """JSON-able config without secrets (the API key is never written anywhere)."""
        d = dataclasses.asdict(self)
        d["api_key"] = "***" if self.api_key else None
        return d

    def identity(self) -> dict[str, Any]:
        """Fields that must match for a resumed run to continue the same experiment."""
        keys = ("method", "dataset", "data", "split", "model", "mode", "latent_steps", "realign", "message", "fuser",
                "prompt_set", "agents", "rounds", "topology", "decision", "checkpoint", "temperature", "top_p",
                "max_new_tokens", "seed", "api_model", "base_url", "gnn_temperature")
        return {k: getattr(self, k) for k in keys}


def add_run_arguments(parser: argparse.ArgumentParser, *, training: bool = False) -> None:
    """Flags of ``gcache eval`` / ``gcache train``. Defaults are None so that a YAML config can fill them."""
    a = parser.add_argument
    a("--config", help="YAML file of run settings (flags override it)")
    a("--method", choices=METHODS, help="what to run (default latentmas_seq)")
    a("--dataset", help="benchmark: gsm8k, svamp, humaneval (default gsm8k)")
    a("--data", help="local dataset file; without it the dataset is loaded from the Hugging Face hub")
    a("--split", help="dataset split (default test; train for gcache train)")
    a("--limit", type=int, help="only the first N questions")
    a("--out", help="output folder (results.jsonl, summary.json; rerun the same command to resume)")
    a("--model", help="smollm2 (embedded default), a hub id such as Qwen/Qwen3-4B, a local folder or a .gguf file")
    a("--dtype", help="auto, float32, bfloat16 or float16 (default auto: bf16 on CUDA, fp32 on CPU)")
    a("--device", help="cpu, cuda, cuda:1 ... (default cpu)")
    a("--device-map", dest="device_map", help="transformers device_map, e.g. auto (needs accelerate)")
    a("--mode", help="local (KV messages), hybrid (local latents, API answers; alias local_cache = local), api")
    a("--latent-steps", dest="latent_steps", type=int, help="latent thoughts per latent agent (default 4)")
    a("--no-realign", dest="realign", action="store_const", const=False, help="feed hidden states back unaligned")
    a("--batch-size", dest="batch_size", type=int, help="questions per batch (default 4)")
    a("--max-new-tokens", dest="max_new_tokens", type=int, help="decoding cap per text agent (default 256)")
    a("--temperature", type=float, help="0 for greedy (default 0)")
    a("--top-p", dest="top_p", type=float, help="nucleus mass when sampling (default 1)")
    a("--seed", type=int)
    a("--message", choices=MESSAGE_MODES, help="what a latent agent sends on: full cache, own slots, latent only")
    a("--fuser", choices=FUSER_MODES, help="concat (plain concatenation) or bias (learned CacheFuser)")
    a("--prompt-set", dest="prompt_set", help="built-in prompt set name or a YAML/JSON file of roles")
    a("--agents", type=int, help="number of agents of a graph method (default: the prompt set's team)")
    a("--rounds", type=int, help="rounds of a graph method (default 1)")
    a("--topology", choices=TOPOLOGIES, help="learned (the GNN) or a fixed preset")
    a("--decision", choices=("refer", "direct", "majority"), help="how a graph's final answer is formed")
    a("--checkpoint", help="a gcache train checkpoint (topology model and fuser)")
    a("--gnn-temperature", dest="gnn_temperature", type=float,
      help="temperature of the edge logits (codes are unit vectors: 0.25 lets p reach 0.02..0.98)")
    a("--embedder", help="sentence-transformers model for role/query embeddings (default all-MiniLM-L6-v2)")
    a("--api-key", dest="api_key", help="API key (better: API_KEY in the environment or .env)")
    a("--base-url", dest="base_url", help="OpenAI-compatible base URL (env BASE_URL)")
    a("--api-model", dest="api_model", help="API model (env API_MODEL; default qwen-flash)")
    a("--api-concurrency", dest="api_concurrency", type=int, help="concurrent API requests (default 8)")
    a("--api-timeout", dest="api_timeout", type=float, help="seconds per API request (default 60)")
    a("--api-retries", dest="api_retries", type=int, help="retries after a failed API request (default 4)")
    a("--retry-errors", dest="retry_errors", action="store_const", const=True,
      help="on resume, run again the questions that ended in an error")
    a("--prices", help="JSON/YAML file of API prices (USD per 1M tokens) added to the built-in table")
    if training:
        a("--steps", type=int, help="optimisation steps (batches) (default 10)")
        a("--lr", type=float, help="Adam learning rate (default 0.1, the seed's)")
        a("--baseline", choices=BASELINE_OPTIONS, help="REINFORCE baseline: ma (moving average) or none (seed)")
        a("--samples-per-question", dest="samples_per_question", type=int,
          help="graphs sampled per question; K > 1 uses their mean utility as the baseline")
        a("--fuser-loss-weight", dest="fuser_loss_weight", type=float, help="weight of the gold-answer NLL")
        a("--soft-edges", dest="soft_edges", action="store_const", const=True,
          help="add log p(edge) to the fuser bias so the gold-answer loss also trains the GNN")
        a("--no-optimize-spatial", dest="optimize_spatial", action="store_const", const=False)
        a("--no-optimize-temporal", dest="optimize_temporal", action="store_const", const=False)


def config_from_args(args: argparse.Namespace, **defaults: Any) -> RunConfig:
    """Merge dataclass defaults, ``defaults``, the ``--config`` YAML and the flags into a :class:`RunConfig`."""
    values: dict[str, Any] = dict(defaults)
    if getattr(args, "config", None):
        path = Path(args.config)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of settings")
        values.update(loaded)
    names = {f.name for f in dataclasses.fields(RunConfig)}
    for key, value in vars(args).items():
        if key in names and value is not None:
            values[key] = value
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown settings {unknown}; valid ones are {sorted(names)}")
    return RunConfig(**values)
