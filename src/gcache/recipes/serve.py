"""``gcache serve``: an OpenAI-compatible server over a local model, so text agents run fully offline.

    gcache serve --model smollm2 --port 8000
    # then: BASE_URL=http://127.0.0.1:8000/v1 API_KEY=anything API_MODEL=smollm2 gcache eval --mode api ...
"""

from __future__ import annotations

import logging

import torch

from gcache.api.server import Completion, build_app, run_server
from gcache.reasoning import DecodeConfig, LatentEngine, make_engine

logger = logging.getLogger(__name__)

__all__ = ["EngineChatBackend", "ServeRecipe"]


class EngineChatBackend:
    """:class:`gcache.api.ChatBackend` over a :class:`LatentEngine` (batched, left-padded decoding)."""

    def __init__(self, engine: LatentEngine, seed: int = 0) -> None:
        self.engine = engine
        # sampling needs a generator on the device of the logits
        self.generator = torch.Generator(device=engine.output_device).manual_seed(seed)

    def chat(self, messages_batch, *, max_new_tokens: int, temperature: float, top_p: float) -> list[Completion]:
        cfg = DecodeConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
        with torch.no_grad():
            texts, n_prompt, n_completion = self.engine.chat(messages_batch, cfg, self.generator)
        return [Completion(text=t, prompt_tokens=p, completion_tokens=c,
                           finish_reason="length" if c >= max_new_tokens else "stop")
                for t, p, c in zip(texts, n_prompt, n_completion)]


class ServeRecipe:
    """Load a model and serve it on ``host:port`` until interrupted."""

    def __init__(self, *, model: str, port: int, host: str = "127.0.0.1", name: str | None = None,
                 dtype: str = "auto", device: str = "cpu", device_map: str | None = None, max_batch_size: int = 8,
                 api_key: str | None = None, engine: str = "auto") -> None:
        if not 0 <= port < 65536:
            raise ValueError(f"port must be in 0..65535, got {port}")
        self.model, self.port, self.host = model, port, host
        self.name = name or model
        self.dtype, self.device, self.max_batch_size, self.api_key = dtype, device, max_batch_size, api_key
        self.device_map = device_map
        self.engine = engine

    def setup(self):
        from gcache.models import load_model

        model, tokenizer = load_model(self.model, dtype=self.dtype, device=self.device, device_map=self.device_map)
        self.app = build_app(EngineChatBackend(make_engine(model, tokenizer, engine=self.engine)), self.name,
                             max_batch_size=self.max_batch_size, api_key=self.api_key)
        return self.app

    def run(self) -> None:
        logger.info("serving %s as %r on http://%s:%d/v1", self.model, self.name, self.host, self.port)
        run_server(self.app, host=self.host, port=self.port)
