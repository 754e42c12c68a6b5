"""The registry of methods: what each one is called, where it may run, whether it learns, how it builds its plan,
and which settings make two of its runs the same experiment.

Importable without torch (the CLI's ``--help`` and config validation read it); a method's plan builder is named as
``"module:function"`` and imported only when a plan is built. In the spirit of lm-evaluation-harness's task
registry: the CLI's ``--method`` choices, :class:`gcache.config.RunConfig` validation, resume checks
(:func:`identity_keys`) and the docs' method table (``python -m gcache.methods --markdown``) all read :data:`METHODS`.

Adding a method:

1. write its plan builder ``fn(mode, *, graph, roles, message) -> (Plan, edge_index)`` (see
   :mod:`gcache.reasoning.plans`);
2. add one :func:`register_method` call below, naming the modes it supports, whether it learns a topology
   (``gcache train`` accepts only those) and the extra settings its results depend on;
3. run ``python -m gcache.methods --markdown`` and paste the table into the README (a test checks it).

>>> get_method("latentmas_seq").modes, get_method("gdesigner").learns
(('local', 'hybrid'), True)
>>> get_method("gcache").check_mode("local_cache")
'local'
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from gcache.choices import MODES, resolve_mode

__all__ = [
    "API_IDENTITY",
    "COMMON_IDENTITY",
    "GRAPH_IDENTITY",
    "LATENT_IDENTITY",
    "LOCAL_MODEL_IDENTITY",
    "METHODS",
    "Method",
    "MethodError",
    "TRAINING_IDENTITY",
    "get_method",
    "identity_keys",
    "list_methods",
    "markdown_table",
    "register_method",
]


class MethodError(ValueError):
    """An unknown method, or a method asked to run where it cannot; the message says what is allowed."""


# -- which settings make two runs "the same" ------------------------------------------------------------------
# One list per concern; identity_keys() joins the ones that apply. Names are RunConfig fields, except the facts a
# recipe computes before any model loads: data_sha256 (the dataset file's hash), task_version,
# checkpoint_sha256 and package_version. `dtype` is compared as resolved (auto -> float32 / bfloat16).
#: Every run.
COMMON_IDENTITY = ("method", "mode", "dataset", "split", "data_sha256", "task_version", "max_new_tokens",
                   "temperature", "top_p", "seed", "samples", "package_version")
#: Runs that load a local model (modes local and hybrid).
LOCAL_MODEL_IDENTITY = ("model", "dtype", "device_map")
#: Runs that call an API (modes hybrid and api).
API_IDENTITY = ("api_model", "base_url")
#: Methods whose agents think in latent space.
LATENT_IDENTITY = ("latent_steps", "realign", "zero_latent_steps")
#: Methods over a graph of a prompt set's roles, chosen by a topology model.
GRAPH_IDENTITY = ("prompt_set", "agents", "rounds", "topology", "decision", "embedder", "gnn_temperature",
                  "eval_graph", "checkpoint_sha256")
#: ``gcache train``: what changes the sequence of optimisation steps (``steps`` may grow on resume).
TRAINING_IDENTITY = ("limit", "batch_size", "lr", "fuser_lr", "read_lr", "utility", "baseline", "samples_per_question",
                     "fuser_loss_weight", "fuser_grad", "optimize_spatial", "optimize_temporal")


@dataclass(frozen=True)
class Method:
    """One registered method.

    Args:
        name (str): what ``--method`` takes.
        summary (str): one line for ``--help`` and the docs.
        modes (tuple[str, ...]): the modes it runs in (canonical names, see :data:`gcache.choices.MODES`).
        learns (bool): it has a topology model (and, if latent, a CacheFuser) that ``gcache train`` trains.
        latent (bool): its agents pass KV messages of latent thoughts (so they need a local model).
        plan (str): ``"module:function"`` of its plan builder, imported when a plan is built.
        identity (tuple[str, ...]): settings its results depend on beyond :data:`COMMON_IDENTITY` and the
            mode's keys.
        passes (str): what its agents hand each other (docs). Default is ``"text"``.
    """

    name: str
    summary: str
    modes: tuple[str, ...]
    learns: bool
    latent: bool
    plan: str
    identity: tuple[str, ...] = ()
    passes: str = "text"

    def __post_init__(self) -> None:
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise ValueError(f"method {self.name!r}: modes must be a non-empty subset of {MODES}, got {self.modes}")
        if ":" not in self.plan:
            raise ValueError(f"method {self.name!r}: plan must be 'module:function', got {self.plan!r}")

    def check_mode(self, mode: str) -> str:
        """The canonical mode if this method runs in it.

        Raises:
            MethodError: an unknown mode, or one this method does not support (one line: why, and what to use).
        """
        try:
            mode = resolve_mode(mode)
        except ValueError as err:
            raise MethodError(str(err)) from None
        if mode in self.modes:
            return mode
        if self.latent and mode == "api":
            raise MethodError(
                f"--method {self.name} passes KV-caches, which an API model cannot read: --mode api is not "
                f"available (choose {' or '.join(self.modes)}"
                + ("; gdesigner is the same learned graph passing text over the API)" if self.learns else ")"))
        if not self.latent and mode == "hybrid":
            raise MethodError(
                f"--method {self.name} has no latent agents, so --mode hybrid (local latent agents, an API model "
                f"answers) does not apply: choose {' or '.join(self.modes)}")
        raise MethodError(f"--method {self.name} does not run in --mode {mode}; choose {' or '.join(self.modes)}")

    def build_plan(self, mode: str, *, graph: Any = None, roles: Mapping[str, Any] | None = None,
                   message: str = "full", votes: int = 5) -> tuple[Any, dict]:
        """This method's plan for one question.

        Args:
            mode (str): ``local`` / ``hybrid`` / ``api`` (checked with :meth:`check_mode`).
            graph (AgentGraph | None): the question's graph (learned methods).
            roles (Mapping[str, Role] | None): role of each agent name in ``graph`` (learned methods).
            message (str): what latent agents send on. Default is ``"full"``.
            votes (int): sampled answers of ``self_consistency``. Default is 5.

        Returns:
            tuple: ``(Plan, edge_index)`` (see :func:`gcache.reasoning.plans.plan_from_graph`).
        """
        mode = self.check_mode(mode)
        module, _, attr = self.plan.partition(":")
        builder = getattr(importlib.import_module(module), attr)
        return builder(mode, graph=graph, roles=roles, message=message, votes=votes)

    def identity_keys(self, mode: str, *, training: bool = False) -> tuple[str, ...]:
        """Settings that must match for a resumed run of this method to continue the same experiment."""
        mode = resolve_mode(mode)
        keys = COMMON_IDENTITY
        if mode != "api":
            keys += LOCAL_MODEL_IDENTITY
        if mode != "local":
            keys += API_IDENTITY
        keys += self.identity
        if training:
            keys += TRAINING_IDENTITY
        return tuple(dict.fromkeys(keys))  # first occurrence wins, order kept


# Filled only below, at import time, by register_method (read-only view in METHODS).
_REGISTRY: dict[str, Method] = {}
#: Every method by name, in registration order (read-only).
METHODS: Mapping[str, Method] = MappingProxyType(_REGISTRY)


def register_method(method: Method) -> Method:
    """Add ``method`` to :data:`METHODS`.

    Raises:
        ValueError: if its name is taken.
    """
    if method.name in _REGISTRY:
        raise ValueError(f"method {method.name!r} is already registered")
    _REGISTRY[method.name] = method
    return method


def list_methods() -> tuple[str, ...]:
    """Names of the registered methods, in registration order."""
    return tuple(_REGISTRY)


def get_method(name: str) -> Method:
    """The method registered as ``name``.

    Raises:
        MethodError: if unknown (the message lists the valid names).
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise MethodError(f"unknown method {name!r}; choose one of {', '.join(_REGISTRY)}") from None


