"""GPQA Diamond (Rein et al., 2023): 198 graduate-level, four-option science questions.

Two layouts are read:

* the one the LatentMAS reference loads, ``fingertap/GPQA-Diamond`` (``data.py``: split ``test``): rows
  ``{"question", "answer"}``, the options written inside ``question`` and ``answer`` their letter;
* the official release (``Idavidrein/gpqa``, config ``gpqa_diamond``, split ``train``; or its CSV): rows with
  ``Question``, ``Correct Answer`` and ``Incorrect Answer 1..3``. The options are put in an order fixed by a hash
  of the question (the same on every machine and run), so the gold letter is not always A.
"""

from __future__ import annotations

import csv
import hashlib
import random
import re
from pathlib import Path
from typing import Iterator

from gcache.tasks._base import DatasetError, Example, MultipleChoiceTask, read_records, require

__all__ = ["GPQADiamond"]

_INLINE_OPTION_RE = re.compile(r"^\s*\(?([A-D])[\).:]\s*(.+?)\s*$", re.MULTILINE)


class GPQADiamond(MultipleChoiceTask):
    """GPQA Diamond. Ids are ``gpqa_diamond-<split>-<index>`` (``gpqa_diamond-<Record ID>`` when there is one)."""

    name = "gpqa_diamond"
    version = 2  # 2: answer instruction without a placeholder word
    hub_name = "fingertap/GPQA-Diamond"
    splits = ("test", "train")

    def resolve_path(self, path: Path, split: str) -> Path:
        return path

    def read_file(self, path: Path, split: str) -> Iterator[tuple[str, dict]]:
        if path.suffix == ".csv":
            return self._read_csv(path)
        return read_records(path)

    @staticmethod
    def _read_csv(path: Path) -> Iterator[tuple[str, dict]]:
        with open(path, encoding="utf-8", newline="") as f:
            for lineno, row in enumerate(csv.DictReader(f), start=2):
                yield f"{path}, line {lineno}", dict(row)

    def parse_record(self, record: dict, index: int, split: str) -> Example:
        if "Correct Answer" in record:
            return self._parse_official(record, index, split)
        question = require(record, "question")
        letter = require(record, "answer").strip().strip("()").upper()
        if letter not in ("A", "B", "C", "D"):
            raise DatasetError(f"field 'answer' is not an option letter A-D: {record['answer']!r}")
        found = dict(_INLINE_OPTION_RE.findall(question))
        choices = [found.get(x, "") for x in "ABCD"]
        return Example(id=f"gpqa_diamond-{split}-{index}", question=question.strip(), answer=letter,
                       meta={"choices": choices, "split": split, "index": index})

    def _parse_official(self, record: dict, index: int, split: str) -> Example:
        question = require(record, "Question")
        correct = require(record, "Correct Answer")
        options = [correct] + [require(record, f"Incorrect Answer {i}") for i in (1, 2, 3)]
        order = list(range(4))
        random.Random(hashlib.sha256(question.encode()).hexdigest()).shuffle(order)
        choices = [options[i] for i in order]
        raw_id = record.get("Record ID") or f"{split}-{index}"
        return self.example("gpqa_diamond", f"gpqa_diamond-{raw_id}", question, choices, order.index(0),
                            split=split, index=index)
