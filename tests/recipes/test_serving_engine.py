"""Text agents on a serving engine (vLLM, SGLang, ...): ``gcache serve`` stands in for the OpenAI-compatible server.

The reference is the same text team on the local model: with greedy decoding and the same model behind the
server, every agent must write exactly what it writes locally, with the server batching concurrent requests.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gcache.cli import main
from serve_process import gcache_serve
from gcache.io import ResultStore

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # a gcache serve process

MODEL = ["--model", "tiny-random-qwen3", "--max-new-tokens", "10", "--batch-size", "4"]


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory):
    """``(base URL, log file)`` of ``gcache serve`` over the tiny random Qwen3, batching up to 4 requests."""
    log = tmp_path_factory.mktemp("server") / "serve.log"
    with gcache_serve("--log-level", "DEBUG", "serve", "--model", "tiny-random-qwen3", "--max-batch-size", "4",
                      log=log, timeout=120) as base:
        yield base, log


def _batch_sizes(log: Path) -> list[int]:
    return [int(m) for m in re.findall(r"backend call: batch of (\d+) requests", log.read_text())]


def _questions(path: Path, n: int = 4) -> Path:
    forms = ["Ann has {a} pens and buys {b} more. How many pens?", "What is {a} times {b}?"]
    path.write_text("".join(json.dumps({"question": forms[i % 2].format(a=3 + i, b=7 + 2 * i),
                                        "answer": f"#### {i}"}) + "\n" for i in range(n)))
    return path


@pytest.mark.parametrize("method", ["single", "text_chain"])
def test_text_agents_on_a_server_write_what_local_agents_write(tiny_server, tmp_path, method):
    url, log = tiny_server
    data = _questions(tmp_path / "q.jsonl")
    base = ["eval", "--method", method, "--data", str(data), *MODEL]
    assert main([*base, "--mode", "local", "--out", str(tmp_path / "local")]) == 0
    calls = len(_batch_sizes(log))
    assert main([*base, "--mode", "api", "--base-url", url, "--api-key", "EMPTY", "--api-model",
                 "tiny-random-qwen3", "--api-concurrency", "4", "--out", str(tmp_path / "served")]) == 0
    local, served = ResultStore(tmp_path / "local").load(), ResultStore(tmp_path / "served").load()
    assert len(local) == len(served) == 4
    # the questions make a difference (to some agent's text: a random judge may say the same thing each time)
    assert len({json.dumps(r.get("agent_outputs") or r["output"]) for r in local.values()}) > 1
    for key, mine in local.items():
        theirs = served[key]
        assert theirs["error"] is None and theirs["prompt_tokens"] == 0  # nothing ran on a local model
        assert theirs["output"] == mine["output"]
        assert theirs.get("agent_outputs") == mine.get("agent_outputs")  # every agent, not only the last
        assert theirs["api_completion_tokens"] == mine["completion_tokens"]  # the server counts the same tokens
        assert len(theirs["api_sent"]) == (1 if method == "single" else 4)
    sizes = _batch_sizes(log)[calls:]
    assert sum(sizes) == 4 * (1 if method == "single" else 4) and max(sizes) > 1  # the server batched requests


def test_hybrid_answers_on_a_server(tiny_server, tmp_path):
    data = _questions(tmp_path / "q.jsonl")
    out = tmp_path / "hybrid"
    assert main(["eval", "--method", "latentmas_seq", "--mode", "hybrid", "--data", str(data), "--latent-steps", "2",
                 "--base-url", tiny_server[0], "--api-key", "EMPTY", "--api-model", "tiny-random-qwen3",
                 "--out", str(out), *MODEL]) == 0
    for r in ResultStore(out).records():
        # the latent agents think on the local model; only the judger's turn goes to the server
        assert r["error"] is None and r["latent_steps"] == 3 * 2 and r["prompt_tokens"] > 0
        assert [s["node"] for s in r["api_sent"]] == ["Judger"] and r["api_completion_tokens"] > 0
