"""Trained teams as safe, shareable folders, and training's resumable state.

``gcache train --out OUT`` writes, after every step:

* ``OUT/team/``: the trained team, what evaluation and plotting load (the way ``transformers`` saves a model):

  - ``model.safetensors``: the team's ``state_dict()`` (whatever parameters and buffers it has);
  - ``config.json``: the team's settings and the training provenance: base model, method, prompt set, the training
    questions (count, split, hashes), steps, seed, package version, the weights' SHA-256;
  - ``history.json``: the training log (``gcache plot`` draws it);
  - ``README.md``: a model card generated from the two, with the evaluation results recorded so far
    (``evaluations.json``: ``gcache eval --checkpoint`` adds one entry per finished evaluation).

  Nothing in it is a pickle: loading it runs no code, so a team from someone else is as safe to evaluate as a
  dataset. A folder is loaded by its path, or by a hub id (``owner/name``) through ``huggingface_hub``.
* ``OUT/train_state.pt``: what only a resumed ``gcache train`` reads (step, team, optimizer, baseline, history),
  read with ``torch.load(weights_only=True)``.

Old single-file checkpoints (``OUT/checkpoint.pt``) are read with ``weights_only=True`` as well: they hold tensors
and plain data only, so they load unchanged; a pickle that carries anything else (code) is refused in one line.

>>> team = load_team("runs/train")  # the run folder, its team/ folder, or owner/name  # doctest: +SKIP
>>> team.step, team.config["method"], len(team.train_question_hashes)  # doctest: +SKIP
(10, 'gcache', 40)
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import pickle
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gcache.config import ConfigError
from gcache.io import atomic_open, atomic_torch_save, atomic_write_json, atomic_write_text, file_sha256

logger = logging.getLogger(__name__)

__all__ = ["CARD_NAME", "CONFIG_NAME", "CheckpointError", "EVALUATIONS_NAME", "FORMAT", "HISTORY_NAME",
           "LEGACY_CHECKPOINT_NAME", "TEAM_DIR", "TRAIN_STATE_NAME", "TrainedTeam", "WEIGHTS_NAME",
           "convert_legacy", "load_team", "load_train_state", "read_weights_only", "record_evaluation", "render_card", "save_team",
           "save_train_state"]

TEAM_DIR = "team"
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
HISTORY_NAME = "history.json"
EVALUATIONS_NAME = "evaluations.json"
CARD_NAME = "README.md"
TRAIN_STATE_NAME = "train_state.pt"
LEGACY_CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = "gcache-team"
FORMAT_VERSION = 1
#: What a hub snapshot of a team downloads (nothing executable is ever fetched).
HUB_FILES = (CONFIG_NAME, WEIGHTS_NAME, HISTORY_NAME, EVALUATIONS_NAME, CARD_NAME)
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


class CheckpointError(ConfigError):
    """A trained team or checkpoint that cannot be used (missing, damaged, or unsafe); one line says why."""


@dataclass
class TrainedTeam:
    """A trained team as evaluation and plotting use it.

    Attributes:
        state_dict (dict[str, torch.Tensor]): the team's weights (``Team.load_state_dict`` takes them).
        config (dict): the training run's settings (``RunConfig.to_dict()``).
        info (dict): the whole ``config.json`` (for an old ``checkpoint.pt``: built from it).
        history (list[dict]): the training log, one entry per step.
        source (str): what the user gave (path or hub id).
        folder (Path | None): the local team folder; None for an old ``.pt`` file.
        weights_sha256 (str): SHA-256 of the weights (of the whole file for an old ``.pt``).
        from_hub (bool): downloaded by hub id (its folder is the hub's cache: nothing is written there).
    """

    state_dict: dict[str, torch.Tensor]
    config: dict[str, Any]
    info: dict[str, Any]
    history: list[dict] = field(default_factory=list)
    source: str = ""
    folder: Path | None = None
    weights_sha256: str = ""
    from_hub: bool = False

    @property
    def step(self) -> int:
        return int(self.info.get("training", {}).get("steps") or 0)

    @property
    def train_question_hashes(self) -> list[str]:
        return list(self.info.get("training", {}).get("questions", {}).get("hashes", ()))

    @property
    def num_layers(self) -> int:
        """LLM layers of the team's fuser (0: a text team, no fuser)."""
        return int(self.info.get("team", {}).get("num_layers") or 0)


# ---------------------------------------------------------------------------------------------------- writing
def save_team(folder: str | Path, state_dict: Mapping[str, torch.Tensor], *, run_config: Mapping[str, Any],
              identity: Mapping[str, Any] | None, num_layers: int, agents: Sequence[str], prompt_set: str,
              train_question_hashes: Sequence[str], train_questions: int, step: int,
              history: Sequence[Mapping[str, Any]]) -> Path:
    """Write a trained team folder (weights, settings, history, model card); each file atomically.

    The weights are written first and ``config.json`` records their SHA-256, so a crash between the two is found
    at load time (the next training step rewrites both).

    Args:
        folder (str | Path): the team folder (created).
        state_dict (Mapping[str, Tensor]): ``Team.state_dict()``, whatever keys it holds.
        run_config (Mapping): ``RunConfig.to_dict()`` of the training run (no secrets).
        identity (Mapping | None): the training run's identity.
        num_layers (int): LLM layers of the fuser (0 without one).
        agents (Sequence[str]): role name per agent.
        prompt_set (str): the prompt set's name (or file).
        train_question_hashes (Sequence[str]): hashes of the training questions.
        train_questions (int): how many training questions.
        step (int): optimisation steps taken.
        history (Sequence[Mapping]): the training log.

    Returns:
        Path: ``folder``.

    Raises:
        TypeError: the state dict holds something other than tensors.
    """
    from safetensors.torch import save as safetensors_bytes

    import gcache

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"team state {key!r} is a {type(value).__name__}, not a tensor: safetensors holds tensors")
        tensors[key] = value.detach().to("cpu").contiguous().clone()  # clone: safetensors refuses shared storage
    blob = safetensors_bytes(tensors, metadata={"format": "pt", "gcache_format": FORMAT})
    with atomic_open(folder / WEIGHTS_NAME, "wb") as f:
        f.write(blob)
    cfg = dict(run_config)
    info = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "gcache_version": gcache.__version__,
        "base_model": cfg.get("model"),
        "method": cfg.get("method"),
        "mode": cfg.get("mode"),
        "prompt_set": prompt_set,
        "team": {"agents": list(agents), "num_layers": int(num_layers),
                 **{k: cfg.get(k) for k in ("topology", "rounds", "decision", "fuser", "message", "soft_edges",
                                            "gnn_temperature", "embedder")}},
        "training": {
            "dataset": cfg.get("dataset"),
            "split": cfg.get("split"),
            "data": cfg.get("data"),
            "data_sha256": (identity or {}).get("data_sha256"),
            "limit": cfg.get("limit"),
            "steps": int(step),
            "seed": cfg.get("seed"),
            "questions": {"count": int(train_questions), "split": cfg.get("split"),
                          "hash": "sha256 of the whitespace-normalised question, first 16 hex digits",
                          "hashes": sorted(train_question_hashes)},
            **{k: cfg.get(k) for k in ("batch_size", "samples_per_question", "lr", "fuser_lr", "utility",
                                       "baseline", "fuser_loss_weight", "fuser_grad")},
        },
        "weights": {"file": WEIGHTS_NAME, "sha256": hashlib.sha256(blob).hexdigest(), "tensors": len(tensors),
                    "parameters": int(sum(t.numel() for t in tensors.values()))},
        "run_config": cfg,
        "identity": dict(identity) if identity is not None else None,
    }
    atomic_write_json(folder / CONFIG_NAME, info)
    atomic_write_json(folder / HISTORY_NAME, list(history))
    atomic_write_text(folder / CARD_NAME, render_card(info, _evaluations(folder)))
    return folder


