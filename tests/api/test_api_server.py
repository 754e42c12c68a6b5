"""OpenAI-compatible server: real HTTP round-trips through ServerThread over a tiny real model.

The backend is a random-weight 2-layer Llama (hidden 64, vocab 256) with a byte-level
tokenizer (token id = UTF-8 byte), generating with ``model.generate``. Expected answers come
from an independent greedy loop that re-runs the full forward pass at every step (no KV-cache).
"""

import asyncio
import socket
import threading
import time

import httpx
import openai
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from gcache.api.client import ChatClient
from gcache.api.server import Completion, ServerThread, build_app
from gcache.api.settings import ApiSettings

MODEL_NAME = "tiny-llama"
EOS = ord("\n")  # the byte tokenizer's end of sequence


def render(messages: list[dict[str, str]]) -> list[int]:
    """Byte-level chat template: ``<role>content\\n`` per message, then ``<assistant>``."""
    text = "".join(f"<{m['role']}>{m['content']}\n" for m in messages) + "<assistant>"
    return list(text.encode("utf-8"))


def decode(ids: list[int]) -> str:
    return bytes(ids).decode("utf-8", errors="replace")


class TinyLlamaBackend:
    """A real (random-weight) causal LM behind the ChatBackend protocol; records its calls."""

    def __init__(self, seed: int = 0, hold_first_call: threading.Event | None = None) -> None:
        torch.manual_seed(seed)
        config = LlamaConfig(
            vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
            bos_token_id=None, eos_token_id=EOS, pad_token_id=0,
        )
        self.model = LlamaForCausalLM(config).eval()
        self.hold_first_call = hold_first_call
        self.calls: list[tuple[int, tuple[int, float, float]]] = []  # (batch size, params)
        self.max_concurrent = 0
        self._active = 0
        self._lock = threading.Lock()

    def chat(self, messages_batch, *, max_new_tokens, temperature, top_p):
        with self._lock:
            self._active += 1
            self.max_concurrent = max(self.max_concurrent, self._active)
            first = not self.calls
            self.calls.append((len(messages_batch), (max_new_tokens, temperature, top_p)))
        try:
            if first and self.hold_first_call is not None:
                self.hold_first_call.wait(timeout=30)  # lets the test queue up requests meanwhile
            # one conversation at a time: no padding, so batching cannot change the answers
            return [self._one(m, max_new_tokens, temperature, top_p) for m in messages_batch]
        finally:
            with self._lock:
                self._active -= 1

    @torch.no_grad()
    def _one(self, messages, max_new_tokens, temperature, top_p) -> Completion:
        prompt = torch.tensor([render(messages)])
        sampling = {"do_sample": False}
        if temperature > 0:
            sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p}
        out = self.model.generate(
            prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=max_new_tokens,
            eos_token_id=EOS, pad_token_id=0, **sampling,
        )
        new = out[0, prompt.shape[1]:].tolist()
        stopped = bool(new) and new[-1] == EOS
        text_ids = new[:-1] if stopped else new
        return Completion(decode(text_ids), prompt.shape[1], len(new), "stop" if stopped else "length")


@torch.no_grad()
def reference_greedy(model, messages, max_new_tokens) -> tuple[str, int, int, str]:
    """Full-recompute greedy decoding: text, prompt tokens, completion tokens, finish reason."""
    ids = render(messages)
    n_prompt, new = len(ids), []
    for _ in range(max_new_tokens):
        logits = model(torch.tensor([ids + new])).logits[0, -1]
        new.append(int(logits.argmax()))
        if new[-1] == EOS:
            return decode(new[:-1]), n_prompt, len(new), "stop"
    return decode(new), n_prompt, len(new), "length"


@pytest.fixture(scope="module")
def backend():
    return TinyLlamaBackend()


@pytest.fixture(scope="module")
def server(backend):
    with ServerThread(build_app(backend, MODEL_NAME)) as srv:
        yield srv


@pytest.fixture(scope="module")
def oai(server):
    with openai.OpenAI(api_key="EMPTY", base_url=server.base_url, max_retries=0) as client:
        yield client


CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is 2+2?"},
]


