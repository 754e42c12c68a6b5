"""Compare two methods on the same GSM8K questions and draw the plots: ``gcache compare`` + ``gcache report``.

    python examples/compare_and_plot.py                           # single vs latentmas_seq, smollm2, 8 questions
    python examples/compare_and_plot.py --model tiny-random-qwen3 --data tests/assets/tiny_gsm8k.jsonl \\
        --limit 2 --max-new-tokens 4 --latent-steps 1             # seconds (noise)
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import gcache

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gsm8k" / "test.jsonl"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--data", default=str(DATA), help="GSM8K test questions (JSONL)")
    parser.add_argument("--methods", default="single,latentmas_seq", help="two (or more) methods, the first the baseline")
    parser.add_argument("--limit", type=int, default=8)
    parser.add_argument("--latent-steps", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=192)
    parser.add_argument("--out", default="runs/example_compare")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    matrix = {"methods": args.methods.split(","), "tasks": {"gsm8k": {"data": args.data}}, "seeds": [0],
              "settings": {"model": args.model, "limit": args.limit, "latent_steps": args.latent_steps,
                           "max_new_tokens": args.max_new_tokens, "progress": False}}
    state = gcache.compare(matrix, args.out)
    for cell in state["cells"]:
        print(f"{cell['method']}: accuracy {cell['accuracy']:.3f} on {cell['answered']} questions")
    done = gcache.report(args.out)
    print(done.markdown)
    print(f"report: {done.path}")
    for plot in done.plots:
        print(f"plot: {plot}")


if __name__ == "__main__":
    main()
