"""A learned team: prompt set + topology policy + CacheFuser, the trainable state of gdesigner / gcache.

The LLMs are not part of it: a team holds only what training changes (GNN, MLP, temporal head, fuser), plus the
frozen sentence embedder that turns role profiles and questions into node features.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from gcache.agents.pipelines import DECISION_MAKER
from gcache.agents.roles import PromptSet, Role
from gcache.graph import AgentGraph, preset_graph
from gcache.modules.cache_fuser import CacheFuser
from gcache.modules.topology import EdgeProbs, TopologyGNN, TopologyPolicy

logger = logging.getLogger(__name__)

__all__ = ["Team", "soft_edge_log_probs"]


def soft_edge_log_probs(probs: EdgeProbs, edge_index: dict[tuple[int, int], tuple[str, int, int]]
                        ) -> dict[tuple[int, int], torch.Tensor]:
    """``log p`` of the graph edge behind each plan input, for the fuser's soft-edge term."""
    out = {}
    for key, (kind, u, v) in edge_index.items():
        p = probs.spatial[u, v] if kind == "spatial" else probs.temporal[u, v]
        out[key] = torch.log(p.clamp_min(1e-6))
    return out


class Team(nn.Module):
    """Agents of one prompt set, the graph policy over them and the fuser of their messages.

    Args:
        prompt_set (PromptSet): roles, anchor graph and default team.
        agents (Sequence[str]): role name per agent.
        embedder: a :class:`gcache.modules.embedding.SentenceEmbedder` (frozen).
        num_layers (int): layers of the LLM (for the fuser's gates); 0 for text-only teams (no fuser).
        topology (str): ``"learned"`` or a preset name. Default is ``"learned"``.
        num_rounds (int): rounds. Default is 1.
        decision (str): ``refer`` / ``direct`` / ``majority``. Default is ``"refer"``.
        fuser_mode (str): ``bias`` or ``concat``. Default is ``"bias"``.
        hidden_dim (int): GCN hidden size. Default is 32.
        temperature (float): temperature of the edge logits; node codes are unit vectors, so
            ``p`` lies in ``[σ(-1/τ), σ(1/τ)]``. Default is 0.25.
        seed (int): seed of the random preset. Default is 0.
    """

    def __init__(self, prompt_set: PromptSet, agents: Sequence[str], embedder, *, num_layers: int = 0,
                 topology: str = "learned", num_rounds: int = 1, decision: str = "refer", fuser_mode: str = "bias",
                 hidden_dim: int = 32, temperature: float = 0.25, seed: int = 0) -> None:
        super().__init__()
        self.prompt_set = prompt_set
        self.agents = tuple(agents)
        self.embedder = embedder
        self.topology = topology
        self.num_rounds = num_rounds
        self.decision = decision
        self.seed = seed
        self.register_buffer("anchor", prompt_set.anchor_adjacency(self.agents), persistent=False)
        self.policy: TopologyPolicy | None = None
        if topology == "learned":
            gnn = TopologyGNN(embedder.dim, hidden_dim, hidden_dim, temperature=temperature)
            self.policy = TopologyPolicy(gnn, num_rounds=num_rounds, decision=decision)
        self.fuser: CacheFuser | None = None
        if num_layers > 0:
            self.fuser = CacheFuser(num_layers, [*prompt_set.role_names, DECISION_MAKER.name], mode=fuser_mode)
        self._role_emb: torch.Tensor | None = None

    @property
    def roles(self) -> dict[str, Role]:
        return {name: self.prompt_set.role(name) for name in self.prompt_set.role_names}

    def role_embeddings(self) -> torch.Tensor:
        if self._role_emb is None:
            self._role_emb = self.embedder.encode(self.prompt_set.profiles(self.agents))  # [n, d]
        return self._role_emb

    def graph_for(self, question: str, generator: torch.Generator | None = None, deterministic: bool = False
                  ) -> tuple[AgentGraph, torch.Tensor | None, EdgeProbs | None]:
        """The graph for one question: ``(graph, log π(graph) or None, edge probabilities or None)``."""
        return self.sample_graphs(question, 1, generator, deterministic)[0]

    def sample_graphs(self, question: str, k: int, generator: torch.Generator | None = None,
                      deterministic: bool = False) -> list[tuple[AgentGraph, torch.Tensor | None, EdgeProbs | None]]:
        """``k`` graphs for one question from a single GNN pass (a fixed topology gives its preset ``k`` times)."""
        if self.policy is None:
            graph = preset_graph(self.topology, self.agents, self.num_rounds, seed=self.seed, decision=self.decision)
            return [(graph, None, None)] * k
        query = self.embedder.encode([question])[0]  # [d]
        probs = self.policy(query, self.role_embeddings(), self.anchor)
        samples = []
        for _ in range(k):
            graph, log_prob = self.policy.sample_from(probs, generator, deterministic, agents=self.agents)
            samples.append((graph, log_prob, probs))
        return samples

    def edge_probabilities(self, questions: Sequence[str]) -> EdgeProbs:
        """Mean edge probabilities over ``questions`` (what ``gcache plot`` draws)."""
        if self.policy is None:
            raise ValueError(f"a {self.topology} topology has no learned edge probabilities")
        with torch.no_grad():
            probs = [self.policy(self.embedder.encode([q])[0], self.role_embeddings(), self.anchor) for q in questions]
        return EdgeProbs(torch.stack([p.spatial for p in probs]).mean(0), torch.stack([p.temporal for p in probs]).mean(0))
