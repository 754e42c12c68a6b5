"""The fast path of the latent engine: a preallocated (static) KV cache and, on CUDA, steps captured as CUDA graphs.

The eager :class:`~gcache.reasoning.LatentEngine` concatenates the whole cache into new tensors at every latent step
and every decoded token, and runs each step as a Python-driven sequence of small kernel launches. On a GPU that
loop is launch-bound: the step costs far more than reading the weights once. :class:`FastLatentEngine` keeps the
same semantics (padding, positions, masks, fuser bias, messages) and changes how the work is done:

* the context is written once into a :class:`StaticContext`, a cache of fixed capacity built on transformers'
  ``StaticLayer`` (every layer full attention, as the eager engine treats them), and each step writes one slot in
  place instead of copying the cache;
* a latent step is one function of fixed-address tensors: realignment in float32 (fused into the step), one
  forward of one slot, no LM head; a decoding step is embedding, forward and LM head of one slot;
* on CUDA each of these step functions is captured once per cache as a CUDA graph and replayed, so a step costs one
  launch. Sampling stays outside the graph (it needs the host only to see whether every row has stopped).

Gradients never take this path: with grad enabled (the gold-answer loss) every method falls back to the eager one.

Notation: b = batch, t = new slots, c = capacity (slots of the static cache), l = layers, d = hidden size,
v = vocabulary.
"""

from __future__ import annotations

import logging
import math
import weakref
from collections import OrderedDict
from collections.abc import Callable

import torch

from gcache.modules.attention import build_attention_mask
from gcache.modules.kv_message import KVMessage, SlotKind
from gcache.reasoning._latent import DecodeConfig, Decoded, LatentEngine, sample_next_token
from gcache.choices import resolve_engine

logger = logging.getLogger(__name__)

__all__ = ["FastLatentEngine", "StaticContext", "make_engine"]


def is_dispatched(model) -> bool:
    """True when accelerate dispatched ``model`` (``--device-map``): hooks move weights or activations between
    devices at every forward, which neither one static cache nor a captured graph can follow."""
    return any(hasattr(module, "_hf_hook") for module in model.modules())


def make_engine(model, tokenizer, *, engine: str = "auto", realign: bool = True, lam: float = 1e-5,
                max_context: int | None = None) -> LatentEngine:
    """The latent engine the flag ``--engine`` names, for ``model`` where it runs.

    Args:
        engine (str): ``auto`` (fast on one CUDA device, eager otherwise), ``eager`` or ``fast``. Default is
            ``"auto"``.
        realign (bool): see :class:`LatentEngine`. Default is True.
        lam (float): see :class:`LatentEngine`. Default is 1e-5.
        max_context (int | None): see :class:`LatentEngine`. Default is None (the model's).

    Raises:
        ValueError: an unknown engine, or ``fast`` for a model spread over several devices (``--device-map``).
    """
    eager = LatentEngine(model, tokenizer, realign=realign, lam=lam, max_context=max_context)
    choice = resolve_engine(engine, eager.device)
    if choice == "fast" and is_dispatched(model):
        if engine == "fast":
            raise ValueError("--engine fast needs the whole model on one device (no --device-map); use --engine eager")
        logger.info("the model is dispatched over devices (--device-map): the eager engine runs it")
        return eager
    if choice == "fast":
        return FastLatentEngine(model, tokenizer, realign=realign, lam=lam, max_context=max_context)
    return eager


