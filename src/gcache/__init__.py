"""G-cache: multi-agent LLM reasoning over learned graphs that pass KV-caches of latent thoughts.

The Python API (:mod:`gcache.python_api`), loaded on first use so that ``import gcache`` stays light (no torch):

* :func:`load_agents` -> :class:`Agents`, whose ``answer(questions)`` returns :class:`Answer` s with their traces;
* :func:`evaluate` (``gcache eval``) -> :class:`Evaluation`;
* :func:`train` (``gcache train``, ``on_step`` callback) -> :class:`Training`;
* :func:`compare` (``gcache compare``) and :func:`report` (``gcache report``) -> :class:`Report`;
* :func:`make_config` -> :class:`RunConfig` (every setting; a bad one raises :class:`ConfigError`).
"""

from __future__ import annotations

import importlib
from typing import Any

# Bumped with each release; a run's identity adds a hash of the package's source (gcache.provenance.code_version),
# so a resume after any code change between releases is noticed too.
__version__ = "0.2.0"

# name -> module that defines it (imported by __getattr__ when the name is first used)
_LAZY = {
    **{name: "gcache.python_api" for name in ("Agents", "Answer", "Evaluation", "Training", "Report", "make_config",
                                               "load_agents", "evaluate", "train", "compare", "report")},
    "RunConfig": "gcache.config",
    "ConfigError": "gcache.config",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gcache' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
