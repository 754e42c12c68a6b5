"""Model resolution errors, the tiny builders, and the frozen embedded SmolLM2."""

from __future__ import annotations

import pytest
import torch

from gcache.models import (
    EMBEDDED_MODELS,
    ModelNotFoundError,
    load_model,
    resolve_dtype,
    resolve_model,
    tiny_random_model,
)
from gcache.modules.attention import FUSED_ATTENTION


def test_missing_local_path_says_what_is_accepted(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelNotFoundError, match="model path not found") as err:
        resolve_model(str(missing))
    message = str(err.value)
    assert str(missing) in message and "hub id" in message and ".gguf" in message
    for name in EMBEDDED_MODELS:
        assert name in message
    assert isinstance(err.value, ValueError)  # callers that catch ValueError keep working


def test_missing_gguf_file(tmp_path):
    with pytest.raises(ModelNotFoundError, match="GGUF file not found") as err:
        resolve_model(str(tmp_path / "weights.Q4.gguf"))
    assert "weights.Q4.gguf" in str(err.value)


def test_directory_without_config(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_resolution_of_existing_files_and_hub_ids(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    spec = resolve_model(str(gguf))
    assert spec.gguf_file == str(gguf) and spec.path == str(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model(str(tmp_path)).gguf_file is None
    assert resolve_model("Qwen/Qwen3-0.6B").path == "Qwen/Qwen3-0.6B"  # a hub id is left to transformers


def test_load_model_turns_missing_files_into_model_not_found(tmp_path):
    with pytest.raises(ModelNotFoundError):
        load_model(str(tmp_path / "absent" / "dir"))


def test_resolve_dtype():
    assert resolve_dtype("bf16") is torch.bfloat16 and resolve_dtype(torch.float16) is torch.float16
    assert resolve_dtype("auto") is (torch.bfloat16 if torch.cuda.is_available() else torch.float32)
    with pytest.raises(ValueError, match="unknown dtype 'int8'"):
        resolve_dtype("int8")


@pytest.mark.parametrize("arch", ["qwen3", "llama"])
def test_tiny_random_model_is_frozen_and_seeded(arch):
    model, tok = tiny_random_model(arch, seed=5)
    again, _ = tiny_random_model(arch, seed=5)
    other, _ = tiny_random_model(arch, seed=6)
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())
    assert model.config._attn_implementation == FUSED_ATTENTION
    assert model.config.num_hidden_layers == 2 and not model.config.tie_word_embeddings
    w = model.get_input_embeddings().weight
    assert torch.equal(w, again.get_input_embeddings().weight)
    assert not torch.equal(w, other.get_input_embeddings().weight)
    assert tok.padding_side == "left" and tok.pad_token_id is not None
    assert tok.decode(tok("héllo 12", add_special_tokens=False)["input_ids"]) == "héllo 12"  # byte-level round trip
    with pytest.raises(ValueError, match="unknown tiny architecture"):
        tiny_random_model("gpt2")


@pytest.mark.real_model
def test_smollm2_is_frozen(smollm2):
    model, tok = smollm2
    assert not model.training
    params = list(model.parameters())
    assert params and all(not p.requires_grad for p in params)
    assert model.config._attn_implementation == FUSED_ATTENTION
    assert tok.pad_token_id is not None and tok.padding_side == "left"
    ids = tok("2 + 3 =", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape == (1, ids.shape[1], model.config.vocab_size) and torch.isfinite(logits).all()
