"""benchmarks/gcache_vs_baselines.py runs end to end on the tiny model: train, evaluate, table, held-out NLL.

The held-out NLL of a row is computed again from its finished folder (as after a crash between the row's
evaluation and its NLL) and must equal the value computed right after the evaluation: the same graphs, the same
frozen model, no sampling.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gcache.io import ResultStore

ROOT = Path(__file__).parents[2]
SCRIPT = ROOT / "benchmarks" / "gcache_vs_baselines.py"
ASSETS = ROOT / "tests" / "assets"

pytestmark = pytest.mark.integration


def _bench(out: Path, *rows: str) -> str:
    cmd = [sys.executable, str(SCRIPT), "--model", "tiny-random-qwen3", "--train-data",
           str(ASSETS / "tiny_gsm8k_train.jsonl"), "--test-data", str(ASSETS / "tiny_gsm8k.jsonl"), "--train", "2",
           "--test", "3", "--steps", "1", "--samples", "2", "--batch-size", "2", "--max-new-tokens", "4",
           "--latent-steps", "1", "--out", str(out), "--rows", *rows]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_benchmark_trains_evaluates_and_tables_every_row(tmp_path):
    out = tmp_path / "bench"
    printed = _bench(out, "single", "gcache_untrained", "gcache_trained")
    assert (out / "train" / "team" / "model.safetensors").is_file()
    table = (out / "table.md").read_text()
    assert printed.strip().endswith(table.strip().splitlines()[-1])
    for row, label in (("single", "single"), ("gcache_untrained", "gcache (untrained)"),
                       ("gcache_trained", "gcache (trained)")):
        records = ResultStore(out / row).load()
        assert len(records) == 3
        k = sum(r["correct"] for r in records.values())
        line = next(x for x in table.splitlines() if x.startswith(f"| {label} |"))
        assert f"| 3 | {k / 3:.3f} ({k}/3) |" in line, line
    nll = json.loads((out / "heldout_nll.json").read_text())
    assert set(nll) == {"gcache_untrained", "gcache_trained"}
    assert all(math.isfinite(v) and v > 0 for v in nll.values())

    # the NLL of a row whose evaluation had finished: no model is loaded by its setup, the benchmark loads the team
    (out / "heldout_nll.json").write_text(json.dumps({"gcache_trained": nll["gcache_trained"]}))
    _bench(out, "gcache_untrained")
    again = json.loads((out / "heldout_nll.json").read_text())
    assert again["gcache_trained"] == nll["gcache_trained"]  # kept, not recomputed
    assert again["gcache_untrained"] == pytest.approx(nll["gcache_untrained"], rel=1e-6)
