"""Answer extraction, answer comparison, code execution and metrics: the one place scoring lives."""

from gcache.scoring.execution import ExecutionResult, run_program
from gcache.scoring.filters import (
    DEFAULT_PIPELINES,
    extract_answer,
    extract_boxed,
    extract_code,
    get_pipeline,
    list_pipelines,
    normalize_number,
    numbers_match,
    register_pipeline,
)
from gcache.scoring.metrics import (
    AGGREGATIONS,
    Metric,
    aggregate,
    compute_metrics,
    get_metric,
    list_metrics,
    pass_at_k,
    register_metric,
)

__all__ = [
    "AGGREGATIONS",
    "DEFAULT_PIPELINES",
    "ExecutionResult",
    "Metric",
    "aggregate",
    "compute_metrics",
    "extract_answer",
    "extract_boxed",
    "extract_code",
    "get_metric",
    "get_pipeline",
    "list_metrics",
    "list_pipelines",
    "normalize_number",
    "numbers_match",
    "pass_at_k",
    "register_metric",
    "register_pipeline",
    "run_program",
]
