"""Does the CacheFuser learn? Train gcache on N GSM8K training questions, then compare the gold-answer NLL on M
held-out test questions with the neutral fuser (plain concatenation) and the trained one.

    python benchmarks/fuser_learning.py --model smollm2 --train-data ../shared/data/gsm8k/train.jsonl \\
        --test-data ../shared/data/gsm8k/test.jsonl --train 40 --test 40

The topology is the learned one, evaluated deterministically (edges with p > 0.5) for the NLL comparison, so
both fusers see the same graph per question; prints the two mean NLLs and the learned edge probabilities.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
import tempfile

import torch

from gcache.config import RunConfig
from gcache.recipes import _components as C
from gcache.recipes.train import TrainRecipe, answer_target


def heldout_nll(recipe: TrainRecipe, examples, neutral: bool) -> float:
    team, executor = recipe.team, recipe.executor
    saved = team.fuser.mode
    team.fuser.mode = "concat" if neutral else "bias"
    total = 0.0
    with torch.no_grad():
        for ex in examples:
            graph, _, _ = team.graph_for(ex.question, deterministic=True)
            plan, _ = C.plan_for(recipe.cfg, team, graph)
            total += float(executor.answer_nll(plan, [ex.question], [answer_target(recipe.task, ex)],
                                               through_graph=False).mean())
    team.fuser.mode = saved
    return total / len(examples)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2")
    p.add_argument("--train-data", default="../shared/data/gsm8k/train.jsonl")
    p.add_argument("--test-data", default="../shared/data/gsm8k/test.jsonl")
    p.add_argument("--train", type=int, default=40)
    p.add_argument("--test", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--latent-steps", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--agents", type=int, default=4)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = args.out or tempfile.mkdtemp(prefix="gcache-fuser-")
    steps = args.epochs * -(-args.train // args.batch_size)
    cfg = RunConfig(method="gcache", data=args.train_data, split="train", limit=args.train, out=out, model=args.model,
                    batch_size=args.batch_size, steps=steps, lr=args.lr, latent_steps=args.latent_steps,
                    max_new_tokens=args.max_new_tokens, agents=args.agents)
    recipe = TrainRecipe(cfg)
    recipe.setup()
    test = recipe.task.load(args.test_data, split="test", limit=args.test)
    before = heldout_nll(recipe, test, neutral=True)
    recipe.train()
    neutral, trained = heldout_nll(recipe, test, neutral=True), heldout_nll(recipe, test, neutral=False)
    print(f"| fuser | held-out gold-answer NLL ({len(test)} GSM8K test questions) |\n|---|---:|")
    print(f"| neutral (concatenation) | {neutral:.4f} |\n| trained ({steps} steps on {args.train} train questions) | {trained:.4f} |")
    assert abs(before - neutral) < 1e-6, "the neutral fuser must not depend on training"
    probs = recipe.team.edge_probabilities([ex.question for ex in test])
    names = [f"{a}#{i}" for i, a in enumerate(recipe.team.agents)]
    print("\nlearned spatial edge probabilities (mean over the test questions), row -> column:")
    print("| from \\ to | " + " | ".join(names) + " |\n|---|" + "---:|" * len(names))
    for i, row in enumerate(probs.spatial.tolist()):
        print(f"| {names[i]} | " + " | ".join(f"{x:.3f}" for x in row) + " |")
    fuser = recipe.team.fuser
    print("\nfuser gates log σ(g_l): " + ", ".join(f"{x:.3f}" for x in torch.nn.functional.logsigmoid(fuser.gates).tolist()))
    print(f"history: {Path(out) / 'history.json'}")


if __name__ == "__main__":
    main()
