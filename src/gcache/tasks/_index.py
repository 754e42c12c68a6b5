"""Task registry: name -> Task class."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping

from gcache.tasks._base import Task
from gcache.tasks.gsm8k import GSM8K
from gcache.tasks.humaneval import HumanEval
from gcache.tasks.svamp import SVAMP

__all__ = ["TASKS", "get_task", "list_tasks"]

#: Every built-in task by name (read-only).
TASKS: Mapping[str, type[Task]] = MappingProxyType({cls.name: cls for cls in (GSM8K, SVAMP, HumanEval)})


def list_tasks() -> list[str]:
    """Names of the built-in tasks, sorted."""
    return sorted(TASKS)


def get_task(name: str, **kwargs: Any) -> Task:
    """Instantiate the task registered as ``name`` (case-insensitive).

    Args:
        name (str): e.g. ``"gsm8k"``.
        **kwargs: Passed to the task's constructor (e.g. ``timeout_s`` for HumanEval).

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
