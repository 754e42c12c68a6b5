"""Tests for gcache.graph.AgentGraph: validation, order, unrolling, serialisation."""

from __future__ import annotations

import json

import pytest
import torch

from gcache.graph import AgentGraph, UnrolledNode, topological_order

AGENTS = ("A", "B", "C", "D")


def _adj(n: int, edges) -> torch.Tensor:
    adj = torch.zeros(n, n, dtype=torch.bool)
    for u, v in edges:
        adj[u, v] = True
    return adj


def test_order_and_neighbours():
    # 2 -> 0 -> 1, 2 -> 3: ready nodes are taken smallest index first.
    g = AgentGraph(AGENTS, _adj(4, [(2, 0), (0, 1), (2, 3)]), _adj(4, []))
    assert g.topological_order() == [2, 0, 1, 3]
    assert g.predecessors(1) == [0]
    assert g.predecessors(2) == []
    assert g.successors(2) == [0, 3]
    assert g.sinks() == [1, 3]
    assert g.num_agents == 4


def test_topological_order_is_valid_on_random_dags():
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        n = int(torch.randint(1, 8, (1,), generator=gen))
        perm = torch.randperm(n, generator=gen)
        upper = (torch.rand(n, n, generator=gen) < 0.4).triu(1)
        adj = upper[perm][:, perm]  # a DAG under a random node relabelling
        order = topological_order(adj)
        pos = {v: i for i, v in enumerate(order)}
        assert sorted(order) == list(range(n))
        for u, v in torch.nonzero(adj).tolist():
            assert pos[u] < pos[v]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"spatial": _adj(4, [(0, 1), (1, 2), (2, 0)])}, "cycle through nodes [0, 1, 2]"),
        ({"spatial": _adj(4, [(1, 1)])}, "self-loops at nodes [1]"),
        ({"spatial": torch.zeros(3, 3, dtype=torch.bool)}, "shape [4, 4] for 4 agents"),
        ({"temporal": torch.full((4, 4), 0.5)}, "temporal must be a bool"),
        ({"temporal": torch.full((4, 4), 2)}, "only 0/1 values"),
        ({"num_rounds": 0}, "num_rounds must be an int >= 1"),
        ({"decision": "vote"}, "decision must be one of"),
    ],
)
def test_validation(kwargs, message):
    args = {"agents": AGENTS, "spatial": _adj(4, []), "temporal": _adj(4, [])} | kwargs
    with pytest.raises(ValueError) as info:
        AgentGraph(**args)
    assert message in str(info.value)


def test_integer_adjacency_is_accepted():
    g = AgentGraph(("A", "B"), torch.tensor([[0, 1], [0, 0]]), torch.tensor([[1, 0], [0, 0]]))
    assert g.spatial.dtype == torch.bool and g.spatial[0, 1]
    assert g.temporal.dtype == torch.bool and g.temporal[0, 0]


def test_unrolled_two_rounds():
    # Round structure: 0 -> 1 -> 2 and 3 alone; temporal: 2 -> 0 (the last speaker opens the
    # next round), every agent to itself, and 1 -> 3.
    spatial = _adj(4, [(0, 1), (1, 2)])
    temporal = _adj(4, [(2, 0), (0, 0), (1, 1), (2, 2), (3, 3), (1, 3)])
    g = AgentGraph(AGENTS, spatial, temporal, num_rounds=2)
    expected = [
        UnrolledNode(0, 0, ()),
        UnrolledNode(0, 1, ((0, 0),)),
        UnrolledNode(0, 2, ((0, 1),)),
        UnrolledNode(0, 3, ()),
        UnrolledNode(1, 0, ((0, 0), (0, 2))),
        UnrolledNode(1, 1, ((0, 1), (1, 0))),
        UnrolledNode(1, 2, ((0, 2), (1, 1))),
        UnrolledNode(1, 3, ((0, 1), (0, 3))),
    ]
    steps = g.unrolled()
    assert steps == expected
    # Every input is produced before it is consumed.
    done = set()
    for step in steps:
        assert set(step.predecessors) <= done
        done.add((step.round, step.agent))


def test_unrolled_single_round_ignores_temporal():
    g = AgentGraph(AGENTS, _adj(4, [(3, 0)]), torch.ones(4, 4, dtype=torch.bool))
    assert [(s.round, s.agent, s.predecessors) for s in g.unrolled()] == [
        (0, 1, ()), (0, 2, ()), (0, 3, ()), (0, 0, ((0, 3),)),
    ]


def test_dict_roundtrip_is_json():
    g = AgentGraph(AGENTS, _adj(4, [(0, 3), (1, 3)]), _adj(4, [(3, 0)]), 3, "majority")
    d = json.loads(json.dumps(g.to_dict()))
    assert d["spatial"][0] == [0, 0, 0, 1]
    assert d["temporal"][3] == [1, 0, 0, 0]
    back = AgentGraph.from_dict(d)
    assert back == g
    assert back != AgentGraph(AGENTS, _adj(4, [(0, 3)]), _adj(4, [(3, 0)]), 3, "majority")
    with pytest.raises(ValueError, match="missing"):
        AgentGraph.from_dict({"agents": ["A"]})


def test_repr_lists_edges():
    g = AgentGraph(("A", "B"), _adj(2, [(0, 1)]), _adj(2, []))
    assert "spatial_edges=[(0, 1)]" in repr(g)
