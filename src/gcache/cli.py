"""The ``gcache`` command: ``eval``, ``train``, ``compare``, ``report``, ``tasks``, ``serve``, ``plot``,
``convert-checkpoint``. Each subcommand is a thin call into a recipe."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from typing import Callable

__all__ = ["main", "build_parser", "configure_logging", "guarded", "run_eval", "run_train"]

logger = logging.getLogger("gcache")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``gcache`` argument parser; building it imports nothing heavy (no torch), so ``--help`` is fast."""
    import gcache
    from gcache.choices import DTYPES, ENGINES
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

    cm = sub.add_parser("compare", help="run methods x tasks x seeds into one folder (resumable); see gcache report")
    cm.add_argument("--config", help="YAML matrix (src/gcache/configs/compare/*.yaml); flags below override it")
    cm.add_argument("--out", required=True, help="output folder: OUT/<task>/<method>/seed<seed>/ and compare.json")
    cm.add_argument("--methods", type=_names, help="comma-separated methods (rows with no settings of their own)")
    cm.add_argument("--tasks", type=_names, help="comma-separated tasks (loaded from the hub unless the YAML gives data)")
    cm.add_argument("--seeds", type=_seeds, help="comma-separated seeds, e.g. 0,1,2 (default 0)")
    cm.add_argument("--baseline", help="the method the report pairs the others against (default: the first)")
    cm.add_argument("--dry-run", dest="dry_run", action="store_true", help="list the cells and exit")
    for flag, kind, text in (("--limit", int, "first N questions of every task"), ("--model", str, "model of every cell"),
                             ("--device", str, "device of every cell"), ("--dtype", str, "dtype of every cell"),
                             ("--batch-size", int, "batch size of every cell"),
                             ("--max-new-tokens", int, "token budget of every cell")):
        cm.add_argument(flag, dest=flag[2:].replace("-", "_"), type=kind, help=text)

    rp = sub.add_parser("report", help="markdown tables and PNG plots from a compare folder or eval runs")
    rp.add_argument("folder", help="a gcache compare output, or a folder of gcache eval runs")
    rp.add_argument("--baseline", help="method to pair the others against (default: compare's baseline)")
    rp.add_argument("--filter", default="flexible", help="extraction pipeline reported first: flexible or strict")
    rp.add_argument("--out", help="where report.md and the plots go (default: the folder)")

    sub.add_parser("tasks", help="list the benchmarks: hub name, splits, answer kind, version")

    sv = sub.add_parser("serve", help="OpenAI-compatible server over a local model (needs gcache[serve])")
    sv.add_argument("--model", default="smollm2", help="model to serve (default smollm2)")
    sv.add_argument("--port", type=int, default=8000, help="TCP port, 0..65535 (default 8000)")
    sv.add_argument("--host", default="127.0.0.1",
                    help="interface (default 127.0.0.1; beyond it, give --api-key: a warning says so)")
    sv.add_argument("--served-model-name", "--name", dest="name", help="model name clients use (default: --model)")
    sv.add_argument("--api-key", dest="api_key",
                    help="require 'Authorization: Bearer KEY' (default: env GCACHE_SERVE_API_KEY, else no check)")
    sv.add_argument("--dtype", default="auto", choices=tuple(DTYPES), metavar="DTYPE",
                    help="auto, float32, bfloat16 or float16 (default auto)")
    sv.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (default cpu)")
    sv.add_argument("--device-map", dest="device_map", help="spread the model over devices, as for gcache eval")
    sv.add_argument("--max-batch-size", dest="max_batch_size", type=int, default=8,
                    help="most queued requests per model call (default 8)")
    sv.add_argument("--max-context", dest="max_context", type=int,
                    help="most positions per conversation (default: the model's); longer prompts get HTTP 400")
    sv.add_argument("--engine", choices=ENGINES, default="auto",
                    help="latent engine: fast (static cache, CUDA graphs), eager, or auto (fast on CUDA; default)")

    pl = sub.add_parser("plot", help="draw a trained team's learned topology and training curves to PNG "
                        "(needs gcache[plot])")
    pl.add_argument("checkpoint", help="a trained team: a gcache train output folder, its team/ folder, a hub id "
                    "owner/name, or an old checkpoint.pt")
    pl.add_argument("--out", help="output folder (default: the folder given; required for a hub id)")
    pl.add_argument("--data", help="questions to average the edge probabilities over (default: training data)")
    pl.add_argument("--limit", type=_positive_int, default=16, help="questions to average over (default 16)")
    cv = sub.add_parser("convert-checkpoint", help="write an old checkpoint.pt's team as a team folder "
                        "(safetensors + JSON + model card; the old file is read with weights_only)")
    cv.add_argument("checkpoint", help="an old checkpoint.pt, or the gcache train output folder holding one")
    cv.add_argument("--out", help="team folder to write (default: team/ next to the old file)")
    return parser


