"""AIME 2024 and 2025: the American Invitational Mathematics Examination, 30 problems a year, integer answers.

The LatentMAS reference loads ``HuggingFaceH4/aime_2024`` and ``yentinglin/aime_2025`` (``data.py``), each one
``train`` split of ``{"problem", "answer", ...}`` rows; local files in that layout as JSONL, JSON or Parquet.
"""

from __future__ import annotations

from gcache.scoring import normalize_number
from gcache.tasks._base import DatasetError, Example, NumberTask, require

__all__ = ["AIME2024", "AIME2025"]


class _AIME(NumberTask):
    version = 2  # 2: answer instruction without a placeholder word
    splits = ("train",)
    default_split = "train"  # the only split: all 30 problems

    def resolve_path(self, path, split):
        return path

    def parse_record(self, record: dict, index: int, split: str) -> Example:
        problem = require(record, "problem")
        raw = require(record, "answer", (str, int, float))
        gold = normalize_number(raw)
        if gold is None:
            raise DatasetError(f"field 'answer' is not a number: {raw!r}")
        raw_id = record.get("id", record.get("ID", index))
        return Example(id=f"{self.name}-{raw_id}", question=problem.strip(), answer=gold,
                       meta={"index": index, **({"url": record["url"]} if "url" in record else {})})


class AIME2024(_AIME):
    """AIME 2024 (I and II), from ``HuggingFaceH4/aime_2024``. Ids are ``aime2024-<id>``."""

    name = "aime2024"
    hub_name = "HuggingFaceH4/aime_2024"


class AIME2025(_AIME):
    """AIME 2025 (I and II), from ``yentinglin/aime_2025``. Ids are ``aime2025-<id>``."""

    name = "aime2025"
    hub_name = "yentinglin/aime_2025"
