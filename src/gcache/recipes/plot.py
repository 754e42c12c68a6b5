"""``gcache plot``: draw a checkpoint's learned topology (edge probabilities) and training curves to PNG."""

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

    Returns:
        list[Path]: the files written.
    """
    ckpt = C.load_checkpoint(checkpoint)
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    saved = {k: v for k, v in ckpt["config"].items() if k in fields}
    # Drawing needs no API and no GPU: a checkpoint trained on CUDA plots on any machine.
    saved.update(api_key=None, device="cpu", device_map=None)
    cfg = RunConfig(**saved)
    out_dir = C.prepare_out(out if out is not None else C.checkpoint_file(checkpoint).parent)
    written = []
    team = C.build_team(cfg, num_layers=_fuser_layers(ckpt))
    try:
        team.load_state_dict(ckpt["team"])
    except (RuntimeError, KeyError, TypeError) as err:  # as eval: one line naming the checkpoint, not a traceback
        raise ConfigError(f"checkpoint {checkpoint} does not fit the team its config describes: "
                          f"{' '.join(str(err).split())[:300] or type(err).__name__}") from None
    if team.policy is not None:
        task = C.build_task(cfg)
        questions = [ex.question for ex in task.load(data or cfg.data, split=cfg.split, limit=limit)]
        probs = team.mean_edge_probs(questions)
        temporal = probs.temporal if cfg.rounds > 1 else None
        names = [f"{a}#{i}" for i, a in enumerate(team.agents)]
        written.append(plot_topology(probs.spatial, temporal, names, out_dir / "topology.png"))
    if ckpt.get("history"):
        written.append(plot_training_curves(ckpt["history"], out_dir / "training_curves.png",
                                            keys=("reward", "answer_nll", "reinforce_loss", "accuracy")))
    return [Path(p) for p in written]


def _fuser_layers(ckpt: dict) -> int:
    gates = ckpt["team"].get("fuser.gates")  # [2, l]: receiver kind, layer
    return int(gates.shape[-1]) if gates is not None else 0