def save_train_state(path: str | Path, state: Mapping[str, Any]) -> None:
    """Write training's resumable state (tensors and plain data only, so it loads with ``weights_only=True``)."""
    atomic_torch_save(dict(state), path)


def record_evaluation(team: TrainedTeam, summary: Mapping[str, Any], out: str | Path) -> None:
    """Add a finished evaluation of ``team`` to its folder's ``evaluations.json`` and model card.

    Only for a local team folder (a hub download is the hub's cache, an old ``.pt`` has no card). A folder that
    cannot be written is logged, not fatal: the evaluation itself is in ``out``.
    """
    if team.folder is None or team.from_hub:
        return
    counts = summary.get("counts", {})
    entry = {
        "dataset": summary.get("dataset"),
        "split": summary.get("subset", {}).get("split"),
        "subset": summary.get("subset", {}).get("name"),
        "method": summary.get("method"),
        "model": summary.get("config", {}).get("model"),
        "eval_graph": summary.get("eval_graph"),
        "questions": counts.get("questions"),
        "answered": counts.get("answered"),
        "accuracy": summary.get("accuracy"),
        "accuracy_filter": summary.get("accuracy_filter"),
        "accuracy_strict": summary.get("accuracy_strict"),
        "weights_sha256": team.weights_sha256,
        "out": str(Path(out).resolve()),
        "recorded": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        entries = [e for e in _evaluations(team.folder) if e.get("out") != entry["out"]]  # a rerun replaces its own
        entries.append(entry)
        atomic_write_json(team.folder / EVALUATIONS_NAME, entries)
        atomic_write_text(team.folder / CARD_NAME, render_card(team.info, entries))
    except OSError as err:
        logger.warning("could not record this evaluation in %s (%s); it is in %s", team.folder,
                       err.strerror or err, out)


def render_card(info: Mapping[str, Any], evaluations: Sequence[Mapping[str, Any]] = ()) -> str:
    """The model card (``README.md``) of a team folder: what it is, what it was trained on, how it scored.

    Only evaluations of these weights (same SHA-256) are listed: a folder rewritten by further training drops the
    scores of its earlier weights from the card (``evaluations.json`` keeps them).
    """
    training = info.get("training", {})
    questions = training.get("questions", {})
    team = info.get("team", {})
    sha = info.get("weights", {}).get("sha256")
    method, dataset = info.get("method"), training.get("dataset")
    lines = [
        "---",
        "library_name: gcache",
        f"tags: [{', '.join(dict.fromkeys(['gcache', 'multi-agent', str(method)]))}]",
        f"base_model: {json.dumps(info.get('base_model'))}",
        "---",
        "",
        f"# G-cache trained team: {method} on {dataset}",
        "",
        "A learned multi-agent team (topology model"
        + (" and CacheFuser" if team.get("num_layers") else "") + f") trained by `gcache train`. The LLM "
        "itself is not included: the team runs over the base model below, which stays frozen.",
        "",
        "| | |",
        "|---|---|",
        f"| base model | `{info.get('base_model')}` |",
        f"| method | {method} (mode {info.get('mode')}) |",
        f"| prompt set | {info.get('prompt_set')} |",
        f"| agents | {', '.join(team.get('agents', []))} |",
        f"| topology | {team.get('topology')}, {team.get('rounds')} round(s), decision {team.get('decision')} |",
        f"| training questions | {questions.get('count')} from {dataset} split {questions.get('split')}"
        + (f" (`{training.get('data')}`, sha256 {str(training.get('data_sha256'))[:16]})" if training.get("data")
           else "") + " |",
        f"| steps | {training.get('steps')} |",
        f"| seed | {training.get('seed')} |",
        f"| gcache version | {info.get('gcache_version')} |",
        f"| weights | `{WEIGHTS_NAME}`, {info.get('weights', {}).get('parameters')} values, sha256 {sha} |",
        "",
        "## Evaluation results",
        "",
    ]
    mine = [e for e in evaluations if e.get("weights_sha256") == sha]
    if mine:
        lines += ["| dataset | questions | method | model | graph | accuracy | strict | recorded |",
                  "|---|---|---|---|---|---:|---:|---|"]
        for e in mine:
            lines.append(f"| {e.get('dataset')} | {e.get('subset')} | {e.get('method')} | {e.get('model')} | "
                         f"{e.get('eval_graph')} | {_pct(e.get('accuracy'))} | {_pct(e.get('accuracy_strict'))} | "
                         f"{e.get('recorded')} |")
    else:
        lines.append("None recorded yet (`gcache eval --checkpoint` adds them here).")
    lines += [
        "",
        "## Use",
        "",
        "```bash",
        f"gcache eval --checkpoint PATH_OR_HUB_ID --model {info.get('base_model')} --data TEST.jsonl --out runs/eval",
        "gcache plot PATH_OR_HUB_ID --out runs/plot",
        "```",
        "",
        "`gcache eval` refuses any question whose hash is among the training questions' below.",
        "",
        "## Files",
        "",
        f"`{WEIGHTS_NAME}` (the team's state dict), `{CONFIG_NAME}` (settings and provenance), `{HISTORY_NAME}` "
        f"(training log), `{EVALUATIONS_NAME}` (evaluations recorded). None of them is a pickle.",
        "",
        f"<details><summary>Training question hashes ({len(questions.get('hashes', []))}; "
        f"{questions.get('hash')})</summary>",
        "",
        " ".join(questions.get("hashes", [])),
        "",
        "</details>",
        "",
    ]
    return "\n".join(lines)


def _evaluations(folder: Path) -> list[dict]:
    """The evaluations recorded in ``folder`` (a damaged record is logged and started afresh: it is a log)."""
    try:
        entries = _read_json(folder / EVALUATIONS_NAME, [])
    except CheckpointError as err:
        logger.warning("%s; starting it afresh", err)
        return []
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def _pct(value: Any) -> str:
    return f"{100 * value:.1f}%" if isinstance(value, (int, float)) else "-"


def _read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path} is damaged ({type(err).__name__}: {err}); train again or fetch the team "
                              f"folder again") from None


