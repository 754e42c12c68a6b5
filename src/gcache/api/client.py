"""Asynchronous chat client for OpenAI-compatible endpoints.

The official ``openai`` client does the HTTP and its own retries (HTTP 408, 409, 429 and 5xx, timeouts and
connection errors, with jittered exponential backoff that honours ``retry-after`` / ``retry-after-ms``), up to
``max_retries`` times. What this module adds:

* a thin retry layer for answers that arrive but are unusable (a body that is not JSON, or JSON that is not a
  completion: no choices, no text), up to ``max_retries`` times with a short jittered delay;
* failures that end one question: a request that still fails does not raise, it returns a :class:`ChatResult`
  with ``text=None`` and ``error`` set, so a benchmark records the failure for that question and goes on;
* failures that end the run: the key is rejected (HTTP 401 / 403), or no connection to the server could ever be
  opened by this client (refused, unknown host, connect timeout). A connection that opens and then drops counts
  as reached: that question's error, and the run goes on. Sending the other questions could not succeed, so :class:`ApiFatalError` is raised at once.

The API key is scrubbed from every error string and log line (:func:`gcache.io.redaction.scrub_text`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import openai

from gcache.api.settings import ApiSettings
from gcache.io.redaction import REDACTED, scrub_text

logger = logging.getLogger(__name__)

__all__ = ["ApiFatalError", "ChatClient", "ChatResult"]


class ApiFatalError(RuntimeError):
    """The API cannot serve this run at all (key rejected, server unreachable); the message says why."""


@dataclass
class ChatResult:
    """Outcome of one chat request (after retries).

    Args:
        text (str | None): the completion text; None when the request failed.
        prompt_tokens (int): input tokens reported by the server's ``usage`` (0 if absent).
        completion_tokens (int): output tokens reported by the server's ``usage`` (0 if absent).
        attempts (int): HTTP attempts made, ``1 + retries`` (the openai client's and this module's).
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
    """A 200 answer that is not a usable chat completion (after ``attempts`` HTTP attempts)."""

    def __init__(self, message: str, attempts: int = 1) -> None:
        super().__init__(message)
        self.attempts = attempts


def _never_connected(exc: BaseException) -> bool:
    """Whether a transport failure happened before any connection opened (checked by class name: the HTTP
    library may be httpx or httpx2, whose classes differ)."""
    while exc is not None:
        names = {cls.__name__ for cls in type(exc).__mro__}
        if names & {"ConnectError", "ConnectTimeout", "ConnectionRefusedError", "gaierror"}:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@dataclass
class _LoopState:
    # AsyncOpenAI's HTTP pool and asyncio.Semaphore both bind to one event loop, so each loop
    # the client is used from gets its own pair.
    loop: asyncio.AbstractEventLoop
    client: openai.AsyncOpenAI
    semaphore: asyncio.Semaphore


def _attempts_made(exc: BaseException) -> int:
    """HTTP attempts behind an openai error: the client numbers its retries in a request header."""
    request = getattr(exc, "request", None)
    if request is None:
        request = getattr(getattr(exc, "response", None), "request", None)
    try:
        return int(request.headers.get("x-stainless-retry-count", 0)) + 1
    except (AttributeError, TypeError, ValueError):
        return 1


