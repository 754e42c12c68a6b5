"""Drawing communication graphs from edge probabilities: sampled DAGs, independent edges, the most probable DAG.

G-Designer's sampler visits the candidate edges ``u -> v`` in a uniformly random order, skips an edge that would
close a cycle and otherwise draws it from Bernoulli(``p_uv``). What it can compute exactly is the probability of
the draws *given the visit order*; the marginal probability of the graph would sum over every order. Since the
order is uniform and has no parameters, ``log π(draws | order)`` has the same gradient as the log-probability of
the whole action (order, draws), so REINFORCE on it is unbiased; it is named for what it is,
:attr:`EdgeSample.log_prob_given_order`.

Probabilities here are directed: ``p[u, v]`` need not equal ``p[v, u]``, and the sampler learns direction
through them (the reverse edge is visited too, and refused when it would close a cycle).

Notation in shapes: ``n`` agents, ``m`` candidate edges.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import torch
from torch import Tensor

from gcache.choices import GRAPH_MODES

__all__ = [
    "EdgeSample",
    "GRAPH_MODES",
    "graph_log_prob",
    "most_probable_dag",
    "sample_dag",
    "sample_edges",
]

#: Probabilities are clamped to [EPS, 1 - EPS] before taking logs.
EPS = 1e-6
#: Largest graph whose most probable DAG is found exactly (by enumerating n! node orders).
EXACT_MAP_MAX_NODES = 8


class EdgeSample(NamedTuple):
    """One draw of edges and what is needed to recompute its log-probability.

    Attributes:
        adj (Tensor): ``[n, n]`` bool, the drawn edges.
        log_prob_given_order (Tensor): Scalar, sum of ``log p`` over taken and ``log(1 - p)`` over refused
            considered edges: the log-probability of the draws given the visit order (for independent edges,
            simply the graph's log-probability). Differentiable w.r.t. the probabilities.
        order (Tensor): ``[m, 2]`` long, candidate edges ``(u, v)`` in visit order.
        considered (Tensor): ``[n, n]`` bool, candidates that got a Bernoulli draw (for :func:`sample_dag`, those
            not skipped for closing a cycle).
    """

    adj: Tensor
    log_prob_given_order: Tensor
    order: Tensor
    considered: Tensor


def graph_log_prob(probs: Tensor, adj: Tensor, considered: Tensor | None = None) -> Tensor:
    """Log-probability of independent Bernoulli edge draws.

    .. math::
        \\log \\pi = \\sum_{(u,v) \\in C} a_{uv} \\log p_{uv} + (1 - a_{uv}) \\log(1 - p_{uv})

    Args:
        probs (Tensor): ``[n, n]`` edge probabilities.
        adj (Tensor): ``[n, n]`` bool, drawn edges.
        considered (Tensor | None): ``[n, n]`` bool, the set ``C`` of edges that were drawn; ``None`` means all.
            Default is None.

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


def sample_dag(spatial_probs: Tensor, generator: torch.Generator | None = None, *,
               mask: Tensor | None = None) -> EdgeSample:
    """Sample a DAG edge by edge, skipping edges that would close a cycle (G-Designer).

    Candidate edges are visited in a uniformly random order. An edge ``u -> v`` whose addition would close a cycle
    (``v`` already reaches ``u``) is skipped and contributes nothing to the log-probability; any other edge is
    drawn from Bernoulli(p) and contributes ``log p`` or ``log(1 - p)``.

    Args:
        spatial_probs (Tensor): ``[n, n]`` directed edge probabilities.
        generator (torch.Generator | None): CPU generator for the order and the draws; ``None`` uses the global
            RNG. Default is None.
        mask (Tensor | None): ``[n, n]`` bool candidate edges; ``None`` means every off-diagonal pair.
            Default is None.

    Returns:
        EdgeSample: ``adj`` is acyclic; ``log_prob_given_order`` has grad w.r.t. ``spatial_probs``.

    Example:
        >>> s = sample_dag(torch.full((3, 3), 0.9), torch.Generator().manual_seed(0))
        >>> int(s.adj.sum()) <= 3
        True
    """
    cand = _candidates(spatial_probs, mask, default_offdiag=True)  # [m, 2]
    n = spatial_probs.shape[0]
    p = spatial_probs.detach().to("cpu", torch.float32)[cand[:, 0], cand[:, 1]]  # [m]
    perm = torch.randperm(cand.shape[0], generator=generator)
    order = cand[perm]  # [m, 2]
    # One uniform per candidate, drawn even for skipped ones so the RNG advances the same.
    take = (torch.rand(p.shape[0], generator=generator) < p[perm]).tolist()

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
    return EdgeSample(adj, graph_log_prob(spatial_probs, adj, considered), order, considered)


def sample_edges(probs: Tensor, generator: torch.Generator | None = None, *,
                 mask: Tensor | None = None) -> EdgeSample:
    """Sample independent Bernoulli edges (temporal edges: no cycle constraint).

    Args:
        probs (Tensor): ``[n, n]`` edge probabilities.
        generator (torch.Generator | None): CPU generator; ``None`` uses the global RNG. Default is None.
        mask (Tensor | None): ``[n, n]`` bool candidate edges; ``None`` means all ``n * n`` (self-edges
            ``u -> u`` across rounds included). Default is None.

    Returns:
        EdgeSample: ``order`` is row-major; ``considered`` equals the mask.
    """
    cand = _candidates(probs, mask, default_offdiag=False)  # [m, 2]
    n = probs.shape[0]
    p = probs.detach().to("cpu", torch.float32)[cand[:, 0], cand[:, 1]]  # [m]
    take = torch.rand(p.shape[0], generator=generator) < p
    adj = torch.zeros(n, n, dtype=torch.bool)
    adj[cand[take, 0], cand[take, 1]] = True
    considered = torch.zeros(n, n, dtype=torch.bool)
    considered[cand[:, 0], cand[:, 1]] = True
    return EdgeSample(adj, graph_log_prob(probs, adj, considered), cand, considered)


def most_probable_dag(spatial_probs: Tensor) -> Tensor:
    """The DAG of highest probability under independent directed edges, ``argmax_G Π p^a (1 - p)^(1 - a)``.

    Every DAG is consistent with some node order, and for a fixed order the best DAG takes each forward edge
    ``u -> v`` iff ``p_uv > 1/2`` and no backward edge. So the answer maximises over orders σ

    .. math::
        \\mathrm{score}(\\sigma) = \\sum_{\\sigma(u) < \\sigma(v)} \\max(\\log p_{uv}, \\log(1 - p_{uv}))
        + \\log(1 - p_{vu}).

    Exact (all n! orders) up to :data:`EXACT_MAP_MAX_NODES` agents; beyond that, a greedy order that repeatedly
    places the node whose incoming pairs score best. Unlike a threshold on ``p``, it never depends on the order
    of the agents in the prompt set (ties aside, broken towards the first order found).

    Args:
        spatial_probs (Tensor): ``[n, n]`` directed edge probabilities (diagonal ignored).

    Returns:
        Tensor: ``[n, n]`` bool adjacency of a DAG.
    """
    p = spatial_probs.detach().to("cpu", torch.float64).clamp(EPS, 1.0 - EPS)
    n = p.shape[0]
    lp, lq = torch.log(p), torch.log1p(-p)
    pair = torch.maximum(lp, lq) + lq.T  # [n, n]: score of "u before v"
    if n <= EXACT_MAP_MAX_NODES:
        orders = torch.tensor(list(itertools.permutations(range(n))), dtype=torch.long)  # [n!, n]
        i, j = torch.triu_indices(n, n, offset=1)  # pairs of positions i < j
        scores = pair[orders[:, i], orders[:, j]].sum(dim=1)  # [n!]
        best = orders[int(scores.argmax())].tolist()
    else:
        best, left = [], list(range(n))
        while left:  # place next the node that most wants to come after everything placed so far
            gain = [sum(float(pair[u, v]) for u in best) + sum(float(pair[v, w]) for w in left if w != v)
                    for v in left]
            best.append(left.pop(max(range(len(left)), key=gain.__getitem__)))
    position = torch.empty(n, dtype=torch.long)
    position[torch.tensor(best)] = torch.arange(n)
    forward = position[:, None] < position[None, :]  # [n, n]
    return forward & (p > 0.5)
