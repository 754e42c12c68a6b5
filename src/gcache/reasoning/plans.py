"""Plans for every method: the fixed baselines and plans unrolled from an :class:`~gcache.graph.AgentGraph`."""

from __future__ import annotations

from collections.abc import Mapping

from gcache.agents.pipelines import DECISION_MAKER, HIERARCHICAL, SEQUENTIAL, SOLVER
from gcache.agents.roles import Role
from gcache.graph import AgentGraph
from gcache.reasoning.executor import NodeSpec, Plan

__all__ = ["METHODS", "MODES", "MODE_ALIASES", "resolve_mode", "baseline_plan", "plan_from_graph"]

#: Every method ``gcache eval --method`` knows.
METHODS = ("single", "text_chain", "latentmas_seq", "latentmas_hier", "gdesigner", "gcache")
#: Where agents run: all local (real KV messages), local latents + API answer, or text over the API.
MODES = ("local", "hybrid", "api")
#: The seed's deprecated name for mode 1.
MODE_ALIASES = {"local_cache": "local"}


def resolve_mode(mode: str) -> str:
    """Canonical mode name (``local_cache`` is an alias of ``local``)."""
    mode = MODE_ALIASES.get(mode, mode)
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES + tuple(MODE_ALIASES))}")
    return mode


def _chain(roles: tuple[Role, ...], kind: str, backend: str, decision_backend: str) -> Plan:
    nodes = []
    for i, role in enumerate(roles):
        last = i == len(roles) - 1
        inputs = (i - 1,) if i > 0 else ()
        nodes.append(NodeSpec(role, kind="text" if last else kind, backend=decision_backend if last else backend,
                              inputs=inputs))
    return Plan(tuple(nodes), message="full")


def baseline_plan(method: str, mode: str = "local") -> Plan:
    """The fixed plan of a baseline method.

    ``single`` and ``text_chain`` run on the local model (``local``) or the API (``api`` / ``hybrid``); the
    LatentMAS pipelines need the local model for their latent agents, and in ``hybrid`` the API answers.

    Raises:
        ValueError: an unknown method, or a learned one (use :func:`plan_from_graph`).
    """
    mode = resolve_mode(mode)
    text_backend = "local" if mode == "local" else "api"
    if method == "single":
        return Plan((NodeSpec(SOLVER, kind="text", backend=text_backend),))
    if method == "text_chain":
        return _chain(SEQUENTIAL, "text", text_backend, text_backend)
    if method in ("latentmas_seq", "latentmas_hier"):
        if mode == "api":
            raise ValueError(f"{method} passes KV-caches, which needs a local model: use --mode local or hybrid")
        roles = SEQUENTIAL if method == "latentmas_seq" else HIERARCHICAL
        return _chain(roles, "latent", "local", "local" if mode == "local" else "api")
    if method in METHODS:
        raise ValueError(f"{method} learns its graph: build its plan with plan_from_graph")
    raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


def plan_from_graph(graph: AgentGraph, roles: Mapping[str, Role], *, kind: str, mode: str = "local",
                    message: str = "full", decision_role: Role = DECISION_MAKER) -> tuple[Plan, dict]:
    """Unroll a graph into a plan.

    Args:
        graph (AgentGraph): agents, spatial/temporal edges, rounds and decision mode.
        roles (Mapping[str, Role]): role of each agent name.
        kind (str): ``"latent"`` (G-cache) or ``"text"`` (G-Designer) agents.
        mode (str): ``local`` / ``hybrid`` / ``api`` (see :data:`MODES`). Default is ``"local"``.
        message (str): what latent agents send on. Default is ``"full"``.
        decision_role (Role): role of the ``refer`` decision node.

    Returns:
        tuple: ``(plan, edge_index)`` where ``edge_index[(j, i)] = ("spatial" | "temporal", u, v)`` maps each plan
        input to the graph edge it came from (for soft edge weights).

    The ``refer`` decision reads the final round's sinks when messages are ``full`` (their caches already hold
    their ancestors), and every final-round agent otherwise. ``direct`` makes the last agent answer;
    ``majority`` votes over the final round's agents.
    """
    mode = resolve_mode(mode)
    if kind == "latent" and mode == "api":
        kind = "text"  # api mode is the text graph: no local model to hold caches
    agent_backend = "local" if (kind == "latent" or mode == "local") else "api"
    decision_backend = "local" if mode == "local" else "api"
    steps = graph.unrolled()
    index = {(s.round, s.agent): i for i, s in enumerate(steps)}
    last_round = graph.num_rounds - 1
    final_round = [i for i, s in enumerate(steps) if s.round == last_round]
    answering = set()
    if graph.decision == "direct":
        answering = {len(steps) - 1}
    elif graph.decision == "majority":
        answering = set(final_round)
    nodes, edge_index = [], {}
    for i, s in enumerate(steps):
        inputs = tuple(index[p] for p in s.predecessors)
        for (r, u), j in zip(s.predecessors, inputs):
            edge_index[(j, i)] = ("temporal" if r < s.round else "spatial", u, s.agent)
        name = graph.agents[s.agent]
        if name not in roles:
            raise ValueError(f"agent {name!r} has no role; known roles are {', '.join(roles)}")
        answers = i in answering
        nodes.append(NodeSpec(roles[name], kind="text" if answers else kind,
                              backend=decision_backend if answers else agent_backend,
                              inputs=inputs, name=f"{name}#{s.agent}@r{s.round}"))
    if graph.decision == "refer":
        if message == "full" and kind == "latent":
            sinks = set(graph.sinks())
            reads = tuple(i for i in final_round if steps[i].agent in sinks)
        else:
            reads = tuple(final_round)
        nodes.append(NodeSpec(decision_role, kind="text", backend=decision_backend, inputs=reads))
        return Plan(tuple(nodes), message=message), edge_index
    voters = tuple(sorted(answering)) if graph.decision == "majority" else ()
    return Plan(tuple(nodes), message=message, voters=voters), edge_index
