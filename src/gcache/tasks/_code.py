"""Code-generation tasks: the model writes a Python function, the task's tests run on it in the sandbox."""

from __future__ import annotations

import logging
from typing import ClassVar

from gcache.scoring import ExecutionResult, SandboxLimits, run_program
from gcache.tasks._base import Example, Task

__all__ = ["CodeTask"]

logger = logging.getLogger(__name__)


class CodeTask(Task):
    """A task scored by running tests on the extracted code (:func:`gcache.scoring.run_program`, sandboxed).

    Subclasses implement :meth:`build_program` (the code plus the task's tests) and :meth:`parse_record`, whose
    ``meta`` must hold ``entry_point``. Both pipelines' code is run (once when they extracted the same code).

    Args:
        timeout_s (float): Wall-clock limit of one check, in seconds. Default is 10.
        limits (SandboxLimits | None): The other sandbox limits. Default is ``SandboxLimits()``.
    """

    domain: ClassVar[str] = "code"
    answer_kind: ClassVar[str] = "code"
    prompt_set: ClassVar[str] = "humaneval"
    metrics: ClassVar[tuple[str, ...]] = ("pass@1",)

    def __init__(self, timeout_s: float = 10.0, limits: SandboxLimits | None = None) -> None:
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.timeout_s = timeout_s
        self.limits = limits or SandboxLimits(wall_s=timeout_s, cpu_s=timeout_s)

    def build_program(self, code: str, example: Example) -> str:
        """The program whose exit status says whether ``code`` passes the example's tests."""
        raise NotImplementedError

    def run(self, code: str, example: Example):
        """Run ``code`` against the tests; returns the :class:`~gcache.scoring.ExecutionResult`.

        Whatever fails while scoring one answer is that answer's ``sandbox_error``: one question must not end
        the run (nor every rerun, which would stop at the same question).
        """
        try:
            return run_program(self.build_program(code, example), timeout_s=self.timeout_s, limits=self.limits)
        except Exception as err:  # noqa: BLE001
            logger.warning("scoring %s failed: %s: %s", example.id, type(err).__name__, err)
            return ExecutionResult("sandbox_error", None, f"{type(err).__name__}: {err}")

    def is_correct(self, prediction: str | None, example: Example) -> bool:
        return prediction is not None and self.run(prediction, example).passed

    def score(self, completion_text: str | None, example: Example) -> dict:
        """Run the tests on each pipeline's code.

        Returns:
            dict: As :meth:`Task.score`, each pipeline's entry with a ``status`` (``passed`` / ``failed`` /
            ``timeout`` / ``cpu_limit`` / ``sandbox_error`` / ``empty``), and the primary one's ``status`` on top.
        """
        scores, runs = {}, {}
        for name, pipeline in self.filters.items():
            code = pipeline(completion_text, example)
            if code is None or not code.strip():
                scores[name] = {"prediction": None, "correct": False, "status": "empty"}
                continue
            if code not in runs:
                runs[code] = self.run(code, example)
            scores[name] = {"prediction": code, "correct": runs[code].passed, "status": runs[code].status}
        primary = scores[self.primary_filter]
        return {"prediction": primary["prediction"], "correct": primary["correct"], "status": primary["status"],
                "scores": scores}
