"""Training throughput: the previous training loop against ``TrainRecipe``'s batched one, in one run.

    python benchmarks/train_throughput.py --model smollm2 --batch-size 8 --steps 2

The previous loop (gcache 0.1.0 as of 2026-11-27, recreated here from the same components) ran every question of
a batch alone and every graph twice: a rollout without gradients (decoding the answer, utility 1 if correct),
then the gold-answer NLL pass through every node again (here with gradients at the decision node only, as
``--fuser-grad decision``: through every node, a batch of 8 SmolLM2 rows holds about 17 GB of activations). ``TrainRecipe`` runs the questions that
draw the same graph as one batch and scores the gold answer and decodes from one prefill of the decision node.
Rows, all on the same training questions, one after the other in this process:

* ``previous loop`` (K = 1, utility correct, the NLL pass re-running every node);
* ``batched, same settings`` (K = 1, ``--utility correct``: one pass, then the answers of every graph decoded as
  one batch);
* ``batched, K = 1, loglik`` (one graph per question as before, the default dense utility: one pass and no
  decoding; the rollout and the NLL pass have become the same pass);
* ``batched, defaults`` (K = 4 graphs per question, ``--utility loglik``).

Prints seconds per question and per graph, and the speed-up over the previous loop.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time

import torch

from gcache.config import RunConfig
from gcache.recipes import _components as C
from gcache.recipes.train import TrainRecipe, answer_target
from gcache.training.reinforce import reinforce_loss


def previous_step(recipe: TrainRecipe, batch, step: int) -> None:
    """One step of the previous loop: per question, a no-grad rollout, then the NLL pass through every node."""
    cfg = recipe.cfg
    recipe.team.train()
    recipe.optimizer.zero_grad(set_to_none=True)
    log_probs, utilities, nll_terms = [], [], []
    for ex in batch:
        for draw in recipe.draw_graphs([ex], step)[0]:
            plan, soft = C.plan_for(cfg, recipe.team, [draw])
            with torch.no_grad():
                trace = recipe.executor.run(plan, [ex.question], soft)[0]
            utilities.append(float(recipe.task.score(trace.final_text or "", ex)["correct"]))
            log_probs.append(draw.log_prob)
            nll_terms.append(recipe.executor.answer_nll(plan, [ex.question], [answer_target(recipe.task, ex)], soft,
                                                        through_graph=False).mean())
    loss = reinforce_loss(torch.stack(log_probs), utilities, 0.0) + torch.stack(nll_terms).mean()
    loss.backward()
    recipe.optimizer.step()


def timed(label: str, recipe: TrainRecipe, steps: int, previous: bool) -> tuple[str, float, int, int]:
    t0 = time.perf_counter()
    questions = graphs = 0
    for step in range(steps):
        batch = recipe._batch(step)
        if previous:
            previous_step(recipe, batch, step)
        else:
            recipe.train_step(batch)
        questions += len(batch)
        graphs += len(batch) * recipe.cfg.samples_per_question
    return label, time.perf_counter() - t0, questions, graphs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2")
    p.add_argument("--data", default="../shared/data/gsm8k/train.jsonl")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--latent-steps", type=int, default=4)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    common = dict(method="gcache", model=args.model, data=args.data, split="train", limit=args.batch_size * args.steps,
                  batch_size=args.batch_size, steps=args.steps, max_new_tokens=args.max_new_tokens,
                  latent_steps=args.latent_steps, tensorboard=False)
    rows = []
    same = dict(samples_per_question=1, baseline="ma", utility="correct")
    one_pass = dict(samples_per_question=1, baseline="ma", utility="loglik")
    for label, extra, previous in (("previous loop", same, True), ("batched, same settings", same, False),
                                   ("batched, K=1, loglik", one_pass, False),
                                   ("batched, defaults (K=4, loglik)", {}, False)):
        recipe = TrainRecipe(RunConfig(out=tempfile.mkdtemp(prefix="gcache-throughput-"), **common, **extra))
        recipe.setup()
        rows.append(timed(label, recipe, args.steps, previous))
        recipe.cleanup()
    base = rows[0][1] / rows[0][2]
    print(f"{args.model}, batch {args.batch_size}, {args.steps} steps, {args.max_new_tokens} new tokens, "
          f"{args.latent_steps} latent steps, torch threads {torch.get_num_threads()}\n")
    print("| loop | s / question | s / graph | questions / s vs previous |\n|---|---:|---:|---:|")
    for label, seconds, questions, graphs in rows:
        print(f"| {label} | {seconds / questions:.2f} | {seconds / graphs:.2f} | {base / (seconds / questions):.2f}x |")


if __name__ == "__main__":
    main()
