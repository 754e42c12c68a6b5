"""The original G-cache entry points (``experiments/run_gsm8k_cache.py`` and ``run_gsm8k_cache_API.py``), kept
working as thin translations of their flags into the settings of ``gcache train`` + ``gcache eval``.

Seed flag -> gcache:

* ``--llm_name MODEL``: ``--model`` (``smollm2`` is the embedded model). In the API script it picks the mode:
  ``hybrid_cache`` (local latents + API answer; needs ``--use_cache``), ``local_cache`` (all local, the deprecated
  name of ``local``), or an API model name (``qwen-flash``, ``qwen-plus``, ``qwen-turbo``: text graph over the
  API).
* ``--use_cache``: agents pass KV-caches (``--method gcache``); without it they pass text (``gdesigner``). With an
  API model name the agents are API calls, which cannot pass KV-caches: this is the one documented mapping,
  ``--use_cache`` is then dropped (``gdesigner``) and a warning says so, as the seed's API script did.
* ``--mode``: the seed's graph mode (FullConnected, Chain, Star, Layered, Random, Debate, DirectAnswer); with
  ``--optimized_spatial`` the graph is learned.
* ``--agent_nums``, ``--num_rounds``, ``--batch_size``, ``--lr``, ``--latent_steps``: the same settings.
* ``--num_iterations N``: N training steps before evaluation (0: evaluate only).
* ``--dataset_json PATH``: the GSM8K file (JSONL) evaluated on (or a folder with ``train.jsonl`` and
  ``test.jsonl``); without it the hub's ``openai/gsm8k``. ``--test_json`` names the evaluation file instead.
* Training never reads the evaluated questions (the seed trained on the very file it then evaluated): it reads
  ``--train_json``, else the ``train.jsonl`` beside the evaluated file (or in its folder), else the hub's train
  split, and says which. ``gcache eval`` then refuses any question the checkpoint was trained on.
* ``--lr``: the topology learning rate; the default is gcache's (0.003), since the seed's 0.1 collapses every edge
  of MiniLM-featured roles within a few steps.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["seed_main", "translate", "SEED_GRAPH_MODES", "API_LLM_NAMES"]

SEED_GRAPH_MODES = {"FullConnected": "complete", "Chain": "chain", "Star": "star", "Layered": "layered",
                    "Random": "random", "Debate": "debate", "DirectAnswer": "chain"}
API_LLM_NAMES = ("hybrid_cache", "local_cache", "qwen-flash", "qwen-plus", "qwen-turbo")


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


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
    p.add_argument("--num_iterations", type=_non_negative_int, default=10,
                   help="training steps before evaluation (0: evaluate only)")
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--lr", type=float, default=None, help="topology learning rate (default gcache's, 0.003)")
    p.add_argument("--latent_steps", type=int, default=4)
    p.add_argument("--optimized_spatial", action="store_true")
    p.add_argument("--optimized_temporal", action="store_true")
    p.add_argument("--dataset_json", default=None,
                   help="GSM8K JSONL file to evaluate, or a folder with train.jsonl and test.jsonl "
                        "(default: the hub's openai/gsm8k)")
    p.add_argument("--test_json", default=None, help="GSM8K JSONL file to evaluate (overrides --dataset_json)")
    p.add_argument("--train_json", default=None,
                   help="GSM8K JSONL file of training questions (default: train.jsonl beside the evaluated file, "
                        "else the hub's train split)")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N questions only")
    p.add_argument("--max_new_tokens", type=int, default=256)
    p.add_argument("--out", default=None, help="output folder (default runs/<script>-<llm_name>)")
    return p


def translate(argv: list[str] | None, api: bool) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Seed flags -> ``(gcache train settings or None, gcache eval settings)``, as :class:`RunConfig` fields.

    Raises:
        SystemExit: (exit status 2, one line) on flags argparse rejects.
    """
    prog = "run_gsm8k_cache_API.py" if api else "run_gsm8k_cache.py"
    parser = _parser(api)
    parser.prog = prog
    args = parser.parse_args(argv)
    model, mode = args.llm_name, "local"
    api_model = None
    if api:
        model = args.local_llm
        if args.llm_name == "hybrid_cache":
            mode = "hybrid"
        elif args.llm_name == "local_cache":
            mode = "local_cache"
        else:
            mode, api_model = "api", args.llm_name
    if api and args.llm_name == "hybrid_cache" and not args.use_cache:
        parser.error("--llm_name hybrid_cache runs latent agents on the local model: add --use_cache (for a text "
                     "graph over the API, give an API model name such as qwen-flash)")
    use_cache = args.use_cache
    if use_cache and mode == "api":
        logger.warning("--use_cache with the API model %s: API agents cannot pass KV-caches, so the text graph "
                       "(gdesigner) runs", args.llm_name)
        use_cache = False
    learned = args.optimized_spatial or args.optimized_temporal
    topology = "learned" if learned else SEED_GRAPH_MODES[args.mode]
    script = Path(prog).stem
    out = Path(args.out or Path("runs") / f"{script}-{args.llm_name.replace('/', '_')}")
    test_data = args.test_json or args.dataset_json
    train_data = _training_file(args.train_json, test_data)
    common: dict[str, Any] = {
        "method": "gcache" if use_cache else "gdesigner", "dataset": "gsm8k", "model": model,
        "device": args.device, "mode": mode, "agents": 1 if args.mode == "DirectAnswer" else args.agent_nums,
        "rounds": max(args.num_rounds, 2) if topology == "debate" else args.num_rounds, "topology": topology,
        "decision": "direct" if args.mode == "DirectAnswer" else "refer", "batch_size": args.batch_size,
        "latent_steps": args.latent_steps, "max_new_tokens": args.max_new_tokens,
    }
    if api_model is not None:
        common["api_model"] = api_model
    train = None
    if learned and args.num_iterations > 0:
        train = {**common, "steps": args.num_iterations, "out": str(out / "train"), "data": train_data,
                 "split": "train", "optimize_spatial": args.optimized_spatial, "optimize_temporal": args.optimized_temporal}
        if args.lr is not None:
            train["lr"] = args.lr
        logger.info("training on %s, evaluating on %s (never the same questions)",
                    train_data or "the hub's openai/gsm8k train split", test_data or "the hub's openai/gsm8k test split")
    evaluate = {**common, "out": str(out / "eval"), "limit": args.limit, "data": test_data, "split": "test"}
    if train is not None:
        evaluate["checkpoint"] = str(out / "train")
    return train, evaluate


