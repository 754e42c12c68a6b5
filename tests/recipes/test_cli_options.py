"""``gcache --version``, ``-q`` and ``--log-level``, in real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import gcache

TINY = str(Path(__file__).parents[1] / "assets" / "tiny_gsm8k.jsonl")

pytestmark = pytest.mark.integration


def _gcache(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gcache", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_version():
    proc = _gcache("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"gcache {gcache.__version__}"


@pytest.mark.slow
def test_quiet_and_log_level_set_the_threshold(tmp_path):
    # loads the data (an INFO line), then stops at the model path: exit 2 either way
    run = ["eval", "--method", "single", "--data", TINY, "--out", str(tmp_path), "--model", "/no/such/model_dir"]
    loud, quiet = _gcache(*run), _gcache("-q", *run)
    assert loud.returncode == quiet.returncode == 2
    assert " INFO gcache.tasks" in loud.stderr
    assert " INFO " not in quiet.stderr and "model path not found" in quiet.stderr
    assert _gcache("--log-level", "error", "--version").returncode == 0  # --log-level takes a level ...
    assert _gcache("--log-level", "LOUD", "--version").returncode == 2  # ... and refuses anything else
    assert _gcache("-q", "--log-level", "INFO", "--version").returncode == 2  # one or the other
