"""Answer extraction, number normalization and metrics (gcache.scoring)."""

import itertools
import math
import random
from fractions import Fraction

import pytest

from gcache.scoring import (
    PIPELINES,
    FilterPipeline,
    compute_metrics,
    extract_answer,
    extract_code,
    get_extractor,
    get_metric,
    list_extractors,
    list_metrics,
    normalize_number,
    numbers_match,
    pass_at_k,
    register_extractor,
    register_metric,
    sign_test,
    wilson_interval,
)
from gcache.scoring.metrics import Metric

EXTRACTION_CASES = [
    ("Janet sells 9 eggs.\nShe makes 9 * 2 = $18 every day.\n#### 18", "18"),
    ("So the total is \\boxed{18}.", "18"),
    ("The answer is 18.0", "18"),
    ("Final answer: 18", "18"),
    ("**Final Answer:** 18", "18"),
    ("She saves 1,000 dollars in total.", "1000"),
    ("Total: $1,000.00", "1000"),
    ("#### $1,000.00", "1000"),
    ("The temperature drops to -3", "-3"),
    ("The answer is -3 degrees.", "-3"),
    ("Each share is 0.5 of the cake.", "0.5"),
    ("He had 3 apples, bought 5 more and ate 2, so 6 remain.", "6"),
    ("\\boxed{\\$1,000}", "1000"),
    ("\\boxed{\\frac{3}{4}}", "0.75"),
    ("The answer is \\(\\boxed{42}\\).", "42"),
    ("\\boxed{18 \\text{ dollars}}", "18"),
    ("5-3=2", "2"),  # '-' between digits is subtraction, not a sign
    ("I do not know.", None),
    ("", None),
]


@pytest.mark.parametrize("text, expected", EXTRACTION_CASES)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_strict_marker_beats_later_numbers():
    text = "The answer is 18. Check: 3 + 15 = 18, and 2 * 9 = 18 too, step 7."
    assert extract_answer(text) == "18"
    assert get_extractor("last_number")(text) == "7"


def test_strict_order_and_last_occurrence():
    # '####' outranks \boxed; within one marker the last occurrence wins (models restate answers).
    assert extract_answer("\\boxed{5}\n#### 7") == "7"
    assert extract_answer("first \\boxed{5}, corrected \\boxed{6}") == "6"


def test_answer_phrase_without_number_is_not_strict():
    # "the answer is not 3" must not be read as an answer marker.
    assert extract_answer("the answer is not obvious, maybe 3", pipeline="strict") is None
    assert extract_answer("the answer is not obvious, maybe 3") == "3"  # flexible fallback


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("18", "18"),
        ("18.0", "18"),
        ("18.", "18"),
        ("1,000", "1000"),
        ("$1,000.00", "1000"),
        ("-3", "-3"),
        ("\u22123", "-3"),
        ("-0", "0"),
        ("0.5", "0.5"),
        ("0.50", "0.5"),
        (".5", "0.5"),
        ("3/4", "0.75"),
        ("\\frac{3}{4}", "0.75"),
        ("\\dfrac{1}{8}", "0.125"),
        ("1/3", repr(1 / 3)),
        ("\\boxed{\\$1,000}", "1000"),
        ("1{,}000", "1000"),
        ("12 apples", "12"),
        ("50%", "50"),
        (51.0, "51"),
        (7, "7"),
        ("1/0", None),
        ("abc", None),
        (None, None),
        (float("nan"), None),
    ],
)
def test_normalize_number(raw, expected):
    assert normalize_number(raw) == expected


# Seeded sweeps rather than property-based tests: same coverage idea, no extra dependency.
_RNG = random.Random(0)
INTEGERS = [0, 7, -7, 999, 1000, -1000, 10**12] + [_RNG.randint(-(10**12), 10**12) for _ in range(200)]
FRACTIONS = [Fraction(_RNG.randint(-1000, 1000), _RNG.randint(1, 64)) for _ in range(200)]


def test_normalize_formatted_integers():
    for n in INTEGERS:
        # Independent reference: Python's own formatting of n.
        assert normalize_number(f"${n:,}.00") == str(n)
        assert extract_answer(f"So in total it is {n:,} dollars.") == str(n)


def test_normalize_fractions_are_exact_or_float():
    for q in FRACTIONS:
        value = Fraction(normalize_number(f"{q.numerator}/{q.denominator}"))
        assert math.isclose(float(value), float(q), rel_tol=1e-15, abs_tol=0), q
        if 64 % q.denominator == 0 or 1000 % q.denominator == 0:
            assert value == q  # terminating decimals are exact


@pytest.mark.parametrize(
    "pred, gold, expected",
    [
        ("18.0", "18", True),
        ("18", "18", True),
        ("1,000", "1000", True),
        ("$1,000.00", "1000", True),
        ("1/2", "0.5", True),
        ("-3", "3", False),
        ("17", "18", False),
        (None, "18", False),
        ("no number", "18", False),
        ("0", "0", True),
    ],
)
def test_numbers_match(pred, gold, expected):
    assert numbers_match(pred, gold) is expected


