"""The communication graph of a multi-agent run.

An :class:`AgentGraph` holds one role name per node and two adjacencies:

* ``spatial[u, v]``: agent ``u`` hands its message to agent ``v`` within the same round.
  It must be a DAG, since it fixes the execution order inside a round.
* ``temporal[u, v]``: agent ``u``'s message from round ``r - 1`` is an input of agent ``v``
  in round ``r``. Any pattern is allowed (including ``u == v``): rounds are ordered.

and, optionally, the **read set** ``reads``: the final-round agents a ``refer`` decision node reads. ``None``
keeps G-Designer's rule (the decision reads the sinks); a tuple is the policy's choice, and ``()`` means the
decision node answers alone, which is exactly the ``single`` method (no agent runs: nobody reads them).

:meth:`AgentGraph.unrolled` flattens ``num_rounds`` rounds into one execution schedule.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from gcache.choices import DECISIONS

__all__ = ["AgentGraph", "UnrolledNode", "DECISIONS", "topological_order"]


class UnrolledNode(NamedTuple):
    """One step of the unrolled schedule.

    Attributes:
        round (int): Round index, from 0.
        agent (int): Node index in the graph.
        predecessors (tuple[tuple[int, int], ...]): ``(round, agent)`` inputs: first the
            temporal ones from ``round - 1``, then the spatial ones from this round, each
            group in increasing agent index.
    """

    round: int
    agent: int
    predecessors: tuple[tuple[int, int], ...]


def topological_order(adj: torch.Tensor) -> list[int]:
    """Kahn's algorithm with smallest-index-first tie breaking (so the order is unique).

    Args:
        adj (torch.Tensor): ``[n, n]`` adjacency, nonzero ``adj[u, v]`` meaning ``u -> v``.

    Returns:
        list[int]: Node indices such that every edge goes forward.

    Raises:
        ValueError: If the graph has a cycle (the message names the nodes on cycles).
    """
    a = adj.detach().to("cpu", torch.bool)
    n = a.shape[0]
    indeg = a.sum(dim=0).tolist()
    succ = [torch.nonzero(a[u]).flatten().tolist() for u in range(n)]
    heap = [v for v in range(n) if indeg[v] == 0]
    heapq.heapify(heap)
    order: list[int] = []
    while heap:
        u = heapq.heappop(heap)
        order.append(u)
        for v in succ[u]:
            indeg[v] -= 1
            if indeg[v] == 0:
                heapq.heappush(heap, v)
    if len(order) != n:
        stuck = sorted(set(range(n)) - set(order))
        raise ValueError(f"spatial adjacency has a cycle through nodes {stuck}")
    return order


def _as_square_bool(name: str, x: Any, n: int) -> torch.Tensor:
    t = torch.as_tensor(x).detach().to("cpu")
    if t.dtype != torch.bool:
        if t.is_floating_point() or t.is_complex():
            raise ValueError(f"{name} must be a bool (or 0/1 integer) tensor, got {t.dtype}")
        if ((t != 0) & (t != 1)).any():
            raise ValueError(f"{name} must hold only 0/1 values")
        t = t.bool()
    if t.shape != (n, n):
        raise ValueError(f"{name} must have shape [{n}, {n}] for {n} agents, got {list(t.shape)}")
    return t


@dataclass(eq=False)
class AgentGraph:
    """Agents and the edges between them, for ``num_rounds`` rounds.

    Args:
        agents (tuple[str, ...]): Role name per node.
        spatial (torch.BoolTensor): ``[n, n]``, ``u -> v`` within a round. Must be a DAG
            without self-loops.
        temporal (torch.BoolTensor): ``[n, n]``, ``u`` in round ``r - 1`` -> ``v`` in round
            ``r``. Ignored when ``num_rounds == 1``.
        num_rounds (int): Number of rounds. Default is 1.
        decision (str): One of :data:`DECISIONS`. Default is ``"refer"``.
        reads (tuple[int, ...] | None): Agents the ``refer`` decision node reads (increasing, unique); ``()``
            answers alone; None reads the sinks. Default is None.

    Raises:
        ValueError: On shape/dtype mismatch, a spatial self-loop or cycle, ``num_rounds < 1``,
            an unknown decision, or a read set with an index out of range or repeated.

    Example:
        >>> g = AgentGraph(("A", "B"), torch.tensor([[0, 1], [0, 0]]).bool(),
        ...                torch.zeros(2, 2, dtype=torch.bool))
        >>> g.topological_order(), g.predecessors(1)
        ([0, 1], [0])
    """

    agents: tuple[str, ...]
    spatial: torch.Tensor
    temporal: torch.Tensor
    num_rounds: int = 1
    decision: str = "refer"
    reads: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        self.agents = tuple(self.agents)
        n = len(self.agents)
        if n < 1:
            raise ValueError("an AgentGraph needs at least one agent")
        self.spatial = _as_square_bool("spatial", self.spatial, n)
        self.temporal = _as_square_bool("temporal", self.temporal, n)
        if self.spatial.diagonal().any():
            loops = torch.nonzero(self.spatial.diagonal()).flatten().tolist()
            raise ValueError(f"spatial adjacency has self-loops at nodes {loops}")
        if not isinstance(self.num_rounds, int) or self.num_rounds < 1:
            raise ValueError(f"num_rounds must be an int >= 1, got {self.num_rounds!r}")
        if self.decision not in DECISIONS:
            raise ValueError(f"decision must be one of {DECISIONS}, got {self.decision!r}")
        if self.reads is not None:
            reads = tuple(int(i) for i in self.reads)
            if list(reads) != sorted(set(reads)) or any(not 0 <= i < n for i in reads):
                raise ValueError(f"reads must be increasing, unique agent indices in [0, {n}), got {self.reads!r}")
            if self.decision != "refer":
                raise ValueError(f"a read set is the refer decision's; decision {self.decision!r} has none")
            self.reads = reads
        self.topological_order()  # raises on a cycle

    @property
    def num_agents(self) -> int:
        """Number of nodes ``n``."""
        return len(self.agents)

    def topological_order(self) -> list[int]:
        """Execution order within a round (smallest index first among ready nodes).

        Raises:
            ValueError: If ``spatial`` has a cycle.
        """
        return topological_order(self.spatial)

    def predecessors(self, v: int) -> list[int]:
        """Spatial predecessors of node ``v`` (same round), in increasing index."""
        return torch.nonzero(self.spatial[:, v]).flatten().tolist()

    def successors(self, u: int) -> list[int]:
        """Spatial successors of node ``u`` (same round), in increasing index."""
        return torch.nonzero(self.spatial[u]).flatten().tolist()

    def temporal_predecessors(self, v: int) -> list[int]:
        """Nodes of the previous round that feed node ``v``, in increasing index."""
        return torch.nonzero(self.temporal[:, v]).flatten().tolist()

    def sinks(self) -> list[int]:
        """Nodes without spatial successors (what a ``refer`` decision reads when there is no read set)."""
        return torch.nonzero(~self.spatial.any(dim=1)).flatten().tolist()

    @property
    def alone(self) -> bool:
        """The decision node reads nobody: the graph runs exactly the ``single`` method."""
        return self.reads == ()

    def unrolled(self) -> list[UnrolledNode]:
        """All ``(round, agent)`` nodes in execution order, with their inputs.

        Round ``r`` runs after round ``r - 1``; inside a round nodes follow
        :meth:`topological_order`. A node's inputs are its temporal predecessors in round
        ``r - 1`` (none in round 0) followed by its spatial predecessors in round ``r``.

        Returns:
            list[UnrolledNode]: ``num_rounds * n`` entries.
        """
        order = self.topological_order()
        spatial_pred = [self.predecessors(v) for v in range(self.num_agents)]
        temporal_pred = [self.temporal_predecessors(v) for v in range(self.num_agents)]
        steps: list[UnrolledNode] = []
        for r in range(self.num_rounds):
            for v in order:
                preds = [(r - 1, u) for u in temporal_pred[v]] if r > 0 else []
                preds += [(r, u) for u in spatial_pred[v]]
                steps.append(UnrolledNode(r, v, tuple(preds)))
        return steps

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (0/1 matrices), e.g. to record the adjacency actually used."""
        data = {
            "agents": list(self.agents),
            "spatial": self.spatial.int().tolist(),
            "temporal": self.temporal.int().tolist(),
            "num_rounds": self.num_rounds,
            "decision": self.decision,
        }
        if self.reads is not None:
            data["reads"] = list(self.reads)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AgentGraph:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: On missing fields or any validation error.
        """
        missing = [k for k in ("agents", "spatial", "temporal") if k not in data]
        if missing:
            raise ValueError(f"AgentGraph dict is missing {missing}")
        return cls(
            agents=tuple(data["agents"]),
            spatial=torch.tensor(data["spatial"], dtype=torch.long),
            temporal=torch.tensor(data["temporal"], dtype=torch.long),
            num_rounds=int(data.get("num_rounds", 1)),
            decision=data.get("decision", "refer"),
            reads=None if data.get("reads") is None else tuple(data["reads"]),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AgentGraph):
            return NotImplemented
        return (
            self.agents == other.agents
            and torch.equal(self.spatial, other.spatial)
            and torch.equal(self.temporal, other.temporal)
            and self.num_rounds == other.num_rounds
            and self.decision == other.decision
            and self.reads == other.reads
        )

    def __repr__(self) -> str:
        edges = [(u, v) for u, v in torch.nonzero(self.spatial).tolist()]
        return (
            f"AgentGraph(agents={list(self.agents)}, spatial_edges={edges}, "
            f"temporal_edges={int(self.temporal.sum())}, num_rounds={self.num_rounds}, "
            f"decision={self.decision!r}" + ("" if self.reads is None else f", reads={list(self.reads)}") + ")"
        )

