"""Where a result came from: the time, the code (package version, git commit) and the libraries it ran on.

Recorded in every ``summary.json`` so a number can be traced to what produced it.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import platform
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["LIBRARIES", "git_commit", "provenance"]

#: Distributions whose versions can change a result.
LIBRARIES = ("torch", "transformers", "tokenizers", "accelerate", "gguf", "torch-geometric",
             "sentence-transformers", "openai", "numpy")


def git_commit(path: str | Path | None = None) -> str | None:
    """The commit of the git checkout holding ``path`` (default: this package), ``+dirty`` if it has uncommitted
    changes; None when it is not a checkout or git is missing (an installed wheel)."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def provenance(seeds: dict[str, Any]) -> dict[str, Any]:
    """What produced a run.

    Args:
        seeds (dict): the seeds the run used, by name (e.g. ``{"seed": 0}``).

    Returns:
        dict: ``time_utc``, ``package_version``, ``git_commit``, ``python``, ``platform``, ``libraries``, ``seeds``.
    """
    import gcache

    return {
        "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "package_version": gcache.__version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "libraries": {dist: _version(dist) for dist in LIBRARIES},
        "seeds": dict(seeds),
    }
