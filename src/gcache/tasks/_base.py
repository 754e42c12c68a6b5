"""Task and Example types, the loading machinery and the scoring every task shares.

A task is declared once (as lm-eval declares its YAML): where its data comes from (hub name, config and splits
for users; local files in the hub's layout or the original release's for tests and offline use), how a record
becomes an :class:`Example` (:meth:`Task.parse_record`), the agents' prompt set, the answer instruction, the
answer kind (which fixes the ``strict`` and ``flexible`` extraction pipelines of :mod:`gcache.scoring.filters`),
how an answer is compared with the gold one, the metrics and a version. Subclasses set class attributes and
implement :meth:`Task.parse_record`; the answer-kind bases (:class:`NumberTask`, :class:`MultipleChoiceTask`,
:class:`MathExpressionTask`, :class:`CodeTask`) bring the comparison.
"""

from __future__ import annotations

import gzip
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator

from gcache.scoring import PIPELINES, letters_match, math_equal, numbers_match

__all__ = ["DatasetError", "Example", "MathExpressionTask", "MathTask", "MultipleChoiceTask", "NumberTask", "Task",
           "format_choices", "read_records"]

logger = logging.getLogger(__name__)


class DatasetError(ValueError):
    """A dataset file or row is malformed; the message says where (file and 1-based line) and what."""


@dataclass(frozen=True)
class Example:
    """One benchmark question.

    Args:
        id (str): Stable id, unique within a task and split, e.g. ``"gsm8k-test-0"``.
        question (str): Text shown to the agents (for HumanEval, the function prompt).
        answer (str): Gold answer: a canonical number for math (``"18"``); for HumanEval the
            test code that defines ``check(candidate)``.
        meta (dict): Everything else (full solution, entry point, source row, ...).
    """

    id: str
    question: str
    answer: str
    meta: dict = field(default_factory=dict)


def _check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be None or an int >= 1, got {limit!r}")


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _decode(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{where}: not UTF-8 text (byte {raw[e.start]:#04x} at column {e.start + 1}); "
                           "convert the file to UTF-8") from None


def read_jsonl(path: Path) -> Iterator[tuple[str, dict]]:
    """Yield ``(location, record)`` for each non-blank line of a ``.jsonl`` or ``.jsonl.gz`` file.

    Raises:
        DatasetError: On a line that is not UTF-8, not JSON or not a JSON object (names file and line).
    """
    with _open_binary(path) as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}, line {lineno}"
            line = _decode(raw, where)
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from e
            if not isinstance(record, dict):
                raise DatasetError(f"{where}: expected a JSON object, got {type(record).__name__}")
            yield where, record


def read_json_list(path: Path) -> Iterator[tuple[str, dict]]:
    """Yield ``(location, record)`` for each object of a JSON file holding one list.

    Raises:
        DatasetError: If the file is not valid JSON (names the line) or not a list of objects.
    """
    with _open_binary(path) as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise DatasetError(f"{path}, line {line}: not UTF-8 text (byte {raw[e.start]:#04x}); convert the file to "
                           "UTF-8") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}, line {e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from e
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected a JSON list of objects, got {type(data).__name__}")
    for i, record in enumerate(data):
        where = f"{path}, item {i}"
        if not isinstance(record, dict):
            raise DatasetError(f"{where}: expected a JSON object, got {type(record).__name__}")
        yield where, record


def read_parquet(path: Path) -> Iterator[tuple[str, dict]]:
    """Yield ``(location, record)`` for each row of a Parquet file (what the hub stores)."""
    import pyarrow.parquet as pq  # lazy: only Parquet users need it

    for i, record in enumerate(pq.read_table(path).to_pylist()):
        yield f"{path}, row {i}", record


def read_records(path: Path) -> Iterator[tuple[str, dict]]:
    """Records of a local file in any layout the hub or an original release uses, by suffix.

    ``.jsonl`` / ``.jsonl.gz``: one object per line; ``.json`` / ``.json.gz``: a list of objects (or JSON lines);
    ``.parquet``: rows.

    Raises:
        DatasetError: On an unsupported suffix or a malformed file (names the file and line).
    """
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".jsonl"):
        return read_jsonl(path)
    if name.endswith(".json"):
        with _open_binary(path) as f:
            head = f.read(4096).lstrip()
        return read_json_list(path) if head.startswith(b"[") else read_jsonl(path)
    if name.endswith(".parquet"):
        return read_parquet(path)
    raise DatasetError(f"{path}: unsupported file type; use .jsonl, .json or .parquet (optionally .gz)")


