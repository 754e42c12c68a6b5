"""The one aggregation of per-question records (``gcache.scoring.aggregation``), against counts made here by hand:
accuracy and its Wilson interval, pooled samples and seeds, paired wins/losses/ties with the exact sign test,
oracle gating, maj@k; and ``gcache report``'s rows are its numbers on the same records."""

from __future__ import annotations

import json
import math

import pytest

from gcache.recipes.report import collect_runs, summarize
from gcache.scoring import sign_test, wilson_interval
from gcache.scoring.aggregation import (accuracy, majority_at, oracle, outcome, paired, pooled_accuracy,
                                        sample_counts, share_alone)


def rec(i, ok, strict=None, samples=None, **extra):
    r = {"id": f"q{i}", "correct": ok, **extra}
    if strict is not None:
        r["scores"] = {"flexible": {"correct": ok}, "strict": {"correct": strict}}
        if samples is not None:
            r["scores"]["flexible"].update(n_samples=samples[1], n_correct=samples[0])
    return r


def test_accuracy_and_wilson_interval():
    records = [rec(i, ok) for i, ok in enumerate([True, True, False, True, False])]
    acc = accuracy(records)
    assert (acc.correct, acc.n, acc.rate) == (3, 5, 0.6)
    assert (acc.low, acc.high) == wilson_interval(3, 5)
    # by hand: (p + z²/2n ± z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)
    z, p, n = 1.959963984540054, 0.6, 5
    centre, half = (p + z * z / (2 * n)), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert acc.low == pytest.approx((centre - half) / (1 + z * z / n))
    assert acc.high == pytest.approx((centre + half) / (1 + z * z / n))
    empty = accuracy([])
    assert (empty.n, empty.rate, empty.low, empty.high) == (0, 0.0, 0.0, 1.0)
    assert accuracy(records, key=lambda r: not r["correct"]).correct == 2  # a key may be a function


def test_pipelines_and_samples():
    r = rec(0, True, strict=False, samples=(1, 4))
    assert outcome(r) and outcome(r, "flexible") and not outcome(r, "strict")
    assert outcome({"id": "old", "correct": True}, "strict")  # a record from before per-pipeline scores
    assert sample_counts(r, "flexible") == (1, 4) and sample_counts(r, "strict") == (0, 1)
    pooled = pooled_accuracy([r, rec(1, True, strict=True)], "flexible")
    assert (pooled.correct, pooled.n) == (2, 5) and (pooled.low, pooled.high) == wilson_interval(2, 5)
    assert pooled_accuracy([r, rec(1, True, strict=True)], "strict").correct == 1


def test_paired_counts_and_exact_sign_test():
    a = [rec(i, ok) for i, ok in enumerate([True, True, True, False, False, True, True])]
    b = [rec(i, ok) for i, ok in enumerate([False, False, True, False, True, False])]  # q6 missing: not shared
    p = paired(a, b)
    # q0, q1, q5 a only; q4 b only; q2, q3 same
    assert (p.wins, p.losses, p.ties, p.n) == (3, 1, 2, 6)
    assert p.p == sign_test(3, 1) == pytest.approx(2 * (1 + 4) / 16)
    assert paired(b, a)[:3] == (1, 3, 6)
    assert oracle(a, b).correct == 5 and oracle(a, b).n == 6  # right when either is, on the shared six


def test_majority_at_and_share_alone():
    r = {"id": "q", "votes": [{"prediction": "1", "correct": False}, {"prediction": None, "correct": False},
                              {"prediction": "2", "correct": True}, {"prediction": "2", "correct": True}]}
    assert [majority_at(r, k) for k in (1, 2, 3, 4)] == [False, False, False, True]  # ties go to the first answer
    with pytest.raises(ValueError, match="fewer than k = 5"):
        majority_at(r, 5)
    assert share_alone([{"alone": True}, {"alone": False}, {"alone": None}, {}]) == 0.5
    assert share_alone([{}]) is None


def _write(folder, method, seed, records):
    folder.mkdir(parents=True)
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "summary.json").write_text(json.dumps({"method": method, "dataset": "gsm8k", "seeds": [seed],
                                                     "counts": {"questions": len(records)}, "config": {}}))


def test_report_rows_are_the_aggregation(tmp_path):
    """``gcache report`` pools seeds and samples and pairs by (seed, question) with the same functions."""
    base = {0: [True, False, True], 1: [False, False, True]}
    mine = {0: [True, True, False], 1: [True, False, True]}
    samples = {0: [(2, 4), (1, 4), (0, 4)], 1: [(4, 4), (0, 4), (3, 4)]}
    for seed in (0, 1):
        _write(tmp_path / f"single{seed}", "single", seed, [rec(i, ok, strict=False) for i, ok in enumerate(base[seed])])
        _write(tmp_path / f"sc{seed}", "sc", seed, [rec(i, ok, strict=ok, samples=samples[seed][i])
                                                    for i, ok in enumerate(mine[seed])])
    rows = {r.method: r for r in summarize(collect_runs(tmp_path), "single")}
    sc = rows["sc"]
    assert (sc.correct, sc.trials) == (10, 24)  # every sample of both seeds is a trial
    assert (sc.low, sc.high) == wilson_interval(10, 24) and sc.other_accuracy == pytest.approx(4 / 6)
    # pairs by (seed, question), first samples: seed 0: q1 win, q2 loss; seed 1: q0 win
    assert (sc.wins, sc.losses, sc.ties, sc.p_value) == (2, 1, 3, sign_test(2, 1))
    by_seed = [{"id": (s, r["id"]), "correct": r["correct"]} for s in (0, 1)
               for r in (rec(i, ok) for i, ok in enumerate(mine[s]))]
    base_by_seed = [{"id": (s, f"q{i}"), "correct": ok} for s in (0, 1) for i, ok in enumerate(base[s])]
    assert paired(by_seed, base_by_seed)[:3] == (sc.wins, sc.losses, sc.ties + sc.wins + sc.losses)
    single = rows["single"]
    assert (single.correct, single.trials, single.wins) == (3, 6, None)