def run_eval(cfg) -> int:
    """``gcache eval`` on a validated :class:`~gcache.config.RunConfig` (:func:`gcache.evaluate`); prints a one-line
    JSON brief (rank 0)."""
    from gcache.config import ConfigError
    from gcache.python_api import evaluate

    if cfg.out is None:  # the command keeps its results; only Python callers may run in a temporary folder
        raise ConfigError("--out DIR is required: results and the resume state are written there")
    run = evaluate(cfg)
    summary = run.summary
    if run.main_process:  # one line per run, not one per torchrun rank
        brief = {k: summary[k] for k in ("method", "accuracy", "accuracy_filter", "accuracy_strict", "counts")}
        brief["seconds_per_question"] = summary["per_question"]["seconds"]
        print(json.dumps(brief))
    failed, total = summary["counts"]["errors"], summary["counts"]["questions"]
    if failed:
        if run.main_process:
            print(f"{failed} of {total} questions failed; rerun with --retry-errors", file=sys.stderr)
        return 1
    return 0


def run_train(cfg) -> int:
    """``gcache train`` on a validated :class:`~gcache.config.RunConfig` (:func:`gcache.train`); prints the result
    as JSON (rank 0)."""
    from gcache.python_api import train

    run = train(cfg)
    if run.main_process:  # one line per run, not one per torchrun rank
        print(json.dumps(run.result))
    return 0


