"""``gcache serve``: an OpenAI-compatible server over a local model, so text agents run fully offline.

    gcache serve --model smollm2 --port 8000
    # then: BASE_URL=http://127.0.0.1:8000/v1 API_KEY=anything API_MODEL=smollm2 gcache eval --mode api ...

Beyond 127.0.0.1, give ``--api-key`` (or ``GCACHE_SERVE_API_KEY``): requests must then send it as a bearer token.
A prompt that does not fit the model's context is answered with HTTP 400, and ``max_tokens`` is capped at what fits.
"""

from __future__ import annotations

import copy
import ipaddress
import logging
import os

import torch

from gcache.api.server import Completion, build_app, run_server
from gcache.choices import DTYPES
from gcache.config import ConfigError, check_device
from gcache.reasoning import DecodeConfig, LatentEngine, make_engine, render_chat

logger = logging.getLogger(__name__)

__all__ = ["EngineChatBackend", "ServeRecipe", "SERVE_API_KEY_ENV"]

#: Environment variable read when ``--api-key`` is not given (keeps the key out of the process list).
SERVE_API_KEY_ENV = "GCACHE_SERVE_API_KEY"


class EngineChatBackend:
    """:class:`gcache.api.ChatBackend` over a :class:`LatentEngine` (batched, left-padded decoding).

    Attributes:
        context_length (int | None): positions one conversation may use, prompt and completion together.
    """

    def __init__(self, engine: LatentEngine, seed: int = 0) -> None:
        self.engine = engine
        self.context_length = engine.context_length
        # sampling needs a generator on the device of the logits
        self.generator = torch.Generator(device=engine.output_device).manual_seed(seed)
        # Prompts are counted on the server's event-loop threads while the worker thread generates; a private copy
        # of the tokenizer keeps the two from sharing the Rust tokenizer's mutable state.
        self._counting_tokenizer = copy.deepcopy(engine.tokenizer)

    def prompt_tokens(self, messages: list[dict[str, str]]) -> int:
        """Tokens of the rendered prompt of one conversation."""
        prompt = render_chat(self._counting_tokenizer, messages)
        return len(self._counting_tokenizer(prompt, add_special_tokens=False)["input_ids"])

    def chat(self, messages_batch, *, max_new_tokens: int, temperature: float, top_p: float) -> list[Completion]:
        cfg = DecodeConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
        with torch.no_grad():
            texts, n_prompt, n_completion = self.engine.chat(messages_batch, cfg, self.generator)
        return [Completion(text=t, prompt_tokens=p, completion_tokens=c,
                           finish_reason="length" if c >= max_new_tokens else "stop")
                for t, p, c in zip(texts, n_prompt, n_completion)]


def is_loopback(host: str) -> bool:
    """True when ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve beyond this machine


class ServeRecipe:
    """Load a model and serve it on ``host:port`` until interrupted.

    Raises:
        ConfigError: (at construction, before any model loads) a port outside 0..65535, a batch size below 1, or
            an unknown dtype or device.
    """

    def __init__(self, *, model: str, port: int, host: str = "127.0.0.1", name: str | None = None,
                 dtype: str = "auto", device: str = "cpu", device_map: str | None = None, max_batch_size: int = 8,
                 api_key: str | None = None, engine: str = "auto", max_context: int | None = None) -> None:
        if not 0 <= port < 65536:
            raise ConfigError(f"--port must be in 0..65535, got {port}")
        if max_batch_size < 1:
            raise ConfigError(f"--max-batch-size must be at least 1, got {max_batch_size}")
        if max_context is not None and max_context < 1:
            raise ConfigError(f"--max-context must be at least 1, got {max_context}")
        if dtype not in DTYPES:
            raise ConfigError(f"--dtype: unknown value {dtype!r}; choose one of {', '.join(DTYPES)}")
        check_device(device)
        if device.startswith("cuda"):  # before the model loads, as eval does (RunConfig), not an assert after it
            if not torch.cuda.is_available():
                raise ConfigError(f"--device {device}: no CUDA device is visible to torch here; use --device cpu")
            index = int(device.split(":", 1)[1]) if ":" in device else 0
            if index >= torch.cuda.device_count():
                raise ConfigError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
        self.model, self.port, self.host = model, port, host
        self.name = name or model
        self.dtype, self.device, self.max_batch_size = dtype, device, max_batch_size
        self.api_key = api_key or os.environ.get(SERVE_API_KEY_ENV) or None
        self.max_context = max_context
        self.device_map = device_map
        self.engine = engine

    def setup(self):
        from gcache.models import load_model, resolve_model

        if not is_loopback(self.host) and self.api_key is None:
            logger.warning("serving on %s, beyond this machine, without an API key: anyone who can reach the port "
                           "can use the model; give --api-key (or %s)", self.host, SERVE_API_KEY_ENV)
        resolve_model(self.model)  # a typo in a path fails here, before anything loads
        model, tokenizer = load_model(self.model, dtype=self.dtype, device=self.device,
                                      device_map=self.device_map)
        try:
            engine = make_engine(model, tokenizer, engine=self.engine, max_context=self.max_context)
        except ValueError as err:  # --engine fast for a model spread by --device-map
            raise ConfigError(f"--engine: {err}") from None
        self.app = build_app(EngineChatBackend(engine), self.name, max_batch_size=self.max_batch_size,
                             api_key=self.api_key)
        return self.app

    def run(self) -> None:
        logger.info("serving %s as %r on http://%s:%d/v1%s", self.model, self.name, self.host, self.port,
                    " (bearer key required)" if self.api_key else "")
        run_server(self.app, host=self.host, port=self.port)
