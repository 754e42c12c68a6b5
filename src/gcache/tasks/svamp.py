"""SVAMP (Patel et al., 2021): one-step arithmetic word problems with structural variations.

Local files are the original ``SVAMP.json``: one JSON list of objects with ``ID``, ``Body``,
``Question``, ``Equation``, ``Answer`` and ``Type``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

from gcache.scoring import normalize_number
from gcache.tasks._base import DatasetError, Example, NumberTask, read_json_list, read_records, require

__all__ = ["SVAMP"]

logger = logging.getLogger(__name__)


class SVAMP(NumberTask):
    """SVAMP, from ``ChilleD/SVAMP`` (train 700 / test 300) or a local file: the original ``SVAMP.json`` (all
    1000, no splits) or the hub's rows as JSONL / Parquet (same field names).

    The question is ``Body + " " + Question`` (the hub's ``question_concat``). Ids are
    ``svamp-<ID>`` (e.g. ``svamp-chal-1``), the same whatever the split, so a problem keeps its id.
    """

    name = "svamp"
    version = 3  # 2: strict and flexible scores side by side; 3: answer instruction without a placeholder word
    hub_name = "ChilleD/SVAMP"
    splits = ("train", "test")

    def resolve_path(self, path: Path, split: str) -> Path:
        return path

    def read_file(self, path: Path, split: str) -> Iterator[tuple[str, dict]]:
        if path.suffix == ".json":
            # The original file has no splits: say so rather than hand out test problems as "train".
            if split != "test":
                logger.warning("svamp: %s has no splits; split=%r returns every problem in it", path, split)
            return read_json_list(path)
        return read_records(path)

    def parse_record(self, record: dict, index: int, split: str) -> Example:
        body = require(record, "Body")
        question = require(record, "Question")
        raw_id = require(record, "ID", (str, int))
        raw_answer = require(record, "Answer", (int, float, str))
        gold = normalize_number(raw_answer)
        if gold is None:
            raise DatasetError(f"field 'Answer' is not a number: {raw_answer!r}")
        return Example(
            id=f"svamp-{raw_id}",
            question=f"{body.strip()} {question.strip()}",
            answer=gold,
            meta={
                "equation": record.get("Equation"),
                "type": record.get("Type"),
                "split": split,
                "index": index,
            },
        )
