"""Fixed topologies (the baselines of G-Designer and LatentMAS).

Spatial edges per preset, for agents ``0 .. n-1``:

* ``chain``: ``i -> i+1``.
* ``sequential``: same as ``chain`` (LatentMAS sequential: planner -> critic -> refiner -> judger).
* ``star``: ``0 -> j`` for every ``j > 0``.
* ``hierarchical``: ``j -> n-1`` for every ``j < n-1`` (LatentMAS hierarchical: experts -> judger).
* ``complete``: ``i -> j`` for every ``i < j`` (the complete DAG).
* ``layered``: ``i -> j`` for ``i < n // 2 <= j`` (the first half feeds the second half).
* ``random``: ``i -> j`` for ``i < j`` with probability ``p``, seeded.
* ``debate``: none; agents exchange messages only across rounds (needs 2+ rounds).
* ``empty``: none, and the decision node reads nobody (read set ``()``): exactly the ``single`` method, the team
  that "answers alone" (no agent runs).

Temporal edges: with one round there are none. With several rounds, ``debate`` and, by
default, every other preset use all ``n * n`` pairs (every agent sees every agent's previous
message, G-Designer's default temporal mask); pass ``temporal="identity"`` (each agent sees
its own previous message) or ``"none"`` to change that.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from gcache.choices import PRESETS
from gcache.graph.agent_graph import AgentGraph

__all__ = ["PRESETS", "TEMPORAL_PATTERNS", "preset_graph"]
TEMPORAL_PATTERNS = ("complete", "identity", "none")


def _spatial(name: str, n: int, seed: int, p: float) -> torch.Tensor:
    adj = torch.zeros(n, n, dtype=torch.bool)
    idx = torch.arange(n)
    if name in ("chain", "sequential"):
        adj[idx[:-1], idx[1:]] = True
    elif name == "star":
        adj[0, 1:] = True
    elif name == "hierarchical":
        adj[:-1, n - 1] = True
    elif name == "complete":
        adj = torch.ones(n, n, dtype=torch.bool).triu(diagonal=1)
    elif name == "layered":
        adj[: n // 2, n // 2 :] = True
    elif name == "random":
        gen = torch.Generator().manual_seed(seed)
        # One uniform draw per ordered pair; only the upper triangle is used, so the
        # result is a DAG whatever the draws.
        adj = (torch.rand(n, n, generator=gen) < p).triu(diagonal=1)
    # "debate", "empty": no spatial edges.
    return adj


def preset_graph(
    name: str,
    agents: Sequence[str],
    num_rounds: int = 1,
    *,
    seed: int = 0,
    p: float = 0.5,
    temporal: str | None = None,
    decision: str = "refer",
) -> AgentGraph:
    """Build a fixed topology over ``agents``.

    Args:
        name (str): One of :data:`PRESETS`.
        agents (Sequence[str]): Role name per node.
        num_rounds (int): Number of rounds; ``debate`` needs at least 2. Default is 1.
        seed (int): Seed of the ``random`` preset. Default is 0.
        p (float): Edge probability of the ``random`` preset. Default is 0.5.
        temporal (str | None): Temporal pattern for ``num_rounds > 1``, one of
            :data:`TEMPORAL_PATTERNS`; ``None`` means ``"complete"``. Default is None.
        decision (str): Decision mode of the graph. Default is ``"refer"``.

    Returns:
        AgentGraph: The preset graph.

    Raises:
        ValueError: On an unknown preset or temporal pattern, no agents, ``p`` outside
            [0, 1], ``layered`` with fewer than 2 agents, or ``debate`` with one round.

    Example:
        >>> preset_graph("chain", ["A", "B", "C"]).spatial.int().tolist()
        [[0, 1, 0], [0, 0, 1], [0, 0, 0]]
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid presets are {list(PRESETS)}")
    agents = tuple(agents)
    n = len(agents)
    if n < 1:
        raise ValueError("agents must be non-empty")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    if name == "layered" and n < 2:
        raise ValueError("the layered preset needs at least 2 agents")
    if name == "debate" and num_rounds < 2:
        raise ValueError(f"the debate preset needs num_rounds >= 2, got {num_rounds}")
    pattern = "complete" if temporal is None else temporal
    if pattern not in TEMPORAL_PATTERNS:
        raise ValueError(
            f"unknown temporal pattern {temporal!r}; valid ones are {list(TEMPORAL_PATTERNS)}"
        )
    if num_rounds <= 1 or pattern == "none":
        temp = torch.zeros(n, n, dtype=torch.bool)
    elif pattern == "identity":
        temp = torch.eye(n, dtype=torch.bool)
    else:
        temp = torch.ones(n, n, dtype=torch.bool)
    if name == "empty" and decision != "refer":
        raise ValueError(f"the empty preset answers alone through the refer decision, not {decision!r}")
    return AgentGraph(
        agents=agents,
        spatial=_spatial(name, n, seed, p),
        temporal=temp,
        num_rounds=num_rounds,
        decision=decision,
        reads=() if name == "empty" else None,
    )
