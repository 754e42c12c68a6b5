"""Crash-safe output: atomic writes, the resumable results store, secret redaction, file hashes."""

from gcache.io.atomic import atomic_dir, atomic_open, atomic_torch_save, atomic_write_json, atomic_write_text
from gcache.io.digest import file_sha256
from gcache.io.redaction import REDACTED, redact, scrub_text
from gcache.io.results import ResultsFileError, ResultStore, write_summary

__all__ = [
    "REDACTED",
    "ResultStore",
    "ResultsFileError",
    "atomic_dir",
    "atomic_open",
    "atomic_torch_save",
    "atomic_write_json",
    "atomic_write_text",
    "file_sha256",
    "redact",
    "scrub_text",
    "write_summary",
]
