"""G-cache from Python: load a team and answer questions, evaluate, train, compare and report.

These functions are what the ``gcache`` command runs (``gcache eval`` is :func:`evaluate`, ``gcache train`` is
:func:`train`, ``gcache compare`` is :func:`compare`, ``gcache report`` is :func:`report`): the command only parses
flags into a :class:`~gcache.config.RunConfig` and prints what they return. They are re-exported from ``gcache``
(``gcache.evaluate`` ...), lazily: ``import gcache`` loads no torch, calling one of them does.

Settings are :class:`~gcache.config.RunConfig` fields given as keywords (``latent_steps=4`` is
``--latent-steps 4``), optionally on top of a ``RunConfig`` or a mapping; a bad one raises
:class:`~gcache.config.ConfigError` naming it, before any model loads.

>>> import gcache
>>> agents = gcache.load_agents("latentmas_seq", model="tiny-random-qwen3", latent_steps=1, max_new_tokens=2,
...                             progress=False)
>>> answer = agents.answer("What is 2 + 3?")[0]
>>> answer.latent_steps > 0, answer.error
(True, None)
>>> agents.close()
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the modules behind these load torch: imported when a function runs, not with gcache
    from gcache.config import RunConfig
    from gcache.recipes.compare import CompareConfig

logger = logging.getLogger(__name__)

__all__ = ["Agents", "Answer", "Evaluation", "Training", "Report", "make_config", "load_agents", "evaluate", "train",
           "compare", "report"]

def make_config(config: RunConfig | Mapping[str, Any] | None = None, /, **settings: Any) -> RunConfig:
    """A validated :class:`~gcache.config.RunConfig`: ``config`` (a RunConfig or a mapping of its fields) with
    ``settings`` on top.

    Args:
        config (RunConfig | Mapping[str, Any] | None): the starting settings. Default is None (RunConfig's
            defaults).
        **settings: RunConfig fields, e.g. ``method="gcache"``, ``latent_steps=4`` (the flags' names with ``_``).

    Returns:
        RunConfig: a new config; ``config`` is not changed.

    Raises:
        ConfigError: an unknown setting (the valid ones are listed) or a bad value.

    >>> make_config({"method": "single"}, limit=3).limit
    3
    """
    from gcache.config import ConfigError, RunConfig

    names = {f.name for f in dataclasses.fields(RunConfig)}
    if isinstance(config, RunConfig):
        values = {f.name: getattr(config, f.name) for f in dataclasses.fields(RunConfig)}
    elif config is None:
        values = {}
    elif isinstance(config, Mapping):
        values = dict(config)
    else:
        raise ConfigError(f"config must be a RunConfig or a mapping of its settings, got {type(config).__name__}")
    values.update(settings)
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]!r}; valid ones are {', '.join(sorted(names))}")
    return RunConfig(**values)


# ---------------------------------------------------------------------------------------------------- answering
@dataclass(frozen=True)
class Answer:
    """One question's answer and its trace (the fields of its ``results.jsonl`` record).

    Attributes:
        question (str): the question asked.
        text (str | None): the answering agent's output (None when the question failed, see ``error``).
        prediction (str | None): the answer the task's primary extraction pipeline reads from ``text``.
        correct (bool | None): ``prediction`` equals the gold answer; None when no gold answer was given.
        prompt_tokens (int): prompt tokens of every agent.
        completion_tokens (int): generated tokens of every agent.
        latent_steps (int): latent thoughts taken by every latent agent together.
        seconds (float): wall time per question of its batch.
        graph (dict | None): the graph that ran (a learned method's draw: edges, roles, whom the decision node
            read); None for fixed methods.
        alone (bool | None): the learned policy chose to answer alone (the single agent's plan).
        agent_outputs (dict[str, str]): text of every agent that decoded text, by node label.
        diagnostics (dict): cut/empty/echoed answer, the answering agent's first-step stop probability, the LM
            head's top token at each latent step of each latent agent.
        error (str | None): why the question has no answer (e.g. it does not fit the context).
        record (dict): the full record, as ``gcache eval`` writes it to ``results.jsonl``.
    """

    question: str
    text: str | None
    prediction: str | None
    correct: bool | None
    prompt_tokens: int
    completion_tokens: int
    latent_steps: int
    seconds: float
    graph: dict | None
    alone: bool | None
    agent_outputs: dict[str, str]
    diagnostics: dict
    error: str | None
    record: dict = field(repr=False)

    @classmethod
    def from_record(cls, record: Mapping[str, Any], *, graded: bool = True) -> Answer:
        """The answer of a ``results.jsonl`` record (``graded=False``: no gold answer was known)."""
        return cls(question=record["question"], text=record.get("output"), prediction=record.get("prediction"),
                   correct=bool(record["correct"]) if graded else None,
                   prompt_tokens=record.get("prompt_tokens", 0), completion_tokens=record.get("completion_tokens", 0),
                   latent_steps=record.get("latent_steps", 0), seconds=record.get("seconds", 0.0),
                   graph=record.get("graph"), alone=record.get("alone"),
                   agent_outputs=dict(record.get("agent_outputs") or {}),
                   diagnostics=dict(record.get("diagnostics") or {}), error=record.get("error"), record=dict(record))


class Agents:
    """A method's team on a loaded model, answering questions given in Python.

    Built by :func:`load_agents`. Questions run exactly as ``gcache eval`` runs a dataset's
    (:meth:`gcache.recipes.eval.EvalRecipe.answer`: the same plans, the same seeded graph draws, batches of
    ``batch_size``), so the same settings give the same answers. Close it (or use ``with``) to free the model.

    Args:
        config (RunConfig): the settings (``out`` is not used).
    """

    def __init__(self, config: RunConfig) -> None:
        from gcache.recipes.eval import EvalRecipe

        self.config = dataclasses.replace(config, out=None)
        self._recipe = EvalRecipe(self.config)
        try:
            self._recipe.setup_answering()
        except BaseException:
            self._recipe.cleanup()
            raise

    @property
    def method(self) -> str:
        """The method (from the checkpoint when one was loaded)."""
        return self.config.method

    @property
    def trained(self) -> bool:
        """Whether a trained team (``checkpoint``) was loaded."""
        return self._recipe.ckpt is not None

    def answer(self, questions: str | Sequence[str], golds: Sequence[str] | None = None) -> list[Answer]:
        """Answer ``questions`` (one string or a list), in order.

        Args:
            questions (str | Sequence[str]): the questions, as the task's prompts expect them.
            golds (Sequence[str] | None): gold answers, one per question, to grade the predictions. Default is
                None (``Answer.correct`` is None).

        Returns:
            list[Answer]: one per question.

        Raises:
            ValueError: ``golds`` has another length than ``questions``.
        """
        from gcache.tasks import Example

        questions = [questions] if isinstance(questions, str) else list(questions)
        if golds is not None and len(golds) != len(questions):
            raise ValueError(f"{len(golds)} gold answers for {len(questions)} questions")
        examples = [Example(id=f"q{i}", question=q, answer=str(golds[i]) if golds is not None else "")
                    for i, q in enumerate(questions)]
        return [Answer.from_record(r, graded=golds is not None) for r in self._recipe.answer(examples)]

    def close(self) -> None:
        """Free the model (the handle cannot answer afterwards)."""
        self._recipe.cleanup()

    def __enter__(self) -> Agents:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Agents(method={self.config.method!r}, model={self.config.model!r}, "
                f"checkpoint={self.config.checkpoint!r})")


def load_agents(method: str | None = None, *, model: str | None = None, checkpoint: str | Path | None = None,
                config: RunConfig | Mapping[str, Any] | None = None, **settings: Any) -> Agents:
    """Load a method's team on a model: untrained, or the trained team of ``checkpoint``.

    Args:
        method (str | None): a method (``single``, ``latentmas_seq``, ``gcache`` ...; ``gcache methods`` lists
            them). Default: the config's (``latentmas_seq``), or the checkpoint's.
        model (str | None): a preset (``smollm2``, ``qwen3-0.6b`` ...), a hub id or a local folder. Default: the
            config's (``smollm2``).
        checkpoint (str | Path | None): a trained team (a ``gcache train`` output folder, its ``team/`` folder or
            a hub id); its method and team-shaping settings replace the given ones. Default is None.
        config (RunConfig | Mapping[str, Any] | None): settings underneath the keywords. Default is None.
        **settings: more RunConfig fields (``dataset`` picks the prompts and answer extraction, ``latent_steps``,
            ``max_new_tokens``, ``seed``, ``device`` ...).

    Returns:
        Agents: ready to :meth:`~Agents.answer`.

    Raises:
        ConfigError: a bad setting, an unknown model, a damaged checkpoint.

    >>> with load_agents("single", model="tiny-random-qwen3", max_new_tokens=2, progress=False) as agents:
    ...     [a.completion_tokens for a in agents.answer(["1 + 1?", "2 + 2?"])]
    [2, 2]
    """
    given = {k: v for k, v in (("method", method), ("model", model),
                               ("checkpoint", str(checkpoint) if checkpoint is not None else None)) if v is not None}
    return Agents(make_config(config, **settings, **given))


# ---------------------------------------------------------------------------------------------------- evaluation
@dataclass(frozen=True)
class Evaluation:
    """What :func:`evaluate` (``gcache eval``) returns.

    Attributes:
        summary (dict): ``summary.json``: accuracy (both extraction pipelines), counts, tokens, settings ...
        records (list[dict]): every question's record, as in ``results.jsonl``, in the dataset's order.
        out (Path | None): the folder holding them; None when the run went to a temporary folder (now deleted).
        main_process (bool): False on torchrun ranks other than 0 (they hold only their own share).
    """

    summary: dict
    records: list[dict] = field(repr=False)
    out: Path | None
    main_process: bool = True

    @property
    def accuracy(self) -> float:
        """The primary pipeline's accuracy over the answered questions."""
        return self.summary["accuracy"]

    @property
    def answers(self) -> list[Answer]:
        """The records as :class:`Answer` s."""
        return [Answer.from_record(r) for r in self.records]


def evaluate(config: RunConfig | Mapping[str, Any] | None = None, /, *, out: str | Path | None = None,
             **settings: Any) -> Evaluation:
    """Run a method over a benchmark: ``gcache eval`` (the same records and summary, resumable in ``out``).

    Args:
        config (RunConfig | Mapping[str, Any] | None): settings underneath the keywords. Default is None.
        out (str | Path | None): the run's folder (``results.jsonl``, ``summary.json``, ``config.json``); an
            interrupted run given the same folder and settings continues where it stopped. Default: the config's
            ``out``, else a temporary folder deleted afterwards (the records are returned all the same).
        **settings: RunConfig fields: ``method``, ``dataset``, ``data``, ``limit``, ``model``, ``checkpoint`` ...

    Returns:
        Evaluation: the summary and the records.

    Raises:
        ConfigError: a bad setting, a folder holding another run, missing data.

    >>> run = evaluate(method="single", model="tiny-random-qwen3", data="tests/assets/tiny_gsm8k.jsonl", limit=2,
    ...                max_new_tokens=2, progress=False)
    >>> run.summary["counts"]["answered"], len(run.records), run.out
    (2, 2, None)
    """
    from gcache.recipes.eval import EvalRecipe

    cfg = make_config(config, **settings, **({"out": str(out)} if out is not None else {}))
    scratch = tempfile.TemporaryDirectory(prefix="gcache-eval-") if cfg.out is None else None
    if scratch is not None:
        cfg.out = scratch.name
    try:
        recipe = EvalRecipe(cfg)
        try:
            recipe.setup()
            summary = recipe.run()
        finally:
            recipe.cleanup()  # also leaves torch.distributed's group
        order = {ex.id: i for i, ex in enumerate(recipe.examples)}
        records = sorted((r for r in recipe.store.records() if r["id"] in order), key=lambda r: order[r["id"]])
    finally:
        if scratch is not None:
            scratch.cleanup()
    return Evaluation(summary=summary, records=records, out=None if scratch is not None else Path(cfg.out),
                      main_process=recipe.is_main)


# ---------------------------------------------------------------------------------------------------- training
@dataclass(frozen=True)
class Training:
    """What :func:`train` (``gcache train``) returns.

    Attributes:
        result (dict): what ``gcache train`` prints: ``steps``, ``team``, ``checkpoint``, ``last``,
            ``convergence``.
        history (list[dict]): every step's log entry (``history.json``), resumed steps included.
        out (Path): the run's folder.
        team (Path): the trained team's folder (``OUT/team``): give it as ``checkpoint`` to :func:`load_agents`
            or :func:`evaluate`.
        main_process (bool): False on torchrun ranks other than 0.
    """

    result: dict
    history: list[dict] = field(repr=False)
    out: Path
    team: Path
    main_process: bool = True


def train(config: RunConfig | Mapping[str, Any] | None = None, /, *, out: str | Path | None = None,
          on_step: Callable[[dict], None] | None = None, **settings: Any) -> Training:
    """Train a graph method's topology model and CacheFuser: ``gcache train`` (resumable in ``out``).

    Defaults differ from :func:`evaluate`'s as the command's do: ``method="gcache"``, ``split="train"``.

    Args:
        config (RunConfig | Mapping[str, Any] | None): settings underneath the keywords. Default is None.
        out (str | Path | None): the run's folder (required here or in the config): the team, the resumable
            state, ``history.json``. Rerunning with the same folder and settings continues the training.
        on_step (Callable[[dict], None] | None): called with each step's log entry (step, reward, accuracy,
            losses, seconds ...) once the step is saved. Default is None.
        **settings: RunConfig fields: ``data``, ``limit``, ``steps``, ``batch_size``, ``model`` ...

    Returns:
        Training: the result, the history and where the team is.

    Raises:
        ConfigError: a bad setting, no ``out``, a folder holding another run.

    >>> import tempfile
    >>> steps = []
    >>> run = train(method="gdesigner", model="tiny-random-qwen3", data="tests/assets/tiny_gsm8k_train.jsonl",
    ...             steps=2, batch_size=1, agents=2, samples_per_question=2, max_new_tokens=2, latent_steps=1,
    ...             tensorboard=False, progress=False, out=tempfile.mkdtemp(), on_step=steps.append)
    >>> [s["step"] for s in steps] == [h["step"] for h in run.history], run.result["steps"]
    (True, 2)
    """
    from gcache.config import RunConfig
    from gcache.recipes.train import TrainRecipe

    if not isinstance(config, RunConfig):  # a RunConfig is complete; a mapping or keywords start from train's defaults
        config = {"method": "gcache", "split": "train", **(config or {})}
    cfg = make_config(config, **settings, **({"out": str(out)} if out is not None else {}))
    recipe = TrainRecipe(cfg)
    try:
        recipe.setup()
        result = recipe.train(on_step=on_step)
    finally:
        recipe.cleanup()  # also leaves torch.distributed's group
    return Training(result=result, history=list(recipe.history), out=Path(cfg.out), team=Path(result["team"]),
                    main_process=recipe.dist.world.is_main)


# ---------------------------------------------------------------------------------------------------- compare, report
def compare(matrix: CompareConfig | Mapping[str, Any] | str | Path, out: str | Path, **overrides: Any) -> dict:
    """Run a matrix of methods x tasks x seeds, each cell a :func:`evaluate` run: ``gcache compare``.

    Args:
        matrix (CompareConfig | Mapping[str, Any] | str | Path): a :class:`~gcache.recipes.compare.CompareConfig`,
            a YAML file, or its mapping (``methods``, ``tasks``, ``seeds``, ``settings``, ``baseline``).
        out (str | Path): the folder: ``OUT/<task>/<method>/seed<seed>/`` per cell and ``compare.json``; a rerun
            resumes every cell.
        **overrides: RunConfig settings of every cell, above the matrix's (``limit=8``, ``model="smollm2"`` ...).

    Returns:
        dict: ``compare.json``: the matrix and each cell's status, accuracy and questions answered.

    Raises:
        ConfigError: a bad matrix or cell setting (every cell is validated before the first runs).
    """
    from gcache.recipes.compare import CompareConfig, CompareRecipe

    if isinstance(matrix, CompareConfig):
        if overrides:
            matrix = dataclasses.replace(matrix, overrides={**matrix.overrides, **overrides})
    elif isinstance(matrix, Mapping):
        matrix = CompareConfig.from_dict(matrix, overrides)
    else:
        matrix = CompareConfig.from_yaml(matrix, overrides)
    recipe = CompareRecipe(matrix, out)
    try:
        recipe.setup()
        return recipe.run()
    finally:
        recipe.cleanup()


@dataclass(frozen=True)
class Report:
    """What :func:`report` (``gcache report``) wrote.

    Attributes:
        path (Path): ``report.md``.
        markdown (str): its text: per method accuracy with intervals, tokens, time, paired tests against the
            baseline.
        plots (list[Path]): the PNG figures (none without the ``plot`` extra).
    """

    path: Path
    markdown: str = field(repr=False)
    plots: list[Path]


def report(folder: str | Path, *, baseline: str | None = None, pipeline: str = "flexible",
           out: str | Path | None = None, command: str | None = None) -> Report:
    """Tables and plots from a :func:`compare` folder or a folder of :func:`evaluate` runs: ``gcache report``.

    Args:
        folder (str | Path): the runs.
        baseline (str | None): method to pair the others against. Default: compare's baseline, else the first.
        pipeline (str): extraction pipeline reported first, ``flexible`` or ``strict``. Default is ``flexible``.
        out (str | Path | None): where ``report.md`` and the plots go. Default: ``folder``.
        command (str | None): how the report was made, quoted in it. Default: ``gcache report FOLDER``.

    Returns:
        Report: the file, its text and the plots.

    Raises:
        ConfigError: no runs, an unknown baseline or pipeline.
    """
    from gcache.recipes.report import write_report

    path, plots = write_report(folder, baseline=baseline, pipeline=pipeline, out=out, command=command or "")
    return Report(path=path, markdown=path.read_text(encoding="utf-8"), plots=list(plots))
