"""Isolated execution of generated code (gcache.scoring.run_program)."""

import time

import pytest

from gcache.scoring import run_program


def test_passing_and_failing_programs():
    ok = run_program("def f(x):\n    return x * 2\nassert f(21) == 42\n")
    assert ok.passed and ok.status == "passed" and ok.returncode == 0
    bad = run_program("def f(x):\n    return x + 2\nassert f(21) == 42, 'wrong'\n")
    assert not bad.passed and bad.status == "failed" and bad.returncode == 1
    assert "AssertionError: wrong" in bad.stderr


def test_timeout_kills_the_program():
    start = time.monotonic()
    result = run_program("import subprocess, sys, time\ntime.sleep(60)\n", timeout_s=1.0)
    assert result.status == "timeout" and result.returncode is None and not result.passed
    assert time.monotonic() - start < 10


def test_parent_environment_does_not_leak(monkeypatch):
    monkeypatch.setenv("API_KEY", "sk-must-not-leak")
    assert run_program("import os\nassert 'API_KEY' not in os.environ\n").passed


def test_runs_in_a_fresh_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_program("import os\nassert os.listdir('.') == ['program.py'], os.listdir('.')\n").passed


def test_bad_timeout():
    with pytest.raises(ValueError, match="timeout_s"):
        run_program("pass", timeout_s=0)
