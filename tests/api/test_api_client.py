"""ChatClient against a real fault-injecting HTTP server: retries (the openai client's for transport faults, ours
for unusable answers), per-question errors, fatal errors, usage, concurrency."""

import asyncio
import logging
import socket
import time

import pytest
from fault_server import FaultServer, expected_echo

from gcache.api.client import ApiFatalError, ChatClient, ChatResult
from gcache.api.settings import ApiSettings

KEY = "sk-client-SECRET-key-9876543210"


@pytest.fixture
def server():
    # fault answers carry retry-after-ms: 5, so the openai client's retries wait 5 ms, not its 0.5 s backoff
    with FaultServer(retry_after_ms=5) as srv:
        yield srv


def make_client(base_url: str, api_key_override: str | None = None, **overrides) -> ChatClient:
    opts = dict(timeout_s=2.0, max_retries=3, max_concurrency=4, backoff_base_s=0.001, backoff_max_s=0.01)
    opts.update(overrides)
    return ChatClient(ApiSettings(api_key=api_key_override or KEY, base_url=base_url, model="fault-model", **opts),
                      seed=0)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def run_one(client: ChatClient, messages, **kw) -> ChatResult:
    kw.setdefault("max_tokens", 64)
    [result] = client.complete_many_sync([messages], **kw)
    return result


def test_success_returns_text_usage_and_forwards_params(server):
    messages = [{"role": "system", "content": "be brief please"}, {"role": "user", "content": "what is two plus two"}]
    r = run_one(make_client(server.base_url), messages, max_tokens=64, temperature=0.3, top_p=0.9)
    text, p_tok, c_tok = expected_echo(messages)
    assert (r.text, r.prompt_tokens, r.completion_tokens) == (text, p_tok, c_tok) == (text, 8, 6)
    assert (r.attempts, r.error, r.ok, r.finish_reason) == (1, None, True, "stop")
    assert r.total_tokens == 14 and r.latency_s > 0
    body = server.requests[-1]
    assert (body["model"], body["max_tokens"], body["temperature"], body["top_p"]) == ("fault-model", 64, 0.3, 0.9)
    assert server.auth_headers[-1] == f"Bearer {KEY}"


def test_max_tokens_truncation_is_reported(server):
    r = run_one(make_client(server.base_url), user("one two three four five"), max_tokens=3)
    assert (r.text, r.completion_tokens, r.finish_reason) == ("echo: one two", 3, "length")


def test_429_twice_then_success_on_third_attempt(server):
    msg = "hello [fault:429x2]"
    r = run_one(make_client(server.base_url), user(msg))
    assert r.ok and r.attempts == 3 and server.attempts(msg) == 3
    assert r.text == expected_echo(user(msg))[0]


def test_500_always_gives_error_result_after_max_retries(server, caplog):
    caplog.set_level(logging.DEBUG)
    msg = "boom [fault:500x99]"
    r = run_one(make_client(server.base_url, max_retries=3), user(msg))
    assert r.text is None and not r.ok
    assert r.attempts == 4 and server.attempts(msg) == 4  # 1 + max_retries
    assert "HTTP 500" in r.error and "after 4 attempts" in r.error
    assert (r.prompt_tokens, r.completion_tokens) == (0, 0)
    assert "request failed" in caplog.text and KEY not in caplog.text


@pytest.mark.parametrize("kind", ["garbage", "badshape"])
def test_invalid_answers_are_retried_then_reported(server, kind):
    msg = f"x [fault:{kind}]"
    r = run_one(make_client(server.base_url, max_retries=2), user(msg))
    assert r.text is None and r.attempts == 3 and server.attempts(msg) == 3
    assert "invalid response" in r.error


def test_garbage_once_then_success(server):
    msg = "x [fault:garbagex1]"
    r = run_one(make_client(server.base_url), user(msg))
    assert r.ok and r.attempts == 2 and server.attempts(msg) == 2


def test_hang_gives_timeout_error():
    with FaultServer(hang_s=10.0) as srv:
        msg = "slow [fault:hang]"
        r = run_one(make_client(srv.base_url, timeout_s=0.5, max_retries=1), user(msg))
        assert r.text is None and r.attempts == 2 and srv.attempts(msg) == 2
        assert "timeout after 0.5s" in r.error
        assert 1.0 <= r.latency_s < 5.0  # two attempts of 0.5 s each, not the 10 s hang


@pytest.mark.parametrize("status", [401, 403])
def test_rejected_key_stops_at_once_and_is_scrubbed(caplog, status):
    caplog.set_level(logging.DEBUG)  # openai/httpx debug logs included
    with FaultServer(api_key="sk-the-right-key-000") as srv:
        msg = f"hi [wrong key {status}]"
        client = make_client(srv.base_url)
        with pytest.raises(ApiFatalError) as err:
            if status == 401:  # the server answers a wrong bearer token with 401 ...
                run_one(client, user(msg))
            else:  # ... and a [fault:403] marker with 403 (refused for this key)
                run_one(make_client(srv.base_url, api_key_override="sk-the-right-key-000"), user(msg + " [fault:403]"))
        message = str(err.value)
    assert f"(HTTP {status})" in message and "API_KEY" in message and "\n" not in message
    if status == 401:
        assert srv.attempts(msg) == 1  # not retried
        # the server echoed the key it received in its error body; it must not survive
        assert "Incorrect API key provided: ***" in message
    assert KEY not in message and KEY not in caplog.text and KEY not in repr(client)


