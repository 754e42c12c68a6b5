"""The ``gcache`` command: ``eval``, ``train``, ``serve``, ``plot``. Each subcommand is a thin call into a recipe."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Callable

__all__ = ["main", "build_parser", "configure_logging", "guarded", "run_eval", "run_train"]

logger = logging.getLogger("gcache")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def build_parser() -> argparse.ArgumentParser:
    """The ``gcache`` argument parser; building it imports nothing heavy (no torch), so ``--help`` is fast."""
    import gcache
    from gcache.choices import ENGINES
    from gcache.config import add_run_arguments

    parser = argparse.ArgumentParser(prog="gcache", description=__doc__)
    parser.add_argument("--version", action="version", version=f"gcache {gcache.__version__}")
    loud = parser.add_mutually_exclusive_group()
    loud.add_argument("-v", "--verbose", dest="log_level", action="store_const", const="DEBUG",
                      help="debug logging (same as --log-level DEBUG)")
    loud.add_argument("-q", "--quiet", dest="log_level", action="store_const", const="WARNING",
                      help="warnings and errors only (same as --log-level WARNING)")
    loud.add_argument("--log-level", dest="log_level", type=str.upper, choices=LOG_LEVELS,
                      help="logging threshold (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True)

    ev = sub.add_parser("eval", help="run a method over a benchmark (resumable)")
    add_run_arguments(ev)
    tr = sub.add_parser("train", help="train a graph method's topology model and CacheFuser (resumable)")
    add_run_arguments(tr, training=True)

    sv = sub.add_parser("serve", help="OpenAI-compatible server over a local model")
    sv.add_argument("--model", default="smollm2", help="model to serve (default smollm2)")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--name", help="model name clients use (default: --model)")
    sv.add_argument("--dtype", default="auto")
    sv.add_argument("--device", default="cpu")
    sv.add_argument("--device-map", dest="device_map", help="spread the model over devices, as for gcache eval")
    sv.add_argument("--max-batch-size", dest="max_batch_size", type=int, default=8)
    sv.add_argument("--engine", choices=ENGINES, default="auto",
                    help="latent engine: fast (static cache, CUDA graphs), eager, or auto (fast on CUDA; default)")

    pl = sub.add_parser("plot", help="draw a checkpoint's learned topology and training curves to PNG")
    pl.add_argument("checkpoint", help="a gcache train output folder or checkpoint.pt")
    pl.add_argument("--out", help="output folder (default: the checkpoint's folder)")
    pl.add_argument("--data", help="questions to average the edge probabilities over (default: training data)")
    pl.add_argument("--limit", type=int, default=16)
    return parser


def run_eval(cfg) -> int:
    """``gcache eval`` on a validated :class:`~gcache.config.RunConfig`; prints a one-line JSON brief (rank 0)."""
    from gcache.recipes.eval import EvalRecipe

    recipe = EvalRecipe(cfg)
    try:
        recipe.setup()
        summary = recipe.run()
    finally:
        recipe.cleanup()  # also leaves torch.distributed's group
    if recipe.is_main:  # one line per run, not one per torchrun rank
        brief = {k: summary[k] for k in ("method", "accuracy", "counts")}
        brief["seconds_per_question"] = summary["per_question"]["seconds"]
        print(json.dumps(brief))
    return 0


def run_train(cfg) -> int:
    """``gcache train`` on a validated :class:`~gcache.config.RunConfig`; prints the result as JSON."""
    from gcache.recipes.train import TrainRecipe

    recipe = TrainRecipe(cfg)
    recipe.setup()
    result = recipe.train()
    recipe.cleanup()
    print(json.dumps(result))
    return 0


def _run(args: argparse.Namespace) -> int:
    from gcache.config import config_from_args

    if args.command == "eval":
        return run_eval(config_from_args(args))
    if args.command == "train":
        return run_train(config_from_args(args, method="gcache", split="train"))
    if args.command == "serve":
        from gcache.recipes.serve import ServeRecipe

        recipe = ServeRecipe(model=args.model, port=args.port, host=args.host, name=args.name, dtype=args.dtype,
                             device=args.device, device_map=args.device_map, max_batch_size=args.max_batch_size,
                             engine=args.engine)
        recipe.setup()
        recipe.run()
        return 0
    if args.command == "plot":
        from gcache.recipes.plot import plot_checkpoint

        for path in plot_checkpoint(args.checkpoint, out=args.out, data=args.data, limit=args.limit):
            print(path)
        return 0
    raise AssertionError(args.command)


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by what the user gave: printed as one line, no traceback."""
    from gcache.api.settings import MissingApiKeyError
    from gcache.config import ConfigError
    from gcache.io.results import ResultsFileError
    from gcache.methods import MethodError
    from gcache.models import ModelNotFoundError
    from gcache.tasks import DatasetError

    return (ConfigError, DatasetError, MethodError, ModelNotFoundError, MissingApiKeyError, ResultsFileError,
            FileNotFoundError)


def _run_failures() -> tuple[type[BaseException], ...]:
    """Failures of the run itself (not of its input) that one line explains."""
    from gcache.distributed import RankFailedError

    return (RankFailedError,)


def guarded(prog: str, fn: Callable[[], int]) -> int:
    """Run ``fn``; a user error becomes one line on stderr and exit status 2, Ctrl-C exit status 130."""
    try:
        return fn()
    except _user_errors() as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except _run_failures() as err:  # e.g. another torchrun rank died: the message says how to resume
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # also SIGTERM under torchrun (gcache.distributed)
        print(f"{prog}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


def configure_logging(level: str | None) -> None:
    """Log to stderr at ``level`` (default INFO), with chatty libraries at WARNING."""
    logging.basicConfig(level=level or "INFO",
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "httpcore", "openai", "urllib3", "sentence_transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gcache`` command. Returns the exit status."""
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    return guarded(f"gcache {args.command}", lambda: _run(args))


if __name__ == "__main__":
    sys.exit(main())
