"""Asynchronous chat client for OpenAI-compatible endpoints, with the project's one retry loop.

The official ``openai`` client does the HTTP; its own retries are switched off so that every
retry decision happens here, in one place:

* retried, with exponential backoff and jitter: HTTP 408, 409, 429 and 5xx, timeouts, connection
  errors, and answers that are not a valid completion (invalid JSON, no choices, no text).
  A ``Retry-After`` (or ``retry-after-ms``) header replaces the computed delay, capped at
  ``backoff_max_s``;
* not retried: any other 4xx (400 bad request, 401 key rejected, 403, 404 unknown model, ...).

A request that still fails does not raise: it returns a :class:`ChatResult` with ``text=None``
and ``error`` set, so a benchmark run records the failure for that question and goes on.
The API key is scrubbed from every error string and log line.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import json
import logging
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import openai

from gcache.api.settings import ApiSettings

logger = logging.getLogger(__name__)

__all__ = ["ChatClient", "ChatResult"]

_RETRYABLE_STATUS = frozenset({408, 409, 429})
# Provider keys that may be echoed back in an error body ("Incorrect API key provided: sk-...").
_KEY_LIKE = re.compile(r"\b(sk-[A-Za-z0-9_\-]{6,})")
_BEARER = re.compile(r"(Bearer\s+)\S+", re.IGNORECASE)


@dataclass
class ChatResult:
    """Outcome of one chat request (after retries).

    Args:
        text (str | None): the completion text; None when the request failed.
        prompt_tokens (int): input tokens reported by the server's ``usage`` (0 if absent).
        completion_tokens (int): output tokens reported by the server's ``usage`` (0 if absent).
        attempts (int): HTTP attempts made, ``1 + retries``.
        error (str | None): why the request failed, key scrubbed; None on success.
        latency_s (float): wall time from the first attempt to the result, backoff included.
        finish_reason (str | None): ``"stop"``, ``"length"``, ... as reported. Default is None.
    """

    text: str | None
    prompt_tokens: int
    completion_tokens: int
    attempts: int
    error: str | None
    latency_s: float
    finish_reason: str | None = None

    @property
    def ok(self) -> bool:
        """True when the request produced text."""
        return self.error is None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class _InvalidResponse(Exception):
    """A 200 answer that is not a usable chat completion."""


@dataclass
class _LoopState:
    # AsyncOpenAI's HTTP pool and asyncio.Semaphore both bind to one event loop, so each loop
    # the client is used from gets its own pair.
    loop: asyncio.AbstractEventLoop
    client: openai.AsyncOpenAI
    semaphore: asyncio.Semaphore


def _parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` / ``retry-after`` (seconds or HTTP date)."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return max(0.0, float(value) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class ChatClient:
    """Bounded-concurrency chat client over ``openai.AsyncOpenAI``.

    One instance serves one event loop at a time (its HTTP pool and semaphore follow the loop
    it is used from); use one instance per thread.

    Args:
        settings (ApiSettings): endpoint, key, model, timeout, retry and concurrency settings.
        seed (int | None): seed of the backoff jitter, for reproducible timing. Default is None.

    Example:
        >>> client = ChatClient(ApiSettings.resolve())  # doctest: +SKIP
        >>> [r] = client.complete_many_sync([[{"role": "user", "content": "2+2?"}]], max_tokens=8)  # doctest: +SKIP
        >>> r.text, r.prompt_tokens, r.error  # doctest: +SKIP
        ('4', 14, None)
    """

    def __init__(self, settings: ApiSettings, *, seed: int | None = None) -> None:
        self.settings = settings
        self._rng = random.Random(seed)
        self._state: _LoopState | None = None

    def __repr__(self) -> str:
        s = self.settings
        return (
            f"{type(self).__name__}(base_url={s.base_url!r}, model={s.model!r}, "
            f"max_concurrency={s.max_concurrency}, max_retries={s.max_retries})"
        )

    # -- plumbing ------------------------------------------------------------------------------
    def _loop_state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        if self._state is None or self._state.loop is not loop:
            client = openai.AsyncOpenAI(
                api_key=self.settings.api_key,
                base_url=self.settings.base_url,
                timeout=self.settings.timeout_s,
                max_retries=0,  # the loop in complete() is the only retry
            )
            self._state = _LoopState(loop, client, asyncio.Semaphore(self.settings.max_concurrency))
        return self._state

    async def aclose(self) -> None:
        """Close the HTTP connections opened from the running event loop."""
        state, self._state = self._state, None
        if state is not None and state.loop is asyncio.get_running_loop():
            await state.client.close()

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _scrub(self, text: str) -> str:
        """Remove the key (and key- or bearer-looking tokens) from a message."""
        key = self.settings.api_key
        if len(key) >= 8:  # a short placeholder ("EMPTY") is no secret; replacing it would garble text
            text = text.replace(key, "***")
        text = _BEARER.sub(r"\1***", text)
        return _KEY_LIKE.sub("***", text)

    def _backoff(self, retry_index: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.settings.backoff_max_s)
        ceiling = min(self.settings.backoff_max_s, self.settings.backoff_base_s * 2**retry_index)
        # "Equal jitter": at least half the exponential delay, so retries of many concurrent
        # requests spread out without any of them retrying immediately.
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    # -- requests ------------------------------------------------------------------------------
    async def _attempt(
        self, client: openai.AsyncOpenAI, messages: Sequence[dict[str, Any]], **params: Any
    ) -> tuple[str, int, int, str | None]:
        response = await client.chat.completions.create(model=self.settings.model, messages=messages, **params)
        choices = getattr(response, "choices", None)
        if not choices:
            raise _InvalidResponse("answer has no choices")
        text = getattr(getattr(choices[0], "message", None), "content", None)
        if not isinstance(text, str):
            raise _InvalidResponse("answer has no message content")
        usage = getattr(response, "usage", None)
        prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        if usage is None:
            logger.debug("server sent no usage; token counts are 0")
        return text, prompt_tokens, completion_tokens, getattr(choices[0], "finish_reason", None)

    def _classify(self, exc: BaseException) -> tuple[bool, str, float | None]:
        """Map an exception to (retryable, reason, retry_after_s)."""
        if isinstance(exc, openai.APITimeoutError):
            return True, f"timeout after {self.settings.timeout_s:g}s", None
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc
            return True, f"connection error: {type(cause).__name__}: {cause}", None
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            retry_after = _parse_retry_after(getattr(exc.response, "headers", None))
            if status == 401:
                return False, f"API key rejected (HTTP 401) by {self.settings.base_url}: {exc}", None
            if status == 404:
                return False, f"not found (HTTP 404), check model {self.settings.model!r} and base_url: {exc}", None
            if status in _RETRYABLE_STATUS or status >= 500:
                return True, f"HTTP {status}: {exc}", retry_after
            return False, f"HTTP {status}: {exc}", None
        if isinstance(exc, (_InvalidResponse, openai.APIResponseValidationError, json.JSONDecodeError)):
            return True, f"invalid response: {type(exc).__name__}: {exc}", None
        if isinstance(exc, ValueError):  # a body the SDK could not decode
            return True, f"invalid response: {type(exc).__name__}: {exc}", None
        return False, f"unexpected error: {type(exc).__name__}: {exc}", None

    async def complete(
        self,
        messages: Sequence[dict[str, Any]],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
    ) -> ChatResult:
        """Send one chat request, retrying transient failures.

        Args:
            messages (Sequence[dict]): OpenAI chat messages, ``{"role": ..., "content": ...}``.
            max_tokens (int): most completion tokens.
            temperature (float): sampling temperature; 0 is greedy. Default is 0.0.
            top_p (float): nucleus sampling mass. Default is 1.0.

        Returns:
            ChatResult: text and usage, or ``text=None`` with ``error`` after the last attempt.

        Raises:
            ValueError: if ``messages`` is empty or ``max_tokens < 1`` (caller bugs, not API faults).
        """
        if not messages:
            raise ValueError("messages must not be empty")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        state = self._loop_state()
        params = {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p}
        max_attempts = 1 + self.settings.max_retries
        async with state.semaphore:
            start = time.perf_counter()
            reason = "no attempt made"
            for attempt in range(1, max_attempts + 1):
                try:
                    text, p_tok, c_tok, finish = await self._attempt(state.client, messages, **params)
                except Exception as exc:  # noqa: BLE001 - every failure becomes a recorded result
                    retryable, reason, retry_after = self._classify(exc)
                    reason = self._scrub(reason)
                    if not retryable or attempt == max_attempts:
                        break
                    delay = self._backoff(attempt - 1, retry_after)
                    logger.warning(
                        "attempt %d/%d failed (%s); retrying in %.2fs", attempt, max_attempts, reason, delay
                    )
                    await asyncio.sleep(delay)
                else:
                    return ChatResult(text, p_tok, c_tok, attempt, None, time.perf_counter() - start, finish)
            error = f"{reason} (after {attempt} attempt{'s' if attempt > 1 else ''})"
            logger.warning("request failed: %s", error)
            return ChatResult(None, 0, 0, attempt, error, time.perf_counter() - start)

    async def complete_many(
        self, messages_list: Sequence[Sequence[dict[str, Any]]], **kwargs: Any
    ) -> list[ChatResult]:
        """Run many requests concurrently, at most ``settings.max_concurrency`` in flight.

        Args:
            messages_list (Sequence[Sequence[dict]]): one message list per request.
            **kwargs: forwarded to :meth:`complete` (``max_tokens``, ``temperature``, ``top_p``).

        Returns:
            list[ChatResult]: results in input order.
        """
        return list(await asyncio.gather(*(self.complete(m, **kwargs) for m in messages_list)))

    def complete_many_sync(
        self, messages_list: Sequence[Sequence[dict[str, Any]]], **kwargs: Any
    ) -> list[ChatResult]:
        """Blocking :meth:`complete_many` for non-async code.

        Runs a private event loop (in a helper thread if this thread already runs one, e.g. in
        Jupyter) and closes its HTTP connections before returning.

        Args:
            messages_list (Sequence[Sequence[dict]]): one message list per request.
            **kwargs: forwarded to :meth:`complete`.

        Returns:
            list[ChatResult]: results in input order.
        """

        async def run() -> list[ChatResult]:
            try:
                return await self.complete_many(messages_list, **kwargs)
            finally:
                await self.aclose()

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(run())
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, run()).result()
