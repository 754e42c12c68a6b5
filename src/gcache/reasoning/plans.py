"""Plan builders of the methods in :mod:`gcache.methods`: the fixed baselines and plans unrolled from a graph.

Each builder has the signature the registry calls, ``fn(mode, *, graph, roles, message) -> (Plan, edge_index)``;
``mode`` has already been checked against the method's modes.
"""

from __future__ import annotations

from collections.abc import Mapping

from gcache.agents.pipelines import DECISION_MAKER, HIERARCHICAL, SEQUENTIAL, SOLVER
from gcache.agents.roles import Role
from gcache.choices import resolve_mode
from gcache.graph import AgentGraph
from gcache.methods import get_method
from gcache.reasoning.executor import NodeSpec, Plan

__all__ = ["baseline_plan", "plan_from_graph", "single_plan", "self_consistency_plan",
           "text_chain_plan", "latentmas_seq_plan", "latentmas_hier_plan", "text_graph_plan", "latent_graph_plan"]


def _chain(roles: tuple[Role, ...], kind: str, backend: str, decision_backend: str) -> Plan:
    nodes = []
    for i, role in enumerate(roles):
        last = i == len(roles) - 1
        inputs = (i - 1,) if i > 0 else ()
        nodes.append(NodeSpec(role, kind="text" if last else kind, backend=decision_backend if last else backend,
                              inputs=inputs))
    return Plan(tuple(nodes), message="full")


def single_plan(mode: str, **_) -> tuple[Plan, dict]:
    """One solver, on the local model (``local``) or the API (``api``)."""
    return Plan((NodeSpec(SOLVER, kind="text", backend="local" if mode == "local" else "api"),)), {}


def self_consistency_plan(mode: str, *, votes: int = 5, **_) -> tuple[Plan, dict]:
    """Self-consistency (Wang et al., 2023): ``votes`` solvers answer the same prompt independently (sampled, in one
    batch) and their extracted answers are majority-voted; a tie goes to the answer whose first vote came first
    (:meth:`GraphExecutor._vote`). Each voter is ``single``'s solver with ``single``'s prompt."""
    backend = "local" if mode == "local" else "api"
    nodes = tuple(NodeSpec(SOLVER, kind="text", backend=backend, name=f"{SOLVER.name}#{k + 1}") for k in range(votes))
    return Plan(nodes, voters=tuple(range(votes))), {}


def text_chain_plan(mode: str, **_) -> tuple[Plan, dict]:
    """Planner -> critic -> refiner -> judger passing text, on the local model or the API."""
    backend = "local" if mode == "local" else "api"
    return _chain(SEQUENTIAL, "text", backend, backend), {}


def latentmas_seq_plan(mode: str, **_) -> tuple[Plan, dict]:
    """LatentMAS sequential: latent planner, critic and refiner pass their whole cache; the judger answers (on
    the API in ``hybrid``)."""
    return _chain(SEQUENTIAL, "latent", "local", "local" if mode == "local" else "api"), {}


def latentmas_hier_plan(mode: str, **_) -> tuple[Plan, dict]:
    """LatentMAS hierarchical: latent experts in a chain, then the summarizer answers."""
    return _chain(HIERARCHICAL, "latent", "local", "local" if mode == "local" else "api"), {}


def text_graph_plan(mode: str, *, graph: AgentGraph, roles: Mapping[str, Role], message: str = "full",
                    **_) -> tuple[Plan, dict]:
    """G-Designer: the graph's agents pass text."""
    return plan_from_graph(graph, roles, kind="text", mode=mode, message=message)


def latent_graph_plan(mode: str, *, graph: AgentGraph, roles: Mapping[str, Role], message: str = "full",
                      **_) -> tuple[Plan, dict]:
    """G-cache: the graph's agents think in latent space and pass KV messages; the decision node is ``single``'s
    solver with ``single``'s prompt, so a team differs from one agent only in what its context holds."""
    return plan_from_graph(graph, roles, kind="latent", mode=mode, message=message, decision_role=SOLVER,
                           decision_note=False)


def baseline_plan(method: str, mode: str = "local") -> Plan:
    """The fixed plan of a baseline method (one that does not learn a graph).

    Raises:
        MethodError: an unknown method, a learned one (use :func:`plan_from_graph`), or a mode it cannot run in.
    """
    spec = get_method(method)
    if spec.learns:
        raise ValueError(f"{method} learns its graph: build its plan with plan_from_graph")
    return spec.build_plan(mode)[0]


