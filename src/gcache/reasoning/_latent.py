"""The local latent engine: prefill on top of a received cache, latent thoughts, and decoding from a cache.

Pure pieces (:func:`realignment_matrix`, :func:`sample_next_token`) sit next to :class:`LatentEngine`, a thin
stateful wrapper that owns a frozen model, its tokenizer and the realignment matrix (built once per model).

The engine does not choose the grad mode: callers run inference under ``torch.no_grad()`` and training
under grad (:meth:`LatentEngine.answer_nll` always enables it).

Every forward pass is explicit about padding and positions: new slots are left-padded within their segment,
their rotary positions continue after the largest position in the context (per row), and the 4-D mask comes
from :func:`gcache.modules.attention.build_attention_mask`. This is what makes a batch of questions give what
one-by-one gives, with latent steps too.

Notation: b = batch, t = new slots, s = context slots, d = hidden size, v = vocabulary.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass

import torch

from gcache.models._dispatch import execution_device, layer_devices
from gcache.modules.attention import build_attention_mask
from gcache.modules.kv_message import KVMessage, SlotKind
from gcache.reasoning._decoding import DecodeCache

logger = logging.getLogger(__name__)

__all__ = ["ContextOverflowError", "DecodeConfig", "Decoded", "LatentEngine", "realignment_matrix",
           "sample_next_token", "render_chat"]


class ContextOverflowError(ValueError):
    """Some rows of a batch would not fit the model's context (or the configured cap).

    Args:
        needs (dict[int, int]): positions each row that does not fit would need, by row of the batch.
        limit (int): positions the context holds.
    """

    def __init__(self, needs: dict[int, int], limit: int) -> None:
        self.needs, self.limit = needs, limit
        self.rows = sorted(needs)
        super().__init__(f"rows {self.rows} need up to {max(needs.values())} positions; the context holds {limit}")

    def for_questions(self, b: int) -> "ContextOverflowError":
        """The same overflow with rows of a stacked batch (``k * b + r``: node ``k``, question ``r``) as questions."""
        needs: dict[int, int] = {}
        for row, need in self.needs.items():
            needs[row % b] = max(need, needs.get(row % b, 0))
        return ContextOverflowError(needs, self.limit)

    def row_message(self, row: int) -> str:
        """One line about ``row``."""
        return f"needs {self.needs[row]} positions (prompt, context and what it would generate or think); " \
               f"the model's context holds {self.limit}"


@dataclass(frozen=True)
class DecodeConfig:
    """How text is decoded from a cache.

    Args:
        max_new_tokens (int): cap on generated tokens per row. Default is 256.
        temperature (float): 0 for greedy. Default is 0.0.
        top_p (float): nucleus mass kept when sampling. Default is 1.0.
    """

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass
class Decoded:
    """Text decoded for a batch, with the cache it ended with.

    Attributes:
        texts (list[str]): decoded text per row.
        token_ids (list[list[int]]): generated ids per row, stop token excluded.
        context (KVMessage): the cache after decoding.
        truncated (list[bool]): the row hit ``max_new_tokens`` without a stop token (its answer may be cut).
        first_stop_prob (torch.Tensor): ``[b]`` probability mass the first decoding step put on stop tokens (a
            judge that ends its turn at once has this near 1).
    """

    texts: list[str]
    token_ids: list[list[int]]
    context: KVMessage
    truncated: list[bool]
    first_stop_prob: torch.Tensor


#: End-of-turn / end-of-text markers of common chat families. Decoding stops at any of them that the
#: tokenizer knows as one token, besides the model's own eos ids: a Qwen GGUF declares only ``<|im_end|>``
#: although its base model ends documents with ``<|endoftext|>``, and a Llama 3 chat turn ends with ``<|eot_id|>``.
END_MARKERS = ("<|im_end|>", "<|endoftext|>", "<|end_of_text|>", "<|eot_id|>", "<|eom_id|>", "<|end|>",
               "<end_of_turn>", "</s>", "<|END_OF_TURN_TOKEN|>")


def realignment_matrix(w_in: torch.Tensor, w_out: torch.Tensor, lam: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """LatentMAS's realignment from output hidden states back to input embeddings.

    .. math::
        W_a = (W_{out}^T W_{out} + \\lambda I)^{-1} W_{out}^T W_{in}

    the ridge solution of ``W_out W_a ≈ W_in``, solved in float32.

    Args:
        w_in (torch.Tensor): input embedding matrix ``[v, d]``.
        w_out (torch.Tensor): output (LM head) matrix ``[v, d]``.
        lam (float): ridge term. Default is 1e-5.

    Returns:
        tuple: ``(W_a [d, d], target_norm [])`` where ``target_norm`` is the mean row norm of ``W_in``.
    """
    w_in32, w_out32 = w_in.float(), w_out.float()
    gram = w_out32.T @ w_out32  # [d, d]
    gram = gram + lam * torch.eye(gram.shape[0], device=gram.device, dtype=gram.dtype)
    rhs = w_out32.T @ w_in32  # [d, d]
    w_a = torch.linalg.solve(gram, rhs)
    return w_a, w_in32.norm(dim=1).mean()


def sample_next_token(logits: torch.Tensor, temperature: float, top_p: float,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Greedy (``temperature == 0``) or nucleus sampling. ``logits [b, v]`` -> ids ``[b]``."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        drop = sorted_p.cumsum(dim=-1) - sorted_p > top_p  # keep the smallest prefix whose mass reaches top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def render_chat(tokenizer, messages: list[dict]) -> str:
    """Render chat messages with the tokenizer's template, or a plain fallback for models without one."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n\n".join(lines) + "\n\nAssistant:"