# ---------------------------------------------------------------------------------------------------- reading
def read_weights_only(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)``: tensors and plain data, never code.

    Raises:
        CheckpointError: the file is missing or damaged, or holds pickled objects beyond tensors and plain data
            (which a full unpickler would run: refused, nothing of it runs).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():  # e.g. "pickle protocol 4": the one-line error below says what matters
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        if "WeightsUnpickler" in text or "Weights only load failed" in text:
            found = re.search(r"Unsupported (global: GLOBAL \S+|operand \d+)", text)
            what = f" ({found.group(0)})" if found else ""
            raise CheckpointError(f"refusing {path}: it is a pickle that holds more than tensors and plain data"
                                  f"{what}, which could run code when loaded; gcache loads weights only (nothing "
                                  "in it was run)") from None
        raise _damaged(path, err) from None
    except Exception as err:  # noqa: BLE001 - EOFError, zip errors, KeyError...: all mean a damaged file
        raise _damaged(path, err) from None


def _damaged(path: Path, err: BaseException) -> CheckpointError:
    detail = str(err).splitlines()[0] if str(err) else ""
    return CheckpointError(f"checkpoint {path} is damaged or not a checkpoint ({type(err).__name__}: {detail}); "
                           "train again, or delete it to start over")


def load_train_state(path: str | Path) -> dict:
    """Training's resumable state (``train_state.pt``, or an old ``checkpoint.pt``), read with ``weights_only``.

    Raises:
        CheckpointError: missing, damaged, unsafe, or not a gcache training state.
    """
    state = read_weights_only(path)
    if not isinstance(state, dict) or not {"config", "team", "optimizer", "step"} <= state.keys():
        raise CheckpointError(f"{path} is not a gcache train checkpoint (it holds no 'config', 'team', "
                              "'optimizer' and 'step')")
    return state


