"""``gcache report DIR``: tables and plots from the runs in a folder (a ``gcache compare`` output, or any folder of
``gcache eval`` runs).

For every task, one markdown table with a row per method, seeds pooled:

* accuracy (the ``flexible`` pipeline unless ``--filter strict``) with its Wilson 95% interval; the other
  pipeline's accuracy beside it;
* paired wins / losses against the baseline method (same question, same seed: the method right and the baseline
  wrong is a win) with the exact sign-test p-value;
* prompt and generated tokens, latent steps and seconds per question, API cost, and the ratios of generated
  tokens and seconds to the baseline's.

The interval treats every (question, seed) as a trial, so with several seeds it is narrower than one over
questions alone would be: the table says how many questions and seeds it pooled. Above the tables: the model,
decoding settings and seeds of each method, the subset of each task, and for code tasks the sandbox protections.

Every count, rate, interval and p-value comes from :mod:`gcache.scoring.aggregation`, the code ``gcache eval``'s
summary and the benchmarks use.

Plots (PNG, next to ``report.md``): accuracy against generated tokens and against seconds per question, the
training curves of any trained checkpoint a run used, and for learned-graph runs how often each edge was used.
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from gcache._extras import MissingExtraError
from gcache.config import ConfigError, prepare_out
from gcache.io import ResultStore, atomic_write_text
from gcache.io.results import ResultsFileError
from gcache.methods import METHODS
from gcache.scoring.aggregation import outcome, paired, pooled_accuracy

logger = logging.getLogger(__name__)

__all__ = ["Run", "Row", "collect_runs", "summarize", "render_markdown", "write_report"]


@dataclass
class Run:
    """One ``gcache eval`` folder: which cell it is, its summary and its per-question records."""

    task: str
    method: str
    seed: int
    folder: Path
    summary: dict
    records: list[dict]


@dataclass
class Row:
    """One (task, method) of a report, seeds pooled."""

    task: str
    method: str
    seeds: list[int]
    questions: int
    trials: int
    correct: int
    accuracy: float
    low: float
    high: float
    other_accuracy: float
    prompt_tokens: float
    tokens: float
    latent_steps: float
    seconds: float
    api_cost: float
    wins: int | None = None
    losses: int | None = None
    ties: int | None = None
    p_value: float | None = None
    token_ratio: float | None = None
    time_ratio: float | None = None
    settings: dict = field(default_factory=dict)


def _read_records(folder: Path) -> list[dict]:
    """A run's records, every results part of the folder merged by id (shards, ranks).

    Read-only: a torn last line is skipped, not repaired (the run may still be writing; resuming it repairs it).
    """
    return ResultStore(folder, read_only=True).records()


def _read_json(path: Path, what: str) -> dict:
    """A JSON object from ``path``, or one line saying why it is not a ``what``.

    Raises:
        ResultsFileError: The file cannot be read, is not JSON, or is not an object.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError included
        raise ResultsFileError(f"{path}: not a readable {what} ({err})") from None
    if not isinstance(data, dict):
        raise ResultsFileError(f"{path}: not a {what} (a JSON {type(data).__name__}, not an object)")
    return data


def _read_summary(path: Path) -> dict:
    summary = _read_json(path, "gcache eval summary")
    counts = summary.get("counts")
    problems = [key for key in ("dataset", "method") if not isinstance(summary.get(key), str)]
    if not isinstance(counts, dict) or not isinstance(counts.get("questions"), int):
        problems.append("counts.questions")
    if not isinstance(summary.get("config", {}), dict):
        problems.append("config")
    if problems:
        raise ResultsFileError(f"{path}: not a gcache eval summary (missing or malformed: {', '.join(problems)})")
    return summary


