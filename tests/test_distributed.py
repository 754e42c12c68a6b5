"""Scale-out: ``gcache eval --shard i/n`` into one folder, torchrun ranks (gloo) for eval and training, a killed rank.

The reference of every check is an ordinary one-process run of the same command: sharded and distributed evals
must give every question once, with the same record (question, output, tokens) for each question id, and a
distributed training step must be the step one process takes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gcache.cli import main
from gcache.config import RunConfig
from gcache.distributed import Shard, World
from gcache.io import ResultStore
from gcache.recipes.train import TrainRecipe

FAST = ["--model", "tiny-random-qwen3", "--max-new-tokens", "12", "--batch-size", "2"]
# what must not depend on how the questions were spread (timings may)
SAME = ("question", "gold", "output", "prediction", "correct", "prompt_tokens", "completion_tokens", "error")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def write_questions(path: Path, n: int) -> Path:
    """``n`` distinct questions (the tiny random model's answers differ between most of them)."""
    forms = ["Ann has {a} pens and buys {b} more. How many pens?", "A box holds {a} eggs. How many eggs in {b} boxes?",
             "Zed ran {a} km then {b} km. Total?", "What is {a} times {b}?"]
    rows = [{"question": forms[i % 4].format(a=3 + i, b=7 + 2 * i), "answer": f"#### {10 + 3 * i}"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def merged(out: Path) -> dict[str, dict]:
    return {k: {f: r[f] for f in SAME} for k, r in ResultStore(out).load().items()}


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.is_file() else 0


def torchrun(nproc: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "gcache", *args]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """``(questions file, records by id)`` of one ordinary process over 8 questions."""
    root = tmp_path_factory.mktemp("reference")
    data = write_questions(root / "q8.jsonl", 8)
    assert main(["eval", "--method", "single", "--data", str(data), "--out", str(root / "one"), *FAST]) == 0
    records = merged(root / "one")
    # answers tell questions apart (a random 2-layer model repeats itself, but not everywhere); the merged fields
    # include each question's text and prompt size as well
    assert len(records) == 8 and len({r["output"] for r in records.values()}) > 2
    return data, records


# ---------------------------------------------------------------------------- shards


def test_shard_parse_select_split():
    items = list(range(11))
    shard = Shard.parse(" 1 / 3 ")
    assert shard == Shard(1, 3) and str(shard) == "1/3" and shard.part == "shard-1-of-3"
    assert shard.select(items) == [1, 4, 7, 10]
    # the ranks of a shard split it into disjoint parts that together are the shard
    parts = [shard.split(world_size=2, rank=r).select(items) for r in range(2)]
    assert parts == [[1, 7], [4, 10]]
    assert Shard().part is None and Shard().select(items) == items
    for bad in ("3/3", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(ValueError, match="shard"):
            Shard.parse(bad)


def test_world_from_env(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert World.from_env() == World(0, 1, 0) and World.from_env().is_main
    monkeypatch.setenv("RANK", "3"), monkeypatch.setenv("WORLD_SIZE", "4"), monkeypatch.setenv("LOCAL_RANK", "1")
    assert World.from_env() == World(3, 4, 1) and not World.from_env().is_main


def test_bad_shard_is_one_clear_line(tmp_path, capsys, reference):
    data, _ = reference
    assert main(["eval", "--method", "single", "--data", str(data), "--shard", "2/2", "--out", str(tmp_path), *FAST]) == 2
    err = capsys.readouterr().err
    assert "--shard" in err and "0 <= i < n" in err and "Traceback" not in err


@pytest.mark.integration
def test_two_shards_into_one_folder_give_every_question_once(tmp_path, reference):
    data, expected = reference
    out = tmp_path / "sharded"
    args = ["eval", "--method", "single", "--data", str(data), "--out", str(out), *FAST]
    assert main([*args, "--shard", "0/2"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["questions"] == 8 and summary["counts"]["answered"] == 4  # what is done so far
    assert merged(out) == {k: expected[k] for k in ("gsm8k-test-0", "gsm8k-test-2", "gsm8k-test-4", "gsm8k-test-6")}
    part0 = out / "results.shard-0-of-2.jsonl"
    mtime = part0.stat().st_mtime_ns
    assert main([*args, "--shard", "0/2"]) == 0  # resumes that shard: nothing left to do, nothing rewritten
    assert part0.stat().st_mtime_ns == mtime
    assert main([*args, "--shard", "1/2"]) == 0
    assert merged(out) == expected
    assert sorted(p.name for p in out.glob("results*.jsonl")) == ["results.shard-0-of-2.jsonl",
                                                                  "results.shard-1-of-2.jsonl"]
    assert lines(part0) == 4 and lines(out / "results.shard-1-of-2.jsonl") == 4  # every question once
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["answered"] == 8 and summary["totals"]["completion_tokens"] == sum(
        r["completion_tokens"] for r in expected.values())


@pytest.mark.integration
def test_whole_run_after_one_shard_runs_only_the_rest(tmp_path, reference):
    data, expected = reference
    out = tmp_path / "mixed"
    args = ["eval", "--method", "single", "--data", str(data), "--out", str(out), *FAST]
    assert main([*args, "--shard", "1/2"]) == 0
    assert main(args) == 0  # no --shard: one process finishes what the shard left
    assert lines(out / "results.jsonl") == 4 and merged(out) == expected


@pytest.mark.integration
def test_parts_from_two_machines_merge_by_copying(tmp_path, reference, caplog):
    # Machines without a shared disk: each fills its own folder; copying the parts together is the merge.
    data, expected = reference
    args = ["eval", "--method", "single", "--data", str(data), *FAST]
    for k in range(2):
        assert main([*args, "--shard", f"{k}/2", "--out", str(tmp_path / f"machine{k}")]) == 0
    part = "results.shard-1-of-2.jsonl"
    (tmp_path / "machine0" / part).write_bytes((tmp_path / "machine1" / part).read_bytes())
    with caplog.at_level("INFO", logger="gcache.recipes.eval"):
        assert main([*args, "--out", str(tmp_path / "machine0")]) == 0  # the whole command, to sum up
    assert "no model is loaded" in caplog.text  # nothing was left to run
    assert not (tmp_path / "machine0" / "results.jsonl").exists()
    assert merged(tmp_path / "machine0") == expected
    summary = json.loads((tmp_path / "machine0" / "summary.json").read_text())
    assert summary["counts"]["answered"] == 8


# ---------------------------------------------------------------------------- torchrun


@pytest.mark.slow
@pytest.mark.integration
def test_torchrun_two_gloo_ranks_match_one_process(tmp_path, reference):
    data, expected = reference
    out = tmp_path / "ranks"
    proc = subprocess.run(torchrun(2, "eval", "--method", "single", "--data", str(data), "--out", str(out), *FAST),
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert merged(out) == expected
    assert lines(out / "results.shard-0-of-2.jsonl") == 4 and lines(out / "results.shard-1-of-2.jsonl") == 4
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"questions": 8, "answered": 8, "correct": 0, "errors": 0}
    printed = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    assert len(printed) == 1 and printed[0]["counts"]["answered"] == 8  # rank 0 reports, once


def _rank_pid(launcher: subprocess.Popen, rank: int) -> int | None:
    """The pid of a torchrun worker of a given rank: a child of the launcher with RANK=<rank> in its environment."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == launcher.pid and f"RANK={rank}".encode() in env:
            return int(entry.name)
    return None


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank's process through /proc")
def test_killed_rank_fails_clearly_and_rerun_loses_nothing(tmp_path):
    data = write_questions(tmp_path / "q.jsonl", 48)
    out = tmp_path / "killed"
    cmd = torchrun(2, "eval", "--method", "single", "--data", str(data), "--out", str(out), "--model",
                   "tiny-random-qwen3", "--max-new-tokens", "8", "--batch-size", "1")
    launcher = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    part1 = out / "results.shard-1-of-2.jsonl"
    deadline = time.time() + 240
    while lines(part1) < 2:
        assert launcher.poll() is None and time.time() < deadline, "rank 1 wrote no results"
        time.sleep(0.02)
    pid = _rank_pid(launcher, 1)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    _, err = launcher.communicate(timeout=120)
    assert launcher.returncode != 0
    assert "rank      : 1" in err and "SIGKILL" in err  # torchrun names the rank that died and how
    assert "rerun the same command to resume" in err  # and the surviving rank says what to do
    before = ResultStore(out).load()
    assert 2 <= len(before) < 48
    rerun = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    after = ResultStore(out).load()
    assert set(after) == {f"gsm8k-test-{i}" for i in range(48)}
    assert lines(out / "results.shard-0-of-2.jsonl") + lines(part1) == 48  # no question ran twice
    assert all(after[k] == r for k, r in before.items())  # finished questions were kept as they were


# ---------------------------------------------------------------------------- torchrun training

TRAIN = dict(method="gcache", data=str(Path(__file__).parent / "assets" / "tiny_gsm8k_train.jsonl"), split="train",
             limit=3, batch_size=3, samples_per_question=2, agents=3, model="tiny-random-qwen3", max_new_tokens=4,
             latent_steps=1, soft_edges=True, baseline="ma",  # 3 questions over 2 ranks: an uneven split
             # a dense utility and a team that is read, so every parameter group has a gradient to compare
             utility="loglik", alone_prob=0.01)


def train_flags(**settings) -> list[str]:
    flags = ["train"]
    for key, value in settings.items():
        flags += [f"--{key.replace('_', '-')}"] + ([] if value is True else [str(value)])
    return flags


def assert_same_gradients(recipe: TrainRecipe, ckpt: dict, weights: bool) -> None:
    """Adam's first moments (after one step: 0.1 x the gradient) agree, and so do the weights they moved.

    Float32 gradients of the same batch run in other groupings (each rank pads and batches its own questions)
    agree to about 1e-5 relative; a wrong reduction (a rank left out, an unweighted mean of uneven shares) is
    off by tens of percent.

    Weights are compared where the gradient is above rounding noise: where it is not (the columns of the GNN's
    skip layer that PairNorm cancels), Adam's first step lr * g / (|g| + eps) turns noise into a step of up to lr,
    in one process as in two.
    """
    params = dict(recipe.team.named_parameters())
    name_of = {id(p): n for n, p in params.items()}
    order = [name_of[id(p)] for group in recipe.optimizer.param_groups for p in group["params"]]  # state's indices
    mine, theirs = recipe.optimizer.state_dict()["state"], ckpt["optimizer"]["state"]
    assert set(mine) == set(theirs) and mine  # the same parameters got a gradient
    for i in mine:
        g1, g2 = mine[i]["exp_avg"], theirs[i]["exp_avg"]
        scale = float(g1.abs().max())
        assert scale > 0, f"{order[i]} got no gradient"
        torch.testing.assert_close(g2, g1, rtol=1e-3, atol=1e-5 * scale, msg=lambda m: f"{order[i]}: {m}")
        if weights:
            real = g1.abs() > 1e-4 * scale
            torch.testing.assert_close(ckpt["team"][order[i]][real], params[order[i]].detach()[real], rtol=1e-5,
                                       atol=1e-6, msg=order[i])


@pytest.mark.slow
@pytest.mark.integration
def test_torchrun_training_step_is_the_one_process_step(tmp_path):
    one = TrainRecipe(RunConfig(**TRAIN, steps=1, out=str(tmp_path / "one")))
    one.setup()
    one.train()
    two = tmp_path / "two"
    proc = subprocess.run(torchrun(2, *train_flags(**TRAIN, steps=1, out=two)), env=ENV, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len([x for x in proc.stdout.splitlines() if x.startswith("{")]) == 1  # rank 0 reports, once
    ckpt = torch.load(two / "train_state.pt", weights_only=True)
    assert_same_gradients(one, ckpt, weights=True)
    logged = ("reward", "answer_nll", "baseline", "reinforce_loss")
    assert {k: ckpt["history"][0][k] for k in logged} == pytest.approx({k: one.history[0][k] for k in logged},
                                                                       rel=1e-5)
    assert (ckpt["history"][0]["graphs"], ckpt["history"][0]["errors"]) == (one.history[0]["graphs"], 0)
    # the 2-rank run resumed in one process (another world size) takes the one-process run's second step
    one.cfg.steps = 2
    one.train()
    assert main(train_flags(**TRAIN, steps=2, out=two)) == 0
    ckpt = torch.load(two / "train_state.pt", weights_only=True)
    assert [e["step"] for e in ckpt["history"]] == [1, 2]
    assert {k: ckpt["history"][1][k] for k in logged} == pytest.approx({k: one.history[1][k] for k in logged},
                                                                       rel=1e-5)
    assert_same_gradients(one, ckpt, weights=False)  # Adam's moments mix both steps' gradients
