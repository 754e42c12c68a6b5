"""benchmarks/gcache_vs_baselines.py runs end to end on the tiny model: train, evaluate, table, export.

Every cell is recomputed here by hand from the rows' records (accuracy, paired wins/losses against single, the oracle
of gating, the share answered alone, SC@k from the votes).
"""

from __future__ import annotations

import gzip
import json
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
           "--latent-steps", "1", "--votes", "3", "--alone-prob", "0.5", "--out", str(out), "--export",
           str(out / "export"), "--rows", *rows]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_benchmark_trains_evaluates_and_tables_every_row(tmp_path):
    out = tmp_path / "bench"
    printed = _bench(out, "single", "self_consistency", "gcache_untrained", "gcache_trained")
    assert (out / "train" / "team" / "model.safetensors").is_file()
    table = (out / "table.md").read_text()
    assert table.strip().splitlines()[-1] in printed
    single = {i: r["correct"] for i, r in ResultStore(out / "single").load().items()}
    for row, label in (("single", "single"), ("gcache_untrained", "gcache (untrained)"),
                       ("gcache_trained", "gcache (trained)")):
        records = ResultStore(out / row).load()
        assert len(records) == 3
        k = sum(r["correct"] for r in records.values())
        line = next(x for x in table.splitlines() if x.startswith(f"| {label} |"))
        assert f"| 3 | {k / 3:.3f} ({k}/3) |" in line, line
        if row != "single":
            wins = sum(r["correct"] and not single[i] for i, r in records.items())
            losses = sum(single[i] and not r["correct"] for i, r in records.items())
            either = sum(r["correct"] or single[i] for i, r in records.items())
            alone = sum(r["alone"] for r in records.values())
            cells = [c.strip() for c in line.split("|")]
            assert cells[5].startswith(f"{wins} / {losses} (")
            assert cells[7] == f"{either / 3:.3f}" and cells[8] == f"{alone / 3:.2f}"
    sc = ResultStore(out / "self_consistency").load()
    for k in (1, 2, 3):
        line = next(x for x in table.splitlines() if x.startswith(f"| SC@{k} |"))
        assert f"| 3 | " in line
    # SC@1 is the first vote alone
    first = sum(r["votes"][0]["correct"] for r in sc.values())
    assert f"({first}/3)" in next(x for x in table.splitlines() if x.startswith("| SC@1 |"))
    # the export holds every row's records, gzipped, the table and the trained team
    export = out / "export"
    for row in ("single", "self_consistency", "gcache_untrained", "gcache_trained"):
        with gzip.open(export / f"{row}.jsonl.gz", "rt") as f:
            assert len(f.read().splitlines()) == 3
    assert (export / "table.md").read_text() == table and (export / "team" / "model.safetensors").is_file()
    assert json.loads((export / "convergence.json").read_text())["window"] == 1
