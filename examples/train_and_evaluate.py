"""Train a G-cache team (topology model + CacheFuser, the LLM frozen) on 16 GSM8K questions, then evaluate the
trained team on 16 held-out questions next to the untrained one.

    python examples/train_and_evaluate.py                          # smollm2 on the CPU: tens of minutes
    python examples/train_and_evaluate.py --model tiny-random-qwen3 --train-data tests/assets/tiny_gsm8k_train.jsonl \\
        --test-data tests/assets/tiny_gsm8k.jsonl --steps 2 --max-new-tokens 4 --latent-steps 1   # seconds (noise)
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import gcache

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gsm8k"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--train-data", "--data", dest="train_data", default=str(DATA / "train.jsonl"),
                        help="GSM8K training questions (JSONL)")
    parser.add_argument("--test-data", default=str(DATA / "test.jsonl"), help="GSM8K test questions (JSONL)")
    parser.add_argument("--questions", type=int, default=16, help="training and test questions (default 16)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--latent-steps", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=192)
    parser.add_argument("--out", default="runs/example_train_and_evaluate")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    out = Path(args.out)
    common = dict(model=args.model, latent_steps=args.latent_steps, max_new_tokens=args.max_new_tokens,
                  batch_size=args.batch_size, progress=False)

    def on_step(entry: dict) -> None:  # called after each saved step with its history.json entry
        print(f"step {entry['step']}: reward {entry['reward']:.3f}, {entry['graphs']} graphs, "
              f"{entry['seconds']:.1f} s")

    trained = gcache.train(method="gcache", data=args.train_data, split="train", limit=args.questions,
                           steps=args.steps, tensorboard=False, out=out / "train", on_step=on_step, **common)
    print(f"trained team: {trained.team} ({trained.result['steps']} steps)")

    for name, checkpoint in (("untrained", None), ("trained", str(trained.team))):
        run = gcache.evaluate(method="gcache", checkpoint=checkpoint, data=args.test_data, limit=args.questions,
                              out=out / f"eval_{name}", **common)
        counts = run.summary["counts"]
        print(f"{name}: accuracy {run.accuracy:.3f} ({counts['correct']}/{counts['answered']}), answered alone "
              f"{run.summary['answered_alone']}, results in {run.out}")


if __name__ == "__main__":
    main()
