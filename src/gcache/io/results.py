"""Per-sample results of a run as an append-only JSONL file that survives ``kill -9``.

Each record is one JSON line with a string ``"id"``; it is written with a single ``write`` and
then flushed and fsynced before :meth:`ResultStore.append` returns. A crash can therefore leave at
most one damaged line, the last one; :meth:`ResultStore.load` drops it (with a warning) and
rewrites the file without it, so a resumed run re-does that one sample and nothing else.

Several processes can fill one run folder (``gcache eval --shard i/n``, torchrun ranks): each writes its own
part, ``results.<part>.jsonl``, and every reader merges all parts by id. A part has one writer, so appends
never interleave, and parts written on different machines merge by copying them into one folder.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable

from gcache.io.atomic import atomic_open, atomic_write_json
from gcache.io.redaction import redact

__all__ = ["ResultStore", "ResultsFileError", "write_summary"]

logger = logging.getLogger(__name__)


class ResultsFileError(ValueError):
    """A results file is damaged somewhere a crash cannot explain (before its last line)."""


class ResultStore:
    """``out_dir/results.jsonl`` (or one part of it): append records, reload them by id to resume a run.

    Assumes one writer per part. Reading merges every part in the folder: when several records share an
    id, one without an error beats one with an error, and otherwise the later one wins (parts in order
    of modification, lines in file order; a retried sample is appended again rather than edited in place).

    Args:
        out_dir (str | Path): Run directory; created on the first :meth:`append`.
        secrets (Iterable[str | None]): Strings never to write (see :func:`redact`). Default is ().
        part (str | None): This writer's part of the folder (e.g. ``"shard-0-of-2"``): records go to
            ``results.<part>.jsonl``. Default is None (``results.jsonl``).
        read_only (bool): A reader, not the writer (``gcache report``): a torn last line is skipped, never
            repaired (the writer may still be appending), and :meth:`append` refuses. Default is False.

    >>> store = ResultStore(tmp_path)  # doctest: +SKIP
    >>> store.append({"id": "gsm8k-test-0", "correct": True, "error": None})  # doctest: +SKIP
    >>> store.done_ids()  # doctest: +SKIP
    {'gsm8k-test-0'}
    """

    filename = "results.jsonl"
    part_pattern = "results.*.jsonl"  # the parts of other writers (shards, ranks)

    def __init__(self, out_dir: str | Path, secrets: Iterable[str | None] = (), part: str | None = None,
                 read_only: bool = False) -> None:
        self.out_dir = Path(out_dir)
        self.read_only = read_only
        if part is not None and (not part or "/" in part or part.startswith(".")):
            raise ValueError(f"a results part name must be a plain file-name piece, got {part!r}")
        self.path = self.out_dir / (self.filename if part is None else f"results.{part}.jsonl")
        self._secrets = [s for s in secrets if s]
        self._tail_checked = False  # appending after a torn last line would bury it mid-file

    def load(self, retry_errors: bool = False) -> dict[str, dict]:
        """Records by id, repairing a torn last line first.

        Args:
            retry_errors (bool): Leave out records whose ``"error"`` is not None, so that their
                samples run again. Default is False.

        Returns:
            dict[str, dict]: ``{id: record}``, in order of first appearance.

        Raises:
            ResultsFileError: If a line other than the last is not a JSON object with a string
                ``"id"`` (the message names the file and line).
        """
        by_id: dict[str, dict] = {}
        for path in self.part_paths():
            mine = path == self.path and not self.read_only
            for record in self._read() if mine else self._read_other(path):
                kept = by_id.get(record["id"])
                if kept is None or record.get("error") is None or kept.get("error") is not None:
                    by_id[record["id"]] = record
        if retry_errors:
            by_id = {k: r for k, r in by_id.items() if r.get("error") is None}
        return by_id

    def records(self, retry_errors: bool = False) -> list[dict]:
        """The records of :meth:`load` as a list."""
        return list(self.load(retry_errors).values())

    def done_ids(self, retry_errors: bool = False) -> set[str]:
        """Ids of samples that need not run again (see :meth:`load` for ``retry_errors``)."""
        return set(self.load(retry_errors))

    def append(self, record: dict[str, Any]) -> None:
        """Append one record as one JSON line, durably (flush + fsync) before returning.

        Args:
            record (dict): JSON-serializable, with a string ``"id"``. Secrets are redacted.

        Raises:
            ValueError: If ``record`` has no string ``"id"``.
            TypeError: If it is not JSON-serializable (nothing is written).
        """
        if self.read_only:
            raise ValueError(f"{self}: opened read-only")
        if not isinstance(record, dict) or not isinstance(record.get("id"), str):
            raise ValueError(f"a result record must be a dict with a string 'id', got {record!r:.200}")
        line = (json.dumps(redact(record, self._secrets), ensure_ascii=False) + "\n").encode("utf-8")
        if not self._tail_checked:
            self._read()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def part_paths(self) -> list[Path]:
        """Every part of the folder (this writer's included, even before it exists), oldest first."""
        paths = {self.path, *(p for p in self.out_dir.glob(self.filename) if p.is_file()),
                 *(p for p in self.out_dir.glob(self.part_pattern) if p.is_file())}

        def age(path: Path) -> tuple[int, str]:
            try:
                return path.stat().st_mtime_ns, path.name
            except FileNotFoundError:  # this writer's part, not written yet
                return 0, path.name

        return sorted(paths, key=age)

    def _read(self) -> list[dict]:
        """Parse this writer's part; drop and repair a damaged last line; raise on damage before it."""
        self._tail_checked = True
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        records, torn_at = _parse(self.path, data)
        if torn_at is not None:
            logger.warning("%s, line %d: dropping a truncated last record (%d bytes: %r); its sample will run "
                           "again", self.path, len(records) + 1, len(data) - torn_at, data[torn_at:torn_at + 80])
            self._rewrite(data[:torn_at])
        elif data and not data.endswith(b"\n"):
            self._rewrite(data + b"\n")  # whole record, lost newline: the next append must not join it
        return records

    def _read_other(self, path: Path) -> list[dict]:
        """Parse another writer's part, read-only: its last line may be torn, or still being written."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return []
        records, torn_at = _parse(path, data)
        if torn_at is not None:
            logger.debug("%s: skipping an incomplete last line (its writer repairs it on resume)", path)
        return records

    def _rewrite(self, data: bytes) -> None:
        with atomic_open(self.path, "wb") as f:
            f.write(data)

    def __repr__(self) -> str:
        return f"ResultStore(path={str(self.path)!r})"


def _parse(path: Path, data: bytes) -> tuple[list[dict], int | None]:
    """Records of a results file, and the byte offset of a torn last line (None if there is none).

    Raises:
        ResultsFileError: If a line other than the last is not a JSON object with a string ``"id"``.
    """
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # the file ends with a newline, as it should
    records, offset = [], 0
    for lineno, raw in enumerate(lines, start=1):
        try:
            record = json.loads(raw)
            if not isinstance(record, dict) or not isinstance(record.get("id"), str):
                raise ValueError("not a JSON object with a string 'id'")
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError included
            if lineno != len(lines):
                raise ResultsFileError(
                    f"{path}, line {lineno}: corrupt record ({e}); only the last line can be "
                    "cut off by a crash, so this file was damaged otherwise: fix or delete that line"
                ) from None
            return records, offset
        records.append(record)
        offset += len(raw) + 1
    return records, None


def write_summary(out_dir: str | Path, summary: dict, secrets: Iterable[str | None] = ()) -> Path:
    """Write ``summary`` to ``out_dir/summary.json`` atomically, secrets redacted.

    Args:
        out_dir (str | Path): Run directory (created if missing).
        summary (dict): JSON-serializable summary (metrics, config, versions).
        secrets (Iterable[str | None]): Strings never to write. Default is ().

    Returns:
        Path: The written file.
    """
    path = Path(out_dir) / "summary.json"
    atomic_write_json(path, redact(summary, secrets))
    return path
