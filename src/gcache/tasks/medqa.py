"""MedQA-USMLE (Jin et al., 2021): four-option medical licensing questions.

Two layouts are read:

* the hub's ``GBaker/MedQA-USMLE-4-options`` (train 10178 / test 1273) and the original release's JSONL:
  ``{"question", "answer", "options": {"A": ..., "D": ...}, "answer_idx": "C", "meta_info"}``;
* the 300-question file the LatentMAS reference ships (``data/medqa.json``, from AgentFlow): a JSON list of
  ``{"query" or "question", "options": ["A. ...", ...], "answer": <option text>}``.
"""

from __future__ import annotations

import re

from gcache.tasks._base import DatasetError, Example, MultipleChoiceTask, require

__all__ = ["MedQA"]

_PREFIX_RE = re.compile(r"^\s*\(?[A-E][\).:]\s*")


class MedQA(MultipleChoiceTask):
    """MedQA. Ids are ``medqa-<split>-<index>``."""

    name = "medqa"
    version = 2  # 2: answer instruction without a placeholder word
    hub_name = "GBaker/MedQA-USMLE-4-options"
    splits = ("train", "test")

    def parse_record(self, record: dict, index: int, split: str) -> Example:
        options = require(record, "options", (dict, list))
        if isinstance(options, dict):
            letters = sorted(options)
            choices = [str(options[x]) for x in letters]
            gold = require(record, "answer_idx").strip().upper()
            if gold not in letters:
                raise DatasetError(f"answer_idx {gold!r} is not among the options {letters}")
            stem = require(record, "question")
            return self.example("medqa", f"medqa-{split}-{index}", stem, choices, letters.index(gold), split=split,
                                index=index, meta_info=record.get("meta_info"))
        choices = [_PREFIX_RE.sub("", str(o)) for o in options]
        answer = require(record, "answer", (str, int)).__str__().strip()
        hits = [i for i, c in enumerate(choices) if c.strip() == answer] or \
               [i for i, c in enumerate(choices) if answer and answer in c]
        if len(hits) != 1:
            raise DatasetError(f"answer {answer!r} matches {len(hits)} options, expected one")
        stem = record.get("query") or require(record, "question")
        stem = stem.split("\nA. ")[0] if "\nA. " in stem else stem  # the file repeats the options in the text
        return self.example("medqa", f"medqa-{split}-{index}", stem, choices, hits[0], split=split, index=index)
