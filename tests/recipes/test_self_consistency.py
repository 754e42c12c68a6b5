"""Self-consistency (issue 16): ``--votes`` sampled solver answers, majority-voted, with every vote recorded so that
maj@k for any k up to the votes comes from one run; greedy decoding is refused (every vote would be the same)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from gcache.config import ConfigError, RunConfig
from gcache.recipes.eval import EvalRecipe
from gcache.scoring.aggregation import majority_at

ASSETS = Path(__file__).parents[1] / "assets"
HELD_OUT = str(ASSETS / "tiny_gsm8k.jsonl")

pytestmark = pytest.mark.integration


def test_self_consistency_votes_and_maj_at_k(tmp_path):
    cfg = RunConfig(method="self_consistency", model="tiny-random-qwen3", data=HELD_OUT, limit=4, votes=5,
                    temperature=1.0, max_new_tokens=8, out=str(tmp_path))
    recipe = EvalRecipe(cfg)
    recipe.setup()
    summary = recipe.run()
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    for row in rows:
        votes = row["votes"]
        assert [v["node"] for v in votes] == [f"Solver#{k}" for k in range(1, 6)]
        texts = [row["agent_outputs"][v["node"]] for v in votes]
        assert len(set(texts)) > 1 or len(texts[0]) == 0  # sampled, not five copies of one greedy answer
        # the answer is the vote of the most common extracted answer, ties to the one reached first (by hand)
        answers = [v["prediction"] for v in votes]
        counted = Counter(a for a in answers if a is not None)
        if counted:
            top = max(counted.values())
            winner = next(a for a in answers if a is not None and counted[a] == top)
            assert row["output"] == texts[answers.index(winner)]
        assert sum(v["completion_tokens"] for v in votes) == row["completion_tokens"]
        assert majority_at(row, 5) == row["correct"]
    assert set(summary["majority"]) == {f"maj@{k}" for k in range(1, 6)}
    assert summary["majority"]["maj@1"]["accuracy"] == sum(r["votes"][0]["correct"] for r in rows) / len(rows)
    assert summary["majority"]["maj@5"]["accuracy"] == summary["accuracy"]


def test_self_consistency_refuses_greedy_decoding():
    with pytest.raises(ConfigError, match="temperature"):
        RunConfig(method="self_consistency", temperature=0.0)
