"""A real OpenAI-compatible HTTP server that misbehaves on request, for client tests.

The last user message selects the behaviour with markers:

``[fault:KIND]`` or ``[fault:KINDxN]``
    Answer the first N attempts (default: every attempt) with the fault, then succeed.
    KIND is an HTTP status (``429``, ``500``, ``503``, ``400``, ``401``, ...), ``garbage``
    (200 with a body that is not JSON), ``badshape`` (200 with JSON that is not a completion)
    or ``hang`` (sleep ``hang_s`` seconds before answering, past any small client timeout).
``[retry-after:S]``
    Add a ``Retry-After: S`` header to fault answers.
``[delay:S]``
    Sleep S seconds before a successful answer (to overlap concurrent requests).

``FaultServer(retry_after_ms=N)`` adds ``retry-after-ms: N`` to every fault answer without a marker, as some
providers do; the openai client then retries after N ms instead of its 0.5 s backoff (fast tests).

A success echoes the last user message: ``content = "echo: " + text``, cut to ``max_tokens``
words (finish_reason ``length``). Token counts are whitespace words, so tests can recompute
them: ``prompt_tokens = sum(len(m["content"].split()))`` over all messages,
``completion_tokens = len(content.split())``.

If the server has an ``api_key``, a request with another bearer token gets a 401 whose body
echoes the token it received, as some real providers do (so tests can prove a client scrubs it).

Attempts are counted per distinct last user message (:meth:`FaultServer.attempts`), so tests
should use a distinct message per scenario.

Example:
    >>> with FaultServer() as srv:
    ...     srv.base_url  # doctest: +SKIP
    'http://127.0.0.1:54321/v1'
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_FAULT = re.compile(r"\[fault:([a-z]+|\d{3})(?:x(\d+))?\]")
_RETRY_AFTER = re.compile(r"\[retry-after:([0-9.]+)\]")
_DELAY = re.compile(r"\[delay:([0-9.]+)\]")


def _last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            return str(message.get("content", ""))
    return ""


def expected_echo(messages: list[dict[str, str]], max_tokens: int | None = None) -> tuple[str, int, int]:
    """Independent reference of what a successful answer holds.

    Args:
        messages (list[dict]): the request messages.
        max_tokens (int | None): request limit in words. Default is None (no limit).

    Returns:
        tuple[str, int, int]: content, prompt_tokens, completion_tokens.
    """
    last = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    words = ("echo: " + last).split()
    if max_tokens is not None:
        words = words[:max_tokens]
    return " ".join(words), sum(len(m["content"].split()) for m in messages), len(words)


class FaultServer:
    """Threaded fault-injecting chat server on 127.0.0.1 (random free port).

    Args:
        api_key (str | None): bearer token to require; None accepts any. Default is None.
        hang_s (float): how long ``[fault:hang]`` stalls (cut short on :meth:`close`). Default is 5.
        model (str): model name reported in answers. Default is ``"fault-model"``.
        retry_after_ms (float | None): ``retry-after-ms`` header of fault answers. Default is None (none).

    Attributes:
        base_url (str): ``http://127.0.0.1:PORT/v1``.
        max_in_flight (int): most requests handled at the same time so far.
        requests (list[dict]): JSON bodies of all requests, in arrival order.
        auth_headers (list[str]): Authorization header of each request.
    """

    def __init__(self, api_key: str | None = None, hang_s: float = 5.0, model: str = "fault-model",
                 retry_after_ms: float | None = None) -> None:
        self.api_key = api_key
        self.retry_after_ms = retry_after_ms
        self.hang_s = hang_s
        self.model = model
        self.max_in_flight = 0
        self.requests: list[dict[str, Any]] = []
        self.auth_headers: list[str] = []
        self._counts: Counter[str] = Counter()
        self._in_flight = 0
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._make_handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="fault-server", daemon=True
        )
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> FaultServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def attempts(self, last_user_message: str) -> int:
        """Number of requests seen whose last user message is exactly this text."""
        with self._lock:
            return self._counts[last_user_message]

    # -- request handling ----------------------------------------------------------------------
    def _make_handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout): nothing to answer

            def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
                body = {"error": {"message": message, "type": "fault", "param": None, "code": str(status)}}
                self._send(status, json.dumps(body).encode(), headers)

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/v1/models":
                    data = {"object": "list", "data": [{"id": server.model, "object": "model", "owned_by": "test"}]}
                    self._send(200, json.dumps(data).encode())
                else:
                    self._error(404, f"no route {self.path}")

            def do_POST(self) -> None:
                with server._lock:
                    server._in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server._in_flight)
                try:
                    self._handle_post()
                finally:
                    with server._lock:
                        server._in_flight -= 1

            def _handle_post(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._error(404, f"no route {self.path}")
                    return
                body = json.loads(raw)
                auth = self.headers.get("Authorization", "")
                text = _last_user_text(body)
                with server._lock:
                    server.requests.append(body)
                    server.auth_headers.append(auth)
                    server._counts[text] += 1
                    attempt = server._counts[text]

                if server.api_key is not None and auth != f"Bearer {server.api_key}":
                    token = auth.removeprefix("Bearer ")
                    self._error(401, f"Incorrect API key provided: {token}. You can find your key in the console.")
                    return

                fault = _FAULT.search(text)
                if fault is not None and (fault.group(2) is None or attempt <= int(fault.group(2))):
                    kind = fault.group(1)
                    retry_after = _RETRY_AFTER.search(text)
                    if retry_after:
                        headers = {"Retry-After": retry_after.group(1)}
                    elif server.retry_after_ms is not None:
                        headers = {"retry-after-ms": str(server.retry_after_ms)}
                    else:
                        headers = None
                    if kind == "garbage":
                        self._send(200, b"<html>this is not json{", headers)
                    elif kind == "badshape":
                        self._send(200, json.dumps({"unexpected": True}).encode(), headers)
                    elif kind == "hang":
                        server._closing.wait(server.hang_s)
                        self._error(504, "hung request finally answered", headers)
                    elif kind.isdigit():
                        self._error(int(kind), f"injected fault {kind} on attempt {attempt}", headers)
                    else:
                        self._error(400, f"unknown fault kind {kind!r}")
                    return

                delay = _DELAY.search(text)
                if delay is not None:
                    time.sleep(float(delay.group(1)))
                content, prompt_tokens, completion_tokens = expected_echo(body["messages"], body.get("max_tokens"))
                full = len(("echo: " + text).split())
                answer = {
                    "id": f"chatcmpl-{uuid.uuid4().hex}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body.get("model", server.model),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": content},
                            "finish_reason": "length" if completion_tokens < full else "stop",
                            "logprobs": None,
                        }
                    ],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": completion_tokens,
                        "total_tokens": prompt_tokens + completion_tokens,
                    },
                }
                self._send(200, json.dumps(answer).encode())

        return Handler
