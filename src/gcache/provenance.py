"""Where a result came from: the time, the code (package version, git commit) and the libraries it ran on.

Recorded in every ``summary.json`` so a number can be traced to what produced it.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import importlib.metadata
import platform
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["LIBRARIES", "code_version", "git_commit", "model_fingerprint", "provenance", "source_sha256"]

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


@functools.cache  # the source of a running process does not change under it (an edit takes a new process)
def source_sha256() -> str:
    """SHA-256 over the package's own files (``.py``, ``.yaml``, ``.json``: code, configs, prompt sets), by
    relative path; the same in a checkout and an installed wheel of the same source."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.suffix in (".py", ".yaml", ".yml", ".json") and p.is_file()
                       and "__pycache__" not in p.parts):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def code_version() -> str:
    """``<release>+src.<source hash>``: what a run's identity records of the code that ran it."""
    import gcache

    return f"{gcache.__version__}+src.{source_sha256()[:16]}"


def _file_digest(path: Path, edge: int = 1 << 20) -> str:
    """Hash of a (possibly many-GB) weights file: its size and its first and last MiB, not all of it."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        digest.update(f.read(edge))
        if size > edge:
            f.seek(max(edge, size - edge))
            digest.update(f.read(edge))
    return digest.hexdigest()


def model_fingerprint(model: str | Path) -> str | None:
    """Hashes of a local model's ``config.json`` and weights (their index when sharded, else each file's size and
    ends); None for a hub name or a preset (pinned elsewhere). Cheap: whole weight files are not read."""
    path = Path(model)
    if path.is_file():
        return f"weights {_file_digest(path)[:16]}"
    if not path.is_dir():
        return None
    parts = []
    config = path / "config.json"
    if config.is_file():
        parts.append(f"config {hashlib.sha256(config.read_bytes()).hexdigest()[:16]}")
    index = sorted(path.glob("*.index.json"))
    weights = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".gguf") and p.is_file())
    digest = hashlib.sha256()
    for p in index or weights:
        digest.update(p.name.encode() + b"\0")
        digest.update((hashlib.sha256(p.read_bytes()).hexdigest() if p in index else _file_digest(p)).encode())
    if index or weights:
        parts.append(f"{'weight index' if index else 'weights'} {digest.hexdigest()[:16]}")
    return ", ".join(parts) or None


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
        "code_version": code_version(),
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "libraries": {dist: _version(dist) for dist in LIBRARIES},
        "seeds": dict(seeds),
    }
