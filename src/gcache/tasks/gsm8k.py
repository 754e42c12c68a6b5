"""GSM8K (Cobbe et al., 2021): grade-school math word problems with one integer answer.

Local files are the hub's JSONL: one ``{"question", "answer"}`` object per line, the gold number
after ``####`` at the end of ``answer``.
"""

from __future__ import annotations

from gcache.scoring import normalize_number
from gcache.tasks._base import DatasetError, Example, NumberTask, require

__all__ = ["GSM8K"]


class GSM8K(NumberTask):
    """GSM8K, from ``openai/gsm8k`` (config ``main``: train 7473 / test 1319) or a local JSONL file.

    ``path`` may be the JSONL file itself or a directory holding ``<split>.jsonl``.
    Example ids are ``gsm8k-<split>-<index>`` (0-based, file order).

    >>> examples = GSM8K().load("../shared/data/gsm8k", split="test", limit=1)  # doctest: +SKIP
    >>> examples[0].id, examples[0].answer  # doctest: +SKIP
    ('gsm8k-test-0', '18')
    """

    name = "gsm8k"
    version = 3  # 2: strict and flexible scores side by side; 3: answer instruction without a placeholder word
    hub_name = "openai/gsm8k"
    hub_config = "main"
    splits = ("train", "test")

    def parse_record(self, record: dict, index: int, split: str) -> Example:
        question = require(record, "question")
        solution = require(record, "answer")
        if "####" not in solution:
            raise DatasetError("field 'answer' has no '####' before the gold number")
        rationale, _, gold_text = solution.rpartition("####")
        gold = normalize_number(gold_text)
        if gold is None:
            raise DatasetError(f"gold answer after '####' is not a number: {gold_text.strip()!r}")
        return Example(
            id=f"gsm8k-{split}-{index}",
            question=question.strip(),
            answer=gold,
            meta={"solution": rationale.strip(), "split": split, "index": index},
        )
