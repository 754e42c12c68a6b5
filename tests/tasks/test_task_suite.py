"""Every task of the registry: loading (fields and counts) from small files written in the hub's layout and the
original releases' layouts, and a table of tricky answers per task, scored strict and flexible.

The files are written by the tests with the real datasets' field names (looked up on the hub / in the releases);
the shared GSM8K, SVAMP and HumanEval files are read in tests/tasks/test_tasks.py.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from gcache.tasks import DatasetError, get_task, list_tasks

ALL_TASKS = ["aime2024", "aime2025", "aqua", "arc_challenge", "arc_easy", "gpqa_diamond", "gsm8k", "humaneval",
             "humanevalplus", "math500", "mbpp", "mbppplus", "medqa", "mmlu", "multiarith", "svamp"]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_registry_declares_every_task_once():
    assert list_tasks() == ALL_TASKS
    for name in ALL_TASKS:
        task = get_task(name)
        assert task.name == name and task.version >= 1
        assert task.answer_kind in ("number", "letter", "math", "code")
        assert set(task.filters) == {"strict", "flexible"} and task.primary_filter == "flexible"
        assert task.default_split in task.splits and task.hub_name and task.answer_instruction
        assert task.prompt_set in ("gsm8k", "mmlu", "humaneval") and task.metrics
    with pytest.raises(ValueError, match=r"unknown task 'mnist'; valid: \['aime2024'"):
        get_task("mnist")


# ----------------------------------------------------------------------------------------------- math (numbers)

def test_multiarith_hub_layout(tmp_path):
    rows = [{"question": "Ann had 3 pens and bought 4 packs of 2. How many pens?", "final_ans": "11"},
            {"question": "There were 10 cakes; 4 were eaten. How many are left?", "final_ans": "6"}]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples = get_task("multiarith").load(tmp_path)  # a folder holding <split>.jsonl
    assert [(e.id, e.answer) for e in examples] == [("multiarith-test-0", "11"), ("multiarith-test-1", "6")]
    assert examples[0].question == rows[0]["question"]


@pytest.mark.parametrize("name, rows, ids, golds", [
    ("aime2024", [{"id": 60, "problem": "Find $m+n$.", "solution": "...", "answer": "204", "url": "u"},
                  {"id": 61, "problem": "Find the remainder.", "solution": "...", "answer": "033", "url": "u"}],
     ["aime2024-60", "aime2024-61"], ["204", "33"]),
    ("aime2025", [{"problem": "Find the sum of all bases.", "answer": "70"}], ["aime2025-0"], ["70"]),
])
def test_aime_layouts(tmp_path, name, rows, ids, golds):
    task = get_task(name)
    examples = task.load(write_jsonl(tmp_path / "aime.jsonl", rows))
    assert task.default_split == "train"  # the hub's only split
    assert [e.id for e in examples] == ids and [e.answer for e in examples] == golds


def test_math500_hub_layout(tmp_path):
    rows = [{"problem": "Convert $(0,3)$ to polar coordinates.", "solution": "...", "answer": "\\left( 3, \\frac{\\pi}{2} \\right)",
             "subject": "Precalculus", "level": 2, "unique_id": "test/precalculus/807.json"}]
    (example,) = get_task("math500").load(write_jsonl(tmp_path / "m.jsonl", rows))
    assert example.id == "math500-test/precalculus/807.json" and example.meta["level"] == 2
    assert example.answer == rows[0]["answer"]


def test_svamp_hub_layout_as_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"ID": "chal-1", "Body": "Each pack has 4 pens.", "Question": "How many pens in 3 packs?",
             "Equation": "( 4.0 * 3.0 )", "Answer": 12.0, "Type": "Multiplication",
             "question_concat": "Each pack has 4 pens. How many pens in 3 packs?"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "test.parquet")
    (example,) = get_task("svamp").load(tmp_path / "test.parquet")
    assert (example.id, example.answer, example.question) == ("svamp-chal-1", "12", rows[0]["question_concat"])


# ----------------------------------------------------------------------------------------------- multiple choice

def test_aqua_hub_layout(tmp_path):
    rows = [{"question": "A car goes 60 km in 45 minutes. Its speed in km/h?", "options": ["A)45", "B)60", "C)80",
             "D)90", "E)75"], "rationale": "60 / 0.75 = 80", "correct": "C"}]
    (example,) = get_task("aqua").load(write_jsonl(tmp_path / "test.json", rows))  # the release names it .json
    assert example.answer == "C" and example.meta["choices"] == ["45", "60", "80", "90", "75"]
    assert example.question.endswith("A. 45\nB. 60\nC. 80\nD. 90\nE. 75")
    bad = write_jsonl(tmp_path / "bad.jsonl", [{**rows[0], "correct": "F"}])
    with pytest.raises(DatasetError, match=r"bad\.jsonl, line 1: field 'correct'"):
        get_task("aqua").load(bad)


def test_mmlu_hub_rows_and_original_csv_folder(tmp_path):
    rows = [{"question": "What is the SI unit of force?", "subject": "high_school_physics",
             "choices": ["joule", "newton", "watt", "pascal"], "answer": 1}]
    (example,) = get_task("mmlu").load(write_jsonl(tmp_path / "test.jsonl", rows))
    assert (example.id, example.answer, example.meta["subject"]) == ("mmlu-test-0", "B", "high_school_physics")
    assert "B. newton" in example.question
    # The original release: data/<split>/<subject>_<split>.csv, no header, answer as a letter.
    for subject, lines in {"anatomy": [["Which bone is in the arm?", "femur", "humerus", "tibia", "fibula", "B"]],
                           "virology": [["What do viruses lack?", "DNA", "ribosomes", "proteins", "genes", "B"],
                                        ["A virus is a", "cell", "particle", "tissue", "organ", "B"]]}.items():
        folder = tmp_path / "data" / "val"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"{subject}_val.csv", "w", newline="") as f:
            csv.writer(f).writerows(lines)
    examples = get_task("mmlu").load(tmp_path / "data", split="validation")
    assert len(examples) == 3 and [e.meta["subject"] for e in examples] == ["anatomy", "virology", "virology"]
    assert all(e.answer == "B" for e in examples) and examples[0].meta["choices"][1] == "humerus"


def test_arc_hub_and_original_layouts(tmp_path):
    hub = {"id": "Mercury_7175875", "question": "Which form of energy does a battery store?",
           "choices": {"text": ["chemical", "sound", "light", "nuclear"], "label": ["A", "B", "C", "D"]},
           "answerKey": "A"}
    numeric = {"id": "NYSEDREGENTS_2015_4_8", "question": "Which is a mammal?",
               "choices": {"text": ["frog", "whale", "shark"], "label": ["1", "2", "3"]}, "answerKey": "2"}
    original = {"id": "Mercury_SC_401", "question": {"stem": "Which is a liquid at room temperature?",
                "choices": [{"text": "iron", "label": "A"}, {"text": "water", "label": "B"}]}, "answerKey": "B"}
    examples = get_task("arc_challenge").load(write_jsonl(tmp_path / "ARC-Challenge-Test.jsonl",
                                                          [hub, numeric, original]))
    assert [(e.id, e.answer) for e in examples] == [("arc_challenge-Mercury_7175875", "A"),
                                                   ("arc_challenge-NYSEDREGENTS_2015_4_8", "B"),
                                                   ("arc_challenge-Mercury_SC_401", "B")]
    assert examples[1].meta["choices"] == ["frog", "whale", "shark"] and "C. shark" in examples[1].question
    assert get_task("arc_easy").hub_config == "ARC-Easy" and get_task("arc_challenge").hub_config == "ARC-Challenge"


def test_gpqa_reference_and_official_layouts(tmp_path):
    inline = {"question": "Which particle mediates the strong force?\n(A) photon\n(B) gluon\n(C) W boson\n(D) graviton",
              "answer": "B"}
    (example,) = get_task("gpqa_diamond").load(write_jsonl(tmp_path / "gpqa.jsonl", [inline]))
    assert example.answer == "B" and example.meta["choices"] == ["photon", "gluon", "W boson", "graviton"]
    fields = ["Record ID", "Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"]
    official = [dict(zip(fields, [f"rec{i}", f"Question number {i}?", f"right {i}", "wrong a", "wrong b", "wrong c"]))
                for i in range(12)]
    with open(tmp_path / "gpqa_diamond.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(official)
    first = get_task("gpqa_diamond").load(tmp_path / "gpqa_diamond.csv")
    again = get_task("gpqa_diamond").load(tmp_path / "gpqa_diamond.csv")
    assert [e.answer for e in first] == [e.answer for e in again]  # the option order is fixed
    for e, row in zip(first, official):
        assert e.id == f"gpqa_diamond-{row['Record ID']}"
        assert e.meta["choices"]["ABCD".index(e.answer)] == row["Correct Answer"]
    assert len({e.answer for e in first}) > 1  # the gold is not always A


def test_medqa_hub_and_reference_layouts(tmp_path):
    hub = {"question": "A 34-year-old man has bloody diarrhea for 3 weeks. Greatest risk?", "answer": "Colorectal cancer",
           "options": {"A": "Hemolytic uremic syndrome", "B": "Oral ulcers", "C": "Colorectal cancer", "D": "Pancreatic cancer"},
           "meta_info": "step1", "answer_idx": "C"}
    (example,) = get_task("medqa").load(write_jsonl(tmp_path / "test.jsonl", [hub]))
    assert example.answer == "C" and example.meta["choices"][2] == "Colorectal cancer"
    reference = [{"idx": 0, "question": "Greatest risk?\nA. Hemolytic uremic syndrome\nB. Oral ulcers",
                  "options": ["A. Hemolytic uremic syndrome", "B. Oral ulcers", "C. Colorectal cancer", "D. Pancreatic cancer"],
                  "answer": "Colorectal cancer", "pid": "0", "query": "Greatest risk?\nA. Hemolytic uremic syndrome"}]
    (tmp_path / "medqa.json").write_text(json.dumps(reference))
    (example,) = get_task("medqa").load(tmp_path / "medqa.json")
    assert example.answer == "C" and example.meta["choices"][1] == "Oral ulcers"
    assert example.question.count("Hemolytic") == 1  # the options are listed once


# ----------------------------------------------------------------------------------------------- code

HUMANEVAL_PLUS = {
    "task_id": "HumanEval/53", "entry_point": "add",
    "prompt": "def add(x: int, y: int):\n    \"\"\"Add two numbers x and y.\"\"\"\n",
    "canonical_solution": "    return x + y\n",
    "test": ("def assertion(out, exp, atol):\n    assert out == exp, (out, exp)\n\n"
             "def check(candidate):\n    inputs = [[0, 1], [1, 0], [5, 7], [-3, 3]]\n    results = [1, 1, 12, 0]\n"
             "    for inp, exp in zip(inputs, results):\n        assertion(candidate(*inp), exp, 0)\n"),
}


def test_humanevalplus_layout_runs_its_tests(tmp_path):
    task = get_task("humanevalplus", timeout_s=10)
    (example,) = task.load(write_jsonl(tmp_path / "humanevalplus.jsonl", [HUMANEVAL_PLUS]))
    assert example.id == "humanevalplus-53" and example.meta["entry_point"] == "add"
    assert task.score(example.meta["canonical_solution"], example)["correct"]
    assert not task.score("    return x - y\n", example)["correct"]


MBPP_ROWS = [
    {"task_id": 2, "text": "Prompt-split problem.", "code": "def f(x):\n    return x", "test_list": ["assert f(1) == 1"],
     "test_setup_code": "", "challenge_test_list": []},
    {"task_id": 11, "text": "Write a python function to remove first and last occurrence of a given character.",
     "code": "def remove_Occ(s, ch):\n    s = s.replace(ch, '', 1)\n    i = s.rfind(ch)\n    return s if i < 0 else s[:i] + s[i + 1:]",
     "test_list": ['assert remove_Occ("hello","l") == "heo"', 'assert remove_Occ("abcda","a") == "bcd"',
                   'assert remove_Occ("PHP","P") == "H"'], "test_setup_code": "", "challenge_test_list": []},
    {"task_id": 700, "text": "Train-split problem.", "code": "def g():\n    return 1", "test_list": ["assert g() == 1"],
     "test_setup_code": "", "challenge_test_list": []},
]


def test_mbpp_original_file_is_split_by_task_id(tmp_path):
    task = get_task("mbpp", timeout_s=10)
    path = write_jsonl(tmp_path / "mbpp.jsonl", MBPP_ROWS)
    (example,) = task.load(path)  # test: task ids 11-510
    assert example.id == "mbpp-11" and example.meta["entry_point"] == "remove_Occ"
    assert example.question.startswith("Write a python function") and 'remove_Occ("PHP","P")' in example.question
    assert [e.id for e in task.load(path, split="train")] == ["mbpp-700"]
    assert [e.id for e in task.load(path, split="prompt")] == ["mbpp-2"]
    fenced = "Here you go:\n```python\n" + MBPP_ROWS[1]["code"] + "\n```"
    assert task.score(fenced, example)["scores"]["strict"]["correct"]
    assert not task.score("```python\ndef remove_Occ(s, ch):\n    return s\n```", example)["correct"]


def test_mbppplus_layout(tmp_path):
    row = {"task_id": 11, "code": MBPP_ROWS[1]["code"], "prompt": MBPP_ROWS[1]["text"], "source_file": "x",
           "test_imports": ["import math"], "test_list": MBPP_ROWS[1]["test_list"],
           "test": ("inputs = [['hello', 'l'], ['abcda', 'a'], ['', 'x'], ['aaa', 'a']]\nresults = ['heo', 'bcd', '', 'a']\n"
                    "for inp, exp in zip(inputs, results):\n    assert remove_Occ(*inp) == exp\n")}
    task = get_task("mbppplus", timeout_s=10)
    (example,) = task.load(write_jsonl(tmp_path / "mbppplus.jsonl", [row]))
    assert example.id == "mbppplus-11" and example.meta["setup"] == "import math"
    assert task.score(row["code"], example)["correct"]
    broken = "def remove_Occ(s, ch):\n    return s.replace(ch, '')"  # passes the 3 base tests, not the plus ones
    assert all(eval(t.replace("assert ", ""), {"remove_Occ": lambda s, ch: s.replace(ch, "")}) for t in row["test_list"])
    assert not task.score(broken, example)["correct"]


def test_mbpp_tests_that_call_no_defined_function_are_an_error(tmp_path):
    bad = [{**MBPP_ROWS[1], "test_list": ["assert other(1) == 1"]}]
    with pytest.raises(DatasetError, match=r"line 1: the tests call none"):
        get_task("mbpp").load(write_jsonl(tmp_path / "bad.jsonl", bad))


# ----------------------------------------------------------------------------------------------- scoring tables

MC = {"choices": ["Hemolytic uremic syndrome", "Oral ulcers", "Colorectal cancer", "Pancreatic cancer"]}
AQUA = {"choices": ["45", "60", "80", "90", "75"]}

# (task, gold, meta, answer, strict correct, flexible correct)
TABLE = [
    ("gsm8k", "72", {}, "72.0", False, True),                      # a bare number has no answer format
    ("gsm8k", "72", {}, "The answer is 72.0", True, True),
    ("gsm8k", "72", {}, "\\boxed{72}", True, True),
    ("gsm8k", "72", {}, "So \\boxed{72}. Check: 8 * 9 = 72, step 3.", True, True),  # flexible keeps the box
    ("gsm8k", "1000", {}, "She pays $1,000 in total.", False, True),
    ("gsm8k", "1000", {}, "#### $1,000", True, True),
    ("gsm8k", "1000", {}, "\\boxed{\\$1,000.00}", True, True),
    ("gsm8k", "72", {}, "I first got 72. Final answer: 70", False, False),
    ("svamp", "0.5", {}, "**Final Answer:** 1/2", True, True),
    ("multiarith", "-3", {}, "The temperature is \u22123 now.", False, True),
    ("aime2024", "33", {}, "\\boxed{033}", True, True),
    ("aime2025", "70", {}, "The sum is 70, so the answer is not 16.", False, False),  # flexible: the last number
    ("mmlu", "C", MC, "The answer is (C)", True, True),
    ("mmlu", "C", MC, "\\boxed{C}", True, True),
    ("mmlu", "C", MC, "\\boxed{\\text{C. Colorectal cancer}}", True, True),
    ("mmlu", "C", MC, "Answer: c", True, True),
    ("mmlu", "C", MC, "I pick (C) over (B).", False, False),        # the last option written wins: (B)
    ("mmlu", "C", MC, "(B) is tempting, but (C).", False, True),
    ("mmlu", "C", MC, "**C**", False, True),
    ("mmlu", "C", MC, "The patient is at risk of colorectal cancer.", False, True),   # names the option
    ("mmlu", "C", MC, "The answer is a bit unclear.", False, False),   # "a" is not option A
    ("arc_easy", "A", {"choices": ["chemical", "sound", "light"]}, "C", False, False),
    ("arc_easy", "A", {"choices": ["chemical", "sound", "light"]}, "A", False, True),
    ("arc_challenge", "B", {"choices": ["frog", "whale", "shark"]}, "A whale is a mammal.", False, True),
    ("arc_challenge", "B", {"choices": ["frog", "whale", "shark"]}, "The answer is B) whale", True, True),
    ("gpqa_diamond", "D", {"choices": ["p", "q", "r", "s"]}, "Final answer: D", True, True),
    ("medqa", "C", MC, "\\boxed{C. Colorectal cancer}", True, True),
    ("aqua", "C", AQUA, "60 / 0.75 = 80 km/h.", False, True),        # a numeric option matched by value
    ("aqua", "C", AQUA, "#### C", True, True),
    ("math500", "\\frac{1}{2}", {}, "\\boxed{\\dfrac12}", True, True),
    ("math500", "\\frac{1}{2}", {}, "The final answer is $0.5$.", True, True),
    ("math500", "\\frac{1}{2}", {}, "so $x = \\frac{1}{2}$", False, True),
    ("math500", "10", {}, "\\boxed{10^\\circ}", True, True),
    ("math500", "\\left( 3, \\frac{\\pi}{2} \\right)", {}, "\\boxed{(3,\\frac{\\pi}{2})}", True, True),
    ("math500", "5", {}, "\\boxed{x = 5}", True, True),
    ("math500", "5", {}, "\\boxed{6}", False, False),
]


@pytest.mark.parametrize("name, gold, meta, text, strict, flexible", TABLE,
                         ids=[f"{t[0]}:{t[3][:30]}" for t in TABLE])
def test_tricky_answers(name, gold, meta, text, strict, flexible):
    from gcache.tasks import Example

    task = get_task(name)
    scored = task.score(text, Example("x", "q", gold, meta))
    assert scored["scores"]["strict"]["correct"] is strict, scored
    assert scored["scores"]["flexible"]["correct"] is flexible, scored
    assert scored["correct"] is flexible  # the top-level score is the flexible one


CODE_EXAMPLE_META = {"entry_point": "add"}
# (answer, strict correct, flexible correct): the HumanEval+ "add" problem above
CODE_TABLE = [
    ("```python\ndef add(x: int, y: int):\n    return x + y\n```", True, True),
    ("    return x + y\n", False, True),                      # a bare continuation of the prompt
    ("```\ndef add(x, y):\n    return x + y\n```", False, True),  # an untagged fence
    ("```python\ndef add(x, y):\n    return x + y", False, True),  # cut off before the closing fence
    ("```python\ndef helper():\n    pass\n```", False, False),     # never defines add
]


@pytest.mark.parametrize("name", ["humaneval", "humanevalplus"])
@pytest.mark.parametrize("text, strict, flexible", CODE_TABLE)
def test_tricky_code_answers(tmp_path, name, text, strict, flexible):
    task = get_task(name, timeout_s=10)
    (example,) = task.load(write_jsonl(tmp_path / "he.jsonl", [HUMANEVAL_PLUS]))
    scored = task.score(text, example)
    assert scored["scores"]["strict"]["correct"] is strict, scored
    assert scored["scores"]["flexible"]["correct"] is flexible, scored


SOLUTION = MBPP_ROWS[1]["code"]
# (answer, strict correct, flexible correct): MBPP's remove_Occ above
MBPP_TABLE = [
    (f"```python\n{SOLUTION}\n```", True, True),
    (SOLUTION, False, True),                                               # no fence: the whole reply is the code
    (f"Sure.\n```py\n{SOLUTION}\n```\nIt removes both ends.", True, True),
    ("```python\ndef remove_Occ(s, ch):\n    return s.replace(ch, '')\n```", True, True),  # passes MBPP's 3 asserts
    ("```python\ndef strip_ends(s, ch):\n    return s\n```", False, False),   # not the function the tests call
]


@pytest.mark.parametrize("text, strict, flexible", MBPP_TABLE)
def test_tricky_mbpp_answers(tmp_path, text, strict, flexible):
    task = get_task("mbpp", timeout_s=10)
    (example,) = task.load(write_jsonl(tmp_path / "mbpp.jsonl", MBPP_ROWS))
    scored = task.score(text, example)
    assert scored["scores"]["strict"]["correct"] is strict, scored
    assert scored["scores"]["flexible"]["correct"] is flexible, scored
