"""Answer a question with a latent team: G-cache's (untrained) team on the embedded SmolLM2-135M model.

The agents think in latent steps and pass their KV-caches along the graph the topology model drew; the decision
node writes the answer. The trace shows the tokens spent, the latent steps, the graph and what the LM head reads
at each latent step.

    python examples/answer_with_latent_team.py                      # smollm2 on the CPU, about a minute
    python examples/answer_with_latent_team.py --model tiny-random-qwen3 --max-new-tokens 8   # seconds (noise)
"""

from __future__ import annotations

import argparse
import json
import logging

import gcache

QUESTION = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
            "How many clips did Natalia sell altogether in April and May?")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", help="model preset, hub id or folder (default smollm2)")
    parser.add_argument("--method", default="gcache", help="a latent method: gcache (default), latentmas_seq ...")
    parser.add_argument("--checkpoint", help="a trained team (gcache train's output folder); default: untrained")
    parser.add_argument("--question", default=QUESTION)
    parser.add_argument("--gold", default="72", help="gold answer to grade against (default 72)")
    parser.add_argument("--latent-steps", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=192)
    parser.add_argument("--alone-prob", type=float, default=0.05,
                        help="untrained gcache: probability that the decision node reads nobody (default 0.05, so "
                             "the team is read)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    with gcache.load_agents(args.method, model=args.model, checkpoint=args.checkpoint, latent_steps=args.latent_steps,
                            max_new_tokens=args.max_new_tokens, alone_prob=args.alone_prob, progress=False) as agents:
        answer = agents.answer([args.question], golds=[args.gold])[0]

    print(f"method: {agents.method} ({'trained' if agents.trained else 'untrained'}) on {args.model}")
    print(f"question: {answer.question}")
    print(f"answer: {answer.prediction} (gold {args.gold}, correct: {answer.correct})")
    print(f"tokens: {answer.prompt_tokens} prompt, {answer.completion_tokens} generated; "
          f"latent steps: {answer.latent_steps}; {answer.seconds:.1f} s")
    if answer.graph is not None:
        print(f"graph: {json.dumps(answer.graph)}")
    for node, steps in (answer.diagnostics.get("latent_top_tokens") or {}).items():
        print(f"latent thoughts of {node} (LM head's top token per step): {steps}")
    print(f"decision node wrote: {answer.text!r}")


if __name__ == "__main__":
    main()
