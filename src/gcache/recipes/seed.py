"""The original G-cache entry points (``experiments/run_gsm8k_cache.py`` and ``run_gsm8k_cache_API.py``), kept
working as thin translations of their flags into ``gcache train`` + ``gcache eval``.

Seed flag -> gcache:

* ``--llm_name MODEL``: ``--model`` (``smollm2`` is the embedded model). In the API script it picks the mode:
  ``hybrid_cache`` (local latents + API answer), ``local_cache`` (all local, the deprecated name of ``local``),
  or an API model name (``qwen-flash``, ``qwen-plus``, ``qwen-turbo``: text graph over the API).
* ``--use_cache``: agents pass KV-caches (``--method gcache``); without it they pass text (``gdesigner``).
* ``--mode``: the seed's graph mode (FullConnected, Chain, Star, Layered, Random, Debate, DirectAnswer); with
  ``--optimized_spatial`` the graph is learned.
* ``--agent_nums``, ``--num_rounds``, ``--batch_size``, ``--lr``, ``--latent_steps``: the same settings.
* ``--num_iterations N``: N training steps before evaluation (0: evaluate only).
* ``--dataset_json PATH``: the GSM8K file (JSONL); without it the hub's ``openai/gsm8k``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from gcache.cli import main as gcache_main

logger = logging.getLogger(__name__)

__all__ = ["seed_main", "SEED_GRAPH_MODES", "API_LLM_NAMES"]

SEED_GRAPH_MODES = {"FullConnected": "complete", "Chain": "chain", "Star": "star", "Layered": "layered",
                    "Random": "random", "Debate": "debate", "DirectAnswer": "chain"}
API_LLM_NAMES = ("hybrid_cache", "local_cache", "qwen-flash", "qwen-plus", "qwen-turbo")


def _parser(api: bool) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    if api:
        p.add_argument("--llm_name", default="hybrid_cache", choices=API_LLM_NAMES)
        p.add_argument("--local_llm", default="smollm2", help="local model of hybrid_cache / local_cache")
    else:
        p.add_argument("--llm_name", default="smollm2", help="local model: smollm2, a hub id, a folder or .gguf")
    p.add_argument("--use_cache", action="store_true", help="agents pass KV-caches (G-cache) instead of text")
    p.add_argument("--device", default="cpu")
    p.add_argument("--mode", default="FullConnected", choices=sorted(SEED_GRAPH_MODES))
    p.add_argument("--agent_nums", type=int, default=4)
    p.add_argument("--num_rounds", type=int, default=1)
    p.add_argument("--num_iterations", type=int, default=10)
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--latent_steps", type=int, default=4)
    p.add_argument("--optimized_spatial", action="store_true")
    p.add_argument("--optimized_temporal", action="store_true")
    p.add_argument("--dataset_json", default=None, help="GSM8K JSONL file (default: the hub's openai/gsm8k)")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N questions only")
    p.add_argument("--max_new_tokens", type=int, default=256)
    p.add_argument("--out", default=None, help="output folder (default runs/<script>-<llm_name>)")
    return p


def translate(argv: list[str] | None, api: bool) -> tuple[list[str] | None, list[str]]:
    """Seed flags -> ``(gcache train argv or None, gcache eval argv)``."""
    args = _parser(api).parse_args(argv)
    model, mode = args.llm_name, "local"
    api_flags: list[str] = []
    if api:
        model = args.local_llm
        if args.llm_name == "hybrid_cache":
            mode = "hybrid"
        elif args.llm_name == "local_cache":
            mode = "local_cache"
        else:
            mode = "api"
            api_flags = ["--api-model", args.llm_name]
    method = "gcache" if args.use_cache and mode != "api" else "gdesigner"
    if args.use_cache and mode == "api":
        logger.warning("--use_cache has no effect with an API model (it cannot read KV-caches): text graph")
    learned = args.optimized_spatial or args.optimized_temporal
    topology = "learned" if learned else SEED_GRAPH_MODES[args.mode]
    rounds = max(args.num_rounds, 2) if topology == "debate" else args.num_rounds
    decision = "direct" if args.mode == "DirectAnswer" else "refer"
    agents = 1 if args.mode == "DirectAnswer" else args.agent_nums
    script = "run_gsm8k_cache_API" if api else "run_gsm8k_cache"
    out = args.out or str(Path("runs") / f"{script}-{args.llm_name.replace('/', '_')}")
    common = ["--method", method, "--dataset", "gsm8k", "--model", model, "--device", args.device, "--mode", mode,
              "--agents", str(agents), "--rounds", str(rounds), "--topology", topology, "--decision", decision,
              "--batch-size", str(args.batch_size), "--latent-steps", str(args.latent_steps),
              "--max-new-tokens", str(args.max_new_tokens), *api_flags]
    if args.dataset_json:
        common += ["--data", args.dataset_json]
    train = None
    if learned and args.num_iterations > 0:
        train = ["train", *common, "--steps", str(args.num_iterations), "--lr", str(args.lr),
                 "--out", str(Path(out) / "train")]
        if args.dataset_json is None:
            train += ["--split", "train"]
        if not args.optimized_spatial:
            train.append("--no-optimize-spatial")
        if not args.optimized_temporal:
            train.append("--no-optimize-temporal")
    evaluate = ["eval", *common, "--out", str(Path(out) / "eval")]
    if train is not None:
        evaluate += ["--checkpoint", str(Path(out) / "train")]
    if args.limit is not None:
        evaluate += ["--limit", str(args.limit)]
    return train, evaluate


def seed_main(argv: list[str] | None = None, *, api: bool = False) -> int:
    """Run a seed script: train (if the graph is learned and ``--num_iterations`` > 0), then evaluate."""
    train, evaluate = translate(argv, api)
    if train is not None:
        status = gcache_main(train)
        if status != 0:
            return status
    return gcache_main(evaluate)