def test_round_trip_matches_independent_greedy_decoding(oai, backend):
    resp = oai.chat.completions.create(model=MODEL_NAME, messages=CONVERSATION, max_tokens=12, temperature=0.0)
    text, n_prompt, n_new, finish = reference_greedy(backend.model, CONVERSATION, 12)
    choice = resp.choices[0]
    assert (choice.message.content, choice.finish_reason, choice.message.role) == (text, finish, "assistant")
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (n_prompt, n_new)
    assert n_prompt == len("<system>You are terse.\n<user>What is 2+2?\n<assistant>")
    assert resp.usage.total_tokens == n_prompt + n_new
    assert resp.model == MODEL_NAME and resp.object == "chat.completion" and resp.id.startswith("chatcmpl-")


def test_max_completion_tokens_and_text_parts(oai, backend):
    messages = [{"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "there"}]}]
    resp = oai.chat.completions.create(model=MODEL_NAME, messages=messages, max_completion_tokens=5, temperature=0)
    plain = [{"role": "user", "content": "hi\nthere"}]
    text, n_prompt, n_new, _ = reference_greedy(backend.model, plain, 5)
    assert resp.choices[0].message.content == text
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (n_prompt, n_new)
    assert n_new <= 5


def test_models_lists_the_served_name(oai):
    assert [m.id for m in oai.models.list().data] == [MODEL_NAME]


def test_stream_true_is_a_400_with_openai_error_body(oai, server):
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model=MODEL_NAME, messages=CONVERSATION, max_tokens=4, stream=True)
    assert info.value.status_code == 400
    resp = httpx.post(
        f"{server.base_url}/chat/completions",
        json={"model": MODEL_NAME, "messages": CONVERSATION, "stream": True},
    )
    assert resp.status_code == 400
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert (err["param"], err["type"]) == ("stream", "invalid_request_error")
    assert "stream" in err["message"]


@pytest.mark.parametrize(
    "patch, param",
    [
        ({"n": 2}, "n"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"messages": []}, "messages"),
        ({"temperature": 3.0}, "temperature"),
        ({"stop": ["\n"]}, "stop"),
    ],
)
def test_bad_requests_get_400(server, patch, param):
    body = {"model": MODEL_NAME, "messages": CONVERSATION, "max_tokens": 4, **patch}
    resp = httpx.post(f"{server.base_url}/chat/completions", json=body)
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == param


def test_sampling_request_is_served(oai):
    resp = oai.chat.completions.create(
        model=MODEL_NAME, messages=CONVERSATION, max_tokens=6, temperature=0.8, top_p=0.9
    )
    assert resp.choices[0].finish_reason in ("stop", "length")
    assert 1 <= resp.usage.completion_tokens <= 6


def test_build_app_validates_arguments(backend):
    with pytest.raises(ValueError, match="model_name"):
        build_app(backend, "")
    with pytest.raises(ValueError, match="max_batch_size"):
        build_app(backend, MODEL_NAME, max_batch_size=0)


def test_unknown_model_is_404(oai):
    with pytest.raises(openai.NotFoundError, match="tiny-llama"):
        oai.chat.completions.create(model="qwen-flash", messages=CONVERSATION, max_tokens=4)


def test_chat_client_end_to_end_and_backend_is_never_called_concurrently(server, backend):
    conversations = [[{"role": "user", "content": f"question number {i}"}] for i in range(4)]
    settings = ApiSettings(api_key="EMPTY", base_url=server.base_url, model=MODEL_NAME, max_concurrency=4)
    results = ChatClient(settings).complete_many_sync(conversations, max_tokens=8)
    for conv, r in zip(conversations, results):
        text, n_prompt, n_new, finish = reference_greedy(backend.model, conv, 8)
        assert (r.text, r.prompt_tokens, r.completion_tokens, r.finish_reason) == (text, n_prompt, n_new, finish)
        assert r.attempts == 1
    assert backend.max_concurrent == 1