def identity_keys(method: str, mode: str, *, training: bool = False) -> tuple[str, ...]:
    """:meth:`Method.identity_keys` of the method registered as ``method``."""
    return get_method(method).identity_keys(mode, training=training)


_PLANS = "gcache.reasoning.plans"
register_method(Method(
    "single", "one solver answers alone", modes=("local", "api"), learns=False, latent=False,
    plan=f"{_PLANS}:single_plan"))
register_method(Method(
    "text_chain", "planner -> critic -> refiner -> judger, passing text", modes=("local", "api"), learns=False,
    latent=False, plan=f"{_PLANS}:text_chain_plan"))
register_method(Method(
    "latentmas_seq", "LatentMAS sequential: planner -> critic -> refiner think in latent space, a judger answers",
    modes=("local", "hybrid"), learns=False, latent=True, plan=f"{_PLANS}:latentmas_seq_plan",
    identity=LATENT_IDENTITY, passes="whole KV-cache"))
register_method(Method(
    "latentmas_hier", "LatentMAS hierarchical: three experts think in latent space, a summarizer answers",
    modes=("local", "hybrid"), learns=False, latent=True, plan=f"{_PLANS}:latentmas_hier_plan",
    identity=LATENT_IDENTITY, passes="whole KV-cache"))
register_method(Method(
    "gdesigner", "G-Designer: a GCN picks the graph of the prompt set's roles (or --topology PRESET)",
    modes=("local", "api"), learns=True, latent=False, plan=f"{_PLANS}:text_graph_plan",
    identity=GRAPH_IDENTITY))
register_method(Method(
    "gcache", "G-cache: the same learned graph, agents pass KV messages merged by the CacheFuser",
    modes=("local", "hybrid"), learns=True, latent=True, plan=f"{_PLANS}:latent_graph_plan",
    identity=(*GRAPH_IDENTITY, *LATENT_IDENTITY, "message", "fuser", "soft_edges", "alone_prob"),
    passes="KV messages (--message), fused"))
register_method(Method(
    "self_consistency", "--votes sampled solver answers, majority-voted (ties: the answer reached first)",
    modes=("local", "api"), learns=False, latent=False, plan=f"{_PLANS}:self_consistency_plan",
    identity=("votes",), passes="nothing (independent samples)"))


def markdown_table() -> str:
    """The methods table of the README."""
    rows = ["| method | what it is | modes | learns | agents pass |", "|---|---|---|---|---|"]
    for m in METHODS.values():
        rows.append(f"| `{m.name}` | {m.summary} | {', '.join(m.modes)} | {'yes' if m.learns else 'no'} | "
                    f"{m.passes} |")
    return "\n".join(rows) + "\n"


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gcache.methods", description="List the registered methods.")
    parser.add_argument("--markdown", action="store_true", help="print the docs' markdown table")
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown_table(), end="")
        return 0
    for m in METHODS.values():
        print(f"{m.name:15s} modes={','.join(m.modes):12s} learns={'yes' if m.learns else 'no ':3s}  {m.summary}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
