"""A minimal OpenAI-compatible chat server over any :class:`ChatBackend` (e.g. a local model).

Routes: ``POST /v1/chat/completions`` (non-streaming, ``n=1``), ``GET /v1/models`` and
``GET /health``. Errors use the OpenAI body ``{"error": {"message", "type", "param", "code"}}``.

A local model is not thread-safe, so the backend is only ever called from one worker thread,
one call at a time. Requests that arrive while it is busy wait in a queue; with
``max_batch_size > 1`` the next call takes up to that many queued requests that share the same
sampling parameters (micro-batching). The default is 1 because batching pads prompts, which can
change greedy outputs slightly, and reproducible numbers come first.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import hmac
import logging
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from gcache._extras import extra_imports

with extra_imports("serve", "the OpenAI-compatible server (gcache serve)"):
    import uvicorn
    from fastapi import Depends, FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, ConfigDict, Field

logger = logging.getLogger(__name__)

__all__ = ["ChatBackend", "Completion", "ServerThread", "build_app", "run_server"]


@dataclass
class Completion:
    """One generated answer.

    Args:
        text (str): generated text (without the prompt).
        prompt_tokens (int): tokens in the rendered prompt.
        completion_tokens (int): tokens generated.
        finish_reason (str): ``"stop"`` (end of sequence) or ``"length"`` (hit the limit).
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


class ChatBackend(Protocol):
    """What the server needs from a model: batched chat generation.

    ``chat`` is always called from the same single worker thread, never concurrently.
    """

    def chat(
        self,
        messages_batch: list[list[dict[str, str]]],
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
    ) -> list[Completion]:
        """Generate one completion per conversation.

        Args:
            messages_batch (list[list[dict]]): b conversations of ``{"role", "content"}`` dicts
                (roles ``system``/``user``/``assistant``/``tool``; content is plain text).
            max_new_tokens (int): most tokens to generate per conversation.
            temperature (float): 0 means greedy.
            top_p (float): nucleus sampling mass.

        Returns:
            list[Completion]: b completions, in input order.
        """
        ...


# A backend may also offer ``context_length: int | None`` and ``prompt_tokens(messages) -> int`` (thread-safe): the
# server then answers a prompt that does not fit with HTTP 400 and caps ``max_tokens`` at what fits.


# -- errors -------------------------------------------------------------------------------------
class _ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        type: str = "invalid_request_error",
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.type, self.code = status, message, param, type, code

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status)


# -- request schema -----------------------------------------------------------------------------
class _Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None

    def plain(self) -> dict[str, str]:
        """``{"role", "content"}`` with text parts joined and ``developer`` read as ``system``."""
        content = self.content
        if isinstance(content, list):
            parts = []
            for part in content:
                if part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise _ApiError(400, "only text content parts are supported", param="messages")
                parts.append(part["text"])
            content = "\n".join(parts)
        return {"role": "system" if self.role == "developer" else self.role, "content": content or ""}


class _ChatRequest(BaseModel):
    # Unknown OpenAI parameters (seed, user, metadata, ...) are accepted and ignored; the ones
    # that would change the answer's meaning are refused in _check_supported.
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    messages: list[_Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: int = 1
    stream: bool = False


_UNSUPPORTED = ("stop", "tools", "functions", "logit_bias", "logprobs", "top_logprobs")


def _check_supported(req: _ChatRequest) -> None:
    if req.stream:
        raise _ApiError(400, "stream=true is not supported by this server; send stream=false", param="stream")
    if req.n != 1:
        raise _ApiError(400, f"only n=1 is supported, got n={req.n}", param="n")
    extra = req.model_extra or {}
    for name in _UNSUPPORTED:
        if extra.get(name) not in (None, False, [], {}):
            raise _ApiError(400, f"parameter {name!r} is not supported by this server", param=name)
    fmt = extra.get("response_format")
    if fmt not in (None, {"type": "text"}):
        raise _ApiError(400, "only response_format {'type': 'text'} is supported", param="response_format")


# -- single-threaded backend with micro-batching -----------------------------------------------
@dataclass
class _Job:
    messages: list[dict[str, str]]
    params: tuple[int, float, float]  # max_new_tokens, temperature, top_p
    future: asyncio.Future[Completion]


class _Batcher:
    """Queues requests and feeds them to the backend from one worker thread."""

    def __init__(self, backend: ChatBackend, max_batch_size: int) -> None:
        self.backend = backend
        self.max_batch_size = max_batch_size
        self._pending: deque[_Job] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    @property
    def queued(self) -> int:
        """Requests waiting for the backend (not counting the batch it is running)."""
        return sum(not job.future.done() for job in self._pending)

    async def submit(self, messages: list[dict[str, str]], params: tuple[int, float, float]) -> Completion:
        loop = asyncio.get_running_loop()
        job = _Job(messages, params, loop.create_future())
        self._pending.append(job)
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._drain())
        return await job.future

    def _next_batch(self) -> list[_Job]:
        """Oldest live job plus up to ``max_batch_size - 1`` later ones with equal params."""
        while self._pending and self._pending[0].future.done():  # client went away
            self._pending.popleft()
        if not self._pending:
            return []
        first = self._pending.popleft()
        batch, skipped = [first], []
        while self._pending and len(batch) < self.max_batch_size:
            job = self._pending.popleft()
            if job.future.done():
                continue
            (batch if job.params == first.params else skipped).append(job)
        self._pending.extendleft(reversed(skipped))  # others keep their place in the queue
        return batch

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="gcache-backend")
        while batch := self._next_batch():
            max_new_tokens, temperature, top_p = batch[0].params
            logger.debug("backend call: batch of %d requests, %d waiting", len(batch), self.queued)
            call = functools.partial(
                self.backend.chat,
                [job.messages for job in batch],
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                top_p=top_p,
            )
            try:
                completions = await loop.run_in_executor(self._executor, call)
                if len(completions) != len(batch):
                    raise RuntimeError(f"backend returned {len(completions)} completions for {len(batch)} requests")
            except Exception as exc:  # noqa: BLE001 - reported to each waiting request
                logger.exception("backend failed on a batch of %d", len(batch))
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            for job, completion in zip(batch, completions):
                if not job.future.done():
                    job.future.set_result(completion)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


