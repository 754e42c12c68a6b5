"""MultiArith (Roy & Roth, 2015): multi-step arithmetic word problems, one number each.

The hub's ``ChilleD/MultiArith`` rows are ``{"question", "final_ans"}`` (train 420 / test 180); local files in that
layout as JSONL, JSON or Parquet, or a folder holding ``<split>.jsonl``.
"""

from __future__ import annotations

from gcache.scoring import normalize_number
from gcache.tasks._base import DatasetError, Example, NumberTask, require

__all__ = ["MultiArith"]


class MultiArith(NumberTask):
    """MultiArith. Ids are ``multiarith-<split>-<index>``."""

    name = "multiarith"
    version = 2  # 2: answer instruction without a placeholder word
    hub_name = "ChilleD/MultiArith"
    splits = ("train", "test")

    def parse_record(self, record: dict, index: int, split: str) -> Example:
        question = require(record, "question")
        raw = require(record, "final_ans", (str, int, float))
        gold = normalize_number(raw)
        if gold is None:
            raise DatasetError(f"field 'final_ans' is not a number: {raw!r}")
        return Example(id=f"multiarith-{split}-{index}", question=question.strip(), answer=gold,
                       meta={"split": split, "index": index})
