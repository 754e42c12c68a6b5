"""Task and Example types, and the loading machinery shared by every task.

A task turns records (lines of a local JSONL/JSON file, or rows of a Hugging Face hub dataset)
into :class:`Example` objects and scores a model's completion against one. Subclasses only
declare their metadata and implement :meth:`Task.parse_record` (and :meth:`Task.score`).
"""

from __future__ import annotations

import gzip
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator

from gcache.scoring import extract_answer, numbers_match

__all__ = ["DatasetError", "Example", "MathTask", "Task"]

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


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def read_jsonl(path: Path) -> Iterator[tuple[str, dict]]:
    """Yield ``(location, record)`` for each non-blank line of a ``.jsonl`` or ``.jsonl.gz`` file.

    Raises:
        DatasetError: On a line that is not JSON or not a JSON object (names file and line).
    """
    with _open_text(path) as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}, line {lineno}"
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
    with _open_text(path) as f:
        text = f.read()
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
    """Base class of benchmarks.

    Subclasses set the class attributes and implement :meth:`parse_record` and :meth:`score`.
    Bump ``version`` whenever parsing, prompts or scoring change, so results stay comparable.

    Attributes:
        name (str): Registry name, e.g. ``"gsm8k"``.
        version (int): Scoring/prompt version.
        domain (str): ``"math"`` or ``"code"``.
        answer_instruction (str): Model-agnostic instruction appended to prompts.
        metrics (tuple[str, ...]): Names in :mod:`gcache.scoring.metrics`.
        hub_name (str): Hugging Face dataset used when no path is given.
        hub_config (str | None): Its config name.
        splits (tuple[str, ...]): Valid splits.
    """

    name: ClassVar[str]
    version: ClassVar[int]
    domain: ClassVar[str]
    answer_instruction: ClassVar[str]
    metrics: ClassVar[tuple[str, ...]]
    hub_name: ClassVar[str]
    hub_config: ClassVar[str | None] = None
    splits: ClassVar[tuple[str, ...]] = ("test",)

    def load(self, path: str | Path | None = None, split: str = "test", limit: int | None = None) -> list[Example]:
        """Load examples from a local file, or from the Hugging Face hub when ``path`` is None.

        Args:
            path (str | Path | None): Local dataset file (see the subclass). None downloads
                ``hub_name`` with ``datasets.load_dataset``. Default is None.
            split (str): One of ``splits``. Default is ``"test"``.
            limit (int | None): Keep only the first ``limit`` examples. Default is None (all).

        Returns:
            list[Example]: In file order.

        Raises:
            ValueError: On a bad ``split`` or ``limit``.
            FileNotFoundError: If ``path`` does not exist.
            DatasetError: On a malformed record (names file and line) or an empty dataset.
        """
        _check_limit(limit)
        if split not in self.splits:
            raise ValueError(f"{self.name}: unknown split {split!r}; valid: {list(self.splits)}")
        if path is None:
            source, records = f"hf://{self.hub_name}[{split}]", self._hub_records(split)
        else:
            file = self.resolve_path(Path(path), split)
            if not file.is_file():
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
        """Map the user's ``path`` to the file to read (a directory may hold one file per split)."""
        return path

    def read_file(self, path: Path, split: str) -> Iterator[tuple[str, dict]]:
        """Yield ``(location, record)`` from a local file. Default: JSONL (optionally gzipped)."""
        return read_jsonl(path)

    def _hub_records(self, split: str) -> Iterator[tuple[str, dict]]:
        import datasets  # lazy: only users loading from the hub need it

        rows = datasets.load_dataset(self.hub_name, self.hub_config, split=split)
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

    def score(self, completion_text: str, example: Example) -> dict:
        """Score one completion.

        Returns:
            dict: At least ``{"prediction": str | None, "correct": bool}``.
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, version={self.version}, domain={self.domain!r})"


class MathTask(Task):
    """A task whose gold answer is one number, scored by extract-then-compare."""

    domain = "math"
    answer_instruction = "End your response with the final answer as \\boxed{NUMBER}."
    metrics = ("exact_match",)

    def score(self, completion_text: str, example: Example) -> dict:
        """Extract a number (strict, then flexible) and compare it with the gold number.

        Returns:
            dict: ``{"prediction": canonical number or None, "correct": bool}``.
        """
        prediction = extract_answer(completion_text, kind="number")
        return {"prediction": prediction, "correct": numbers_match(prediction, example.answer)}
