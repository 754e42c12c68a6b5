"""Benchmarks: loading local files, bad input, registry and scoring (gcache.tasks)."""

import gzip
import json
from pathlib import Path

import pytest

from gcache.tasks import GSM8K, SVAMP, DatasetError, Example, HumanEval, Task, get_task, list_tasks

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
GSM8K_DIR = DATA / "gsm8k"
SVAMP_FILE = DATA / "svamp" / "SVAMP.json"
HUMANEVAL_FILE = DATA / "humaneval" / "HumanEval.jsonl.gz"

needs_data = pytest.mark.skipif(not (GSM8K_DIR / "test.jsonl").is_file(), reason=f"no shared data at {DATA}")

GOOD_GSM8K = {"question": "Ann has 2 apples and buys 3. How many?", "answer": "2 + 3 = 5\n#### 5"}


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------- real data


@needs_data
@pytest.mark.parametrize("split, count", [("test", 1319), ("train", 7473)])
def test_gsm8k_real_counts_and_golds(split, count):
    examples = GSM8K().load(GSM8K_DIR, split=split)
    assert len(examples) == count
    assert [e.id for e in examples] == [f"gsm8k-{split}-{i}" for i in range(count)]
    # Independent parse of the raw file: gold = integer after '####', commas removed.
    raw = [json.loads(line) for line in (GSM8K_DIR / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [int(e.answer) for e in examples] == [int(r["answer"].split("####")[-1].replace(",", "")) for r in raw]
    assert examples[0].question == raw[0]["question"].strip()


@needs_data
def test_gsm8k_file_path_and_limit():
    full = GSM8K().load(GSM8K_DIR / "test.jsonl", split="test")
    assert GSM8K().load(GSM8K_DIR, split="test", limit=5) == full[:5]
    assert full[0].answer == "18"


@needs_data
def test_svamp_real():
    examples = SVAMP().load(SVAMP_FILE)
    raw = json.loads(SVAMP_FILE.read_text(encoding="utf-8"))
    assert len(examples) == len(raw) == 1000
    assert len({e.id for e in examples}) == 1000
    assert examples[0].id == f"svamp-{raw[0]['ID']}"
    assert [float(e.answer) for e in examples] == [float(r["Answer"]) for r in raw]
    assert examples[0].question == f"{raw[0]['Body'].strip()} {raw[0]['Question'].strip()}"


@needs_data
def test_humaneval_real():
    examples = HumanEval().load(HUMANEVAL_FILE)
    assert len(examples) == 164
    assert examples[0].id == "humaneval-0" and examples[163].id == "humaneval-163"
    assert examples[0].meta["entry_point"] == "has_close_elements"
    assert "def check(candidate)" in examples[0].answer


@needs_data
def test_gsm8k_reference_solutions_score_correct():
    task = GSM8K()
    examples = task.load(GSM8K_DIR, split="test")
    # The dataset's own worked solutions, ending in '#### gold', must all be scored correct ...
    assert all(task.score(f"{e.meta['solution']}\n#### {e.answer}", e)["correct"] for e in examples)
    # ... and an answer off by one never.
    assert not any(task.score(f"#### {int(e.answer) + 1}", e)["correct"] for e in examples[:50])


# ---------------------------------------------------------------------------- bad input


def test_bad_json_line_names_file_and_line(tmp_path):
    path = write_lines(tmp_path / "test.jsonl", [json.dumps(GOOD_GSM8K), "", '{"question": "x", "answer": '])
    with pytest.raises(DatasetError, match=r"test\.jsonl, line 3: invalid JSON") as info:
        GSM8K().load(path)
    assert str(path) in str(info.value)


def test_missing_field_names_file_line_and_field(tmp_path):
    path = write_lines(tmp_path / "test.jsonl", [json.dumps(GOOD_GSM8K), json.dumps({"question": "q"})])
    with pytest.raises(DatasetError, match=r"line 2: missing field 'answer'"):
        GSM8K().load(path)


@pytest.mark.parametrize(
    "record, message",
    [
        ({"question": "q", "answer": "no marker"}, "no '####'"),
        ({"question": "q", "answer": "#### many"}, "not a number"),
        ({"question": 3, "answer": "#### 3"}, "field 'question' has type int"),
    ],
)
def test_malformed_gsm8k_fields(tmp_path, record, message):
    path = write_lines(tmp_path / "d.jsonl", [json.dumps(record)])
    with pytest.raises(DatasetError, match=message):
        GSM8K().load(path)


def test_non_object_line(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", ["[1, 2]"])
    with pytest.raises(DatasetError, match="line 1: expected a JSON object"):
        GSM8K().load(path)


def test_limit_stops_before_a_later_bad_line(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [json.dumps(GOOD_GSM8K)] * 2 + ["not json"])
    assert len(GSM8K().load(path, limit=2)) == 2
    with pytest.raises(DatasetError, match="line 3"):
        GSM8K().load(path, limit=3)


def test_empty_dataset(tmp_path):
    path = write_lines(tmp_path / "empty.jsonl", ["", "  "])
    with pytest.raises(DatasetError, match=f"no examples in {path}"):
        GSM8K().load(path)


def test_missing_file_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope.jsonl")):
        GSM8K().load(tmp_path / "nope.jsonl")
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "train.jsonl")):
        GSM8K().load(tmp_path, split="train")  # directory without the split file


@pytest.mark.parametrize("limit", [0, -1, 1.5, True, "3"])
def test_bad_limit(tmp_path, limit):
    with pytest.raises(ValueError, match="limit"):
        GSM8K().load(tmp_path / "unused.jsonl", limit=limit)


def test_bad_split(tmp_path):
    with pytest.raises(ValueError, match=r"valid: \['train', 'test'\]"):
        GSM8K().load(tmp_path / "x.jsonl", split="validation")


def test_svamp_bad_file(tmp_path):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('[\n  {"ID": "a",\n   "Body": }\n]', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"bad\.json, line 3: invalid JSON"):
        SVAMP().load(bad_json)
    missing = tmp_path / "missing.json"
    good = {"ID": "a", "Body": "Tom has 3.", "Question": "How many?", "Answer": 3.0}
    missing.write_text(json.dumps([good, {"ID": "b", "Body": "x", "Answer": 1}]), encoding="utf-8")
    with pytest.raises(DatasetError, match=r"item 1: missing field 'Question'"):
        SVAMP().load(missing)
    (example,) = SVAMP().load(missing, limit=1)
    assert (example.id, example.question, example.answer) == ("svamp-a", "Tom has 3. How many?", "3")


def test_humaneval_gz_bad_line(tmp_path):
    path = tmp_path / "he.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(json.dumps({"task_id": "HumanEval/0", "prompt": "p"}) + "\n")
    with pytest.raises(DatasetError, match=r"he\.jsonl\.gz, line 1: missing field 'test'"):
        HumanEval().load(path)


# ---------------------------------------------------------------------------- registry


def test_registry():
    assert {"gsm8k", "humaneval", "svamp", "mmlu"} <= set(list_tasks())
    assert isinstance(get_task("GSM8K"), GSM8K)
    assert get_task("humaneval", timeout_s=3).timeout_s == 3
    with pytest.raises(ValueError, match=r"unknown task 'mnist'; valid: \["):
        get_task("mnist")
    for name in list_tasks():
        task = get_task(name)
        assert isinstance(task, Task) and task.name == name and task.version >= 1
        assert task.domain in ("math", "knowledge", "code") and task.answer_instruction and task.metrics


# ---------------------------------------------------------------------------- scoring


def test_math_scoring():
    task, example = get_task("svamp"), Example("svamp-x", "q", "51", {})

    def both(prediction, correct):
        return {"prediction": prediction, "correct": correct}

    assert task.score("76 - 25 = 51. The answer is 51.0", example) == {
        **both("51", True), "scores": {"strict": both("51", True), "flexible": both("51", True)}}
    assert task.score("The answer is 52", example)["scores"] == {"strict": both("52", False),
                                                                 "flexible": both("52", False)}
    assert task.score("76 - 25 = 51", example)["scores"] == {"strict": both(None, False), "flexible": both("51", True)}
    assert task.score("no idea", example) == {**both(None, False), "scores": {"strict": both(None, False),
                                                                             "flexible": both(None, False)}}


@needs_data
def test_humaneval_canonical_passes_and_wrong_fails():
    task = HumanEval(timeout_s=10)
    examples = task.load(HUMANEVAL_FILE, limit=3)
    for example in examples:
        canonical = example.meta["canonical_solution"]
        assert task.score(canonical, example)["correct"], example.id
        wrong = task.score("    return None\n", example)
        assert (wrong["prediction"], wrong["correct"], wrong["status"]) == ("    return None\n", False, "failed")
        assert wrong["scores"]["strict"] == {"prediction": None, "correct": False, "status": "empty"}  # no fence
    # A chat-style answer: the whole function in a fence, with some prose around it.
    example = examples[0]
    fenced = f"Sure!\n```python\n{example.question}{example.meta['canonical_solution']}```\nDone."
    assert task.score(fenced, example)["correct"] and task.score(fenced, example)["scores"]["strict"]["correct"]
    empty = task.score("", example)
    assert (empty["prediction"], empty["correct"], empty["status"]) == (None, False, "empty")


@needs_data
def test_humaneval_timeout():
    task = HumanEval(timeout_s=1)
    example = task.load(HUMANEVAL_FILE, limit=1)[0]
    result = task.score("    while True:\n        pass\n", example)
    assert result["status"] == "timeout" and not result["correct"]


@needs_data
@pytest.mark.slow
def test_humaneval_all_canonical_solutions_pass():
    task = HumanEval()
    examples = task.load(HUMANEVAL_FILE)
    failed = [e.id for e in examples if not task.score(e.meta["canonical_solution"], e)["correct"]]
    assert failed == []
