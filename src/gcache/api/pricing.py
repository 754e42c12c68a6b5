"""Token prices of API models, to report the dollar cost of a run next to its token counts.

The built-in numbers are APPROXIMATE list prices (USD per 1M tokens, Alibaba Cloud Model Studio,
international deployment, lowest context tier, non-thinking mode, as published in 2025). Prices
change and differ by region, tier and thinking mode: override them with :meth:`PriceTable.load`
or :meth:`PriceTable.merged` before quoting costs.

User price files are JSON or YAML mappings of model name to prices::

    qwen-plus: {input: 0.4, output: 1.2}
    my-local-model: {input: 0, output: 0}
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import yaml

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_PRICES", "ModelPrice", "PriceTable"]

# A dated snapshot ("qwen-plus-2025-07-28") is billed like its base model.
_SNAPSHOT_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class ModelPrice:
    """USD per 1M tokens for one model.

    Args:
        input_per_1m (float): price of 1M prompt tokens.
        output_per_1m (float): price of 1M completion tokens.

    Raises:
        ValueError: if a price is negative.
    """

    input_per_1m: float
    output_per_1m: float

    def __post_init__(self) -> None:
        if self.input_per_1m < 0 or self.output_per_1m < 0:
            raise ValueError(f"prices must be >= 0, got {self.input_per_1m}, {self.output_per_1m}")


#: Approximate list prices (USD / 1M tokens); see the module docstring.
DEFAULT_PRICES: Mapping[str, ModelPrice] = MappingProxyType(
    {
        "qwen-flash": ModelPrice(input_per_1m=0.05, output_per_1m=0.40),
        "qwen-plus": ModelPrice(input_per_1m=0.40, output_per_1m=1.20),
        "qwen-turbo": ModelPrice(input_per_1m=0.05, output_per_1m=0.20),
    }
)


def _parse_price(model: str, value: object) -> ModelPrice:
    if not isinstance(value, Mapping) or set(value) != {"input", "output"}:
        raise ValueError(f"price of {model!r} must be a mapping with keys 'input' and 'output', got {value!r}")
    return ModelPrice(input_per_1m=float(value["input"]), output_per_1m=float(value["output"]))


@dataclass(frozen=True)
class PriceTable:
    """Immutable table of model prices.

    Args:
        prices (Mapping[str, ModelPrice]): model name -> price. Default is :data:`DEFAULT_PRICES`.

    Example:
        >>> PriceTable().cost("qwen-plus", prompt_tokens=1_000_000, completion_tokens=0)
        0.4
        >>> PriceTable().cost("some-unknown-model", 10, 10) is None
        True
    """

    prices: Mapping[str, ModelPrice] = field(default_factory=lambda: DEFAULT_PRICES)

    def __post_init__(self) -> None:
        # Copy into a read-only view so a caller's dict cannot change the table later.
        object.__setattr__(self, "prices", MappingProxyType(dict(self.prices)))

    def merged(self, overrides: Mapping[str, ModelPrice | Mapping[str, float]]) -> PriceTable:
        """Return a new table where ``overrides`` replace or add entries.

        Args:
            overrides (Mapping): model -> :class:`ModelPrice` or ``{"input": x, "output": y}``.

        Returns:
            PriceTable: the merged table; ``self`` is unchanged.

        Raises:
            ValueError: if an entry is malformed or negative.
        """
        new = dict(self.prices)
        for model, value in overrides.items():
            new[str(model)] = value if isinstance(value, ModelPrice) else _parse_price(model, value)
        return PriceTable(new)

    @classmethod
    def load(cls, path: str | Path, base: PriceTable | None = None) -> PriceTable:
        """Merge a user price file (``.json``, ``.yaml`` or ``.yml``) over ``base``.

        Args:
            path (str | Path): price file, ``{model: {input: usd_per_1m, output: usd_per_1m}}``.
            base (PriceTable | None): table to merge over. Default is the built-in prices.

        Returns:
            PriceTable: the merged table.

        Raises:
            FileNotFoundError: if ``path`` does not exist.
            ValueError: if the file is not a mapping of valid prices.
        """
        path = Path(path)
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        if not isinstance(data, Mapping):
            raise ValueError(f"{path}: expected a mapping of model -> prices, got {type(data).__name__}")
        return (base if base is not None else cls()).merged(data)

    def get(self, model: str) -> ModelPrice | None:
        """Price of ``model``, or of its base model for a dated snapshot; None if unknown."""
        if model in self.prices:
            return self.prices[model]
        return self.prices.get(_SNAPSHOT_SUFFIX.sub("", model))

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
        """Dollar cost of a number of tokens.

        Args:
            model (str): model name.
            prompt_tokens (int): input tokens.
            completion_tokens (int): output tokens.

        Returns:
            float | None: USD, or None if the model has no price (e.g. a local model).

        Raises:
            ValueError: if a token count is negative.
        """
        if prompt_tokens < 0 or completion_tokens < 0:
            raise ValueError(f"token counts must be >= 0, got {prompt_tokens}, {completion_tokens}")
        price = self.get(model)
        if price is None:
            return None
        return (prompt_tokens * price.input_per_1m + completion_tokens * price.output_per_1m) / 1_000_000