def format_choices(question: str, choices: list[str], letters: str = "ABCDEFGHIJ") -> str:
    """A multiple-choice question as the agents see it: the stem, then one ``A. option`` line per option."""
    lines = [f"{letter}. {choice.strip()}" for letter, choice in zip(letters, choices)]
    return question.strip() + "\n\n" + "\n".join(lines)


def require(record: dict, name: str, kind: type | tuple[type, ...] = str) -> Any:
    """``record[name]``, checked to be present and of type ``kind``.

    Raises:
        DatasetError: Naming the missing or mistyped field (the caller adds the location).
    """
    if name not in record:
        raise DatasetError(f"missing field {name!r} (has {sorted(record)})")
    value = record[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DatasetError(f"field {name!r} has type {type(value).__name__}")
    return value


class Task:
    """Base class of benchmarks: declare the class attributes, implement :meth:`parse_record`.

    Bump ``version`` whenever parsing, prompts or scoring change, so results stay comparable.

    Attributes:
        name (str): Registry name, e.g. ``"gsm8k"``.
        version (int): Scoring/prompt version.
        domain (str): ``"math"``, ``"knowledge"`` or ``"code"``.
        answer_kind (str): Key of :data:`gcache.scoring.PIPELINES`: ``number``, ``letter``, ``math`` or ``code``.
        answer_instruction (str): Model-agnostic instruction appended to the answering agent's prompt.
        prompt_set (str): Built-in prompt set of the graph methods' agents (:mod:`gcache.agents.roles`).
        metrics (tuple[str, ...]): Names in :mod:`gcache.scoring.metrics`, reported per pipeline.
        hub_name (str): Hugging Face dataset used when no path is given.
        hub_config (str | None): Its config name.
        splits (tuple[str, ...]): Valid splits.
        default_split (str): Split used when none is given (the one the anchors report).
        primary_filter (str): The pipeline behind ``correct`` / ``accuracy`` (the other is reported beside it).
    """

    name: ClassVar[str]
    version: ClassVar[int]
    domain: ClassVar[str]
    answer_kind: ClassVar[str]
    answer_instruction: ClassVar[str]
    prompt_set: ClassVar[str]
    metrics: ClassVar[tuple[str, ...]] = ("exact_match",)
    hub_name: ClassVar[str]
    hub_config: ClassVar[str | None] = None
    splits: ClassVar[tuple[str, ...]] = ("test",)
    default_split: ClassVar[str] = "test"
    primary_filter: ClassVar[str] = "flexible"

    @property
    def filters(self):
        """``{"strict": FilterPipeline, "flexible": FilterPipeline}`` of this task's answer kind."""
        return PIPELINES[self.answer_kind]

    # ------------------------------------------------------------------ loading
    def load(self, path: str | Path | None = None, split: str | None = None, limit: int | None = None) -> list[Example]:
        """Load examples from a local file, or from the Hugging Face hub when ``path`` is None.

        Args:
            path (str | Path | None): Local dataset file or folder (see the subclass). None downloads
                ``hub_name`` with ``datasets.load_dataset``. Default is None.
            split (str | None): One of ``splits``. Default is None (``default_split``).
            limit (int | None): Keep only the first ``limit`` examples. Default is None (the full split).

        Returns:
            list[Example]: In file order.

        Raises:
            ValueError: On a bad ``split`` or ``limit``.
            FileNotFoundError: If ``path`` does not exist.
            DatasetError: On a malformed record (names file and line) or an empty dataset.
        """
        _check_limit(limit)
        split = split or self.default_split
        if split not in self.splits:
            raise ValueError(f"{self.name}: unknown split {split!r}; valid: {list(self.splits)}")
        if path is None:
            source, records = f"hf://{self.hub_name}[{split}]", self._hub_records(split)
        else:
            file = self.resolve_path(Path(path), split)
            if not file.exists():
                raise FileNotFoundError(f"{self.name}: dataset file not found: {file}")
            source, records = str(file), self.read_file(file, split)
        examples: list[Example] = []
        for where, record in records:
            try:
                examples.append(self.parse_record(record, index=len(examples), split=split))
            except DatasetError as e:
                raise DatasetError(f"{where}: {e}") from e
            if limit is not None and len(examples) >= limit:
                break  # before reading further lines: a limit-ed load never parses the rest
        if not examples:
            raise DatasetError(f"no examples in {source}")
        logger.info("%s: loaded %d %s examples from %s", self.name, len(examples), split, source)
        return examples

    def resolve_path(self, path: Path, split: str) -> Path:
        """Map the user's ``path`` to the file to read. Default: a folder holds ``<split>.jsonl``."""
        return path / f"{split}.jsonl" if path.is_dir() else path

    def read_file(self, path: Path, split: str) -> Iterator[tuple[str, dict]]:
        """Yield ``(location, record)`` from a local file. Default: :func:`read_records` (JSONL, JSON, Parquet)."""
        return read_records(path)

    def _hub_records(self, split: str) -> Iterator[tuple[str, dict]]:
        import datasets  # lazy: only users loading from the hub need it

        try:
            rows = datasets.load_dataset(self.hub_name, self.hub_config, split=split)
        except Exception as e:  # noqa: BLE001 - offline, unknown name, network: one line for the user either way
            raise DatasetError(f"cannot load {self.hub_name} from the Hugging Face hub ({type(e).__name__}: "
                               f"{str(e).splitlines()[0] if str(e) else ''}); give a local file with --data") from None
        for i, row in enumerate(rows):
            yield f"hf://{self.hub_name}[{split}], row {i}", dict(row)

    def parse_record(self, record: dict, index: int, split: str) -> Example:
        """Build an :class:`Example` from one raw record.

        Args:
            record (dict): The raw record.
            index (int): 0-based position among the examples loaded so far.
            split (str): The split being loaded.

        Raises:
            DatasetError: On a missing or malformed field.
        """
        raise NotImplementedError

    # ------------------------------------------------------------------ scoring
    def extract(self, completion_text: str | None, example: Example | None = None,
                pipeline: str = "flexible") -> str | None:
        """The answer the ``pipeline`` (``strict`` / ``flexible``) finds in ``completion_text``."""
        return self.filters[pipeline](completion_text, example)

    def is_correct(self, prediction: str | None, example: Example) -> bool:
        """Whether an extracted answer is the gold one."""
        raise NotImplementedError

    def score(self, completion_text: str | None, example: Example) -> dict:
        """Score one completion under both pipelines.

        Returns:
            dict: ``{"prediction", "correct", "scores": {"strict": {"prediction", "correct"}, "flexible": {...}}}``;
            the top-level ``prediction`` / ``correct`` are ``primary_filter``'s.
        """
        scores = {}
        for name, pipeline in self.filters.items():
            prediction = pipeline(completion_text, example)
            scores[name] = {"prediction": prediction, "correct": self.is_correct(prediction, example)}
        primary = scores[self.primary_filter]
        return {"prediction": primary["prediction"], "correct": primary["correct"], "scores": scores}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, version={self.version}, domain={self.domain!r})"


