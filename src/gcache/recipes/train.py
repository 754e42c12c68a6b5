"""``gcache train``: learn a graph method's topology model and CacheFuser from task results, LLMs frozen.

Per step, for a batch of training questions:

* topology (REINFORCE): sample K graphs per question, run them, utility U = 1 if correct;
  loss = -(U - b) · log π(G), with b a moving average (``--baseline ma``), the mean of the K samples
  (``--samples-per-question K > 1``), or none (the seed's plain ``-log π · U``, ``--baseline none``);
* fuser (gcache, local decision): the teacher-forced NLL of the gold answer at the decision node, through the
  frozen model into the gates and edge weights (and with ``--soft-edges`` into the GNN via ``log p(edge)``).

A checkpoint (``OUT/checkpoint.pt``: weights, optimizer, baseline, RNG, history) is written atomically after
every step, so a killed run restarts from its last finished step when the same command is run again.

    gcache train --method gcache --dataset gsm8k --data ../shared/data/gsm8k/train.jsonl --limit 40 \\
        --model smollm2 --batch-size 4 --steps 10 --out runs/train
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from tqdm import tqdm

from gcache.agents.team import soft_edge_log_probs
from gcache.config import ConfigError, RunConfig, compare_identity
from gcache.io import atomic_torch_save, atomic_write_json
from gcache.io.metric_logging import build_metric_logger
from gcache.methods import get_method
from gcache.modules.topology import MovingAverageBaseline, group_mean_baseline, reinforce_loss
from gcache.recipes import _components as C

logger = logging.getLogger(__name__)

__all__ = ["TrainRecipe", "answer_target"]


def answer_target(task, example) -> str:
    """The gold answer as the decision node should write it (what the fuser's NLL scores)."""
    if task.domain == "code":
        return example.meta.get("canonical_solution", example.answer)
    return f"The final answer is \\boxed{{{example.answer}}}."


class TrainRecipe:
    """Train ``gdesigner`` (text graph) or ``gcache`` (latent graph + fuser). ``setup()``, ``train()``."""

    def __init__(self, cfg: RunConfig, utility_fn=None) -> None:
        if not cfg.learned:
            raise ConfigError(f"gcache train learns graphs: --method must be gdesigner or gcache, not {cfg.method}")
        if cfg.out is None:
            raise ConfigError("--out DIR is required: checkpoints and the training log are written there")
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.checkpoint_path = self.out / C.CHECKPOINT_NAME
        # utility_fn(example, trace, scored) -> float; default 1.0 if correct (tests may inject a synthetic one)
        self.utility_fn = utility_fn or (lambda ex, trace, scored: float(scored["correct"]))

    def setup(self) -> None:
        """Check everything the user gave (files, folders, settings, resume state), then load the model."""
        cfg = self.cfg
        C.prepare_out(self.out)
        self.task = C.build_task(cfg)
        self.examples = self.task.load(cfg.data, split=cfg.split, limit=cfg.limit)
        prompt_set = C.load_prompt_set(cfg)
        self.identity = cfg.identity(C.identity_facts(cfg, self.task), training=True)
        # Checked before any model loads: a checkpoint of another run is refused at once.
        resume = self._read_checkpoint() if self.checkpoint_path.is_file() else None
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
        self.params = [p for p in self.team.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.params, lr=cfg.lr)
        self.baseline = MovingAverageBaseline()
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.step = 0
        self.history: list[dict] = []
        self.metric_logger = build_metric_logger(self.out / "tensorboard", enabled=cfg.tensorboard)
        self.fuser_loss = (get_method(cfg.method).latent and self.team.fuser is not None and cfg.mode == "local"
                           and cfg.fuser_loss_weight > 0)
        if resume is not None:
            self._restore(resume)

    # ------------------------------------------------------------------ checkpoints
    def _state(self) -> dict:
        return {
            "step": self.step,
            "team": self.team.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "baseline": self.baseline.state_dict(),
            "generator": self.generator.get_state(),
            "history": self.history,
            "config": self.cfg.to_dict(),
            "identity": self.identity,
            "agents": list(self.team.agents),
            "role_names": list(self.team.prompt_set.role_names),
        }

    def _read_checkpoint(self) -> dict:
        state = C.load_checkpoint(self.checkpoint_path)
        compare_identity(state.get("identity"), self.identity, self.checkpoint_path)
        return state

    def _restore(self, state: dict) -> None:
        self.team.load_state_dict(state["team"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.baseline.load_state_dict(state["baseline"])
        self.generator.set_state(state["generator"])
        self.step = state["step"]
        self.history = state["history"]
        logger.info("resuming from %s at step %d", self.checkpoint_path, self.step)

    def _save_checkpoint(self) -> None:
        atomic_torch_save(self._state(), self.checkpoint_path)
        atomic_write_json(self.out / "history.json", self.history)

    # ------------------------------------------------------------------ training
    def _batch(self, step: int) -> list:
        n, bs = len(self.examples), self.cfg.batch_size
        return [self.examples[(step * bs + i) % n] for i in range(min(bs, n))]

    def train_step(self, batch) -> dict:
        """One optimisation step over ``batch``; returns its log entry."""
        cfg = self.cfg
        self.team.train()
        log_probs, utilities, nll_terms, errors = [], [], [], 0
        baselines = []
        for ex in batch:
            sample_lp, sample_u = [], []
            for graph, log_prob, probs in self.team.sample_graphs(ex.question, cfg.samples_per_question,
                                                                  self.generator):
                plan, edge_index = C.plan_for(cfg, self.team, graph)
                with torch.no_grad():
                    trace = self.executor.run(plan, [ex.question])[0]
                errors += trace.error is not None
                scored = self.task.score(trace.final_text or "", ex)
                sample_u.append(self.utility_fn(ex, trace, scored))
                if log_prob is not None:
                    sample_lp.append(log_prob)
                if self.fuser_loss:
                    soft = None
                    if cfg.soft_edges and probs is not None:
                        soft = soft_edge_log_probs(probs, edge_index)
                    nll = self.executor.answer_nll(plan, [ex.question], [answer_target(self.task, ex)], soft)
                    nll_terms.append(nll.mean())
            utilities.extend(sample_u)
            log_probs.extend(sample_lp)
            if cfg.samples_per_question > 1:
                baselines.append(group_mean_baseline(sample_u))
        loss = torch.zeros(())
        reinforce = torch.zeros(())
        if log_probs:
            if cfg.baseline == "none":
                b = None
            elif baselines:
                b = torch.cat(baselines)
            else:
                b = self.baseline.value
            reinforce = reinforce_loss(torch.stack(log_probs), utilities, b)
            loss = loss + reinforce
        nll_mean = torch.stack(nll_terms).mean() if nll_terms else torch.zeros(())
        loss = loss + cfg.fuser_loss_weight * nll_mean
        self.optimizer.zero_grad(set_to_none=True)
        if loss.requires_grad:
            loss.backward()
            self.optimizer.step()
        self.baseline.update(utilities)
        return {
            "step": self.step + 1,
            "loss": loss.item(),
            "reinforce_loss": reinforce.item(),
            "answer_nll": nll_mean.item(),
            "reward": sum(utilities) / len(utilities),
            "baseline": self.baseline.value,
            "errors": errors,
        }

    def train(self) -> dict:
        cfg = self.cfg
        with tqdm(total=cfg.steps, initial=self.step, desc=f"train {cfg.method}", unit="step") as bar:
            while self.step < cfg.steps:
                t0 = time.perf_counter()
                entry = self.train_step(self._batch(self.step))
                entry["seconds"] = round(time.perf_counter() - t0, 3)
                self.history.append(entry)
                self.step += 1
                self._save_checkpoint()
                self.metric_logger.log_dict(entry, step=entry["step"])  # after the checkpoint: a resume logs no step twice
                bar.set_postfix(reward=f"{entry['reward']:.2f}", nll=f"{entry['answer_nll']:.3f}")
                bar.update(1)
        return {"steps": self.step, "checkpoint": str(self.checkpoint_path),
                "last": self.history[-1] if self.history else None}

    def cleanup(self) -> None:
        self.engine = None
        self.metric_logger.close()
