"""Metric loggers for training: scalars per step to TensorBoard (as torchtune's ``training/metric_logging.py``).

``gcache train`` keeps its own ``history.json`` (what ``gcache plot`` and ``gcache report`` read); a logger adds
live curves: ``tensorboard --logdir OUT/tensorboard``. The TensorBoard writer is torch's
(``torch.utils.tensorboard.SummaryWriter``), which needs the ``tensorboard`` extra (``gcache[tensorboard]``).

>>> logger = build_metric_logger("runs/train/tensorboard")  # doctest: +SKIP
>>> logger.log_dict({"loss": 0.7, "reward": 0.25}, step=1)  # doctest: +SKIP
>>> logger.close()  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import numbers
from pathlib import Path
from typing import Mapping, Protocol

__all__ = ["MetricLogger", "NoOpLogger", "TensorBoardLogger", "build_metric_logger"]

logger = logging.getLogger(__name__)


class MetricLogger(Protocol):
    """What training calls: scalars per step, then close."""

    def log_dict(self, metrics: Mapping[str, object], step: int) -> None: ...

    def close(self) -> None: ...


class NoOpLogger:
    """Logs nothing (``--no-tensorboard``, or TensorBoard not installed)."""

    def log_dict(self, metrics: Mapping[str, object], step: int) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardLogger:
    """Writes every finite numeric value of ``metrics`` as a TensorBoard scalar (other values are skipped).

    Args:
        log_dir (str | Path): Folder of the event files (created if missing).
    """

    def __init__(self, log_dir: str | Path) -> None:
        from gcache._extras import extra_imports

        with extra_imports("tensorboard", "TensorBoard logging"):  # lazy: the package is an extra
            import tensorboard  # noqa: F401 - torch's writer needs it; importing it first names it if missing
            from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        self._writer = SummaryWriter(log_dir=str(self.log_dir))

    def log_dict(self, metrics: Mapping[str, object], step: int) -> None:
        for name, value in metrics.items():
            if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value):
                self._writer.add_scalar(name, float(value), global_step=step)
        self._writer.flush()  # a killed run keeps every step logged so far

    def close(self) -> None:
        self._writer.close()

    def __repr__(self) -> str:
        return f"TensorBoardLogger(log_dir={str(self.log_dir)!r})"


def build_metric_logger(log_dir: str | Path, enabled: bool = True) -> MetricLogger:
    """A :class:`TensorBoardLogger` in ``log_dir``, or a :class:`NoOpLogger` when disabled or when the
    ``tensorboard`` package is missing (said once in the log)."""
    if not enabled:
        return NoOpLogger()
    try:
        return TensorBoardLogger(log_dir)
    except ImportError as err:  # MissingExtraError: its message says which extra to install
        logger.warning("TensorBoard logging is off: %s; or pass --no-tensorboard", err)
        return NoOpLogger()