def wait_until(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def test_micro_batching_groups_equal_params_and_keeps_answers():
    release = threading.Event()
    backend = TinyLlamaBackend(hold_first_call=release)
    app = build_app(backend, MODEL_NAME, max_batch_size=3)
    # under greedy decoding top_p has no effect, so answers are checkable, yet the two values
    # must never share a backend call
    requests = [([{"role": "user", "content": f"q{i}"}], 0.5 if i % 2 else 1.0) for i in range(7)]

    async def send_all(base_url):
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
            def post(messages, top_p):
                body = {"messages": messages, "max_tokens": 6, "temperature": 0, "top_p": top_p}
                return asyncio.create_task(http.post("/chat/completions", json=body))

            first = post(*requests[0])
            await asyncio.to_thread(wait_until, lambda: len(backend.calls) == 1)  # backend now busy
            rest = [post(*r) for r in requests[1:]]
            await asyncio.to_thread(wait_until, lambda: app.state.batcher.queued == 6)
            release.set()
            return [await first, *[await t for t in rest]]

    with ServerThread(app) as srv:
        responses = asyncio.run(send_all(srv.base_url))
    for (messages, _), resp in zip(requests, responses):
        assert resp.status_code == 200
        assert resp.json()["choices"][0]["message"]["content"] == reference_greedy(backend.model, messages, 6)[0]
    # after the first call the queue holds q1..q6 (arrival order varies), three per top_p value:
    # two full batches, one per value
    calls = [(size, params[2]) for size, params in backend.calls]
    assert calls[0] == (1, 1.0) and sorted(calls[1:]) == [(3, 0.5), (3, 1.0)]
    assert backend.max_concurrent == 1


def test_backend_error_is_a_500_and_server_keeps_serving():
    class Broken:
        def chat(self, messages_batch, **kw):
            raise RuntimeError("out of memory, pretend")

    with ServerThread(build_app(Broken(), MODEL_NAME)) as srv:
        for _ in range(2):
            resp = httpx.post(f"{srv.base_url}/chat/completions", json={"messages": CONVERSATION, "max_tokens": 3})
            assert resp.status_code == 500
            assert resp.json()["error"]["type"] == "server_error"
            assert "out of memory, pretend" in resp.json()["error"]["message"]


def test_server_api_key_is_checked(backend):
    with ServerThread(build_app(backend, MODEL_NAME, api_key="srv-key")) as srv:
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(api_key="wrong", base_url=srv.base_url, max_retries=0).models.list()
        models = openai.OpenAI(api_key="srv-key", base_url=srv.base_url, max_retries=0).models.list()
        assert [m.id for m in models.data] == [MODEL_NAME]


def test_server_thread_shuts_down_and_frees_the_port(backend):
    with ServerThread(build_app(backend, MODEL_NAME)) as srv:
        assert srv.base_url == f"http://127.0.0.1:{srv.port}/v1"
        assert httpx.get(f"http://127.0.0.1:{srv.port}/health").json() == {"status": "ok"}
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{srv.port}/health", timeout=2)
    with socket.socket() as s:  # the port can be bound again
        s.bind(("127.0.0.1", srv.port))


def test_a_lone_surrogate_is_a_400(server):
    body = b'{"messages": [{"role": "user", "content": "hi \\ud800 there"}], "max_tokens": 2}'
    resp = httpx.post(f"{server.base_url}/chat/completions", content=body,
                      headers={"content-type": "application/json"})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == "messages.0.content"


def _raw_response(port: int, head: bytes) -> bytes:
    """Send only the request head (no body) and read what the server answers within 5 s."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(head)
        return conn.recv(4096)


def test_a_huge_body_is_refused_before_it_is_read(backend):
    app = build_app(backend, MODEL_NAME, api_key="sk-serve-key-123456", max_body_bytes=1024)
    with ServerThread(app) as srv:
        huge = 300 * 2**20
        head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {huge}\r\n\r\n").encode()
        # Without a key: 401 at once, though not one byte of the 300 MiB was sent (nothing was buffered).
        assert _raw_response(srv.port, head).startswith(b"HTTP/1.1 401")
        keyed = head.replace(b"Host: x\r\n", b"Host: x\r\nAuthorization: Bearer sk-serve-key-123456\r\n")
        assert _raw_response(srv.port, keyed).startswith(b"HTTP/1.1 413")
        # A body that streams in without a length is cut off at the cap too.
        chunks = (b"x" * 512 for _ in range(8))
        resp = httpx.post(f"{srv.base_url}/chat/completions", content=chunks,
                          headers={"Authorization": "Bearer sk-serve-key-123456"})
        assert resp.status_code == 413 and resp.json()["error"]["code"] == "request_too_large"
        ok = httpx.post(f"{srv.base_url}/chat/completions", json={"messages": CONVERSATION, "max_tokens": 2},
                        headers={"Authorization": "Bearer sk-serve-key-123456"})
        assert ok.status_code == 200
