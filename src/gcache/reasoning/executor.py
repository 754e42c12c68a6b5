"""Run a team of agents over a plan: latent nodes pass KV messages, text nodes pass text.

A :class:`Plan` is the unrolled graph in execution order. Each node has a role, a kind (``latent`` thinks in
latent space and emits a KV message; ``text`` decodes text) and a backend (``local`` model or ``api``). The last
node decides: its text is the answer (or a majority vote over ``voters``). Every baseline is a plan:

* ``single``: one local text node;
* ``text_chain``: planner -> critic -> refiner -> judger passing text;
* ``latentmas_seq`` / ``latentmas_hier``: a chain of latent nodes passing their whole cache, then a decoding judge;
* ``gdesigner``: a learned graph of text nodes; ``gcache``: a learned graph of latent nodes with a CacheFuser.

In hybrid plans an API node cannot read a KV-cache: the local model decodes what its latent predecessors hold
into text (:func:`gcache.agents.prompts.verbalize_messages`), and that text is what the API model is sent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from gcache.agents.prompts import agent_messages, verbalize_messages
from gcache.agents.roles import Role
from gcache.modules.cache_fuser import CacheFuser
from gcache.modules.kv_message import MESSAGE_MODES, KVMessage
from gcache.reasoning._depth import depth_groups, stack_contexts, unstack_context
from gcache.reasoning._latent import ContextOverflowError, DecodeConfig, Decoded, LatentEngine, render_chat
from gcache.scoring.metrics import majority_vote

logger = logging.getLogger(__name__)

__all__ = ["PendingRun", "NodeSpec", "Plan", "RowTrace", "GraphExecutor", "NODE_KINDS", "BACKENDS"]

NODE_KINDS = ("latent", "text")
BACKENDS = ("local", "api")
LATENT_TEAM = "Team (latent thoughts decoded by the local model)"


@dataclass(frozen=True)
class NodeSpec:
    """One agent in a plan.

    Args:
        role (Role): who the agent is.
        kind (str): ``"latent"`` or ``"text"``. Default is ``"latent"``.
        backend (str): ``"local"`` or ``"api"`` (text nodes only). Default is ``"local"``.
        inputs (tuple[int, ...]): indices of earlier nodes whose output this node receives. Default is ().
        name (str): label in traces; default is the role name.
        context_note (bool): tell the agent, in its prompt, that its context holds other agents' latent thoughts
            (when it does). A G-cache decision node leaves it out, so that it has exactly ``single``'s prompt and
            differs from it only in its context. Default is True.
    """

    role: Role
    kind: str = "latent"
    backend: str = "local"
    inputs: tuple[int, ...] = ()
    name: str = ""
    context_note: bool = True

    def __post_init__(self) -> None:
        if self.kind not in NODE_KINDS:
            raise ValueError(f"unknown node kind {self.kind!r}; choose one of {', '.join(NODE_KINDS)}")
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        if self.kind == "latent" and self.backend != "local":
            raise ValueError(f"node {self.label}: latent nodes need the local model (an API returns text only)")

    @property
    def label(self) -> str:
        return self.name or self.role.name


@dataclass(frozen=True)
class Plan:
    """Nodes in execution order; the last one answers.

    Args:
        nodes (tuple[NodeSpec, ...]): the agents; inputs refer to earlier nodes only.
        message (str): what a latent node sends on: ``full`` / ``own`` / ``latent``. Default is ``"full"``.
        voters (tuple[int, ...]): text nodes whose answers are majority-voted; empty means the last node's
            text is the answer. Default is ().
    """

    nodes: tuple[NodeSpec, ...]
    message: str = "full"
    voters: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.nodes:
            raise ValueError("a plan needs at least one node")
        if self.message not in MESSAGE_MODES:
            raise ValueError(f"unknown message mode {self.message!r}; choose one of {', '.join(MESSAGE_MODES)}")
        for i, node in enumerate(self.nodes):
            bad = [j for j in node.inputs if not 0 <= j < i]
            if bad:
                raise ValueError(f"node {i} ({node.label}) takes inputs {bad} that do not come before it")
        answering = self.voters or (len(self.nodes) - 1,)
        for i in answering:
            if self.nodes[i].kind != "text":
                raise ValueError(f"node {i} ({self.nodes[i].label}) answers, so it must be a text node")

    @property
    def uses_api(self) -> bool:
        return any(n.backend == "api" for n in self.nodes)

    @property
    def uses_local(self) -> bool:
        return any(n.backend == "local" for n in self.nodes)


@dataclass
class RowTrace:
    """What happened for one question.

    Besides the answer and its costs it carries the diagnostics of a latent team (filled when the executor
    runs with ``diagnostics=True``): the LM head's top token at each latent step of each latent node, the
    answering node's first-step probability of ending its turn, and whether its answer hit the token cap.
    """

    final_text: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latent_steps: int = 0
    api_prompt_tokens: int = 0
    api_completion_tokens: int = 0
    node_texts: dict[str, str] = field(default_factory=dict)
    api_sent: list[dict] = field(default_factory=list)
    error: str | None = None
    truncated: bool = False
    judge_stop_prob: float | None = None
    latent_top_tokens: dict[str, list[str]] = field(default_factory=dict)
    node_tokens: dict[str, int] = field(default_factory=dict)
    voters: list[str] = field(default_factory=list)


@dataclass
class _NodeOutput:
    message: KVMessage | None = None  # latent nodes
    texts: list[str] | None = None  # text nodes, one per row


@dataclass(eq=False)
class PendingRun:
    """A plan run up to (not including) its decision node: what :meth:`GraphExecutor.score` and
    :meth:`GraphExecutor.finish` continue from."""

    plan: Plan
    questions: list[str]
    edge_log_probs: dict[tuple[int, int], torch.Tensor] | None
    traces: list[RowTrace]
    outputs: list[_NodeOutput | None]

    @property
    def finals(self) -> set[int]:
        """The nodes whose text is an answer: the decision node, or the voters of a majority vote."""
        return {len(self.plan.nodes) - 1, *self.plan.voters}

    def keep_rows(self, rows: Sequence[int]) -> "PendingRun":
        """The same run for the questions ``rows`` only (their messages, texts, soft-edge terms and traces)."""
        index = torch.tensor(list(rows), dtype=torch.long)
        outputs = [None if out is None else _NodeOutput(
            message=None if out.message is None else out.message.rows(index.to(out.message.valid.device)),
            texts=None if out.texts is None else [out.texts[r] for r in rows]) for out in self.outputs]
        soft = None if self.edge_log_probs is None else {key: t[index.to(t.device)]
                                                         for key, t in self.edge_log_probs.items()}
        return PendingRun(self.plan, [self.questions[r] for r in rows], soft, [self.traces[r] for r in rows], outputs)

    def detach(self) -> None:
        """Drop the autograd history of the messages held (after their gradient has been taken), so a run kept
        for :meth:`GraphExecutor.finish` does not keep the frozen model's activations alive."""
        for out in self.outputs:
            if out is not None and out.message is not None:
                out.message = out.message.detach()


