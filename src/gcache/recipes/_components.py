"""Builders that turn a :class:`~gcache.config.RunConfig` into components. Recipes wire these; nothing else does."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

from gcache.api.settings import MissingApiKeyError
from gcache.config import ConfigError, RunConfig, prepare_out  # noqa: F401 - recipes use C.prepare_out
from gcache.reasoning import DecodeConfig, LatentEngine, make_engine
from gcache.reasoning.executor import GraphExecutor, Plan
from gcache.methods import get_method

logger = logging.getLogger(__name__)


def needs_local_model(cfg: RunConfig) -> bool:
    return cfg.mode != "api"


def needs_api(cfg: RunConfig) -> bool:
    return cfg.mode in ("hybrid", "api")


def build_task(cfg: RunConfig):
    from gcache.tasks import get_task

    return get_task(cfg.dataset)


def check_model(cfg: RunConfig) -> None:
    """Resolve ``--model`` to files (a typo in a path fails here, in one line, before anything loads)."""
    from gcache.models import TINY_MODELS, resolve_model

    if cfg.model not in TINY_MODELS:
        resolve_model(cfg.model)


def build_engine(cfg: RunConfig, models: dict | None = None) -> LatentEngine:
    """The local model as a :class:`LatentEngine`.

    Args:
        cfg (RunConfig): the run.
        models (dict | None): loaded ``(model, tokenizer)`` by (model, dtype, device, device map), shared between
            runs (``gcache compare``); filled here. Default is None (load for this run only).
    """
    from gcache.models import load_model

    key = (cfg.model, cfg.dtype, cfg.device, cfg.device_map)
    if models is not None and key in models:
        model, tokenizer = models[key]
    else:
        logger.info("loading model %s (%s on %s)", cfg.model, cfg.resolved_dtype, cfg.device_map or cfg.device)
        model, tokenizer = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device, device_map=cfg.device_map)
        if models is not None:
            models[key] = (model, tokenizer)
    try:
        engine = make_engine(model, tokenizer, engine=cfg.engine, realign=cfg.realign,
                             max_context=cfg.max_context)
    except ValueError as err:  # --engine fast for a model --device-map spread over several devices
        raise ConfigError(str(err), key="engine") from None
    logger.info("latent engine: %s", type(engine).__name__)
    return engine


def load_prompt_set(cfg: RunConfig):
    """The prompt set of a graph method (``--prompt-set``, or the dataset's), validated before any model loads.

    Raises:
        ConfigError: an unknown prompt set, or a file that does not parse or is not a valid prompt set.
    """
    from gcache.agents.roles import load_prompt_set as load
    from gcache.tasks import TASKS

    try:
        return load(cfg.prompt_set or TASKS[cfg.dataset].prompt_set)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ConfigError(f"--prompt-set: {err}", key="prompt_set") from None


def load_prices(cfg: RunConfig):
    """The price table (built-in, plus ``--prices``)."""
    from gcache.api.pricing import PriceTable

    if cfg.prices is None:
        return PriceTable()
    try:
        return PriceTable.load(cfg.prices)
    except (OSError, ValueError) as err:
        raise ConfigError(f"--prices {cfg.prices}: {err}", key="prices") from None


def build_api(cfg: RunConfig):
    """The API client; logs (without the key) where requests go."""
    from gcache.api import ApiSettings, ChatClient

    try:
        settings = ApiSettings.resolve(api_key=cfg.api_key, base_url=cfg.base_url, model=cfg.api_model,
                                       timeout_s=cfg.api_timeout, max_retries=cfg.api_retries,
                                       max_concurrency=cfg.api_concurrency)
    except MissingApiKeyError:
        raise
    except ValueError as err:  # e.g. BASE_URL from the environment or .env is not a URL
        raise ConfigError(f"API settings: {err}") from None
    logger.info("API: %s at %s", settings.model, settings.base_url)
    if cfg.mode == "hybrid":
        logger.info("hybrid mode: the API model cannot read KV-caches; the local model decodes the latent agents' "
                    "thoughts to text, and that text is what the API model is sent (recorded per question)")
    return ChatClient(settings, seed=cfg.seed)


def build_team(cfg: RunConfig, num_layers: int, prompt_set=None):
    """The learned team of a graph method (policy + fuser) over the dataset's prompt set."""
    from gcache.modules.embedding import SentenceEmbedder
    from gcache.training.team import Team

    prompt_set = prompt_set if prompt_set is not None else load_prompt_set(cfg)
    agents = prompt_set.select_agents(cfg.agents)
    latent = get_method(cfg.method).latent  # the registry has refused latent methods in mode api
    embedder = SentenceEmbedder(cfg.embedder)
    # The initial weights depend on --seed only: an untrained team evaluates the same after a resume, and training
    # starts from the team an untrained evaluation ran.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return Team(prompt_set, agents, embedder, num_layers=num_layers if latent else 0, topology=cfg.topology,
                    num_rounds=cfg.rounds, decision=cfg.decision, fuser_mode=cfg.fuser,
                    soft_edges=cfg.soft_edges and latent, temperature=cfg.gnn_temperature, seed=cfg.seed,
                    read_set=latent and cfg.decision == "refer", alone_prob=cfg.alone_prob)


