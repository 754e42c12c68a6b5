"""Crash-safe output: atomic writes, the resumable results store, secret redaction, file hashes."""

from gcache.io.atomic import atomic_torch_save, atomic_write_json, atomic_write_text
from gcache.io.digest import file_sha256
from gcache.io.redaction import REDACTED, redact
from gcache.io.results import ResultsFileError, ResultStore, write_summary

__all__ = [
    "REDACTED",
    "ResultStore",
    "ResultsFileError",
    "atomic_torch_save",
    "atomic_write_json",
    "atomic_write_text",
    "file_sha256",
    "redact",
    "write_summary",
]