class StaticContext:
    """A preallocated cache of one batch shape, and the bookkeeping of a :class:`KVMessage` in fixed tensors.

    Keys and values live in transformers ``StaticLayer`` buffers ``[b, n_kv, c, h_d]`` that the model's attention
    writes in place (``index_copy_`` at the layer's ``cumulative_length``). Next to them, as fixed-size device tensors
    so that a captured step can read and advance them: ``valid [b, c]``, ``positions [b, c]``, ``length []`` (slots
    filled), ``next_pos [b]`` (where each row's positions continue) and the fuser ``bias [l, b, c]``. Slots from
    ``length`` on are invalid: the mask never lets a query see them, so what they hold does not matter.

    Args:
        num_layers (int): layers of the model.
        batch (int): rows.
        n_kv (int): key/value heads.
        head_dim (int): head dimension.
        capacity (int): slots.
        hidden_size (int): model width (the latent step's carried hidden state).
        dtype (torch.dtype): the model dtype.
        device (torch.device): the model's device.
    """

    def __init__(self, *, num_layers: int, batch: int, n_kv: int, head_dim: int, capacity: int, hidden_size: int,
                 dtype: torch.dtype, device: torch.device) -> None:
        from transformers.cache_utils import Cache, StaticLayer

        self.batch, self.capacity, self.dtype, self.device = batch, capacity, dtype, device
        # Every layer full attention: the eager engine's DynamicCache ignores sliding windows too.
        self.cache = Cache(layers=[StaticLayer(max_cache_len=capacity) for _ in range(num_layers)])
        self.cache.early_initialization(batch, n_kv, head_dim, dtype, device)
        self.valid = torch.zeros(batch, capacity, dtype=torch.bool, device=device)
        self.positions = torch.full((batch, capacity), -1, dtype=torch.long, device=device)
        self.kinds = torch.zeros(batch, capacity, dtype=torch.long, device=device)
        self.length = torch.zeros((), dtype=torch.long, device=device)
        self.next_pos = torch.zeros(batch, dtype=torch.long, device=device)
        self.bias = torch.zeros(num_layers, batch, capacity, dtype=dtype, device=device)
        # Inputs and outputs of the captured steps (fixed addresses).
        self.hidden = torch.zeros(batch, hidden_size, dtype=dtype, device=device)  # latent step: in and out
        self.ones = torch.ones(batch, 1, dtype=torch.bool, device=device)
        self.token_ids = torch.zeros(batch, dtype=torch.long, device=device)  # decoding step: in
        self.step_valid = torch.ones(batch, dtype=torch.bool, device=device)  # decoding step: False = padding slot
        self.logits: torch.Tensor | None = None  # decoding step: out, [b, v], allocated on first use
        self.filled = 0  # host mirror of `length`: every step adds exactly one slot, so no sync is needed
        self.graphs: dict[str, torch.cuda.CUDAGraph] = {}
        self._snapshot: weakref.ref | None = None  # the message this cache last handed out, while it is unchanged
        self._bias_source: weakref.ref | None = None

    # ------------------------------------------------------------------ host side
    def load(self, ctx: KVMessage, fuser_bias: torch.Tensor | None) -> None:
        """Write ``ctx`` into the first slots (one copy) and ``fuser_bias [l, b, p]`` over its first ``p`` slots."""
        s = ctx.length
        if ctx.batch_size != self.batch or s > self.capacity:
            raise ValueError(f"context of batch {ctx.batch_size} and {s} slots does not fit a static cache of batch "
                             f"{self.batch} and {self.capacity} slots")
        self.invalidate()
        for layer, k, v in zip(self.cache.layers, ctx.keys, ctx.values):
            layer.keys[:, :, :s].copy_(k)  # [b, n_kv, s, h_d]
            layer.values[:, :, :s].copy_(v)
            layer.cumulative_length.fill_(s)
        self.valid.zero_()
        self.valid[:, :s].copy_(ctx.valid)
        self.positions.fill_(-1)
        self.positions[:, :s].copy_(ctx.positions)
        self.kinds[:, :s].copy_(ctx.kinds)
        self.length.fill_(s)
        self.next_pos.copy_(ctx.next_position())
        self.bias.zero_()
        if fuser_bias is not None:
            self.bias[:, :, :fuser_bias.shape[-1]].copy_(fuser_bias.detach())  # [l, b, p] into [l, b, c]
        self.filled = s
        self._bias_source = weakref.ref(fuser_bias) if fuser_bias is not None else None

    def continues(self, ctx: KVMessage, fuser_bias: torch.Tensor | None, need: int) -> bool:
        """True when ``ctx`` is the message this cache handed out last, unchanged since, with the same bias.

        Then the next call goes on in place, without writing the context again.
        """
        if need > self.capacity or self._snapshot is None or self._snapshot() is not ctx:
            return False
        source = self._bias_source() if self._bias_source is not None else None
        return source is fuser_bias

    def invalidate(self) -> None:
        """Forget the last message handed out: the cache is about to change."""
        self._snapshot = None

    def mark(self, start: int, kind: SlotKind) -> None:
        """Record what produced the slots from ``start`` to the filled length (host-driven, once per call)."""
        self.kinds[:, start:self.filled] = int(kind)

    def snapshot(self) -> KVMessage:
        """The filled slots as a new message (copies: the cache goes on being written)."""
        n = self.filled
        msg = KVMessage(
            keys=tuple(layer.keys[:, :, :n].clone() for layer in self.cache.layers),  # [b, n_kv, n, h_d]
            values=tuple(layer.values[:, :, :n].clone() for layer in self.cache.layers),
            valid=self.valid[:, :n].clone(),
            positions=self.positions[:, :n].clone(),
            kinds=self.kinds[:, :n].clone(),
        )
        self._snapshot = weakref.ref(msg)
        return msg

    def state(self) -> list[torch.Tensor]:
        """The tensors a step advances, besides the key/value slots it writes past ``length``."""
        return [self.length, self.next_pos, self.valid, self.positions, self.hidden,
                *(layer.cumulative_length for layer in self.cache.layers)]

    # ------------------------------------------------------------------ device side (graph-safe)
    def forward(self, decoder, cache_arg: str, inputs_embeds: torch.Tensor, new_valid: torch.Tensor) -> torch.Tensor:
        """Run ``decoder`` over ``t`` new slots written in place after the filled ones.

        Free of host synchronisation for any ``t``: the slot index, positions and mask come from device tensors, so
        the same code runs eagerly (prefill) and inside a captured graph (one-slot steps). Same padding and position
        rule as :meth:`LatentEngine.extend`. The host advances :attr:`filled`.

        Args:
            decoder: the model's decoder (``model.get_decoder()``).
            cache_arg (str): the decoder's name for its cache argument.
            inputs_embeds (torch.Tensor): ``[b, t, d]`` left-padded input embeddings.
            new_valid (torch.Tensor): ``[b, t]`` bool, False for padding.

        Returns:
            torch.Tensor: ``[b, t, d]`` last hidden states (after the final norm).
        """
        t = inputs_embeds.shape[1]
        slots = torch.arange(t, device=self.device) + self.length  # [t] physical slots of the new keys
        offsets = new_valid.long().cumsum(dim=1) - 1  # [b, t] index among the row's real new slots
        positions = (self.next_pos[:, None] + offsets.clamp_min(0)).masked_fill(~new_valid, -1)  # [b, t]
        self.valid.index_copy_(1, slots, new_valid)
        self.positions.index_copy_(1, slots, positions)
        self.next_pos.add_(new_valid.sum(dim=1))
        mask = build_attention_mask(self.valid, t, inputs_embeds.dtype, q_start=self.length)  # [b, 1, t, c]
        out = decoder(inputs_embeds=inputs_embeds, attention_mask=mask, position_ids=positions.clamp_min(0),
                      use_cache=True, fuser_bias=self.bias, **{cache_arg: self.cache})
        self.length.add_(t)
        return out.last_hidden_state  # [b, t, d]


