"""Task registry: every built-in task by name, declared once and used by every method."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping

from gcache.tasks._base import Task
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

__all__ = ["TASKS", "get_task", "list_tasks"]

_ALL = (GSM8K, SVAMP, MultiArith, AQuA, MMLU, ARCEasy, ARCChallenge, GPQADiamond, MedQA, AIME2024, AIME2025,
        MATH500, HumanEval, HumanEvalPlus, MBPP, MBPPPlus)
#: Every built-in task by name (read-only).
TASKS: Mapping[str, type[Task]] = MappingProxyType({cls.name: cls for cls in _ALL})


def list_tasks() -> list[str]:
    """Names of the built-in tasks, sorted."""
    return sorted(TASKS)


def get_task(name: str, **kwargs: Any) -> Task:
    """Instantiate the task registered as ``name`` (case-insensitive).

    Args:
        name (str): e.g. ``"gsm8k"``.
        **kwargs: Passed to the task's constructor (e.g. ``timeout_s`` for the code tasks).

    Returns:
        Task: A new instance.

    Raises:
        ValueError: If ``name`` is unknown (the message lists the valid names).
    """
    try:
        cls = TASKS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; valid: {list_tasks()}") from None
    return cls(**kwargs)