# -- guard --------------------------------------------------------------------------------------
class _Guard:
    """ASGI middleware run before any body is read: the key is checked on the headers alone, and a body is refused
    past ``max_body_bytes`` (by its Content-Length, or while it streams in), so a client without a key cannot make
    the server buffer hundreds of MiB (FastAPI reads the body before it runs the key check)."""

    def __init__(self, app: Any, api_key: str | None, max_body_bytes: int) -> None:
        self.app, self.api_key, self.max_body_bytes = app, api_key, max_body_bytes

    @staticmethod
    async def _reply(send: Any, error: _ApiError) -> None:
        response = error.response()
        await send({"type": "http.response.start", "status": response.status_code,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(response.body)).encode())]})
        await send({"type": "http.response.body", "body": response.body})

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        if self.api_key is not None and scope.get("path", "").startswith("/v1/"):
            sent = headers.get(b"authorization", b"")
            if not hmac.compare_digest(sent, f"Bearer {self.api_key}".encode()):
                await self._reply(send, _ApiError(401, "invalid API key", code="invalid_api_key"))
                return
        too_large = _ApiError(413, f"request body larger than {self.max_body_bytes} bytes",
                              code="request_too_large")
        try:
            declared = int(headers.get(b"content-length", b"0"))
        except ValueError:
            declared = 0
        if declared > self.max_body_bytes:
            await self._reply(send, too_large)
            return
        # Read the body here, at most the cap (FastAPI would turn an error raised while it reads into a 400).
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                await self._reply(send, too_large)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()  # later calls wait for the disconnect, as the server's own receive does

        await self.app(scope, replay, send)


