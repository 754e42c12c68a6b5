"""Is a trained G-cache team ever worse than one agent, and is it better? G-cache against every baseline on held-out
GSM8K questions.

One command, resumable (each row is a ``gcache eval`` folder under ``--out``; training resumes from its last step):

    OMP_NUM_THREADS=1 python benchmarks/gcache_vs_baselines.py --model qwen2.5-coder-0.5b --test 300 --train 64 \\
        --steps 8 --out runs/vs_baselines

Protocol: ``gcache train`` reads the first ``--train`` questions of GSM8K's *train* split only (utility: the decoded
answer is right, K graphs per question, leave-one-out baseline); every row is evaluated on the same first ``--test``
questions of the *test* split (the checkpoint records its training questions and evaluation refuses any overlap).
Nothing is tuned on the test questions. Rows:

* ``single``: one solver, greedy;
* ``self_consistency``: ``--votes`` solver answers sampled at ``--sc-temperature`` / ``--sc-top-p`` and
  majority-voted; the table shows SC@k for every k up to the votes from this one run (the first k votes of
  independent samples are a k-vote run);
* ``text_chain``: planner -> critic -> refiner -> judger passing text; ``latentmas_seq``: the LatentMAS sequential
  team passing KV-caches of latent thoughts;
* ``gcache (untrained)``: the initial policy (it answers alone with probability ``--alone-prob``), a neutral fuser;
* ``gcache (trained)``: after ``--steps`` steps of ``gcache train``;
* ``gcache (team read, untrained)``: the initial policy with ``--alone-prob 0.01``, so that its decision node reads
  its agents (with a neutral fuser): not a method to use, but the other side of the choice the policy makes, whose
  oracle gating with ``single`` says how much a policy that picks per question could gain at most.

Learned rows run the seeded sample of their policy per question; a question their policy answers alone takes the
``single`` row's record (``gcache eval --alone-from``: the same plan, prompt and greedy answer, tested bit for bit),
so a G-cache row costs only the questions it answers as a team. Columns: accuracy with a Wilson 95% interval;
paired wins/losses with the exact sign test against ``single`` and against self-consistency at matched generated
tokens (the SC@k whose tokens per question are nearest the row's); the oracle of per-question gating between
``single`` and the row (right when either is: what choosing per question could reach at best); the share of
questions answered alone; generated tokens, latent steps and seconds per question; diagnostics. Every number
comes from :mod:`gcache.scoring.aggregation`, the code ``gcache eval``'s summary uses. Writes ``OUT/table.md``.

``--export DIR`` writes what the table rests on: each row's records gzipped, the table, the training history and
convergence, and the trained team (``DIR/team``: safetensors weights, config.json and model card; ``gcache eval
--checkpoint DIR/team`` re-evaluates it).

Several machines or cores: ``--shard i/n`` runs every n-th test question of each row into the same ``OUT`` (see
docs/scale-out.md). Shards only evaluate: train first (this script without ``--shard``).
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import shutil
from pathlib import Path

from gcache.config import ConfigError, RunConfig
from gcache.io import ResultStore
from gcache.recipes import _components as C
from gcache.recipes.eval import EvalRecipe
from gcache.recipes.train import TrainRecipe
from gcache.scoring.aggregation import (accuracy, majority_at, majority_tokens_at, oracle, paired,
                                        share_alone)
from gcache.training import checkpointing

ROWS = ("single", "self_consistency", "text_chain", "latentmas_seq", "gcache_untrained", "gcache_trained",
        "gcache_team")
LABELS = {"gcache_untrained": "gcache (untrained)", "gcache_trained": "gcache (trained)",
          "gcache_team": "gcache (team read, untrained)"}


def row_config(row: str, args, out: Path) -> RunConfig:
    method = {"gcache_untrained": "gcache", "gcache_trained": "gcache", "gcache_team": "gcache"}.get(row, row)
    common = dict(model=args.model, data=args.test_data, split="test", limit=args.test, batch_size=args.batch_size,
                  max_new_tokens=args.max_new_tokens, latent_steps=args.latent_steps, seed=args.seed,
                  shard=args.shard, out=str(out / row))
    if row.startswith("gcache") and args.reuse_single and (out / "single" / "config.json").is_file():
        common["alone_from"] = str(out / "single")  # answer-alone questions take single's record (exact)
    if row == "gcache_trained":
        return RunConfig(method=method, checkpoint=str(out / "train"), **common)
    if row == "gcache_untrained":
        return RunConfig(method=method, alone_prob=args.alone_prob, **common)
    if row == "gcache_team":  # the team the policy could choose to read: what gating between it and single could win
        return RunConfig(method="gcache", alone_prob=0.01, **common)
    if row == "self_consistency":
        return RunConfig(method=method, votes=args.votes, temperature=args.sc_temperature, top_p=args.sc_top_p,
                         **common)
    return RunConfig(method=method, **common)


def train_config(args, out: Path) -> RunConfig:
    return RunConfig(method="gcache", model=args.model, data=args.train_data, split="train", limit=args.train,
                     batch_size=args.batch_size, steps=args.steps, samples_per_question=args.samples,
                     max_new_tokens=args.max_new_tokens, latent_steps=args.latent_steps, seed=args.seed,
                     alone_prob=args.alone_prob, out=str(out / "train"))


def run_row(cfg: RunConfig) -> None:
    recipe = EvalRecipe(cfg)
    try:
        recipe.setup()
        recipe.run()
    finally:
        recipe.cleanup()


def load_rows(out: Path) -> dict[str, list[dict]]:
    rows = {row: list(ResultStore(out / row).load().values()) for row in ROWS if (out / row).is_dir()}
    return {row: recs for row, recs in rows.items() if recs}


def sc_rows(records: list[dict]) -> dict[str, list[dict]]:
    """SC@k for every k the votes allow, as records of their own (``correct`` and ``completion_tokens`` of the
    first k votes)."""
    k_max = min(len(r["votes"]) for r in records)
    return {f"SC@{k}": [{**r, "correct": majority_at(r, k), "completion_tokens": majority_tokens_at(r, k)}
                        for r in records] for k in range(1, k_max + 1)}


def _mean(records: list[dict], key: str) -> float:
    return sum(r.get(key) or 0 for r in records) / len(records)


def table(out: Path, n_test: int) -> str:
    rows = load_rows(out)
    shown: dict[str, list[dict]] = {}
    for row, recs in rows.items():
        if row == "self_consistency":
            shown.update(sc_rows(recs))
        else:
            shown[LABELS.get(row, row)] = recs
    base = rows.get("single", [])
    sc = {k: v for k, v in shown.items() if k.startswith("SC@")}
    lines = ["| method | n | accuracy | Wilson 95% | vs single: W / L (p) | vs SC at matched tokens: W / L (p) "
             "| oracle(single, row) | answered alone | generated tokens / q | latent steps / q | s / q | cut at cap "
             "| empty |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, recs in shown.items():
        acc = accuracy(recs)
        tokens = _mean(recs, "completion_tokens")
        vs_single = "—" if label == "single" or not base else _paired(recs, base)
        gate = "—" if label == "single" or not base else f"{oracle(base, recs).rate:.3f}"
        matched = "—"
        if sc and not label.startswith("SC@"):
            k = min(sc, key=lambda name: abs(_mean(sc[name], "completion_tokens") - tokens))
            matched = f"{k}: {_paired(recs, sc[k])}"
        alone = share_alone(recs)
        diag = [r.get("diagnostics") or {} for r in recs]
        lines.append(
            f"| {label} | {acc.n}{'' if acc.n == n_test else f' of {n_test}'} | {acc.rate:.3f} ({acc.correct}/{acc.n}) "
            f"| [{acc.low:.3f}, {acc.high:.3f}] | {vs_single} | {matched} | {gate} | "
            f"{'—' if alone is None else f'{alone:.2f}'} | {tokens:.1f} | {_mean(recs, 'latent_steps'):.1f} | "
            f"{_mean(recs, 'seconds') if not label.startswith('SC@') else _mean(rows['self_consistency'], 'seconds'):.1f}"
            f" | {sum(bool(d.get('truncated')) for d in diag)} | {sum(bool(d.get('empty')) for d in diag)} |")
    return "\n".join(lines) + "\n" + _training_note(out)


def _paired(first: list[dict], second: list[dict]) -> str:
    p = paired(first, second)
    return f"{p.wins} / {p.losses} ({p.p:.2g})"


def _training_note(out: Path) -> str:
    path = out / "train" / "convergence.json"
    if not path.is_file():
        return ""
    conv = json.loads(path.read_text())
    groups = ", ".join(f"{g} {r:.2f}" for g, r in conv["groups"].items())
    return (f"\nTraining {'converged' if conv['converged'] else 'did NOT converge'}: mean Adam step ratio over the "
            f"last {conv['window']} steps (1 = still moving at full rate; converged below {conv['threshold']}): "
            f"{groups}.\n")


def export(out: Path, dest: Path) -> None:
    """Write what the table rests on into ``dest``: records (gzipped), table, training history, team weights."""
    dest.mkdir(parents=True, exist_ok=True)
    for row, recs in load_rows(out).items():
        with gzip.open(dest / f"{row}.jsonl.gz", "wt", encoding="utf-8") as f:
            for r in sorted(recs, key=lambda r: r["id"]):
                f.write(json.dumps(r) + "\n")
    shutil.copyfile(out / "table.md", dest / "table.md")
    train = out / "train"
    for name in ("history.json", "convergence.json"):
        if (train / name).is_file():
            shutil.copyfile(train / name, dest / name)
    team = train / checkpointing.TEAM_DIR
    if team.is_dir():  # safetensors weights, config.json and the model card: loads with --checkpoint DIR/team
        shutil.copytree(team, dest / "team", dirs_exist_ok=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="qwen2.5-coder-0.5b")
    p.add_argument("--train-data", default="../shared/data/gsm8k/train.jsonl")
    p.add_argument("--test-data", default="../shared/data/gsm8k/test.jsonl")
    p.add_argument("--train", type=int, default=64, help="training questions (first N of the train split)")
    p.add_argument("--test", type=int, default=300, help="test questions (first N of the test split)")
    p.add_argument("--steps", type=int, default=8,
                   help="training steps (8 steps of --batch-size 8: one pass over 64 training questions)")
    p.add_argument("--samples", type=int, default=4, help="graphs per training question")
    p.add_argument("--alone-prob", type=float, default=0.75, help="the untrained policy's P(answer alone)")
    p.add_argument("--votes", type=int, default=5, help="self-consistency votes (SC@1 .. SC@votes from one run)")
    p.add_argument("--sc-temperature", type=float, default=0.7)
    p.add_argument("--sc-top-p", type=float, default=0.95)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--latent-steps", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rows", nargs="*", default=list(ROWS), choices=ROWS, help="rows to run (default all)")
    p.add_argument("--table-only", action="store_true", help="print the table of what has run, run nothing")
    p.add_argument("--out", default="runs/vs_baselines")
    p.add_argument("--export", help="folder to write the records (gzipped), table and trained team into")
    p.add_argument("--shard", help="i/n: this process's share of every row's test questions (evaluation only)")
    p.add_argument("--no-reuse-single", dest="reuse_single", action="store_false",
                   help="run the G-cache rows' answer-alone questions again instead of taking single's records "
                        "(gcache eval --alone-from; exact either way)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
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
                try:
                    trainer.setup()
                    trainer.train()
                finally:
                    trainer.cleanup()
            run_row(row_config(row, args, out))
    text = table(out, args.test)
    (out / "table.md").write_text(text)
    print(text)
    if args.export:
        export(out, Path(args.export))


if __name__ == "__main__":
    main()
