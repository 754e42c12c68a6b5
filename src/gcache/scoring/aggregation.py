"""Adding up per-question records: accuracy with its interval, paired comparisons, oracle gating, maj@k.

Every function takes the records ``gcache eval`` writes (``results.jsonl``: one dict per question with ``id`` and
``correct``; ``votes`` for majority-voted methods; ``alone`` for G-cache), so a number in a table comes from the
same code whether ``gcache eval``'s summary, a benchmark or a report computes it. Torch-free.

>>> a = [{"id": "q1", "correct": True}, {"id": "q2", "correct": False}, {"id": "q3", "correct": True}]
>>> b = [{"id": "q1", "correct": False}, {"id": "q2", "correct": False}, {"id": "q3", "correct": True}]
>>> accuracy(a).correct, paired(a, b).wins, paired(a, b).losses, oracle(a, b).correct
(2, 1, 0, 2)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from gcache.scoring.metrics import majority_vote, sign_test, wilson_interval

__all__ = ["Accuracy", "Paired", "accuracy", "majority_at", "majority_tokens_at", "oracle", "paired",
           "share_alone"]


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


def accuracy(records: Sequence[Mapping], key: str = "correct") -> Accuracy:
    """Accuracy of ``records`` (``key`` is each record's 0/1 outcome) with a Wilson 95% interval."""
    n = len(records)
    k = sum(bool(r[key]) for r in records)
    low, high = wilson_interval(k, n)
    return Accuracy(k, n, k / n if n else 0.0, low, high)


def _by_id(records: Sequence[Mapping], key: str) -> dict[str, bool]:
    return {r["id"]: bool(r[key]) for r in records}


def paired(first: Sequence[Mapping], second: Sequence[Mapping], key_first: str = "correct",
           key_second: str = "correct") -> Paired:
    """Wins and losses of ``first`` against ``second`` on the questions (by ``id``) both hold, with the exact sign
    test (ties carry no information)."""
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