def load_team(source: str | Path) -> TrainedTeam:
    """A trained team from a ``gcache train`` output folder, its ``team/`` folder, a hub id, or an old ``.pt``.

    Nothing read runs code: safetensors and JSON, or an old ``.pt`` through ``weights_only=True``.

    Raises:
        CheckpointError: nothing usable there, a damaged or incomplete folder, or an unsafe pickle.
    """
    path = Path(source)
    if path.is_dir():
        if (path / CONFIG_NAME).is_file() or (path / WEIGHTS_NAME).is_file():
            return _load_folder(path, str(source))
        if (path / TEAM_DIR).is_dir():
            return _load_folder(path / TEAM_DIR, str(source))
        if (path / LEGACY_CHECKPOINT_NAME).is_file():
            return _load_legacy(path / LEGACY_CHECKPOINT_NAME, str(source))
        raise CheckpointError(f"checkpoint not found: {path} holds no trained team (gcache train writes "
                              f"OUT/{TEAM_DIR}/{WEIGHTS_NAME} and OUT/{TEAM_DIR}/{CONFIG_NAME})")
    if path.is_file():
        if path.name in (CONFIG_NAME, WEIGHTS_NAME):
            return _load_folder(path.parent, str(source))
        return _load_legacy(path, str(source))
    if _HUB_ID.fullmatch(str(source)) and not str(source).startswith((".", "/")):
        return _load_folder(_download(str(source)), str(source), from_hub=True)
    raise CheckpointError(f"checkpoint not found: {source} (give a gcache train output folder, its {TEAM_DIR}/ "
                          "folder, or a hub id owner/name)")