class GraphExecutor:
    """Executes plans for a batch of questions.

    Args:
        engine (LatentEngine | None): the local model (needed by local nodes).
        api: a :class:`gcache.api.ChatClient` (needed by API nodes). Default is None.
        latent_steps (int): latent thoughts per latent node. Default is 4.
        decode (DecodeConfig): decoding of text nodes. Default is greedy, 256 tokens.
        verbalize (DecodeConfig): decoding of latent thoughts into text for API nodes. Default is 128 tokens.
        fuser (CacheFuser | None): merges several incoming messages; None is plain concatenation.
        answer_instruction (str): the task's answer-format instruction.
        extract (Callable | None): answer extraction for majority voting.
        seed (int): seed of the sampling generator. Default is 0.
        batch_by_depth (bool): run the local nodes of one depth and kind in one batch (their rows stacked, see
            :mod:`gcache.reasoning._depth`); False runs node by node. Greedy outputs are the same either way;
            sampled ones draw from the generator in a different order. Default is True.
        diagnostics (bool): record latent top tokens per step and the answering node's first-step stop probability
            per row. Default is False.
    """

    def __init__(self, *, engine: LatentEngine | None = None, api=None, latent_steps: int = 4,
                 decode: DecodeConfig = DecodeConfig(), verbalize: DecodeConfig = DecodeConfig(max_new_tokens=128),
                 fuser: CacheFuser | None = None, answer_instruction: str = "",
                 extract: Callable[[str], str | None] | None = None, seed: int = 0,
                 batch_by_depth: bool = True, diagnostics: bool = False) -> None:
        if latent_steps < 0:
            raise ValueError(f"latent_steps must be >= 0, got {latent_steps}")
        self.engine = engine
        self.api = api
        self.latent_steps = latent_steps
        self.decode_cfg = decode
        self.verbalize_cfg = verbalize
        self.fuser = fuser
        self.answer_instruction = answer_instruction
        self.extract = extract
        self.batch_by_depth = batch_by_depth
        self.diagnostics = diagnostics
        # torch samples only with a generator on the logits' device (a CPU one fails on CUDA logits): put it
        # where the LM head writes them.
        device = engine.output_device if engine is not None else "cpu"
        self.generator = torch.Generator(device=device).manual_seed(seed)

    # ------------------------------------------------------------------ public
    def run(self, plan: Plan, questions: Sequence[str],
            edge_log_probs: dict[tuple[int, int], torch.Tensor] | None = None) -> list[RowTrace]:
        """Run ``plan`` for a batch of questions (no gradients); one :class:`RowTrace` per question."""
        with torch.no_grad():
            traces, _ = self.rollout(plan, questions, edge_log_probs=edge_log_probs)
        return traces

    def run_many(self, jobs: Sequence[tuple[Plan, Sequence[str], dict | None]]) -> list[list[RowTrace]]:
        """Run several plans, each for its own questions, sharing forwards across them (no gradients).

        ``jobs`` holds ``(plan, questions, edge_log_probs)``. Every plan runs its depth groups in order; the local
        groups that are next in every plan run together, one batch per kind (latent or text), their rows stacked
        plan after plan. A batch of questions that drew different graphs thus costs about what one graph costs.

        Returns:
            list[list[RowTrace]]: per job, one trace per question.

        Raises:
            ContextOverflowError: some row does not fit (the rows it names are of the stacked batch when several
                plans ran together: run the jobs one by one with :meth:`run` to know which questions).
        """
        runs = [PendingRun(plan, list(questions), soft, [RowTrace() for _ in questions], [None] * len(plan.nodes))
                for plan, questions, soft in jobs]
        for run in runs:
            self._check(run.plan)
        with torch.no_grad():
            self._run_nodes(runs)
        for run in runs:
            self._set_answers(run)
        return [run.traces for run in runs]

    def answer_nll(self, plan: Plan, questions: Sequence[str], targets: Sequence[str],
                   edge_log_probs: dict[tuple[int, int], torch.Tensor] | None = None,
                   through_graph: bool = True) -> torch.Tensor:
        """Teacher-forced NLL ``[b]`` of ``targets`` at the (local) decision node, differentiable in the fuser.

        See :meth:`rollout` (this is its scoring half, without decoding).
        """
        _, nll = self.rollout(plan, questions, targets, decode=False, edge_log_probs=edge_log_probs,
                              through_graph=through_graph)
        return nll

    def rollout(self, plan: Plan, questions: Sequence[str], targets: Sequence[str] | None = None, *,
                decode: bool = True, edge_log_probs: dict[tuple[int, int], torch.Tensor] | None = None,
                through_graph: bool = False) -> tuple[list[RowTrace], torch.Tensor | None]:
        """One pass over the plan that answers (``decode``) and/or scores gold ``targets``, sharing the work.

        Every node before the decision runs once. At the decision node the prompt is prefilled once; the
        teacher-forced NLL of each target continues that prefill (with gradients, so the fuser's bias and any
        soft-edge term get one), and decoding continues the same prefill without gradients. When the decision
        node is an API model (hybrid mode), the NLL is scored where the local model reads the fused latent
        context: at the verbaliser, whose text is what the API model is then sent.

        Args:
            plan (Plan): what to run.
            questions (Sequence[str]): one question per row.
            targets (Sequence[str] | None): gold answer text per row to score; None scores nothing.
            decode (bool): produce the answer text. Default is True.
            edge_log_probs (dict | None): ``log p`` of the graph edge behind plan inputs ``(j, i)`` (a scalar or
                ``[b]``), added to the fuser bias of that input (soft edges). Default is None.
            through_graph (bool): run the nodes before the decision with gradients too (so the fuser biases of
                every fused edge get one), at several times the memory. Default is False.

        Returns:
            tuple: ``(traces, nll [b] or None)``.
        """
        if targets is None:  # every node, the decision node batched with any of its depth (majority votes)
            self._check(plan)
            run = PendingRun(plan, list(questions), edge_log_probs, [RowTrace() for _ in questions],
                             [None] * len(plan.nodes))
            if decode:
                self._run_nodes([run])
                self._set_answers(run)
            return run.traces, None
        if len(targets) != len(questions):
            raise ValueError(f"{len(targets)} targets for {len(questions)} questions")
        run = self.start(plan, questions, edge_log_probs, through_graph=through_graph)
        last = len(plan.nodes) - 1
        run.outputs[last], nll = self._decide(plan, questions, run.outputs, run.traces, targets, decode,
                                              edge_log_probs)
        if decode:
            self._set_answers(run)
        return run.traces, nll

    def start(self, plan: Plan, questions: Sequence[str],
              edge_log_probs: dict[tuple[int, int], torch.Tensor] | None = None, *,
              through_graph: bool = False) -> PendingRun:
        """Run every node of ``plan`` before its decision node (with gradients only if ``through_graph`` and grad
        is enabled); :meth:`score` and :meth:`finish` then do the decision node."""
        self._check(plan)
        run = PendingRun(plan, list(questions), edge_log_probs, [RowTrace() for _ in questions],
                         [None] * len(plan.nodes))
        last = len(plan.nodes) - 1
        with torch.set_grad_enabled(torch.is_grad_enabled() and through_graph):
            self._run_nodes([run], last)
        return run

    def score(self, run: PendingRun, targets: Sequence[str]) -> torch.Tensor:
        """Teacher-forced NLL ``[b]`` of ``targets`` at the decision node of a started run (with gradients)."""
        if len(targets) != len(run.questions):
            raise ValueError(f"{len(targets)} targets for {len(run.questions)} questions")
        _, nll = self._decide(run.plan, run.questions, run.outputs, run.traces, targets, False, run.edge_log_probs)
        return nll

    def finish(self, runs: Sequence[PendingRun]) -> None:
        """Decode the decision node of every started run, without gradients, and set each row's answer.

        The local decision nodes of all runs, whatever their graphs, share one batch: their fused contexts are
        stacked (left-padded, with their fuser biases; :func:`~gcache.reasoning._depth.stack_contexts`), so a batch
        of questions that drew different graphs decodes its answers in one forward per token.

        Raises:
            ContextOverflowError: the first run whose decision node does not fit (its rows named); every other run
                has answered by then, and the run that failed keeps ``outputs[-1] is None``.
        """
        stacked = [r for r in runs if r.plan.nodes[-1].backend == "local" and not r.plan.voters]
        first_error: ContextOverflowError | None = None
        with torch.no_grad():
            done = False
            if len(stacked) > 1:
                try:
                    self._run_local([(run, len(run.plan.nodes) - 1) for run in stacked])
                    done = True
                except ContextOverflowError:  # decide them one run at a time below, which names the rows
                    pass
            for run in runs:
                if done and any(run is r for r in stacked):
                    continue
                last = len(run.plan.nodes) - 1
                try:
                    if run.plan.nodes[last].backend == "api":
                        run.outputs[last] = self._run_api_node(run.plan, last, run.plan.nodes[last], run.questions,
                                                               run.outputs, run.traces, True, run.edge_log_probs)
                    else:
                        self._run_local([(run, last)])
                except ContextOverflowError as err:  # the other runs still answer; this one is left unanswered
                    first_error = first_error or err
        for run in runs:
            if run.outputs[-1] is not None:
                self._set_answers(run)
        if first_error is not None:
            raise first_error

    def _set_answers(self, run: PendingRun) -> None:
        for r, trace in enumerate(run.traces):
            if run.plan.voters:
                trace.voters = [run.plan.nodes[i].label for i in run.plan.voters]
                trace.final_text = self._vote([run.outputs[i].texts[r] for i in run.plan.voters])
            else:
                trace.final_text = run.outputs[-1].texts[r]

    # ------------------------------------------------------------------ nodes
    def _check(self, plan: Plan) -> None:
        if plan.uses_local and self.engine is None:
            raise ValueError("this plan has local nodes but the executor has no local model")
        if plan.uses_api and self.api is None:
            raise ValueError("this plan has API nodes but the executor has no API client")

    def _gather(self, plan: Plan, i: int, node: NodeSpec, b: int, outputs: list[_NodeOutput],
                edge_log_probs) -> tuple[KVMessage, torch.Tensor | None, list[list[tuple[str, str]]]]:
        """Fused latent context, its bias, and the peer texts of each row, for node ``i``."""
        latent_in = [j for j in node.inputs if outputs[j].message is not None]
        text_in = [j for j in node.inputs if outputs[j].texts is not None]
        peers = [[(plan.nodes[j].label, outputs[j].texts[r]) for j in text_in] for r in range(b)]
        if not latent_in:
            return (self.engine.empty_context(b) if self.engine is not None else None), None, peers
        messages = [outputs[j].message for j in latent_in]
        soft = None
        if edge_log_probs is not None:
            soft = [edge_log_probs.get((j, i), torch.zeros(())) for j in latent_in]
        if self.fuser is None:
            if soft is not None:
                raise ValueError("soft edge weights need a CacheFuser")
            return KVMessage.concat(messages), None, peers
        src_roles = [plan.nodes[j].role.name for j in latent_in]
        ctx, bias = self.fuser(messages, src_roles, node.role.name, soft)
        if bias is not None:
            bias = bias.to(ctx.valid.device)  # once per node (the fuser may sit on the CPU), not once per layer
        return ctx, bias, peers

    def _prompts(self, node: NodeSpec, questions: Sequence[str], peers, latent_context: bool, final: bool) -> list[str]:
        return [
            render_chat(self.engine.tokenizer, agent_messages(
                node.role, q, answer_instruction=self.answer_instruction, peers=p,
                latent_context=latent_context and node.context_note, final=final))
            for q, p in zip(questions, peers)
        ]

    def _run_nodes(self, runs: list[PendingRun], count: int | None = None) -> None:
        """Run the first ``count`` nodes (default: all) of every run into its outputs, in waves: wave ``w`` runs
        the ``w``-th depth group of every run (:func:`depth_groups`; node by node without ``batch_by_depth``), the
        local groups of one kind together, each API node on its own."""
        schedules = [depth_groups(run.plan, count, batch=self.batch_by_depth) for run in runs]
        for wave in range(max((len(groups) for groups in schedules), default=0)):
            local: dict[str, list[tuple[PendingRun, int]]] = {}  # kind -> (run, node) units
            for run, groups in zip(runs, schedules):
                if wave >= len(groups):
                    continue
                group = groups[wave]
                if run.plan.nodes[group[0]].backend == "api":
                    (i,) = group
                    run.outputs[i] = self._run_api_node(run.plan, i, run.plan.nodes[i], run.questions, run.outputs,
                                                        run.traces, i in run.finals, run.edge_log_probs)
                else:
                    local.setdefault(run.plan.nodes[group[0]].kind, []).extend((run, i) for i in group)
            for units in local.values():
                self._run_local(units)

    def _run_local(self, units: list[tuple[PendingRun, int]]) -> None:
        """Local nodes of one kind as one batch; unit ``(run, i)`` is node ``i`` of ``run`` and owns the next
        ``len(run.questions)`` rows (one node, a depth group, or the nodes of several runs)."""
        spans, gathered, prompts = [], [], []
        row = 0
        for run, i in units:
            b, node = len(run.questions), run.plan.nodes[i]
            g = self._gather(run.plan, i, node, b, run.outputs, run.edge_log_probs)
            gathered.append(g)
            prompts += self._prompts(node, run.questions, g[2], g[0].length > 0, i in run.finals)
            spans.append(slice(row, row + b))
            row += b
        ctx, bias = stack_contexts([g[0] for g in gathered], [g[1] for g in gathered], self.engine.num_layers)
        latent = units[0][0].plan.nodes[units[0][1]].kind == "latent"
        headroom = self.latent_steps if latent else self.decode_cfg.max_new_tokens
        try:
            ctx_p, hidden, logits, n_prompt = self.engine.prefill(ctx, prompts, bias, headroom=headroom)
        except ContextOverflowError as err:
            if len({id(run) for run, _ in units}) == 1:  # stacked rows k*b + r -> question r of that run
                raise err.for_questions(len(units[0][0].questions)) from None
            raise
        n_prompt = n_prompt.tolist()
        for (run, _), span in zip(units, spans):
            for trace, n in zip(run.traces, n_prompt[span]):
                trace.prompt_tokens += n
        if not latent:
            with torch.no_grad():
                out = self.engine.decode(ctx_p, logits.detach(), self.decode_cfg, bias, self.generator)
            for (run, i), span in zip(units, spans):
                run.outputs[i] = _NodeOutput(texts=self._record_decoded(run.traces, out, span.start,
                                                                        run.plan.nodes[i].label, final=i in run.finals))
            return
        steps: list[torch.Tensor] | None = [] if self.diagnostics else None
        ctx_l, _ = self.engine.think(ctx_p, hidden, self.latent_steps, bias, record=steps)
        top = self.engine.top_tokens(steps) if steps else None  # [stacked rows][steps]
        received = [g[0].length for g in gathered]
        longest_prompt = [max(n_prompt[span]) for span in spans]
        for k, ((run, i), span) in enumerate(zip(units, spans)):
            own = unstack_context(ctx_l, k, span, received, longest_prompt) if len(units) > 1 else ctx_l
            run.outputs[i] = _NodeOutput(message=own.message(run.plan.message, own_start=received[k]))
            for r, trace in zip(range(span.start, span.stop), run.traces):
                trace.latent_steps += self.latent_steps
                if top is not None:
                    trace.latent_top_tokens[run.plan.nodes[i].label] = top[r]

    @staticmethod
    def _record_decoded(traces: list[RowTrace], out: Decoded, start: int, label: str, *, final: bool) -> list[str]:
        """Record decoded rows ``start..start + len(traces)`` of ``out`` in their traces; returns their texts."""
        texts = []
        for r, trace in enumerate(traces, start=start):
            trace.completion_tokens += len(out.token_ids[r])
            trace.node_texts[label] = out.texts[r]
            trace.node_tokens[label] = len(out.token_ids[r])
            if final:  # an answering node: was its answer cut, did it want to stop at once?
                trace.truncated = trace.truncated or out.truncated[r]
                trace.judge_stop_prob = float(out.first_stop_prob[r])
            texts.append(out.texts[r])
        return texts

    def _decide(self, plan: Plan, questions: Sequence[str], outputs: list[_NodeOutput | None],
                traces: list[RowTrace], targets: Sequence[str], decode: bool, edge_log_probs
                ) -> tuple[_NodeOutput, torch.Tensor]:
        """The decision node: score ``targets`` (teacher-forced NLL) and, if asked, answer, from one prefill."""
        if plan.voters:
            raise ValueError("the gold-answer loss needs one decision node, not a majority vote")
        if self.engine is None:
            raise ValueError("the gold-answer loss needs the local model")
        i = len(plan.nodes) - 1
        node = plan.nodes[i]
        ctx, bias, peers = self._gather(plan, i, node, len(questions), outputs, edge_log_probs)
        has_latent = ctx is not None and ctx.length > 0
        with torch.enable_grad():
            if node.backend == "api":
                if not has_latent:
                    raise ValueError("an API decision node without latent inputs has nothing local to score")
                # the API model is sent what the verbaliser writes: score the gold answer there
                prompts = [render_chat(self.engine.tokenizer, verbalize_messages())] * len(questions)
            else:
                prompts = self._prompts(node, questions, peers, has_latent, True)
            ctx_p, _, logits, n_prompt = self.engine.prefill(ctx, prompts, bias)
            nll = self.engine.continuation_nll(ctx_p, logits, list(targets), bias)
        for r, trace in enumerate(traces):
            trace.prompt_tokens += int(n_prompt[r])
        if not decode:
            return _NodeOutput(texts=[""] * len(questions)), nll
        if node.backend == "api":
            with torch.no_grad():
                out = self.engine.decode(ctx_p, logits.detach(), self.verbalize_cfg, bias, self.generator)
            for r, trace in enumerate(traces):
                trace.completion_tokens += len(out.token_ids[r])
            peers = [p + [(LATENT_TEAM, t)] for p, t in zip(peers, out.texts)]
            return _NodeOutput(texts=self._call_api(node, questions, peers, True, traces)), nll
        with torch.no_grad():
            out = self.engine.decode(ctx_p, logits.detach(), self.decode_cfg, bias, self.generator)
        return _NodeOutput(texts=self._record_decoded(traces, out, 0, node.label, final=True)), nll

    def _run_api_node(self, plan: Plan, i: int, node: NodeSpec, questions: Sequence[str],
                      outputs: list[_NodeOutput | None], traces: list[RowTrace], final: bool,
                      edge_log_probs) -> _NodeOutput:
        ctx, bias, peers = self._gather(plan, i, node, len(questions), outputs, edge_log_probs)
        if ctx is not None and ctx.length > 0:  # an API model cannot read a cache: the local model puts it into words
            texts = self._verbalize(ctx, bias, traces)
            peers = [p + [(LATENT_TEAM, t)] for p, t in zip(peers, texts)]
        return _NodeOutput(texts=self._call_api(node, questions, peers, final, traces))

    def _verbalize(self, ctx: KVMessage, bias, traces: list[RowTrace]) -> list[str]:
        prompt = render_chat(self.engine.tokenizer, verbalize_messages())
        ctx_p, _, logits, n_prompt = self.engine.prefill(ctx, [prompt] * ctx.batch_size, bias,
                                                         headroom=self.verbalize_cfg.max_new_tokens)
        out = self.engine.decode(ctx_p, logits, self.verbalize_cfg, bias, self.generator)
        for r, trace in enumerate(traces):
            trace.prompt_tokens += int(n_prompt[r])
            trace.completion_tokens += len(out.token_ids[r])
        return out.texts

    def _call_api(self, node: NodeSpec, questions: Sequence[str], peers, final: bool,
                  traces: list[RowTrace]) -> list[str]:
        batch = [agent_messages(node.role, q, answer_instruction=self.answer_instruction, peers=p, final=final)
                 for q, p in zip(questions, peers)]
        results = self.api.complete_many_sync(batch, max_tokens=self.decode_cfg.max_new_tokens,
                                              temperature=self.decode_cfg.temperature, top_p=self.decode_cfg.top_p)
        texts = []
        for trace, messages, res in zip(traces, batch, results):
            trace.api_sent.append({"node": node.label, "messages": messages})
            trace.api_prompt_tokens += res.prompt_tokens
            trace.api_completion_tokens += res.completion_tokens
            if res.error is not None:
                trace.error = f"{node.label}: {res.error}" if trace.error is None else trace.error
                texts.append("")
            else:
                texts.append(res.text or "")
                trace.node_texts[node.label] = res.text or ""
        return texts

    def _vote(self, texts: list[str]) -> str | None:
        """The text of the vote that wins (:func:`gcache.scoring.metrics.majority_vote`: ties go to the answer
        reached first); the last text when no vote holds an answer."""
        if self.extract is None:
            raise ValueError("majority voting needs an answer extractor")
        winner = majority_vote([self.extract(t) for t in texts])
        return texts[-1] if winner is None else texts[winner]