class FastLatentEngine(LatentEngine):
    """:class:`LatentEngine` on static caches, with steps captured as CUDA graphs on CUDA.

    Same interface and the same answers as the eager engine (tested to 1e-4 in float32); without gradients,
    :meth:`prefill`, :meth:`think` and :meth:`decode` run on a :class:`StaticContext` taken from a small pool keyed
    by batch and capacity, and each call hands back a new message (a copy of the filled slots). A call that
    receives the message the previous call returned goes on in the same cache without writing it again.

    Args:
        model: see :class:`LatentEngine`.
        tokenizer: see :class:`LatentEngine`.
        realign (bool): see :class:`LatentEngine`. Default is True.
        lam (float): see :class:`LatentEngine`. Default is 1e-5.
        cuda_graphs (bool | None): capture the one-slot steps as CUDA graphs; None means "when the model is on
            CUDA". Default is None.
        bucket (int): capacities are rounded up to a multiple of this, so that a cache (and its captured graphs)
            serves contexts of nearby lengths. Default is 512.
        reserve (int): free slots a prefill leaves for the latent steps or tokens that follow (a later call that
            needs more moves to a bigger cache, one copy); also how much bigger than needed a pooled cache may be
            and still be reused. Default is 320.
        max_caches (int): static caches kept (least recently used dropped first, with their graphs). Default is 4.

    Example:
        >>> engine = FastLatentEngine(model, tokenizer)  # needs a loaded model  # doctest: +SKIP
        >>> with torch.no_grad():  # doctest: +SKIP
        ...     ctx, h, logits, _ = engine.prefill(engine.empty_context(1), ["<prompt>"])
        ...     ctx, h = engine.think(ctx, h, steps=40)
    """

    def __init__(self, model, tokenizer, *, realign: bool = True, lam: float = 1e-5, cuda_graphs: bool | None = None,
                 bucket: int = 512, reserve: int = 320, max_caches: int = 4, max_context: int | None = None) -> None:
        super().__init__(model, tokenizer, realign=realign, lam=lam, max_context=max_context)
        if bucket < 1 or reserve < 0 or max_caches < 1:
            raise ValueError(f"bucket and max_caches must be >= 1 and reserve >= 0, got {bucket}, {reserve}, "
                             f"{max_caches}")
        if is_dispatched(model):
            raise ValueError("the fast engine needs the whole model on one device, not dispatched by a device map "
                             "(its static cache and captured graphs live on one device)")
        on_cuda = self.device.type == "cuda"
        if cuda_graphs and not on_cuda:
            raise ValueError(f"CUDA graphs need the model on a CUDA device, not {self.device}")
        self.cuda_graphs = on_cuda if cuda_graphs is None else cuda_graphs
        self.bucket, self.reserve, self.max_caches = bucket, reserve, max_caches
        self._caches: OrderedDict[tuple[int, int], StaticContext] = OrderedDict()
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self._hidden_size = cfg.hidden_size

    # ------------------------------------------------------------------ caches
    def _static(self, ctx: KVMessage, fuser_bias: torch.Tensor | None, need: int, headroom: int = 0) -> StaticContext:
        """A static cache holding ``ctx`` with room for ``need`` slots in all.

        The cache ``ctx`` came from when it can go on in place; else the smallest pooled cache of that batch with
        between ``need`` and ``need + reserve`` slots (rounded up to the bucket), so that its captured graphs serve
        again; else a new one of ``need + headroom`` slots (rounded up). The context is then written into it.
        """
        for key, cache in self._caches.items():
            if cache.batch == ctx.batch_size and cache.continues(ctx, fuser_bias, need):
                self._caches.move_to_end(key)
                cache.invalidate()  # until this call's snapshot: a call that fails midway must not be continued
                return cache
        round_up = lambda n: self.bucket * math.ceil(max(n, 1) / self.bucket)  # noqa: E731
        fits = [key for key in self._caches if key[0] == ctx.batch_size
                and round_up(need) <= key[1] <= round_up(need + max(self.reserve, headroom))]
        key = min(fits, key=lambda k: k[1]) if fits else (ctx.batch_size, round_up(need + headroom))
        cache = self._caches.pop(key, None)
        if cache is None:
            while len(self._caches) >= self.max_caches:
                self._caches.popitem(last=False)
            cache = StaticContext(num_layers=self.num_layers, batch=key[0], n_kv=self.n_kv, head_dim=self.head_dim,
                                  capacity=key[1], hidden_size=self._hidden_size, dtype=self.dtype, device=self.device)
        self._caches[key] = cache  # most recently used last
        cache.load(ctx, fuser_bias)
        return cache

    def release(self) -> None:
        """Drop every static cache and captured graph (their memory returns to the allocator)."""
        self._caches.clear()

    # ------------------------------------------------------------------ steps
    def _latent_step(self, cache: StaticContext) -> None:
        """One latent thought in place: ``hidden <- f(normalise(hidden · W_a))`` over one new slot."""
        e = self.latent_embedding(cache.hidden)[:, None, :]  # [b, 1, d], realigned in float32
        h = cache.forward(self.model.get_decoder(), self._cache_arg, e, cache.ones)  # [b, 1, d]
        cache.hidden.copy_(h[:, -1])

    def _decode_step(self, cache: StaticContext) -> None:
        """One decoded token in place: ``logits <- head(f(embed(token_ids)))``; rows with ``step_valid`` False pad."""
        e = self.embed(cache.token_ids[:, None])  # [b, 1, d]
        h = cache.forward(self.model.get_decoder(), self._cache_arg, e, cache.step_valid[:, None])  # [b, 1, d]
        cache.logits.copy_(self.model.get_output_embeddings()(h[:, -1]))  # [b, v]

    def _run(self, cache: StaticContext, name: str, step: Callable[[StaticContext], None]) -> None:
        """Run one step: replay its captured graph (capturing it on first use) or call it."""
        if self.cuda_graphs:
            graph = cache.graphs.get(name)
            if graph is None:
                graph = self._capture(cache, name, step)
            if graph is not None:
                graph.replay()
                cache.filled += 1
                return
        step(cache)
        cache.filled += 1

    def _capture(self, cache: StaticContext, name: str,
                 step: Callable[[StaticContext], None]) -> torch.cuda.CUDAGraph | None:
        """Capture ``step`` on ``cache`` as a CUDA graph (kept as ``cache.graphs[name]``); on failure, log it and go
        on without graphs."""
        saved = [t.clone() for t in cache.state()]
        try:
            side = torch.cuda.Stream(device=self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):  # warm-up outside the capture: lazy initialisations, library handles
                step(cache)
            torch.cuda.current_stream(self.device).wait_stream(side)
            for t, s in zip(cache.state(), saved):  # the warm-up step really ran: undo it
                t.copy_(s)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):  # recorded, not run: the state is unchanged
                step(cache)
        except Exception as err:  # an operation that cannot be captured: the static cache still works uncaptured
            logger.warning("CUDA graph capture failed (%s: %s); the fast engine goes on without CUDA graphs",
                           type(err).__name__, err)
            self.cuda_graphs = False
            torch.cuda.synchronize(self.device)
            for t, s in zip(cache.state(), saved):
                t.copy_(s)
            return None
        cache.graphs[name] = graph
        return graph

    # ------------------------------------------------------------------ the engine's interface
    def prefill(self, ctx: KVMessage, prompts: list[str], fuser_bias: torch.Tensor | None = None,
                headroom: int = 0):
        """See :meth:`LatentEngine.prefill`; written into a static cache with :attr:`reserve` slots to spare."""
        if torch.is_grad_enabled():
            return super().prefill(ctx, prompts, fuser_bias, headroom)
        ids, valid = self.tokenize(prompts)
        self.check_room(ctx, valid.sum(dim=1), headroom)  # the context limit holds here too
        t = ids.shape[1]
        cache = self._static(ctx, fuser_bias, ctx.length + t, headroom=self.reserve)
        start = cache.filled
        hidden = cache.forward(self.model.get_decoder(), self._cache_arg, self.embed(ids), valid)  # [b, t, d]
        cache.filled += t
        cache.mark(start, SlotKind.PROMPT)
        h = hidden[:, -1]  # [b, d]: the only slot whose logits anyone reads
        return cache.snapshot(), h, self.model.get_output_embeddings()(h), valid.sum(dim=1)

    def think(self, ctx: KVMessage, hidden: torch.Tensor, steps: int, fuser_bias: torch.Tensor | None = None,
              record: list[torch.Tensor] | None = None):
        """See :meth:`LatentEngine.think`; each step is one graph replay on CUDA."""
        if steps < 0:
            raise ValueError(f"latent steps must be >= 0, got {steps}")
        if torch.is_grad_enabled() or steps == 0:
            return super().think(ctx, hidden, steps, fuser_bias, record)
        self.realignment()  # solved once, outside any capture (the solver synchronises with the host)
        cache = self._static(ctx, fuser_bias, ctx.length + steps)
        start = cache.filled
        cache.hidden.copy_(hidden)
        for _ in range(steps):
            self._run(cache, "latent", self._latent_step)
            if record is not None:
                record.append(cache.hidden.clone())
        cache.mark(start, SlotKind.LATENT)
        return cache.snapshot(), cache.hidden.clone()

    def decode(self, ctx: KVMessage, first_logits: torch.Tensor, cfg: DecodeConfig,
               fuser_bias: torch.Tensor | None = None, generator: torch.Generator | None = None) -> Decoded:
        """See :meth:`LatentEngine.decode`; one graph replay per token on CUDA, one host sync (have all stopped?)."""
        if torch.is_grad_enabled():
            return super().decode(ctx, first_logits, cfg, fuser_bias, generator)
        b, device = ctx.batch_size, first_logits.device
        cache = self._static(ctx, fuser_bias, ctx.length + cfg.max_new_tokens)
        if cache.logits is None:
            cache.logits = torch.empty_like(first_logits)  # [b, v]
        start = cache.filled
        stop = torch.tensor(sorted(self.stop_ids), device=device, dtype=torch.long)
        done = torch.zeros(b, dtype=torch.bool, device=device)
        tokens = torch.full((b, cfg.max_new_tokens), -1, dtype=torch.long, device=device)  # -1: not generated
        logits = first_logits
        first_stop_prob = self.stop_probability(first_logits)
        for i in range(cfg.max_new_tokens):
            next_ids = sample_next_token(logits, cfg.temperature, cfg.top_p, generator)  # [b]
            is_stop = torch.isin(next_ids, stop)
            tokens[:, i] = next_ids.masked_fill(done | is_stop, -1)  # what the eager loop appends
            done = done | is_stop
            if bool(done.all()):
                break
            cache.token_ids.copy_(next_ids)
            cache.step_valid.copy_(~done)  # finished rows add a padding slot
            self._run(cache, "decode", self._decode_step)
            logits = cache.logits
        cache.mark(start, SlotKind.GENERATED)
        generated = [[t for t in row if t >= 0] for row in tokens.tolist()]
        texts = [self.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in generated]
        return Decoded(texts=texts, token_ids=generated, context=cache.snapshot(), truncated=(~done).tolist(),
                       first_stop_prob=first_stop_prob)
