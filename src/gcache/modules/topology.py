"""The G-Designer topology model: a GNN that turns roles + query into directed edge probabilities.

Pipeline (`G-Designer <https://arxiv.org/abs/2410.11782>`_, with the paper's virtual task node, which the public
code leaves out, learned temporal edges, and directed spatial edges):

1. Node features ``x_i = [r_i || q]``: role-profile embedding and query embedding. The virtual task node has
   ``x_t = [q || q]`` and is linked both ways to every agent.
2. ``num_layers`` GCN layers (:class:`torch_geometric.nn.GCNConv`) over the anchor graph (made undirected) plus
   the task-node edges, a linear skip from the input features, :class:`~torch_geometric.nn.PairNorm`, then an
   MLP: node codes ``Z``.
3. Directed edge probabilities from separate source and destination codes,
   ``p(u -> v) = sigmoid(<S_u, D_v> / tau)`` with ``S = Z W_src`` and ``D = Z W_dst`` L2-normalised (so the logits
   are bounded, as G-Designer's min-max scaling makes them). G-Designer's ``Z Z^T`` is symmetric, so the
   direction of an edge came only from the sampling order (in practice from the order of the roles in the
   prompt set); here it is learned. Spatial and temporal edges have their own heads.
4. Optionally (``read_head=True``, G-cache), the **read set**: ``p(decision reads v) = sigmoid(w · [Z_v || Z_t]
   + b_r)`` from each agent's code and the task node's code ``Z_t``. The weights ``w`` start at 0 and ``b_r`` at
   the logit of ``read_prob``, which :func:`read_prob_for` sets so that the decision node reads nobody with
   probability ``alone_prob`` (``prod_v (1 - p_v) = alone_prob``): an untrained team is mostly the single agent,
   and training decides when a team is worth reading.
5. :class:`TopologyPolicy` turns probabilities into an :class:`~gcache.graph.AgentGraph`: a sample
   (:func:`~gcache.graph.sampling.sample_dag`, as G-Designer does in training and evaluation) or the most
   probable DAG (:func:`~gcache.graph.sampling.most_probable_dag`).

Notation in shapes: ``n`` agents, ``d`` embedding size.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GCNConv, PairNorm

from gcache.graph.agent_graph import DECISIONS, AgentGraph
from gcache.graph.sampling import GRAPH_MODES, graph_log_prob, most_probable_dag, sample_dag, sample_edges

logger = logging.getLogger(__name__)

__all__ = ["EdgeProbs", "TopologyGNN", "TopologyPolicy", "read_prob_for"]


def read_prob_for(alone_prob: float, num_agents: int) -> float:
    """Per-agent read probability at which ``num_agents`` independent reads give ``P(read nobody) = alone_prob``.

    >>> round(read_prob_for(0.75, 4), 4), round((1 - read_prob_for(0.75, 4)) ** 4, 4)
    (0.0694, 0.75)
    """
    if not 0.0 < alone_prob < 1.0:
        raise ValueError(f"alone_prob must be in (0, 1), got {alone_prob}")
    return 1.0 - alone_prob ** (1.0 / num_agents)


class EdgeProbs(NamedTuple):
    """Edge probabilities of one question.

    Attributes:
        spatial (Tensor): ``[n, n]``, ``p(u -> v)`` within a round; diagonal is 0.
        temporal (Tensor): ``[n, n]``, ``p(u in round r-1 -> v in round r)``.
        read (Tensor | None): ``[n]``, ``p(the decision node reads v)``; None without a read head.
    """

    spatial: Tensor
    temporal: Tensor
    read: Tensor | None = None


def _edge_index(anchor_adj: Tensor, use_task_node: bool) -> Tensor:
    """Undirected anchor edges (+ task node ``n`` <-> every agent) as a [2, E] index."""
    n = anchor_adj.shape[0]
    a = anchor_adj.to(torch.bool)
    a = (a | a.T) & ~torch.eye(n, dtype=torch.bool, device=a.device)
    edge_index = torch.nonzero(a).T  # [2, E]
    if use_task_node:
        agents = torch.arange(n, device=a.device)
        task = torch.full_like(agents, n)
        both = torch.cat([torch.stack([task, agents]), torch.stack([agents, task])], dim=1)
        edge_index = torch.cat([edge_index, both], dim=1)  # [2, E + 2n]
    return edge_index


class TopologyGNN(nn.Module):
    """GCN + MLP node encoder with spatial and temporal edge heads.

    .. math::
        Z = \\mathrm{MLP}(\\mathrm{PairNorm}(\\mathrm{GCN}(X, A) + R W_{skip})), \\quad
        P^{s} = \\sigma(\\widehat{Z A_s} \\widehat{Z A_d}^\\top / \\tau + b_s), \\quad
        P^{t} = \\sigma(\\widehat{Z B_s} \\widehat{Z B_d}^\\top / \\tau + b_t)

    where ``A_s, A_d`` (spatial) and ``B_s, B_d`` (temporal) project codes to source and destination roles, so that
    ``p(u -> v) != p(v -> u)``, a hat is row-wise L2 normalisation (``normalize_codes``; without it the raw
    products are used), and ``b_s, b_t`` are learned offsets (zero at init) for how dense the graph is overall.

    Role profiles and the query embed nearly parallel (MiniLM), so the codes of all agents start nearly equal
    and one step that lowers most edges lowers all of them: at Adam lr 0.01 every edge of a 3-agent team fell to
    p = 0.02 within six REINFORCE steps (after which every draw is the empty graph and learning stops), while lr
    0.003 learned the rewarded graph (``tests/recipes/test_learning.py``). Hence ``gcache train --lr 0.003``.

    Args:
        in_dim (int): Embedding size ``d`` of roles and query (node features are ``2d``).
        hidden_dim (int): GCN and MLP hidden size.
        out_dim (int): Node-code size.
        num_layers (int): Number of GCN layers. Default is 2.
        temperature (float): ``tau`` dividing the edge logits. With normalised codes the
            logits lie in ``[-1/tau, 1/tau]``: ``tau = 1`` keeps every probability in
            [0.27, 0.73] (G-Designer's range, whose logits are min-max scaled to [-1, 1]);
            ``tau = 0.2`` allows [0.007, 0.993]. Default is 1.0.
        use_task_node (bool): Add the virtual task node. Default is True.
        normalize_codes (bool): L2-normalise the codes before the inner products, so logits are cosine
            similarities / ``tau`` plus an offset. Unbounded ``Z Z^T`` lets Adam
            at lr 0.1 grow the codes a thousandfold in a few dozen steps and pin every edge probability at 0 or
            1, after which REINFORCE gets no signal. Default is True.
        read_head (bool): Also give ``p(decision reads v)`` per agent (the read set). Default is False.
        read_prob (float): With ``read_head``, the initial probability of reading each agent, whatever the
            question; ``1 - alone_prob ** (1 / n)`` makes ``n`` agents read nobody with probability
            ``alone_prob`` (:func:`read_prob_for`). Default is 0.07 (4 agents alone with probability 0.75).

    Raises:
        ValueError: On non-positive sizes, ``num_layers`` < 1, ``temperature`` <= 0 or ``read_prob`` outside
            (0, 1).

    Shapes:
        - role_emb: ``[n, d]``; query_emb: ``[d]`` or ``[1, d]``; anchor_adj: ``[n, n]``
        - output: :class:`EdgeProbs` of two ``[n, n]`` tensors (and ``[n]`` read probabilities with a read head).

    Example:
        >>> gnn = TopologyGNN(384, 32, 16)
        >>> probs = gnn(torch.randn(4, 384), torch.randn(384), torch.zeros(4, 4, dtype=torch.bool))
        >>> probs.spatial.shape, probs.temporal.shape
        (torch.Size([4, 4]), torch.Size([4, 4]))
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        num_layers: int = 2,
        temperature: float = 1.0,
        use_task_node: bool = True,
        normalize_codes: bool = True,
        read_head: bool = False,
        read_prob: float = 0.07,
    ) -> None:
        super().__init__()
        for name, val in (("in_dim", in_dim), ("hidden_dim", hidden_dim), ("out_dim", out_dim)):
            if val < 1:
                raise ValueError(f"{name} must be >= 1, got {val}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0.0 < read_prob < 1.0:
            raise ValueError(f"read_prob must be in (0, 1), got {read_prob}")
        self.in_dim = in_dim
        self.hidden_dim = hidden_dim
        self.out_dim = out_dim
        self.num_layers = num_layers
        self.temperature = temperature
        self.use_task_node = use_task_node
        self.normalize_codes = normalize_codes
        self.read_head = read_head
        self.read_prob = read_prob
        dims = [2 * in_dim] + [hidden_dim] * num_layers
        # The last layer has no bias: PairNorm subtracts the mean over nodes, which cancels any bias shared by
        # every node, so it would be a parameter without effect.
        self.convs = nn.ModuleList(GCNConv(a, b, bias=i < num_layers - 1)
                                   for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])))
        # Role profiles share much of their embedding and every agent sees the same query,
        # so GCN outputs are nearly parallel (cosine > 0.99 at init, measured on MiniLM
        # profiles); centring and rescaling across nodes (PairNorm) keeps them apart.
        self.norm = PairNorm()
        # Root/skip path: with self-loops and symmetric normalisation, a GCN gives agents
        # with the same closed neighbourhood the same output (all of them on a complete
        # anchor graph, since the task node touches everyone); the skip keeps each node's
        # own features. Only the first half (role, or the task node's query): the query half is
        # the same for every agent, so PairNorm would cancel it and its weights would have no effect.
        self.skip = nn.Linear(in_dim, hidden_dim, bias=False)
        self.mlp = nn.Sequential(
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim)
        )
        # Separate source/destination projections, so p(u -> v) != p(v -> u): direction is learned. The temporal
        # head also learns the self edge u -> u (an agent reading its own last message).
        self.spatial_src = nn.Linear(out_dim, out_dim, bias=False)
        self.spatial_dst = nn.Linear(out_dim, out_dim, bias=False)
        self.temporal_src = nn.Linear(out_dim, out_dim, bias=False)
        self.temporal_dst = nn.Linear(out_dim, out_dim, bias=False)
        self.spatial_offset = nn.Parameter(torch.zeros(()))
        self.temporal_offset = nn.Parameter(torch.zeros(()))
        # Read head: [Z_v || Z_task] -> logit of "the decision node reads v". Its offset is a parameter of its own
        # (rather than the linear's bias) so that it can be set from alone_prob and learnt at its own rate.
        self.read: nn.Linear | None = nn.Linear(2 * out_dim, 1, bias=False) if read_head else None
        self.read_offset: nn.Parameter | None = nn.Parameter(torch.zeros(())) if read_head else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialise all parameters."""
        for conv in self.convs:
            conv.reset_parameters()
        self.skip.reset_parameters()
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()
                # Zero biases: a random shared bias would dominate the small features at
                # init and start every agent with nearly the same code.
                nn.init.zeros_(layer.bias)
        for head in (self.spatial_src, self.spatial_dst, self.temporal_src, self.temporal_dst):
            head.reset_parameters()
        nn.init.zeros_(self.spatial_offset)
        nn.init.zeros_(self.temporal_offset)
        if self.read is not None:
            # Zero weights: at init every agent is read with the same probability, set by alone_prob, whatever
            # the question (the weights then learn which questions call for which agents).
            nn.init.zeros_(self.read.weight)
            with torch.no_grad():
                self.read_offset.fill_(math.log(self.read_prob / (1.0 - self.read_prob)))

    def node_codes(self, role_emb: Tensor, query_emb: Tensor, anchor_adj: Tensor) -> Tensor:
        """Node codes ``Z`` of the agents (the task node's code is dropped).

        Returns:
            Tensor: ``[n, out_dim]``.
        """
        return self._codes(role_emb, query_emb, anchor_adj)[: role_emb.shape[0]]

    def _codes(self, role_emb: Tensor, query_emb: Tensor, anchor_adj: Tensor) -> Tensor:
        """Codes of the agents and, with ``use_task_node``, of the task node last: ``[n (+1), out_dim]``."""
        if role_emb.dim() != 2 or role_emb.shape[1] != self.in_dim:
            raise ValueError(f"role_emb must be [n, {self.in_dim}], got {list(role_emb.shape)}")
        n = role_emb.shape[0]
        q = query_emb.reshape(-1)
        if q.shape[0] != self.in_dim:
            raise ValueError(
                f"query_emb must have {self.in_dim} values, got {list(query_emb.shape)}"
            )
        if anchor_adj.shape != (n, n):
            raise ValueError(f"anchor_adj must be [{n}, {n}], got {list(anchor_adj.shape)}")
        x = torch.cat([role_emb, q.expand(n, -1)], dim=-1)  # [n, 2d]
        if self.use_task_node:
            x = torch.cat([x, torch.cat([q, q]).unsqueeze(0)], dim=0)  # [n + 1, 2d]
        edge_index = _edge_index(anchor_adj.to(x.device), self.use_task_node)
        x0 = x
        for i, conv in enumerate(self.convs):
            x = conv(x, edge_index)
            if i < len(self.convs) - 1:
                x = torch.relu(x)
        x = self.norm(x + self.skip(x0[:, :self.in_dim]))  # [n (+1), hidden]
        return self.mlp(x)  # [n (+1), out_dim]

    def forward(self, role_emb: Tensor, query_emb: Tensor, anchor_adj: Tensor) -> EdgeProbs:
        """Edge probabilities for one question.

        Args:
            role_emb (Tensor): ``[n, d]`` role-profile embeddings.
            query_emb (Tensor): ``[d]`` (or ``[1, d]``) query embedding.
            anchor_adj (Tensor): ``[n, n]`` bool anchor graph.

        Returns:
            EdgeProbs: directed spatial ``[n, n]`` (zero diagonal), temporal ``[n, n]`` and, with a read head, read
            ``[n]``.
        """
        n = role_emb.shape[0]
        codes = self._codes(role_emb, query_emb, anchor_adj)  # [n (+1), o]
        z = codes[:n]  # [n, o]
        heads = [self.spatial_src(z), self.spatial_dst(z), self.temporal_src(z), self.temporal_dst(z)]  # [n, o]
        if self.normalize_codes:
            heads = [F.normalize(t, dim=-1) for t in heads]  # [n, o], unit rows
        s_src, s_dst, t_src, t_dst = heads
        spatial_logits = s_src @ s_dst.T / self.temperature + self.spatial_offset  # [n, n]
        temporal_logits = t_src @ t_dst.T / self.temperature + self.temporal_offset  # [n, n]
        eye = torch.eye(n, dtype=torch.bool, device=z.device)
        spatial = torch.sigmoid(spatial_logits).masked_fill(eye, 0.0)
        read = None
        if self.read is not None:
            task = codes[n] if self.use_task_node else z.mean(dim=0)  # [o]
            read_logits = self.read(torch.cat([z, task.expand(n, -1)], dim=-1)).squeeze(-1)  # [n]
            read = torch.sigmoid(read_logits + self.read_offset)  # [n]
        return EdgeProbs(spatial=spatial, temporal=torch.sigmoid(temporal_logits), read=read)

    def extra_repr(self) -> str:
        return (
            f"in_dim={self.in_dim}, hidden_dim={self.hidden_dim}, out_dim={self.out_dim}, "
            f"num_layers={self.num_layers}, temperature={self.temperature}, "
            f"use_task_node={self.use_task_node}, normalize_codes={self.normalize_codes}"
            + (f", read_head=True, read_prob={self.read_prob:.4f}" if self.read_head else "")
        )


class TopologyPolicy(nn.Module):
    """Draws an :class:`AgentGraph` from a :class:`TopologyGNN` (the REINFORCE policy).

    Args:
        gnn (TopologyGNN): The edge-probability model.
        num_rounds (int): Rounds of the drawn graphs; temporal edges are drawn (and enter the log-probability)
            only when > 1. Default is 1.
        decision (str): Decision mode of the drawn graphs. Default is ``"refer"``.

    Raises:
        ValueError: On ``num_rounds`` < 1 or an unknown decision.

    Example:
        >>> policy = TopologyPolicy(TopologyGNN(384, 32, 16), num_rounds=2)
        >>> probs = policy(torch.randn(384), torch.randn(4, 384), torch.zeros(4, 4, dtype=torch.bool))
        >>> g, logp = policy.draw(probs, torch.Generator().manual_seed(0))
        >>> g.num_rounds, logp.requires_grad
        (2, True)
    """

    def __init__(self, gnn: TopologyGNN, *, num_rounds: int = 1, decision: str = "refer") -> None:
        super().__init__()
        if num_rounds < 1:
            raise ValueError(f"num_rounds must be >= 1, got {num_rounds}")
        if decision not in DECISIONS:
            raise ValueError(f"decision must be one of {DECISIONS}, got {decision!r}")
        self.gnn = gnn
        self.num_rounds = num_rounds
        self.decision = decision

    def forward(self, query_emb: Tensor, role_emb: Tensor, anchor_adj: Tensor) -> EdgeProbs:
        """Edge probabilities (see :meth:`TopologyGNN.forward`)."""
        return self.gnn(role_emb, query_emb, anchor_adj)

    def draw(self, probs: EdgeProbs, generator: torch.Generator | None = None, mode: str = "sample", *,
             agents: Sequence[str] | None = None) -> tuple[AgentGraph, Tensor]:
        """A graph from given probabilities (one GNN pass can serve ``k`` draws).

        Args:
            probs (EdgeProbs): Output of :meth:`forward`.
            generator (torch.Generator | None): CPU generator of a sample. Default is None.
            mode (str): ``"sample"`` (spatial DAG by :func:`sample_dag`, temporal edges by :func:`sample_edges`)
                or ``"map"`` (the most probable DAG, and temporal edges with ``p > 1/2``). Default is
                ``"sample"``.
            agents (Sequence[str] | None): Role name per node; ``None`` names them ``agent_0 ..``. Default is
                None.

        Returns:
            tuple[AgentGraph, Tensor]: The graph and, with grad, the log-probability REINFORCE uses: for a
            sample, ``log π(draws | visit order)`` (spatial) plus the temporal edges' log-probability; for
            ``map``, the independent-edge log-probability of the graph. With read probabilities, the read set is
            drawn last (independent Bernoulli draws; ``p > 1/2`` for ``map``) and its log-probability is added.
        """
        if mode not in GRAPH_MODES:
            raise ValueError(f"unknown graph mode {mode!r}; choose one of {', '.join(GRAPH_MODES)}")
        n = probs.spatial.shape[0]
        names = tuple(agents) if agents is not None else tuple(f"agent_{i}" for i in range(n))
        if len(names) != n:
            raise ValueError(f"got {len(names)} agent names for {n} nodes")
        offdiag = ~torch.eye(n, dtype=torch.bool)
        temporal_adj = torch.zeros(n, n, dtype=torch.bool)
        if mode == "sample":
            spatial = sample_dag(probs.spatial, generator)
            spatial_adj, log_prob = spatial.adj, spatial.log_prob_given_order
            if self.num_rounds > 1:
                temporal = sample_edges(probs.temporal, generator)
                temporal_adj, log_prob = temporal.adj, log_prob + temporal.log_prob_given_order
        else:
            spatial_adj = most_probable_dag(probs.spatial)
            log_prob = graph_log_prob(probs.spatial, spatial_adj, offdiag)
            if self.num_rounds > 1:
                temporal_adj = probs.temporal.detach().cpu() > 0.5
                log_prob = log_prob + graph_log_prob(probs.temporal, temporal_adj)
        reads = None
        if probs.read is not None:
            p_read = probs.read.detach().to("cpu", torch.float32)  # [n]
            taken = (torch.rand(n, generator=generator) < p_read) if mode == "sample" else p_read > 0.5  # [n]
            log_prob = log_prob + graph_log_prob(probs.read, taken)
            reads = tuple(torch.nonzero(taken).flatten().tolist())
        graph = AgentGraph(agents=names, spatial=spatial_adj, temporal=temporal_adj, num_rounds=self.num_rounds,
                           decision=self.decision, reads=reads)
        return graph, log_prob

    def extra_repr(self) -> str:
        return f"num_rounds={self.num_rounds}, decision={self.decision!r}"
