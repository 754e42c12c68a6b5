"""Atomic writes, the resumable ResultStore and secret redaction (gcache.io)."""

import json
import pickle
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gcache.io import (
    ResultsFileError,
    ResultStore,
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    redact,
    write_summary,
)

SRC = Path(__file__).resolve().parents[2] / "src"


def record(i: int, **extra) -> dict:
    return {"id": f"s{i}", "prediction": str(i), "correct": i % 2 == 0, "error": None, **extra}


def jsonl(records: list[dict]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


# ---------------------------------------------------------------------------- atomic writes


def test_atomic_writes_round_trip_and_leave_no_tmp(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "héllo\n")
    atomic_write_text(tmp_path / "a.txt", "second")  # replaces
    atomic_write_json(tmp_path / "sub" / "b.json", {"x": [1, 2.5, None], "s": "é"})
    state = {"w": torch.arange(6.0).reshape(2, 3)}
    atomic_torch_save(state, tmp_path / "c.pt")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "second"
    assert json.loads((tmp_path / "sub" / "b.json").read_text(encoding="utf-8")) == {"x": [1, 2.5, None], "s": "é"}
    assert torch.equal(torch.load(tmp_path / "c.pt")["w"], state["w"])
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.txt", "b.json", "c.pt", "sub"]


def test_failed_writes_keep_the_old_file_and_leave_no_tmp(tmp_path):
    atomic_write_json(tmp_path / "b.json", {"ok": 1})
    with pytest.raises(TypeError):
        atomic_write_json(tmp_path / "b.json", {"bad": object()})
    atomic_torch_save({"ok": torch.ones(2)}, tmp_path / "c.pt")
    with pytest.raises((pickle.PicklingError, AttributeError)):  # a lambda cannot be pickled: the save fails mid-file
        atomic_torch_save({"big": torch.zeros(10_000), "fn": lambda: 0}, tmp_path / "c.pt")
    assert json.loads((tmp_path / "b.json").read_text()) == {"ok": 1}
    assert torch.equal(torch.load(tmp_path / "c.pt")["ok"], torch.ones(2))
    assert sorted(os.listdir(tmp_path)) == ["b.json", "c.pt"]


# ---------------------------------------------------------------------------- ResultStore


def test_append_load_and_done_ids(tmp_path):
    store = ResultStore(tmp_path / "run")
    assert store.load() == {} and store.done_ids() == set()
    for i in range(4):
        store.append(record(i))
    store.append(record(4, error="timeout"))
    expected = jsonl([record(i) for i in range(4)] + [record(4, error="timeout")])
    assert (tmp_path / "run" / "results.jsonl").read_bytes() == expected
    fresh = ResultStore(tmp_path / "run")
    assert fresh.done_ids() == {"s0", "s1", "s2", "s3", "s4"}  # an errored sample is done by default
    assert fresh.done_ids(retry_errors=True) == {"s0", "s1", "s2", "s3"}
    assert [r["id"] for r in fresh.records()] == ["s0", "s1", "s2", "s3", "s4"]
    fresh.append(record(4))  # the retry succeeded: the last record for an id wins
    assert fresh.load()["s4"]["error"] is None
    assert fresh.done_ids(retry_errors=True) == {"s0", "s1", "s2", "s3", "s4"}


def test_append_rejects_records_without_id(tmp_path):
    store = ResultStore(tmp_path)
    for bad in ({"x": 1}, {"id": 3}, ["id", "a"]):
        with pytest.raises(ValueError, match="string 'id'"):
            store.append(bad)
    with pytest.raises(TypeError):
        store.append({"id": "a", "x": object()})
    assert not (tmp_path / "results.jsonl").exists()


def test_truncated_last_line_is_dropped_and_repaired(tmp_path, caplog):
    path = tmp_path / "results.jsonl"
    good = jsonl([record(0), record(1), record(2)])
    path.write_bytes(good + json.dumps(record(3)).encode()[:17])  # a write cut off by kill -9
    store = ResultStore(tmp_path)
    with caplog.at_level(logging.WARNING, logger="gcache.io.results"):
        assert store.done_ids() == {"s0", "s1", "s2"}
    assert "line 4" in caplog.text and "truncated" in caplog.text
    assert path.read_bytes() == good  # repaired on disk
    store.append(record(3))
    assert path.read_bytes() == good + jsonl([record(3)])
    assert sorted(os.listdir(tmp_path)) == ["results.jsonl"]


def test_append_after_a_torn_line_without_load(tmp_path):
    # A resumed run that appends first must not glue its record onto the torn line.
    path = tmp_path / "results.jsonl"
    path.write_bytes(jsonl([record(0)]) + b'{"id": "s1", "pre')
    ResultStore(tmp_path).append(record(2))
    assert path.read_bytes() == jsonl([record(0), record(2)])


def test_complete_last_record_without_newline_is_kept(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_bytes(jsonl([record(0)]) + json.dumps(record(1)).encode())
    store = ResultStore(tmp_path)
    assert store.done_ids() == {"s0", "s1"}
    store.append(record(2))
    assert path.read_bytes() == jsonl([record(0), record(1), record(2)])


def test_corrupt_middle_line_raises_naming_file_and_line(tmp_path):
    path = tmp_path / "results.jsonl"
    damaged = jsonl([record(0)]) + b'{"id": "s1", "pre\n' + jsonl([record(2)])
    path.write_bytes(damaged)
    with pytest.raises(ResultsFileError, match=r"results\.jsonl, line 2: corrupt record") as info:
        ResultStore(tmp_path).load()
    assert str(path) in str(info.value)
    assert path.read_bytes() == damaged  # never "repaired" by dropping data
    path.write_bytes(jsonl([record(0)]) + b'{"no_id": 1}\n' + jsonl([record(2)]))
    with pytest.raises(ResultsFileError, match="line 2"):
        ResultStore(tmp_path).load()


def test_parts_of_one_folder_merge_by_id(tmp_path):
    # Two writers (shards / ranks) in one folder: each appends its own part; every reader sees the union.
    a, b = ResultStore(tmp_path, part="shard-0-of-2"), ResultStore(tmp_path, part="shard-1-of-2")
    a.append(record(0))
    b.append(record(1))
    a.append(record(2, error="timeout"))
    b.append(record(2))  # the same sample done again elsewhere, without an error: that record counts
    assert (tmp_path / "results.shard-0-of-2.jsonl").read_bytes() == jsonl([record(0), record(2, error="timeout")])
    assert (tmp_path / "results.shard-1-of-2.jsonl").read_bytes() == jsonl([record(1), record(2)])
    whole = ResultStore(tmp_path)  # the unsharded view (results.jsonl does not exist yet)
    for store in (a, b, whole):
        assert store.done_ids() == {"s0", "s1", "s2"}
        assert store.load()["s2"]["error"] is None
    a.append(record(2, error="timeout again"))  # a later error never hides a success
    assert whole.load()["s2"]["error"] is None
    with pytest.raises(ValueError, match="part name"):
        ResultStore(tmp_path, part="../x")


def test_another_parts_torn_line_is_skipped_not_rewritten(tmp_path):
    # The last line of another writer's part may be cut off (or still being written): never touch that file.
    other = tmp_path / "results.shard-1-of-2.jsonl"
    torn = jsonl([record(1)]) + b'{"id": "s3", "pre'
    other.write_bytes(torn)
    mine = ResultStore(tmp_path, part="shard-0-of-2")
    mine.append(record(0))
    assert mine.done_ids() == {"s0", "s1"}  # s3 runs again
    assert other.read_bytes() == torn
    # its own writer repairs it when it resumes
    assert ResultStore(tmp_path, part="shard-1-of-2").done_ids() == {"s0", "s1"}
    assert other.read_bytes() == jsonl([record(1)])
    other.write_bytes(b'{"id": "s1", "pre\n' + jsonl([record(5)]))  # damage before the last line: say where
    with pytest.raises(ResultsFileError, match=r"results\.shard-1-of-2\.jsonl, line 1"):
        mine.load()


_WRITER = """
import sys
from gcache.io import ResultStore
store = ResultStore(sys.argv[1])
pad = "x" * 50_000  # large lines make a kill during a write likely
i = 0
while True:
    store.append({"id": f"s{i}", "i": i, "pad": pad, "error": None})
    print(i, flush=True)  # acknowledged: append() returned
    i += 1
"""


def test_kill_9_loses_no_complete_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env
    )
    acknowledged, deadline = [], time.monotonic() + 30
    while len(acknowledged) < 40 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acknowledged.append(int(line))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    acknowledged += [int(x) for x in proc.stdout.read().split()]
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert len(acknowledged) >= 40, "writer did not start"

    raw = (tmp_path / "results.jsonl").read_bytes()
    complete_lines = raw.count(b"\n")
    loaded = ResultStore(tmp_path).load()
    # Every acknowledged append is there, and so is every newline-terminated line on disk.
    assert set(acknowledged) <= {r["i"] for r in loaded.values()}
    assert list(loaded) == [f"s{i}" for i in range(complete_lines)]
    repaired = (tmp_path / "results.jsonl").read_bytes()
    assert repaired == raw[: raw.rfind(b"\n") + 1]
    assert all(json.loads(line)["pad"] == "x" * 50_000 for line in repaired.splitlines())


# ---------------------------------------------------------------------------- secrets


def test_redact_nested_without_mutating():
    key = "sk-abc123"
    obj = {"cfg": {"url": f"https://h/v1?k={key}", "keys": [key, "fine", (key + "x",)]}, key: 1, "n": 2.5}
    out = redact(obj, [key, "", None])
    assert out == {"cfg": {"url": "https://h/v1?k=***", "keys": ["***", "fine", ("***x",)]}, "***": 1, "n": 2.5}
    assert obj["cfg"]["keys"][0] == key  # input untouched
    assert redact(obj, []) is obj
    assert redact("ab-abcd", ["ab", "abcd"]) == "***-***"  # the longer secret is hidden whole


def test_secrets_never_reach_disk(tmp_path):
    key = "sk-very-secret"
    store = ResultStore(tmp_path, secrets=[key])
    store.append({"id": "a", "raw_output": f"my key is {key}", "error": None})
    path = write_summary(tmp_path, {"config": {"api_key": key}, "accuracy": 0.5}, secrets=[key])
    assert path == tmp_path / "summary.json"
    assert json.loads(path.read_text()) == {"config": {"api_key": "***"}, "accuracy": 0.5}
    for file in tmp_path.iterdir():
        assert key.encode() not in file.read_bytes()
    assert store.load()["a"]["raw_output"] == "my key is ***"
