"""The G-Designer topology model: a GNN that turns roles + query into edge probabilities.

Pipeline (`G-Designer <https://arxiv.org/abs/2410.11782>`_, with the paper's virtual task
node, which the public code leaves out, and learned temporal edges):

1. Node features ``x_i = [r_i || q]``: role-profile embedding and query embedding. The
   virtual task node has ``x_t = [q || q]`` and is linked both ways to every agent.
2. ``num_layers`` GCN layers (:class:`torch_geometric.nn.GCNConv`) over the anchor graph
   (made undirected) plus the task-node edges, a linear skip from the input features,
   :class:`~torch_geometric.nn.PairNorm`, then an MLP: node codes ``Z``.
3. Spatial edge probabilities ``p = sigmoid(Z Z^T / tau)`` over L2-normalised codes (so the
   logits are bounded, as G-Designer's min-max scaling makes them), diagonal masked to 0;
   temporal probabilities ``sigmoid((Z W_s)(Z W_t)^T / tau)``, also normalised.
4. :func:`sample_dag` draws a spatial DAG, :func:`sample_edges` the temporal edges; their
   log-probability feeds REINFORCE (:func:`reinforce_loss`).

Notation in shapes: ``n`` agents, ``d`` embedding size, ``m`` candidate edges.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GCNConv, PairNorm

from gcache.graph.agent_graph import DECISIONS, AgentGraph

logger = logging.getLogger(__name__)

__all__ = [
    "EdgeProbs",
    "EdgeSample",
    "MovingAverageBaseline",
    "TopologyGNN",
    "TopologyPolicy",
    "graph_log_prob",
    "group_mean_baseline",
    "reinforce_loss",
    "sample_dag",
    "sample_edges",
]

#: Probabilities are clamped to [EPS, 1 - EPS] before taking logs.
EPS = 1e-6


class EdgeProbs(NamedTuple):
    """Edge probabilities of one question.

    Attributes:
        spatial (Tensor): ``[n, n]``, ``p(u -> v)`` within a round; diagonal is 0.
        temporal (Tensor): ``[n, n]``, ``p(u in round r-1 -> v in round r)``.
    """

    spatial: Tensor
    temporal: Tensor


class EdgeSample(NamedTuple):
    """One draw of edges and what is needed to recompute its log-probability.

    Attributes:
        adj (Tensor): ``[n, n]`` bool, the sampled edges.
        log_prob (Tensor): Scalar, sum of ``log p`` over taken and ``log(1 - p)`` over
            refused considered edges; differentiable w.r.t. the probabilities.
        order (Tensor): ``[m, 2]`` long, candidate edges ``(u, v)`` in visit order.
        considered (Tensor): ``[n, n]`` bool, candidates that got a Bernoulli draw
            (for :func:`sample_dag`, those not skipped for closing a cycle).
    """

    adj: Tensor
    log_prob: Tensor
    order: Tensor
    considered: Tensor


# --------------------------------------------------------------------------- sampling


def graph_log_prob(probs: Tensor, adj: Tensor, considered: Tensor | None = None) -> Tensor:
    """Log-probability of independent Bernoulli edge draws.

    .. math::
        \\log \\pi = \\sum_{(u,v) \\in C} a_{uv} \\log p_{uv} + (1 - a_{uv}) \\log(1 - p_{uv})

    Args:
        probs (Tensor): ``[n, n]`` edge probabilities.
        adj (Tensor): ``[n, n]`` bool, drawn edges.
        considered (Tensor | None): ``[n, n]`` bool, the set ``C`` of edges that were
            drawn; ``None`` means all. Default is None.

    Returns:
        Tensor: Scalar, with grad if ``probs`` has one.
    """
    if probs.shape != adj.shape:
        raise ValueError(f"probs {list(probs.shape)} and adj {list(adj.shape)} differ in shape")
    p = probs.clamp(EPS, 1.0 - EPS)
    terms = torch.where(adj.to(p.device, torch.bool), torch.log(p), torch.log1p(-p))
    if considered is not None:
        terms = terms * considered.to(p.device, p.dtype)
    return terms.sum()


def _candidates(probs: Tensor, mask: Tensor | None, default_offdiag: bool) -> Tensor:
    if probs.dim() != 2 or probs.shape[0] != probs.shape[1]:
        raise ValueError(f"probs must be [n, n], got {list(probs.shape)}")
    n = probs.shape[0]
    if mask is None:
        mask = torch.ones(n, n, dtype=torch.bool)
        if default_offdiag:
            mask.fill_diagonal_(False)
    elif mask.shape != probs.shape:
        raise ValueError(f"mask {list(mask.shape)} must match probs {list(probs.shape)}")
    return torch.nonzero(mask.to("cpu", torch.bool))  # [m, 2], row-major


def _draws(
    p: Tensor, generator: torch.Generator | None, deterministic: bool, threshold: float
) -> Tensor:
    """Decision per candidate: [m] bool."""
    if deterministic:
        return p > threshold
    # One uniform per candidate, drawn even for skipped ones so the RNG advances the same.
    return torch.rand(p.shape[0], generator=generator) < p


def sample_dag(
    spatial_probs: Tensor,
    generator: torch.Generator | None = None,
    deterministic: bool = False,
    threshold: float = 0.5,
    *,
    mask: Tensor | None = None,
) -> EdgeSample:
    """Sample a DAG edge by edge, skipping edges that would close a cycle (G-Designer).

    Candidate edges are visited in a random order (deterministic mode: by decreasing
    probability, ties by index). An edge ``u -> v`` whose addition would close a cycle
    (``v`` already reaches ``u``) is skipped and contributes nothing to the log-probability;
    any other edge is drawn from Bernoulli(p) (deterministic mode: taken iff
    ``p > threshold``) and contributes ``log p`` or ``log(1 - p)``.

    Args:
        spatial_probs (Tensor): ``[n, n]`` edge probabilities.
        generator (torch.Generator | None): CPU generator for the order and the draws;
            ``None`` uses the global RNG. Unused in deterministic mode. Default is None.
        deterministic (bool): Threshold instead of sampling. Default is False.
        threshold (float): Deterministic-mode cut-off. Default is 0.5.
        mask (Tensor | None): ``[n, n]`` bool candidate edges; ``None`` means every
            off-diagonal pair. Default is None.

    Returns:
        EdgeSample: ``adj`` is acyclic; ``log_prob`` has grad w.r.t. ``spatial_probs``.

    Example:
        >>> s = sample_dag(torch.full((3, 3), 0.9), torch.Generator().manual_seed(0))
        >>> int(s.adj.sum()) <= 3
        True
    """
    cand = _candidates(spatial_probs, mask, default_offdiag=True)  # [m, 2]
    n = spatial_probs.shape[0]
    p = spatial_probs.detach().to("cpu", torch.float32)[cand[:, 0], cand[:, 1]]  # [m]
    if deterministic:
        # Most probable edges first, so a conflict drops the less likely edge.
        perm = torch.argsort(-p, stable=True)
    else:
        perm = torch.randperm(cand.shape[0], generator=generator)
    order = cand[perm]  # [m, 2]
    take = _draws(p[perm], generator, deterministic, threshold).tolist()

    # reach[a] = nodes reachable from a (a included); tiny n, so Python sets are fastest.
    reach = [{a} for a in range(n)]
    adj = torch.zeros(n, n, dtype=torch.bool)
    considered = torch.zeros(n, n, dtype=torch.bool)
    for (u, v), t in zip(order.tolist(), take):
        if u in reach[v]:
            continue  # u -> v would close a cycle: no draw, no log-prob term
        considered[u, v] = True
        if t:
            adj[u, v] = True
            new = reach[v]
            for a in range(n):
                if u in reach[a]:
                    reach[a] = reach[a] | new
    log_prob = graph_log_prob(spatial_probs, adj, considered)
    return EdgeSample(adj, log_prob, order, considered)


def sample_edges(
    probs: Tensor,
    generator: torch.Generator | None = None,
    deterministic: bool = False,
    threshold: float = 0.5,
    *,
    mask: Tensor | None = None,
) -> EdgeSample:
    """Sample independent Bernoulli edges (temporal edges: no cycle constraint).

    Args:
        probs (Tensor): ``[n, n]`` edge probabilities.
        generator (torch.Generator | None): CPU generator; ``None`` uses the global RNG.
            Default is None.
        deterministic (bool): Take ``p > threshold`` instead of sampling. Default is False.
        threshold (float): Deterministic-mode cut-off. Default is 0.5.
        mask (Tensor | None): ``[n, n]`` bool candidate edges; ``None`` means all ``n * n``
            (self-edges ``u -> u`` across rounds included). Default is None.

    Returns:
        EdgeSample: ``order`` is row-major; ``considered`` equals the mask.
    """
    cand = _candidates(probs, mask, default_offdiag=False)  # [m, 2]
    n = probs.shape[0]
    p = probs.detach().to("cpu", torch.float32)[cand[:, 0], cand[:, 1]]  # [m]
    take = _draws(p, generator, deterministic, threshold)
    adj = torch.zeros(n, n, dtype=torch.bool)
    adj[cand[take, 0], cand[take, 1]] = True
    considered = torch.zeros(n, n, dtype=torch.bool)
    considered[cand[:, 0], cand[:, 1]] = True
    return EdgeSample(adj, graph_log_prob(probs, adj, considered), cand, considered)


# --------------------------------------------------------------------------- model


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
        Z = \\mathrm{MLP}(\\mathrm{PairNorm}(\\mathrm{GCN}(X, A) + X W_{skip})), \\quad
        P^{s} = \\sigma(\\hat Z \\hat Z^\\top / \\tau), \\quad
        P^{t} = \\sigma(\\widehat{Z W_s} \\widehat{Z W_t}^\\top / \\tau)

    where a hat is row-wise L2 normalisation (``normalize_codes``; without it the raw
    products are used).

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
        normalize_codes (bool): L2-normalise the codes before the inner products, so
            logits are cosine similarities / ``tau``. Unbounded ``Z Z^T`` lets Adam at
            lr 0.1 grow the codes a thousandfold in a few dozen steps and pin every edge
            probability at 0 or 1, after which REINFORCE gets no signal. Default is True.

    Raises:
        ValueError: On non-positive sizes, ``num_layers`` < 1 or ``temperature`` <= 0.

    Shapes:
        - role_emb: ``[n, d]``; query_emb: ``[d]`` or ``[1, d]``; anchor_adj: ``[n, n]``
        - output: :class:`EdgeProbs` of two ``[n, n]`` tensors.

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
    ) -> None:
        super().__init__()
        for name, val in (("in_dim", in_dim), ("hidden_dim", hidden_dim), ("out_dim", out_dim)):
            if val < 1:
                raise ValueError(f"{name} must be >= 1, got {val}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.in_dim = in_dim
        self.hidden_dim = hidden_dim
        self.out_dim = out_dim
        self.num_layers = num_layers
        self.temperature = temperature
        self.use_task_node = use_task_node
        self.normalize_codes = normalize_codes
        dims = [2 * in_dim] + [hidden_dim] * num_layers
        self.convs = nn.ModuleList(GCNConv(a, b) for a, b in zip(dims[:-1], dims[1:]))
        # Role profiles share much of their embedding and every agent sees the same query,
        # so GCN outputs are nearly parallel (cosine > 0.99 at init, measured on MiniLM
        # profiles); centring and rescaling across nodes (PairNorm) keeps them apart.
        self.norm = PairNorm()
        # Root/skip path: with self-loops and symmetric normalisation, a GCN gives agents
        # with the same closed neighbourhood the same output (all of them on a complete
        # anchor graph, since the task node touches everyone); the skip keeps each node's
        # own features.
        self.skip = nn.Linear(2 * in_dim, hidden_dim, bias=False)
        self.mlp = nn.Sequential(
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim)
        )
        # Temporal head: separate source/target projections, so p(u -> v) != p(v -> u)
        # and the self edge u -> u (an agent reading its own last message) is learned.
        self.temporal_src = nn.Linear(out_dim, out_dim, bias=False)
        self.temporal_dst = nn.Linear(out_dim, out_dim, bias=False)
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
        self.temporal_src.reset_parameters()
        self.temporal_dst.reset_parameters()

    def node_codes(self, role_emb: Tensor, query_emb: Tensor, anchor_adj: Tensor) -> Tensor:
        """Node codes ``Z`` of the agents (the task node's code is dropped).

        Returns:
            Tensor: ``[n, out_dim]``.
        """
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
        x = self.norm(x + self.skip(x0))  # [n (+1), hidden]
        z = self.mlp(x)  # [n (+1), out_dim]
        return z[:n]

    def forward(self, role_emb: Tensor, query_emb: Tensor, anchor_adj: Tensor) -> EdgeProbs:
        """Edge probabilities for one question.

        Args:
            role_emb (Tensor): ``[n, d]`` role-profile embeddings.
            query_emb (Tensor): ``[d]`` (or ``[1, d]``) query embedding.
            anchor_adj (Tensor): ``[n, n]`` bool anchor graph.

        Returns:
            EdgeProbs: spatial ``[n, n]`` (zero diagonal) and temporal ``[n, n]``.
        """
        z = self.node_codes(role_emb, query_emb, anchor_adj)  # [n, o]
        n = z.shape[0]
        src, dst = self.temporal_src(z), self.temporal_dst(z)  # [n, o] each
        if self.normalize_codes:
            z, src, dst = (F.normalize(t, dim=-1) for t in (z, src, dst))
        spatial_logits = z @ z.T / self.temperature  # [n, n]
        temporal_logits = src @ dst.T / self.temperature  # [n, n]
        eye = torch.eye(n, dtype=torch.bool, device=z.device)
        spatial = torch.sigmoid(spatial_logits).masked_fill(eye, 0.0)
        return EdgeProbs(spatial=spatial, temporal=torch.sigmoid(temporal_logits))

    def extra_repr(self) -> str:
        return (
            f"in_dim={self.in_dim}, hidden_dim={self.hidden_dim}, out_dim={self.out_dim}, "
            f"num_layers={self.num_layers}, temperature={self.temperature}, "
            f"use_task_node={self.use_task_node}, normalize_codes={self.normalize_codes}"
        )


class TopologyPolicy(nn.Module):
    """Samples an :class:`AgentGraph` from a :class:`TopologyGNN` (the REINFORCE policy).

    Args:
        gnn (TopologyGNN): The edge-probability model.
        num_rounds (int): Rounds of the sampled graphs; temporal edges are sampled (and
            enter the log-probability) only when > 1. Default is 1.
        decision (str): Decision mode of the sampled graphs. Default is ``"refer"``.
        threshold (float): Cut-off of deterministic sampling. Default is 0.5.

    Raises:
        ValueError: On ``num_rounds`` < 1, an unknown decision or a threshold outside (0, 1).

    Example:
        >>> policy = TopologyPolicy(TopologyGNN(384, 32, 16), num_rounds=2)
        >>> g, logp, probs = policy.sample(torch.randn(384), torch.randn(4, 384),
        ...                                torch.zeros(4, 4, dtype=torch.bool),
        ...                                torch.Generator().manual_seed(0))
        >>> g.num_rounds, logp.requires_grad
        (2, True)
    """

    def __init__(
        self,
        gnn: TopologyGNN,
        *,
        num_rounds: int = 1,
        decision: str = "refer",
        threshold: float = 0.5,
    ) -> None:
        super().__init__()
        if num_rounds < 1:
            raise ValueError(f"num_rounds must be >= 1, got {num_rounds}")
        if decision not in DECISIONS:
            raise ValueError(f"decision must be one of {DECISIONS}, got {decision!r}")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        self.gnn = gnn
        self.num_rounds = num_rounds
        self.decision = decision
        self.threshold = threshold

    def forward(self, query_emb: Tensor, role_emb: Tensor, anchor_adj: Tensor) -> EdgeProbs:
        """Edge probabilities (see :meth:`TopologyGNN.forward`)."""
        return self.gnn(role_emb, query_emb, anchor_adj)

    def sample(
        self,
        query_emb: Tensor,
        role_emb: Tensor,
        anchor_adj: Tensor,
        generator: torch.Generator | None = None,
        deterministic: bool = False,
        *,
        agents: Sequence[str] | None = None,
    ) -> tuple[AgentGraph, Tensor, EdgeProbs]:
        """Draw a graph for one question.

        Args:
            query_emb (Tensor): ``[d]`` query embedding.
            role_emb (Tensor): ``[n, d]`` role-profile embeddings.
            anchor_adj (Tensor): ``[n, n]`` bool anchor graph.
            generator (torch.Generator | None): CPU generator. Default is None.
            deterministic (bool): Threshold instead of sampling (evaluation). Default is
                False.
            agents (Sequence[str] | None): Role name per node, stored in the graph;
                ``None`` names them ``agent_0 ..``. Default is None.

        Returns:
            tuple[AgentGraph, Tensor, EdgeProbs]: The graph, its log-probability (scalar,
            spatial + temporal terms, with grad) and the probabilities it was drawn from.
        """
        probs = self(query_emb, role_emb, anchor_adj)
        graph, log_prob = self.sample_from(probs, generator, deterministic, agents=agents)
        return graph, log_prob, probs

    def sample_from(
        self,
        probs: EdgeProbs,
        generator: torch.Generator | None = None,
        deterministic: bool = False,
        *,
        agents: Sequence[str] | None = None,
    ) -> tuple[AgentGraph, Tensor]:
        """Draw a graph from given probabilities (one GNN pass, ``k`` samples).

        Args:
            probs (EdgeProbs): Output of :meth:`forward`.
            generator (torch.Generator | None): CPU generator. Default is None.
            deterministic (bool): Threshold instead of sampling. Default is False.
            agents (Sequence[str] | None): Role name per node. Default is None.

        Returns:
            tuple[AgentGraph, Tensor]: The graph and its log-probability (scalar).
        """
        n = probs.spatial.shape[0]
        names = tuple(agents) if agents is not None else tuple(f"agent_{i}" for i in range(n))
        if len(names) != n:
            raise ValueError(f"got {len(names)} agent names for {n} nodes")
        spatial = sample_dag(probs.spatial, generator, deterministic, self.threshold)
        log_prob = spatial.log_prob
        if self.num_rounds > 1:
            temporal = sample_edges(probs.temporal, generator, deterministic, self.threshold)
            temporal_adj = temporal.adj
            log_prob = log_prob + temporal.log_prob
        else:
            temporal_adj = torch.zeros(n, n, dtype=torch.bool)
        graph = AgentGraph(
            agents=names,
            spatial=spatial.adj,
            temporal=temporal_adj,
            num_rounds=self.num_rounds,
            decision=self.decision,
        )
        return graph, log_prob

    def extra_repr(self) -> str:
        return (
            f"num_rounds={self.num_rounds}, decision={self.decision!r}, "
            f"threshold={self.threshold}"
        )


# --------------------------------------------------------------------------- REINFORCE


def reinforce_loss(
    log_probs: Tensor | Sequence[Tensor],
    utilities: Tensor | Sequence[float],
    baseline: float | Tensor | None = None,
) -> Tensor:
    """REINFORCE loss ``-mean((U - b) * log pi(G))``.

    Args:
        log_probs (Tensor | Sequence[Tensor]): ``[k]`` log-probabilities of the sampled
            graphs (or ``k`` scalars).
        utilities (Tensor | Sequence[float]): ``[k]`` utilities (e.g. 1 if correct).
        baseline (float | Tensor | None): Scalar or ``[k]`` baseline ``b``; it is detached.
            ``None`` gives the seed's plain ``-mean(log pi * U)``. Default is None.

    Returns:
        Tensor: Scalar loss.

    Raises:
        ValueError: If the shapes of ``log_probs``, ``utilities`` and ``baseline`` disagree.

    Example:
        >>> lp = torch.tensor([-1.0, -2.0], requires_grad=True)
        >>> reinforce_loss(lp, [1.0, 0.0], baseline=0.5)
        tensor(-0.2500, grad_fn=<NegBackward0>)
    """
    lp = torch.stack(list(log_probs)) if not isinstance(log_probs, Tensor) else log_probs
    lp = lp.reshape(-1)
    u = torch.as_tensor(utilities, dtype=lp.dtype, device=lp.device).reshape(-1)
    if u.shape != lp.shape:
        raise ValueError(f"{lp.numel()} log-probs but {u.numel()} utilities")
    if baseline is None:
        advantage = u
    else:
        b = torch.as_tensor(baseline, dtype=lp.dtype, device=lp.device)
        if b.dim() > 0 and b.shape != u.shape:
            raise ValueError(f"baseline must be a scalar or [{u.numel()}], got {list(b.shape)}")
        advantage = u - b
    return -(advantage.detach() * lp).mean()


def group_mean_baseline(utilities: Tensor | Sequence[float], leave_one_out: bool = False) -> Tensor:
    """Baseline from ``k`` graphs sampled for the same question.

    Args:
        utilities (Tensor | Sequence[float]): ``[k]`` utilities of the samples.
        leave_one_out (bool): Use the mean of the *other* ``k - 1`` samples for each
            (unbiased); needs ``k >= 2``. Default is False (the plain group mean).

    Returns:
        Tensor: ``[k]`` baseline per sample.

    Raises:
        ValueError: If ``k`` is 0, or 1 with ``leave_one_out``.
    """
    u = torch.as_tensor(utilities, dtype=torch.float32).reshape(-1)
    k = u.numel()
    if k == 0 or (leave_one_out and k < 2):
        raise ValueError(f"need {'>= 2' if leave_one_out else '>= 1'} utilities, got {k}")
    if leave_one_out:
        return (u.sum() - u) / (k - 1)
    return u.mean().expand(k).clone()


class MovingAverageBaseline:
    """Exponential moving average of utilities: ``b <- m * b + (1 - m) * mean(U)``.

    Args:
        momentum (float): Weight of the old value, in [0, 1). Default is 0.9.
        initial (float): Starting value. Default is 0.0 (so the first advantages are the
            utilities themselves and the first step already has a gradient).

    Raises:
        ValueError: If ``momentum`` is outside [0, 1).

    Example:
        >>> b = MovingAverageBaseline(0.5)
        >>> b.update([1.0, 1.0]), b.value
        (0.0, 0.5)
    """

    def __init__(self, momentum: float = 0.9, initial: float = 0.0) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        self.value = float(initial)
        self.num_updates = 0

    def update(self, utilities: Tensor | Sequence[float] | float) -> float:
        """Fold in a batch of utilities.

        Returns:
            float: The baseline *before* this update (use it for this batch's advantages,
            so a sample never appears in its own baseline).
        """
        u = torch.as_tensor(utilities, dtype=torch.float64).reshape(-1)
        if u.numel() == 0:
            raise ValueError("update needs at least one utility")
        before = self.value
        self.value = self.momentum * self.value + (1.0 - self.momentum) * float(u.mean())
        self.num_updates += 1
        return before

    def state_dict(self) -> dict[str, Any]:
        """Checkpointable state."""
        return {"momentum": self.momentum, "value": self.value, "num_updates": self.num_updates}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.momentum = float(state["momentum"])
        self.value = float(state["value"])
        self.num_updates = int(state["num_updates"])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(momentum={self.momentum}, value={self.value:.4f}, "
            f"num_updates={self.num_updates})"
        )
