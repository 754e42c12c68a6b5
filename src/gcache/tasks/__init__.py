"""Benchmarks: a registry of tasks that load examples from the hub or local files and score completions.

>>> task = get_task("gsm8k")
>>> task.score("... so she makes \\\\boxed{18} dollars.", Example("x", "q", "18", {}))["correct"]
True
"""

from gcache.tasks._base import (
    DatasetError,
    Example,
    MathExpressionTask,
    MathTask,
    MultipleChoiceTask,
    NumberTask,
    Task,
    format_choices,
    read_records,
)
from gcache.tasks._code import CodeTask
from gcache.tasks._index import TASKS, get_task, list_tasks
from gcache.tasks.aime import AIME2024, AIME2025
from gcache.tasks.aqua import AQuA
from gcache.tasks.arc import ARCChallenge, ARCEasy
from gcache.tasks.gpqa import GPQADiamond
from gcache.tasks.gsm8k import GSM8K
from gcache.tasks.humaneval import HumanEval, HumanEvalPlus
from gcache.tasks.math500 import MATH500
from gcache.tasks.mbpp import MBPP, MBPPPlus
from gcache.tasks.medqa import MedQA
from gcache.tasks.mmlu import MMLU
from gcache.tasks.multiarith import MultiArith
from gcache.tasks.svamp import SVAMP

__all__ = [
    "AIME2024",
    "AIME2025",
    "AQuA",
    "ARCChallenge",
    "ARCEasy",
    "CodeTask",
    "DatasetError",
    "Example",
    "GPQADiamond",
    "GSM8K",
    "HumanEval",
    "HumanEvalPlus",
    "MATH500",
    "MBPP",
    "MBPPPlus",
    "MMLU",
    "MathExpressionTask",
    "MathTask",
    "MedQA",
    "MultiArith",
    "MultipleChoiceTask",
    "NumberTask",
    "SVAMP",
    "TASKS",
    "Task",
    "format_choices",
    "get_task",
    "list_tasks",
    "read_records",
]
