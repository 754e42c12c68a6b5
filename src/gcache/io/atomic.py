"""Crash-safe writes, the project's one atomic writer: write a temporary file (or folder) next to the target,
fsync, rename.

``os.replace`` within one directory is atomic on POSIX and Windows, so a reader (or a run resumed
after ``kill -9``) sees either the old file or the new one, never a half-written one. The result gets the
permissions a plain ``open`` would give (``0666`` / ``0777`` less the umask), not ``mkstemp``'s private ``0600``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterator

__all__ = ["atomic_dir", "atomic_open", "atomic_torch_save", "atomic_write_json", "atomic_write_text"]


def _umask() -> int:
    """The process umask, read without changing it where the OS allows."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (the only portable way to read it)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; directories cannot be opened this way on Windows.
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **kwargs: Any) -> Iterator[IO]:
    """Yield a temp file next to ``path``; on clean exit fsync it and rename it onto ``path``.

    On an exception the temp file is removed and ``path`` is left as it was.

    Args:
        path (str | PathLike): Target file (parent directories are created).
        mode (str): ``"wb"`` or ``"w"``. Default is ``"wb"``.
        **kwargs: Passed to :func:`open` (``encoding``, ``newline``).

    >>> with atomic_open(tmp_path / "x.bin") as f:  # doctest: +SKIP
    ...     f.write(b"data")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically (parent directories are created).

    Args:
        path (str | PathLike): Target file.
        text (str): Content.
        encoding (str): Default is ``"utf-8"``.
    """
    with atomic_open(path, "w", encoding=encoding, newline="") as f:
        f.write(text)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON to ``path`` atomically.

    Args:
        path (str | PathLike): Target file.
        obj (Any): JSON-serializable object.
        indent (int | None): Default is 2.

    Raises:
        TypeError: If ``obj`` is not JSON-serializable (``path`` is left untouched).
    """
    # Serialize first, so an unserializable object fails before any file is created.
    text = json.dumps(obj, indent=indent, ensure_ascii=False) + "\n"
    atomic_write_text(path, text)


def atomic_torch_save(obj: Any, path: str | os.PathLike, save: Callable[..., None] | None = None) -> None:
    """``torch.save(obj, path)`` atomically: a crash mid-save never corrupts an old checkpoint.

    Args:
        obj (Any): What to save (e.g. a ``state_dict``).
        path (str | PathLike): Target file.
        save (Callable | None): Saver taking ``(obj, file)``. Default is None (``torch.save``).
    """
    if save is None:
        import torch  # lazy: keeps gcache.io importable without loading torch

        save = torch.save
    with atomic_open(path, "wb") as f:
        save(obj, f)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp folder next to ``path``; on clean exit rename it onto ``path`` (which must not exist yet).

    On an exception the temp folder is removed. Used for caches written by a library into a folder
    (``save_pretrained``): a crash never leaves a half-written cache that looks complete.

    Raises:
        OSError: If ``path`` appeared meanwhile (another process filled it first) or cannot be written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(path.parent)
