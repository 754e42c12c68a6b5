"""Settings for an OpenAI-compatible chat API (DashScope, OpenAI, vLLM, SGLang, Ollama, ...).

Values are resolved in this order, first found wins:

1. explicit arguments (the CLI's ``--api-key``, ``--base-url``, ``--model``),
2. environment variables ``API_KEY``, ``BASE_URL``, ``API_MODEL``,
3. a ``.env`` file (read with :func:`dotenv.dotenv_values`; ``os.environ`` is never modified),
4. defaults: the DashScope compatible-mode endpoint and ``qwen-flash``.

A local server (``gcache serve``, vLLM, Ollama) does not check the key, but the OpenAI client
still sends one: any non-empty value such as ``API_KEY=EMPTY`` works there.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from gcache.io.redaction import REDACTED

logger = logging.getLogger(__name__)

__all__ = [
    "API_KEY_ENV",
    "API_MODEL_ENV",
    "BASE_URL_ENV",
    "DEFAULT_BASE_URL",
    "DEFAULT_MODEL",
    "KNOWN_MODELS",
    "ApiSettings",
    "MissingApiKeyError",
]

API_KEY_ENV = "API_KEY"
BASE_URL_ENV = "BASE_URL"
API_MODEL_ENV = "API_MODEL"
DEFAULT_BASE_URL = "https://dashscope.aliyuncs.com/compatible-mode/v1"
DEFAULT_MODEL = "qwen-flash"
#: Models the defaults (and :mod:`gcache.api.pricing`) know about; any other name is accepted.
KNOWN_MODELS: tuple[str, ...] = ("qwen-flash", "qwen-plus", "qwen-turbo")


class MissingApiKeyError(ValueError):
    """Raised when no API key was given by argument, environment or ``.env`` file."""


def _missing_key_message(env_file: Path | None) -> str:
    if env_file is None:
        where = "(no .env file was read)"
    elif env_file.is_file():
        where = f"({env_file.resolve()} was read and has no {API_KEY_ENV})"
    else:
        where = f"({env_file.resolve()} does not exist)"
    return (
        "No API key found. Set it in one of these ways:\n"
        f"  export {API_KEY_ENV}=...           (environment variable)\n"
        f"  a line {API_KEY_ENV}=... in .env    {where}\n"
        "  --api-key ...                 (command-line flag)\n"
        "A local OpenAI-compatible server (gcache serve, vLLM, Ollama) accepts any value, "
        f"e.g. {API_KEY_ENV}=EMPTY."
    )


@dataclass
class ApiSettings:
    """Connection and retry settings of an OpenAI-compatible chat endpoint.

    Prefer :meth:`resolve`, which reads flags, environment and ``.env``. The key is hidden in
    ``repr``/``str``/:meth:`to_dict`; note that :func:`dataclasses.asdict` does show it.

    Args:
        api_key (str): secret key; any non-empty value for local servers.
        base_url (str): endpoint root ending in ``/v1`` (``http://`` or ``https://``).
        model (str): model name sent with each request, e.g. ``qwen-flash``.
        timeout_s (float): per-attempt HTTP timeout in seconds. Default is 60.
        max_retries (int): retries after the first attempt (so ``1 + max_retries`` attempts at
            most), done by the openai client for transport faults (with its own backoff, honouring
            ``retry-after``) and by :class:`gcache.api.ChatClient` for unusable answers. Default is 4.
        max_concurrency (int): requests in flight at once per client. Default is 8.
        backoff_base_s (float): first delay before retrying an unusable answer; doubles each retry.
            Default is 0.5.
        backoff_max_s (float): cap on those delays. Default is 8.

    Raises:
        MissingApiKeyError: if ``api_key`` is empty.
        ValueError: if any other value is out of range.

    Example:
        >>> s = ApiSettings(api_key="sk-secret", base_url="http://127.0.0.1:8000/v1", model="m")
        >>> "sk-secret" in repr(s)
        False
    """

    api_key: str = field(repr=False)
    base_url: str
    model: str
    timeout_s: float = 60.0
    max_retries: int = 4
    max_concurrency: int = 8
    backoff_base_s: float = 0.5
    backoff_max_s: float = 8.0

    def __post_init__(self) -> None:
        if not isinstance(self.api_key, str) or not self.api_key.strip():
            raise MissingApiKeyError(_missing_key_message(None))
        if not isinstance(self.base_url, str) or not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {self.base_url!r}")
        self.base_url = self.base_url.rstrip("/")
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError("model must be a non-empty string")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ValueError(f"max_retries must be an int >= 0, got {self.max_retries!r}")
        if not isinstance(self.max_concurrency, int) or self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be an int >= 1, got {self.max_concurrency!r}")
        if self.backoff_base_s < 0:
            raise ValueError(f"backoff_base_s must be >= 0, got {self.backoff_base_s}")
        if self.backoff_max_s < self.backoff_base_s:
            raise ValueError(
                f"backoff_max_s ({self.backoff_max_s}) must be >= backoff_base_s ({self.backoff_base_s})"
            )
        if self.model not in KNOWN_MODELS:
            logger.debug("model %r is not one of the known models %s", self.model, KNOWN_MODELS)

    @classmethod
    def resolve(
        cls,
        api_key: str | None = None,
        base_url: str | None = None,
        model: str | None = None,
        env_file: str | Path | None = ".env",
        **overrides: Any,
    ) -> ApiSettings:
        """Build settings from flags, then environment variables, then a ``.env`` file.

        Empty strings count as "not given" at every level.

        Args:
            api_key (str | None): flag value; wins over ``API_KEY``. Default is None.
            base_url (str | None): flag value; wins over ``BASE_URL``. Default is None.
            model (str | None): flag value; wins over ``API_MODEL``. Default is None.
            env_file (str | Path | None): ``.env`` file to read; a missing file is skipped,
                None reads none. Default is ``".env"`` (relative to the working directory).
            **overrides: other :class:`ApiSettings` fields (``timeout_s``, ``max_retries``, ...).

        Returns:
            ApiSettings: the resolved settings.

        Raises:
            MissingApiKeyError: if no level provides a key; the message says how to set one.
            TypeError: if an override is not an :class:`ApiSettings` field.
        """
        allowed = {f.name for f in dataclasses.fields(cls)} - {"api_key", "base_url", "model"}
        unknown = set(overrides) - allowed
        if unknown:
            raise TypeError(f"unknown ApiSettings fields {sorted(unknown)}; allowed: {sorted(allowed)}")

        env_path = Path(env_file) if env_file is not None else None
        file_values: dict[str, str | None] = {}
        if env_path is not None and env_path.is_file():
            file_values = dotenv_values(env_path)
        elif env_path is not None:
            logger.debug("no .env file at %s", env_path)

        def pick(flag: str | None, name: str) -> str | None:
            for value in (flag, os.environ.get(name), file_values.get(name)):
                if value is not None and value.strip():
                    return value.strip()
            return None

        key = pick(api_key, API_KEY_ENV)
        if key is None:
            raise MissingApiKeyError(_missing_key_message(env_path))
        return cls(
            api_key=key,
            base_url=pick(base_url, BASE_URL_ENV) or DEFAULT_BASE_URL,
            model=pick(model, API_MODEL_ENV) or DEFAULT_MODEL,
            **overrides,
        )

    def to_dict(self) -> dict[str, Any]:
        """Settings as a plain dict, safe to log or save: the key reads ``"***"``."""
        out = dataclasses.asdict(self)
        out["api_key"] = REDACTED
        return out

    @property
    def secrets(self) -> list[str]:
        """Strings never to write to a file or log: the key, unless it is a short placeholder such as ``EMPTY``
        (local servers accept any key; hiding such a common word would garble text)."""
        return [self.api_key] if len(self.api_key) >= 8 else []

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items())
        return f"{type(self).__name__}({fields})"

    __str__ = __repr__
