"""Adding up per-question records: accuracy with its interval, paired comparisons, oracle gating, maj@k.

Every function takes the records ``gcache eval`` writes (``results.jsonl``: one dict per question with ``id`` and
``correct``; ``scores`` per extraction pipeline; ``votes`` for majority-voted methods; ``alone`` for G-cache), so a
number in a table comes from the same code whether ``gcache eval``'s summary, ``gcache report`` or a benchmark
computes it. Torch-free.

An outcome is read with a ``key``: a field name (``"correct"``, the first sample under the task's primary
pipeline), or a function of the record such as ``lambda r: outcome(r, "strict")``.

>>> a = [{"id": "q1", "correct": True}, {"id": "q2", "correct": False}, {"id": "q3", "correct": True}]
>>> b = [{"id": "q1", "correct": False}, {"id": "q2", "correct": False}, {"id": "q3", "correct": True}]
>>> accuracy(a).correct, paired(a, b).wins, paired(a, b).losses, oracle(a, b).correct
(2, 1, 0, 2)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple, Union

from gcache.scoring.metrics import majority_vote, sign_test, wilson_interval

__all__ = ["Accuracy", "Key", "Paired", "accuracy", "majority_at", "majority_tokens_at", "oracle", "outcome",
           "paired", "pooled_accuracy", "sample_counts", "share_alone"]

#: How an outcome is read from a record: a field name, or a function of the record.
Key = Union[str, Callable[[Mapping], bool]]


class Accuracy(NamedTuple):
    """``correct`` of ``n``, the rate and its Wilson 95% interval."""

    correct: int
    n: int
    rate: float
    low: float
    high: float


class Paired(NamedTuple):
    """Paired outcomes of two methods on the questions both answered: ``wins`` (only the first right),
    ``losses`` (only the second right), ``n`` shared questions, and the exact two-sided sign test's ``p``."""

    wins: int
    losses: int
    n: int
    p: float

    @property
    def ties(self) -> int:
        """Shared questions both got right or both got wrong."""
        return self.n - self.wins - self.losses


def _reader(key: Key) -> Callable[[Mapping], bool]:
    return (lambda r: bool(r[key])) if isinstance(key, str) else (lambda r: bool(key(r)))


def outcome(record: Mapping, pipeline: str | None = None) -> bool:
    """Whether a record's first sample is right under extraction ``pipeline`` (``strict``, ``flexible``); None, or
    a record from before per-pipeline scores, reads its ``correct`` (the task's primary pipeline).

    >>> r = {"correct": True, "scores": {"strict": {"correct": False}, "flexible": {"correct": True}}}
    >>> outcome(r), outcome(r, "strict"), outcome({"correct": True}, "strict")
    (True, False, True)
    """
    score = record.get("scores", {}).get(pipeline) if pipeline is not None else None
    return bool(score["correct"] if score is not None else record["correct"])


def sample_counts(record: Mapping, pipeline: str | None = None) -> tuple[int, int]:
    """``(correct, samples)`` of one record under ``pipeline``: every sample drawn for the question (``n_samples``,
    ``n_correct``), or its one outcome (:func:`outcome`) when one was drawn.

    >>> sample_counts({"correct": True, "scores": {"flexible": {"correct": True, "n_samples": 4, "n_correct": 3}}},
    ...               "flexible")
    (3, 4)
    """
    score = record.get("scores", {}).get(pipeline) if pipeline is not None else None
    if score is not None and "n_samples" in score:
        return int(score["n_correct"]), int(score["n_samples"])
    return int(outcome(record, pipeline)), 1


def accuracy(records: Sequence[Mapping], key: Key = "correct") -> Accuracy:
    """Accuracy of ``records`` (``key`` reads each record's 0/1 outcome) with a Wilson 95% interval."""
    read = _reader(key)
    n = len(records)
    k = sum(read(r) for r in records)
    low, high = wilson_interval(k, n)
    return Accuracy(k, n, k / n if n else 0.0, low, high)


