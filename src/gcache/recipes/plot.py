"""``gcache plot``: draw a trained team's learned topology (edge probabilities) and training curves to PNG.

Needs the ``plot`` extra (matplotlib): without it, one line says so (:mod:`gcache._extras`)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from gcache.config import ConfigError, RunConfig
from gcache.plotting import plot_topology, plot_training_curves
from gcache.recipes import _components as C

logger = logging.getLogger(__name__)

__all__ = ["plot_checkpoint"]


def plot_checkpoint(checkpoint: str | Path, *, out: str | Path | None = None, data: str | None = None,
                    limit: int = 16) -> list[Path]:
    """Write ``topology.png`` (mean edge probabilities over ``limit`` questions) and ``training_curves.png``.

    Args:
        checkpoint (str | Path): a train output folder, its ``team/`` folder, a hub id or an old ``checkpoint.pt``
            (loaded without running anything in it).
        out (str | Path | None): output folder. Default is None: the folder given (the file's folder for a
            ``.pt``); required for a hub id.

    Returns:
        list[Path]: the files written.
    """
    ckpt = C.load_checkpoint(checkpoint)
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    saved = {k: v for k, v in ckpt.config.items() if k in fields}
    # Drawing needs no API and no GPU: a checkpoint trained on CUDA plots on any machine.
    saved.update(api_key=None, device="cpu", device_map=None)
    cfg = RunConfig(**saved)
    if out is None and ckpt.from_hub:
        raise ConfigError(f"--out is required to plot {checkpoint} (a hub download lives in the hub's cache)")
    source = Path(checkpoint)
    out_dir = C.prepare_out(out if out is not None else source if source.is_dir() else source.parent)
    written = []
    team = C.build_team(cfg, num_layers=ckpt.num_layers)
    try:
        team.load_state_dict(ckpt.state_dict)
    except (RuntimeError, KeyError, TypeError) as err:  # as eval: one line naming the checkpoint, not a traceback
        raise ConfigError(f"checkpoint {checkpoint} does not fit the team its config describes: "
                          f"{' '.join(str(err).split())[:300] or type(err).__name__}") from None
    if team.policy is not None:
        task = C.build_task(cfg)
        questions = [ex.question for ex in task.load(data or cfg.data, split=cfg.split, limit=limit)]
        probs = team.mean_edge_probs(questions)
        temporal = probs.temporal if cfg.rounds > 1 else None
        names = [f"{a}#{i}" for i, a in enumerate(team.agents)]
        title = None
        if probs.read is not None:  # whom the decision node reads (G-cache's read set), mean over the questions
            title = "P(decision node reads agent): " + ", ".join(f"#{i} {float(p):.2f}" for i, p in enumerate(probs.read))
        written.append(plot_topology(probs.spatial, temporal, names, out_dir / "topology.png", title=title))
    if ckpt.history:
        written.append(plot_training_curves(ckpt.history, out_dir / "training_curves.png",
                                            keys=("reward", "answer_nll", "reinforce_loss", "accuracy")))
    return [Path(p) for p in written]