def _read_compare_state(folder: Path) -> dict:
    """``compare.json``, checked: a ``matrix`` object and ``cells`` with task, method, seed and folder."""
    path = folder / "compare.json"
    state = _read_json(path, "gcache compare state")
    cells = state.get("cells")
    good = isinstance(cells, list) and isinstance(state.get("matrix", {}), dict) and all(
        isinstance(c, dict) and isinstance(c.get("task"), str) and isinstance(c.get("method"), str)
        and isinstance(c.get("seed"), int) and isinstance(c.get("out"), str) for c in cells)
    if not good:
        raise ResultsFileError(f"{path}: not a gcache compare state (expected 'cells': a list of objects with "
                               "task, method, seed and out)")
    return state


def unfinished_cells(folder: str | Path) -> list[dict]:
    """The cells of a compare folder's ``compare.json`` that have not finished (empty for eval folders)."""
    folder = Path(folder)
    if not (folder / "compare.json").is_file():
        return []
    return [cell for cell in _read_compare_state(folder)["cells"]
            if cell.get("status") != "done" or not (folder / cell["out"] / "summary.json").is_file()]


def collect_runs(folder: str | Path) -> list[Run]:
    """The runs under ``folder``: the cells of its ``compare.json``, or every folder holding a ``summary.json``.

    Raises:
        ConfigError: If ``folder`` holds no finished run.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"gcache report: {folder} is not a folder")
    runs = []
    state = folder / "compare.json"
    if state.is_file():
        cells = _read_compare_state(folder)["cells"]
        for cell in cells:
            run_dir = folder / cell["out"]
            if (run_dir / "summary.json").is_file():
                summary = _read_summary(run_dir / "summary.json")
                runs.append(Run(cell["task"], cell["method"], cell["seed"], run_dir, summary,
                                _read_records(run_dir)))
    else:
        for path in sorted(folder.rglob("summary.json")):
            summary = _read_summary(path)
            seed = (summary.get("seeds") or [summary.get("config", {}).get("seed", 0)])[0]
            runs.append(Run(summary["dataset"], summary["method"], seed, path.parent, summary,
                            _read_records(path.parent)))
    if not runs:
        raise ConfigError(f"gcache report: no finished runs (summary.json) under {folder}")
    return runs


def _settings(summary: dict) -> dict:
    cfg = summary.get("config", {})
    latent = summary.get("latent", {})
    return {
        "model": cfg.get("model"), "mode": cfg.get("mode"), "method": cfg.get("method"),
        "temperature": cfg.get("temperature"), "top_p": cfg.get("top_p"),
        "max_new_tokens": cfg.get("max_new_tokens"), "samples": cfg.get("samples", 1),
        "latent_steps": latent.get("latent_steps", cfg.get("latent_steps")), "realign": cfg.get("realign"),
        "zero_latent_steps": latent.get("zero_latent_steps"), "topology": cfg.get("topology"),
        "checkpoint": cfg.get("checkpoint"),
    }


def summarize(runs: list[Run], baseline: str | None, pipeline: str = "flexible") -> list[Row]:
    """Pool the seeds of each (task, method) and pair each method with ``baseline``.

    Args:
        runs (list[Run]): from :func:`collect_runs`.
        baseline (str | None): method the others are paired against; None: no pairing.
        pipeline (str): ``flexible`` or ``strict``: the accuracy reported first. Default is ``flexible``.

    Returns:
        list[Row]: in task order, then method order, as the runs came.
    """
    other = "strict" if pipeline == "flexible" else "flexible"
    groups: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for run in runs:
        groups[(run.task, run.method)].append(run)
    rows = []
    for (task, method), group in groups.items():
        records = [r for run in group for r in run.records]
        acc, other_acc = pooled_accuracy(records, pipeline), pooled_accuracy(records, other)  # samples are trials
        n = len(records) or 1
        rows.append(Row(
            task=task, method=method, seeds=sorted(run.seed for run in group),
            questions=len({r["id"] for r in records}), trials=acc.n, correct=acc.correct,
            accuracy=acc.rate if acc.n else math.nan, low=acc.low, high=acc.high,
            other_accuracy=other_acc.rate if other_acc.n else math.nan,
            prompt_tokens=sum(r.get("prompt_tokens") or 0 for r in records) / n,
            tokens=sum(r.get("completion_tokens") or 0 for r in records) / n,
            latent_steps=sum(r.get("latent_steps") or 0 for r in records) / n,
            seconds=sum(r.get("seconds") or 0 for r in records) / n,
            api_cost=sum(r.get("api_cost_usd") or 0 for r in records),
            settings=_settings(group[0].summary),
        ))
    if baseline is not None:
        _pair(rows, groups, baseline, pipeline)
    return rows


def _by_seed(runs: list[Run], pipeline: str) -> list[dict]:
    """The runs' first-sample outcomes under ``pipeline``, one per (seed, question): the unit of pairing."""
    return [{"id": (run.seed, r["id"]), "correct": outcome(r, pipeline)} for run in runs for r in run.records]