class ChatClient:
    """Bounded-concurrency chat client over ``openai.AsyncOpenAI``.

    One instance serves one event loop at a time (its HTTP pool and semaphore follow the loop
    it is used from); use one instance per thread.

    Args:
        settings (ApiSettings): endpoint, key, model, timeout, retry and concurrency settings.
        seed (int | None): seed of the jitter between retries of unusable answers. Default is None.

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
        self._reached = False  # has any request of this client reached the server?

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
                max_retries=self.settings.max_retries,
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
        text = scrub_text(text, self.settings.secrets)
        key = self.settings.api_key
        if key and key not in self.settings.secrets:
            # A short key (settings.secrets leaves it out so as not to garble words) is still hidden where it
            # stands alone, e.g. echoed in a 401 body: "Incorrect API key provided: abc12".
            text = re.sub(rf"(?<![\w-]){re.escape(key)}(?![\w-])", REDACTED, text)
        return text

    def _invalid_answer_delay(self, retry_index: int) -> float:
        ceiling = min(self.settings.backoff_max_s, self.settings.backoff_base_s * 2**retry_index)
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    # -- requests ------------------------------------------------------------------------------
    async def _attempt(
        self, client: openai.AsyncOpenAI, messages: Sequence[dict[str, Any]], **params: Any
    ) -> tuple[int, tuple[str, int, int, str | None]]:
        """One request through the openai client (which retries transport faults): ``(attempts, answer)``."""
        raw = await client.chat.completions.with_raw_response.create(
            model=self.settings.model, messages=messages, **params)
        attempts = int(getattr(raw, "retries_taken", 0) or 0) + 1
        self._reached = True
        try:
            response = raw.parse()
        except (ValueError, openai.APIResponseValidationError) as exc:  # JSONDecodeError included
            raise _InvalidResponse(f"{type(exc).__name__}: {exc}", attempts) from None
        choices = getattr(response, "choices", None)
        if not choices:
            raise _InvalidResponse("answer has no choices", attempts)
        text = getattr(getattr(choices[0], "message", None), "content", None)
        if not isinstance(text, str):
            raise _InvalidResponse("answer has no message content", attempts)
        usage = getattr(response, "usage", None)
        prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        if usage is None:
            logger.debug("server sent no usage; token counts are 0")
        return attempts, (text, prompt_tokens, completion_tokens, getattr(choices[0], "finish_reason", None))

    def _failure(self, exc: BaseException) -> str:
        """Why a request failed (key scrubbed); raises :class:`ApiFatalError` when no request can succeed."""
        base_url = self.settings.base_url
        if isinstance(exc, openai.APIStatusError):
            self._reached = True
            status = exc.status_code
            if status in (401, 403):
                word = "rejected" if status == 401 else "refused access"
                raise ApiFatalError(self._scrub(f"{base_url} {word} the API key (HTTP {status}): {exc}; check "
                                                "API_KEY / --api-key")) from None
            if status == 404:
                return f"not found (HTTP 404), check model {self.settings.model!r} and base_url: {exc}"
            return f"HTTP {status}: {exc}"
        if isinstance(exc, openai.APITimeoutError):
            return f"timeout after {self.settings.timeout_s:g}s"
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc
            reason = f"connection error: {type(cause).__name__}: {cause}"
            if _never_connected(exc):
                logger.debug("no connection could be opened to %s", base_url)
            else:
                self._reached = True  # it accepted a connection, then dropped it: the server is there
            if not self._reached:
                raise ApiFatalError(self._scrub(f"cannot reach {base_url} ({reason}); check BASE_URL / --base-url "
                                                "and that the server is up")) from None
            return reason
        if isinstance(exc, _InvalidResponse):
            return f"invalid response: {exc}"
        return f"unexpected error: {type(exc).__name__}: {exc}"

    async def complete(
        self,
        messages: Sequence[dict[str, Any]],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
    ) -> ChatResult:
        """Send one chat request; transport faults are retried by the openai client, unusable answers here.

        Args:
            messages (Sequence[dict]): OpenAI chat messages, ``{"role": ..., "content": ...}``.
            max_tokens (int): most completion tokens.
            temperature (float): sampling temperature; 0 is greedy. Default is 0.0.
            top_p (float): nucleus sampling mass. Default is 1.0.

        Returns:
            ChatResult: text and usage, or ``text=None`` with ``error`` after the last attempt.

        Raises:
            ApiFatalError: the key is rejected (401/403) or the server has never been reached.
            ValueError: if ``messages`` is empty or ``max_tokens < 1`` (caller bugs, not API faults).
        """
        if not messages:
            raise ValueError("messages must not be empty")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        state = self._loop_state()
        params = {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p}
        async with state.semaphore:
            start = time.perf_counter()
            attempts = 0
            for retry in range(self.settings.max_retries + 1):
                try:
                    made, (text, p_tok, c_tok, finish) = await self._attempt(state.client, messages, **params)
                except _InvalidResponse as exc:
                    attempts += exc.attempts
                    reason = self._failure(exc)
                    if retry == self.settings.max_retries:
                        break
                    delay = self._invalid_answer_delay(retry)
                    logger.warning("unusable answer (%s); retrying in %.2fs", reason, delay)
                    await asyncio.sleep(delay)
                    continue
                except Exception as exc:  # noqa: BLE001 - every other failure is recorded or fatal
                    attempts += _attempts_made(exc)
                    reason = self._failure(exc)
                    break
                return ChatResult(text, p_tok, c_tok, attempts + made, None, time.perf_counter() - start, finish)
            error = self._scrub(f"{reason} (after {attempts} attempt{'s' if attempts > 1 else ''})")
            logger.warning("request failed: %s", error)
            return ChatResult(None, 0, 0, attempts, error, time.perf_counter() - start)

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
        tasks = [asyncio.ensure_future(self.complete(m, **kwargs)) for m in messages_list]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:  # e.g. ApiFatalError: nothing else is sent
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

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
