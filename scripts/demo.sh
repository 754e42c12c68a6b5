#!/usr/bin/env bash
# Install, then run LatentMAS-style latent collaboration (sequential, KV-cache messages) on GSM8K with the
# embedded SmolLM2-135M-Instruct. Rerunning resumes; results land in runs/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
DATA=../shared/data/gsm8k/test.jsonl
DATA_FLAG=()
[ -f "$DATA" ] && DATA_FLAG=(--data "$DATA")   # otherwise openai/gsm8k from the Hugging Face hub
.venv/bin/gcache eval --method latentmas_seq --dataset gsm8k "${DATA_FLAG[@]}" --limit "${LIMIT:-8}" \
    --model smollm2 --latent-steps 4 --batch-size 4 --max-new-tokens 256 --out runs/demo