def _pair(rows: list[Row], groups: dict, baseline: str, pipeline: str) -> None:
    for row in rows:
        base_runs = groups.get((row.task, baseline))
        if not base_runs or row.method == baseline:
            continue
        vs = paired(_by_seed(groups[(row.task, row.method)], pipeline), _by_seed(base_runs, pipeline))
        row.wins, row.losses, row.ties, row.p_value = vs.wins, vs.losses, vs.ties, vs.p
        base_row = next(x for x in rows if x.task == row.task and x.method == baseline)
        row.token_ratio = row.tokens / base_row.tokens if base_row.tokens else None
        row.time_ratio = row.seconds / base_row.seconds if base_row.seconds else None


def _fmt(x: float | None, digits: int = 2, suffix: str = "") -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}{suffix}"


def render_markdown(rows: list[Row], runs: list[Run], baseline: str | None, pipeline: str, command: str,
                    unfinished: list[dict] | None = None) -> str:
    """The report as markdown: settings, then one table per task; cells of ``unfinished`` are marked."""
    other = "strict" if pipeline == "flexible" else "flexible"
    unfinished = unfinished or []
    lines = [f"# gcache report", "", f"    {command}", ""]
    if unfinished:
        total = len(unfinished) + len({(r.task, r.method, r.seed) for r in runs} - {
            (c["task"], c["method"], c["seed"]) for c in unfinished})
        lines += [f"**Incomplete: {len(unfinished)} of {total} cells have not finished** (rerun `gcache compare` "
                  "to resume them): " + ", ".join(f"{c['task']}/{c['method']}/seed{c['seed']} "
                                                  f"({c.get('status', 'unknown')})" for c in unfinished), ""]
    lines += ["## Settings", ""]
    seen = {}
    for run in runs:
        seen.setdefault(run.method, _settings(run.summary))
    for method, s in seen.items():
        decoding = ("greedy" if not s["temperature"] else f"temperature {s['temperature']}, top-p {s['top_p']}")
        kind = METHODS.get(s["method"])
        latent = (f"; {s['latent_steps']} latent steps, realign {'on' if s['realign'] else 'off'}"
                  + (f", latent steps 0 = {s['zero_latent_steps']}" if s["zero_latent_steps"] else "")
                  if kind is not None and kind.latent else "")
        extra = f"; topology {s['topology']}" if kind is not None and kind.learns else ""
        extra += f"; checkpoint {s['checkpoint']}" if s["checkpoint"] else ""
        lines.append(f"- **{method}** (`--method {s['method']}`, {s['mode']}): model {s['model']}; {decoding}; "
                     f"at most {s['max_new_tokens']} new tokens; {s['samples']} sample(s) per question{latent}{extra}")
    seeds = sorted({run.seed for run in runs})
    lines.append(f"- seeds: {', '.join(map(str, seeds))}")
    for task in dict.fromkeys(run.task for run in runs):
        first = next(run for run in runs if run.task == task)
        subset = first.summary.get("subset", {}).get("name", f"{first.summary['counts']['questions']} questions")
        lines.append(f"- {task}: {subset} (task version {first.summary.get('task_version')})")
        sandbox = first.summary.get("sandbox")
        if sandbox:
            # "partial: ..." and "off: ..." both fall short of what "on" promises: name them with their state.
            off = [f"{k} ({v})" for k, v in sandbox.items() if not v.startswith("on")]
            lines.append(f"  - code ran in the sandbox: {len(sandbox) - len(off)} of {len(sandbox)} protections on"
                         + (f"; not fully: {'; '.join(off)}" if off else ""))
    lines += ["", f"Accuracy is the `{pipeline}` extraction's (the `{other}` one beside it), pooled over seeds, with "
              "a Wilson 95% interval over (question, seed) trials. W/L/T: questions the method got right and the "
              f"baseline ({baseline}) wrong / the reverse / same outcome, same seed; p: exact sign test.", ""]
    for task in dict.fromkeys([*(row.task for row in rows), *(c["task"] for c in unfinished)]):
        lines += [f"## {task}", "",
                  f"| method | n (q × seeds) | accuracy [95% CI] | {other} | W/L/T vs {baseline} | p | "
                  "prompt tokens / q | gen tokens / q | latent steps / q | s / q | API $ | gen tokens × | time × |",
                  "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for row in (r for r in rows if r.task == task):
            paired = "—" if row.wins is None else f"{row.wins}/{row.losses}/{row.ties}"
            pending = sorted(c["seed"] for c in unfinished if c["task"] == task and c["method"] == row.method)
            mark = f" (unfinished: seed {', '.join(map(str, pending))})" if pending else ""
            lines.append(
                f"| {row.method}{mark} | {row.questions} × {len(row.seeds)} | {_fmt(row.accuracy, 3)} "
                f"({row.correct:g}/{row.trials}) [{row.low:.3f}, {row.high:.3f}] | {_fmt(row.other_accuracy, 3)} | "
                f"{paired} | {_fmt(row.p_value, 3)} | {_fmt(row.prompt_tokens, 1)} | {_fmt(row.tokens, 1)} | "
                f"{_fmt(row.latent_steps, 1)} | "
                f"{_fmt(row.seconds, 2)} | {_fmt(row.api_cost, 4)} | {_fmt(row.token_ratio, 2, 'x')} | "
                f"{_fmt(row.time_ratio, 2, 'x')} |")
        shown = {row.method for row in rows if row.task == task}
        for method in dict.fromkeys(c["method"] for c in unfinished if c["task"] == task and c["method"] not in shown):
            seeds = sorted(c["seed"] for c in unfinished if c["task"] == task and c["method"] == method)
            lines.append(f"| {method} (unfinished: seed {', '.join(map(str, seeds))}; no results yet) |"
                         + " — |" * 12)
        lines.append("")
    return "\n".join(lines)


def _edge_frequencies(records: list[dict]) -> tuple[list[str], list[list[float]], list[list[float]] | None] | None:
    graphs = [r["graph"] for r in records if r.get("graph")]
    if not graphs:
        return None
    agents = graphs[0]["agents"]
    n = len(agents)
    graphs = [g for g in graphs if g["agents"] == agents]
    spatial = [[sum(g["spatial"][u][v] for g in graphs) / len(graphs) for v in range(n)] for u in range(n)]
    temporal = None
    if any(g.get("num_rounds", 1) > 1 for g in graphs):
        temporal = [[sum(g["temporal"][u][v] for g in graphs) / len(graphs) for v in range(n)] for u in range(n)]
    return [f"{a}#{i}" for i, a in enumerate(agents)], spatial, temporal


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


def write_plots(rows: list[Row], runs: list[Run], out: Path) -> list[Path]:
    """Accuracy vs tokens and vs seconds, training curves of trained checkpoints, edge use of learned graphs.

    Raises:
        MissingExtraError: matplotlib (the ``plot`` extra) is not installed.
    """
    # lazy: plotting needs the 'plot' extra, and the tables do not
    from gcache.plotting import CostPoint, plot_accuracy_vs_cost, plot_topology, plot_training_curves

    written = []
    usable = [row for row in rows if not math.isnan(row.accuracy)]
    if usable:
        for name, attr, label in (("accuracy_vs_tokens.png", "tokens", "generated tokens / question"),
                                  ("accuracy_vs_seconds.png", "seconds", "seconds / question")):
            points = [CostPoint(r.task, r.method, r.accuracy, r.low, r.high, getattr(r, attr)) for r in usable]
            written.append(plot_accuracy_vs_cost(points, out / name, label))
    checkpoints = {}
    for run in runs:
        ckpt = run.summary.get("config", {}).get("checkpoint")
        if ckpt:
            checkpoints.setdefault(run.method, Path(ckpt))
    for method, ckpt in checkpoints.items():
        history = (ckpt if ckpt.is_dir() else ckpt.parent) / "history.json"
        if history.is_file():
            entries = json.loads(history.read_text(encoding="utf-8"))
            if entries:
                written.append(plot_training_curves(entries, out / f"training_curves_{_slug(method)}.png",
                                                    keys=("loss", "reward", "answer_nll")))
        else:
            logger.warning("report: %s used checkpoint %s but no history.json is next to it", method, ckpt)
    by_cell: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for run in runs:
        by_cell[(run.task, run.method)].extend(run.records)
    for (task, method), records in by_cell.items():
        freq = _edge_frequencies(records)
        if freq is not None:
            names, spatial, temporal = freq
            written.append(plot_topology(spatial, temporal, names, out / f"topology_{_slug(task)}_{_slug(method)}.png",
                                         title=f"{method} on {task}: fraction of questions using each edge"))
    return written


def write_report(folder: str | Path, *, baseline: str | None = None, pipeline: str = "flexible",
                 out: str | Path | None = None, command: str = "") -> tuple[Path, list[Path]]:
    """Write ``report.md`` and the plots for the runs under ``folder``.

    Args:
        folder (str | Path): a ``gcache compare`` output or a folder of ``gcache eval`` runs.
        baseline (str | None): method to pair against. Default: compare's baseline, else the first method.
        pipeline (str): ``flexible`` or ``strict``. Default is ``flexible``.
        out (str | Path | None): where to write. Default: ``folder``.
        command (str): the command line, quoted in the report.

    Returns:
        tuple: ``(report.md path, plot paths)``.

    Raises:
        ConfigError: No runs, an unknown baseline or pipeline, an ``out`` that cannot be written.
        ResultsFileError: A damaged or foreign ``compare.json`` or ``summary.json``.
    """
    if pipeline not in ("flexible", "strict"):
        raise ConfigError(f"--filter: unknown value {pipeline!r}; choose flexible or strict")
    folder = Path(folder)
    runs = collect_runs(folder)
    methods = list(dict.fromkeys(run.method for run in runs))
    if baseline is None:
        state = folder / "compare.json"
        baseline = _read_compare_state(folder).get("matrix", {}).get("baseline") if state.is_file() else None
        baseline = baseline if baseline in methods else methods[0]
    elif baseline not in methods:
        raise ConfigError(f"--baseline: {baseline!r} is not among the methods here ({', '.join(methods)})")
    rows = summarize(runs, baseline, pipeline)
    out = prepare_out(out if out is not None else folder)
    try:
        plots = write_plots(rows, runs, out)
    except MissingExtraError as err:  # the tables are the report; the figures are its extra
        logger.warning("report: no figures: %s", err)
        plots = []
    text = render_markdown(rows, runs, baseline, pipeline, command or f"gcache report {folder}",
                           unfinished_cells(folder))
    if plots:
        text += "\n" + "\n".join(f"![{p.stem}]({p.name})" for p in plots) + "\n"
    path = out / "report.md"
    atomic_write_text(path, text)
    return path, plots
