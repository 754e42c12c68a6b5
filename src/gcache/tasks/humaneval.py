"""HumanEval (Chen et al., 2021) and HumanEval+ (EvalPlus, Liu et al., 2023): 164 Python functions to complete.

Local files are the original ``HumanEval.jsonl.gz`` (or unzipped ``.jsonl``), or the hub's rows (JSONL, JSON,
Parquet): objects with ``task_id``, ``prompt``, ``canonical_solution``, ``test`` and ``entry_point``. HumanEval+
(``evalplus/humanevalplus``) has the same fields, with many more tests in ``test``.
"""

from __future__ import annotations

from pathlib import Path

from gcache.scoring.filters import defines_function
from gcache.tasks._base import Example, require
from gcache.tasks._code import CodeTask

__all__ = ["HumanEval", "HumanEvalPlus"]


class HumanEval(CodeTask):
    """HumanEval, from ``openai/openai_humaneval`` or a local file.

    ``Example.question`` is the prompt (signature + docstring), ``Example.answer`` the test code
    defining ``check(candidate)``; ``meta`` holds ``entry_point``, ``canonical_solution`` and
    ``task_id``. Ids are ``humaneval-<n>``.

    Scoring runs prompt + completion + tests + ``check(entry_point)`` in the sandbox
    (:func:`gcache.scoring.run_program`).

    Args:
        timeout_s (float): Time limit of one check, in seconds. Default is 10.
        limits (SandboxLimits | None): The other sandbox limits. Default is ``SandboxLimits()``.
    """

    name = "humaneval"
    version = 2  # 2: sandboxed; strict and flexible scores reported side by side
    answer_instruction = "Write the complete Python function in a single ```python code block."
    hub_name = "openai/openai_humaneval"

    def resolve_path(self, path: Path, split: str) -> Path:
        return path

    def parse_record(self, record: dict, index: int, split: str) -> Example:
        task_id = require(record, "task_id")
        return Example(
            id=task_id.replace("/", "-").lower().replace("humaneval", self.name),
            question=require(record, "prompt"),
            answer=require(record, "test"),
            meta={
                "task_id": task_id,
                "entry_point": require(record, "entry_point"),
                "canonical_solution": require(record, "canonical_solution"),
            },
        )

    def build_program(self, code: str, example: Example) -> str:
        """The program that checks ``code``: prompt, code, tests, ``check(entry_point)``.

        A completion that defines the entry point is appended after the prompt (whose imports
        and helpers it may use; its definition replaces the prompt's stub); otherwise it is
        taken as the continuation of the prompt's function body.
        """
        entry_point = example.meta["entry_point"]
        body = f"{example.question}\n{code}" if defines_function(code, entry_point) else example.question + code
        return f"{body}\n\n{example.answer}\n\ncheck({entry_point})\n"


class HumanEvalPlus(HumanEval):
    """HumanEval+, from ``evalplus/humanevalplus``: HumanEval's problems with EvalPlus's extra tests.

    Ids are ``humanevalplus-<n>``.
    """

    name = "humanevalplus"
    version = 1
    hub_name = "evalplus/humanevalplus"
