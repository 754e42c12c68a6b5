"""The seed's API entry point (modes 2-4), over the gcache CLI.

    # hybrid: local latent agents, the API model answers from their decoded thoughts
    python experiments/run_gsm8k_cache_API.py --llm_name hybrid_cache --use_cache --dataset_json data.jsonl
    # text graph over the API (G-Designer baseline)
    python experiments/run_gsm8k_cache_API.py --llm_name qwen-flash --dataset_json data.jsonl

API_KEY, BASE_URL and API_MODEL come from the environment or a .env file.
"""

import sys

from gcache.recipes.seed import seed_main

if __name__ == "__main__":
    sys.exit(seed_main(sys.argv[1:], api=True))
