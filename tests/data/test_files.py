"""File sources: JSONL, Parquet and save_to_disk directories; malformed rows are skipped and counted."""

from __future__ import annotations

import json

import pytest

from brorl.data import FieldMap, load_problems

ROWS = [
    {"id": "a", "question": "1+1?", "answer": "2"},  # good math row
    {"question": "2+2?", "answer": 4},  # answer given as a number: kept as text
    {"question": "", "answer": "1"},  # empty question: skipped
    {"answer": "3"},  # no question: skipped
    {"question": "square?", "tests": "assert f(2) == 4"},  # code, assert source
    {
        "question": "echo?",
        "tests": json.dumps({"inputs": ["1\n"], "outputs": ["1\n"]}),
    },  # APPS-style JSON string
    {"question": "bad tests", "tests": [{"in": 1}]},  # malformed tests: skipped
    {"question": "no answer"},  # math row without an answer: skipped
]


def _write_jsonl(path, rows, extra_lines=()):
    with path.open("w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
        for line in extra_lines:
            fh.write(line + "\n")


def _check(problems, report):
    assert [p.question for p in problems] == ["1+1?", "2+2?", "square?", "echo?"]
    assert problems[0].uid.endswith("/a") and problems[1].answer == "4"
    assert [p.verifier for p in problems] == ["math", "math", "code", "code"]
    assert problems[3].tests == [{"input": "1\n", "output": "1\n"}]
    assert report.loaded == 4


def test_jsonl_skips_and_counts_malformed_rows(tmp_path):
    path = tmp_path / "mine.jsonl"
    _write_jsonl(path, ROWS, extra_lines=["{not json", "[1, 2]"])
    problems, report = load_problems(path)
    _check(problems, report)
    assert report.rows == 10 and report.skipped == 6
    assert report.reasons["invalid JSON"] == 1 and report.reasons["row is not an object"] == 1
    assert "6 skipped" in report.summary()
    assert problems[0].source == "mine"


def test_parquet_source(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Parquet needs one schema: keep all columns as JSON-able strings
    rows = [
        {k: (v if isinstance(v, str) or v is None else json.dumps(v)) for k, v in r.items()} for r in ROWS
    ]
    keys = ["id", "question", "answer", "tests"]
    pq.write_table(pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in rows]), tmp_path / "p.parquet")
    problems, report = load_problems(tmp_path / "p.parquet")
    assert [p.question for p in problems] == ["1+1?", "2+2?", "square?", "echo?"]
    assert report.skipped == 4


def test_hf_save_to_disk_with_custom_field_names_and_splits(tmp_path):
    import datasets

    data = {"problem": ["What is 3*3?", "  "], "final": ["9", "0"], "worked": ["3*3=9", None]}
    datasets.DatasetDict({"test": datasets.Dataset.from_dict(data)}).save_to_disk(str(tmp_path / "hf"))
    fields = FieldMap(question="problem", answer="final", solution="worked")
    problems, report = load_problems(tmp_path / "hf", fields=fields, split="test", name="mydata")
    assert [(p.uid, p.answer, p.solution) for p in problems] == [("mydata/0", "9", "3*3=9")]
    assert report.skipped == 1
    with pytest.raises(ValueError, match="pass split="):
        load_problems(tmp_path / "hf", fields=fields)


def test_nested_fields_and_limit(tmp_path):
    path = tmp_path / "n.jsonl"
    _write_jsonl(path, [{"q": {"text": f"Q{i}"}, "a": {"v": str(i)}} for i in range(5)])
    problems, _ = load_problems(
        path, fields=FieldMap(question="q.text", answer="a.v"), verifier="exact", limit=2
    )
    assert [(p.question, p.answer, p.verifier, p.category) for p in problems] == [
        ("Q0", "0", "exact", "custom"),
        ("Q1", "1", "exact", "custom"),
    ]


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("missing.jsonl", {}, "does not exist"),
        ("x.csv", {}, "unknown file type"),
        ("x.jsonl", {"verifier": "llm"}, "unknown verifier"),
    ],
)
def test_bad_sources_raise(tmp_path, name, kwargs, message):
    if name != "missing.jsonl":
        (tmp_path / name).write_text("")
    with pytest.raises(ValueError, match=message):
        load_problems(tmp_path / name, **kwargs)
