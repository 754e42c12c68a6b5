"""Metrics registered with their direction and aggregation (as in lm-eval's ``api/metrics.py``).

A metric maps one question's score dict under one extraction pipeline (e.g. ``{"prediction": "18", "correct":
True}``, with ``n_samples`` / ``n_correct`` when several samples were drawn) to a float; its aggregation reduces
the per-question values of a run to one number. Intervals and paired tests for reports sit next to them.

>>> results = [{"correct": True}, {"correct": False}, {"correct": True}, {"correct": True}]
>>> compute_metrics(results, ["exact_match"])
{'exact_match': 0.75}
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

__all__ = [
    "AGGREGATIONS",
    "Metric",
    "aggregate",
    "compute_metrics",
    "get_metric",
    "list_metrics",
    "majority_vote",
    "pass_at_k",
    "register_metric",
    "sign_test",
    "wilson_interval",
]

SampleFn = Callable[[Mapping], float]

#: Reductions a metric may name as its ``aggregation``.
AGGREGATIONS: Mapping[str, Callable[[Sequence[float]], float]] = {
    "mean": statistics.fmean,
    "median": statistics.median,
    "sum": math.fsum,
}

# Filled only at import time by @register_metric (read-only afterwards).
_METRICS: dict[str, "Metric"] = {}


@dataclass(frozen=True)
class Metric:
    """A registered metric.

    Args:
        name (str): Registry name, e.g. ``"exact_match"``.
        fn (Callable[[Mapping], float]): Per-sample value from a score dict.
        higher_is_better (bool): Direction, for model selection and reports.
        aggregation (str): Key of :data:`AGGREGATIONS`.
    """

    name: str
    fn: SampleFn
    higher_is_better: bool
    aggregation: str

    def __post_init__(self) -> None:
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(
                f"metric {self.name!r}: unknown aggregation {self.aggregation!r}; valid: {sorted(AGGREGATIONS)}"
            )


def register_metric(
    name: str, higher_is_better: bool = True, aggregation: str = "mean"
) -> Callable[[SampleFn], SampleFn]:
    """Register a per-sample metric function (decorator).

    Args:
        name (str): Registry name.
        higher_is_better (bool): Direction. Default is True.
        aggregation (str): Key of :data:`AGGREGATIONS`. Default is ``"mean"``.

    Returns:
        Callable: The decorator, which returns the function unchanged.

    Raises:
        ValueError: If ``name`` is taken or ``aggregation`` is unknown.
    """

    def decorator(fn: SampleFn) -> SampleFn:
        if name in _METRICS:
            raise ValueError(f"metric {name!r} is already registered")
        _METRICS[name] = Metric(name, fn, higher_is_better, aggregation)
        return fn

    return decorator


def get_metric(name: str) -> Metric:
    """Return the metric registered as ``name``.

    Raises:
        ValueError: If unknown (the message lists the valid names).
    """
    try:
        return _METRICS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; valid: {list_metrics()}") from None


def list_metrics() -> list[str]:
    """Names of all registered metrics, sorted."""
    return sorted(_METRICS)


def aggregate(name: str, values: Sequence[float]) -> float:
    """Reduce per-sample values with metric ``name``'s aggregation (NaN for no samples)."""
    if not values:
        return math.nan
    return float(AGGREGATIONS[get_metric(name).aggregation](values))


def compute_metrics(results: Iterable[Mapping], names: Iterable[str]) -> dict[str, float]:
    """Aggregate each named metric over per-sample score dicts.

    Args:
        results (Iterable[Mapping]): Score dicts, one per sample.
        names (Iterable[str]): Metric names.

    Returns:
        dict[str, float]: ``{name: aggregated value}``.
    """
    results = list(results)
    out = {}
    for name in names:
        metric = get_metric(name)
        out[name] = aggregate(name, [float(metric.fn(r)) for r in results])
    return out


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimate from ``n`` samples of which ``c`` pass (Chen et al., 2021).

    .. math:: 1 - \\binom{n-c}{k} / \\binom{n}{k}

    Raises:
        ValueError: Unless ``0 <= c <= n`` and ``1 <= k <= n``.
    """
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% by default).

    .. math:: \\frac{\\hat p + z^2/2n \\pm z\\sqrt{\\hat p(1-\\hat p)/n + z^2/4n^2}}{1 + z^2/n}

    It stays inside [0, 1] and is sensible at 0/n and n/n, unlike the normal approximation.

    Args:
        successes (int): Number correct.
        n (int): Number of trials.
        z (float): Normal quantile. Default is the 97.5% one (a 95% interval).

    Returns:
        tuple[float, float]: ``(low, high)``; ``(0.0, 1.0)`` when ``n`` is 0.

    Raises:
        ValueError: Unless ``0 <= successes <= n``.

    >>> [round(x, 4) for x in wilson_interval(0, 10)]
    [0.0, 0.2775]
    """
    if not 0 <= successes <= n:
        raise ValueError(f"wilson_interval needs 0 <= successes <= n, got {successes}, {n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends, not rounding noise around them
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def majority_vote(answers: Sequence[str | None]) -> int | None:
    """Index of the vote that wins a majority vote over extracted answers, or None when no vote holds an answer.

    Votes without an answer (None) do not count. The most frequent answer wins; a tie goes to the answer whose
    first vote came first, and the winner is that first vote (whose text becomes the team's answer).

    >>> majority_vote(["3", None, "4", "4", "3"]), majority_vote(["7", "8"]), majority_vote([None, None])
    (0, 0, None)
    >>> majority_vote(["7", "8", "8"])
    1
    """
    counts: dict[str, int] = {}
    first: dict[str, int] = {}
    for i, answer in enumerate(answers):
        if answer is None:
            continue
        counts[answer] = counts.get(answer, 0) + 1
        first.setdefault(answer, i)
    if not counts:
        return None
    best = max(counts, key=lambda a: (counts[a], -first[a]))
    return first[best]


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test (McNemar's exact test) on paired outcomes: the p-value of ``wins`` vs ``losses``.

    Ties (both right or both wrong) carry no information and are left out by the caller.

    >>> sign_test(0, 0)
    1.0
    >>> round(sign_test(9, 1), 4)
    0.0215
    """
    if wins < 0 or losses < 0:
        raise ValueError(f"sign_test needs non-negative counts, got {wins}, {losses}")
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(wins, losses) + 1)) / 2**n
    return min(1.0, 2 * tail)


def _samples(result: Mapping) -> tuple[int, int]:
    """``(n, c)``: samples drawn for a question and how many were correct (one sample unless stated)."""
    if "n_samples" in result:
        return int(result["n_samples"]), int(result["n_correct"])
    return 1, int(bool(result["correct"]))


def _correct(result: Mapping) -> float:
    n, c = _samples(result)
    return c / n


def _pass_at(k: int) -> SampleFn:
    def fn(result: Mapping) -> float:
        n, c = _samples(result)
        return pass_at_k(n, c, k) if k <= n else math.nan

    return fn


# The fraction correct (the mean over samples when there are several), named as each literature names it.
register_metric("exact_match")(_correct)
register_metric("accuracy")(_correct)
# Unbiased pass@k from n samples per question (NaN when a question has fewer than k samples).
register_metric("pass@1")(_pass_at(1))
register_metric("pass@5")(_pass_at(5))
register_metric("pass@10")(_pass_at(10))
