"""The TensorBoard metric logger: what it writes is what TensorBoard's own reader reads back."""

from __future__ import annotations

import math

import pytest

from gcache.io.metric_logging import NoOpLogger, TensorBoardLogger, build_metric_logger


def read_scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_scalars_round_trip(tmp_path):
    logger = build_metric_logger(tmp_path / "tb")
    assert isinstance(logger, TensorBoardLogger)
    logger.log_dict({"loss": 0.5, "reward": 0.25, "errors": 0, "note": "text", "flag": True, "bad": math.nan}, step=1)
    logger.log_dict({"loss": 0.25, "reward": 0.5, "errors": 2}, step=2)
    logger.close()
    scalars = read_scalars(tmp_path / "tb")
    assert set(scalars) == {"loss", "reward", "errors"}  # text, booleans and NaN are not scalars
    assert scalars["loss"] == [(1, pytest.approx(0.5)), (2, pytest.approx(0.25))]
    assert scalars["errors"] == [(1, 0.0), (2, 2.0)]


def test_disabled_logger_writes_nothing(tmp_path):
    logger = build_metric_logger(tmp_path / "tb", enabled=False)
    assert isinstance(logger, NoOpLogger)
    logger.log_dict({"loss": 1.0}, step=1)
    logger.close()
    assert not (tmp_path / "tb").exists()