def test_numbers_match_tolerance():
    assert numbers_match("0.3333333", "1/3")  # |diff| / (1/3) = 1e-7 < 1e-6
    assert not numbers_match("0.3333333", "1/3", rel_tol=1e-9)


def test_extractor_registry_and_pipelines():
    assert {"number_strict", "last_number", "letter_strict", "last_letter", "math_strict", "code_fenced"} <= set(
        list_extractors())
    with pytest.raises(ValueError, match="number_strict"):
        get_extractor("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_extractor("last_number")(lambda text, example: None)
    with pytest.raises(ValueError, match="unknown extractor"):
        FilterPipeline("strict", ("no_such_extractor",))
    with pytest.raises(ValueError, match="number"):
        extract_answer("18", kind="roman")
    assert set(PIPELINES) == {"number", "letter", "math", "code"}
    for kind, pipelines in PIPELINES.items():
        assert set(pipelines) == {"strict", "flexible"}
        # flexible = strict, then the answer anywhere: it starts with every strict extractor
        assert pipelines["flexible"].extractors[: len(pipelines["strict"].extractors)] == pipelines["strict"].extractors
    assert FilterPipeline("strict", ("number_strict",), fallback="[invalid]")("no marker") == "[invalid]"


def test_extract_code():
    fenced = "Here:\n```python\ndef f(x):\n    return x + 1\n```\nand a test\n```python\nassert f(1) == 2\n```"
    assert extract_code(fenced) == "def f(x):\n    return x + 1\n"
    helper_first = "```python\ndef g():\n    pass\n```\n```python\ndef f(x):\n    return 2\n```"
    assert extract_code(helper_first, entry_point="f") == "def f(x):\n    return 2\n"
    assert extract_code("```python\ndef f():\n    return 1") == "def f():\n    return 1"  # cut off
    assert extract_code("    return x\n") == "    return x\n"  # plain continuation
    assert extract_answer("```\nprint(1)\n```", kind="code") == "print(1)\n"
    assert extract_answer("```\nprint(1)\n```", kind="code", pipeline="strict") is None  # no python tag


def test_wilson_interval_against_reference_values():
    # Reference values: scipy.stats.binomtest(k, n).proportion_ci(method="wilson") (scipy 1.x), written out.
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775328), abs=1e-6)
    assert wilson_interval(5, 10) == pytest.approx((0.2365931, 0.7634069), abs=1e-6)
    assert wilson_interval(10, 10) == pytest.approx((0.7224672, 1.0), abs=1e-6)
    low, high = wilson_interval(81, 100)
    assert low < 0.81 < high and high - low < 0.2
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_sign_test_against_binomial_enumeration():
    for wins, losses in [(0, 0), (3, 0), (9, 1), (5, 5), (2, 7), (12, 4)]:
        n = wins + losses
        # Reference: probability under p = 1/2 of an outcome at most as likely as the observed one.
        probs = [math.comb(n, i) / 2**n for i in range(n + 1)]
        observed = probs[wins] if n else 1.0
        expected = min(1.0, sum(p for p in probs if p <= observed + 1e-12)) if n else 1.0
        assert sign_test(wins, losses) == pytest.approx(expected)


def test_pass_at_k_metrics_from_samples():
    results = [{"correct": True, "n_samples": 5, "n_correct": 2}, {"correct": False, "n_samples": 5, "n_correct": 0}]
    got = compute_metrics(results, ["pass@1", "pass@5", "exact_match"])
    assert got["pass@1"] == pytest.approx((2 / 5 + 0) / 2)
    assert got["pass@5"] == pytest.approx((1.0 + 0.0) / 2)
    assert got["exact_match"] == pytest.approx(0.2)
    assert math.isnan(compute_metrics(results, ["pass@10"])["pass@10"])  # 5 samples cannot estimate pass@10


def test_compute_metrics_against_hand_count():
    correct = [True, False, True, True, False, True, True]
    results = [{"prediction": "1", "correct": c} for c in correct]
    expected = sum(correct) / len(correct)
    assert compute_metrics(results, ["exact_match", "accuracy", "pass@1"]) == {
        "exact_match": pytest.approx(expected),
        "accuracy": pytest.approx(expected),
        "pass@1": pytest.approx(expected),
    }
    assert math.isnan(compute_metrics([], ["accuracy"])["accuracy"])


def test_metric_registry():
    assert {"exact_match", "accuracy", "pass@1"} <= set(list_metrics())
    metric = get_metric("pass@1")
    assert metric.higher_is_better and metric.aggregation == "mean"
    with pytest.raises(ValueError, match="exact_match"):
        get_metric("bleu")
    with pytest.raises(ValueError, match="already registered"):
        register_metric("accuracy")(lambda r: 0.0)
    with pytest.raises(ValueError, match="aggregation"):
        Metric("x", lambda r: 0.0, True, "geometric")


@pytest.mark.parametrize("n, c, k", [(5, 0, 1), (5, 2, 1), (5, 2, 2), (6, 3, 4), (4, 4, 2), (7, 1, 7)])
def test_pass_at_k_matches_enumeration(n, c, k):
    # Reference: fraction of all k-subsets of the n samples that contain a passing one.
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(samples, k))
    assert pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))
    with pytest.raises(ValueError):
        pass_at_k(n, c, n + 1)