def build_executor(cfg: RunConfig, task, engine: LatentEngine | None, api, fuser=None,
                   diagnostics: bool = False) -> GraphExecutor:
    decode = DecodeConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p)
    return GraphExecutor(engine=engine, api=api, latent_steps=cfg.latent_steps, decode=decode, fuser=fuser,
                         answer_instruction=task.answer_instruction, extract=task.extract, seed=cfg.seed,
                         diagnostics=diagnostics)


def group_by_graph(draws: list) -> list[list[int]]:
    """Indices of the draws that share a graph (a group runs as one batch); all together for a fixed baseline."""
    groups: dict[str, list[int]] = {}
    for i, draw in enumerate(draws):
        # a graph that answers alone runs the single agent's plan whatever edges were drawn among unread agents
        key = "" if draw is None else "alone" if draw.graph.alone else repr(draw.graph.to_dict())
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def plan_for(cfg: RunConfig, team, draws: list | None = None) -> tuple[Plan, dict | None]:
    """The plan of a group of questions that share a graph, and their soft-edge terms.

    A fixed baseline has its own plan; a learned method unrolls the graph of its
    :class:`~gcache.training.team.GraphDraw` s (all the same graph). Training and evaluation both build their
    plans here, so they run the same graph with the same fuser bias.

    Returns:
        tuple: ``(plan, edge_log_probs)``; ``edge_log_probs[(j, i)]`` is ``[b]``, one ``log p`` per question for
        the plan input ``j -> i``, or None without soft edges.
    """
    method = get_method(cfg.method)
    graph = draws[0].graph if team is not None else None
    plan, edge_index = method.build_plan(cfg.mode, graph=graph, roles=team.roles if team is not None else None,
                                         message=cfg.message, votes=cfg.votes)
    if cfg.latent_steps == 0 and cfg.zero_latent_steps == "judge_alone":
        return judge_alone(plan), None
    per_draw = [team.soft_edge_log_probs(d, edge_index) for d in draws] if team is not None else [None]
    if per_draw[0] is None:
        return plan, None
    return plan, {key: torch.stack([terms[key] for terms in per_draw]) for key in per_draw[0]}  # [b] each


def judge_alone(plan: Plan) -> Plan:
    """``plan`` with an answering node that reads nothing from the latent agents: it decodes from its own prompt.

    The other agents still run (and cost their prefills), as in the LatentMAS reference with ``latent_steps 0``
    (``methods/latent_mas.py:158`` passes no cache to the judger then). Text agents' outputs still reach it.
    """
    last = plan.nodes[-1]
    latent = {j for j, node in enumerate(plan.nodes) if node.kind == "latent"}
    alone = dataclasses.replace(last, inputs=tuple(j for j in last.inputs if j not in latent))
    return dataclasses.replace(plan, nodes=plan.nodes[:-1] + (alone,))


def identity_facts(cfg: RunConfig, task, team=None) -> dict:
    """The facts a run's identity holds besides its settings (see :data:`gcache.methods.COMMON_IDENTITY`).

    Names alone do not pin content: a ``--prompt-set`` file and a local ``--model`` folder can change under the
    same name, so their identity values carry hashes of the content (``name (sha256 ...)``), and the package's
    version carries a hash of its source (:func:`gcache.provenance.code_version`).

    Args:
        team (TrainedTeam | None): the loaded ``--checkpoint``: its weights' hash is the checkpoint's identity.
            Default is None.
    """
    from gcache.io import file_sha256
    from gcache.provenance import code_version, model_fingerprint

    data_file = task.resolve_path(Path(cfg.data), cfg.split) if cfg.data is not None else None
    facts = {
        "data_sha256": file_sha256(data_file) if data_file is not None and data_file.is_file() else None,
        "task_version": task.version,
        "checkpoint_sha256": team.weights_sha256 if team is not None else None,
        "package_version": code_version(),
    }
    if cfg.prompt_set is not None and Path(cfg.prompt_set).is_file():
        facts["prompt_set"] = f"{cfg.prompt_set} (sha256 {file_sha256(cfg.prompt_set)[:16]})"
    if cfg.model is not None and (fingerprint := model_fingerprint(cfg.model)) is not None:
        facts["model"] = f"{cfg.model} ({fingerprint})"
    return facts


def load_checkpoint(source: str | Path):
    """The trained team of ``--checkpoint``: a train output folder, its ``team/`` folder, a hub id or an old
    ``checkpoint.pt``. Nothing it reads can run code (:mod:`gcache.training.checkpointing`).

    Returns:
        TrainedTeam: weights, the training run's settings and provenance.

    Raises:
        CheckpointError: (a :class:`ConfigError`) missing, damaged or unsafe.
    """
    from gcache.training.checkpointing import load_team

    return load_team(source)


def apply_checkpoint_config(cfg: RunConfig, ckpt) -> RunConfig:
    """Take the team-shaping settings from a trained team, so the saved weights fit the rebuilt team (and the fuser
    evaluates with the bias terms it was trained with, soft edges included)."""
    saved = ckpt.config
    for key in ("method", "prompt_set", "agents", "rounds", "topology", "decision", "fuser", "message", "dataset",
                "gnn_temperature", "embedder", "soft_edges", "alone_prob"):
        if key == "dataset" and cfg.data is not None:
            continue
        setattr(cfg, key, saved.get(key, getattr(cfg, key)))
    cfg.validate()
    return cfg
