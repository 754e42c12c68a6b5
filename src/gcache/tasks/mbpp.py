"""MBPP (Austin et al., 2021) and MBPP+ (EvalPlus): short Python functions from a one-line description.

* MBPP, ``google-research-datasets/mbpp`` (config ``full``: train 374 / validation 90 / test 500 / prompt 10):
  ``{"task_id", "text", "code", "test_list", "test_setup_code", "challenge_test_list"}`` (the ``sanitized``
  config names the description ``prompt``). The original ``mbpp.jsonl`` holds all 974 problems: a split is the
  task-id range the paper fixes (test 11-510, validation 511-600, train 601-974, prompt 1-10).
* MBPP+, ``evalplus/mbppplus`` (test 378): ``{"task_id", "code", "prompt", "test_imports", "test_list",
  "test"}``, ``test`` being EvalPlus's fuller test script.

The question is the description and three example asserts (the paper's prompt, and the LatentMAS reference's);
the function's name is the one the reference code defines and the tests call.
"""

from __future__ import annotations

import re
from pathlib import Path

from gcache.tasks._base import DatasetError, Example, require
from gcache.tasks._code import CodeTask

__all__ = ["MBPP", "MBPPPlus"]

_SPLIT_IDS = {"prompt": range(1, 11), "test": range(11, 511), "validation": range(511, 601),
              "train": range(601, 975)}
_DEF_RE = re.compile(r"^\s*def\s+([A-Za-z_]\w*)\s*\(", re.MULTILINE)


def entry_point(code: str, tests: list[str]) -> str:
    """The function of ``code`` that ``tests`` call (the first defined one that a test names).

    Raises:
        DatasetError: If the tests call none of the functions ``code`` defines.
    """
    defined = _DEF_RE.findall(code)
    joined = "\n".join(tests)
    for name in defined:
        if re.search(rf"\b{re.escape(name)}\s*\(", joined):
            return name
    raise DatasetError(f"the tests call none of the functions the reference code defines ({defined})")


def question_text(description: str, tests: list[str]) -> str:
    return f"{description.strip()}\nYour code should pass these tests:\n\n" + "\n".join(tests[:3])


class MBPP(CodeTask):
    """MBPP. Ids are ``mbpp-<task_id>``."""

    name = "mbpp"
    version = 1
    answer_instruction = "Write the Python function in a single ```python code block."
    hub_name = "google-research-datasets/mbpp"
    hub_config = "full"
    splits = ("test", "train", "validation", "prompt")

    def resolve_path(self, path: Path, split: str) -> Path:
        return path

    def read_file(self, path: Path, split: str):
        ids = _SPLIT_IDS[split]
        for where, record in super().read_file(path, split):
            if record.get("task_id") in ids:  # the original file holds every split
                yield where, record

    def parse_record(self, record: dict, index: int, split: str) -> Example:
        task_id = require(record, "task_id", (int, str))
        description = record.get("text") or require(record, "prompt")
        code = require(record, "code")
        tests = require(record, "test_list", list)
        if not tests:
            raise DatasetError("field 'test_list' is empty")
        return Example(id=f"{self.name}-{task_id}", question=question_text(description, tests),
                       answer="\n".join(tests),
                       meta={"task_id": task_id, "entry_point": entry_point(code, tests), "canonical_solution": code,
                             "setup": record.get("test_setup_code") or ""})

    def build_program(self, code: str, example: Example) -> str:
        return f"{example.meta['setup']}\n{code}\n\n{example.answer}\n"


class MBPPPlus(MBPP):
    """MBPP+, from ``evalplus/mbppplus``. Ids are ``mbppplus-<task_id>``."""

    name = "mbppplus"
    version = 1
    hub_name = "evalplus/mbppplus"
    hub_config = None
    splits = ("test",)

    def read_file(self, path: Path, split: str):
        return CodeTask.read_file(self, path, split)

    def parse_record(self, record: dict, index: int, split: str) -> Example:
        task_id = require(record, "task_id", (int, str))
        code = require(record, "code")
        tests = require(record, "test_list", list)
        imports = record.get("test_imports") or []
        return Example(id=f"{self.name}-{task_id}", question=question_text(require(record, "prompt"), tests),
                       answer=require(record, "test"),
                       meta={"task_id": task_id, "entry_point": entry_point(code, tests), "canonical_solution": code,
                             "setup": "\n".join(imports)})
