"""The seed's mode-1 entry point (all agents on a local model, real KV messages), over the gcache CLI.

    python experiments/run_gsm8k_cache.py --llm_name smollm2 --use_cache --device cpu \
        --dataset_json ../shared/data/gsm8k/test.jsonl --limit 8 --num_iterations 0
"""

import sys

from gcache.recipes.seed import seed_main

if __name__ == "__main__":
    sys.exit(seed_main(sys.argv[1:], api=False))