class LatentEngine:
    """A frozen local model that prefills, thinks in latent space and decodes, all on explicit caches.

    Args:
        model: a transformers causal LM loaded with :func:`gcache.models.load_model` (fusing attention).
        tokenizer: its tokenizer (left padding).
        realign (bool): map hidden states back to the input-embedding space with :func:`realignment_matrix`;
            False uses the identity (still rescaled to the embedding norm). Default is True.
        lam (float): ridge term of the realignment. Default is 1e-5.
        max_context (int | None): cap on the positions one context may hold, below the model's own
            ``max_position_embeddings``. Default is None (the model's).

    Example:
        >>> engine = LatentEngine(model, tokenizer)  # needs a loaded model  # doctest: +SKIP
        >>> ctx, h = engine.prefill(engine.empty_context(1), ["<prompt>"])  # doctest: +SKIP
        >>> ctx, h = engine.think(ctx, h, steps=4)  # doctest: +SKIP
        >>> engine.decode(ctx, h, DecodeConfig(max_new_tokens=32)).texts  # doctest: +SKIP
    """

    def __init__(self, model, tokenizer, *, realign: bool = True, lam: float = 1e-5,
                 max_context: int | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.realign = realign
        self.lam = lam
        self._realign_cache: tuple[torch.Tensor, torch.Tensor] | None = None
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.num_layers = cfg.num_hidden_layers
        self.n_kv = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        limits = [n for n in (getattr(cfg, "max_position_embeddings", None), max_context) if n]
        #: Most positions one context may hold (prompt, latent and generated slots together).
        self.context_length: int | None = min(limits) if limits else None
        self.stop_ids = self._stop_ids()
        # transformers renamed the decoder's `past_key_values` argument to `cache` (5.2x); use what it takes.
        params = inspect.signature(model.get_decoder().forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    # ------------------------------------------------------------------ basics
    # A model dispatched over devices (--device-map) computes each part where accelerate put it, whatever device
    # its (possibly offloaded) parameters show; inputs go where the embeddings compute, each layer's cache stays
    # where that layer computes, and logits come out where the LM head computes.
    @property
    def device(self) -> torch.device:
        """Where the input embeddings compute: token ids, masks and positions live here."""
        return execution_device(self.model.get_input_embeddings())

    @property
    def output_device(self) -> torch.device:
        """Where the LM head computes (the logits' device)."""
        return execution_device(self.model.get_output_embeddings())

    @property
    def layer_devices(self) -> list[torch.device]:
        """Where each decoder layer computes, and so where its keys and values are kept."""
        return layer_devices(self.model)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def _stop_ids(self) -> set[int]:
        """The model's eos ids plus every :data:`END_MARKERS` token its vocabulary holds as a single token."""
        ids: set[int] = set()
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        for value in (gen_eos, self.tokenizer.eos_token_id):
            if isinstance(value, int):
                ids.add(value)
            elif value is not None:
                ids.update(int(v) for v in value)
        vocab = self.tokenizer.get_vocab()
        ids.update(vocab[m] for m in END_MARKERS if m in vocab)
        return ids

    def empty_context(self, batch: int) -> KVMessage:
        return KVMessage.empty(num_layers=self.num_layers, batch=batch, n_kv=self.n_kv, head_dim=self.head_dim,
                               dtype=self.dtype, device=self.device, layer_devices=self.layer_devices)

    def realignment(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W_a [d, d], target_norm [])`` in float32 whatever the model dtype, built once and reused."""
        if self._realign_cache is None:
            from accelerate.utils import align_module_device

            embed, head = self.model.get_input_embeddings(), self.model.get_output_embeddings()
            with align_module_device(embed), align_module_device(head):  # offloaded weights, brought in for this
                w_in = embed.weight.detach()
                w_out = head.weight.detach().to(w_in.device)  # the head may sit on another GPU than the embeddings
            if self.realign:
                w_a, norm = realignment_matrix(w_in, w_out, self.lam)
            else:
                w_a = torch.eye(w_in.shape[1], device=w_in.device)
                norm = w_in.float().norm(dim=1).mean()
            self._realign_cache = (w_a.float(), norm.float())
        return self._realign_cache

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded ``(ids [b, t], valid [b, t])`` without extra special tokens (templates add their own).

        Padded here rather than by the tokenizer: every row's last slot must be real whatever the tokenizer's
        ``padding_side`` (a right-padded row would hand on the hidden state of a padding slot).
        """
        return self._left_pad(self.tokenizer(list(texts), add_special_tokens=False)["input_ids"])

    # ------------------------------------------------------------------ forward on a context
    def extend(self, ctx: KVMessage, inputs_embeds: torch.Tensor, new_valid: torch.Tensor, kind: SlotKind,
               fuser_bias: torch.Tensor | None = None, logits: str = "last") -> tuple[KVMessage, torch.Tensor, torch.Tensor | None]:
        """Run the model over new slots on top of ``ctx``.

        Args:
            ctx (KVMessage): the context (``s`` slots); not modified.
            inputs_embeds (torch.Tensor): ``[b, t, d]`` input embeddings of the new slots (left-padded).
            new_valid (torch.Tensor): ``[b, t]`` bool, False for padding.
            kind (SlotKind): what the new slots are.
            fuser_bias (torch.Tensor | None): ``[l, b, p]`` additive key bias over the first ``p`` context slots.
            logits (str): ``"last"`` for the last slot's logits, ``"all"`` for every slot's, ``"none"``.

        Returns:
            tuple: ``(context [s + t slots], last hidden state [b, d], logits [b, v] | [b, t, v] | None)``.
        """
        from transformers import DynamicCache

        b, t, _ = inputs_embeds.shape
        new_valid = new_valid.to(ctx.valid.device)  # decoding makes it where the logits are (the LM head's device)
        start = ctx.next_position()  # [b]
        offsets = new_valid.long().cumsum(dim=1) - 1  # [b, t] index among the row's real new slots
        positions = (start[:, None] + offsets.clamp_min(0)).masked_fill(~new_valid, -1)  # [b, t]
        cache = DynamicCache()
        for i, (k, v) in enumerate(zip(ctx.keys, ctx.values)):
            # `update` on an empty layer would copy the whole context (cat onto an empty tensor) at every step;
            # initialise the layer with no slots and hand it references instead. The model's own update then
            # concatenates into new tensors, so ctx is never written to.
            cache.update(k[:, :, :0], v[:, :, :0], i)
            cache.layers[i].keys, cache.layers[i].values = k, v
        key_valid = torch.cat([ctx.valid, new_valid], dim=1)  # [b, s + t]
        mask = build_attention_mask(key_valid, t, inputs_embeds.dtype)  # [b, 1, t, s + t]
        extra = {"fuser_bias": fuser_bias} if fuser_bias is not None else {}
        extra[self._cache_arg] = cache
        out = self.model.get_decoder()(
            inputs_embeds=inputs_embeds,
            attention_mask=mask,
            position_ids=positions.clamp_min(0),
            use_cache=True,
            **extra,
        )
        hidden = out.last_hidden_state  # [b, t, d], after the final norm
        # The model appended the new slots to `cache` (by concatenation into new tensors: ctx is untouched).
        keys = tuple(layer.keys for layer in cache.layers)  # [b, n_kv, s + t, h_d]
        values = tuple(layer.values for layer in cache.layers)
        new_ctx = KVMessage(
            keys=keys,
            values=values,
            valid=key_valid,
            positions=torch.cat([ctx.positions, positions], dim=1),
            kinds=torch.cat([ctx.kinds, torch.full((b, t), int(kind), dtype=torch.long, device=ctx.kinds.device)],
                            dim=1),  # [b, s + t]
        )
        head = self.model.get_output_embeddings()
        if logits == "last":
            out_logits = head(hidden[:, -1])  # [b, v]
        elif logits == "all":
            out_logits = head(hidden)  # [b, t, v]
        else:
            out_logits = None
        return new_ctx, hidden[:, -1], out_logits

    def _left_pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        t = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0  # masked anyway
        ids = torch.tensor([[pad] * (t - len(r)) + r for r in rows], dtype=torch.long, device=self.device)
        valid = torch.tensor([[False] * (t - len(r)) + [True] * len(r) for r in rows], device=self.device)
        return ids, valid  # [b, t] each

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(ids)  # [b, t, d]

    def check_room(self, ctx: KVMessage, new_tokens: torch.Tensor, headroom: int = 0) -> None:
        """Raise unless every row has room for ``new_tokens [b]`` more positions plus ``headroom`` after them.

        Raises:
            ContextOverflowError: naming the rows that do not fit and the sizes, before any tensor of that size
                is made (a 10 MB question must not ask for a terabyte-sized mask).
        """
        if self.context_length is None:
            return
        need = ctx.next_position().to(new_tokens.device) + new_tokens + headroom  # [b]
        rows = (need > self.context_length).nonzero(as_tuple=True)[0].tolist()
        if rows:
            raise ContextOverflowError({r: int(need[r]) for r in rows}, self.context_length)

    def prefill(self, ctx: KVMessage, prompts: list[str], fuser_bias: torch.Tensor | None = None,
                headroom: int = 0):
        """Prefill rendered prompts (one per row) on top of ``ctx``.

        Args:
            headroom (int): positions the caller will add after the prompt (latent steps, new tokens); a row
                without room for prompt + headroom raises :class:`ContextOverflowError`. Default is 0.

        Returns:
            tuple: ``(context, last hidden [b, d], last logits [b, v], prompt token counts [b])``.
        """
        ids, valid = self.tokenize(prompts)
        self.check_room(ctx, valid.sum(dim=1), headroom)  # before the [b, t, d] embeddings of a huge prompt exist
        new_ctx, h, logits = self.extend(ctx, self.embed(ids), valid, SlotKind.PROMPT, fuser_bias)
        return new_ctx, h, logits, valid.sum(dim=1)

    def latent_embedding(self, hidden: torch.Tensor) -> torch.Tensor:
        """``e = normalise(h · W_a)``: a last-layer hidden state ``[b, d]`` as the next input embedding ``[b, d]``.

        Computed in float32 (as LatentMAS does) and returned in the model dtype: in bfloat16 the product and the
        rescaling would otherwise round twice. Free of host synchronisation, so a CUDA graph can hold it.
        """
        w_a, target_norm = self.realignment()
        # [b, d] float32, where the embeddings are (hidden comes from the last layer's device)
        e = hidden.to(w_a.device, torch.float32) @ w_a
        e = e * (target_norm / e.norm(dim=-1, keepdim=True).clamp_min(1e-6))
        return e.to(self.dtype)

    def think(self, ctx: KVMessage, hidden: torch.Tensor, steps: int, fuser_bias: torch.Tensor | None = None,
              record: list[torch.Tensor] | None = None):
        """``steps`` latent thoughts: feed the realigned last hidden state back as the next input embedding.

        Each step adds one slot (kind LATENT) and samples no token.

        Args:
            record (list[torch.Tensor] | None): when given, the last-layer hidden state each step produces
                (``[b, d]``) is appended to it (for diagnostics: what the LM head would read there).

        Returns:
            tuple: ``(context, last hidden [b, d])``.
        """
        if steps < 0:
            raise ValueError(f"latent steps must be >= 0, got {steps}")
        valid = torch.ones(ctx.batch_size, 1, dtype=torch.bool, device=ctx.valid.device)
        for _ in range(steps):
            e = self.latent_embedding(hidden)[:, None, :]  # [b, 1, d]
            ctx, hidden, _ = self.extend(ctx, e, valid, SlotKind.LATENT, fuser_bias, logits="none")
            if record is not None:
                record.append(hidden)
        return ctx, hidden

    def top_tokens(self, hiddens: list[torch.Tensor]) -> list[list[str]]:
        """The LM head's most likely token for each recorded hidden state: ``[b][steps]`` token strings."""
        if not hiddens:
            return []
        head = self.model.get_output_embeddings()
        ids = torch.stack([head(h).argmax(dim=-1) for h in hiddens], dim=1)  # [b, steps]
        return [self.tokenizer.convert_ids_to_tokens(row) for row in ids.tolist()]

    def stop_probability(self, logits: torch.Tensor) -> torch.Tensor:
        """``[b]`` probability mass of the stop tokens under ``logits [b, v]``."""
        stop = torch.tensor(sorted(self.stop_ids), device=logits.device, dtype=torch.long)
        return torch.softmax(logits.detach().float(), dim=-1)[:, stop].sum(dim=-1)

    def decode(self, ctx: KVMessage, first_logits: torch.Tensor, cfg: DecodeConfig,
               fuser_bias: torch.Tensor | None = None, generator: torch.Generator | None = None) -> Decoded:
        """Decode text from a context whose last slot produced ``first_logits [b, v]``.

        The context is copied once into a :class:`~gcache.reasoning._decoding.DecodeCache` that each token writes in
        place; a row leaves the batch when it stops, so the steps after it run only the rows still decoding. The
        context handed back is what stepping every row to the end would give: a stopped row ends in padding slots.
        """
        b = ctx.batch_size
        generated: list[list[int]] = [[] for _ in range(b)]
        truncated = [True] * b  # until the row produces a stop token within the cap
        first_stop_prob = self.stop_probability(first_logits)
        stop = torch.tensor(sorted(self.stop_ids), device=first_logits.device, dtype=torch.long)
        cache = DecodeCache(ctx, ctx.length + cfg.max_new_tokens, fuser_bias)
        logits = first_logits  # [a, v]: the rows still decoding
        for _ in range(cfg.max_new_tokens):
            next_ids = sample_next_token(logits, cfg.temperature, cfg.top_p, generator)  # [a]
            is_stop = torch.isin(next_ids, stop)  # [a]
            for row, token, stopped in zip(cache.rows, next_ids.tolist(), is_stop.tolist()):
                if stopped:
                    truncated[row] = False
                else:
                    generated[row].append(token)
            if bool(is_stop.all()):
                break
            if bool(is_stop.any()):
                cache.drop(is_stop)
                next_ids = next_ids[~is_stop]
            logits = self._decode_step(cache, next_ids)
        texts = [self.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in generated]
        return Decoded(texts=texts, token_ids=generated, context=cache.message(), truncated=truncated,
                       first_stop_prob=first_stop_prob)

    def _decode_step(self, cache: DecodeCache, token_ids: torch.Tensor) -> torch.Tensor:
        """Run ``token_ids [a]`` (one per row still decoding) as the next slot of ``cache``; their logits ``[a, v]``."""
        key_valid, positions = cache.step_inputs()  # [a, n + 1], [a, 1]
        inputs_embeds = self.embed(token_ids[:, None])  # [a, 1, d]
        mask = build_attention_mask(key_valid, 1, inputs_embeds.dtype)  # [a, 1, 1, n + 1]
        extra = {"fuser_bias": cache.fuser_bias} if cache.fuser_bias is not None else {}
        extra[self._cache_arg] = cache.cache
        out = self.model.get_decoder()(inputs_embeds=inputs_embeds, attention_mask=mask, position_ids=positions,
                                       use_cache=True, **extra)
        cache.advance()
        return self.model.get_output_embeddings()(out.last_hidden_state[:, -1])  # [a, v]

    # ------------------------------------------------------------------ convenience
    @torch.no_grad()
    def chat(self, messages_batch: list[list[dict]], cfg: DecodeConfig,
             generator: torch.Generator | None = None) -> tuple[list[str], list[int], list[int]]:
        """Plain chat completion for a batch: ``(texts, prompt_tokens, completion_tokens)``."""
        prompts = [render_chat(self.tokenizer, m) for m in messages_batch]
        ctx, _, logits, n_prompt = self.prefill(self.empty_context(len(prompts)), prompts)
        out = self.decode(ctx, logits, cfg, generator=generator)
        return out.texts, n_prompt.tolist(), [len(ids) for ids in out.token_ids]

    def answer_nll(self, ctx: KVMessage, prompts: list[str], answers: list[str],
                   fuser_bias: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced mean NLL per row of ``answers`` after ``prompts`` on top of ``ctx``.

        Runs with gradients enabled so that a ``fuser_bias`` (or a context) that requires grad gets one; the
        model itself is frozen. The prompt is prefilled, then :meth:`continuation_nll` scores the answer.

        Returns:
            torch.Tensor: ``[b]`` mean negative log-likelihood of each row's answer tokens.
        """
        with torch.enable_grad():
            ctx_p, _, logits, _ = self.prefill(ctx, prompts, fuser_bias)
            return self.continuation_nll(ctx_p, logits, answers, fuser_bias)

    def continuation_nll(self, ctx: KVMessage, first_logits: torch.Tensor, answers: list[str],
                         fuser_bias: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced mean NLL per row of ``answers`` continuing a context whose last slot gave ``first_logits``.

        This is what lets a training step score the gold answer and decode from the same prefilled prompt. The
        answers are left-padded as one new segment (padding sits between prompt and answer, masked; positions
        continue per row), so the first answer token of a row is predicted by ``first_logits`` and every later
        one by the slot before it.

        Args:
            ctx (KVMessage): the context ending with the prompt.
            first_logits (torch.Tensor): ``[b, v]`` logits of the context's last slot.
            answers (list[str]): one target text per row.
            fuser_bias (torch.Tensor | None): ``[l, b, p]`` bias over the first ``p`` context slots.

        Returns:
            torch.Tensor: ``[b]`` mean NLL of each row's answer tokens (grad enabled).
        """
        rows = [self.tokenizer(a, add_special_tokens=False)["input_ids"] for a in answers]
        if not all(rows):
            raise ValueError("every answer to score needs at least one token")
        ids, valid = self._left_pad(rows)  # [b, t]
        with torch.enable_grad():
            _, _, logits = self.extend(ctx, self.embed(ids), valid, SlotKind.GENERATED, fuser_bias, logits="all")
            # predictor of slot j: the logits of slot j - 1, or first_logits for a row's first answer slot
            first = valid & ~torch.cat([torch.zeros_like(valid[:, :1]), valid[:, :-1]], dim=1)  # [b, t]
            shifted = torch.cat([first_logits[:, None].to(logits.device), logits[:, :-1]], dim=1)  # [b, t, v]
            first, ids, valid = first.to(shifted.device), ids.to(shifted.device), valid.to(shifted.device)
            pred = torch.where(first[..., None], first_logits[:, None].to(shifted.dtype), shifted)  # [b, t, v]
            token_logp = torch.log_softmax(pred.float(), dim=-1).gather(-1, ids[..., None]).squeeze(-1)  # [b, t]
            token_logp = token_logp * valid
        return -token_logp.sum(dim=1) / valid.sum(dim=1).clamp_min(1)
