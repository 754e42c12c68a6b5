"""OpenAI-compatible API side of G-cache: settings, prices, a retrying client and a server.

The client (:class:`ChatClient`) talks to any OpenAI-compatible endpoint (DashScope by default,
or OpenAI, vLLM, SGLang, Ollama, or ``gcache serve``); the server (:func:`build_app`) exposes a
local model through the same protocol.
"""

from gcache.api.client import ChatClient, ChatResult
from gcache.api.pricing import DEFAULT_PRICES, ModelPrice, PriceTable
from gcache.api.settings import (
    DEFAULT_BASE_URL,
    DEFAULT_MODEL,
    KNOWN_MODELS,
    ApiSettings,
    MissingApiKeyError,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MODEL",
    "DEFAULT_PRICES",
    "KNOWN_MODELS",
    "ApiSettings",
    "ChatBackend",
    "ChatClient",
    "ChatResult",
    "Completion",
    "MissingApiKeyError",
    "ModelPrice",
    "PriceTable",
    "ServerThread",
    "build_app",
    "run_server",
]

# The server needs the 'serve' extra (fastapi, uvicorn, pydantic); the client does not. Its names are imported on
# first use, so the core install can use the client (and everything that imports gcache.api) without the extra.
_SERVER_NAMES = ("ChatBackend", "Completion", "ServerThread", "build_app", "run_server")


def __getattr__(name: str):
    if name in _SERVER_NAMES:
        from gcache.api import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