def _training_file(train_json: str | None, test_data: str | None) -> str | None:
    """Where the seed scripts train: ``--train_json``, else the ``train.jsonl`` beside (or in) the evaluated data,
    else None (the hub's train split)."""
    if train_json is not None:
        return train_json
    if test_data is None:
        return None
    path = Path(test_data)
    if path.is_dir():
        return str(path)  # the task reads <folder>/train.jsonl for split "train"
    sibling = path.parent / "train.jsonl"
    return str(sibling) if sibling.is_file() and sibling.resolve() != path.resolve() else None


def seed_main(argv: list[str] | None = None, *, api: bool = False) -> int:
    """Run a seed script: train (if the graph is learned and ``--num_iterations`` > 0), then evaluate.

    Returns:
        int: the exit status (2 with one line on a bad flag or setting, as ``gcache`` gives).
    """
    from gcache.cli import configure_logging, guarded, run_eval, run_train
    from gcache.config import RunConfig

    configure_logging(None)

    def run() -> int:
        train, evaluate = translate(argv, api)
        if train is not None:
            status = run_train(RunConfig(**train))
            if status != 0:
                return status
        return run_eval(RunConfig(**evaluate))

    return guarded("run_gsm8k_cache_API.py" if api else "run_gsm8k_cache.py", run)
