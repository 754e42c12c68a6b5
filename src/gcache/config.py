"""Run configuration: one validated dataclass shared by ``gcache eval`` and ``gcache train``.

Values come from (lowest to highest) the dataclass defaults, a YAML file given with ``--config``, and command-line
flags. Validation happens once, here at the edge and before anything heavy is imported (this module does not
import torch), with messages that name the flag, or the file, line and key of a YAML value, and list the valid
choices. Method names, their modes and which settings make two runs the same come from :mod:`gcache.methods`.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from gcache.choices import (
    BASELINES,
    DECISIONS,
    DTYPES,
    ENGINES,
    FUSER_GRAD,
    FUSER_MODES,
    GRAPH_MODES,
    MESSAGE_MODES,
    MODE_ALIASES,
    MODES,
    TOPOLOGIES,
    UTILITIES,
    resolve_dtype_name,
)
from gcache.device_map import parse_device_map
from gcache.methods import MethodError, get_method, identity_keys, list_methods

__all__ = ["RunConfig", "add_run_arguments", "config_from_args", "ConfigError", "compare_identity", "check_device",
           "ZERO_LATENT_STEPS"]

# What the answering agent reads when --latent-steps is 0: the other agents' prompt caches (G-cache's default), or
# nothing, decoding alone (what the LatentMAS reference does with latent_steps 0: methods/latent_mas.py:158).
ZERO_LATENT_STEPS = ("prompt_caches", "judge_alone")

_DEVICE = re.compile(r"^(cpu|mps|meta|(cuda|xpu|npu|hpu)(:\d+)?)$")


class ConfigError(ValueError):
    """A configuration value is invalid; the message says which and what is allowed.

    Args:
        message (str): the one line shown to the user.
        key (str | None): the :class:`RunConfig` field at fault, if one is. Default is None.
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def check_device(device: str, flag: str = "--device") -> None:
    """Raise :class:`ConfigError` unless ``device`` reads as a torch device (``cpu``, ``cuda``, ``cuda:1`` ...)."""
    if not isinstance(device, str) or not _DEVICE.match(device):
        raise ConfigError(f"{flag}: {device!r} is not a device; use cpu, cuda or cuda:N", key="device")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def prepare_out(out: str | Path) -> Path:
    """Create the output folder and check it can be written, before anything slow happens.

    Raises:
        ConfigError: ``out`` is a file, or cannot be created or written.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise ConfigError(f"--out {out}: cannot write there ({err.strerror or err})") from None
    return out


@dataclass
class RunConfig:
    """Everything a run needs. See ``gcache eval --help`` for each field."""

    method: str = "latentmas_seq"
    dataset: str = "gsm8k"
    data: str | None = None
    split: str | None = None  # None: the task's default split (test for most; train for AIME)
    limit: int | None = None
    shard: str | None = None  # "i/n": the questions at positions i, i+n, ... (gcache.distributed.Shard)
    out: str | None = None
    model: str = "smollm2"
    dtype: str = "auto"
    device: str = "cpu"
    device_map: str | None = None
    engine: str = "auto"
    mode: str = "local"
    latent_steps: int = 4
    realign: bool = True
    batch_size: int = 4
    max_new_tokens: int = 512
    max_context: int | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    samples: int = 1
    zero_latent_steps: str = "prompt_caches"
    message: str = "full"
    fuser: str = "bias"
    # graphs (gdesigner / gcache)
    prompt_set: str | None = None
    agents: int | None = None
    rounds: int = 1
    topology: str = "learned"
    decision: str = "refer"
    checkpoint: str | None = None
    embedder: str | None = None
    gnn_temperature: float = 0.25
    eval_graph: str = "sample"
    soft_edges: bool = False
    alone_prob: float = 0.75  # gcache: the untrained policy's probability that the decision node reads nobody
    alone_from: str | None = None  # gcache eval: a finished single run whose records answer-alone questions reuse
    votes: int = 5  # self_consistency: sampled answers per question
    # training
    steps: int = 10
    lr: float = 0.003
    fuser_lr: float = 0.1
    read_lr: float = 0.1
    utility: str = "correct"
    baseline: str = "group"
    samples_per_question: int = 4
    fuser_loss_weight: float = 1.0
    fuser_grad: str = "decision"
    optimize_spatial: bool = True
    optimize_temporal: bool = True
    tensorboard: bool = True
    # API
    api_key: str | None = field(default=None, repr=False)
    base_url: str | None = None
    api_model: str | None = None
    api_concurrency: int = 8
    api_timeout: float = 60.0
    api_retries: int = 4
    retry_errors: bool = False
    progress: bool = True  # progress bars (tqdm.auto: a widget in notebooks); never part of a run's identity
    prices: str | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every value; a bad one raises :class:`ConfigError` naming its flag (``.key`` is the field).

        Only cheap checks happen here (types, choices, ranges, formats); files are checked by the recipes
        before any model loads.
        """

        def fail(key: str, message: str) -> None:
            raise ConfigError(message, key=key)

        def choice(key: str, options) -> None:
            value = getattr(self, key)
            if value not in options:
                fail(key, f"{_flag(key)}: unknown value {value!r}; choose one of {', '.join(map(str, options))}")

        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name), str(f.type))
        try:
            method = get_method(self.method)
        except MethodError as err:
            fail("method", str(err))
        choice("mode", MODES + tuple(MODE_ALIASES))
        try:
            self.mode = method.check_mode(self.mode)
        except MethodError as err:
            fail("mode", str(err))
        from gcache.tasks import TASKS  # torch-free

        choice("dataset", tuple(TASKS))
        self.split = self.split or TASKS[self.dataset].default_split
        choice("split", TASKS[self.dataset].splits)
        choice("zero_latent_steps", ZERO_LATENT_STEPS)
        choice("message", MESSAGE_MODES)
        choice("fuser", FUSER_MODES)
        choice("topology", TOPOLOGIES)
        choice("decision", DECISIONS)
        choice("baseline", BASELINES)
        choice("utility", UTILITIES)
        choice("fuser_grad", FUSER_GRAD)
        choice("eval_graph", GRAPH_MODES)
        if self.baseline == "group" and self.samples_per_question < 2:
            fail("baseline", "--baseline group compares the graphs drawn for one question: it needs "
                             "--samples-per-question 2 or more (or use --baseline ma)")
        choice("dtype", tuple(DTYPES))
        choice("engine", ENGINES)
        try:
            check_device(self.device)
        except ConfigError as err:
            fail("device", str(err))
        if self.device_map is not None:
            try:
                parse_device_map(self.device_map)  # torch-free: a strategy, a device, a JSON map or a map file
            except ValueError as err:
                fail("device_map", f"--device-map: {err}")
        if self.shard is not None:
            from gcache.distributed import Shard  # torch-free

            try:
                Shard.parse(self.shard)
            except ValueError as err:
                fail("shard", f"--shard: {err}")
        if self.limit is not None and self.limit < 1:
            fail("limit", f"--limit must be at least 1 (got {self.limit}); leave it out to run every question")
        for key in ("batch_size", "max_new_tokens", "rounds", "steps", "samples_per_question", "api_concurrency",
                    "samples", "votes"):
            if getattr(self, key) < 1:
                fail(key, f"{_flag(key)} must be at least 1, got {getattr(self, key)}")
        if self.max_context is not None and self.max_context < 1:
            fail("max_context", f"--max-context must be at least 1, got {self.max_context}")
        if self.agents is not None and self.agents < 1:
            fail("agents", f"--agents must be at least 1, got {self.agents}")
        for key in ("latent_steps", "api_retries", "fuser_loss_weight"):
            if getattr(self, key) < 0:
                fail(key, f"{_flag(key)} must be >= 0, got {getattr(self, key)}")
        if self.temperature < 0:
            fail("temperature", f"--temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            fail("top_p", f"--top-p must be in (0, 1], got {self.top_p}")
        for key in ("gnn_temperature", "lr", "fuser_lr", "read_lr", "api_timeout"):
            if not getattr(self, key) > 0:
                fail(key, f"{_flag(key)} must be positive, got {getattr(self, key)}")
        if not 0 < self.alone_prob < 1:
            fail("alone_prob", f"--alone-prob must be in (0, 1), got {self.alone_prob}")
        if self.method == "self_consistency" and self.temperature == 0:
            fail("temperature", "--method self_consistency votes over sampled answers: greedy decoding (--temperature "
                                "0) gives every voter the same answer; use e.g. --temperature 0.7 --top-p 0.95")
        if self.base_url is not None:
            url = urllib.parse.urlparse(self.base_url)
            if url.scheme not in ("http", "https") or not url.netloc:
                fail("base_url", f"--base-url: {self.base_url!r} is not an http:// or https:// URL "
                                 "(e.g. http://127.0.0.1:8000/v1)")
        if self.device.startswith("cuda") and self.mode != "api":
            import torch  # only when CUDA is asked for

            if not torch.cuda.is_available():
                fail("device", f"--device {self.device}: no CUDA device is visible to torch here; use --device cpu")

    @property
    def resolved_dtype(self) -> str:
        """The torch dtype name the model is loaded in (``auto`` resolved for the device)."""
        return resolve_dtype_name(self.dtype, self.device, self.device_map)

    @property
    def learned(self) -> bool:
        """The method learns a topology (``gcache train`` accepts it)."""
        return get_method(self.method).learns

    def to_dict(self) -> dict[str, Any]:
        """JSON-able config without secrets (the API key is never written anywhere)."""
        from gcache.io.redaction import REDACTED

        d = dataclasses.asdict(self)
        d["api_key"] = REDACTED if self.api_key else None
        return d

    def identity(self, facts: Mapping[str, Any], *, training: bool = False) -> dict[str, Any]:
        """What must match for a resumed run to continue the same experiment.

        Args:
            facts (Mapping[str, Any]): values a recipe computes before loading any model (``data_sha256``,
                ``task_version``, ``checkpoint_sha256``, ``package_version``).
            training (bool): add the training settings. Default is False.

        Returns:
            dict: ``{key: value}`` over :func:`gcache.methods.identity_keys`.
        """
        values = {**dataclasses.asdict(self), "dtype": self.resolved_dtype, **facts}
        return {k: values.get(k) for k in identity_keys(self.method, self.mode, training=training)}


def compare_identity(saved: Mapping[str, Any] | None, now: Mapping[str, Any], where: str | Path) -> None:
    """Refuse to continue ``where`` with a run whose identity differs from the one saved there.

    Raises:
        ConfigError: naming every setting that differs (saved -> now).
    """
    saved = saved or {}
    keys = dict.fromkeys([*saved, *now])
    changed = {k: (saved.get(k, "(not recorded)"), now.get(k, "(not recorded)")) for k in keys
               if saved.get(k, "(not recorded)") != now.get(k, "(not recorded)")}
    if changed:
        details = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
        raise ConfigError(f"{where} holds a different run ({details}); use another --out, or the same settings "
                          "to resume")


def add_run_arguments(parser: argparse.ArgumentParser, *, training: bool = False) -> None:
    """Flags of ``gcache eval`` / ``gcache train``. Defaults are None so that a YAML config can fill them."""
    a = parser.add_argument
    a("--config", help="YAML file of run settings (flags override it)")
    a("--method", choices=list_methods(), metavar="METHOD",
      help="what to run (default latentmas_seq): " + "; ".join(
          f"{name} [{'/'.join(get_method(name).modes)}]" for name in list_methods()))
    a("--dataset", help="benchmark (default gsm8k); `gcache tasks` lists them with their hub names and splits")
    a("--data", help="local dataset file; without it the dataset is loaded from the Hugging Face hub")
    a("--split", help="dataset split (default: the task's own, test for most; train for gcache train)")
    a("--limit", type=int, help="only the first N questions")
    a("--out", help="output folder (results.jsonl, summary.json; rerun the same command to resume)")
    a("--model", help="smollm2 (embedded default), a hub id such as Qwen/Qwen3-4B, a local folder or a .gguf file")
    a("--dtype", choices=tuple(DTYPES), metavar="DTYPE",
      help="auto, float32, bfloat16 or float16 (default auto: bf16 on CUDA, fp32 on CPU)")
    a("--device", help="cpu, cuda, cuda:1 ... (default cpu)")
    a("--device-map", dest="device_map",
      help="spread the model over devices (accelerate): auto, or a JSON map / .json / .yaml file of module -> "
           "device (0, cuda:1, cpu, disk); see docs/scale-out.md")
    a("--engine", choices=ENGINES, help="latent engine: fast (static KV cache, steps captured as CUDA graphs), eager "
      "(plain transformers forwards), or auto (fast on CUDA, eager on CPU; the default). Same answers")
    a("--mode", choices=MODES + tuple(MODE_ALIASES), help="local (KV messages), hybrid (local latents, API answers; alias local_cache = local), api")
    a("--latent-steps", dest="latent_steps", type=int, help="latent thoughts per latent agent (default 4)")
    a("--no-realign", dest="realign", action="store_const", const=False, help="feed hidden states back unaligned")
    a("--batch-size", dest="batch_size", type=int, help="questions per batch (default 4)")
    a("--max-new-tokens", dest="max_new_tokens", type=int, help="decoding cap per text agent (default 512)")
    a("--max-context", dest="max_context", type=int,
      help="most positions an agent's context may hold (default: the model's); a question that does not fit is "
           "recorded as that question's error")
    a("--temperature", type=float, help="0 for greedy (default 0)")
    a("--top-p", dest="top_p", type=float, help="nucleus mass when sampling (default 1)")
    a("--seed", type=int)
    a("--samples", type=int,
      help="answers sampled per question, in the same batch (pass@k from n samples; needs --temperature > 0)")
    a("--zero-latent-steps", dest="zero_latent_steps", choices=ZERO_LATENT_STEPS,
      help="with --latent-steps 0: the judge reads the other agents' prompt caches (prompt_caches, default) or "
           "decodes alone (judge_alone, what the LatentMAS reference's latent_steps 0 does)")
    a("--message", choices=MESSAGE_MODES, help="what a latent agent sends on: full cache, own slots, latent only")
    a("--fuser", choices=FUSER_MODES, help="concat (plain concatenation) or bias (learned CacheFuser)")
    a("--prompt-set", dest="prompt_set", help="built-in prompt set name or a YAML/JSON file of roles")
    a("--agents", type=int, help="number of agents of a graph method (default: the prompt set's team)")
    a("--rounds", type=int, help="rounds of a graph method (default 1)")
    a("--topology", choices=TOPOLOGIES, help="learned (the GNN) or a fixed preset")
    a("--decision", choices=DECISIONS, help="how a graph's final answer is formed")
    a("--checkpoint", help="a trained team: a gcache train output folder, its team/ folder, a hub id owner/name, "
      "or an old checkpoint.pt (topology model and fuser)")
    a("--gnn-temperature", dest="gnn_temperature", type=float,
      help="temperature of the edge logits (codes are unit vectors: 0.25 lets p reach 0.02..0.98)")
    a("--embedder", help="sentence-transformers model for role/query embeddings (default all-MiniLM-L6-v2)")
    a("--eval-graph", dest="eval_graph", choices=GRAPH_MODES,
      help="graph a learned method runs per question: sample (seeded, as G-Designer; default) or map (most "
           "probable DAG)")
    a("--alone-prob", dest="alone_prob", type=float,
      help="gcache: probability that the untrained policy's decision node reads nobody, i.e. answers exactly as "
           "the single agent (default 0.75); training learns when to read the team")
    a("--votes", type=int, help="self_consistency: sampled answers per question, majority-voted (default 5)")
    a("--alone-from", dest="alone_from",
      help="gcache eval: a finished `--method single` run folder (same model, data, decoding and seed); a question "
           "the policy answers alone takes its record from there instead of running again (exact: answering alone "
           "is single's plan, node for node)")
    a("--soft-edges", dest="soft_edges", action="store_const", const=True,
      help="add log p(edge) to the fuser bias (training and evaluation alike) so the gold-answer loss trains "
           "the GNN too")
    a("--api-key", dest="api_key", help="API key (better: API_KEY in the environment or .env)")
    a("--base-url", dest="base_url", help="OpenAI-compatible base URL (env BASE_URL)")
    a("--api-model", dest="api_model", help="API model (env API_MODEL; default qwen-flash)")
    a("--api-concurrency", dest="api_concurrency", type=int, help="concurrent API requests (default 8)")
    a("--api-timeout", dest="api_timeout", type=float, help="seconds per API request (default 60)")
    a("--api-retries", dest="api_retries", type=int, help="retries after a failed API request (default 4)")
    a("--retry-errors", dest="retry_errors", action="store_const", const=True,
      help="on resume, run again the questions that ended in an error")
    a("--prices", help="JSON/YAML file of API prices (USD per 1M tokens) added to the built-in table")
    a("--no-progress", dest="progress", action="store_const", const=False, help="no progress bar")
    if not training:
        a("--shard", help="i/n: run only the questions at positions i, i+n, i+2n, ... into the same --out "
                          "(shards merge by question id; see docs/scale-out.md)")
    if training:
        a("--steps", type=int, help="optimisation steps (batches) (default 10)")
        a("--lr", type=float,
          help="Adam learning rate of the topology model (default 0.003: at 0.01 or the seed's 0.1 every edge of "
               "MiniLM-featured roles collapses to p=0.02 within a few steps; see docs/method.md)")
        a("--fuser-lr", dest="fuser_lr", type=float, help="Adam learning rate of the CacheFuser (default 0.1)")
        a("--read-lr", dest="read_lr", type=float,
          help="Adam learning rate of the read head, which decides whom the decision node reads (default 0.1)")
        a("--utility", choices=UTILITIES,
          help="what a graph earns: correct (1 if the decoded answer is right; default), loglik (the gold answer's "
               "mean token log-likelihood as the decision node's first words: dense, but mostly a format score that "
               "rewards answering without reasoning; see docs/method.md), or correct+loglik")
        a("--baseline", choices=BASELINES,
          help="REINFORCE baseline: group (mean of the other graphs of the question; default), ma (moving "
               "average) or none (the seed's plain -log_prob * utility)")
        a("--samples-per-question", dest="samples_per_question", type=int,
          help="graphs drawn per question (default 4)")
        a("--fuser-loss-weight", dest="fuser_loss_weight", type=float, help="weight of the gold-answer NLL")
        a("--fuser-grad", dest="fuser_grad", choices=FUSER_GRAD,
          help="train the fuser through the decision node's inputs (default) or through every fused edge")
        a("--no-optimize-spatial", dest="optimize_spatial", action="store_const", const=False)
        a("--no-optimize-temporal", dest="optimize_temporal", action="store_const", const=False)
        a("--no-tensorboard", dest="tensorboard", action="store_const", const=False,
          help="do not write TensorBoard event files (OUT/tensorboard)")


def config_from_args(args: argparse.Namespace, **defaults: Any) -> RunConfig:
    """Merge dataclass defaults, ``defaults``, the ``--config`` YAML and the flags into a :class:`RunConfig`.

    Raises:
        ConfigError: a missing or unparsable YAML file, an unknown key, or a bad value; a value that came from
            the file is named by file, line and key.
    """
    values: dict[str, Any] = dict(defaults)
    from_file: dict[str, int] = {}
    path = None
    if getattr(args, "config", None):
        path = Path(args.config)
        loaded, from_file = _read_yaml_config(path)
        values.update(loaded)
    names = {f.name for f in dataclasses.fields(RunConfig)}
    for key, value in vars(args).items():
        if key in names and value is not None:
            values[key] = value
            from_file.pop(key, None)
    unknown = sorted(set(values) - names)
    if unknown:
        where = f"{path}, line {from_file[unknown[0]]}: " if unknown[0] in from_file else ""
        raise ConfigError(f"{where}unknown setting {unknown[0]!r}; valid ones are {', '.join(sorted(names))}")
    try:
        return RunConfig(**values)
    except ConfigError as err:
        if err.key in from_file:
            raise ConfigError(f"{path}, line {from_file[err.key]}: {err.key}: {err}", key=err.key) from None
        raise


def _read_yaml_config(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """``(settings, line of each key)`` of a YAML config file."""
    if not path.is_file():
        raise ConfigError(f"--config: file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
        node = yaml.compose(text)
        loaded = yaml.safe_load(text)
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(err, 'problem', None) or err})") from None
    if loaded is None:
        return {}, {}
    if not isinstance(loaded, dict) or not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"{path}: expected a mapping of settings (key: value lines), got {type(loaded).__name__}")
    lines = {k.value: k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)}
    return loaded, lines


_TYPE_NAMES = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false"}


def _check_type(key: str, value: Any, annotation: str) -> None:
    """Raise :class:`ConfigError` unless ``value`` fits the field's annotation (``"int | None"`` ...)."""
    kinds = [k.strip() for k in annotation.split("|")]
    if value is None and "None" in kinds:
        return
    base = kinds[0]
    ok = {
        "str": isinstance(value, str),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
    }.get(base, True)
    if not ok:
        raise ConfigError(f"{_flag(key)} must be {_TYPE_NAMES[base]}, got {value!r}", key=key)