def pooled_accuracy(records: Sequence[Mapping], pipeline: str | None = None) -> Accuracy:
    """Accuracy over every sample of ``records`` under ``pipeline`` (see :func:`sample_counts`): each sample is a
    trial, so records from several seeds or with several samples pool into one Wilson interval, narrower than one
    over questions alone would be.

    >>> r = {"id": "q1", "correct": False, "scores": {"flexible": {"correct": False, "n_samples": 4, "n_correct": 1}}}
    >>> acc = pooled_accuracy([r, {"id": "q2", "correct": True}], "flexible")
    >>> acc.correct, acc.n, acc.rate
    (2, 5, 0.4)
    """
    counts = [sample_counts(r, pipeline) for r in records]
    k, n = sum(c for c, _ in counts), sum(s for _, s in counts)
    low, high = wilson_interval(k, n)
    return Accuracy(k, n, k / n if n else 0.0, low, high)


def _by_id(records: Sequence[Mapping], key: Key) -> dict:
    read = _reader(key)
    return {r["id"]: read(r) for r in records}


def paired(first: Sequence[Mapping], second: Sequence[Mapping], key_first: Key = "correct",
           key_second: Key = "correct") -> Paired:
    """Wins and losses of ``first`` against ``second`` on the questions (by ``id``) both hold, with the exact sign
    test (ties carry no information). An ``id`` may be any hashable value: ``(seed, id)`` pairs runs seed by seed.

    >>> a = [{"id": (0, "q1"), "correct": True}, {"id": (1, "q1"), "correct": True}]
    >>> b = [{"id": (0, "q1"), "correct": False}, {"id": (1, "q1"), "correct": True}]
    >>> p = paired(a, b)
    >>> p.wins, p.losses, p.ties, p.p
    (1, 0, 1, 1.0)
    """
    a, b = _by_id(first, key_first), _by_id(second, key_second)
    shared = [i for i in a if i in b]
    wins = sum(a[i] and not b[i] for i in shared)
    losses = sum(b[i] and not a[i] for i in shared)
    return Paired(wins, losses, len(shared), sign_test(wins, losses))


def oracle(first: Sequence[Mapping], second: Sequence[Mapping]) -> Accuracy:
    """The oracle of per-question gating between two methods: right when either is, on the questions both hold.
    An upper bound on what choosing per question between them could reach."""
    a, b = _by_id(first, "correct"), _by_id(second, "correct")
    either = [{"correct": a[i] or b[i]} for i in a if i in b]
    return accuracy(either)


def majority_at(record: Mapping, k: int) -> bool:
    """Whether the majority vote of a record's first ``k`` votes is right (its ``votes``: per vote the extracted
    ``prediction`` and ``correct``, in voting order). Votes are independent samples, so the first ``k`` of ``K``
    votes are a ``k``-vote run. No answer among them counts as wrong.

    >>> r = {"votes": [{"prediction": "3", "correct": False}, {"prediction": "4", "correct": True},
    ...                {"prediction": "4", "correct": True}]}
    >>> majority_at(r, 1), majority_at(r, 2), majority_at(r, 3)
    (False, False, True)
    """
    votes = record["votes"][:k]
    if len(votes) < k:
        raise ValueError(f"record {record.get('id')} has {len(record['votes'])} votes, fewer than k = {k}")
    winner = majority_vote([v["prediction"] for v in votes])
    return winner is not None and bool(votes[winner]["correct"])


def majority_tokens_at(record: Mapping, k: int) -> int:
    """Generated tokens of a record's first ``k`` votes (the cost of a ``k``-vote run)."""
    return sum(int(v.get("completion_tokens") or 0) for v in record["votes"][:k])


def share_alone(records: Sequence[Mapping]) -> float | None:
    """Share of the questions a G-cache team answered alone (its decision node read nobody), or None when the
    records do not say (no read set)."""
    marked = [bool(r["alone"]) for r in records if r.get("alone") is not None]
    return sum(marked) / len(marked) if marked else None
