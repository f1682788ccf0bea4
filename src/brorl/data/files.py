"""Problems from users' files: JSONL, Parquet, and Hugging Face ``datasets`` saved with ``save_to_disk``.

Field names are configurable (:class:`FieldMap`; dotted paths reach into nested records). A malformed row
is skipped and counted by reason in the returned :class:`LoadReport`, never a crash: one bad line in a
100k-row file should not stop a run, but the user must see that it happened.

Code tests are normalised to one of two forms: Python source of assert statements (a string), or a list of
``{"input": str, "output": str}`` stdin/stdout cases. The APPS/TACO layout
``{"inputs": [...], "outputs": [...]}`` (possibly JSON-encoded as a string) is converted to the second form.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brorl.data.problem import VERIFIERS, Problem

DEFAULT_CATEGORY = {"math": "math", "code": "code", "exact": "custom", "reasoning_gym": "other"}


@dataclass(frozen=True)
class FieldMap:
    """Which record fields hold what (dotted paths such as ``"meta.answer"`` reach into nested dicts)."""

    question: str = "question"
    answer: str = "answer"
    solution: str = "solution"
    tests: str = "tests"
    uid: str = "id"
    verifier: str = "verifier"
    """Optional per-row verifier name; rows without it use ``load_problems(verifier=...)``."""


@dataclass
class LoadReport:
    """What happened while loading one source."""

    source: str
    rows: int = 0
    loaded: int = 0
    skipped: int = 0
    reasons: Counter = field(default_factory=Counter)
    """skip reason -> count."""
    examples: list[str] = field(default_factory=list)
    """The first few skipped rows as ``"row 17: <reason>"``, to find them in the file."""

    def skip(self, row: int, reason: str) -> None:
        self.skipped += 1
        self.reasons[reason] += 1
        if len(self.examples) < 5:
            self.examples.append(f"row {row}: {reason}")

    def summary(self) -> str:
        reasons = ", ".join(f"{r}: {n}" for r, n in self.reasons.most_common())
        counts = f"{self.loaded}/{self.rows} rows loaded, {self.skipped} skipped"
        return f"{self.source}: {counts} ({reasons or 'none'})"


class _Malformed(Exception):
    """A row that cannot become a Problem; the message is the skip reason."""


def _get(row: dict, path: str) -> Any:
    value: Any = row
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def normalize_tests(tests: Any) -> str | list[dict]:
    """Assert source stays a string; I/O cases become ``[{"input": str, "output": str}, ...]``."""
    if isinstance(tests, str):
        stripped = tests.strip()
        if stripped[:1] in ("{", "["):
            try:
                return normalize_tests(json.loads(stripped))
            except json.JSONDecodeError:
                pass  # not JSON: Python source that happens to start with a bracket
        if not stripped:
            raise _Malformed("empty tests")
        return tests
    if isinstance(tests, dict) and "inputs" in tests and "outputs" in tests:
        if len(tests["inputs"]) != len(tests["outputs"]):
            raise _Malformed("tests inputs/outputs differ in length")
        tests = [{"input": i, "output": o} for i, o in zip(tests["inputs"], tests["outputs"], strict=True)]
    if (
        isinstance(tests, list)
        and tests
        and all(isinstance(t, dict) and {"input", "output"} <= set(t) for t in tests)
    ):
        return [{"input": _as_text(t["input"]), "output": _as_text(t["output"])} for t in tests]
    raise _Malformed("tests must be assert source or a non-empty list of {input, output}")


def _as_text(value: Any) -> str:
    return "\n".join(map(str, value)) if isinstance(value, list) else str(value)


def _row_to_problem(
    row: Any, index: int, name: str, fields: FieldMap, verifier: str, category: str | None
) -> Problem:
    if not isinstance(row, dict):
        raise _Malformed("row is not an object")
    question = _get(row, fields.question)
    if not isinstance(question, str) or not question.strip():
        raise _Malformed(f"missing or empty {fields.question!r}")
    tests = _get(row, fields.tests)
    kind = _get(row, fields.verifier) or verifier
    if kind == "auto":
        kind = "code" if tests is not None else "math"
    if kind not in VERIFIERS:
        raise _Malformed(f"unknown verifier {kind!r}")
    answer = _get(row, fields.answer)
    metadata: dict = {}
    if kind == "code":
        tests = normalize_tests(tests)
    elif answer is None or (isinstance(answer, str) and not answer.strip()):
        raise _Malformed(f"missing {fields.answer!r}")
    if kind == "reasoning_gym":
        task = _get(row, "metadata.source_dataset")
        if not task:
            raise _Malformed("reasoning_gym rows need metadata.source_dataset (a dumped reasoning-gym entry)")
        metadata = {"rg_task": task, "rg_config": {}, "rg_entry": row}
    uid = _get(row, fields.uid)
    solution = _get(row, fields.solution)
    return Problem(
        uid=f"{name}/{uid if uid is not None else index}",
        source=name,
        category=category or DEFAULT_CATEGORY[kind],
        question=question,
        answer=None if answer is None else str(answer),
        solution=None if solution is None else str(solution),
        verifier=kind,
        tests=tests if kind == "code" else None,
        metadata=metadata,
    )


def _jsonl_rows(path: Path, report: LoadReport):
    with path.open(encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if not line.strip():
                continue
            try:
                yield i, json.loads(line)
            except json.JSONDecodeError:
                report.rows += 1
                report.skip(i, "invalid JSON")


def _parquet_rows(path: Path, report: LoadReport):
    import pyarrow.parquet as pq

    yield from enumerate(pq.read_table(path).to_pylist())


def _hf_rows(path: Path, report: LoadReport, split: str | None):
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise ValueError(f"{path} is a DatasetDict with splits {sorted(ds)}: pass split=<one of them>")
        ds = ds[split]
    yield from enumerate(ds)


def _rows(path: Path, report: LoadReport, split: str | None):
    if path.is_dir():
        if not ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
            raise ValueError(f"{path} is a directory but not a datasets.save_to_disk() directory")
        return _hf_rows(path, report, split)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return _jsonl_rows(path, report)
    if suffix == ".parquet":
        return _parquet_rows(path, report)
    raise ValueError(
        f"{path}: unknown file type {suffix!r}; use .jsonl, .parquet or a save_to_disk directory"
    )


def load_problems(
    source: str | Path,
    *,
    fields: FieldMap | None = None,
    verifier: str = "auto",
    name: str | None = None,
    category: str | None = None,
    split: str | None = None,
    limit: int | None = None,
) -> tuple[list[Problem], LoadReport]:
    """Read problems from a JSONL file, a Parquet file or a ``save_to_disk`` directory.

    ``verifier``: ``"auto"`` (rows with tests → ``"code"``, others → ``"math"``) or one of
    ``"math" | "code" | "exact" | "reasoning_gym"``. ``name`` (default: the file stem) prefixes uids and is
    the problems' ``source``. ``split`` picks a split of a saved ``DatasetDict``. ``limit`` stops after that
    many loaded problems. Returns the problems and a :class:`LoadReport` counting skipped rows by reason.
    """
    path = Path(source)
    if not path.exists():
        raise ValueError(f"problem source {path} does not exist")
    if verifier != "auto" and verifier not in VERIFIERS:
        raise ValueError(f"unknown verifier {verifier!r}; choose 'auto' or one of {VERIFIERS}")
    fields = fields or FieldMap()
    name = name or path.stem
    report = LoadReport(source=str(path))
    problems: list[Problem] = []
    for index, row in _rows(path, report, split):
        if limit is not None and len(problems) >= limit:
            break
        report.rows += 1
        try:
            problems.append(_row_to_problem(row, index, name, fields, verifier, category))
        except _Malformed as exc:
            report.skip(index, str(exc))
    report.loaded = len(problems)
    return problems, report
