"""What a run reports about itself: one question that does not fit is that question's error (the others give what
they give without it), failures make the exit status non-zero with one line that says what to do, a rejected key
or an unreachable server stops the run at once, and the files it writes follow the umask and say where they came
from. Also ``gcache serve``'s limits and key, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import subprocess
from pathlib import Path

import httpx
import pytest
import torch

import gcache
from fault_server import FaultServer
from gcache.cli import main

ASSETS = Path(__file__).parents[1] / "assets"
TINY = ASSETS / "tiny_gsm8k.jsonl"
FAST = ["--model", "tiny-random-qwen3", "--max-new-tokens", "4"]

pytestmark = pytest.mark.integration


def _rows(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]


def _questions(tmp_path: Path, questions: list[str], name: str = "q.jsonl") -> Path:
    data = tmp_path / name
    data.write_text("".join(json.dumps({"question": q, "answer": "#### 3"}) + "\n" for q in questions))
    return data


def test_a_question_that_does_not_fit_is_its_own_error(tmp_path, capsys):
    short = [json.loads(x)["question"] for x in TINY.read_text().splitlines()[:2]]
    huge = "How many apples? " * 12_000  # ~200 kB, 200k tokens on a model whose context holds 4096
    data = _questions(tmp_path, [short[0], huge, short[1]])
    out = tmp_path / "run"
    assert main(["eval", "--method", "latentmas_seq", "--latent-steps", "1", "--data", str(data), "--batch-size",
                 "3", "--out", str(out), *FAST]) == 1
    err = capsys.readouterr().err
    assert "1 of 3 questions failed; rerun with --retry-errors" in err
    rows = {r["id"]: r for r in _rows(out)}
    assert rows["gsm8k-test-1"]["error"].startswith("does not fit: needs")
    assert "context holds 4096" in rows["gsm8k-test-1"]["error"]
    # the other two ran as a batch of their own: the same answers as a run without the long question
    alone = tmp_path / "alone"
    assert main(["eval", "--method", "latentmas_seq", "--latent-steps", "1", "--data",
                 str(_questions(tmp_path, short, "short.jsonl")), "--batch-size", "3", "--out", str(alone), *FAST]) == 0
    reference = _rows(alone)
    for mine, ref in zip((rows["gsm8k-test-0"], rows["gsm8k-test-2"]), reference):
        assert mine["error"] is None and mine["output"] == ref["output"]
    # a configured cap counts too: 40 positions hold none of these prompts
    capped = tmp_path / "capped"
    assert main(["eval", "--method", "single", "--data", str(data), "--max-context", "40", "--out", str(capped),
                 *FAST]) == 1
    assert "3 of 3 questions failed" in capsys.readouterr().err
    assert all("holds 40" in r["error"] for r in _rows(capped))


def test_rows_of_a_depth_batch_that_do_not_fit_are_their_questions(tmp_path):
    # debate: the agents of round 0 have no inputs, so their prompts run as one stacked batch of 2 agents x 3 rows
    short = [json.loads(x)["question"] for x in TINY.read_text().splitlines()[:2]]
    data = _questions(tmp_path, [short[0], short[1], "How many apples? " * 12_000])
    out = tmp_path / "debate"
    assert main(["eval", "--method", "gcache", "--topology", "debate", "--rounds", "2", "--agents", "2",
                 "--latent-steps", "1",
                 "--data", str(data), "--batch-size", "3", "--out", str(out), *FAST]) == 1
    rows = {r["id"]: r for r in _rows(out)}
    assert [k for k, r in sorted(rows.items()) if r["error"]] == ["gsm8k-test-2"]


def test_a_rejected_key_stops_the_run_at_the_first_request(tmp_path, capsys):
    data = _questions(tmp_path, [f"What is {i} + 1?" for i in range(4)])
    wrong = "sk-wrong-key-1234567890"
    with FaultServer(api_key="sk-right-key-000000") as server:
        status = main(["eval", "--method", "single", "--mode", "api", "--data", str(data), "--batch-size", "1",
                       "--out", str(tmp_path / "o"), "--base-url", server.base_url, "--api-key", wrong])
        sent = len(server.requests)
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip() and "q/s]" not in x]  # no progress bars
    assert status == 2 and sent == 1  # one request, not four questions' worth
    assert len(err) == 1 and "rejected the API key (HTTP 401)" in err[0] and wrong not in err[0]
    assert not (tmp_path / "o" / "results.jsonl").exists()


def test_an_unreachable_server_stops_the_run(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    assert main(["eval", "--method", "single", "--mode", "api", "--data", str(TINY), "--out", str(tmp_path / "o"),
                 "--base-url", url, "--api-key", "EMPTY", "--api-retries", "0"]) == 2
    assert f"cannot reach {url}" in capsys.readouterr().err


def test_files_follow_the_umask_and_the_summary_says_where_it_came_from(tmp_path):
    out = tmp_path / "run"
    old = os.umask(0o027)
    try:
        assert main(["eval", "--method", "single", "--data", str(TINY), "--limit", "2", "--out", str(out), *FAST]) == 0
    finally:
        os.umask(old)
    for name in ("config.json", "summary.json", "results.jsonl"):
        assert (out / name).stat().st_mode & 0o777 == 0o640, name
    summary = json.loads((out / "summary.json").read_text())
    prov = summary["provenance"]
    assert prov["package_version"] == gcache.__version__ and prov["seeds"] == {"seed": 0}
    assert prov["libraries"]["torch"] == torch.__version__
    head = subprocess.run(["git", "-C", str(Path(gcache.__file__).parent), "rev-parse", "HEAD"], capture_output=True,
                          text=True)
    if head.returncode == 0:
        assert prov["git_commit"].removesuffix("+dirty") == head.stdout.strip()
    age = dt.datetime.now(dt.timezone.utc) - dt.datetime.fromisoformat(prov["time_utc"])
    assert dt.timedelta(0) <= age < dt.timedelta(minutes=10)
    for scores in summary["metrics"].values():  # per extraction pipeline, the task's registered metric
        assert scores["exact_match"] == scores["accuracy"]
    assert summary["identity"]["data_sha256"] is not None


@pytest.fixture(scope="module")
def served():
    """``gcache serve`` over the tiny model with a key and a 64-position context, on 127.0.0.1."""
    from gcache.api import ServerThread
    from gcache.recipes.serve import ServeRecipe

    recipe = ServeRecipe(model="tiny-random-qwen3", port=0, api_key="sk-serve-key-123456", max_context=64,
                         max_batch_size=1)
    with ServerThread(recipe.setup()) as server:
        yield server


def _chat(server, content: str, key: str | None = "sk-serve-key-123456", **params) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"model": "tiny-random-qwen3", "messages": [{"role": "user", "content": content}], "temperature": 0,
            **params}
    return httpx.post(f"{server.base_url}/chat/completions", json=body, headers=headers, timeout=60)


def test_serve_checks_the_key_refuses_what_does_not_fit_and_caps_max_tokens(served):
    assert _chat(served, "hi", key=None).status_code == 401
    assert _chat(served, "hi", key="sk-other-key-000000").status_code == 401
    long = _chat(served, "x" * 1_000_000)  # 1 MB prompt
    assert long.status_code == 400
    error = long.json()["error"]
    assert error["code"] == "context_length_exceeded" and error["param"] == "messages"
    assert "context holds 64" in error["message"]
    ok = _chat(served, "What is 2 + 3?", max_tokens=1_000_000)
    assert ok.status_code == 200
    usage, choice = ok.json()["usage"], ok.json()["choices"][0]
    assert usage["prompt_tokens"] + usage["completion_tokens"] == 64  # generated exactly up to the context
    assert choice["finish_reason"] == "length"


def test_serve_warns_when_it_binds_beyond_loopback_without_a_key(caplog):
    from gcache.recipes.serve import ServeRecipe, is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("my-host")
    with caplog.at_level(logging.WARNING):
        ServeRecipe(model="tiny-random-qwen3", port=0, host="0.0.0.0").setup()
    assert "without an API key" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        ServeRecipe(model="tiny-random-qwen3", port=0, host="0.0.0.0", api_key="sk-serve-key-123456").setup()
    assert "without an API key" not in caplog.text
