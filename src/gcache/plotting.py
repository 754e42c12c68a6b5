"""Figures: learned topologies, training curves, and accuracy against cost for ``gcache report``.

Uses matplotlib's object-oriented API on the Agg canvas (no pyplot, so no global figure
state and no display needed). Files are written atomically (:func:`gcache.io.atomic_open`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from gcache._extras import extra_imports
from gcache.io.atomic import atomic_open

with extra_imports("plot", "plotting (gcache plot, gcache report's figures)"):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch

logger = logging.getLogger(__name__)

__all__ = ["CostPoint", "plot_accuracy_vs_cost", "plot_topology", "plot_training_curves"]

_ARC_RAD = 0.15  # curvature of the topology arrows


def _save_atomic(fig: Figure, path: str | os.PathLike, dpi: int) -> Path:
    path = Path(path)
    FigureCanvasAgg(fig)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format=path.suffix.lstrip(".") or "png", dpi=dpi)
    logger.debug("wrote %s", path)
    return path


def _as_matrix(name: str, x: torch.Tensor | Sequence[Sequence[float]], n: int) -> torch.Tensor:
    t = torch.as_tensor(x).detach().to("cpu", torch.float32)
    if t.shape != (n, n):
        raise ValueError(f"{name} must be [{n}, {n}] for {n} roles, got {list(t.shape)}")
    return t


def _heatmap(ax, mat: torch.Tensor, names: Sequence[str], title: str, fig: Figure) -> None:
    n = len(names)
    im = ax.imshow(mat.numpy(), vmin=0.0, vmax=1.0, cmap="viridis")
    ax.set_xticks(range(n), names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(n), names, fontsize=7)
    ax.set_xlabel("to")
    ax.set_ylabel("from")
    ax.set_title(title, fontsize=9)
    for u in range(n):
        for v in range(n):
            val = float(mat[u, v])
            ax.text(v, u, f"{val:.2f}", ha="center", va="center", fontsize=6,
                    color="black" if val > 0.6 else "white")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)


def plot_topology(
    spatial_probs: torch.Tensor | Sequence[Sequence[float]],
    temporal_probs: torch.Tensor | Sequence[Sequence[float]] | None,
    role_names: Sequence[str],
    path: str | os.PathLike,
    *,
    title: str | None = None,
    min_prob: float = 0.05,
    figsize: tuple[float, float] | None = None,
    dpi: int = 100,
) -> Path:
    """Draw edge probabilities: agents on a circle plus heatmap panel(s).

    Edge ``u -> v`` is an arrow whose width and opacity grow with ``p(u -> v)``, labelled
    with the probability; edges below ``min_prob`` are left out of the circle panel (the
    heatmaps show every value).

    Args:
        spatial_probs (Tensor | Sequence[Sequence[float]]): ``[n, n]`` spatial probabilities.
        temporal_probs (Tensor | Sequence[Sequence[float]] | None): ``[n, n]`` temporal
            probabilities, shown as a second heatmap; ``None`` omits it.
        role_names (Sequence[str]): ``n`` node labels.
        path (str | os.PathLike): Output file; the format follows its suffix.
        title (str | None): Figure title. Default is None.
        min_prob (float): Smallest probability drawn as an arrow. Default is 0.05.
        figsize (tuple[float, float] | None): Inches; ``None`` picks ``(5 * panels, 4.5)``.
            Default is None.
        dpi (int): Resolution. Default is 100.

    Returns:
        Path: The written file.

    Raises:
        ValueError: If the matrices are not ``[n, n]`` for ``n = len(role_names)``.
    """
    names = list(role_names)
    n = len(names)
    if n < 1:
        raise ValueError("role_names must be non-empty")
    sp = _as_matrix("spatial_probs", spatial_probs, n)
    tp = None if temporal_probs is None else _as_matrix("temporal_probs", temporal_probs, n)
    panels = 2 if tp is None else 3
    fig = Figure(figsize=figsize or (5.0 * panels, 4.5), layout="constrained")
    axes = fig.subplots(1, panels)

    ax = axes[0]
    # Nodes on a circle, first agent at the top, clockwise.
    angles = [math.pi / 2 - 2 * math.pi * i / n for i in range(n)]
    pos = [(math.cos(a), math.sin(a)) for a in angles]
    for u in range(n):
        for v in range(n):
            p = float(sp[u, v])
            if u == v or p < min_prob:
                continue
            # Curve each direction to its own side so u->v and v->u stay apart.
            arrow = FancyArrowPatch(
                pos[u], pos[v], arrowstyle="-|>", mutation_scale=8 + 8 * p,
                connectionstyle=f"arc3,rad={_ARC_RAD}", linewidth=0.5 + 3.0 * p,
                alpha=0.15 + 0.85 * p, color="tab:blue", shrinkA=14, shrinkB=14,
            )
            ax.add_patch(arrow)
            # Label at the curve's midpoint: chord midpoint + rad/2 * (dy, -dx) for arc3.
            dx, dy = pos[v][0] - pos[u][0], pos[v][1] - pos[u][1]
            mx = (pos[u][0] + pos[v][0]) / 2 + 0.5 * _ARC_RAD * dy
            my = (pos[u][1] + pos[v][1]) / 2 - 0.5 * _ARC_RAD * dx
            ax.text(mx, my, f"{p:.2f}", fontsize=6, ha="center", va="center", alpha=0.8)
    for i, (x, y) in enumerate(pos):
        ax.scatter([x], [y], s=500, color="tab:orange", zorder=3)
        ax.text(x, y, str(i), ha="center", va="center", fontsize=9, zorder=4)
        ha = "left" if x > 0.1 else "right" if x < -0.1 else "center"
        ax.text(1.15 * x, 1.22 * y, names[i], ha=ha, va="center", fontsize=7)
    ax.set_xlim(-2.2, 2.2)
    ax.set_ylim(-1.5, 1.5)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title("spatial edges", fontsize=9)

    _heatmap(axes[1], sp, names, "spatial p(u -> v)", fig)
    if tp is not None:
        _heatmap(axes[2], tp, names, "temporal p(u@r-1 -> v@r)", fig)
    if title:
        fig.suptitle(title)
    return _save_atomic(fig, path, dpi)


def plot_training_curves(
    history: Sequence[Mapping[str, float]],
    path: str | os.PathLike,
    keys: Sequence[str] = ("loss", "accuracy", "reward"),
    *,
    step_key: str = "step",
    figsize: tuple[float, float] | None = None,
    dpi: int = 100,
) -> Path:
    """Plot one panel per metric against the step.

    Args:
        history (Sequence[Mapping[str, float]]): One dict per logged step. The x value is
            ``entry[step_key]`` when present, else the entry's index.
        path (str | os.PathLike): Output file.
        keys (Sequence[str]): Metrics to plot; keys absent (or None) in every entry are skipped.
            Default is ``("loss", "accuracy", "reward")``.
        step_key (str): Name of the step field. Default is ``"step"``.
        figsize (tuple[float, float] | None): Inches; ``None`` picks ``(4 * panels, 3)``.
            Default is None.
        dpi (int): Resolution. Default is 100.

    Returns:
        Path: The written file.

    Raises:
        ValueError: If ``history`` is empty or holds none of ``keys``.
    """
    if not history:
        raise ValueError("history is empty")
    present = [k for k in keys if any(h.get(k) is not None for h in history)]
    if not present:
        raise ValueError(f"history has none of the keys {list(keys)}")
    fig = Figure(figsize=figsize or (4.0 * len(present), 3.0), layout="constrained")
    axes = fig.subplots(1, len(present), squeeze=False)[0]
    for ax, key in zip(axes, present):
        xs = [float(h.get(step_key, i)) for i, h in enumerate(history) if h.get(key) is not None]
        ys = [float(h[key]) for h in history if h.get(key) is not None]
        ax.plot(xs, ys, marker="." if len(xs) < 50 else None, linewidth=1.2)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel(step_key)
        ax.grid(alpha=0.3)
    return _save_atomic(fig, path, dpi)


@dataclass(frozen=True)
class CostPoint:
    """One (task, method) of a comparison: its accuracy with a 95% interval and a cost.

    Args:
        task (str): panel it goes in.
        method (str): label and colour.
        accuracy (float): in [0, 1].
        low (float): lower end of the interval.
        high (float): upper end of the interval.
        cost (float): x value (tokens or seconds per question).
    """

    task: str
    method: str
    accuracy: float
    low: float
    high: float
    cost: float


def plot_accuracy_vs_cost(
    points: Sequence[CostPoint],
    path: str | os.PathLike,
    cost_label: str,
    *,
    title: str | None = None,
    dpi: int = 100,
) -> Path:
    """One panel per task: accuracy (with its 95% interval as an error bar) against a cost, one colour per method.

    Args:
        points (Sequence[CostPoint]): what to draw.
        path (str | os.PathLike): Output file.
        cost_label (str): x-axis label, e.g. ``"generated tokens / question"``.
        title (str | None): Figure title. Default is None.
        dpi (int): Resolution. Default is 100.

    Returns:
        Path: The written file.

    Raises:
        ValueError: If ``points`` is empty.
    """
    if not points:
        raise ValueError("no points to plot")
    tasks = list(dict.fromkeys(p.task for p in points))
    methods = list(dict.fromkeys(p.method for p in points))
    colours = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    markers = {m: "osD^vP*Xph"[i % 10] for i, m in enumerate(methods)}  # colour and shape: legible in grey too
    fig = Figure(figsize=(4.2 * len(tasks), 3.6), layout="constrained")
    axes = fig.subplots(1, len(tasks), squeeze=False, sharey=True)[0]
    for ax, task in zip(axes, tasks):
        for p in (p for p in points if p.task == task):
            ax.errorbar([p.cost], [p.accuracy], yerr=[[max(0.0, p.accuracy - p.low)], [max(0.0, p.high - p.accuracy)]],
                        fmt=markers[p.method], color=colours[p.method], capsize=4, markersize=7, alpha=0.85,
                        label=p.method)
        costs = [p.cost for p in points if p.task == task]
        span = max(costs) - min(costs) or max(costs) or 1.0
        ax.set_xlim(min(costs) - 0.15 * span, max(costs) + 0.15 * span)
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(task, fontsize=9)
        ax.set_xlabel(cost_label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (95% Wilson interval)")
    handles, labels = axes[0].get_legend_handles_labels()
    seen = dict(zip(labels, handles))
    for ax in axes[1:]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    fig.legend(list(seen.values()), list(seen.keys()), loc="outside lower center", ncols=min(len(seen), 6),
               fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save_atomic(fig, path, dpi)