# -- app ----------------------------------------------------------------------------------------
def build_app(
    backend: ChatBackend,
    model_name: str,
    *,
    max_batch_size: int = 1,
    default_max_tokens: int = 512,
    api_key: str | None = None,
    max_body_bytes: int = 8 * 2**20,
) -> FastAPI:
    """Build the OpenAI-compatible FastAPI app.

    Args:
        backend (ChatBackend): the model behind the server.
        model_name (str): name listed by ``/v1/models``; a request naming another model gets 404.
        max_batch_size (int): most queued requests per backend call. Default is 1 (no batching).
        default_max_tokens (int): limit when a request gives neither ``max_tokens`` nor
            ``max_completion_tokens``. Default is 512.
        api_key (str | None): if set, requests must send ``Authorization: Bearer <api_key>``.
            Default is None (no check, for a server bound to 127.0.0.1).
        max_body_bytes (int): largest request body; larger ones get HTTP 413, before the key check reads
            anything. Default is 8 MiB.

    A backend with ``context_length`` and ``prompt_tokens(messages)`` gets prompts that do not fit answered with
    HTTP 400 (code ``context_length_exceeded``) and ``max_tokens`` capped at what fits.

    Returns:
        FastAPI: the app; serve it with :func:`run_server` or :class:`ServerThread`.

    Raises:
        ValueError: if ``model_name`` is empty or a limit is < 1.

    Example:
        >>> app = build_app(my_backend, "smollm2-135m")  # doctest: +SKIP
        >>> with ServerThread(app) as srv:  # doctest: +SKIP
        ...     openai.OpenAI(api_key="EMPTY", base_url=srv.base_url).models.list()
    """
    if not model_name:
        raise ValueError("model_name must be a non-empty string")
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
    if default_max_tokens < 1:
        raise ValueError(f"default_max_tokens must be >= 1, got {default_max_tokens}")
    batcher = _Batcher(backend, max_batch_size)
    created = int(time.time())
    context_length = getattr(backend, "context_length", None)
    count_prompt = getattr(backend, "prompt_tokens", None)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        batcher.close()

    app = FastAPI(title="gcache OpenAI-compatible server", lifespan=lifespan)
    app.add_middleware(_Guard, api_key=api_key, max_body_bytes=max_body_bytes)
    app.state.model_name = model_name
    app.state.batcher = batcher

    @app.exception_handler(_ApiError)
    async def _api_error(request: Request, exc: _ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0]
        loc = [str(x) for x in err.get("loc", ()) if x != "body"]
        where = ".".join(loc)
        message = f"{where}: {err.get('msg')}" if where else str(err.get("msg"))
        return _ApiError(400, message, param=where or None).response()

    async def check_key(request: Request) -> None:
        if api_key is None:
            return
        sent = request.headers.get("authorization", "")
        if not hmac.compare_digest(sent.encode(), f"Bearer {api_key}".encode()):
            raise _ApiError(401, "invalid API key", code="invalid_api_key")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models", dependencies=[Depends(check_key)])
    async def models() -> dict[str, Any]:
        entry = {"id": model_name, "object": "model", "created": created, "owned_by": "gcache"}
        return {"object": "list", "data": [entry]}

    @app.post("/v1/chat/completions", dependencies=[Depends(check_key)])
    async def chat_completions(req: _ChatRequest) -> dict[str, Any]:
        _check_supported(req)
        if req.model is not None and req.model != model_name:
            message = f"model {req.model!r} does not exist; this server serves {model_name!r}"
            raise _ApiError(404, message, param="model", code="model_not_found")
        messages = [m.plain() for m in req.messages]
        for i, m in enumerate(messages):
            try:
                m["content"].encode("utf-8")
            except UnicodeEncodeError as err:  # a lone surrogate ("\\ud800" in the JSON) is no text to tokenize
                raise _ApiError(400, f"messages[{i}].content is not valid Unicode text ({err.reason} at "
                                     f"character {err.start})", param=f"messages.{i}.content") from None
        max_new = req.max_completion_tokens or req.max_tokens or default_max_tokens
        if context_length is not None and count_prompt is not None:
            n_prompt = await asyncio.to_thread(count_prompt, messages)  # a long prompt must not stall the loop
            room = context_length - n_prompt
            if room < 1:
                raise _ApiError(400, f"the prompt has {n_prompt} tokens; this model's context holds {context_length} "
                                     "(prompt and completion together)", param="messages",
                                code="context_length_exceeded")
            max_new = min(max_new, room)
        try:
            out = await batcher.submit(messages, (max_new, req.temperature, req.top_p))
        except Exception as exc:  # noqa: BLE001 - a backend failure is a 500 for this request
            raise _ApiError(500, f"backend error: {type(exc).__name__}: {exc}", type="server_error") from exc
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model_name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": out.text},
                    "finish_reason": out.finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": out.prompt_tokens,
                "completion_tokens": out.completion_tokens,
                "total_tokens": out.prompt_tokens + out.completion_tokens,
            },
        }

    return app


def run_server(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, *, log_level: str = "info") -> None:
    """Serve ``app`` with uvicorn until interrupted (blocking).

    Args:
        app (FastAPI): from :func:`build_app`.
        host (str): interface; keep 127.0.0.1 unless the app checks an ``api_key``. Default is 127.0.0.1.
        port (int): TCP port. Default is 8000.
        log_level (str): uvicorn log level. Default is ``"info"``.
    """
    logger.info("serving %s on http://%s:%d/v1", getattr(app.state, "model_name", "?"), host, port)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


class ServerThread:
    """Run an ASGI app with uvicorn in a background thread (tests, notebooks, embedding).

    Args:
        app (Any): ASGI app, e.g. from :func:`build_app`.
        host (str): interface to bind. Default is ``"127.0.0.1"``.
        port (int): TCP port; 0 picks a free one. Default is 0.
        startup_timeout_s (float): how long :meth:`start` waits for readiness. Default is 30.

    Attributes:
        port (int): the bound port (known after construction).
        base_url (str): ``http://HOST:PORT/v1`` for OpenAI clients.

    Example:
        >>> with ServerThread(build_app(backend, "tiny")) as srv:  # doctest: +SKIP
        ...     client = openai.OpenAI(api_key="EMPTY", base_url=srv.base_url)
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, *, startup_timeout_s: float = 30.0) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.port: int = self._sock.getsockname()[1]
        # A wildcard bind is reachable on loopback; IPv6 literals need brackets in URLs.
        shown = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        shown = f"[{shown}]" if ":" in shown else shown
        self.base_url = f"http://{shown}:{self.port}/v1"
        self.startup_timeout_s = startup_timeout_s
        # log_config=None leaves the host process's logging configuration alone.
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, name=f"uvicorn-{self.port}", daemon=True
        )

    def start(self) -> ServerThread:
        """Start serving and wait until the server accepts requests.

        Raises:
            RuntimeError: if the server stops or is not ready within ``startup_timeout_s``.
        """
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout_s
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"server thread exited during startup (port {self.port}); see logs")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server not ready after {self.startup_timeout_s}s")
            time.sleep(0.01)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask uvicorn to exit, wait for the thread, and release the socket."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                logger.warning("server thread on port %d did not stop within %.1fs", self.port, timeout_s)
        self._sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
