"""Scrub secrets (API keys, tokens) from anything about to be written to disk or logged."""

from __future__ import annotations

import re
from typing import Any, Iterable

__all__ = ["REDACTED", "SECRET_FIELDS", "redact", "redact_fields", "scrub_text"]

REDACTED = "***"
# Provider keys a server may echo back in an error body ("Incorrect API key provided: sk-..."), and bearer tokens.
_KEY_LIKE = re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}")
_BEARER = re.compile(r"(Bearer\s+)\S+", re.IGNORECASE)
#: Setting names whose values are secrets wherever they appear in a written structure.
SECRET_FIELDS = ("api_key",)


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


def redact_fields(obj: Any, names: Iterable[str] = SECRET_FIELDS) -> Any:
    """Copy of ``obj`` with the value of every dict key in ``names`` (at any depth) set to ``"***"`` when set.

    >>> redact_fields({"methods": {"a": {"api_key": "k", "model": "m"}}, "api_key": None})
    {'methods': {'a': {'api_key': '***', 'model': 'm'}}, 'api_key': None}
    """
    names = frozenset(names)
    if isinstance(obj, dict):
        return {k: (REDACTED if k in names and v else redact_fields(v, names)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact_fields(v, names) for v in obj)
    return obj


def scrub_text(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with the secrets, bearer tokens and ``sk-...`` key-like tokens replaced by ``"***"``.

    For messages that may quote a key nobody told us about (an error body from a server).

    >>> scrub_text("Incorrect API key provided: sk-abc123456. Header: Bearer xyz", [])
    'Incorrect API key provided: ***. Header: Bearer ***'
    """
    text = redact(text, secrets)
    text = _BEARER.sub(rf"\1{REDACTED}", text)
    return _KEY_LIKE.sub(REDACTED, text)
