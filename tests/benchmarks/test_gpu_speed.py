"""benchmarks/gpu_speed.py runs end to end on CPU with a tiny config, so the GPU run is one prepared command.

Speed is not asserted (a shared CPU is noisy): what is checked is that every row is measured, and that the fast
path agrees with the benchmark's own plain-transformers LatentMAS loop, an implementation that shares no code
with the engine (fp32: hidden states to 1e-4, the whole question's greedy tokens exactly).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "gpu_speed.py"


@pytest.fixture(scope="module")
def gpu_speed():
    spec = importlib.util.spec_from_file_location("gpu_speed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_benchmark_runs_on_cpu_with_a_tiny_config(gpu_speed, tmp_path, capsys):
    out = tmp_path / "speed.json"
    result = gpu_speed.main(["--shapes", "tiny", "--device", "cpu", "--dtype", "float32", "--batches", "1", "3",
                             "--context", "24", "--steps", "3", "--tokens", "4", "--agents", "2", "--prompt", "12",
                             "--question-steps", "3", "--question-tokens", "6", "--copy-mib", "16",
                             "--json", str(out)])
    assert json.loads(out.read_text()) == result
    rows = {(r["op"], r["batch"]): r for r in result["rows"]}
    assert set(rows) == {("latent step", 1), ("latent step", 3), ("decoded token", 1), ("whole question", 1),
                         ("layered graph", 1)}
    for op in ("latent step", "decoded token"):
        for r in (v for k, v in rows.items() if k[0] == op):
            assert r["loop_ms"] > 0 and r["fast_ms"] > 0 and r["no_graph_ms"] > 0 and r["floor_ms"] > 0
    for batch in (1, 3):
        assert rows["latent step", batch]["rel_diff"] < 1e-4  # fast path == LatentMAS loop after 3 steps
    question = rows["whole question", 1]
    assert question["token_agreement"] == 1.0
    assert question["loop_ms"] > 0 and question["fast_ms"] > 0
    layered = rows["layered graph", 1]
    assert layered["same_answer"] and layered["depth_ms"] > 0 and layered["node_ms"] > 0
    printed = capsys.readouterr().out
    assert "| tiny | latent step | 3 |" in printed and "| tiny | 0." in printed


def test_cpu_line_counts_the_bytes_concatenation_moves(gpu_speed, capsys):
    line = gpu_speed.main(["--cpu-line", "--cpu-shape", "tiny", "--cpu-slots", "256", "--cpu-steps", "2"])["cpu_line"]
    cat, static = line["rows"]
    assert line["capacity"] >= 256 + 2
    # Per step, concatenation reads the context in attention and reads + rewrites it to append one slot (3 x the
    # ~257 slots); the static cache attends over its capacity and writes one slot.
    kv_slot = 2 * 2 * 2 * 16 * 4  # tiny shape: layers x (k, v) x kv heads x head dim x fp32 bytes
    extra = (cat["bytes_mb"] - static["bytes_mb"]) * 1e6
    assert extra == pytest.approx((3 * (256 + 1) - line["capacity"]) * kv_slot, rel=1e-6)
    assert cat["floor_ms"] == static["floor_ms"] > 0 and cat["ms"] > 0 and static["ms"] > 0
    assert "eager (concatenation)" in capsys.readouterr().out
