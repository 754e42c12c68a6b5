"""Speed where users run it: the plain transformers latent loop (LatentMAS style) against G-cache's fast path.

    # one GPU, random-weight Qwen3-1.7B, 4B and 8B in bf16, in one run (a few minutes on an H100)
    python benchmarks/gpu_speed.py --json runs/gpu_speed.json
    # the same script on CPU with a tiny config, in seconds (tests/benchmarks runs it)
    python benchmarks/gpu_speed.py --shapes tiny --device cpu --dtype float32
    # the CPU line: static cache against concatenation at a 2k-slot context, and the CPU's memory floor
    python benchmarks/gpu_speed.py --cpu-line

Speed does not depend on the weights, so random weights in the real shapes measure what the real models cost.
For each model:

* **latent step** (ms) at batch 1 and 16 on a ``--context``-token context: the LatentMAS loop (one
  ``model(inputs_embeds=..., output_hidden_states=True)`` per step on a ``DynamicCache``, stock SDPA, realignment in
  float32, as in LatentMAS's ``generate_latent_batch``), the fast path (static cache, step captured as a CUDA graph)
  and the fast path without graphs;
* **decoded token** (ms) at batch 1: a greedy loop of plain ``model(input_ids=...)`` forwards on a ``DynamicCache``
  against the fast path;
* **whole question** (s) at batch 1: ``--agents`` agents, each prefilling a ``--prompt``-token prompt on the previous
  agent's whole cache and thinking ``--question-steps`` latent steps, then a judge that prefills its prompt and
  decodes ``--question-tokens`` tokens (greedy). Both paths' tokens are compared;
* a **layered graph** (G-cache, batch 1) on the fast path: four latent agents, two per depth, and a decision
  agent; batched by depth against node by node;
* the **memory floor** of a step: the bytes it must read (decoder weights, the realignment matrix, the context's
  key/value slots; plus the LM head for a token) over the bandwidth of a measured device-to-device copy, and the
  peak GPU memory.

Timings run after a warm-up (which captures the CUDA graphs), between ``torch.cuda.synchronize()`` calls.
"""

from __future__ import annotations

import argparse
import inspect
import json
import random
import string
import sys
import time
from contextlib import contextmanager

import torch

from gcache.models import QWEN3_SHAPES, random_qwen3
from gcache.modules.attention import FUSED_ATTENTION
from gcache.modules.kv_message import KVMessage, SlotKind
from gcache.reasoning import DecodeConfig, FastLatentEngine, LatentEngine

GPU_SHAPES = ("qwen3-1.7b", "qwen3-4b", "qwen3-8b")


# ---------------------------------------------------------------------------------------------------- timing
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> tuple[float, object]:
    """``(seconds, result)`` of ``fn()``, timed between device synchronisations."""
    sync(device)
    t0 = time.perf_counter()
    result = fn()
    sync(device)
    return time.perf_counter() - t0, result


def copy_bandwidth(device: torch.device, nbytes: int) -> float:
    """Bytes per second moved by a device-to-device copy (it reads ``nbytes`` and writes ``nbytes``); best of 5."""
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = min(timed(lambda: dst.copy_(src), device)[0] for _ in range(5))
    return 2 * nbytes / best


# ------------------------------------------------------------------------------------- the baseline: HF loop
@contextmanager
def stock_attention(model):
    """Plain transformers SDPA for the baseline, G-cache's fusing attention back afterwards."""
    model.set_attn_implementation("sdpa")
    try:
        yield
    finally:
        model.set_attn_implementation(FUSED_ATTENTION)


