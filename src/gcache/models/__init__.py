"""Model loading: hub ids, local directories, GGUF files and the embedded default ``smollm2``."""

from gcache.models._load import (
    EMBEDDED_MODELS,
    TINY_MODELS,
    ModelNotFoundError,
    ModelSpec,
    load_model,
    resolve_dtype,
    resolve_model,
)
from gcache.models._dispatch import execution_device, layer_devices
from gcache.models._frozen import prepare_frozen
from gcache.models._tiny import QWEN3_SHAPES, random_qwen3, tiny_random_model, tiny_tokenizer

__all__ = ["EMBEDDED_MODELS", "QWEN3_SHAPES", "TINY_MODELS", "ModelNotFoundError", "ModelSpec", "execution_device",
           "layer_devices", "load_model", "prepare_frozen", "random_qwen3", "resolve_dtype", "resolve_model",
           "tiny_random_model", "tiny_tokenizer"]
