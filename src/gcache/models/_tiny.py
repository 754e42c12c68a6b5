"""Tiny random-weight models of real architectures, for tests and speed measurements.

Speed does not depend on the weights, and numerical equivalences (cache vs no cache, batch vs one by one)
hold for any weights, so a 2-layer Qwen3 or Llama with a byte-level tokenizer exercises every code path
without a hub.
"""

from __future__ import annotations

import torch

from gcache.models._frozen import prepare_frozen

__all__ = ["QWEN3_SHAPES", "random_qwen3", "tiny_tokenizer", "tiny_random_model"]

# (hidden, layers, heads, kv heads, head dim, intermediate, vocab) of the Qwen3 family, and a tiny stand-in with
# which a speed script runs on CPU in seconds (the byte-level tokenizer's 259 tokens).
QWEN3_SHAPES = {
    "tiny": (64, 2, 4, 2, 16, 128, 259),
    "qwen3-0.6b": (1024, 28, 16, 8, 128, 3072, 151936),
    "qwen3-1.7b": (2048, 28, 16, 8, 128, 6144, 151936),
    "qwen3-4b": (2560, 36, 32, 8, 128, 9728, 151936),
    "qwen3-8b": (4096, 36, 32, 8, 128, 12288, 151936),
}

_CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_tokenizer():
    """A byte-level tokenizer (256 bytes + ChatML specials) with a ChatML chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    for tok in specials:
        vocab[tok] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(specials)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  bos_token=None, padding_side="left")
    tok.chat_template = _CHATML
    return tok


def tiny_random_model(arch: str = "qwen3", *, seed: int = 0, num_layers: int = 2, hidden_size: int = 64,
                      dtype: torch.dtype = torch.float32):
    """A random-weight causal LM of a real architecture and its byte-level tokenizer.

    Args:
        arch (str): ``"qwen3"`` or ``"llama"``. Default is ``"qwen3"``.
        seed (int): weight seed. Default is 0.
        num_layers (int): decoder layers. Default is 2.
        hidden_size (int): hidden size (4 heads, 2 KV heads). Default is 64.

    Returns:
        tuple: ``(model, tokenizer)``, frozen, in eval mode, with G-cache's fusing attention.
    """
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen3Config

    from gcache.modules.attention import FUSED_ATTENTION, register_fused_attention

    register_fused_attention()
    tok = tiny_tokenizer()
    common = dict(vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                  num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
                  max_position_embeddings=4096, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                  tie_word_embeddings=False)
    if arch == "qwen3":
        config = Qwen3Config(head_dim=hidden_size // 4, **common)
    elif arch == "llama":
        config = LlamaConfig(**common)
    else:
        raise ValueError(f"unknown tiny architecture {arch!r}; choose qwen3 or llama")
    config._attn_implementation = FUSED_ATTENTION
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=FUSED_ATTENTION).to(dtype)
    return prepare_frozen(model, tok)


def random_qwen3(shape: str, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", seed: int = 0):
    """A random-weight Qwen3 of a real model's shape, built directly on ``device``, with the byte-level tokenizer.

    Speed does not depend on the weights, so this measures what the real model would cost without a hub.

    Args:
        shape (str): a key of :data:`QWEN3_SHAPES`.
        dtype (torch.dtype): weight dtype. Default is float32.
        device (str | torch.device): where the weights are created. Default is ``"cpu"``.
        seed (int): weight seed. Default is 0.

    Returns:
        tuple: ``(model, tokenizer)``, frozen, in eval mode, with G-cache's fusing attention.
    """
    from transformers import AutoModelForCausalLM, Qwen3Config

    from gcache.modules.attention import FUSED_ATTENTION, register_fused_attention

    if shape not in QWEN3_SHAPES:
        raise ValueError(f"unknown Qwen3 shape {shape!r}; choose one of {', '.join(QWEN3_SHAPES)}")
    hidden, layers, heads, kv, head_dim, inter, vocab = QWEN3_SHAPES[shape]
    register_fused_attention()
    tok = tiny_tokenizer()
    cfg = Qwen3Config(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv,
                      head_dim=head_dim, intermediate_size=inter, vocab_size=vocab, tie_word_embeddings=False,
                      max_position_embeddings=40960, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation=FUSED_ATTENTION, dtype=dtype)
    return prepare_frozen(model, tok)
