"""Does a learned graph with a trained CacheFuser beat fixed teams? G-cache against every baseline on held-out GSM8K.

One command, resumable (each row is a ``gcache eval`` folder under ``--out``; training resumes from its last step):

    python benchmarks/gcache_vs_baselines.py --model qwen2.5-coder-0.5b --test 100 --train 64 --steps 8 \\
        --out runs/vs_baselines

Protocol: ``gcache train`` reads the first ``--train`` questions of GSM8K's *train* split only; every row is
evaluated on the same first ``--test`` questions of the *test* split (the checkpoint records its training questions
and evaluation refuses any overlap). Nothing is tuned on the test questions. Rows:

* ``single``: one solver; ``text_chain``: planner -> critic -> refiner -> judger passing text;
* ``latentmas_seq``: the LatentMAS sequential team passing KV-caches of latent thoughts;
* ``gdesigner``: the G-Designer text graph of the prompt set's four roles, initial (untrained) GNN, local model;
* ``gcache (untrained)``: the same initial graph policy, latent agents, a neutral fuser (exact concatenation);
* ``gcache (trained)``: after ``--steps`` steps of ``gcache train``.

Learned rows run the seeded sample of their policy per question (``--eval-graph sample``, as G-Designer evaluates).
Columns: accuracy with a Wilson 95% interval, wins/losses against ``single`` on the same questions, generated
tokens, latent steps and seconds per question, and the diagnostics (answers cut at the token cap, empty, echoing the
prompt; the answering agent's mean first-step probability of ending its turn). A second table gives the held-out
gold-answer NLL of the untrained and trained G-cache teams. Writes ``OUT/table.md``.

Several machines: ``--shard i/n`` runs every n-th test question of each row into the same ``OUT`` (see
docs/scale-out.md). Shards only evaluate: train first (this script without ``--shard``, or ``gcache train`` under
torchrun into ``OUT/train``); the held-out NLL table comes from a final run without ``--shard``, which finds every
row done and computes only that.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path

import torch

from gcache.config import ConfigError, RunConfig
from gcache.io import ResultStore
from gcache.recipes import _components as C
from gcache.recipes.eval import EvalRecipe
from gcache.recipes.train import TrainRecipe, answer_target
from gcache.training import checkpointing
from gcache.training.team import seeded_generator

ROWS = ("single", "latentmas_seq", "gcache_untrained", "gcache_trained", "text_chain", "gdesigner")
LABELS = {"gcache_untrained": "gcache (untrained)", "gcache_trained": "gcache (trained)"}


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score 95% interval of a proportion ``k / n``."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def row_config(row: str, args, out: Path) -> RunConfig:
    method = {"gcache_untrained": "gcache", "gcache_trained": "gcache"}.get(row, row)
    common = dict(model=args.model, data=args.test_data, split="test", limit=args.test, batch_size=args.batch_size,
                  max_new_tokens=args.max_new_tokens, latent_steps=args.latent_steps, seed=args.seed,
                  shard=args.shard, out=str(out / row))
    if row == "gcache_trained":
        return RunConfig(method=method, checkpoint=str(out / "train"), **common)
    return RunConfig(method=method, **common)


def train_config(args, out: Path) -> RunConfig:
    return RunConfig(method="gcache", model=args.model, data=args.train_data, split="train", limit=args.train,
                     batch_size=args.batch_size, steps=args.steps, samples_per_question=args.samples,
                     max_new_tokens=args.max_new_tokens, latent_steps=args.latent_steps, seed=args.seed,
                     out=str(out / "train"))


def run_row(cfg: RunConfig) -> None:
    recipe = EvalRecipe(cfg)
    recipe.setup()
    recipe.run()
    recipe.cleanup()


def heldout_nll(cfg: RunConfig) -> float:
    """Mean gold-answer NLL at the decision node over the row's questions, on the graphs evaluation ran."""
    recipe = EvalRecipe(cfg)
    recipe.setup()
    if getattr(recipe, "executor", None) is None:  # a finished folder: setup loaded no model
        recipe._build_agents(C.load_prompt_set(cfg))
    total = 0.0
    with torch.no_grad():
        for ex in recipe.examples:
            draw = recipe.team.draw(ex.question, [seeded_generator(cfg.seed, "eval-graph")], cfg.eval_graph)[0]
            plan, soft = C.plan_for(cfg, recipe.team, [draw])
            total += float(recipe.executor.answer_nll(plan, [ex.question], [answer_target(recipe.task, ex)], soft,
                                                      through_graph=False).mean())
    return total / len(recipe.examples)