def _download(repo_id: str) -> Path:
    """The hub snapshot of a team (its JSON, safetensors and card only)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise CheckpointError(f"checkpoint {repo_id}: not a local path, and loading from the hub needs "
                              "huggingface_hub (pip install huggingface_hub)") from None
    try:
        return Path(snapshot_download(repo_id, allow_patterns=list(HUB_FILES)))
    except Exception as err:  # noqa: BLE001 - offline, unknown repo, no access...: one line either way
        detail = str(err).splitlines()[0] if str(err) else ""
        raise CheckpointError(f"checkpoint not found: {repo_id} is not a local path, and the hub did not give it "
                              f"({type(err).__name__}: {detail})") from None


def _load_folder(folder: Path, source: str, from_hub: bool = False) -> TrainedTeam:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    for needed in (config_path, weights_path):
        if not needed.is_file():
            raise CheckpointError(f"{folder} is not a complete trained team: {needed.name} is missing")
    info = _read_json(config_path, None)
    if not isinstance(info, dict) or info.get("format") != FORMAT or not isinstance(info.get("run_config"), dict):
        raise CheckpointError(f"{config_path} is not a gcache trained team's config (no \"format\": \"{FORMAT}\")")
    if int(info.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(f"{folder} was written by a newer gcache ({info.get('gcache_version')}, format "
                              f"{info.get('format_version')}); upgrade gcache to load it")
    sha = file_sha256(weights_path)
    if sha != info.get("weights", {}).get("sha256"):
        raise CheckpointError(f"{weights_path} does not match {CONFIG_NAME} (sha256 {sha[:16]}, recorded "
                              f"{str(info.get('weights', {}).get('sha256'))[:16]}): the folder is incomplete or "
                              "damaged; rerun gcache train to rewrite it, or fetch it again")
    try:
        state = load_file(weights_path, device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise _damaged(weights_path, err) from None
    history = _read_json(folder / HISTORY_NAME, [])
    return TrainedTeam(state, dict(info["run_config"]), info, history if isinstance(history, list) else [],
                       source, folder, sha, from_hub)


def _load_legacy(path: Path, source: str) -> TrainedTeam:
    """An old single-file ``checkpoint.pt`` (tensors and plain data, read with ``weights_only=True``)."""
    state = read_weights_only(path)
    if not isinstance(state, dict) or not {"config", "team"} <= state.keys():
        raise CheckpointError(f"{path} is not a gcache train checkpoint (it holds no 'config' and 'team')")
    config = dict(state["config"])
    gates = state["team"].get("fuser.gates")  # old files recorded no layer count; the fuser has one gate per layer
    # (per receiver kind and layer, [2, l], since the decision node has gates of its own)
    hashes = list(state.get("train_question_hashes", ()))
    info = {
        "format": FORMAT, "format_version": 0, "gcache_version": (state.get("identity") or {}).get("package_version"),
        "base_model": config.get("model"), "method": config.get("method"), "mode": config.get("mode"),
        "prompt_set": config.get("prompt_set"),
        "team": {"agents": list(state.get("agents", ())), "num_layers": int(gates.shape[-1]) if gates is not None else 0},
        "training": {"dataset": config.get("dataset"), "split": config.get("split"), "steps": state.get("step"),
                     "seed": config.get("seed"), "questions": {"count": len(hashes), "split": config.get("split"),
                                                               "hashes": hashes}},
        "run_config": config, "identity": state.get("identity"),
    }
    return TrainedTeam(dict(state["team"]), config, info, list(state.get("history", ())), source, None,
                       file_sha256(path))


def convert_legacy(path: str | Path, out: str | Path | None = None) -> Path:
    """Write the team of an old ``checkpoint.pt`` (or of a run folder holding one) as a team folder.

    The old file is read with ``weights_only=True`` like any other (a pickle carrying code is refused, not
    converted); it is left in place.

    Args:
        path (str | Path): the old file, or the run folder holding it.
        out (str | Path | None): the team folder to write. Default is None: ``team/`` next to the old file.

    Returns:
        Path: the team folder written.

    Raises:
        CheckpointError: no old checkpoint there, or one that is damaged or unsafe.
    """
    path = Path(path)
    file = path / LEGACY_CHECKPOINT_NAME if path.is_dir() else path
    if not file.is_file():
        raise CheckpointError(f"checkpoint not found: {file} (convert-checkpoint reads an old {LEGACY_CHECKPOINT_NAME})")
    old = _load_legacy(file, str(path))
    config = old.config
    prompt_set = config.get("prompt_set")
    if prompt_set is None:  # the dataset's own, as training chose it
        from gcache.tasks import TASKS

        prompt_set = TASKS[config["dataset"]].prompt_set if config.get("dataset") in TASKS else None
    hashes = old.train_question_hashes
    return save_team(Path(out) if out is not None else file.parent / TEAM_DIR, old.state_dict, run_config=config,
                     identity=old.info.get("identity"), num_layers=old.num_layers, agents=old.info["team"]["agents"],
                     prompt_set=str(prompt_set), train_question_hashes=hashes, train_questions=len(hashes),
                     step=old.step, history=old.history)