def _names(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated names")
    return names


def _seeds(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def run_compare(args: argparse.Namespace) -> int:
    """``gcache compare``: build the matrix from the YAML and flags, validate every cell, run them."""
    from gcache.config import ConfigError
    from gcache.python_api import compare
    from gcache.recipes.compare import CompareConfig

    overrides = {k: getattr(args, k) for k in ("limit", "model", "device", "dtype", "batch_size", "max_new_tokens")
                 if getattr(args, k) is not None}
    if args.config:
        config = CompareConfig.from_yaml(args.config, overrides)
        narrowed = {}  # flags narrow or extend the file's matrix
        if args.methods:
            narrowed["methods"] = {m: config.methods.get(m, {}) for m in args.methods}
        if args.tasks:
            narrowed["tasks"] = {t: config.tasks.get(t, {}) for t in args.tasks}
        if args.seeds:
            narrowed["seeds"] = args.seeds
        if args.baseline or args.methods:
            narrowed["baseline"] = args.baseline or (config.baseline if config.baseline in args.methods else None)
        config = dataclasses.replace(config, **narrowed)
    elif args.methods and args.tasks:
        config = CompareConfig({m: {} for m in args.methods}, {t: {} for t in args.tasks}, args.seeds or [0],
                               baseline=args.baseline, overrides=overrides)
    else:
        raise ConfigError("gcache compare needs --config FILE, or --methods and --tasks")
    if args.dry_run:
        for cell in config.cells(args.out):
            print(f"{cell.key}\t{cell.out}")
        return 0
    result = compare(config, args.out)
    print(json.dumps({"out": args.out, "cells": len(result["cells"]),
                      "done": sum(c["status"] == "done" for c in result["cells"])}))
    return 0


def run_report(args: argparse.Namespace) -> int:
    """``gcache report``: write report.md and the plots; print the report."""
    from gcache.python_api import report

    command = " ".join(["gcache report", args.folder] + ([f"--baseline {args.baseline}"] if args.baseline else [])
                       + ([f"--filter {args.filter}"] if args.filter != "flexible" else []))
    done = report(args.folder, baseline=args.baseline, pipeline=args.filter, out=args.out, command=command)
    print(done.markdown)
    for plot in done.plots:
        print(plot)
    return 0


def run_tasks() -> int:
    """``gcache tasks``: one line per registered benchmark."""
    from gcache.tasks import TASKS

    print("| task | answer | hub dataset (config) | splits (default) | prompt set | version |")
    print("|---|---|---|---|---|---:|")
    for name, cls in TASKS.items():
        hub = cls.hub_name + (f" ({cls.hub_config})" if cls.hub_config else "")
        splits = ", ".join(s if s != cls.default_split else f"**{s}**" for s in cls.splits)
        print(f"| {name} | {cls.answer_kind} | {hub} | {splits} | {cls.prompt_set} | {cls.version} |")
    return 0


def _run(args: argparse.Namespace) -> int:
    from gcache.config import config_from_args

    if args.command == "eval":
        return run_eval(config_from_args(args))
    if args.command == "train":
        return run_train(config_from_args(args, method="gcache", split="train"))
    if args.command == "compare":
        return run_compare(args)
    if args.command == "report":
        return run_report(args)
    if args.command == "tasks":
        return run_tasks()
    if args.command == "serve":
        from gcache.recipes.serve import ServeRecipe

        recipe = ServeRecipe(model=args.model, port=args.port, host=args.host, name=args.name, dtype=args.dtype,
                             device=args.device, device_map=args.device_map, max_batch_size=args.max_batch_size,
                             engine=args.engine, api_key=args.api_key, max_context=args.max_context)
        recipe.setup()
        recipe.run()
        return 0
    if args.command == "plot":
        from gcache.recipes.plot import plot_checkpoint

        for path in plot_checkpoint(args.checkpoint, out=args.out, data=args.data, limit=args.limit):
            print(path)
        return 0
    if args.command == "convert-checkpoint":
        from gcache.training.checkpointing import convert_legacy

        print(convert_legacy(args.checkpoint, args.out))
        return 0
    raise AssertionError(args.command)


# Errors caused by what the user gave: printed as one line, no traceback. Named, not imported: importing the
# modules that define them would load torch and openai on the error path (seconds before one line).
_USER_ERRORS = frozenset({
    "gcache.api.client.ApiFatalError", "gcache.api.settings.MissingApiKeyError", "gcache.config.ConfigError",
    "gcache.io.results.ResultsFileError", "gcache.methods.MethodError", "gcache.models.ModelNotFoundError",
    "gcache.models._load.ModelNotFoundError", "gcache.tasks.DatasetError", "gcache.tasks._base.DatasetError",
    "builtins.FileNotFoundError", "gcache._extras.MissingExtraError",
})
# Failures of the run itself (not of its input) that one line explains.
_RUN_FAILURES = frozenset({"gcache.distributed.RankFailedError"})


def _is_one_of(err: BaseException, names: frozenset[str]) -> bool:
    return any(f"{cls.__module__}.{cls.__qualname__}" in names for cls in type(err).__mro__)


def guarded(prog: str, fn: Callable[[], int]) -> int:
    """Run ``fn``; a user error becomes one line on stderr and exit status 2, Ctrl-C exit status 130."""
    try:
        return fn()
    except Exception as err:
        if _is_one_of(err, _USER_ERRORS):
            print(f"{prog}: error: {err}", file=sys.stderr)
            return 2
        if _is_one_of(err, _RUN_FAILURES):  # e.g. another torchrun rank died: the message says how to resume
            print(f"{prog}: error: {err}", file=sys.stderr)
            return 1
        raise
    except KeyboardInterrupt:  # also SIGTERM under torchrun (gcache.distributed)
        print(f"{prog}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


def _quiet_http_clients(record: logging.LogRecord) -> bool:
    """Drop INFO and below from HTTP client libraries (one line per request otherwise)."""
    return record.levelno >= logging.WARNING or not record.name.startswith(("httpx", "httpcore", "openai", "urllib3"))


def configure_logging(level: str | None) -> None:
    """Log to stderr at ``level`` (default INFO), with chatty libraries at WARNING."""
    logging.basicConfig(level=level or "INFO",
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    # Each name covers its children; the HTTP client's loggers are found by prefix, whatever it calls them
    # (httpx logged as "httpx", later releases as "httpx2"), here and for any created later.
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2", "openai", "urllib3", "sentence_transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_quiet_http_clients)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gcache`` command. Returns the exit status."""
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    if getattr(args, "api_key", None):
        # Any process on the machine can read a command line (/proc/PID/cmdline), model-written code included.
        env = "GCACHE_SERVE_API_KEY" if args.command == "serve" else "API_KEY"
        logging.getLogger("gcache").warning("--api-key on the command line is visible to every process of this "
                                            "machine; prefer %s in the environment or .env", env)
    return guarded(f"gcache {args.command}", lambda: _run(args))


if __name__ == "__main__":
    sys.exit(main())
