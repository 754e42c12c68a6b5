"""``gcache eval``: run a method over a benchmark and record every question.

Writes ``OUT/results.jsonl`` (one object per question, appended and fsynced as each batch finishes) and
``OUT/summary.json``. Rerunning the same command resumes: finished questions are neither redone nor lost.

    gcache eval --method latentmas_seq --dataset gsm8k --data ../shared/data/gsm8k/test.jsonl --limit 8 \\
        --model smollm2 --out runs/latentmas

``--shard i/n`` runs every n-th question into the same ``--out`` (its own part of the results, merged by id), and
under ``torchrun`` the ranks split the questions the same way; rank 0 writes the summary once all have finished
(:mod:`gcache.distributed`).

Every question is scored by the task's ``strict`` and ``flexible`` pipelines (``scores`` in each record,
``metrics`` in the summary); ``correct`` / ``accuracy`` are the flexible ones (``accuracy_filter`` says so). The
summary also states the decoding settings, the seeds, the latent-step settings, the subset (``--limit``) and, for
code tasks, which sandbox protections were active.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections import Counter
from pathlib import Path

import torch
from tqdm.auto import tqdm

from gcache.agents.prompts import is_echo
from gcache.config import ConfigError, RunConfig, compare_identity
from gcache.distributed import Distributed, Shard
from gcache.io import ResultStore, atomic_write_json, write_summary
from gcache.provenance import provenance
from gcache.reasoning import ContextOverflowError
from gcache.reasoning.executor import RowTrace
from gcache.recipes import _components as C
from gcache.scoring import compute_metrics, sandbox_report
from gcache.scoring.aggregation import accuracy, majority_at, majority_tokens_at, share_alone
from gcache.training.team import eval_generator

logger = logging.getLogger(__name__)

__all__ = ["EvalRecipe", "diagnostics_summary"]


def diagnostics_summary(records: list[dict], top: int = 10) -> dict:
    """Sums of the per-question diagnostics: cut, empty and echoed answers, the answering agent's mean first-step
    stop probability, and the tokens the LM head reads most often at latent steps (and at the last one)."""
    diags = [r.get("diagnostics") or {} for r in records]
    stop = [d["judge_stop_prob"] for d in diags if d.get("judge_stop_prob") is not None]
    tokens: Counter = Counter()
    last_tokens: Counter = Counter()
    for d in diags:
        for steps in (d.get("latent_top_tokens") or {}).values():
            tokens.update(steps)
            if steps:
                last_tokens[steps[-1]] += 1
    return {
        "truncated": sum(bool(d.get("truncated")) for d in diags),
        "empty": sum(bool(d.get("empty")) for d in diags),
        "echoed": sum(bool(d.get("echoed")) for d in diags),
        "judge_stop_prob_mean": sum(stop) / len(stop) if stop else None,
        "latent_top_tokens": tokens.most_common(top),
        "latent_last_step_tokens": last_tokens.most_common(top),
    }


class EvalRecipe:
    """Evaluate one method on one dataset. ``setup()``, then ``run()``, then ``summary()``."""

    def __init__(self, cfg: RunConfig, models: dict | None = None) -> None:
        self.cfg = cfg
        self.models = models  # loaded models shared with other runs (gcache compare); None: load for this run
        self.out = Path(cfg.out) if cfg.out is not None else None  # None: answering only (setup_answering)
        self.engine = None
        self.api = None
        self.team = None
        self.dist = Distributed(cfg.device)
        # this process's questions: its --shard, split again among torchrun's ranks
        shard = Shard.parse(cfg.shard) if cfg.shard else Shard()
        self.shard = shard.split(self.dist.world.size, self.dist.world.rank)
        if self.dist.enabled and cfg.device_map:
            raise ConfigError("--device-map spreads one model over all visible GPUs, which torchrun's ranks would "
                              "share: run one process per group of GPUs (CUDA_VISIBLE_DEVICES) with --shard instead")

    @property
    def is_main(self) -> bool:
        """Whether this process writes the summary (always, unless it is a torchrun rank other than 0)."""
        return self.dist.world.is_main

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Check everything the user gave (files, folders, settings, resume state), then load the model."""
        cfg = self.cfg
        if self.out is None:
            raise ConfigError("--out DIR is required: results and the resume state are written there")
        self.dist.setup()
        cfg.device = self.dist.device  # under torchrun, rank r takes cuda:<local rank>
        C.prepare_out(self.out)
        self._load_checkpoint()
        self.task = C.build_task(cfg)
        self.examples = self.task.load(cfg.data, split=cfg.split, limit=cfg.limit)
        if self.ckpt is not None:
            self._refuse_trained_questions()
        prompt_set = C.load_prompt_set(cfg) if cfg.learned else None
        self.identity = cfg.identity(C.identity_facts(cfg, self.task, self.ckpt))
        self._check_resume()
        self.api = C.build_api(cfg) if C.needs_api(cfg) else None
        self.prices = C.load_prices(cfg)
        self.secrets = self.api.settings.secrets if self.api is not None else []
        self.store = ResultStore(self.out, secrets=self.secrets, part=self.shard.part)
        self.alone_records = self._load_alone_from() if cfg.alone_from else {}
        done = self.store.done_ids(retry_errors=cfg.retry_errors)
        self.mine = self.shard.select(self.examples)
        self.todo = [ex for ex in self.mine if ex.id not in done]
        if self.todo:
            self._build_agents(prompt_set)
        else:  # e.g. summing up shard parts copied together: no model to load
            logger.info("nothing left to run here: no model is loaded")
        # Written only now that setup succeeded: a failed start leaves nothing that blocks the corrected command.
        atomic_write_json(self.out / "config.json", {"identity": self.identity, "config": cfg.to_dict()})

    def setup_answering(self) -> None:
        """Load what answering needs (the model, the team with its ``--checkpoint``, the executor) and nothing of
        ``--out`` or the dataset: :meth:`answer` then runs questions given in Python exactly as :meth:`run` runs a
        dataset's (``gcache.load_agents``)."""
        cfg = self.cfg
        self.dist.setup()
        cfg.device = self.dist.device
        self._load_checkpoint()
        self.task = C.build_task(cfg)
        prompt_set = C.load_prompt_set(cfg) if cfg.learned else None
        self.api = C.build_api(cfg) if C.needs_api(cfg) else None
        self.prices = C.load_prices(cfg)
        self.secrets = self.api.settings.secrets if self.api is not None else []
        self.alone_records = {}
        self._build_agents(prompt_set)

    def answer(self, examples: list) -> list[dict]:
        """The records of ``examples`` (what ``results.jsonl`` would hold), run in batches of ``--batch-size`` as
        :meth:`run` runs them; nothing is written. Needs :meth:`setup` or :meth:`setup_answering` first."""
        records = []
        for start in range(0, len(examples), self.cfg.batch_size):
            records.extend(self._run_batch(examples[start:start + self.cfg.batch_size]))
        return records

    def _load_checkpoint(self) -> None:
        """``--checkpoint``'s trained team, whose team-shaping settings replace the run's (None without one)."""
        if self.cfg.checkpoint:  # safetensors and JSON (or an old .pt read with weights_only): nothing in it runs
            self.ckpt = C.load_checkpoint(self.cfg.checkpoint)
            C.apply_checkpoint_config(self.cfg, self.ckpt)
        else:
            self.ckpt = None

    def _build_agents(self, prompt_set) -> None:
        """The local model, the learned team (with its checkpoint) and the executor."""
        cfg = self.cfg
        if C.needs_local_model(cfg):
            C.check_model(cfg)
            self.engine = C.build_engine(cfg, self.models)  # the first slow step: all else was checked before it
        if cfg.learned:
            self.team = C.build_team(cfg, self.engine.num_layers if self.engine is not None else 0, prompt_set)
            if self.ckpt is not None:
                try:
                    self.team.load_state_dict(self.ckpt.state_dict)
                except RuntimeError as err:  # e.g. a text-graph checkpoint (no fuser) run as a latent graph
                    raise ConfigError(f"{cfg.checkpoint} does not fit this run (trained with --mode "
                                      f"{self.ckpt.config.get('mode')}, now --mode {cfg.mode}): "
                                      f"{str(err).splitlines()[0]}") from None
            self.team.eval()
        fuser = self.team.fuser if self.team is not None else None
        self.executor = C.build_executor(cfg, self.task, self.engine, self.api, fuser, diagnostics=True)
        if cfg.samples > 1 and cfg.temperature == 0:
            logger.warning("--samples %d with --temperature 0: greedy decoding gives %d identical samples",
                           cfg.samples, cfg.samples)

    def _refuse_trained_questions(self) -> None:
        """A checkpoint is never evaluated on the questions it was trained on."""
        from gcache.recipes.train import question_hash

        trained = set(self.ckpt.train_question_hashes)
        seen = [ex.id for ex in self.examples if question_hash(ex.question) in trained]
        if seen:
            raise ConfigError(f"{len(seen)} of the {len(self.examples)} questions to evaluate were training questions "
                              f"of {self.cfg.checkpoint} (first: {seen[0]}); evaluate on held-out questions")

    #: Settings a ``--alone-from`` single run must share with this run for its answers to be this run's.
    ALONE_FROM_KEYS = ("model", "dtype", "device_map", "dataset", "split", "data_sha256", "task_version",
                       "max_new_tokens", "temperature", "top_p", "seed", "samples", "mode")

    def _load_alone_from(self) -> dict[str, dict]:
        """The finished records of the ``--alone-from`` single run, after checking that it ran what this run's
        answer-alone plan would (the same model, data, decoding and seed)."""
        cfg = self.cfg
        if cfg.method != "gcache":
            raise ConfigError(f"--alone-from is for --method gcache (its policy can answer alone), not {cfg.method}")
        path = Path(cfg.alone_from) / "config.json"
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))["identity"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ConfigError(f"--alone-from {cfg.alone_from}: no readable config.json of a gcache eval run "
                              f"({type(err).__name__})") from None
        if saved.get("method") != "single":
            raise ConfigError(f"--alone-from {cfg.alone_from}: a run of --method {saved.get('method')}, not single")
        for key in self.ALONE_FROM_KEYS:
            if saved.get(key) != self.identity.get(key):
                raise ConfigError(f"--alone-from {cfg.alone_from}: its {key} is {saved.get(key)!r}, this run's "
                                  f"{self.identity.get(key)!r}; its answers are not this run's")
        records = {i: r for i, r in ResultStore(Path(cfg.alone_from)).load().items() if r.get("error") is None}
        logger.info("--alone-from: %d finished single-agent answers from %s", len(records), cfg.alone_from)
        return records

    def _check_resume(self) -> None:
        """Refuse to mix results of different experiments in one folder (a folder without results is free)."""
        path = self.out / "config.json"
        if not ResultStore(self.out).records():
            return
        if not path.is_file():
            raise ConfigError(f"{self.out} holds results but no config.json, so the run that wrote them is "
                              "unknown; use another --out")
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))["identity"]
        except (ValueError, KeyError, TypeError) as err:
            raise ConfigError(f"{path} is damaged ({type(err).__name__}: {err}); the results next to it cannot be "
                              "matched to a run: use another --out") from None
        compare_identity(saved, self.identity, self.out)

    # ------------------------------------------------------------------ run
    def run(self) -> dict:
        cfg = self.cfg
        mine, todo = self.mine, self.todo
        logger.info("%d questions%s, %d already done, %d to run", len(mine),
                    f" (shard {self.shard} of {len(self.examples)})" if self.shard.count > 1 else "",
                    len(mine) - len(todo), len(todo))
        with tqdm(total=len(mine), initial=len(mine) - len(todo), desc=cfg.method, unit="q", dynamic_ncols=True,
                  disable=not (self.is_main and cfg.progress)) as bar:
            for start in range(0, len(todo), cfg.batch_size):
                batch = todo[start:start + cfg.batch_size]
                for record in self._run_batch(batch):
                    self.store.append(record)
                bar.update(len(batch))
        ran = self.dist.gather(len(todo), "the summary")  # waits until every rank has finished its questions
        if self.dist.enabled and self.is_main:
            logger.info("questions run per rank: %s", ran)
        summary = self.summary(write=self.is_main)
        if self.ckpt is not None and self.is_main and summary["counts"]["answered"] == len(self.examples):
            # a finished evaluation (every shard's part in) joins the team's model card
            from gcache.training.checkpointing import record_evaluation

            record_evaluation(self.ckpt, summary, self.out)
        return summary

    def _draws(self, batch) -> list:
        """The graph of each question: the learned policy's seeded sample (``--eval-graph sample``, as G-Designer
        evaluates; :func:`~gcache.training.team.eval_generator`: seeded by the run's seed and the question) or its
        most probable DAG (``map``). A question's graph does not depend on its batch or on resuming; a batch's
        different graphs still run together (:meth:`GraphExecutor.run_many`)."""
        if self.team is None:
            return [None] * len(batch)
        with torch.no_grad():
            return [self.team.draw(ex.question, [eval_generator(self.cfg.seed, ex.question)],
                                   self.cfg.eval_graph)[0] for ex in batch]

    def _run_batch(self, batch, draws: list | None = None) -> list[dict]:
        """Run a batch (each question ``--samples`` times). Questions that drew different graphs run together
        (:meth:`GraphExecutor.run_many`: the agents of every graph at the same step share forwards); when some
        question does not fit the context, each graph's group runs again on its own, which names the question.
        A question answered alone whose record ``--alone-from`` holds takes that record instead of running."""
        draws = self._draws(batch) if draws is None else draws
        reused = {i: self._reused_alone(ex, draws[i]) for i, ex in enumerate(batch)
                  if draws[i] is not None and draws[i].graph.alone and ex.id in self.alone_records}
        if reused:
            rest = [i for i in range(len(batch)) if i not in reused]
            ran = self._run_batch([batch[i] for i in rest], [draws[i] for i in rest]) if rest else []
            records = dict(zip(rest, ran)) | reused
            return [records[i] for i in range(len(batch))]
        samples = self.cfg.samples
        traces: list[list] = [[] for _ in batch]
        seconds = [0.0] * len(batch)
        groups = [[i for i in members for _ in range(samples)]  # a question's samples are rows of one batch
                  for members in C.group_by_graph(draws)]
        results = self._run_together(draws, batch, groups) if len(groups) > 1 else None
        if results is None:
            results = [row for rows in groups for row in self._run_rows(draws, batch, rows)]
        for i, trace, per_question in results:
            traces[i].append(trace)
            seconds[i] = per_question
        return [self._record(ex, traces[i], seconds[i], draws[i].graph if draws[i] is not None else None)
                for i, ex in enumerate(batch)]

    def _reused_alone(self, ex, draw) -> dict:
        """The ``--alone-from`` single run's record of ``ex``, as this run's answer-alone record."""
        record = dict(self.alone_records[ex.id])
        record.update(graph=draw.graph.to_dict(), alone=True, reused_from=self.cfg.alone_from)
        return record

    def _run_together(self, draws, batch, groups: list[list[int]]) -> list[tuple[int, object, float]] | None:
        """Every group's rows in one :meth:`GraphExecutor.run_many`; None when some row does not fit the context."""
        jobs = []
        for rows in groups:
            plan, soft = C.plan_for(self.cfg, self.team, [draws[i] for i in rows])
            jobs.append((plan, [batch[i].question for i in rows], soft))
        t0 = time.perf_counter()
        try:
            outputs = self.executor.run_many(jobs)
        except ContextOverflowError:
            return None
        per_question = (time.perf_counter() - t0) / len({i for rows in groups for i in rows})
        return [(i, trace, per_question) for rows, traces in zip(groups, outputs) for i, trace in zip(rows, traces)]

    def _run_rows(self, draws, batch, rows: list[int]) -> list[tuple[int, object, float]]:
        """``(question, trace, seconds per question)`` per row; a question that does not fit is its own error.

        The rows share one graph. When some rows do not fit the context, every row of their questions is recorded
        as that error and the others run again as a batch of their own (a batch shares its padding, not its
        results).
        """
        plan, soft = C.plan_for(self.cfg, self.team, [draws[i] for i in rows])
        t0 = time.perf_counter()
        try:
            with torch.no_grad():
                outputs = self.executor.run(plan, [batch[i].question for i in rows], soft)
        except ContextOverflowError as err:
            why: dict[int, str] = {}
            for k in err.rows:
                why.setdefault(rows[k], f"does not fit: {err.row_message(k)}")
            for i, message in why.items():
                logger.warning("question %s %s", batch[i].id, message)
            failed = [(i, RowTrace(error=why[i]), 0.0) for i in rows if i in why]
            keep = [i for i in rows if i not in why]
            return failed + (self._run_rows(draws, batch, keep) if keep else [])
        per_question = (time.perf_counter() - t0) / len(set(rows))
        return [(i, trace, per_question) for i, trace in zip(rows, outputs)]

    def _score(self, ex, trace) -> dict:
        if trace.error is not None:
            missed = {"prediction": None, "correct": False}
            return {**missed, "scores": {name: dict(missed) for name in self.task.filters}}
        return self.task.score(trace.final_text or "", ex)

    def _record(self, ex, traces: list, seconds: float, graph) -> dict:
        """One question's record: the first sample's answer on top, every sample's scores counted per pipeline."""
        scored = [self._score(ex, t) for t in traces]
        first, trace = scored[0], traces[0]
        scores = {}
        for name, primary in first["scores"].items():
            scores[name] = dict(primary)
            if len(scored) > 1:
                scores[name].update(n_samples=len(scored), n_correct=sum(s["scores"][name]["correct"] for s in scored))
        record = {
            "id": ex.id,
            "question": ex.question,
            "gold": ex.answer,
            "prediction": first["prediction"],
            "correct": bool(first["correct"]),
            "scores": scores,
            "output": trace.final_text,
            "prompt_tokens": sum(t.prompt_tokens for t in traces),
            "completion_tokens": sum(t.completion_tokens for t in traces),
            "latent_steps": sum(t.latent_steps for t in traces),
            "seconds": round(seconds, 4),
            "error": next((t.error for t in traces if t.error is not None), None),
        }
        if "status" in first:
            record["status"] = first["status"]
        if len(traces) > 1:
            record["samples"] = [{"output": t.final_text, "prediction": s["prediction"], "correct": s["correct"],
                                  "error": t.error} for t, s in zip(traces, scored)]
        if any(t.api_sent for t in traces):
            record.update(api_prompt_tokens=sum(t.api_prompt_tokens for t in traces),
                          api_completion_tokens=sum(t.api_completion_tokens for t in traces),
                          api_sent=trace.api_sent)
            record["api_cost_usd"] = self.prices.cost(self.api.settings.model, record["api_prompt_tokens"],
                                                      record["api_completion_tokens"])
        output = trace.final_text or ""
        record["diagnostics"] = {
            "truncated": trace.truncated,
            "empty": trace.error is None and not output.strip(),
            "echoed": is_echo(output, self.task.answer_instruction),
            "judge_stop_prob": trace.judge_stop_prob,
            "latent_top_tokens": trace.latent_top_tokens,
        }
        if len(trace.node_texts) > 1:
            record["agent_outputs"] = trace.node_texts
        if trace.voters:  # a majority vote: every vote's answer, in voting order (maj@k for any k <= votes)
            record["votes"] = []
            for label in trace.voters:
                vote = self.task.score(trace.node_texts.get(label, ""), ex)
                record["votes"].append({"node": label, "prediction": vote["prediction"],
                                        "correct": bool(vote["correct"]),
                                        "completion_tokens": trace.node_tokens.get(label, 0)})
        if graph is not None:
            record["graph"] = graph.to_dict()
            if graph.reads is not None:  # the policy chose whom the decision node reads; () is the single agent
                record["alone"] = graph.alone
        return record

    def _metrics(self, records: list[dict]) -> dict:
        """Per pipeline: the task's metrics (pass@k for every k the samples allow), counts and a Wilson interval."""
        names = list(dict.fromkeys([*self.task.metrics, *(f"pass@{k}" for k in (1, 5, 10) if k <= self.cfg.samples
                                                          and self.task.domain == "code")]))
        metrics = {}
        for name in self.task.filters:
            per_question = [r["scores"][name] if "scores" in r else {"correct": r["correct"]} for r in records]
            acc = accuracy(per_question)  # the aggregation gcache report and the benchmarks use
            metrics[name] = {**(compute_metrics(per_question, names) if acc.n else {}), "correct": acc.correct,
                             "n": acc.n, "accuracy": acc.rate, "ci95": [round(acc.low, 4), round(acc.high, 4)]}
        return metrics

    def summary(self, write: bool = True) -> dict:
        """Totals over every finished question in ``--out`` (all shards' parts); written to summary.json."""
        cfg = self.cfg
        records = self.store.records()
        ids = {ex.id for ex in self.examples}
        records = [r for r in records if r["id"] in ids]
        n = len(records)
        correct = sum(r["correct"] for r in records)
        errors = sum(r.get("error") is not None for r in records)

        def total(key: str) -> float:
            return sum(r.get(key) or 0 for r in records)

        metrics = self._metrics(records)
        summary = {
            "method": cfg.method,
            "dataset": cfg.dataset,
            "task_version": self.task.version,
            "accuracy": correct / n if n else 0.0,
            "accuracy_filter": self.task.primary_filter,
            "accuracy_strict": metrics["strict"]["accuracy"],
            "metrics": metrics,
            "counts": {"questions": len(self.examples), "answered": n, "correct": correct, "errors": errors},
            "totals": {
                "prompt_tokens": total("prompt_tokens"),
                "completion_tokens": total("completion_tokens"),
                "latent_steps": total("latent_steps"),
                "seconds": round(total("seconds"), 3),
                "api_prompt_tokens": total("api_prompt_tokens"),
                "api_completion_tokens": total("api_completion_tokens"),
                "api_cost_usd": total("api_cost_usd"),
            },
            "per_question": {
                "seconds": round(total("seconds") / n, 4) if n else None,
                "completion_tokens": total("completion_tokens") / n if n else None,
            },
            "subset": self._subset(),
            "decoding": {"temperature": cfg.temperature, "top_p": cfg.top_p, "max_new_tokens": cfg.max_new_tokens,
                         "greedy": cfg.temperature == 0, "samples_per_question": cfg.samples,
                         "batch_size": cfg.batch_size},
            "seeds": [cfg.seed],
            "latent": {"latent_steps": cfg.latent_steps, "realign": cfg.realign, "message": cfg.message,
                       "zero_latent_steps": cfg.zero_latent_steps if cfg.latent_steps == 0 else None},
            "eval_graph": cfg.eval_graph if cfg.learned else None,
            "answered_alone": share_alone(records),
            "diagnostics": diagnostics_summary(records),
            "config": cfg.to_dict(),
            "identity": self.identity,
            "provenance": provenance({"seed": cfg.seed}),
        }
        voted = [r for r in records if r.get("votes")]
        if voted and len(voted) == n:  # maj@k and its generated tokens per question, for every k up to the votes
            k_max = min(len(r["votes"]) for r in voted)
            summary["majority"] = {f"maj@{k}": {"accuracy": sum(majority_at(r, k) for r in voted) / n,
                                                "completion_tokens": sum(majority_tokens_at(r, k) for r in voted) / n}
                                   for k in range(1, k_max + 1)}
        if self.task.domain == "code":
            summary["sandbox"] = self._sandbox
        if write:
            write_summary(self.out, summary, secrets=self.secrets)
        return summary

    def _subset(self) -> dict:
        """Which questions these are: the full split, or the first ``--limit`` of it (named, never implied)."""
        cfg = self.cfg
        source = cfg.data or f"hf://{self.task.hub_name}"
        limited = cfg.limit is not None and len(self.examples) >= cfg.limit
        name = (f"the first {cfg.limit} questions of {cfg.dataset} {cfg.split} (--limit {cfg.limit})" if limited
                else f"the full {cfg.dataset} {cfg.split} split ({len(self.examples)} questions)")
        return {"split": cfg.split, "source": source, "limit": cfg.limit, "full_split": not limited,
                "questions": len(self.examples), "name": name}

    @functools.cached_property
    def _sandbox(self) -> dict:
        """The protections the code checks ran with (probed once per run)."""
        return sandbox_report(getattr(self.task, "limits", None))

    def cleanup(self) -> None:
        self.engine = None
        self.dist.cleanup()
