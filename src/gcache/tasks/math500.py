"""MATH-500 (Lightman et al., 2023): 500 problems of the MATH test set, LaTeX answers.

The hub's ``HuggingFaceH4/MATH-500`` has one ``test`` split of ``{"problem", "solution", "answer", "subject",
"level", "unique_id"}`` rows; local files in that layout as JSONL, JSON or Parquet.
"""

from __future__ import annotations

from gcache.tasks._base import Example, MathExpressionTask, require

__all__ = ["MATH500"]


class MATH500(MathExpressionTask):
    """MATH-500. Ids are ``math500-<unique_id>`` (e.g. ``math500-test/precalculus/807.json``)."""

    name = "math500"
    version = 2  # 2: answer instruction without a placeholder word
    hub_name = "HuggingFaceH4/MATH-500"

    def resolve_path(self, path, split):
        return path

    def parse_record(self, record: dict, index: int, split: str) -> Example:
        problem = require(record, "problem")
        answer = require(record, "answer")
        unique_id = record.get("unique_id") or f"{split}-{index}"
        return Example(id=f"math500-{unique_id}", question=problem.strip(), answer=answer.strip(),
                       meta={"subject": record.get("subject"), "level": record.get("level"), "index": index})
