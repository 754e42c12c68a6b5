"""A learned team: prompt set + topology policy + CacheFuser, the trainable state of gdesigner / gcache.

The LLMs are not part of it: a team holds only what training changes (GNN, MLP, edge heads, fuser), plus the
frozen sentence embedder that turns role profiles and questions into node features. Training, evaluation and
plotting all draw graphs and soft-edge terms through it, so the three see the same policy and the same fuser.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from gcache.agents.pipelines import SOLVER
from gcache.agents.roles import PromptSet, Role
from gcache.graph import AgentGraph, preset_graph
from gcache.modules.cache_fuser import CacheFuser
from gcache.modules.topology import EdgeProbs, TopologyGNN, TopologyPolicy, read_prob_for

logger = logging.getLogger(__name__)

__all__ = ["GraphDraw", "Team", "eval_generator", "seeded_generator"]


def seeded_generator(*keys: object) -> torch.Generator:
    """A CPU generator seeded from ``keys`` (stable across processes, unlike ``hash``)."""
    digest = hashlib.sha256(repr(keys).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def eval_generator(seed: int, question: str) -> torch.Generator:
    """The generator of the graph a learned method runs for ``question`` at evaluation (``--eval-graph sample``).

    Seeded by the run's seed and the question itself: a question's graph does not depend on its batch, its shard
    or a resume, and different questions draw independently, so the accuracy over a test set estimates the
    policy's expected accuracy. (One draw shared by every question, as before, made a policy that answers alone
    with probability 0.9 answer alone on every question, or read its team on every question, by one coin.)
    """
    return seeded_generator(seed, "eval-graph", " ".join(question.split()))


@dataclass
class GraphDraw:
    """One graph drawn for one question.

    Attributes:
        graph (AgentGraph): the graph.
        log_prob (torch.Tensor | None): what REINFORCE differentiates (see :meth:`TopologyPolicy.draw`); None
            for a fixed topology.
        probs (EdgeProbs | None): the edge probabilities it was drawn from; None for a fixed topology.
    """

    graph: AgentGraph
    log_prob: torch.Tensor | None
    probs: EdgeProbs | None


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
        soft_edges (bool): add ``log p(edge)`` of the learned topology to the fuser bias of every fused edge, in
            training and evaluation alike (so the gold-answer loss reaches the GNN). Default is False.
        hidden_dim (int): GCN hidden size. Default is 32.
        temperature (float): temperature of the edge logits; codes are unit vectors, so ``p`` lies in
            ``[σ(-1/τ), σ(1/τ)]``. Default is 0.25.
        seed (int): seed of the random preset. Default is 0.
        read_set (bool): the learned policy also draws whom the decision node reads (G-cache): reading nobody is
            the single agent, and agents nobody reads do not run. Needs the ``refer`` decision. Default is False.
        alone_prob (float): with ``read_set``, the untrained policy's probability of reading nobody. Default is
            0.75.
    """

    def __init__(self, prompt_set: PromptSet, agents: Sequence[str], embedder, *, num_layers: int = 0,
                 topology: str = "learned", num_rounds: int = 1, decision: str = "refer", fuser_mode: str = "bias",
                 soft_edges: bool = False, hidden_dim: int = 32, temperature: float = 0.25, seed: int = 0,
                 read_set: bool = False, alone_prob: float = 0.75) -> None:
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
        self.read_set = read_set and topology == "learned"
        if self.read_set and decision != "refer":
            raise ValueError(f"a read set is the refer decision's: --decision {decision} has none")
        if topology == "learned":
            gnn = TopologyGNN(embedder.dim, hidden_dim, hidden_dim, temperature=temperature, read_head=self.read_set,
                              read_prob=read_prob_for(alone_prob, len(self.agents)))
            self.policy = TopologyPolicy(gnn, num_rounds=num_rounds, decision=decision)
        self.fuser: CacheFuser | None = None
        if num_layers > 0:  # a latent team: its decision node is the single agent's solver (reasoning/plans.py)
            roles = list(dict.fromkeys([*prompt_set.role_names, SOLVER.name]))
            self.fuser = CacheFuser(num_layers, roles, mode=fuser_mode, decision_role=SOLVER.name)
        if soft_edges and (self.policy is None or self.fuser is None):
            raise ValueError("soft edges need a learned topology and a CacheFuser (a latent team)")
        self.soft_edges = soft_edges
        self._role_emb: torch.Tensor | None = None

    @property
    def roles(self) -> dict[str, Role]:
        return {name: self.prompt_set.role(name) for name in self.prompt_set.role_names}

    def role_embeddings(self) -> torch.Tensor:
        if self._role_emb is None:
            self._role_emb = self.embedder.encode(self.prompt_set.profiles(self.agents))  # [n, d]
        return self._role_emb

    def edge_probs(self, questions: Sequence[str]) -> list[EdgeProbs]:
        """Edge probabilities for each question: one GNN pass each (with grad when enabled)."""
        if self.policy is None:
            raise ValueError(f"a {self.topology} topology has no learned edge probabilities")
        queries = self.embedder.encode(list(questions))  # [q, d]
        return [self.policy(query, self.role_embeddings(), self.anchor) for query in queries]

    def draw(self, question: str, generators: Sequence[torch.Generator | None], mode: str = "sample"
             ) -> list[GraphDraw]:
        """One graph per generator for ``question``, from a single GNN pass.

        A fixed topology gives its preset every time. With ``mode="map"`` every draw is the most probable graph.
        """
        if self.policy is None:
            graph = preset_graph(self.topology, self.agents, self.num_rounds, seed=self.seed, decision=self.decision)
            return [GraphDraw(graph, None, None) for _ in generators]
        probs = self.edge_probs([question])[0]
        draws = []
        for generator in generators:
            graph, log_prob = self.policy.draw(probs, generator, mode, agents=self.agents)
            draws.append(GraphDraw(graph, log_prob, probs))
        return draws

    def soft_edge_log_probs(self, draw: GraphDraw, edge_index: dict[tuple[int, int], tuple[str, int, int]]
                            ) -> dict[tuple[int, int], torch.Tensor] | None:
        """``log p`` of the graph edge behind each plan input (the fuser's soft-edge term), or None when the
        team does not use soft edges. Every pass (training rollouts, the gold-answer loss, evaluation) takes its
        soft-edge terms from here."""
        if not self.soft_edges or draw.probs is None:
            return None
        out = {}
        for key, (kind, u, v) in edge_index.items():
            p = draw.probs.spatial[u, v] if kind == "spatial" else draw.probs.temporal[u, v]
            out[key] = torch.log(p.clamp_min(1e-6))
        return out

    def mean_edge_probs(self, questions: Sequence[str]) -> EdgeProbs:
        """Mean edge probabilities over ``questions`` (what ``gcache plot`` draws)."""
        with torch.no_grad():
            probs = self.edge_probs(questions)
        read = torch.stack([p.read for p in probs]).mean(0) if probs and probs[0].read is not None else None
        return EdgeProbs(torch.stack([p.spatial for p in probs]).mean(0), torch.stack([p.temporal for p in probs]).mean(0),
                         read)

    def read_parameters(self) -> list[nn.Parameter]:
        """The read head's parameters (trained at their own rate: ``--read-lr``); empty without a read set."""
        gnn = self.policy.gnn if self.policy is not None else None
        if gnn is None or gnn.read is None:
            return []
        return [gnn.read.weight, gnn.read_offset]
