"""The original G-cache scripts keep their flags and run as thin wrappers over the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fault_server import FaultServer
from gcache.recipes.seed import translate

ROOT = Path(__file__).parents[2]
TINY = str(ROOT / "tests" / "assets" / "tiny_gsm8k.jsonl")
TINY_TRAIN = str(ROOT / "tests" / "assets" / "tiny_gsm8k_train.jsonl")

pytestmark = pytest.mark.integration


def test_flags_translate_to_train_then_eval():
    train, evaluate = translate(["--llm_name", "Qwen/Qwen3-1.7B", "--use_cache", "--device", "cuda",
                                 "--optimized_spatial", "--num_iterations", "3", "--agent_nums", "3",
                                 "--num_rounds", "2", "--lr", "0.05", "--latent_steps", "8", "--batch_size", "2",
                                 "--dataset_json", "d.jsonl", "--out", "o"], api=False)
    assert train["method"] == "gcache" and train["split"] == "train"
    for key, value in [("model", "Qwen/Qwen3-1.7B"), ("device", "cuda"), ("steps", 3), ("agents", 3),
                       ("rounds", 2), ("lr", 0.05), ("latent_steps", 8), ("batch_size", 2),
                       ("topology", "learned"), ("mode", "local"),
                       ("optimize_spatial", True), ("optimize_temporal", False)]:
        assert train[key] == value, key
    # the seed trained on the file it evaluated; now training takes the hub's train split when nothing is beside it
    assert train["data"] is None and evaluate["data"] == "d.jsonl" and evaluate["split"] == "test"
    assert evaluate["checkpoint"] == str(Path("o") / "train") and evaluate["out"] == str(Path("o") / "eval")
    # no --use_cache: agents pass text; a fixed graph mode and no training
    train, evaluate = translate(["--llm_name", "smollm2", "--mode", "Chain"], api=False)
    assert train is None and evaluate["method"] == "gdesigner" and evaluate["topology"] == "chain"


def test_training_never_reads_the_evaluated_file(tmp_path):
    (tmp_path / "train.jsonl").write_text("{}\n")
    (tmp_path / "test.jsonl").write_text("{}\n")
    flags = ["--use_cache", "--optimized_spatial", "--num_iterations", "1"]
    train, evaluate = translate([*flags, "--dataset_json", str(tmp_path / "test.jsonl")], api=False)
    assert train["data"] == str(tmp_path / "train.jsonl") and evaluate["data"] == str(tmp_path / "test.jsonl")
    train, evaluate = translate([*flags, "--dataset_json", str(tmp_path)], api=False)  # a folder: its two splits
    assert (train["data"], train["split"]) == (str(tmp_path), "train")
    assert (evaluate["data"], evaluate["split"]) == (str(tmp_path), "test")
    train, evaluate = translate([*flags, "--train_json", "a.jsonl", "--test_json", "b.jsonl"], api=False)
    assert train["data"] == "a.jsonl" and evaluate["data"] == "b.jsonl"
    assert "lr" not in train  # gcache's topology learning rate, not the seed's collapsing 0.1


@pytest.mark.parametrize("llm, mode, method", [("hybrid_cache", "hybrid", "gcache"), ("local_cache", "local_cache", "gcache"),
                                               ("qwen-plus", "api", "gdesigner")])
def test_api_script_llm_names_pick_the_mode(llm, mode, method):
    _, evaluate = translate(["--llm_name", llm, "--use_cache"], api=True)
    assert evaluate["mode"] == mode and evaluate["method"] == method
    if mode == "api":
        assert evaluate["api_model"] == llm


def test_bad_seed_flags_exit_2_with_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        translate(["--num_iterations", "-1"], api=False)
    assert exit_.value.code == 2 and "--num_iterations: must be >= 0, got -1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        translate(["--llm_name", "hybrid_cache"], api=True)  # latent agents without --use_cache
    assert exit_.value.code == 2 and "add --use_cache" in capsys.readouterr().err


def _run(script: str, args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "experiments" / script), *args], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}, cwd=ROOT, timeout=600)


@pytest.mark.slow
def test_run_gsm8k_cache_trains_then_evaluates(tmp_path):
    proc = _run("run_gsm8k_cache.py", ["--llm_name", "tiny-random-qwen3", "--use_cache", "--device", "cpu",
                                       "--dataset_json", TINY, "--train_json", TINY_TRAIN, "--limit", "2",
                                       "--agent_nums", "2",
                                       "--optimized_spatial", "--num_iterations", "1", "--batch_size", "1",
                                       "--max_new_tokens", "4", "--latent_steps", "1", "--out", str(tmp_path)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "train" / "team" / "model.safetensors").is_file()
    rows = (tmp_path / "eval" / "results.jsonl").read_text().splitlines()
    assert len(rows) == 2
    for row in map(json.loads, rows):  # answered alone: no agent ran; else each agent that ran thought one step
        ran = {name for name in row.get("agent_outputs", {})} if row["alone"] else None
        assert row["latent_steps"] == 0 if row["alone"] else 1 <= row["latent_steps"] <= 2, (row["alone"], ran)


@pytest.mark.slow
def test_run_gsm8k_cache_api_text_graph_over_http(tmp_path):
    with FaultServer() as server:
        proc = _run("run_gsm8k_cache_API.py", ["--llm_name", "qwen-turbo", "--mode", "Chain", "--agent_nums", "2",
                                               "--dataset_json", TINY, "--limit", "2", "--num_iterations", "0",
                                               "--out", str(tmp_path)],
                    env={"API_KEY": "local-test-key", "BASE_URL": server.base_url})
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert all(r["model"] == "qwen-turbo" for r in server.requests)
    rows = [json.loads(x) for x in (tmp_path / "eval" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["error"] is None and len(r["api_sent"]) == 3 for r in rows)
