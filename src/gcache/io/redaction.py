"""Scrub secrets (API keys, tokens) from anything about to be written to disk or logged."""

from __future__ import annotations

from typing import Any, Iterable

__all__ = ["REDACTED", "redact"]

REDACTED = "***"


def redact(obj: Any, secrets: Iterable[str | None]) -> Any:
    """Copy of ``obj`` with every occurrence of a secret in its strings replaced by ``"***"``.

    Walks dicts (keys and values), lists, tuples and sets; other objects are returned as they are.
    Empty or None secrets are ignored (replacing ``""`` would mangle every string).

    Args:
        obj (Any): A JSON-like nested structure.
        secrets (Iterable[str | None]): Strings to hide, e.g. ``[os.environ.get("API_KEY")]``.

    Returns:
        Any: The redacted copy; ``obj`` is not modified.

    >>> redact({"url": "https://x/?key=sk-123", "n": 3}, ["sk-123", ""])
    {'url': 'https://x/?key=***', 'n': 3}
    """
    # Longest first, so a secret that contains another is hidden whole.
    hidden = sorted({s for s in secrets if s}, key=len, reverse=True)
    return _redact(obj, hidden) if hidden else obj


def _redact(obj: Any, secrets: list[str]) -> Any:
    if isinstance(obj, str):
        for secret in secrets:
            obj = obj.replace(secret, REDACTED)
        return obj
    if isinstance(obj, dict):
        return {_redact(k, secrets): _redact(v, secrets) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return type(obj)(_redact(v, secrets) for v in obj)
    return obj
