"""Per-step cost of the latent engine against transformers' own decoding, on random weights of a real shape.

    python benchmarks/step_speed.py --shape qwen3-0.6b --device cpu --batch 1 --context 256
    python benchmarks/step_speed.py --shape qwen3-4b --device cuda --dtype bfloat16

Speed does not depend on the weights, so a random-weight model built from the real config measures what the real
model would. Reports ms per latent step and per decoded token (ours and ``model.generate``), with burn-in steps
and, on CUDA, timings between ``torch.cuda.synchronize()`` calls.
"""

from __future__ import annotations

import argparse
import time

import torch

from gcache.models import QWEN3_SHAPES, random_qwen3
from gcache.reasoning import DecodeConfig, LatentEngine

def timed(fn, device: str, repeat: int) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeat * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=sorted(QWEN3_SHAPES), default="qwen3-0.6b")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="bfloat16" if torch.cuda.is_available() else "float32")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--burn-in", type=int, default=2)
    args = p.parse_args()
    dtype = getattr(torch, args.dtype)
    model, tok = random_qwen3(args.shape, dtype=dtype, device=args.device)
    engine = LatentEngine(model, tok)
    engine.realignment()  # built once per model, outside the timings
    ids = torch.randint(0, 250, (args.batch, args.context), device=args.device)
    valid = torch.ones_like(ids, dtype=torch.bool)
    rows = []
    with torch.no_grad():
        from gcache.modules.kv_message import SlotKind

        prefill = lambda: engine.extend(engine.empty_context(args.batch), engine.embed(ids), valid, SlotKind.PROMPT)
        for _ in range(args.burn_in):
            prefill()
        rows.append(("prefill (ours)", timed(prefill, args.device, 2), args.context))
        ctx, h, logits = prefill()
        think = lambda: engine.think(ctx, h, args.steps)
        think()
        rows.append(("latent step (ours)", timed(think, args.device, 1) / args.steps, 1))
        cfg = DecodeConfig(max_new_tokens=args.steps)
        engine.stop_ids = {-1}  # random weights: never stop early, so every run decodes exactly `steps` tokens
        decode = lambda: engine.decode(ctx, logits, cfg)
        decode()
        rows.append(("decode token (ours)", timed(decode, args.device, 1) / args.steps, 1))
        def gen(n: int):
            return lambda: model.generate(ids, attention_mask=valid.long(), max_new_tokens=n, min_new_tokens=n,
                                          do_sample=False, pad_token_id=tok.pad_token_id)

        gen(args.steps)()
        full, one = timed(gen(args.steps), args.device, 1), timed(gen(1), args.device, 1)
        # generate's prefill + first token cancel out: what remains is its cost per further token
        rows.append(("decode token (HF generate)", (full - one) / (args.steps - 1), 1))
    print(f"{args.shape} random weights, {args.device}, {args.dtype}, batch {args.batch}, context {args.context}")
    print("| operation | ms | tokens/s |\n|---|---:|---:|")
    for name, ms, n in rows:
        print(f"| {name} | {ms:.1f} | {args.batch * n / ms * 1000:.1f} |")


if __name__ == "__main__":
    main()
