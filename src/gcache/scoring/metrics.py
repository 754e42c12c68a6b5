"""Metrics registered with their direction and aggregation (as in lm-eval's ``api/metrics.py``).

A metric maps one sample's score dict (what :meth:`gcache.tasks.Task.score` returns, e.g.
``{"prediction": "18", "correct": True}``) to a float; its aggregation reduces the per-sample
values of a run to one number.

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
    "pass_at_k",
    "register_metric",
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


def _correct(result: Mapping) -> float:
    return 1.0 if result["correct"] else 0.0


# One sample per question: all three are the fraction correct, named as each literature names it.
register_metric("exact_match")(_correct)
register_metric("accuracy")(_correct)
register_metric("pass@1")(_correct)