class TransformersLoop:
    """LatentMAS's latent loop and a greedy decoding loop, written with nothing but the transformers API.

    One ``model(...)`` call per step on a ``DynamicCache`` with a 2-D attention mask; every call computes the LM
    head, and latent steps ask for ``output_hidden_states`` (LatentMAS ``models.py::generate_latent_batch``).
    """

    def __init__(self, model, w_a: torch.Tensor, target_norm: torch.Tensor) -> None:
        from transformers import DynamicCache

        self.model, self.w_a, self.target_norm = model, w_a, target_norm
        self.new_cache = DynamicCache
        self.device = next(model.parameters()).device
        # transformers renamed `past_key_values` to `cache` (5.2x): pass the name this version takes
        self.cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def _forward(self, cache, **inputs):
        n = inputs.get("input_ids", inputs.get("inputs_embeds")).shape[:2]
        mask = torch.ones(n[0], cache.get_seq_length() + n[1], dtype=torch.long, device=self.device)
        return self.model(attention_mask=mask, use_cache=True, output_hidden_states=True,
                          **{self.cache_arg: cache}, **inputs)

    def prefill(self, cache, ids: torch.Tensor):
        out = self._forward(cache, input_ids=ids)
        return out.hidden_states[-1][:, -1], out.logits[:, -1]  # [b, d], [b, v]

    def think(self, cache, hidden: torch.Tensor, steps: int) -> torch.Tensor:
        for _ in range(steps):
            e = hidden.float() @ self.w_a  # [b, d]: realigned in float32, as LatentMAS does
            e = (e * (self.target_norm / e.norm(dim=-1, keepdim=True).clamp_min(1e-6))).to(hidden.dtype)
            hidden = self._forward(cache, inputs_embeds=e[:, None]).hidden_states[-1][:, -1]
        return hidden

    def decode(self, cache, logits: torch.Tensor, tokens: int) -> torch.Tensor:
        out = []
        for _ in range(tokens):
            ids = logits.argmax(dim=-1)  # [b]
            out.append(ids)
            mask = torch.ones(ids.shape[0], cache.get_seq_length() + 1, dtype=torch.long, device=self.device)
            logits = self.model(input_ids=ids[:, None], attention_mask=mask, use_cache=True,
                                **{self.cache_arg: cache}).logits[:, -1]
        return torch.stack(out, dim=1)  # [b, tokens]


# --------------------------------------------------------------------------------------------- one model
def random_prompt(tok, n: int, rng: random.Random) -> str:
    """``n`` random letters: ``n`` tokens for the byte-level tokenizer of the random models."""
    text = "".join(rng.choice(string.ascii_letters) for _ in range(n))
    assert len(tok(text, add_special_tokens=False)["input_ids"]) == n
    return text


def step_bytes(model, engine: LatentEngine, batch: int, slots: int, with_head: bool) -> dict[str, int]:
    """Bytes one step must read at least: decoder weights (+ LM head), W_a, and ``slots`` key/value slots per row."""
    decoder = sum(p.numel() * p.element_size() for n, p in model.get_decoder().named_parameters()
                  if "embed_tokens" not in n)
    head = model.get_output_embeddings().weight
    kv_slot = engine.num_layers * 2 * engine.n_kv * engine.head_dim * head.element_size()
    w_a = engine.realignment()[0]
    return {"weights": decoder + (head.numel() * head.element_size() if with_head else w_a.numel() * 4),
            "kv": batch * slots * kv_slot, "kv_slot": kv_slot}


ROWS = ("latent", "decode", "question", "layered")


