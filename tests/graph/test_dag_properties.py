"""Property tests (hypothesis): sampled spatial graphs are DAGs that skip only cycle-closing edges, their
log-probability is the sum over the draws made, and AgentGraph accepts exactly the acyclic adjacencies.
Acyclicity is checked independently, by powers of the adjacency matrix (a DAG on n nodes has no walk of length n).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gcache.graph import AgentGraph
from gcache.graph.sampling import EPS, most_probable_dag, sample_dag

SETTINGS = settings(max_examples=60, deadline=None)


def _is_acyclic(adj: torch.Tensor) -> bool:
    n = adj.shape[0]
    a = adj.to(torch.int64)
    walk = torch.eye(n, dtype=torch.int64)
    for _ in range(n):
        walk = (walk @ a).clamp_max(1)
    return not bool(walk.any())


def _reaches(adj: torch.Tensor, src: int, dst: int) -> bool:
    seen, todo = {src}, [src]
    while todo:
        u = todo.pop()
        for v in torch.nonzero(adj[u]).flatten().tolist():
            if v not in seen:
                seen.add(v)
                todo.append(v)
    return dst in seen


@st.composite
def edge_probs(draw):
    n = draw(st.integers(min_value=1, max_value=6))
    values = draw(st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=n * n, max_size=n * n))
    return torch.tensor(values, dtype=torch.float64).reshape(n, n)


@SETTINGS
@given(edge_probs(), st.integers(min_value=0, max_value=2**31 - 1))
def test_sampled_graphs_are_dags_and_their_log_prob_is_the_draws(probs, seed):
    s = sample_dag(probs, torch.Generator().manual_seed(seed))
    n = probs.shape[0]
    off_diagonal = ~torch.eye(n, dtype=torch.bool)
    assert _is_acyclic(s.adj)
    assert not (s.adj & ~s.considered).any() and not (s.considered & ~off_diagonal).any()
    # every candidate that was not drawn would have closed a cycle in the final graph
    for u, v in torch.nonzero(off_diagonal & ~s.considered).tolist():
        assert _reaches(s.adj, v, u)
    expected = 0.0
    for u, v in torch.nonzero(s.considered).tolist():
        p = min(max(float(probs[u, v]), EPS), 1 - EPS)
        expected += math.log(p) if s.adj[u, v] else math.log1p(-p)
    assert float(s.log_prob_given_order) == pytest.approx(expected, rel=1e-9, abs=1e-9)


@SETTINGS
@given(edge_probs())
def test_most_probable_dag_is_a_dag_of_likely_edges(probs):
    adj = most_probable_dag(probs)
    assert _is_acyclic(adj) and not adj.diagonal().any()
    assert not (adj & (probs <= 0.5)).any()  # an edge is taken only where it is more likely present than absent


@SETTINGS
@given(st.integers(min_value=1, max_value=6).flatmap(
    lambda n: st.lists(st.booleans(), min_size=n * n, max_size=n * n).map(
        lambda bits: torch.tensor(bits).reshape(n, n))))
def test_agent_graph_accepts_exactly_the_acyclic_adjacencies(adj):
    n = adj.shape[0]
    adj = adj & ~torch.eye(n, dtype=torch.bool)  # self-loops are refused for their own reason
    agents = [f"A{i}" for i in range(n)]
    if _is_acyclic(adj):
        order = AgentGraph(agents, adj, torch.zeros(n, n, dtype=torch.bool)).topological_order()
        position = {v: i for i, v in enumerate(order)}
        assert sorted(order) == list(range(n))
        assert all(position[u] < position[v] for u, v in torch.nonzero(adj).tolist())
    else:
        with pytest.raises(ValueError, match="cycle"):
            AgentGraph(agents, adj, torch.zeros(n, n, dtype=torch.bool))
