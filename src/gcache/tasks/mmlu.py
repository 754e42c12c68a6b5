"""MMLU (Hendrycks et al., 2021): four-option questions over 57 subjects.

The hub's ``cais/mmlu`` (config ``all``: test 14042 / validation 1531 / dev 285) rows are ``{"question",
"subject", "choices": [4 strings], "answer": 0-3}``. The original release is a folder of header-less CSV files,
``data/<split>/<subject>_<split>.csv`` with rows ``question, A, B, C, D, answer-letter`` (its validation folder is
called ``val``). Both are read: a JSONL / JSON / Parquet file of hub rows, one CSV file, or the ``data`` folder.

G-Designer reports MMLU on 153 questions of the validation split (``experiments/run_mmlu.py:65``); here the
full test split is the default and any ``--limit`` is named in the run's summary.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator

from gcache.tasks._base import DatasetError, Example, MultipleChoiceTask, read_records, require

__all__ = ["MMLU"]

_CSV_SPLIT = {"validation": "val"}


class MMLU(MultipleChoiceTask):
    """MMLU. Ids are ``mmlu-<split>-<index>``; ``meta["subject"]`` names the subject."""

    name = "mmlu"
    version = 2  # 2: answer instruction without a placeholder word
    hub_name = "cais/mmlu"
    hub_config = "all"
    splits = ("test", "validation", "dev", "auxiliary_train")

    def resolve_path(self, path: Path, split: str) -> Path:
        if path.is_dir():
            folder = path / _CSV_SPLIT.get(split, split)
            return folder if folder.is_dir() else path / f"{split}.jsonl"
        return path

    def read_file(self, path: Path, split: str) -> Iterator[tuple[str, dict]]:
        if path.is_dir():
            files = sorted(path.glob("*.csv"))
            if not files:
                raise DatasetError(f"{path}: no <subject>_{split}.csv files")
            return (item for file in files for item in self._read_csv(file))
        if path.suffix == ".csv":
            return self._read_csv(path)
        return read_records(path)

    @staticmethod
    def _read_csv(path: Path) -> Iterator[tuple[str, dict]]:
        subject = path.stem.rsplit("_", 1)[0] if "_" in path.stem else path.stem
        with open(path, encoding="utf-8", newline="") as f:
            for lineno, row in enumerate(csv.reader(f), start=1):
                where = f"{path}, line {lineno}"
                if len(row) != 6:
                    raise DatasetError(f"{where}: expected 6 columns (question, A, B, C, D, answer), got {len(row)}")
                letter = row[5].strip().upper()
                if letter not in ("A", "B", "C", "D"):
                    raise DatasetError(f"{where}: answer {row[5]!r} is not A, B, C or D")
                yield where, {"question": row[0], "subject": subject, "choices": row[1:5],
                              "answer": "ABCD".index(letter)}

    def parse_record(self, record: dict, index: int, split: str) -> Example:
        question = require(record, "question")
        choices = require(record, "choices", list)
        answer = require(record, "answer", (int, str))
        if isinstance(answer, str):
            answer = "ABCD".index(answer.strip().upper()) if answer.strip().upper() in "ABCD" else -1
        if len(choices) != 4:
            raise DatasetError(f"field 'choices' has {len(choices)} options, expected 4")
        return self.example("mmlu", f"mmlu-{split}-{index}", question, [str(c) for c in choices], answer,
                            subject=record.get("subject"), split=split, index=index)