class Bench:
    """One random-weight model and what every row measures it with: the fast engine (CUDA graphs where the model
    is on CUDA), the same without graphs, and the LatentMAS-style transformers loop."""

    def __init__(self, shape: str, args, device: torch.device, dtype: torch.dtype, bandwidth: float) -> None:
        self.shape, self.args, self.device, self.bandwidth = shape, args, device, bandwidth
        self.rng = random.Random(0)
        self.model, self.tok = random_qwen3(shape, dtype=dtype, device=device)
        self.fast = FastLatentEngine(self.model, self.tok)
        self.plain = FastLatentEngine(self.model, self.tok, cuda_graphs=False)
        for engine in (self.fast, self.plain):
            engine.stop_ids = {-1}  # random weights: never stop early, so every run decodes exactly what it asks
        self.loop = TransformersLoop(self.model, *self.fast.realignment())

    def prompts(self, n: int, tokens: int) -> list[str]:
        return [random_prompt(self.tok, tokens, self.rng) for _ in range(n)]

    def ids(self, prompts: list[str]) -> torch.Tensor:
        return self.fast.tokenize(prompts)[0]

    def floor_ms(self, batch: int, slots: int, with_head: bool) -> float:
        need = step_bytes(self.model, self.fast, batch, slots, with_head)
        return (need["weights"] + need["kv"]) / self.bandwidth * 1000

    def latent_step(self, batch: int) -> dict:
        """ms per latent step on a ``--context``-token context."""
        args, loop, model = self.args, self.loop, self.model
        prompts = self.prompts(batch, args.context)
        ids = self.ids(prompts)
        with stock_attention(model):
            cache = loop.new_cache()
            loop.think(cache, loop.prefill(cache, ids)[0], 2)  # warm-up
            cache = loop.new_cache()
            h = loop.prefill(cache, ids)[0]
            t_loop, h_loop = timed(lambda: loop.think(cache, h, args.steps), self.device)
        t, h_fast = {}, None
        for name, engine in (("fast", self.fast), ("plain", self.plain)):
            ctx, h, _, _ = engine.prefill(engine.empty_context(batch), prompts)
            engine.think(ctx, h, args.steps)  # warm-up: captures the graph
            t[name], (_, h_out) = timed(lambda: engine.think(ctx, h, args.steps), self.device)
            h_fast = h_out if h_fast is None else h_fast
            engine.release()
        return {"op": "latent step", "batch": batch, "loop_ms": t_loop / args.steps * 1000,
                "fast_ms": t["fast"] / args.steps * 1000, "no_graph_ms": t["plain"] / args.steps * 1000,
                "floor_ms": self.floor_ms(batch, args.context + args.steps // 2, with_head=False),
                "rel_diff": float((h_fast.double() - h_loop.double()).norm() / h_loop.double().norm())}

    def decoded_token(self) -> dict:
        """ms per decoded token at batch 1."""
        args, loop, n = self.args, self.loop, self.args.tokens
        prompt = self.prompts(1, args.context)
        ids = self.ids(prompt)
        with stock_attention(self.model):
            cache = loop.new_cache()
            loop.decode(cache, loop.prefill(cache, ids)[1], 2)
            cache = loop.new_cache()
            logits = loop.prefill(cache, ids)[1]
            t_loop, _ = timed(lambda: loop.decode(cache, logits, n), self.device)
        t = {}
        for name, engine in (("fast", self.fast), ("plain", self.plain)):
            ctx, _, logits, _ = engine.prefill(engine.empty_context(1), prompt)
            engine.decode(ctx, logits, DecodeConfig(max_new_tokens=n))
            t[name], _ = timed(lambda: engine.decode(ctx, logits, DecodeConfig(max_new_tokens=n)), self.device)
            engine.release()
        return {"op": "decoded token", "batch": 1, "loop_ms": t_loop / n * 1000, "fast_ms": t["fast"] / n * 1000,
                "no_graph_ms": t["plain"] / n * 1000, "floor_ms": self.floor_ms(1, args.context + n // 2, True),
                "rel_diff": None}

    def whole_question(self) -> dict:
        """``--agents`` latent agents passing their whole cache along a chain, then a judge decoding, at batch 1."""
        args, loop, fast = self.args, self.loop, self.fast
        agent_prompts, (judge_prompt,) = self.prompts(args.agents, args.prompt), self.prompts(1, args.prompt)

        def question_loop():
            cache = loop.new_cache()
            for p in agent_prompts:
                loop.think(cache, loop.prefill(cache, self.ids([p]))[0], args.question_steps)
            logits = loop.prefill(cache, self.ids([judge_prompt]))[1]
            return loop.decode(cache, logits, args.question_tokens)[0].tolist()

        def question_fast():
            ctx = fast.empty_context(1)
            for p in agent_prompts:
                ctx_p, h, _, _ = fast.prefill(ctx, [p])
                ctx = fast.think(ctx_p, h, args.question_steps)[0].message("full", own_start=0)
            ctx_p, _, logits, _ = fast.prefill(ctx, [judge_prompt])
            return fast.decode(ctx_p, logits, DecodeConfig(max_new_tokens=args.question_tokens)).token_ids[0]

        with stock_attention(self.model):
            cache = loop.new_cache()
            loop.think(cache, loop.prefill(cache, self.ids(agent_prompts[:1]))[0], 2)  # warm-up, short
            t_loop, tokens_loop = timed(question_loop, self.device)
        first, _ = timed(question_fast, self.device)  # the first run captures the graphs of each static cache
        t_fast, tokens_fast = timed(question_fast, self.device)
        fast.release()
        agree = sum(a == b for a, b in zip(tokens_loop, tokens_fast)) / args.question_tokens
        return {"op": "whole question", "batch": 1, "loop_ms": t_loop * 1000, "fast_ms": t_fast * 1000,
                "first_run_ms": first * 1000, "token_agreement": agree}


def bench_model(shape: str, args, device: torch.device, dtype: torch.dtype, bandwidth: float) -> list[dict]:
    """The rows ``--rows`` asks for, for one model shape."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    bench = Bench(shape, args, device, dtype, bandwidth)
    rows = []
    if "latent" in args.rows:
        rows += [bench.latent_step(batch) for batch in args.batches]
    if "decode" in args.rows:
        rows.append(bench.decoded_token())
    if "question" in args.rows:
        rows.append(bench.whole_question())
    if "layered" in args.rows:
        rows.append(layered_graph(bench))
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    for row in rows:
        row.update(model=shape, peak_gib=peak)
    return rows


def layered_graph(bench: Bench) -> dict:
    """A G-cache graph at batch 1 on the fast path, batched by depth against node by node.

    Four latent agents of the GSM8K prompt set in the ``layered`` topology (two at depth 0; two at depth 1 reading
    both), ``--question-steps`` latent steps each, full messages, and a decision agent that decodes
    ``--question-tokens`` tokens.
    """
    from gcache.agents.roles import load_prompt_set
    from gcache.graph import preset_graph
    from gcache.reasoning.executor import GraphExecutor
    from gcache.reasoning.plans import plan_from_graph

    prompt_set = load_prompt_set("gsm8k")
    graph = preset_graph("layered", prompt_set.role_names[:4])
    plan, _ = plan_from_graph(graph, {r.name: r for r in prompt_set.roles}, kind="latent")
    args, question = bench.args, bench.prompts(1, bench.args.prompt)
    t, texts = {}, {}
    for name, by_depth in (("depth", True), ("node", False)):
        ex = GraphExecutor(engine=bench.fast, latent_steps=args.question_steps, batch_by_depth=by_depth,
                           decode=DecodeConfig(max_new_tokens=args.question_tokens))
        ex.run(plan, question)  # warm-up: captures the graphs of its static caches
        t[name], traces = timed(lambda: ex.run(plan, question), bench.device)
        texts[name] = traces[0].final_text
    bench.fast.release()
    return {"op": "layered graph", "batch": 1, "depth_ms": t["depth"] * 1000, "node_ms": t["node"] * 1000,
            "same_answer": texts["depth"] == texts["node"]}


# ------------------------------------------------------------------------------------------------ CPU line
def cpu_line(args) -> dict:
    """Static cache against today's concatenation at a ``--cpu-slots`` context, and the CPU's memory floor."""
    device = torch.device("cpu")
    bandwidth = copy_bandwidth(device, 512 * 2**20)
    model, tok = random_qwen3(args.cpu_shape, dtype=torch.float32, device=device)
    eager = LatentEngine(model, tok)
    static = FastLatentEngine(model, tok, bucket=64, reserve=0)
    s, b = args.cpu_slots, 1
    gen = torch.Generator().manual_seed(0)
    kv = lambda: torch.randn(b, eager.n_kv, s, eager.head_dim, generator=gen)  # noqa: E731
    ctx = KVMessage(keys=tuple(kv() for _ in range(eager.num_layers)), values=tuple(kv() for _ in range(eager.num_layers)),
                    valid=torch.ones(b, s, dtype=torch.bool), positions=torch.arange(s).expand(b, s).clone(),
                    kinds=torch.full((b, s), int(SlotKind.PROMPT)))
    h = torch.randn(b, model.config.hidden_size, generator=gen)
    steps = args.cpu_steps
    with torch.no_grad():
        eager.think(ctx, h, 1)
        static.think(ctx, h, 1)
        t_cat = timed(lambda: eager.think(ctx, h, steps), device)[0] / steps
        t_static = timed(lambda: static.think(ctx, h, steps), device)[0] / steps
    capacity = next(iter(static._caches.values())).capacity
    need = step_bytes(model, eager, b, s + steps // 2, with_head=False)
    slot = need["kv_slot"]
    moved_cat = need["weights"] + need["kv"] + 2 * need["kv"] + slot  # attention reads s; cat reads s, writes s + 1
    moved_static = need["weights"] + capacity * slot + slot  # attention over the capacity (masked); one slot written
    floor = need["weights"] + need["kv"]
    return {"shape": args.cpu_shape, "slots": s, "capacity": capacity, "steps": steps, "threads": torch.get_num_threads(),
            "bandwidth_gbs": bandwidth / 1e9,
            "rows": [
                {"path": "eager (concatenation)", "bytes_mb": moved_cat / 1e6, "ms": t_cat * 1000,
                 "floor_ms": floor / bandwidth * 1000},
                {"path": "fast (static cache)", "bytes_mb": moved_static / 1e6, "ms": t_static * 1000,
                 "floor_ms": floor / bandwidth * 1000},
            ]}


# ---------------------------------------------------------------------------------------------------- main
def fmt(x, spec=".2f") -> str:
    return "—" if x is None else format(x, spec)


def print_tables(result: dict) -> None:
    print(f"device: {result['device']}, dtype {result['dtype']}, copy bandwidth {result['bandwidth_gbs']:.0f} GB/s")
    print("\n| model | operation | batch | LatentMAS loop ms | fast ms | fast, no graphs ms | floor ms | fast / floor "
          "| loop / fast | rel. diff | peak GiB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in result["rows"]:
        if r["op"] in ("whole question", "layered graph"):
            continue
        print(f"| {r['model']} | {r['op']} | {r['batch']} | {fmt(r['loop_ms'])} | {fmt(r['fast_ms'])} "
              f"| {fmt(r['no_graph_ms'])} | {fmt(r['floor_ms'])} | {fmt(r['fast_ms'] / r['floor_ms'])} "
              f"| {fmt(r['loop_ms'] / r['fast_ms'], '.1f')} | {fmt(r['rel_diff'], '.1e')} | {fmt(r['peak_gib'], '.1f')} |")
    print("\n| model | whole question: LatentMAS loop s | fast s | loop / fast | fast, first run (captures) s "
          "| same tokens |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in result["rows"]:
        if r["op"] == "whole question":
            print(f"| {r['model']} | {r['loop_ms'] / 1000:.2f} | {r['fast_ms'] / 1000:.2f} "
                  f"| {r['loop_ms'] / r['fast_ms']:.1f} | {r['first_run_ms'] / 1000:.2f} | {r['token_agreement']:.0%} |")
    print("\n| model | layered graph (fast path): by depth s | node by node s | node / depth | same answer |")
    print("|---|---:|---:|---:|---|")
    for r in result["rows"]:
        if r["op"] == "layered graph":
            print(f"| {r['model']} | {r['depth_ms'] / 1000:.2f} | {r['node_ms'] / 1000:.2f} "
                  f"| {r['node_ms'] / r['depth_ms']:.2f} | {'yes' if r['same_answer'] else 'no'} |")


def print_cpu_line(line: dict) -> None:
    print(f"CPU line: {line['shape']} fp32, batch 1, {line['slots']}-slot context (static capacity "
          f"{line['capacity']}), {line['steps']} latent steps, {line['threads']} thread(s), copy bandwidth "
          f"{line['bandwidth_gbs']:.1f} GB/s")
    print("\n| path | MB moved per step | ms per step | memory floor ms | ms / floor |\n|---|---:|---:|---:|---:|")
    for r in line["rows"]:
        print(f"| {r['path']} | {r['bytes_mb']:.0f} | {r['ms']:.1f} | {r['floor_ms']:.1f} | {r['ms'] / r['floor_ms']:.2f} |")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", choices=sorted(QWEN3_SHAPES), default=list(GPU_SHAPES))
    p.add_argument("--device", default="cuda" if cuda else "cpu")
    p.add_argument("--dtype", default="bfloat16" if cuda else "float32")
    p.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS), help="what to measure (default all)")
    p.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    p.add_argument("--context", type=int, default=256, help="prompt tokens before the timed steps")
    p.add_argument("--steps", type=int, default=16, help="timed latent steps per measurement")
    p.add_argument("--tokens", type=int, default=32, help="timed decoded tokens per measurement")
    p.add_argument("--agents", type=int, default=4)
    p.add_argument("--prompt", type=int, default=128, help="prompt tokens of each agent in the whole question")
    p.add_argument("--question-steps", type=int, default=40)
    p.add_argument("--question-tokens", type=int, default=256)
    p.add_argument("--copy-mib", type=int, default=1024, help="size of the bandwidth-measuring copy")
    p.add_argument("--cpu-line", action="store_true", help="only the CPU line (static cache vs concatenation)")
    p.add_argument("--cpu-shape", choices=sorted(QWEN3_SHAPES), default="qwen3-0.6b")
    p.add_argument("--cpu-slots", type=int, default=2048)
    p.add_argument("--cpu-steps", type=int, default=8)
    p.add_argument("--json", help="also write the results here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    with torch.no_grad():
        if args.cpu_line:
            result = {"cpu_line": cpu_line(args)}
            print_cpu_line(result["cpu_line"])
        else:
            device, dtype = torch.device(args.device), getattr(torch, args.dtype)
            if device.type == "cuda" and device.index is None:
                device = torch.device("cuda", torch.cuda.current_device())
            bandwidth = copy_bandwidth(device, args.copy_mib * 2**20)
            name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
            result = {"device": name, "dtype": args.dtype, "bandwidth_gbs": bandwidth / 1e9, "rows": [],
                      "torch": torch.__version__, "argv": sys.argv[1:] if argv is None else argv}
            for shape in args.shapes:
                result["rows"] += bench_model(shape, args, device, dtype, bandwidth)
            print_tables(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
