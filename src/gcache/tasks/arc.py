"""ARC (Clark et al., 2018): grade-school science questions, Easy and Challenge sets.

The hub's ``allenai/ai2_arc`` (configs ``ARC-Easy``: test 2376, ``ARC-Challenge``: test 1172) rows are
``{"id", "question", "choices": {"text": [...], "label": [...]}, "answerKey"}``; the original release nests the
stem and choices under ``question`` (``{"stem", "choices": [{"text", "label"}]}``). Both are read. A few questions
label their options 1-4; they are mapped to A-D, as the LatentMAS reference does.
"""

from __future__ import annotations

from gcache.tasks._base import DatasetError, Example, MultipleChoiceTask, require

__all__ = ["ARCChallenge", "ARCEasy"]

_NUMERIC_LABELS = {"1": "A", "2": "B", "3": "C", "4": "D", "5": "E"}


class _ARC(MultipleChoiceTask):
    version = 2  # 2: answer instruction without a placeholder word
    hub_name = "allenai/ai2_arc"
    splits = ("train", "validation", "test")

    def parse_record(self, record: dict, index: int, split: str) -> Example:
        raw_question = require(record, "question", (str, dict))
        if isinstance(raw_question, dict):  # the original release's layout
            stem = require(raw_question, "stem")
            choices_raw = require(raw_question, "choices", list)
            texts = [require(c, "text") for c in choices_raw]
            labels = [str(require(c, "label")) for c in choices_raw]
        else:
            stem = raw_question
            choices_raw = require(record, "choices", dict)
            texts, labels = list(choices_raw.get("text", [])), [str(x) for x in choices_raw.get("label", [])]
        if not texts or len(texts) != len(labels):
            raise DatasetError("field 'choices' needs as many labels as texts")
        labels = [_NUMERIC_LABELS.get(x, x.upper()) for x in labels]
        key = _NUMERIC_LABELS.get(str(require(record, "answerKey")).strip(), str(record["answerKey"]).strip().upper())
        if key not in labels:
            raise DatasetError(f"answerKey {key!r} is not among the labels {labels}")
        if labels != list("ABCDE"[: len(labels)]):
            raise DatasetError(f"option labels are not A, B, ... in order: {labels}")
        raw_id = record.get("id", f"{split}-{index}")
        return self.example(self.name, f"{self.name}-{raw_id}", stem, texts, labels.index(key), split=split,
                            index=index)


class ARCEasy(_ARC):
    """ARC-Easy. Ids are ``arc_easy-<id>``."""

    name = "arc_easy"
    hub_config = "ARC-Easy"


class ARCChallenge(_ARC):
    """ARC-Challenge. Ids are ``arc_challenge-<id>``."""

    name = "arc_challenge"
    hub_config = "ARC-Challenge"