def plan_from_graph(graph: AgentGraph, roles: Mapping[str, Role], *, kind: str, mode: str = "local",
                    message: str = "full", decision_role: Role = DECISION_MAKER,
                    decision_note: bool = True) -> tuple[Plan, dict]:
    """Unroll a graph into a plan.

    Args:
        graph (AgentGraph): agents, spatial/temporal edges, rounds and decision mode.
        roles (Mapping[str, Role]): role of each agent name.
        kind (str): ``"latent"`` (G-cache) or ``"text"`` (G-Designer) agents.
        mode (str): ``local`` / ``hybrid`` / ``api`` (see :data:`gcache.choices.MODES`). Default is ``"local"``.
        message (str): what latent agents send on. Default is ``"full"``.
        decision_role (Role): role of the ``refer`` decision node.
        decision_note (bool): the decision node's prompt says that its context holds the team's latent thoughts
            (see :attr:`NodeSpec.context_note`). Default is True.

    Returns:
        tuple: ``(plan, edge_index)`` where ``edge_index[(j, i)] = ("spatial" | "temporal", u, v)`` maps each plan
        input to the graph edge it came from (for soft edge weights).

    The ``refer`` decision reads the graph's read set when it has one (:attr:`AgentGraph.reads`): only the agents
    it reads and their ancestors run (an agent nobody reads costs nothing), and with ``full`` latent messages a
    read agent whose cache another read agent already holds is not read twice; an empty read set is exactly
    ``single``'s plan. Without a read set it reads the final round's sinks when messages are ``full`` (their caches
    already hold their ancestors), and every final-round agent otherwise. ``direct`` makes the last agent answer;
    ``majority`` votes over the final round's agents.
    """
    mode = resolve_mode(mode)
    if graph.decision == "refer" and graph.reads == ():  # answers alone: the single agent's plan, node for node
        return single_plan(mode)[0], {}
    if kind == "latent" and mode == "api":
        raise ValueError("latent agents need the local model: a latent graph cannot run in mode api")
    agent_backend = "local" if (kind == "latent" or mode == "local") else "api"
    decision_backend = "local" if mode == "local" else "api"
    full_caches = message == "full" and kind == "latent"  # a full cache already holds its ancestors' messages
    steps = graph.unrolled()
    index = {(s.round, s.agent): i for i, s in enumerate(steps)}
    last_round = graph.num_rounds - 1
    final_round = [i for i, s in enumerate(steps) if s.round == last_round]
    answering = set()
    if graph.decision == "direct":
        answering = {len(steps) - 1}
    elif graph.decision == "majority":
        answering = set(final_round)
    kept, reads = list(range(len(steps))), []  # the steps that run; what the refer decision reads
    if graph.decision == "refer" and graph.reads is not None:
        reads = [index[(last_round, a)] for a in graph.reads]
        ancestors: dict[int, set[int]] = {}
        for i, s in enumerate(steps):  # steps are in execution order: predecessors come first
            preds = [index[p] for p in s.predecessors]
            ancestors[i] = set(preds).union(*(ancestors[j] for j in preds))
        needed = set(reads).union(*(ancestors[i] for i in reads))  # the read agents and all they hear from
        kept = [i for i in kept if i in needed]
        if full_caches:
            reads = [i for i in reads if not any(i in ancestors[j] for j in reads)]
    elif graph.decision == "refer":
        sinks = set(graph.sinks())
        reads = [i for i in final_round if steps[i].agent in sinks] if full_caches else final_round
    new = {old: k for k, old in enumerate(kept)}  # step index -> plan index
    nodes, edge_index = [], {}
    for old in kept:
        s = steps[old]
        inputs = tuple(new[index[p]] for p in s.predecessors)
        for (r, u), j in zip(s.predecessors, inputs):
            edge_index[(j, new[old])] = ("temporal" if r < s.round else "spatial", u, s.agent)
        name = graph.agents[s.agent]
        if name not in roles:
            raise ValueError(f"agent {name!r} has no role; known roles are {', '.join(roles)}")
        answers = old in answering
        nodes.append(NodeSpec(roles[name], kind="text" if answers else kind,
                              backend=decision_backend if answers else agent_backend,
                              inputs=inputs, name=f"{name}#{s.agent}@r{s.round}"))
    if graph.decision == "refer":
        nodes.append(NodeSpec(decision_role, kind="text", backend=decision_backend,
                              inputs=tuple(new[i] for i in reads), context_note=decision_note))
        return Plan(tuple(nodes), message=message), edge_index
    voters = tuple(sorted(answering)) if graph.decision == "majority" else ()
    return Plan(tuple(nodes), message=message, voters=voters), edge_index
