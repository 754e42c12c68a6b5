"""single vs text_chain vs latentmas_seq on the same GSM8K questions: time, tokens, latent steps, accuracy.

    python benchmarks/compare_methods.py --model smollm2 --limit 8 --data ../shared/data/gsm8k/test.jsonl

Each method runs through ``gcache eval`` (same batch size, decoding cap and questions), so the numbers are what a
user gets. Accuracy (with its Wilson 95% interval) and the paired wins/losses against ``single`` (exact sign test)
come from :mod:`gcache.scoring.aggregation` over each run's ``results.jsonl``, the code ``gcache report`` uses.
Prints a table and the latentmas_seq / text_chain ratios; writes the runs under ``--out``.

``--shard i/n`` (with ``--out``) runs every n-th question of each method, for one machine of several; the shards
fill the same folders, and each prints the table of whatever is done so far (the last one: all of it).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

from gcache.cli import main as gcache_main
from gcache.io import ResultStore
from gcache.scoring.aggregation import accuracy, paired

METHODS = ("single", "text_chain", "latentmas_seq")


def run(args: argparse.Namespace) -> tuple[dict[str, dict], dict[str, list[dict]]]:
    out_root = Path(args.out or tempfile.mkdtemp(prefix="gcache-bench-"))
    summaries, records = {}, {}
    for method in METHODS:
        out = out_root / method
        argv = ["eval", "--method", method, "--dataset", "gsm8k", "--limit", str(args.limit), "--model", args.model,
                "--batch-size", str(args.batch_size), "--max-new-tokens", str(args.max_new_tokens),
                "--latent-steps", str(args.latent_steps), "--device", args.device, "--out", str(out)]
        if args.data:
            argv += ["--data", args.data]
        if args.shard:
            argv += ["--shard", args.shard]
        if gcache_main(argv) != 0:
            raise SystemExit(f"{method} failed")
        summaries[method] = json.loads((out / "summary.json").read_text())
        records[method] = ResultStore(out, read_only=True).records()
    return summaries, records


def table(summaries: dict[str, dict], records: dict[str, list[dict]]) -> str:
    rows = ["| method | s / question | generated tokens / q | latent steps / q | accuracy [95% CI] | W/L vs single (p) |",
            "|---|---:|---:|---:|---|---|"]
    for method, s in summaries.items():
        n = s["counts"]["answered"]
        acc = accuracy(records[method])
        vs = "—" if method == "single" else "{0.wins}/{0.losses} ({0.p:.3f})".format(paired(records[method],
                                                                                               records["single"]))
        rows.append(f"| {method} | {s['per_question']['seconds']:.2f} | {s['totals']['completion_tokens'] / n:.1f} | "
                    f"{s['totals']['latent_steps'] / n:.1f} | {acc.rate:.3f} ({acc.correct}/{acc.n}) "
                    f"[{acc.low:.3f}, {acc.high:.3f}] | {vs} |")
    lat, txt = summaries["latentmas_seq"], summaries["text_chain"]
    rows.append("")
    rows.append(f"latentmas_seq / text_chain: time {lat['per_question']['seconds'] / txt['per_question']['seconds']:.2f}x, "
                f"generated tokens {lat['totals']['completion_tokens'] / max(1, txt['totals']['completion_tokens']):.2f}x")
    return "\n".join(rows)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2")
    p.add_argument("--data", default=None)
    p.add_argument("--limit", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--latent-steps", type=int, default=4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None)
    p.add_argument("--shard", default=None, help="i/n: this machine's share of the questions (needs --out)")
    args = p.parse_args()
    if args.shard and not args.out:
        p.error("--shard needs --out: the shards of a comparison fill the same folders")
    logging.basicConfig(level=logging.WARNING)
    print(table(*run(args)))
