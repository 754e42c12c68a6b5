"""Optional parts of G-cache and the one line that says which extra to install when one is missing.

The core (``pip install gcache``) evaluates and trains; the HTTP server, plotting and TensorBoard logging are extras
(``gcache[serve]``, ``gcache[plot]``, ``gcache[tensorboard]``, or ``gcache[all]``), declared in ``pyproject.toml``.
A module that needs an extra imports it inside :func:`extra_imports`, so a missing package surfaces as
:class:`MissingExtraError` (the CLI prints it as one line, exit status 2) instead of a bare traceback.

>>> with extra_imports("plot", "gcache plot"):  # doctest: +SKIP
...     import matplotlib
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["EXTRAS", "MissingExtraError", "extra_imports"]

#: extra -> the top-level modules it provides (kept in step with pyproject.toml's optional-dependencies).
EXTRAS: dict[str, tuple[str, ...]] = {
    "serve": ("fastapi", "uvicorn", "pydantic"),
    "plot": ("matplotlib",),
    "tensorboard": ("tensorboard",),
}


class MissingExtraError(ImportError):
    """A feature needs a package of an extra that is not installed; the message says what to install.

    Args:
        extra (str): the extra, e.g. ``"serve"``.
        feature (str): what needs it, e.g. ``"gcache serve"``.
        module (str | None): the module that failed to import. Default is None.
    """

    def __init__(self, extra: str, feature: str, module: str | None = None) -> None:
        missing = f" ({module} is not installed)" if module else ""
        super().__init__(f"{feature} needs the '{extra}' extra{missing}: pip install 'gcache[{extra}]' "
                         f"(or 'gcache[all]')", name=module)
        self.extra = extra
        self.feature = feature


@contextlib.contextmanager
def extra_imports(extra: str, feature: str) -> Iterator[None]:
    """Turn a :class:`ModuleNotFoundError` raised inside the block into :class:`MissingExtraError`.

    Args:
        extra (str): the extra that provides the block's imports.
        feature (str): what the user asked for, named in the message.

    Raises:
        MissingExtraError: a module imported in the block is not installed.
    """
    try:
        yield
    except ModuleNotFoundError as err:
        raise MissingExtraError(extra, feature, (err.name or "").split(".")[0] or None) from None
