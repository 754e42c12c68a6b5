"""Tests for gcache.graph.preset_graph: each preset has exactly the edges it names."""

from __future__ import annotations

import pytest
import torch

from gcache.graph import PRESETS, preset_graph

AGENTS = ("a0", "a1", "a2", "a3", "a4")
N = len(AGENTS)


def _edges(adj: torch.Tensor) -> set[tuple[int, int]]:
    return {(u, v) for u, v in torch.nonzero(adj).tolist()}


EXPECTED = {
    "chain": {(0, 1), (1, 2), (2, 3), (3, 4)},
    "sequential": {(0, 1), (1, 2), (2, 3), (3, 4)},
    "star": {(0, 1), (0, 2), (0, 3), (0, 4)},
    "hierarchical": {(0, 4), (1, 4), (2, 4), (3, 4)},
    "complete": {(i, j) for i in range(N) for j in range(N) if i < j},
    "layered": {(i, j) for i in (0, 1) for j in (2, 3, 4)},
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_edges(name):
    g = preset_graph(name, AGENTS)
    assert _edges(g.spatial) == EXPECTED[name]
    assert _edges(g.temporal) == set()
    assert g.agents == AGENTS and g.num_rounds == 1 and g.decision == "refer"


def test_random_preset_matches_its_definition():
    for seed in range(20):
        g = preset_graph("random", AGENTS, seed=seed, p=0.3)
        draws = torch.rand(N, N, generator=torch.Generator().manual_seed(seed))
        expected = {(i, j) for i in range(N) for j in range(N) if i < j and draws[i, j] < 0.3}
        assert _edges(g.spatial) == expected
    assert _edges(preset_graph("random", AGENTS, p=0.0).spatial) == set()
    assert _edges(preset_graph("random", AGENTS, p=1.0).spatial) == EXPECTED["complete"]
    graphs = {frozenset(_edges(preset_graph("random", AGENTS, seed=s).spatial)) for s in range(20)}
    assert len(graphs) > 5  # the seed matters


def test_debate():
    g = preset_graph("debate", AGENTS, num_rounds=3)
    assert _edges(g.spatial) == set()
    assert _edges(g.temporal) == {(u, v) for u in range(N) for v in range(N)}
    assert g.num_rounds == 3
    with pytest.raises(ValueError, match="debate preset needs num_rounds >= 2"):
        preset_graph("debate", AGENTS)


def test_temporal_patterns():
    assert _edges(preset_graph("chain", AGENTS, 2).temporal) == {
        (u, v) for u in range(N) for v in range(N)
    }
    assert _edges(preset_graph("chain", AGENTS, 2, temporal="identity").temporal) == {
        (i, i) for i in range(N)
    }
    assert _edges(preset_graph("star", AGENTS, 2, temporal="none").temporal) == set()
    with pytest.raises(ValueError, match="unknown temporal pattern 'ring'"):
        preset_graph("chain", AGENTS, 2, temporal="ring")


def test_errors():
    with pytest.raises(ValueError) as info:
        preset_graph("ring", AGENTS)
    for name in PRESETS:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="agents must be non-empty"):
        preset_graph("chain", [])
    with pytest.raises(ValueError, match="layered preset needs at least 2 agents"):
        preset_graph("layered", ["x"])
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\]"):
        preset_graph("random", AGENTS, p=1.5)


@pytest.mark.parametrize("name", [p for p in PRESETS if p not in ("debate", "layered")])
def test_single_agent(name):
    g = preset_graph(name, ["solo"])
    assert _edges(g.spatial) == set()
    assert g.unrolled()[0].agent == 0
