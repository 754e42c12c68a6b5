"""Graph sampling: exact log-probabilities, acyclicity, frequencies, direction, and the most probable DAG."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from gcache.graph import AgentGraph
from gcache.graph.sampling import graph_log_prob, most_probable_dag, sample_dag, sample_edges


def _reaches(adj: list[list[bool]], src: int, dst: int) -> bool:
    """Depth-first search: is there a path src -> ... -> dst (src == dst counts)?"""
    stack, seen = [src], set()
    while stack:
        a = stack.pop()
        if a == dst:
            return True
        if a in seen:
            continue
        seen.add(a)
        stack.extend(b for b, on in enumerate(adj[a]) if on)
    return False


def _replay(probs: torch.Tensor, adj: torch.Tensor, order: torch.Tensor):
    """Recompute, from the visit order and the result, which edges got a draw and log pi."""
    n = probs.shape[0]
    built = [[False] * n for _ in range(n)]
    considered = torch.zeros(n, n, dtype=torch.bool)
    log_prob = 0.0
    for u, v in order.tolist():
        if _reaches(built, v, u):
            assert not adj[u, v], f"edge {(u, v)} closes a cycle but was taken"
            continue
        considered[u, v] = True
        p = float(probs[u, v])
        if adj[u, v]:
            built[u][v] = True
            log_prob += math.log(p)
        else:
            log_prob += math.log(1.0 - p)
    return considered, log_prob


def _is_dag(adj: torch.Tensor) -> bool:
    try:
        AgentGraph(tuple(str(i) for i in range(adj.shape[0])), adj, torch.zeros_like(adj))
    except ValueError:
        return False
    return True



# ----------------------------------------------------------------------- sampling


def test_sample_dag_is_acyclic_and_log_prob_is_exact():
    gen = torch.Generator().manual_seed(0)
    for trial in range(200):
        n = 2 + trial % 6
        probs = torch.rand(n, n, generator=gen).clamp(0.02, 0.98).fill_diagonal_(0.0)
        s = sample_dag(probs, gen)
        assert s.adj.dtype == torch.bool and not s.adj.diagonal().any()
        assert _is_dag(s.adj), f"trial {trial}: cycle in {s.adj.int().tolist()}"
        # order visits every off-diagonal pair exactly once
        assert sorted(map(tuple, s.order.tolist())) == [
            (u, v) for u in range(n) for v in range(n) if u != v
        ]
        considered, expected = _replay(probs, s.adj, s.order)
        assert torch.equal(considered, s.considered)
        assert s.log_prob_given_order.item() == pytest.approx(expected, abs=1e-4)


def test_sample_dag_log_prob_gradient():
    gen = torch.Generator().manual_seed(3)
    probs = torch.rand(5, 5, generator=gen).clamp(0.05, 0.95).fill_diagonal_(0.0)
    probs.requires_grad_(True)
    s = sample_dag(probs, gen)
    s.log_prob_given_order.backward()
    p = probs.detach()
    expected = torch.where(s.adj, 1.0 / p, -1.0 / (1.0 - p)) * s.considered
    torch.testing.assert_close(probs.grad, expected)
    assert (probs.grad[~s.considered] == 0).all()


def test_sample_dag_frequencies_match_probabilities():
    # Upper-triangular candidates can never close a cycle: each edge is a plain Bernoulli.
    probs = torch.tensor([[0.0, 0.2, 0.7], [0.0, 0.0, 0.5], [0.0, 0.0, 0.0]])
    mask = torch.ones(3, 3, dtype=torch.bool).triu(1)
    gen = torch.Generator().manual_seed(1)
    counts = torch.zeros(3, 3)
    draws = 4000
    for _ in range(draws):
        counts += sample_dag(probs, gen, mask=mask).adj
    freq = counts / draws
    # 4 standard errors of a Bernoulli mean at p = 0.5 is 0.032
    torch.testing.assert_close(freq * mask, probs, atol=0.032, rtol=0)


def test_sample_dag_learns_direction_from_directed_probabilities():
    # p(1 -> 0) high, p(0 -> 1) low: whichever is visited first, the graph almost always points 1 -> 0.
    probs = torch.tensor([[0.0, 0.02], [0.98, 0.0]])
    gen = torch.Generator().manual_seed(0)
    draws = [sample_dag(probs, gen).adj for _ in range(500)]
    assert sum(bool(a[1, 0]) for a in draws) > 450
    assert sum(bool(a[0, 1]) for a in draws) < 25


def test_sample_edges():
    gen = torch.Generator().manual_seed(2)
    for _ in range(50):
        probs = torch.rand(4, 4, generator=gen).clamp(0.02, 0.98)
        s = sample_edges(probs, gen)
        assert s.considered.all()
        expected = sum(
            math.log(float(probs[u, v])) if s.adj[u, v] else math.log(1 - float(probs[u, v]))
            for u in range(4) for v in range(4)
        )
        assert s.log_prob_given_order.item() == pytest.approx(expected, abs=1e-4)


def test_graph_log_prob():
    probs = torch.tensor([[0.0, 0.25], [0.6, 0.0]])
    adj = torch.tensor([[False, True], [False, False]])
    considered = torch.tensor([[False, True], [True, False]])
    expected = math.log(0.25) + math.log(0.4)
    assert graph_log_prob(probs, adj, considered).item() == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="differ in shape"):
        graph_log_prob(probs, adj[:1])


# ----------------------------------------------------------------------- most probable DAG


def _all_dags(n: int):
    pairs = [(u, v) for u in range(n) for v in range(n) if u != v]
    for bits in itertools.product([False, True], repeat=len(pairs)):
        adj = torch.zeros(n, n, dtype=torch.bool)
        for (u, v), on in zip(pairs, bits):
            adj[u, v] = on
        if _is_dag(adj):
            yield adj


def _score(probs: torch.Tensor, adj: torch.Tensor) -> float:
    off = ~torch.eye(probs.shape[0], dtype=torch.bool)
    return float(graph_log_prob(probs.double(), adj, off))


@pytest.mark.parametrize("n", [2, 3, 4])
def test_most_probable_dag_is_the_argmax_over_every_dag(n):
    gen = torch.Generator().manual_seed(n)
    dags = list(_all_dags(n))  # 3, 25, 543 DAGs
    for _ in range(10):
        probs = torch.rand(n, n, generator=gen).clamp(0.02, 0.98).fill_diagonal_(0.0)
        best = max(_score(probs, a) for a in dags)
        got = most_probable_dag(probs)
        assert _is_dag(got)
        assert _score(probs, got) == pytest.approx(best, abs=1e-9)


def test_most_probable_dag_follows_direction_not_agent_order():
    # Everything points from higher to lower index: a threshold on symmetric scores could never give this.
    probs = torch.full((4, 4), 0.05)
    for u in range(4):
        for v in range(u):
            probs[u, v] = 0.9
    got = most_probable_dag(probs.fill_diagonal_(0.0))
    assert got.tolist() == [[u > v for v in range(4)] for u in range(4)]
    perm = torch.tensor([2, 0, 3, 1])  # relabelling the agents relabels the answer
    assert torch.equal(most_probable_dag(probs[perm][:, perm]), got[perm][:, perm])


def test_most_probable_dag_greedy_beyond_exact_size():
    n = 10
    gen = torch.Generator().manual_seed(0)
    probs = torch.rand(n, n, generator=gen).fill_diagonal_(0.0)
    got = most_probable_dag(probs)
    assert _is_dag(got)
    assert not (got & (probs <= 0.5)).any()  # only edges more likely present than absent
