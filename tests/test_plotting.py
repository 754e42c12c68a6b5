"""Tests for gcache.plotting: files are written atomically and read back as images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from gcache.plotting import plot_topology, plot_training_curves

ROLES = ["Math Solver", "Mathematical Analyst", "Programming Expert", "Inspector"]


def _read(path):
    with Image.open(path) as im:
        im.load()
        return im.format, im.size, np.asarray(im.convert("RGB"))


def test_plot_topology_writes_png(tmp_path):
    gen = torch.Generator().manual_seed(0)
    spatial = torch.rand(4, 4, generator=gen).fill_diagonal_(0.0)
    temporal = torch.rand(4, 4, generator=gen)
    out = tmp_path / "sub" / "topo.png"
    path = plot_topology(spatial, temporal, ROLES, out, title="t", figsize=(9, 3), dpi=50)
    assert path == out and out.stat().st_size > 5_000
    fmt, size, pixels = _read(out)
    assert fmt == "PNG" and size == (450, 150)
    assert pixels.std() > 10  # something was drawn, not a blank canvas
    assert [p.name for p in out.parent.iterdir()] == ["topo.png"]  # no temp file left


def test_plot_topology_default_size_and_overwrite(tmp_path):
    out = tmp_path / "topo.png"
    out.write_bytes(b"old")
    probs = [[0.0, 0.8], [0.1, 0.0]]  # lists work too
    plot_topology(probs, None, ["A", "B"], out)
    _, size, _ = _read(out)
    assert size == (1000, 450)  # two panels at (5 * 2, 4.5) inches, 100 dpi


def test_plot_topology_edges_scale_with_probability(tmp_path):
    # Same layout, one with a certain edge 0->1, one with none: the first has more ink.
    strong, empty = tmp_path / "strong.png", tmp_path / "empty.png"
    plot_topology([[0.0, 1.0], [0.0, 0.0]], None, ["A", "B"], strong, figsize=(8, 4))
    plot_topology([[0.0, 0.0], [0.0, 0.0]], None, ["A", "B"], empty, figsize=(8, 4))
    ink = [int((255 - _read(p)[2][:, :400]).sum()) for p in (strong, empty)]  # graph panel
    assert ink[0] > ink[1]


def test_plot_topology_validates_shapes(tmp_path):
    with pytest.raises(ValueError, match=r"spatial_probs must be \[3, 3\] for 3 roles"):
        plot_topology(torch.zeros(2, 2), None, ["a", "b", "c"], tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"temporal_probs must be \[2, 2\]"):
        plot_topology(torch.zeros(2, 2), torch.zeros(3, 3), ["a", "b"], tmp_path / "x.png")
    assert not list(tmp_path.iterdir())


def test_plot_training_curves(tmp_path):
    history = [{"step": 10 * i, "loss": 1.0 / (i + 1), "reward": i % 3} for i in range(30)]
    history[5]["accuracy"] = 0.5  # a key present in one entry only still gets a panel
    out = tmp_path / "curves.png"
    plot_training_curves(history, out, figsize=(6, 2), dpi=80)
    fmt, size, pixels = _read(out)
    assert fmt == "PNG" and size == (480, 160)
    assert pixels.std() > 10
    # Default size: one 4 x 3 inch panel per present key ("loss" and "reward" here).
    plot_training_curves([h for h in history if "accuracy" not in h], out)
    assert _read(out)[1] == (800, 300)


def test_plot_training_curves_errors(tmp_path):
    with pytest.raises(ValueError, match="history is empty"):
        plot_training_curves([], tmp_path / "c.png")
    with pytest.raises(ValueError, match="none of the keys"):
        plot_training_curves([{"step": 1, "lr": 0.1}], tmp_path / "c.png")
