"""Benchmarks: load examples from local files or the Hugging Face hub, and score completions.

>>> task = get_task("gsm8k")
>>> task.score("... so she makes \\\\boxed{18} dollars.", Example("x", "q", "18", {}))
{'prediction': '18', 'correct': True}
"""

from gcache.tasks._base import DatasetError, Example, MathTask, Task
from gcache.tasks._index import TASKS, get_task, list_tasks
from gcache.tasks.gsm8k import GSM8K
from gcache.tasks.humaneval import HumanEval
from gcache.tasks.svamp import SVAMP

__all__ = [
    "DatasetError",
    "Example",
    "GSM8K",
    "HumanEval",
    "MathTask",
    "SVAMP",
    "TASKS",
    "Task",
    "get_task",
    "list_tasks",
]
