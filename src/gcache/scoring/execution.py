"""Run a generated Python program in a separate, isolated interpreter (HumanEval-style checks).

This is process isolation, not a sandbox: the program runs as the current user. It gets a fresh
temporary working directory, ``python -I`` (no user site, no ``PYTHON*`` variables), an
environment without the parent's variables (so API keys do not leak into model-written code), and
its whole process group is killed on timeout.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass

__all__ = ["ExecutionResult", "run_program"]


@dataclass(frozen=True)
class ExecutionResult:
    """Outcome of :func:`run_program`.

    Args:
        status (str): ``"passed"`` (exit 0), ``"failed"`` (non-zero exit) or ``"timeout"``.
        returncode (int | None): Exit status; None on timeout.
        stderr (str): Last 2,000 characters of stderr, for logs.
    """

    status: str
    returncode: int | None
    stderr: str

    @property
    def passed(self) -> bool:
        """Whether the program exited with status 0."""
        return self.status == "passed"


def run_program(program: str, timeout_s: float = 10.0) -> ExecutionResult:
    """Run ``program`` with ``python -I`` in a temporary directory.

    Args:
        program (str): Python source.
        timeout_s (float): Wall-clock limit in seconds. Default is 10.

    Returns:
        ExecutionResult: Status, return code and stderr tail.

    Raises:
        ValueError: If ``timeout_s`` is not positive.
    """
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    env = {"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
    with tempfile.TemporaryDirectory(prefix="gcache-exec-") as tmp:
        script = os.path.join(tmp, "program.py")
        with open(script, "w", encoding="utf-8") as f:
            f.write(program)
        proc = subprocess.Popen(
            [sys.executable, "-I", script],
            cwd=tmp,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # own process group, so children die with it on timeout
        )
        try:
            _, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            _, err = proc.communicate()
            return ExecutionResult("timeout", None, err.decode("utf-8", "replace")[-2000:])
    stderr = err.decode("utf-8", "replace")[-2000:]
    return ExecutionResult("passed" if proc.returncode == 0 else "failed", proc.returncode, stderr)