@pytest.mark.parametrize("status", [400, 404])
def test_other_client_errors_are_not_retried(server, status):
    msg = f"x [fault:{status}]"
    r = run_one(make_client(server.base_url), user(msg))
    assert r.attempts == 1 and server.attempts(msg) == 1 and f"{status}" in r.error


def test_retry_after_is_honoured(server):
    msg = "x [fault:429x1][retry-after:0.4]"
    r = run_one(make_client(server.base_url), user(msg))
    assert r.ok and r.attempts == 2 and r.latency_s >= 0.4


def test_transport_faults_use_the_openai_clients_backoff():
    # no retry-after: the openai client waits 0.5 s then 1 s (each less up to 25% jitter) before its retries
    with FaultServer() as srv:
        msg = "x [fault:503x2]"
        r = run_one(make_client(srv.base_url), user(msg))
        assert r.ok and r.attempts == 3 and srv.attempts(msg) == 3
        assert 0.75 * 1.5 <= r.latency_s < 1.5 + 1.0


def test_unreachable_server_stops_the_run_but_a_lost_server_is_one_questions_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ApiFatalError, match=f"cannot reach http://127.0.0.1:{port}/v1"):
        run_one(make_client(f"http://127.0.0.1:{port}/v1", max_retries=0), user("anyone?"))
    with FaultServer() as srv:
        client = make_client(srv.base_url, max_retries=0)
        assert run_one(client, user("first")).ok
    r = run_one(client, user("second"))  # it answered before: this question fails, the run goes on
    assert r.text is None and r.error.startswith("connection error")


def test_concurrency_bound_is_respected_and_order_kept(server):
    batch = [user(f"question {i} [delay:0.15]") for i in range(10)]
    client = make_client(server.base_url, max_concurrency=3)
    t0 = time.perf_counter()
    results = client.complete_many_sync(batch, max_tokens=32)
    elapsed = time.perf_counter() - t0
    assert server.max_in_flight == 3  # never more, and the bound was actually used
    assert [r.text for r in results] == [expected_echo(m)[0] for m in batch]
    assert elapsed >= 4 * 0.15  # ceil(10 / 3) waves of 0.15 s


def test_complete_many_sync_works_inside_a_running_loop_and_twice(server):
    client = make_client(server.base_url)

    async def from_async_code():
        return client.complete_many_sync([user("a b")], max_tokens=8)

    [r1] = asyncio.run(from_async_code())
    [r2] = client.complete_many_sync([user("c d")], max_tokens=8)
    assert (r1.text, r2.text) == ("echo: a b", "echo: c d")


def test_async_api_shares_one_semaphore_across_calls(server):
    async def main():
        async with make_client(server.base_url, max_concurrency=2) as client:
            singles = [client.complete(user(f"s{i} [delay:0.2]"), max_tokens=8) for i in range(3)]
            many = client.complete_many([user(f"m{i} [delay:0.2]") for i in range(3)], max_tokens=8)
            return await asyncio.gather(*singles, many)

    *singles, many = asyncio.run(main())
    assert all(r.ok for r in singles + many)
    assert server.max_in_flight == 2


def test_caller_bugs_raise(server):
    client = make_client(server.base_url)
    with pytest.raises(ValueError, match="messages"):
        asyncio.run(client.complete([], max_tokens=5))
    with pytest.raises(ValueError, match="max_tokens"):
        asyncio.run(client.complete(user("x"), max_tokens=0))


def test_a_connection_dropped_on_the_first_request_is_that_questions_error():
    """A server that accepts and hangs up (a proxy restarting, an overloaded server) was reached: at batch size 1
    the run must get past that question, not stop as if the address were wrong."""
    import threading

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        stop = threading.Event()

        def hang_up():
            listener.settimeout(0.1)
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except OSError:
                    continue
                conn.recv(65536)
                conn.close()

        thread = threading.Thread(target=hang_up, daemon=True)
        thread.start()
        try:
            r = run_one(make_client(f"http://127.0.0.1:{port}/v1", max_retries=0), user("first"))
        finally:
            stop.set()
            thread.join()
    assert r.text is None and r.error.startswith("connection error"), r


def test_a_short_rejected_key_is_scrubbed_too(caplog):
    caplog.set_level(logging.DEBUG)
    with FaultServer(api_key="sk-the-right-key-000") as srv:
        with pytest.raises(ApiFatalError) as err:
            run_one(make_client(srv.base_url, api_key_override="abc12"), user("hi [short key]"))
    message = str(err.value)
    assert "(HTTP 401)" in message and "Incorrect API key provided: ***" in message
    assert "abc12" not in message and "abc12" not in caplog.text
