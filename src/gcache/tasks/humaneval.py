"""HumanEval (Chen et al., 2021): 164 Python functions to complete, checked by unit tests.

Local files are the original ``HumanEval.jsonl.gz`` (or unzipped ``.jsonl``): objects with
``task_id``, ``prompt``, ``canonical_solution``, ``test`` and ``entry_point``.
"""

from __future__ import annotations

import re

from gcache.scoring import extract_code, run_program
from gcache.tasks._base import Example, Task, require

__all__ = ["HumanEval"]


class HumanEval(Task):
    """HumanEval, from ``openai/openai_humaneval`` or a local ``.jsonl``/``.jsonl.gz`` file.

    ``Example.question`` is the prompt (signature + docstring), ``Example.answer`` the test code
    defining ``check(candidate)``; ``meta`` holds ``entry_point``, ``canonical_solution`` and
    ``task_id``. Ids are ``humaneval-<n>``.

    Scoring runs prompt + completion + tests + ``check(entry_point)`` in a separate
    ``python -I`` process (see :func:`gcache.scoring.run_program`) — model-written code is
    executed, isolated by process but not sandboxed.

    Args:
        timeout_s (float): Time limit of one check, in seconds. Default is 10.
    """

    name = "humaneval"
    version = 1
    domain = "code"
    answer_instruction = "Write the complete Python function in a single ```python code block."
    metrics = ("pass@1",)
    hub_name = "openai/openai_humaneval"
    splits = ("test",)

    def __init__(self, timeout_s: float = 10.0) -> None:
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.timeout_s = timeout_s

    def parse_record(self, record: dict, index: int, split: str) -> Example:
        task_id = require(record, "task_id")
        return Example(
            id=task_id.replace("/", "-").lower(),
            question=require(record, "prompt"),
            answer=require(record, "test"),
            meta={
                "task_id": task_id,
                "entry_point": require(record, "entry_point"),
                "canonical_solution": require(record, "canonical_solution"),
            },
        )

    @staticmethod
    def build_program(code: str, example: Example) -> str:
        """The program that checks ``code``: prompt, code, tests, ``check(entry_point)``.

        A completion that defines the entry point is appended after the prompt (whose imports
        and helpers it may use; its definition replaces the prompt's stub); otherwise it is
        taken as the continuation of the prompt's function body.
        """
        entry_point = example.meta["entry_point"]
        defines = re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", code, re.MULTILINE)
        body = f"{example.question}\n{code}" if defines else example.question + code
        return f"{body}\n\n{example.answer}\n\ncheck({entry_point})\n"

    def score(self, completion_text: str, example: Example) -> dict:
        """Run the tests on the completion's code.

        Returns:
            dict: ``{"prediction": code or None, "correct": bool, "status": "passed" | "failed" |
            "timeout" | "empty"}``.
        """
        code = extract_code(completion_text or "", example.meta["entry_point"])
        if not code.strip():
            return {"prediction": None, "correct": False, "status": "empty"}
        result = run_program(self.build_program(code, example), timeout_s=self.timeout_s)
        return {"prediction": code, "correct": result.passed, "status": result.status}
