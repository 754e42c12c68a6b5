"""AQuA-RAT (Ling et al., 2017): algebra word problems with five options A-E.

The hub's ``deepmind/aqua_rat`` (config ``raw``: train 97467 / validation 254 / test 254) and the original
release share one layout: ``{"question", "options": ["A)21", "B)21.5", ...], "rationale", "correct": "A"}``.
"""

from __future__ import annotations

import re

from gcache.tasks._base import DatasetError, Example, MultipleChoiceTask, require

__all__ = ["AQuA"]

_OPTION_RE = re.compile(r"^\s*\(?([A-E])\s*\)\s*(.*)$", re.DOTALL)


class AQuA(MultipleChoiceTask):
    """AQuA-RAT. Ids are ``aqua-<split>-<index>``. A math task answered with a letter (G-Designer's AQuA)."""

    name = "aqua"
    version = 2  # 2: answer instruction without a placeholder word
    domain = "math"
    prompt_set = "gsm8k"
    hub_name = "deepmind/aqua_rat"
    hub_config = "raw"
    splits = ("train", "validation", "test")

    def parse_record(self, record: dict, index: int, split: str) -> Example:
        question = require(record, "question")
        options = require(record, "options", list)
        correct = require(record, "correct").strip().upper()
        choices = []
        for i, option in enumerate(options):
            m = _OPTION_RE.match(str(option))
            if m is None or m.group(1) != "ABCDE"[i]:
                raise DatasetError(f"option {i} is not written 'X)text' in order: {option!r}")
            choices.append(m.group(2))
        if correct not in "ABCDE"[: len(choices)] or not correct:
            raise DatasetError(f"field 'correct' is not one of the options: {correct!r}")
        return self.example("aqua", f"aqua-{split}-{index}", question, choices, "ABCDE".index(correct),
                            rationale=record.get("rationale"), split=split, index=index)