def load_rows(out: Path) -> dict[str, dict[str, dict]]:
    return {row: ResultStore(out / row).load() for row in ROWS if (out / row).is_dir()}


def table(out: Path, n_test: int, nll: dict[str, float]) -> str:
    rows = load_rows(out)
    base = rows.get("single", {})
    lines = ["| method | n | accuracy | Wilson 95% | wins / losses vs single | generated tokens / q | latent steps / q "
             "| s / q | cut at cap | empty | echoed | judge p(stop) at step 1 |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in ROWS:
        if row not in rows:
            continue
        recs = list(rows[row].values())
        n = len(recs)
        if not n:  # started, nothing finished yet
            continue
        k = sum(r["correct"] for r in recs)
        lo, hi = wilson(k, n)
        paired = [(r["correct"], base[i]["correct"]) for i, r in rows[row].items() if i in base]
        wins = sum(a and not b for a, b in paired)
        losses = sum(b and not a for a, b in paired)
        mean = lambda key: sum(r.get(key) or 0 for r in recs) / n  # noqa: E731
        diag = [r.get("diagnostics") or {} for r in recs]
        stop = [d["judge_stop_prob"] for d in diag if d.get("judge_stop_prob") is not None]
        count = lambda key: sum(bool(d.get(key)) for d in diag)  # noqa: E731
        lines.append(
            f"| {LABELS.get(row, row)} | {n}{'' if n == n_test else f' of {n_test}'} | {k / n:.3f} ({k}/{n}) | "
            f"[{lo:.3f}, {hi:.3f}] | {'—' if row == 'single' else f'{wins} / {losses}'} | "
            f"{mean('completion_tokens'):.1f} | {mean('latent_steps'):.1f} | {mean('seconds'):.1f} | "
            f"{count('truncated')} | {count('empty')} | {count('echoed')} | "
            f"{f'{sum(stop) / len(stop):.3f}' if stop else '—'} |")
    if nll:
        lines += ["", "| gcache team | held-out gold-answer NLL (mean over the test questions) |", "|---|---:|"]
        lines += [f"| {LABELS[k]} | {v:.4f} |" for k, v in nll.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="qwen2.5-coder-0.5b")
    p.add_argument("--train-data", default="../shared/data/gsm8k/train.jsonl")
    p.add_argument("--test-data", default="../shared/data/gsm8k/test.jsonl")
    p.add_argument("--train", type=int, default=64, help="training questions (first N of the train split)")
    p.add_argument("--test", type=int, default=100, help="test questions (first N of the test split)")
    p.add_argument("--steps", type=int, default=8,
                   help="training steps (8 steps of --batch-size 8: one pass over 64 training questions)")
    p.add_argument("--samples", type=int, default=4, help="graphs per training question")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--latent-steps", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rows", nargs="*", default=list(ROWS), choices=ROWS, help="rows to run (default all)")
    p.add_argument("--table-only", action="store_true", help="print the table of what has run, run nothing")
    p.add_argument("--out", default="runs/vs_baselines")
    p.add_argument("--shard", help="i/n: this machine's share of every row's test questions (evaluation only)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    nll_path = out / "heldout_nll.json"
    nll = json.loads(nll_path.read_text()) if nll_path.is_file() else {}
    if not args.table_only:
        for row in args.rows:
            if row == "gcache_trained" and args.shard:
                team = out / "train" / checkpointing.TEAM_DIR  # its config.json says how far it was trained
                try:
                    steps = checkpointing.load_team(team).step
                except ConfigError:
                    steps = 0
                if steps < args.steps:
                    p.error(f"--shard only evaluates: train {team.parent} to {args.steps} steps first (this script "
                            "without --shard, or gcache train under torchrun)")
            elif row == "gcache_trained":
                trainer = TrainRecipe(train_config(args, out))
                trainer.setup()
                trainer.train()
                trainer.cleanup()
            run_row(row_config(row, args, out))
            if row.startswith("gcache") and row not in nll and not args.shard:
                value = heldout_nll(row_config(row, args, out))
                # re-read: another invocation (``--rows``) may have written its row meanwhile
                nll = json.loads(nll_path.read_text()) if nll_path.is_file() else {}
                nll[row] = value
                nll_path.write_text(json.dumps(nll, indent=1))
    text = table(out, args.test, nll)
    (out / "table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