class NumberTask(Task):
    """A task whose gold answer is one number (GSM8K, SVAMP, MultiArith, AIME)."""

    domain = "math"
    answer_kind = "number"
    # No placeholder word (here and in the other answer kinds): a small judge copied "\\boxed{NUMBER}" verbatim
    # as its answer.
    answer_instruction = "Write the final answer, a single number, inside \\boxed{} at the very end."
    prompt_set = "gsm8k"

    def is_correct(self, prediction: str | None, example: Example) -> bool:
        return numbers_match(prediction, example.answer)


MathTask = NumberTask  # the name earlier versions used


class MultipleChoiceTask(Task):
    """A task whose gold answer is an option letter; ``meta["choices"]`` holds the option texts in order."""

    domain = "knowledge"
    answer_kind = "letter"
    answer_instruction = "Write the letter of the correct option inside \\boxed{} at the very end."
    prompt_set = "mmlu"

    def is_correct(self, prediction: str | None, example: Example) -> bool:
        return letters_match(prediction, example.answer)

    @staticmethod
    def example(task: str, id_: str, stem: str, choices: list[str], gold_index: int, **meta: Any) -> Example:
        """An :class:`Example` with the options listed under the stem and the gold letter."""
        if not 0 <= gold_index < len(choices):
            raise DatasetError(f"gold option {gold_index} out of range for {len(choices)} options")
        return Example(id=id_, question=format_choices(stem, choices), answer="ABCDEFGHIJ"[gold_index],
                       meta={"choices": [c.strip() for c in choices], **meta})


class MathExpressionTask(Task):
    """A task whose gold answer is a LaTeX expression (MATH-500), compared after normalisation."""

    domain = "math"
    answer_kind = "math"
    answer_instruction = "Write the final answer, in simplest form, inside \\boxed{} at the very end."
    prompt_set = "gsm8k"

    def is_correct(self, prediction: str | None, example: Example) -> bool:
        return math_equal(prediction, example.answer)
