"""``gcache compare``: run a matrix of methods x tasks x seeds into one folder, each cell a ``gcache eval``.

The matrix is data (a YAML file, ``src/gcache/configs/compare/*.yaml``)::

    baseline: single            # the method the report pairs every other against
    seeds: [0, 1]
    settings:                   # RunConfig settings of every cell; `preset: NAME` loads configs/presets/NAME.yaml
      preset: latentmas_reference
      model: smollm2
      limit: 10
    methods:                    # row name -> its settings (`method` defaults to the row name when that is a method)
      single: {}
      latentmas_seq: {latent_steps: 4}
    tasks:                      # name -> settings of that task (dataset defaults to the name)
      gsm8k: {data: ../shared/data/gsm8k/test.jsonl}

A cell's settings are, lowest first: RunConfig's defaults, ``settings`` (its preset, then its own keys), the
method's entry (its preset, then its keys), the task's entry, command-line overrides, and finally the seed and the
cell's folder ``OUT/<task>/<method>/seed<seed>``. Every cell is validated before the first one runs. Each runs
through :class:`~gcache.recipes.eval.EvalRecipe` (so it resumes like ``gcache eval``: rerun the same command after
a crash and nothing finished is redone); loaded models are shared between cells. ``OUT/compare.json`` records the
matrix and each cell's state; ``gcache report OUT`` turns it into tables and plots.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from gcache.config import ConfigError, RunConfig, prepare_out
from gcache.io import atomic_write_json
from gcache.io.redaction import redact, redact_fields
from gcache.methods import list_methods

logger = logging.getLogger(__name__)

__all__ = ["CompareConfig", "CompareRecipe", "Cell", "load_preset", "PRESETS_DIR"]

#: Where ``preset: NAME`` is looked up (a path to a YAML file works too).
PRESETS_DIR = Path(__file__).resolve().parents[1] / "configs" / "presets"
_TOP_KEYS = ("baseline", "seeds", "settings", "methods", "tasks")
_CELL_OWNED = ("seed", "out")  # set by compare for each cell


def load_preset(name: str) -> dict[str, Any]:
    """The settings of preset ``name`` (a file in :data:`PRESETS_DIR`, or a path to a YAML file).

    Raises:
        ConfigError: If there is no such preset or it is not a mapping.
    """
    path = Path(name) if name.endswith((".yaml", ".yml")) else PRESETS_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))
        raise ConfigError(f"preset {name!r} not found (known presets: {', '.join(known)}; or give a .yaml path)")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a preset is a mapping of run settings")
    return data


def _expand(settings: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``settings`` with its ``preset`` (if any) applied underneath."""
    if not isinstance(settings, Mapping):
        raise ConfigError(f"{where}: expected a mapping of run settings, got {type(settings).__name__}")
    settings = dict(settings)
    preset = settings.pop("preset", None)
    owned = sorted(set(settings) & set(_CELL_OWNED))
    if owned:
        raise ConfigError(f"{where}: {owned} are set by compare for each cell (use `seeds:` and --out)")
    return {**(load_preset(preset) if preset else {}), **settings}


@dataclass(frozen=True)
class Cell:
    """One run of the matrix."""

    task: str
    method: str
    seed: int
    out: Path
    config: RunConfig = field(repr=False)

    @property
    def key(self) -> str:
        return f"{self.task}/{self.method}/seed{self.seed}"


