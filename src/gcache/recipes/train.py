"""``gcache train``: learn a graph method's topology model and CacheFuser from task results, LLMs frozen.

Per step, for a batch of ``--batch-size`` training questions:

* draw ``K = --samples-per-question`` graphs per question from one GNN pass. Draw ``k`` of every question uses
  the same random numbers (common random numbers), so questions with alike edge probabilities draw the same
  graph; questions that share a graph run as one batch through the team (at most ``--batch-size`` rows at a time);
* each group runs the team once up to the decision node and scores the gold answer there (teacher-forced,
  through the frozen model, with gradients into the fuser; backpropagated group by group); when the utility needs
  the answers, the decision nodes of all groups then decode as one batch, their fused contexts stacked whatever
  their graphs (:meth:`GraphExecutor.finish`);
* topology (REINFORCE): ``loss = -(U - b) · log π(G)`` with utility ``U`` (``--utility``: the gold answer's
  mean token log-likelihood, dense, so graphs are told apart even when none answers right; correctness; or both)
  and baseline ``b`` (``--baseline``: mean of the question's other K - 1 graphs, a moving average, or none);
* fuser (gcache): the same pass's gold-answer NLL (``--fuser-loss-weight``). With ``--soft-edges`` the fuser bias
  carries ``log p(edge)`` in every pass, training and evaluation alike, so this loss reaches the GNN too. In
  hybrid mode the API model cannot be differentiated: the NLL is scored where the local model reads the fused
  latent context, the verbaliser whose text the API model is sent.

Training reads training questions only: the trained team records a hash of each, and ``gcache eval --checkpoint``
refuses test questions that were trained on. After every step it writes, each file atomically, the trained team
(``OUT/team/``: safetensors weights, ``config.json``, ``history.json`` and a model card; what evaluation and
plotting load, see :mod:`gcache.training.checkpointing`) and the resumable state (``OUT/train_state.pt``:
weights, optimizer, baseline, history; read with ``weights_only=True``), so a killed run restarts from its last
finished step.

    gcache train --method gcache --dataset gsm8k --data ../shared/data/gsm8k/train.jsonl --limit 40 \\
        --model smollm2 --batch-size 4 --steps 10 --out runs/train
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from gcache.config import ConfigError, RunConfig, compare_identity
from gcache.distributed import Distributed
from gcache.io import atomic_write_json
from gcache.io.metric_logging import build_metric_logger
from gcache.reasoning import ContextOverflowError
from gcache.reasoning.executor import RowTrace
from gcache.recipes import _components as C
from gcache.training import checkpointing
from gcache.training.reinforce import MovingAverageBaseline, group_mean_baseline, reinforce_loss
from gcache.training.team import GraphDraw, seeded_generator

logger = logging.getLogger(__name__)

__all__ = ["Outcome", "TrainRecipe", "answer_target", "question_hash"]


def answer_target(task, example) -> str:
    """The gold answer as the decision node should write it (what the fuser's NLL scores)."""
    if task.domain == "code":
        return example.meta.get("canonical_solution", example.answer)
    return f"The final answer is \\boxed{{{example.answer}}}."


def question_hash(question: str) -> str:
    """Whitespace-insensitive hash of a question (what checkpoints record of their training questions)."""
    return hashlib.sha256(" ".join(question.split()).encode()).hexdigest()[:16]


@dataclass
class Outcome:
    """What one drawn graph earned on one question: the input of a utility function.

    Attributes:
        example: the training question.
        draw (GraphDraw): the graph that ran.
        trace (RowTrace): what happened (text only when the utility needs decoding).
        correct (bool | None): the answer was right (None when nothing was decoded).
        loglik (float | None): the gold answer's mean token log-likelihood at the decision node.
    """

    example: object
    draw: GraphDraw
    trace: RowTrace
    correct: bool | None
    loglik: float | None


def utility_of_correct(o: Outcome) -> float:
    """1 if the decoded answer is right, else 0 (``--utility correct``)."""
    return float(o.correct)


def utility_of(name: str) -> Callable[[Outcome], float]:
    """The utility function named by ``--utility``."""
    if name == "loglik":
        return lambda o: o.loglik
    if name == "correct":
        return utility_of_correct
    return lambda o: float(o.correct) + o.loglik


def _norm(tensors) -> float:
    """L2 norm of a list of tensors taken together."""
    return float(torch.sqrt(sum((t.float() ** 2).sum() for t in tensors))) if tensors else 0.0


def converged(history: list[dict], window: int = 4, threshold: float = 0.3) -> dict:
    """Whether training has converged, from each parameter group's Adam step over the last ``window`` steps.

    Adam moves every parameter by about its learning rate per step while the gradient keeps its sign, so the
    ratio ``||Δθ|| / (lr · sqrt(#θ))`` is near 1 for a group still running at full rate and falls well below it
    when its gradients average out (the parameters hover). A group has converged when its mean ratio over the
    last ``window`` steps is under ``threshold``.

    >>> h = [{"fuser_step_ratio": 1.0}] * 4 + [{"fuser_step_ratio": 0.1}] * 4
    >>> converged(h)["converged"], converged(h[:4])["converged"]
    (True, False)
    """
    last = history[-window:]
    names = sorted({k[:-len("_step_ratio")] for h in last for k in h if k.endswith("_step_ratio")})
    groups = {g: sum(h.get(f"{g}_step_ratio", 0.0) for h in last) / len(last) for g in names}
    return {"window": len(last), "threshold": threshold, "groups": groups,
            "converged": bool(groups) and len(last) == window and all(r < threshold for r in groups.values())}


class TrainRecipe:
    """Train ``gdesigner`` (text graph) or ``gcache`` (latent graph + fuser). ``setup()``, ``train()``.

    Args:
        cfg (RunConfig): the run.
        utility_fn (Callable[[Outcome], float] | None): replaces ``--utility`` (tests reward a known graph with
            it). Default is None.
    """

    def __init__(self, cfg: RunConfig, utility_fn: Callable[[Outcome], float] | None = None) -> None:
        if not cfg.learned:
            raise ConfigError(f"gcache train learns graphs: --method must be gdesigner or gcache, not {cfg.method}")
        if cfg.out is None:
            raise ConfigError("--out DIR is required: checkpoints and the training log are written there")
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.checkpoint_path = self.out / checkpointing.TRAIN_STATE_NAME  # what a resume reads
        self.team_path = self.out / checkpointing.TEAM_DIR  # what evaluation and plotting read
        self.utility_fn = utility_fn or utility_of(cfg.utility)
        self.needs_text = utility_fn is not None or "correct" in cfg.utility
        self.dist = Distributed(cfg.device)  # under torchrun: each rank runs its share of every batch

    def setup(self) -> None:
        """Check everything the user gave (files, folders, settings, resume state), then load the model."""
        cfg = self.cfg
        self.dist.setup()
        cfg.device = self.dist.device  # under torchrun, rank r takes cuda:<local rank>
        C.prepare_out(self.out)
        self.task = C.build_task(cfg)
        if cfg.split == "test" and "train" in self.task.splits:
            raise ConfigError(f"training reads training questions only: {cfg.dataset} has a train split, use "
                              f"--split train (and evaluate on test)")
        self.examples = self.task.load(cfg.data, split=cfg.split, limit=cfg.limit)
        if self.dist.world.size > min(cfg.batch_size, len(self.examples)):
            raise ConfigError(f"{self.dist.world.size} ranks share each batch of {min(cfg.batch_size, len(self.examples))} "
                              f"questions: use a --batch-size of at least the number of ranks")
        prompt_set = C.load_prompt_set(cfg)
        if cfg.split == "test":
            logger.warning("%s has no train split: training on its test questions; gcache eval --checkpoint will "
                           "refuse to evaluate any question trained on", cfg.dataset)
        self.identity = cfg.identity(C.identity_facts(cfg, self.task), training=True)
        # Checked before any model loads: a checkpoint of another run is refused at once.
        resume = self._read_checkpoint() if self.dist.world.is_main else None
        if not C.needs_local_model(cfg) and not self.needs_text:
            raise ConfigError(f"--utility {cfg.utility} scores the gold answer with the local model, which --mode api "
                              f"has not got: use --utility correct")
        self.api = C.build_api(cfg) if C.needs_api(cfg) else None
        if C.needs_local_model(cfg):
            C.check_model(cfg)
        self.engine = C.build_engine(cfg) if C.needs_local_model(cfg) else None
        self.team = C.build_team(cfg, self.engine.num_layers if self.engine is not None else 0, prompt_set)
        if self.team.policy is None and self.team.fuser is None:
            raise ConfigError("nothing to train: a fixed --topology with a text team has no parameters")
        self.executor = C.build_executor(cfg, self.task, self.engine, self.api, self.team.fuser)
        if self.team.policy is not None:
            for name, p in self.team.policy.gnn.named_parameters():
                p.requires_grad_(cfg.optimize_temporal if name.startswith("temporal") else cfg.optimize_spatial)
        fuser = list(self.team.fuser.parameters()) if self.team.fuser is not None else []
        read = self.team.read_parameters()
        policy = ([p for p in self.team.policy.parameters() if p.requires_grad and not any(p is r for r in read)]
                  if self.team.policy is not None else [])
        # The read head has a rate of its own: at the GNN's 0.003, Adam moves the read offset by about 0.02 in 8
        # steps, so the policy could never learn to answer alone (or to read the team) in a run of this length.
        groups = [{"name": "policy", "params": policy, "lr": cfg.lr},
                  {"name": "read", "params": read, "lr": cfg.read_lr},
                  {"name": "fuser", "params": fuser, "lr": cfg.fuser_lr}]
        self.optimizer = torch.optim.Adam([g for g in groups if g["params"]])
        # The greedy outcome of answering alone (the single agent's answer) depends on no trained parameter: each
        # training question's is computed once, then reused at every draw and step that answers alone.
        self.alone_outcomes: dict[str, bool] = {}
        self.baseline = MovingAverageBaseline()
        self.step = 0
        self.history: list[dict] = []
        self.metric_logger = build_metric_logger(self.out / "tensorboard", enabled=cfg.tensorboard and self.dist.world.is_main)
        self.fuser_loss = self.team.fuser is not None and cfg.fuser_loss_weight > 0
        if self.fuser_loss and cfg.mode == "hybrid":
            logger.info("hybrid mode: the fuser trains on the local verbaliser's NLL of the gold answer (the text "
                        "the API model is sent), not on the API model itself, which cannot be differentiated")
        if resume is not None:
            self._restore(resume)
        if self.dist.enabled:  # every rank starts from rank 0's state (its checkpoint's, or its fresh weights)
            state = self.dist.broadcast(self._state() if self.dist.world.is_main else None, "the first step")
            if not self.dist.world.is_main:
                self._restore(state)

    # ------------------------------------------------------------------ checkpoints
    def _state(self) -> dict:
        return {
            "step": self.step,
            "team": self.team.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "baseline": self.baseline.state_dict(),
            "history": self.history,
            "config": self.cfg.to_dict(),
            "identity": self.identity,
            "agents": list(self.team.agents),
            "role_names": list(self.team.prompt_set.role_names),
            "train_question_hashes": sorted({question_hash(ex.question) for ex in self.examples}),
            "alone_outcomes": self.alone_outcomes,
        }

    def _read_checkpoint(self) -> dict | None:
        """The state to resume from: ``train_state.pt``, or the single-file ``checkpoint.pt`` older versions wrote
        (both read with ``weights_only=True``); None for a fresh run."""
        legacy = self.out / checkpointing.LEGACY_CHECKPOINT_NAME
        if not self.checkpoint_path.is_file() and legacy.is_file():
            self.checkpoint_path = legacy  # continued here; the next step writes the new files
        if not self.checkpoint_path.is_file():
            return None
        state = checkpointing.load_train_state(self.checkpoint_path)
        compare_identity(state.get("identity"), self.identity, self.checkpoint_path)
        return state

    def _restore(self, state: dict) -> None:
        self.team.load_state_dict(state["team"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.baseline.load_state_dict(state["baseline"])
        self.step = state["step"]
        self.history = state["history"]
        self.alone_outcomes = dict(state.get("alone_outcomes", {}))
        if self.dist.world.is_main:
            logger.info("resuming from %s at step %d", self.checkpoint_path, self.step)

    def _save_checkpoint(self) -> None:
        """The team folder first, then the resumable state: a crash between them resumes from the state's step,
        whose next step rewrites the folder."""
        if not self.dist.world.is_main:  # every rank holds the same state; rank 0 writes it
            return
        state = self._state()
        checkpointing.save_team(
            self.team_path, state["team"], run_config=state["config"], identity=self.identity,
            num_layers=self.team.fuser.num_layers if self.team.fuser is not None else 0, agents=state["agents"],
            prompt_set=self.cfg.prompt_set or self.task.prompt_set,
            train_question_hashes=state["train_question_hashes"], train_questions=len(self.examples),
            step=self.step, history=self.history)
        self.checkpoint_path = self.out / checkpointing.TRAIN_STATE_NAME  # also after resuming an old checkpoint.pt
        checkpointing.save_train_state(self.checkpoint_path, state)
        atomic_write_json(self.out / "history.json", self.history)

    # ------------------------------------------------------------------ training
    def _batch(self, step: int) -> list:
        n, bs = len(self.examples), self.cfg.batch_size
        return [self.examples[(step * bs + i) % n] for i in range(min(bs, n))]

    def draw_graphs(self, batch, step: int) -> list[list[GraphDraw]]:
        """``K`` graphs per question; draw ``k`` of every question uses the same random numbers."""
        k = self.cfg.samples_per_question
        return [self.team.draw(ex.question, [seeded_generator(self.cfg.seed, "train", step, i) for i in range(k)])
                for ex in batch]

    def _start(self, group: list[tuple[int, int]], draws, batch, targets: list[str] | None):
        """Run one graph's rows ``(question, draw)`` up to the decision node and score the gold answer there.

        A question whose prompt does not fit the context is dropped from the step (logged) and the rest run again.

        Returns:
            tuple: ``(rows run, PendingRun or None, nll [rows] or None, soft-edge terms or None)``.
        """
        cfg = self.cfg
        while group:
            plan, soft = C.plan_for(cfg, self.team, [draws[q][k] for q, k in group])
            # a plan without latent agents (answering alone) gives the fuser nothing to learn: score it only when
            # the utility itself is the likelihood
            fused = any(node.kind == "latent" for node in plan.nodes)
            score = targets is not None and (fused or cfg.utility != "correct")
            try:
                with torch.set_grad_enabled(self.fuser_loss and fused):
                    run = self.executor.start(plan, [batch[q].question for q, _ in group], soft,
                                              through_graph=cfg.fuser_grad == "graph")
                    nll = self.executor.score(run, [targets[q] for q, _ in group]) if score else None
                return group, run, nll, soft
            except ContextOverflowError as err:
                group = [group[r] for r in self._drop(group, err, batch)]
        return [], None, None, None

    def _finish(self, started: list, batch) -> list:
        """Decode the answers of every started group in one batch (the decision nodes stacked, whatever the
        graphs); a question that does not fit is dropped from the step (logged) and the rest of its group answers."""
        try:
            self.executor.finish([run for _, run, _ in started])
            return started
        except ContextOverflowError:  # every run that fits has answered; the others answer without their culprits
            pass
        kept = []
        for group, run, nlls in started:
            while group and run.outputs[-1] is None:
                try:
                    self.executor.finish([run])
                except ContextOverflowError as err:
                    rows = self._drop(group, err, batch)
                    group, run, nlls = [group[r] for r in rows], run.keep_rows(rows), [nlls[r] for r in rows]
            if group:
                kept.append((group, run, nlls))
        return kept

    @staticmethod
    def _drop(group: list[tuple[int, int]], err: ContextOverflowError, batch) -> list[int]:
        """The rows of ``group`` whose questions ``err`` does not name (each named question is logged)."""
        dropped = {group[r][0] for r in err.rows}
        for q in dropped:
            logger.warning("training question %s skipped this step: %s", batch[q].id,
                           err.row_message(next(r for r in err.rows if group[r][0] == q)))
        return [r for r, (q, _) in enumerate(group) if q not in dropped]

    def train_step(self, batch) -> dict:
        """One optimisation step over ``batch``; returns its log entry.

        Under torchrun each rank runs its share of the questions. Every loss term is divided by the whole batch's
        count (rows, or rows kept), so each rank's gradient is its share of the whole batch's, and their sum
        (:meth:`Distributed.sync_gradients`) is the step one process would take; the log covers every rank.
        """
        cfg = self.cfg
        total_rows = len(batch) * cfg.samples_per_question
        batch = self.dist.share(batch)  # this rank's questions (all of them in one process)
        self.team.train()
        self.optimizer.zero_grad(set_to_none=True)
        draws = self.draw_graphs(batch, self.step)
        rows = [(q, k) for q in range(len(batch)) for k in range(len(draws[q]))]
        rows, reused = self._answered_alone(rows, draws, batch)
        needs_nll = self.fuser_loss or cfg.utility != "correct" and self.engine is not None
        targets = [answer_target(self.task, ex) for ex in batch] if needs_nll else None
        outcomes: dict[tuple[int, int], Outcome] = {}
        nll_sum, nll_rows, errors = 0.0, 0, 0
        started = []
        # Rows that drew the same graph run together, at most --batch-size at a time: the decision node's scoring
        # pass keeps its activations for the backward, and a group can hold every row of the step (B x K).
        chunks = [members[i:i + cfg.batch_size] for members in C.group_by_graph([draws[q][k] for q, k in rows])
                  for i in range(0, len(members), cfg.batch_size)]
        for members in chunks:
            group, run, nll, soft = self._start([rows[m] for m in members], draws, batch, targets)
            if run is None:
                continue
            if nll is not None and nll.requires_grad:
                # backward per group: the frozen model's activations are freed before the next group runs
                (cfg.fuser_loss_weight * nll.sum() / total_rows).backward(retain_graph=soft is not None)
                run.detach()
            started.append((group, run, nll.tolist() if nll is not None else [None] * len(group)))
        if self.needs_text:
            started = self._finish(started, batch)
        for group, run, nlls in started:
            for (q, k), trace, row_nll in zip(group, run.traces, nlls):
                correct = None
                if self.needs_text:
                    correct = trace.error is None and bool(self.task.score(trace.final_text or "", batch[q])["correct"])
                errors += trace.error is not None
                outcomes[(q, k)] = Outcome(batch[q], draws[q][k], trace, correct,
                                           None if row_nll is None else -row_nll)
                if row_nll is not None:
                    nll_sum, nll_rows = nll_sum + row_nll, nll_rows + 1
        for (q, k), source in reused.items():  # answered alone: the single agent's greedy outcome, run once
            if isinstance(source, bool):
                outcomes[(q, k)] = Outcome(batch[q], draws[q][k], RowTrace(), source, None)
            elif source in outcomes:
                ran = outcomes[source]
                outcomes[(q, k)] = Outcome(batch[q], draws[q][k], ran.trace, ran.correct, ran.loglik)
        if self._alone_is_exact():
            for (q, k), ran in list(outcomes.items()):
                if (q, k) not in reused and ran.draw.graph.alone and ran.trace.error is None:
                    self.alone_outcomes[question_hash(batch[q].question)] = bool(ran.correct)
        # questions with every draw run (a question that did not fit the context has none)
        kept = [q for q in range(len(batch)) if all((q, k) in outcomes for k in range(len(draws[q])))]
        kept_total = sum(self.dist.gather(len(kept), "a training step"))  # over every rank
        if not kept_total:
            raise ConfigError(f"no question of training step {self.step + 1} fits the model's context")
        utilities = torch.tensor([[self.utility_fn(outcomes[(q, k)]) for k in range(len(draws[q]))]
                                  for q in kept]).reshape(len(kept), cfg.samples_per_question)  # [B', K]
        reinforce = torch.zeros(())
        if self.team.policy is not None and kept:
            log_probs = torch.stack([torch.stack([d.log_prob for d in draws[q]]) for q in kept])  # [B', K]
            if cfg.baseline == "none":
                b = None
            elif cfg.baseline == "group":  # leave-one-out mean of the question's other graphs
                b = torch.stack([group_mean_baseline(row, leave_one_out=True) for row in utilities])  # [B', K]
            else:
                b = torch.full_like(utilities, self.baseline.value)
            reinforce = reinforce_loss(log_probs.flatten(), utilities.flatten(), None if b is None else b.flatten())
            reinforce = reinforce * (len(kept) / kept_total)  # this rank's share of the mean over every rank's rows
            if reinforce.requires_grad:
                reinforce.backward()
        self.dist.sync_gradients([p for group in self.optimizer.param_groups for p in group["params"]])
        before = [[p.detach().clone() for p in group["params"]] for group in self.optimizer.param_groups]
        grad_norms = [_norm([p.grad for p in group["params"] if p.grad is not None])
                      for group in self.optimizer.param_groups]
        self.optimizer.step()
        steps = {}  # per parameter group: the gradient norm and Adam's step relative to its largest (see converged())
        for group, old, grad_norm in zip(self.optimizer.param_groups, before, grad_norms):
            moved = _norm([p.detach() - q for p, q in zip(group["params"], old)])
            size = sum(p.numel() for p in group["params"])
            steps[f"{group['name']}_grad_norm"] = grad_norm
            steps[f"{group['name']}_step_ratio"] = moved / (group["lr"] * size ** 0.5)
        ranks = self.dist.gather({  # what every rank ran, for the baseline and the log
            "utilities": utilities.flatten().tolist(), "reinforce": reinforce.item(), "nll": nll_sum,
            "nll_rows": nll_rows, "alone": [o.draw.graph.alone for o in outcomes.values()],
            "outcomes": len(outcomes), "correct": [o.correct for o in outcomes.values() if o.correct is not None],
            "graphs": [repr(o.draw.graph.to_dict()) for o in outcomes.values()], "skipped": len(batch) - len(kept),
            "errors": errors}, "a training step")
        utilities = [u for r in ranks for u in r["utilities"]]
        correct = [c for r in ranks for c in r["correct"]]
        self.baseline.update(utilities)
        return {
            "step": self.step + 1,
            "reinforce_loss": sum(r["reinforce"] for r in ranks),
            "answer_nll": (sum(r["nll"] for r in ranks) / max(1, sum(r["nll_rows"] for r in ranks))
                           if needs_nll and any(r["nll_rows"] for r in ranks) else None),
            "alone": sum(a for r in ranks for a in r["alone"]) / max(1, sum(len(r["alone"]) for r in ranks)),
            "reward": sum(utilities) / len(utilities),
            "accuracy": sum(correct) / len(correct) if correct else None,
            "baseline": self.baseline.value,
            "graphs": len({g for r in ranks for g in r["graphs"]}),
            "skipped": sum(r["skipped"] for r in ranks),
            "errors": sum(r["errors"] for r in ranks),
            **steps,
        }

    def train(self, on_step: Callable[[dict], None] | None = None) -> dict:
        """Train up to ``--steps`` (from the resumed step), writing the team and the resumable state after each.

        Args:
            on_step (Callable[[dict], None] | None): called with each finished step's log entry (the
                ``history.json`` entry: step, reward, accuracy, losses, seconds ...) once it is saved, on every
                torchrun rank. Default is None.

        Returns:
            dict: ``steps``, ``team`` (folder), ``checkpoint`` (resumable state), ``last`` (entry) and
            ``convergence`` (what ``gcache train`` prints).
        """
        cfg = self.cfg
        with tqdm(total=cfg.steps, initial=self.step, desc=f"train {cfg.method}", unit="step",
                  disable=not (self.dist.world.is_main and cfg.progress)) as bar:
            while self.step < cfg.steps:
                t0 = time.perf_counter()
                entry = self.train_step(self._batch(self.step))
                entry["seconds"] = round(time.perf_counter() - t0, 3)
                self.history.append(entry)
                self.step += 1
                self._save_checkpoint()
                self.metric_logger.log_dict(entry, step=entry["step"])  # after the checkpoint: a resume logs no step twice
                bar.set_postfix(reward=f"{entry['reward']:.3f}", graphs=entry["graphs"])
                bar.update(1)
                if on_step is not None:
                    on_step(entry)
        convergence = converged(self.history)
        if self.dist.world.is_main and convergence["groups"]:
            logger.info("training %s: %s", "converged" if convergence["converged"] else "has NOT converged",
                        ", ".join(f"{g} step ratio {r:.2f}" for g, r in convergence["groups"].items()))
            atomic_write_json(self.out / "convergence.json", convergence)
        return {"steps": self.step, "team": str(self.team_path), "checkpoint": str(self.checkpoint_path),
                "last": self.history[-1] if self.history else None, "convergence": convergence}

    def _alone_is_exact(self) -> bool:
        """Whether a draw that answers alone earns a fixed outcome per question: greedy decoding, and a utility of
        correctness only."""
        return self.cfg.temperature == 0 and self.utility_fn is utility_of_correct

    def _answered_alone(self, rows: list[tuple[int, int]], draws, batch
                        ) -> tuple[list[tuple[int, int]], dict[tuple[int, int], object]]:
        """Rows to run, and the rows that need not run: a draw that answers alone, under greedy decoding and the
        ``correct`` utility, earns the single agent's greedy outcome, which no trained parameter changes. It is
        taken from earlier steps (``True``/``False``) or from the question's first such row of this step (that
        row's ``(q, k)``). Exact: the same plan, prompt and greedy decoding (tested against ``single``)."""
        if not self._alone_is_exact():
            return rows, {}
        run, reused, first = [], {}, {}
        for q, k in rows:
            if draws[q][k].graph.alone:
                known = self.alone_outcomes.get(question_hash(batch[q].question))
                if known is not None:
                    reused[(q, k)] = known
                    continue
                if q in first:
                    reused[(q, k)] = first[q]
                    continue
                first[q] = (q, k)
            run.append((q, k))
        return run, reused

    def cleanup(self) -> None:
        """Release the model and the logger, and leave torch.distributed's group (also after a failed setup)."""
        self.engine = None
        if getattr(self, "metric_logger", None) is not None:
            self.metric_logger.close()
        self.dist.cleanup()