@dataclass
class CompareConfig:
    """A validated matrix.

    Args:
        methods (dict[str, dict]): row name -> its run settings (``method`` defaults to the row name if it names
            a registered method, else comes from ``settings``, e.g. rows ``chain`` / ``star`` of ``gdesigner``).
        tasks (dict[str, dict]): task name -> its run settings.
        seeds (list[int]): seeds of every (method, task).
        settings (dict): run settings of every cell.
        baseline (str | None): the row others are paired against in the report. Default: the first method.
        overrides (dict): command-line settings, above everything but the seed and folder.
    """

    methods: dict[str, dict]
    tasks: dict[str, dict]
    seeds: list[int]
    settings: dict = field(default_factory=dict)
    baseline: str | None = None
    overrides: dict = field(default_factory=dict)
    source: str = "command line"

    def __post_init__(self) -> None:
        if not self.methods or not self.tasks:
            raise ConfigError(f"{self.source}: a comparison needs at least one method and one task")
        if not self.seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in self.seeds):
            raise ConfigError(f"{self.source}: seeds must be a non-empty list of integers, got {self.seeds!r}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"{self.source}: seeds repeat: {self.seeds}")
        self.baseline = self.baseline or next(iter(self.methods))
        if self.baseline not in self.methods:
            raise ConfigError(f"{self.source}: baseline {self.baseline!r} is not one of the methods "
                              f"({', '.join(self.methods)})")

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Mapping[str, Any] | None = None) -> CompareConfig:
        """Read a matrix file.

        Raises:
            ConfigError: On a missing file, unknown keys or malformed values (names the file and key).
        """
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"compare config not found: {path}")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({err})") from None
        return cls.from_dict(data, overrides, source=str(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], overrides: Mapping[str, Any] | None = None,
                  source: str = "Python") -> CompareConfig:
        """A matrix given as the YAML file's mapping (``methods`` and ``tasks`` may be lists of names).

        >>> CompareConfig.from_dict({"methods": ["single", "latentmas_seq"], "tasks": ["gsm8k"]}).baseline
        'single'

        Raises:
            ConfigError: On unknown keys or malformed values (names ``source`` and the key).
        """
        path = source
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path}: expected a mapping with {', '.join(_TOP_KEYS)}")
        data = dict(data)
        unknown = sorted(set(data) - set(_TOP_KEYS))
        if unknown:
            raise ConfigError(f"{path}: unknown keys {unknown}; valid: {', '.join(_TOP_KEYS)}")
        for key in ("methods", "tasks"):
            value = data.get(key)
            if isinstance(value, list):  # a bare list of names: no per-row settings
                data[key] = {name: {} for name in value}
            elif not isinstance(value, dict):
                raise ConfigError(f"{path}: '{key}' must map names to settings")
            data[key] = {str(k): (v or {}) for k, v in data[key].items()}
        return cls(methods=data["methods"], tasks=data["tasks"], seeds=list(data.get("seeds", [0])),
                   settings=data.get("settings") or {}, baseline=data.get("baseline"),
                   overrides=dict(overrides or {}), source=source)

    def cells(self, out: str | Path) -> list[Cell]:
        """Every cell, validated (a bad setting in any cell fails here, before anything runs).

        Raises:
            ConfigError: Naming the cell and the setting.
        """
        out = Path(out)
        common = _expand(self.settings, f"{self.source}: settings")
        cells = []
        for task, task_settings in self.tasks.items():
            task_values = _expand(task_settings, f"{self.source}: tasks.{task}")
            for method, method_settings in self.methods.items():
                method_values = _expand(method_settings, f"{self.source}: methods.{method}")
                if method not in list_methods() and "method" not in method_values and "method" not in common:
                    raise ConfigError(f"{self.source}: methods.{method}: {method!r} is not a method "
                                      f"({', '.join(list_methods())}); name one with `method:`")
                for seed in self.seeds:
                    folder = out / task / method / f"seed{seed}"
                    values = {**common, **({"method": method} if method in list_methods() else {}), **method_values,
                              "dataset": task, **task_values, **self.overrides, "seed": seed, "out": str(folder)}
                    try:
                        config = RunConfig(**values)
                    except TypeError as err:  # an unknown setting name
                        raise ConfigError(f"{self.source}: cell {task}/{method}: {err}") from None
                    except ConfigError as err:
                        raise ConfigError(f"{self.source}: cell {task}/{method}/seed{seed}: {err}",
                                          key=getattr(err, "key", None)) from None
                    cells.append(Cell(task, method, seed, folder, config))
        return cells

    def secrets(self) -> list[str]:
        """Every ``api_key`` value of the matrix (settings, methods, tasks, overrides)."""
        found = []
        for values in (self.settings, self.overrides, *self.methods.values(), *self.tasks.values()):
            if isinstance(values, Mapping) and isinstance(values.get("api_key"), str):
                found.append(values["api_key"])
        return found

    def to_dict(self) -> dict[str, Any]:
        """The matrix as written to ``compare.json``: API keys are ``***`` there, as in every cell's files."""
        raw = {"baseline": self.baseline, "seeds": self.seeds, "settings": self.settings, "methods": self.methods,
               "tasks": self.tasks, "overrides": self.overrides, "source": self.source}
        # Keys too short to search for safely (replacing "x" everywhere would mangle the file) are hidden by field.
        return redact(redact_fields(raw), [s for s in self.secrets() if len(s) >= 8])


class CompareRecipe:
    """Run every cell of a :class:`CompareConfig` into ``out``. ``setup()``, then ``run()``."""

    def __init__(self, config: CompareConfig, out: str | Path) -> None:
        self.config = config
        self.out = Path(out)
        self.models: dict = {}  # shared loaded models, see gcache.recipes._components.build_engine

    def setup(self) -> None:
        self.cells = self.config.cells(self.out)
        for cell in self.cells:  # fail on a missing data file now, not after an hour of other cells
            if cell.config.data is not None and not Path(cell.config.data).exists():
                raise ConfigError(f"{self.config.source}: cell {cell.key}: --data {cell.config.data} not found")
        prepare_out(self.out)  # a file, or a folder that cannot be written: one line, before anything runs
        self.state = {cell.key: {"task": cell.task, "method": cell.method, "seed": cell.seed,
                                 "out": str(cell.out.relative_to(self.out)), "status": "pending"}
                      for cell in self.cells}
        self._write_state()

    def _write_state(self) -> None:
        atomic_write_json(self.out / "compare.json", {"matrix": self.config.to_dict(), "cells": list(self.state.values())})

    def run(self) -> dict:
        """Run the cells in order (each resumes where it stopped); returns the ``compare.json`` content."""
        from gcache.recipes.eval import EvalRecipe

        for i, cell in enumerate(self.cells, start=1):
            logger.info("compare: cell %d/%d: %s", i, len(self.cells), cell.key)
            t0 = time.perf_counter()
            self.state[cell.key]["status"] = "running"
            self._write_state()
            recipe = EvalRecipe(cell.config, models=self.models)
            recipe.setup()
            summary = recipe.run()
            recipe.cleanup()
            self.state[cell.key].update(status="done", seconds=round(time.perf_counter() - t0, 2),
                                        accuracy=summary["accuracy"], answered=summary["counts"]["answered"])
            self._write_state()
        return {"matrix": self.config.to_dict(), "cells": list(self.state.values())}

    def cleanup(self) -> None:
        self.models.clear()
